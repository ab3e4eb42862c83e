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
use kms_activation::client::{ClientConfig, ClientConnection};
use kms_activation::host::{FixedResponder, HostConfig, HostConnection};
use kms_activation::message::{self, RequestBody, ResponseBody, Version};
use kms_activation::{FileTime, LicenseStatus, RandomSource, Uuid, rpc};
use sha2::{Digest, Sha256};

/// A cheap deterministic source; the benches measure the protocol, not the RNG.
struct Counter(u8);

impl RandomSource for Counter {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
    }
}

fn request(version: Version) -> RequestBody {
    RequestBody {
        version,
        vm_info: 0,
        license_status: LicenseStatus::OobGrace,
        binding_expiration: 43_200,
        application_id: Uuid::from_u128(0x55c9_2734_d682_4d71_983e_d6ec_3f16_059f),
        sku_id: Uuid::from_u128(0x7311_1121_5638_40f6_bc11_f1d7_b0d6_4300),
        kms_id: Uuid::from_u128(0x58e2_134f_8e11_4d17_9cb2_9106_9c15_1148),
        cmid: Uuid::from_u128(0x1111_1111_2222_3333_4444_5555_5555_5555),
        previous_cmid: Uuid::nil(),
        n_policy: 25,
        client_time: FileTime::from_ticks(134_397_882_570_000_000),
        workstation: "client01.example.org".into(),
    }
}

/// The client's bytes for one bound connection carrying one request:
/// (bind, request PDU) with NDR32 only, so the host needs no `alter_context`.
fn client_pdus(version: Version) -> (Vec<u8>, Vec<u8>) {
    let mut config = ClientConfig::default();
    config.set_ndr64(false).set_btfn(false);
    let mut client = ClientConnection::new(&config);
    let mut rng = Counter(0);
    let mut bind = Vec::new();
    let _ = client.poll_transmit(&mut bind);
    // Let a host accept the bind so the client sends its request.
    let mut host = HostConnection::new(&HostConfig::default());
    let mut responder = FixedResponder::default();
    let now = FileTime::from_ticks(0);
    host.handle_input_with(now, &bind, &mut responder, &mut rng)
        .unwrap();
    let mut ack = Vec::new();
    let _ = host.poll_transmit(&mut ack);
    client.send_request(request(version), &mut rng).unwrap();
    let used = client.handle_input(&ack, &mut rng).unwrap();
    assert_eq!(used, ack.len());
    let mut req = Vec::new();
    let _ = client.poll_transmit(&mut req);
    (bind, req)
}

fn host_exchange(c: &mut Criterion) {
    let mut group = c.benchmark_group("host");
    for version in [Version::V4, Version::V5, Version::V6] {
        let (bind, req) = client_pdus(version);
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
        let mut wire = BytesMut::new();
        let sent = message::encode_request(&body, &mut rng, &mut wire).unwrap();
        let received = message::decode_request(&wire).unwrap();
        let answer = ResponseBody::answering(
            received.body(),
            "03612-04573-012-345678-03-1033-20348.0000-2652024",
            50,
            120,
            10_080,
            (version == Version::V6).then(|| "3A1C049600B60076".parse().unwrap()),
        );
        let mut response = BytesMut::new();
        received
            .encode_response(&answer, &mut rng, &mut response)
            .unwrap();
        group.bench_function(format!("verify_response_v{}", version.major), |b| {
            b.iter(|| black_box(sent.verify_response(black_box(&response)).unwrap()));
        });
    }
    group.finish();
}

fn rpc_frames(c: &mut Criterion) {
    let (bind, req) = client_pdus(Version::V6);
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
