//! Planning a 160-character GSM text and a 70-character UCS-2 text. `cargo bench -p sms-text`; results in
//! BENCHMARKS.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sms_text::{Options, plan};

fn bench(c: &mut Criterion) {
    let gsm: String = "Your code is 482913. It expires in 10 minutes. Never share it with anyone, not even our staff. Questions? Call us on 0800 123 4567 any time, day or night!!"
        .chars()
        .cycle()
        .take(160)
        .collect();
    let ucs2: String =
        "Ваш код 482913. Он действует 10 минут. Никому его не сообщайте! Спасибо. ".chars().cycle().take(70).collect();
    assert_eq!(plan(&gsm, &Options::default()).expect("plans").segments.len(), 1);
    let p = plan(&ucs2, &Options::default()).expect("plans");
    assert_eq!((p.encoding, p.units, p.segments.len()), (sms_text::Encoding::Ucs2, 70, 1));
    let options = Options::default();
    let mut g = c.benchmark_group("plan");
    g.throughput(Throughput::Elements(1));
    g.bench_function("gsm7_160", |b| b.iter(|| plan(std::hint::black_box(&gsm), &options).expect("plans")));
    g.bench_function("ucs2_70", |b| b.iter(|| plan(std::hint::black_box(&ucs2), &options).expect("plans")));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
