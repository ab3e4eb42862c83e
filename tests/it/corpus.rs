//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and the
//! regression inputs (`tests/data/regressions/<target>-*.bin`) through the
//! fuzz entry points on stable Rust, so every input a fuzzer ever kept stays
//! a test, and checks that the corpus of every target reaches its last check.
//!
//! The seeds are made by [`seeds`] from the engines themselves; run
//! `KMS_WRITE_SEEDS=1 cargo test --all-features --test it corpus::write_seeds -- --ignored`
//! to write them into `fuzz/corpus/<target>/seed-*`.

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use kms_activation::fuzzing::{self, Depth, FIXED_TIME, fixed_request, fixed_rng, seeded_client};
use kms_activation::host::{FixedResponder, HostConfig, HostConnection};
use kms_activation::message::{self, ResponseBody};
use kms_activation::{Hwid, Version, product};

type Target = fn(&[u8]) -> Depth;

/// A seed input: its file name and bytes.
type Seed = (String, Vec<u8>);

fn targets() -> Vec<(&'static str, Target)> {
    #[cfg_attr(
        not(feature = "pcap"),
        expect(unused_mut, reason = "pcap adds a target")
    )]
    let mut t: Vec<(&'static str, Target)> = vec![
        ("rpc_pdu", fuzzing::rpc_pdu),
        ("kms_request", fuzzing::kms_request),
        ("kms_response", fuzzing::kms_response),
        ("host_stream", fuzzing::host_stream),
        ("host_policy", fuzzing::host_policy),
        ("client_stream", fuzzing::client_stream),
        ("product_key", fuzzing::product_key),
        ("epid", fuzzing::epid),
    ];
    #[cfg(feature = "pcap")]
    t.push(("pcap_capture", fuzzing::pcap_capture));
    t
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn fuzz_corpus_and_regressions_replay_cleanly() {
    let mut replayed = 0;
    for (name, target) in targets() {
        let mut deepest = Depth::Rejected;
        for path in files_in(&root().join("fuzz/corpus").join(name)) {
            let data = std::fs::read(&path).unwrap();
            deepest = deepest.max(target(&data));
            // Every prefix too: truncation is the commonest damage.
            for cut in (0..data.len()).step_by(11) {
                target(&data[..cut]);
            }
            replayed += 1;
        }
        assert_eq!(
            deepest,
            Depth::Complete,
            "the {name} corpus never gets through every check"
        );
        for path in files_in(&root().join("tests/data/regressions")) {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            if file.starts_with(&format!("{name}-")) {
                target(&std::fs::read(&path).unwrap());
                replayed += 1;
            }
        }
    }
    assert!(replayed > 50, "only {replayed} corpus inputs");
}

#[test]
fn every_regression_input_names_a_target() {
    let names: Vec<&str> = targets().iter().map(|(n, _)| *n).collect();
    for path in files_in(&root().join("tests/data/regressions")) {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if file.starts_with('.') || file == "README.md" {
            continue;
        }
        assert!(
            names.iter().any(|n| file.starts_with(&format!("{n}-"))),
            "{file}: regression inputs are named <target>-<what>.bin"
        );
    }
}

#[test]
fn seeds_reach_every_check_and_are_committed() {
    for (name, seeds) in seeds() {
        let target = targets().into_iter().find(|(n, _)| *n == name).unwrap().1;
        for (label, data) in &seeds {
            assert_eq!(target(data), Depth::Complete, "{name}/{label}");
            let committed = root().join("fuzz/corpus").join(name).join(label);
            assert_eq!(
                std::fs::read(&committed).ok().as_ref(),
                Some(data),
                "{}: stale or missing; see this file's doc to rewrite the seeds",
                committed.display()
            );
        }
    }
}

#[test]
#[ignore = "writes files; run by hand to refresh the seeds"]
fn write_seeds() {
    if std::env::var_os("KMS_WRITE_SEEDS").is_none() {
        return;
    }
    for (name, seeds) in seeds() {
        for (label, data) in seeds {
            std::fs::write(root().join("fuzz/corpus").join(name).join(label), data).unwrap();
        }
    }
}

/// Seed inputs per target, made by the engines with the targets' fixed
/// randomness, so each one gets through every check.
fn seeds() -> Vec<(&'static str, Vec<Seed>)> {
    vec![
        ("kms_response", response_seeds()),
        ("client_stream", client_stream_seeds()),
        ("host_policy", host_policy_seeds()),
        ("product_key", product_key_seeds()),
        ("epid", epid_seeds()),
    ]
}

