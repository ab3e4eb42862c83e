//! Dissection time against capture size: a hostile stream of 32-byte PDUs
//! (each one a warning, capped) at 1, 2, 4 and 8 MiB. Linear time shows as a
//! constant throughput.
//!
//! Run: `cargo bench --features pcap --bench dissect`. Figures live in
//! `benches/README.md`.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    reason = "a benchmark: failures should stop it loudly"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kms_activation::dissect;

mod fixtures;

fn hostile_streams(c: &mut Criterion) {
    let mut group = c.benchmark_group("dissect");
    group.sample_size(10);
    for mib in [1, 2, 4, 8] {
        let capture = fixtures::hostile_capture(mib << 20);
        group.throughput(Throughput::Bytes(capture.len() as u64));
        group.bench_function(format!("hostile_stream_{mib}mib"), |b| {
            b.iter(|| black_box(dissect::dissect(black_box(&capture)).unwrap()));
        });
    }
    group.finish();
}

criterion_group!(benches, hostile_streams);
criterion_main!(benches);
