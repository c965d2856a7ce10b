//! The properties the `text_decode` fuzz target holds, here so that its regression files are replayed by the
//! normal tests with the very same checks. Panics when a property fails.

use crate::decode::{decode_packed_gsm, decode_short_message};
use crate::{Encoding, Language, Options, Reference};

/// The first octet picks a `data_coding`, flags and options; the rest is user data for the decoders and, read as
/// UTF-8, a text for the planner, whose segments must fit 140 octets and decode back to the text.
pub fn check(data: &[u8]) {
    let Some((&head, body)) = data.split_first() else {
        return;
    };
    let _ = decode_short_message(head, head & 1 == 1, body);
    let _ = decode_packed_gsm(head & 2 == 2, usize::from(head), body);
    let _ = crate::udh::Udh::split(body);

    let text = String::from_utf8_lossy(body);
    let national: Vec<Language> =
        Language::ALL[1..].iter().copied().filter(|l| u32::from(head) & (1 << (l.id() % 8)) != 0).collect();
    let options = Options {
        national,
        smart: head & 0x40 != 0,
        reference: if head & 0x80 != 0 { Reference::Sixteen(u16::from(head)) } else { Reference::Eight(head) },
    };
    if let Ok(plan) = crate::plan(&text, &options) {
        let mut back = String::new();
        for s in &plan.segments {
            assert!(s.user_data(plan.encoding).len() <= crate::plan::MAX_USER_DATA);
            let d = decode_short_message(plan.encoding.data_coding(), !s.udh.is_empty(), &s.short_message())
                .expect("own segments decode");
            back.push_str(&d.text.expect("text"));
        }
        assert_eq!(back, plan.text);
        if plan.encoding == Encoding::Ucs2 {
            // UCS-2 is chosen only when some character is not in the default alphabet.
            assert!(!plan.ucs2_characters().is_empty());
        }
    }
}