const EPID: &str = "05426-00206-565-184251-03-1068-9200.0000-1222025";
const HWID: Hwid = Hwid([0x3A, 0x1C, 0x04, 0x96, 0x00, 0xB6, 0x00, 0x76]);

fn response_seeds() -> Vec<Seed> {
    [Version::V4, Version::V5, Version::V6]
        .into_iter()
        .map(|version| {
            let request = fixed_request(version, 0);
            let mut wire = BytesMut::new();
            message::encode_request(&request, &mut fixed_rng(), &mut wire).unwrap();
            let received = message::decode_request(&wire).unwrap();
            let hwid = (version == Version::V6).then_some(HWID);
            let answer = ResponseBody::answering(&request, EPID, 50, 120, 10_080, hwid);
            let mut reply = BytesMut::new();
            received
                .encode_response(&answer, &mut fixed_rng(), &mut reply)
                .unwrap();
            (format!("seed-v{}", version.major), reply.to_vec())
        })
        .collect()
}

/// A client (as `client_stream` sets it up) against a host connection with
/// a fixed responder: what each side sent.
fn exchange(setup: u8) -> (Vec<u8>, Vec<u8>) {
    let (mut client, requests) = seeded_client(setup);
    let mut rng = fixed_rng();
    let version = [Version::V4, Version::V5, Version::V6][usize::from(setup) % 3];
    for index in 0..requests {
        client
            .send_request(fixed_request(version, index), &mut rng)
            .unwrap();
    }
    let mut host = HostConnection::new(&HostConfig::default());
    let mut responder = FixedResponder::default();
    let mut host_rng = fixed_rng();
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for _ in 0..32 {
        let mut bytes = Vec::new();
        let _ = client.poll_transmit(&mut bytes);
        up.extend(&bytes);
        let mut at = 0;
        while at < bytes.len() {
            at += host
                .handle_input_with(FIXED_TIME, &bytes[at..], &mut responder, &mut host_rng)
                .unwrap();
        }
        let mut reply = Vec::new();
        let _ = host.poll_transmit(&mut reply);
        down.extend(&reply);
        let mut at = 0;
        while at < reply.len() {
            at += client.handle_input(&reply[at..], &mut rng).unwrap();
        }
        if client.is_idle() && !host.has_pending_output() {
            break;
        }
    }
    assert!(client.is_idle(), "setup {setup:#x}");
    (up, down)
}

/// Configuration bytes: V4, V5, V6 with NDR32; V6 with NDR64 and 3 requests.
const SETUPS: [u8; 4] = [0x00, 0x01, 0x02, 0x02 | 0b100 | (2 << 3)];

fn client_stream_seeds() -> Vec<Seed> {
    SETUPS
        .iter()
        .map(|&setup| {
            let (_, down) = exchange(setup);
            let mut seed = vec![setup];
            seed.extend(down);
            (format!("seed-{setup:02x}"), seed)
        })
        .collect()
}

fn host_policy_seeds() -> Vec<Seed> {
    let (up, _) = exchange(SETUPS[3]);
    // In order; the last request first; refuse one, then hold the rest.
    [vec![], vec![0x02, 0x01], vec![0x80, 0xc0]]
        .into_iter()
        .enumerate()
        .map(|(i, controls)| {
            let mut seed = vec![u8::try_from(controls.len()).unwrap()];
            seed.extend(controls);
            seed.extend(&up);
            (format!("seed-{i}"), seed)
        })
        .collect()
}

/// Every 40th GVLK of the checksummed (Windows 8 and later) format: the
/// ones that reach the checksum check.
fn product_key_seeds() -> Vec<Seed> {
    product::skus()
        .iter()
        .filter(|sku| {
            kms_activation::ProductKey::parse(sku.gvlk())
                .is_ok_and(|k| k.checksum_ok() == Some(true))
        })
        .step_by(40)
        .enumerate()
        .map(|(i, sku)| (format!("seed-{i}"), sku.gvlk().as_bytes().to_vec()))
        .collect()
}

fn epid_seeds() -> Vec<Seed> {
    vec![("seed-0".to_owned(), EPID.as_bytes().to_vec())]
}
