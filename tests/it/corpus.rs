//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and the
//! regression inputs (`tests/data/regressions/<target>-*.bin`) through the
//! fuzz entry points on stable Rust, so every input a fuzzer ever kept stays
//! a test.

use std::path::Path;

use kms_activation::fuzzing;

type Target = fn(&[u8]);

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
        ("client_stream", fuzzing::client_stream),
    ];
    #[cfg(feature = "pcap")]
    t.push(("pcap_capture", fuzzing::pcap_capture));
    t
}

#[test]
fn fuzz_corpus_and_regressions_replay_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut replayed = 0;
    for (name, target) in targets() {
        let corpus = root.join("fuzz/corpus").join(name);
        for entry in std::fs::read_dir(&corpus).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            target(&data);
            // Every prefix too: truncation is the commonest damage.
            for cut in (0..data.len()).step_by(11) {
                target(&data[..cut]);
            }
            replayed += 1;
        }
        let regressions = root.join("tests/data/regressions");
        for entry in std::fs::read_dir(&regressions).unwrap() {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            if file.starts_with(&format!("{name}-")) {
                target(&std::fs::read(&path).unwrap());
                replayed += 1;
            }
        }
    }
    assert!(replayed > 50, "only {replayed} corpus inputs");
}
