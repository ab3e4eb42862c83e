//! Fuzzing entry points, shared by the `fuzz/` targets and the corpus replay
//! test (`tests/it/corpus.rs`), so that both exercise exactly the same code.
//!
//! Each function takes arbitrary bytes and must never panic except through
//! its own assertions, which flag a real bug (a decoded value that does not
//! survive a round trip, unbounded output). Not part of the stable API.
#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::missing_panics_doc,
    reason = "fuzz oracles panic exactly when they find a bug"
)]

use bytes::BytesMut;

use crate::client::{ClientConfig, ClientConnection};
use crate::host::{FixedResponder, HostConfig, HostConnection};
use crate::{FileTime, ScriptedRandom, message, rpc};

/// Output a host may queue for one `handle_input` call before the fuzzer
/// calls it a bug (the default backpressure limit plus one response).
const MAX_OUTPUT_PER_CALL: usize = 8192;

/// Decodes a PDU; whatever decodes must re-encode and decode to itself.
pub fn rpc_pdu(data: &[u8]) {
    if let Ok(pdu) = rpc::Pdu::decode(data) {
        let mut out = BytesMut::new();
        pdu.encode(&mut out);
        let again = rpc::Pdu::decode(&out).expect("a re-encoded PDU decodes");
        assert_eq!(again, pdu, "PDU changed in a round trip");
    }
}

/// Decodes a KMS request; whatever decodes must re-encode to the same body.
pub fn kms_request(data: &[u8]) {
    if let Ok(received) = message::decode_request(data) {
        let mut out = BytesMut::new();
        let iv = data.get(4..20).unwrap_or_default().to_vec();
        if message::encode_request(received.body(), &mut ScriptedRandom::new(iv), &mut out).is_ok()
        {
            let again = message::decode_request(&out).expect("a re-encoded request decodes");
            assert_eq!(
                again.body(),
                received.body(),
                "request changed in a round trip"
            );
        }
    }
}

/// Decodes a KMS response without request state.
pub fn kms_response(data: &[u8]) {
    let _ = message::decode_response_unverified(data);
}

/// Feeds a byte stream to a host connection; the first byte sets the read
/// size. Output per call must stay bounded.
pub fn host_stream(data: &[u8]) {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let mut config = HostConfig::default();
    config.set_max_clock_skew(None);
    let mut host = HostConnection::new(&config);
    let mut responder = FixedResponder::default();
    let mut rng = ScriptedRandom::new(vec![0x42; 4096]);
    let mut out = Vec::new();
    for piece in stream.chunks(usize::from(chunk).max(1)) {
        let mut rest = piece;
        while !rest.is_empty() {
            match host.handle_input_with(FileTime::from_ticks(0), rest, &mut responder, &mut rng) {
                Ok(used) => rest = rest.get(used..).unwrap_or_default(),
                Err(_) => return,
            }
            out.clear();
            let _ = host.poll_transmit(&mut out);
            assert!(
                out.len() <= MAX_OUTPUT_PER_CALL,
                "host queued {} bytes",
                out.len()
            );
        }
    }
}

/// Feeds a byte stream, as if from a host, to a client connection.
pub fn client_stream(data: &[u8]) {
    let mut client = ClientConnection::new(&ClientConfig::default());
    let mut rng = ScriptedRandom::new(vec![0x42; 64]);
    let mut out = Vec::new();
    for piece in data.chunks(97) {
        let mut rest = piece;
        while !rest.is_empty() {
            match client.handle_input(rest, &mut rng) {
                Ok(used) => rest = rest.get(used..).unwrap_or_default(),
                Err(_) => return,
            }
            out.clear();
            let _ = client.poll_transmit(&mut out);
            while client.poll_event().is_some() {}
        }
    }
}

/// Dissects a packet capture.
#[cfg(feature = "pcap")]
pub fn pcap_capture(data: &[u8]) {
    let _ = crate::dissect::dissect(data);
}
