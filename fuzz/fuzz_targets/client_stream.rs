//! Any byte stream from a "host" into a client connection: never panics.
#![no_main]
use kms_activation::client::{ClientConfig, ClientConnection};
use kms_activation::ScriptedRandom;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut client = ClientConnection::new(&ClientConfig::default());
    let mut rng = ScriptedRandom::new(vec![0x42; 64]);
    let mut out = Vec::new();
    for piece in data.chunks(97) {
        if client.handle_input(piece, &mut rng).is_err() {
            return;
        }
        let _ = client.poll_transmit(&mut out);
        while client.poll_event().is_some() {}
    }
});
