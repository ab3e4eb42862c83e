//! Catalog lookups (ns/op): by SKU ID, KMS ID and GVLK, plus the CSVLK a
//! host answers with, a name search and an ePID parse for scale.
//!
//! `cargo bench --bench catalog`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kms_activation::epid::Epid;
use kms_activation::{Uuid, product};

fn lookups(c: &mut Criterion) {
    // Windows 10/11 Enterprise, its KMS ID and GVLK.
    let sku_id = Uuid::from_u128(0x73111121_5638_40f6_bc11_f1d7b0d64300);
    let kms_id = Uuid::from_u128(0x58e2134f_8e11_4d17_9cb2_91069c151148);
    let gvlk = "NPPR9-FWDCX-D2C8J-H872K-2YT43";
    let unknown = Uuid::from_u128(0x01234567_89ab_cdef_0123_456789abcdef);

    let mut g = c.benchmark_group("catalog");
    g.bench_function("sku_by_id", |b| b.iter(|| product::sku(black_box(sku_id))));
    g.bench_function("sku_by_id_unknown", |b| {
        b.iter(|| product::sku(black_box(unknown)));
    });
    g.bench_function("kms_item_by_id", |b| {
        b.iter(|| product::kms_item(black_box(kms_id)));
    });
    g.bench_function("sku_by_gvlk", |b| {
        b.iter(|| product::sku_by_gvlk(black_box(gvlk)));
    });
    g.bench_function("csvlk_for_kms", |b| {
        b.iter(|| product::csvlk_for_kms(black_box(kms_id)));
    });
    g.bench_function("search_skus", |b| {
        b.iter(|| product::search_skus(black_box("windows 11 enterprise")));
    });
    g.bench_function("epid_parse", |b| {
        b.iter(|| {
            Epid::parse(black_box(
                "05426-00206-565-184251-03-1068-9200.0000-1222025",
            ))
        });
    });
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
