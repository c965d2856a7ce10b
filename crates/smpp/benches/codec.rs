//! Decode and encode of a typical submit_sm. `cargo bench -p smpp`; results in BENCHMARKS.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smpp::field::{ShortMessage, TimeString};
use smpp::pdu::SubmitSm;
use smpp::{Body, Pdu, Tlv, Tlvs};

/// A typical submit_sm: alphanumeric sender, international destination, receipt requested, 100 GSM characters,
/// one TLV.
fn typical() -> Pdu {
    Pdu::new(
        42,
        Body::SubmitSm(SubmitSm {
            source_addr_ton: 5,
            source_addr: "smsgate".into(),
            dest_addr_ton: 1,
            dest_addr_npi: 1,
            destination_addr: "447700900123".into(),
            registered_delivery: 1,
            validity_period: TimeString::from("000001000000000R"),
            short_message: ShortMessage::new(
                b"Your appointment with Dr Smith is confirmed for Tuesday at 10:30. Reply STOP to opt out.".to_vec(),
            ),
            tlvs: Tlvs(vec![Tlv::UserMessageReference(7)]),
            ..SubmitSm::default()
        }),
    )
}

fn bench(c: &mut Criterion) {
    let pdu = typical();
    let bytes = pdu.encode().expect("encodes");
    let mut g = c.benchmark_group("submit_sm");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode", |b| b.iter(|| Pdu::decode(std::hint::black_box(&bytes)).expect("decodes")));
    let mut buf = Vec::with_capacity(256);
    g.bench_function("encode", |b| {
        b.iter(|| {
            buf.clear();
            std::hint::black_box(&pdu).encode_into(&mut buf).expect("encodes");
            buf.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
