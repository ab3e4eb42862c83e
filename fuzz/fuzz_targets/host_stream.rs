//! Any byte stream, in any chunks, into a host connection: never panics,
//! output stays bounded.
#![no_main]
use kms_activation::host::{FixedResponder, HostConfig, HostConnection};
use kms_activation::{FileTime, ScriptedRandom};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let config = HostConfig::default();
    let mut host = HostConnection::new(&config);
    let mut responder = FixedResponder::default();
    let mut rng = ScriptedRandom::new(vec![0x42; 4096]);
    let mut out = Vec::new();
    for piece in stream.chunks(chunk) {
        let mut rest = piece;
        while !rest.is_empty() {
            match host.handle_input(FileTime::from_ticks(0), rest, &mut responder, &mut rng) {
                Ok(used) => rest = &rest[used..],
                Err(_) => return,
            }
            out.clear();
            let _ = host.poll_transmit(&mut out);
            assert!(out.len() <= 8192);
        }
    }
});
