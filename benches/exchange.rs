//! Costs of one KMS exchange: host request → response, client request build
//! and response verification, V4, RPC frame parsing, and — side by side — the
//! bare cryptography an exchange must do.
//!
//! Run: `cargo bench --bench exchange`. Figures live in `benches/README.md`.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a benchmark: failures should stop it loudly"
)]

use std::hint::black_box;

use aes::Aes128;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use kms_activation::host::{FixedResponder, HostConfig, HostConnection};
use kms_activation::message::{self, Version};
use kms_activation::{FileTime, rpc};
use sha2::{Digest, Sha256};

mod fixtures;
use fixtures::{Counter, client_pdus, request, sent_and_response};

fn host_exchange(c: &mut Criterion) {
    let mut group = c.benchmark_group("host");
    for version in [Version::V4, Version::V5, Version::V6] {
        let (bind, _, req) = client_pdus(version);
        let config = HostConfig::default();
        let mut responder = FixedResponder::default();
        let mut rng = Counter(0);
        let now = FileTime::from_ticks(134_397_882_570_000_000);
        let mut host = HostConnection::new(&config);
        host.handle_input_with(now, &bind, &mut responder, &mut rng)
            .unwrap();
        let mut out = Vec::with_capacity(512);
        let _ = host.poll_transmit(&mut out);
        group.throughput(Throughput::Bytes(req.len() as u64));
        group.bench_function(format!("request_to_response_v{}", version.major), |b| {
            b.iter(|| {
                host.handle_input_with(now, black_box(&req), &mut responder, &mut rng)
                    .unwrap();
                out.clear();
                black_box(host.poll_transmit(&mut out))
            });
        });
    }
    group.finish();
}

fn client_messages(c: &mut Criterion) {
    let mut group = c.benchmark_group("client");
    for version in [Version::V4, Version::V6] {
        let body = request(version);
        let mut rng = Counter(0);
        let mut out = BytesMut::with_capacity(512);
        group.bench_function(format!("build_request_v{}", version.major), |b| {
            b.iter(|| {
                out.clear();
                black_box(message::encode_request(black_box(&body), &mut rng, &mut out).unwrap())
            });
        });
        let (sent, response) = sent_and_response(version);
        group.bench_function(format!("verify_response_v{}", version.major), |b| {
            b.iter(|| black_box(sent.verify_response(black_box(&response)).unwrap()));
        });
    }
    group.finish();
}

fn rpc_frames(c: &mut Criterion) {
    let (bind, _, req) = client_pdus(Version::V6);
    let mut group = c.benchmark_group("rpc");
    group.throughput(Throughput::Bytes(req.len() as u64));
    group.bench_function("frame_len_and_decode_request", |b| {
        b.iter(|| {
            let len = rpc::frame_len(black_box(&req), rpc::MAX_FRAG_LEN)
                .unwrap()
                .unwrap();
            black_box(rpc::Pdu::decode(&req[..len]).unwrap())
        });
    });
    group.bench_function("decode_bind", |b| {
        b.iter(|| black_box(rpc::Pdu::decode(black_box(&bind)).unwrap()));
    });
    group.finish();
}

/// The cryptography a V6 host must do for one exchange, with stock
/// primitives: decrypt the request (15 blocks) and `D(IV_c)` (1 block),
/// `D(IV_s)` (1 block), encrypt the response (15 blocks), SHA-256 of the
/// salt, SHA-256 of the time slot, HMAC-SHA256 over the 230-byte body.
fn bare_crypto_v6(c: &mut Criterion) {
    let cipher = Aes128::new(&[0x42; 16].into());
    let mut blocks = [[0u8; 16]; 16];
    let body = [0x5a_u8; 230];
    c.bench_function("bare_crypto/v6_host_exchange", |b| {
        b.iter(|| {
            for block in &mut blocks {
                cipher.decrypt_block(block.into());
            }
            cipher.decrypt_block((&mut blocks[0]).into());
            for block in &mut blocks[1..] {
                cipher.encrypt_block(block.into());
            }
            let salt_hash = Sha256::digest(black_box(blocks[0]));
            let slot_key = Sha256::digest(black_box(134_397_882_570_000_000_u64.to_le_bytes()));
            let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&slot_key[16..]).unwrap();
            mac.update(black_box(&body));
            black_box((salt_hash, mac.finalize().into_bytes()))
        });
    });
}

criterion_group!(
    benches,
    host_exchange,
    client_messages,
    rpc_frames,
    bare_crypto_v6
);
criterion_main!(benches);
