//! Inbound concatenated messages end to end across the two protocol crates: a long text planned into parts,
//! carried in deliver_sm PDUs (with a UDH, or with SAR TLVs), decoded from the wire in any order with
//! duplicates, reassembled, and read back as the text.

use std::time::Instant;

use proptest::prelude::*;
use smpp::pdu::SubmitSm;
use smpp::{Body, Pdu, ShortMessage, Tlv, Tlvs};
use sms_text::reassembly::{Config, Pushed, Reassembler};
use sms_text::udh::{Concat, Udh};
use sms_text::{Options, Reference};

/// How the parts are marked.
#[derive(Debug, Clone, Copy)]
enum Marking {
    Udh,
    Sar,
}

fn deliver_parts(text: &str, wide: bool, marking: Marking) -> Vec<Vec<u8>> {
    let reference = if wide { Reference::Sixteen(0xBEEF) } else { Reference::Eight(0x42) };
    let plan = sms_text::plan(text, &Options { reference, ..Options::default() }).expect("plans");
    let total = plan.segments.len() as u8;
    (1..=u8::MAX)
        .zip(&plan.segments)
        .map(|(seq, s)| {
            let (esm_class, short_message, tlvs) = match marking {
                Marking::Udh if s.udh.is_empty() => (0, s.short_message(), Tlvs::default()),
                Marking::Udh => (0x40, s.short_message(), Tlvs::default()),
                Marking::Sar => (
                    0,
                    s.payload.clone(),
                    Tlvs(vec![Tlv::SarMsgRefNum(0xBEEF), Tlv::SarTotalSegments(total), Tlv::SarSegmentSeqnum(seq)]),
                ),
            };
            let body = SubmitSm {
                source_addr: "447700900123".into(),
                destination_addr: "Shop".into(),
                esm_class,
                data_coding: plan.encoding.data_coding(),
                short_message: ShortMessage::new(short_message),
                tlvs,
                ..SubmitSm::default()
            };
            Pdu::new(u32::from(seq), Body::DeliverSm(body)).encode().expect("encodes")
        })
        .collect()
}

/// What a receiving session does with one deliver_sm: where the part stands, and its text.
fn read_part(wire: &[u8]) -> (Concat, String) {
    let Body::DeliverSm(d) = Pdu::decode(wire).expect("decodes").body else { panic!("not a deliver_sm") };
    let udhi = d.esm_class & 0x40 != 0;
    let decoded = sms_text::decode::decode_short_message(d.data_coding, udhi, d.short_message.as_bytes()).expect("ud");
    let concat = match (decoded.udh.as_ref().and_then(Udh::concat), d.tlvs.sar()) {
        (Some(c), _) => c,
        (None, Some((reference, total, seq))) => Concat { reference, wide: true, total, seq },
        (None, None) => Concat { reference: 0, wide: false, total: 1, seq: 1 },
    };
    (concat, decoded.text.expect("text"))
}

fn reassemble(parts: &[Vec<u8>], order: &[usize]) -> String {
    let mut r = Reassembler::new(Config::default());
    let now = Instant::now();
    let mut out = None;
    for &i in order {
        let (concat, text) = read_part(&parts[i]);
        match r.push("447700900123>Shop", concat, text, now).0 {
            Pushed::Complete(texts) => out = Some(texts.concat()),
            Pushed::Pending | Pushed::Duplicate => {}
            Pushed::Invalid => panic!("invalid part {concat:?}"),
        }
    }
    assert_eq!(r.pending(), 0);
    out.expect("complete")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_order_with_duplicates(
        text in "[a-zA-Z0-9 €\\[\\]жé😀]{1,600}",
        wide in any::<bool>(),
        sar in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let marking = if sar { Marking::Sar } else { Marking::Udh };
        let parts = deliver_parts(&text, wide, marking);
        // A shuffled order with every part once and some twice.
        let mut order: Vec<usize> = (0..parts.len()).chain((0..parts.len()).filter(|i| (seed >> (i % 64)) & 1 == 1)).collect();
        let mut s = seed;
        for i in (1..order.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (s >> 33) as usize % (i + 1));
        }
        // Complete fires once the last missing part arrives; later duplicates of a finished set start a new
        // pending set, so feed the order up to the first time every part has been seen.
        let mut seen = vec![false; parts.len()];
        let cut = order.iter().position(|&i| { seen[i] = true; seen.iter().all(|&s| s) }).expect("all parts") + 1;
        prop_assert_eq!(reassemble(&parts, &order[..cut]), text);
    }
}
