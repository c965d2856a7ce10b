//! Properties of the planner and the decoders, over generated input.

use proptest::prelude::*;
use sms_text::decode::{decode_packed_gsm, decode_short_message};
use sms_text::udh::Udh;
use sms_text::{Charset, Encoding, Language, Options, Reference, gsm7, plan};

/// Characters that exercise every path: default alphabet, extension table, national tables, BMP outside GSM,
/// and astral characters (surrogate pairs).
fn text() -> impl Strategy<Value = String> {
    let alphabet: Vec<char> = "aZ0 @£$¥èéÇ\n\rΔ_ÆßÉ!\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà€[]{}\\~^|\u{c}ğışŞİçêãõáíóúж😀🇬🇧\u{2019}\u{2014}\u{2026}\u{a0}अक"
        .chars()
        .collect();
    prop_oneof![
        prop::collection::vec(prop::sample::select(alphabet), 0..700).prop_map(|v| v.into_iter().collect()),
        any::<String>(),
    ]
}

fn options() -> impl Strategy<Value = Options> {
    (any::<bool>(), any::<bool>(), any::<u16>(), prop::sample::subsequence(Language::ALL[1..].to_vec(), 0..4)).prop_map(
        |(smart, wide, r, national)| Options {
            national,
            smart,
            reference: if wide { Reference::Sixteen(r) } else { Reference::Eight(r as u8) },
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn segments_fit_and_reassemble(text in text(), options in options()) {
        let Ok(p) = plan(&text, &options) else { return Ok(()) };
        prop_assert!(p.segments.len() <= 255);
        let mut reassembled = String::new();
        for (i, s) in p.segments.iter().enumerate() {
            let user_data = s.user_data(p.encoding);
            prop_assert!(user_data.len() <= 140, "segment {} has {} octets", i, user_data.len());
            prop_assert!(s.units <= s.capacity);
            // Decode the short message as a receiver would: UDH, then text by data_coding.
            let d = decode_short_message(p.encoding.data_coding(), !s.udh.is_empty(), &s.short_message()).unwrap();
            reassembled.push_str(d.text.as_deref().unwrap());
            if let Encoding::Gsm7(_) = p.encoding {
                // And over the air: packed septets after fill bits.
                let udh_septets = (s.udh.len() * 8).div_ceil(7);
                let d = decode_packed_gsm(!s.udh.is_empty(), udh_septets + s.payload.len(), &user_data).unwrap();
                prop_assert_eq!(d.body, s.payload.clone());
            }
            if p.segments.len() > 1 {
                let (udh, _) = Udh::split(&s.short_message()).unwrap();
                let c = udh.concat().unwrap();
                prop_assert_eq!(usize::from(c.seq), i + 1);
                prop_assert_eq!(usize::from(c.total), p.segments.len());
            }
        }
        prop_assert_eq!(reassembled, p.text.clone());
        if p.replaced == 0 {
            prop_assert_eq!(p.text, text);
        }
    }

    #[test]
    fn decoders_take_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300), dc in any::<u8>(), udhi in any::<bool>(), n in 0usize..400, fill in 0u8..8) {
        let _ = decode_short_message(dc, udhi, &bytes);
        let _ = decode_packed_gsm(udhi, n, &bytes);
        let _ = Udh::split(&bytes);
        let septets = gsm7::unpack(&bytes, n, fill);
        prop_assert!(septets.len() <= n);
        for l in Language::ALL {
            for s in Language::ALL {
                if let Some(cs) = Charset::new(l, s) {
                    let _ = cs.decode(&bytes);
                }
            }
        }
        let _ = sms_text::ucs2::decode(&bytes);
    }

    #[test]
    fn pack_unpack(septets in prop::collection::vec(0u8..128, 0..200), fill in 0u8..7) {
        let packed = gsm7::pack(&septets, fill);
        prop_assert_eq!(gsm7::unpack(&packed, septets.len(), fill), septets);
    }
}
