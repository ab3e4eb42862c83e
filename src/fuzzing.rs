//! Fuzzing entry points, shared by the `fuzz/` targets and the corpus replay
//! test (`tests/it/corpus.rs`), so that both exercise exactly the same code.
//!
//! Each function takes arbitrary bytes and must never panic except through
//! its own assertions, which flag a real bug (a decoded value that does not
//! survive a round trip, two decoders that disagree, unbounded output, replies
//! out of call order). Each returns the [`Depth`] the input reached, so the
//! corpus test can check that the committed corpus reaches every check. Not
//! part of the stable API.
#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::missing_panics_doc,
    reason = "fuzz oracles panic exactly when they find a bug"
)]
#![allow(
    clippy::must_use_candidate,
    reason = "fuzz targets run the checks and ignore the depth"
)]

use bytes::BytesMut;

use crate::client::{ClientConfig, ClientConnection, ClientEvent};
use crate::host::store::MemoryStore;
use crate::host::{
    FixedResponder, HostConfig, HostConnection, HostEvent, KmsHost, KmsHostConfig, RequestEvent,
};
use crate::message::{self, SentRequest};
use crate::{
    Epid, FileTime, HResult, LicenseStatus, ProductKey, RequestBody, ResponseBody, ScriptedRandom,
    Uuid, Version, rpc,
};

/// Output a host may queue for one `handle_input` call before the fuzzer
/// calls it a bug (the default backpressure limit plus one response).
const MAX_OUTPUT_PER_CALL: usize = 8192;

/// Bytes of input the stream targets hand over per `handle_input` call.
const STREAM_PIECE: usize = 97;

/// How far one input got through a target's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Depth {
    /// Refused at the first layer (not a PDU, not a message, no bind).
    Rejected,
    /// Decoded (or, for engines, past the bind), but not through the last check.
    Decoded,
    /// Through every check the target has: round trips compared, a response
    /// verified by the client, a request answered by the host policy, a KMS
    /// record dissected.
    Complete,
}

fn depth_if(complete: bool) -> Depth {
    if complete {
        Depth::Complete
    } else {
        Depth::Decoded
    }
}

/// The fixed request the client targets send and the response seeds answer
/// (Windows 10 Enterprise; `index` varies the machine ID).
#[must_use]
pub fn fixed_request(version: Version, index: u8) -> RequestBody {
    RequestBody {
        version,
        vm_info: 0,
        license_status: LicenseStatus::OobGrace,
        binding_expiration: 43_200,
        application_id: Uuid::from_u128(0x55c9_2734_d682_4d71_983e_d6ec_3f16_059f),
        sku_id: Uuid::from_u128(0x7311_1121_5638_40f6_bc11_f1d7_b0d6_4300),
        kms_id: Uuid::from_u128(0x58e2_134f_8e11_4d17_9cb2_9106_9c15_1148),
        cmid: Uuid::from_u128(0x1212_1212_3434_5656_7878_9090_9090_9000 | u128::from(index)),
        previous_cmid: Uuid::nil(),
        n_policy: 25,
        client_time: FIXED_TIME,
        workstation: "fuzz.example.org".into(),
    }
}

/// The clock of every engine target, and the time of [`fixed_request`].
pub const FIXED_TIME: FileTime = FileTime::from_ticks(134_397_882_570_000_000);

/// The versions a first byte selects.
const VERSIONS: [Version; 3] = [Version::V4, Version::V5, Version::V6];

/// The randomness of every target: fixed, so seeds replay exactly.
#[must_use]
pub fn fixed_rng() -> ScriptedRandom {
    ScriptedRandom::new(vec![0x42; 4096])
}

/// Decodes a PDU; whatever decodes must re-encode and decode to itself.
pub fn rpc_pdu(data: &[u8]) -> Depth {
    let Ok(pdu) = rpc::Pdu::decode(data) else {
        return Depth::Rejected;
    };
    let mut out = BytesMut::new();
    pdu.encode(&mut out);
    let again = rpc::Pdu::decode(&out).expect("a re-encoded PDU decodes");
    assert_eq!(again, pdu, "PDU changed in a round trip");
    Depth::Complete
}

/// Decodes a KMS request; whatever decodes must re-encode to the same body.
pub fn kms_request(data: &[u8]) -> Depth {
    let Ok(received) = message::decode_request(data) else {
        return Depth::Rejected;
    };
    let mut out = BytesMut::new();
    let iv = data.get(4..20).unwrap_or_default().to_vec();
    if message::encode_request(received.body(), &mut ScriptedRandom::new(iv), &mut out).is_err() {
        return Depth::Decoded;
    }
    let again = message::decode_request(&out).expect("a re-encoded request decodes");
    assert_eq!(
        again.body(),
        received.body(),
        "request changed in a round trip"
    );
    Depth::Complete
}

/// The request a client sent for `body`, with the fixed randomness.
fn sent_for(body: &RequestBody) -> Option<(SentRequest, BytesMut)> {
    let mut wire = BytesMut::new();
    let sent = message::encode_request(body, &mut fixed_rng(), &mut wire).ok()?;
    Some((sent, wire))
}

/// Decodes a KMS response two ways. The verifying decoder (against
/// [`fixed_request`] of the response's version, as a client that sent it
/// would) must agree with the unverified one whenever it accepts; and any
/// response that decodes is re-encoded as an answer to a request with its
/// machine ID and time, and must verify to the same body.
pub fn kms_response(data: &[u8]) -> Depth {
    let unverified = message::decode_response_unverified(data);
    let version = message::request_version(data).unwrap_or(Version::V6);
    let mut verified_fixed = false;
    if let Some((sent, _)) = sent_for(&fixed_request(version, 0))
        && let Ok(verified) = sent.verify_response(data)
    {
        assert_eq!(
            unverified.as_ref().ok(),
            Some(&verified.body),
            "the verifying decoder accepted what the plain one decodes differently"
        );
        verified_fixed = true;
    }
    let Ok(body) = unverified else {
        return Depth::Rejected;
    };
    let round_trip = response_round_trip(&body);
    depth_if(verified_fixed && round_trip)
}

/// Answers a request matching `body` with `body`; the client must verify it
/// back to `body`. `false` when the body cannot be sent at all.
fn response_round_trip(body: &ResponseBody) -> bool {
    let mut request = fixed_request(body.version, 0);
    request.cmid = body.cmid;
    request.client_time = body.client_time;
    let Some((sent, wire)) = sent_for(&request) else {
        return false;
    };
    let received = message::decode_request(&wire).expect("a fresh request decodes");
    let mut reply = BytesMut::new();
    if received
        .encode_response(body, &mut fixed_rng(), &mut reply)
        .is_err()
    {
        return false;
    }
    let again = sent
        .verify_response(&reply)
        .expect("a response encoded for a request verifies");
    assert_eq!(&again.body, body, "response changed in a round trip");
    true
}

/// Feeds a byte stream to a host connection; the first byte sets the read
/// size. Output per call must stay bounded.
pub fn host_stream(data: &[u8]) -> Depth {
    let Some((&chunk, stream)) = data.split_first() else {
        return Depth::Rejected;
    };
    let mut config = HostConfig::default();
    config.set_max_clock_skew(None);
    let mut host = HostConnection::new(&config);
    let mut responder = FixedResponder::default();
    let mut rng = fixed_rng();
    let mut out = Vec::new();
    for piece in stream.chunks(usize::from(chunk).max(1)) {
        let mut rest = piece;
        while !rest.is_empty() {
            match host.handle_input_with(FIXED_TIME, rest, &mut responder, &mut rng) {
                Ok(used) => rest = rest.get(used..).unwrap_or_default(),
                Err(_) => return bound_depth(&host),
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
    if host.requests_served() > 0 {
        Depth::Complete
    } else {
        bound_depth(&host)
    }
}

fn bound_depth(host: &HostConnection) -> Depth {
    if host.is_bound() || host.requests_served() > 0 {
        Depth::Decoded
    } else {
        Depth::Rejected
    }
}

/// The host policy behind a connection, answering events in an order the
/// input chooses.
///
/// Input: one byte `n`, then `n` control bytes, then the client's stream.
/// After each piece of stream, the pending request events are answered
/// (through [`KmsHost::decide`]), refused, or left for later, one control
/// byte per decision: `b % pending` picks the event, `b >> 6` the action
/// (0, 1 answer; 2 refuse; 3 leave the rest for later). When the control
/// bytes run out, and at the end, everything pending is answered in order.
/// Checks: output per call bounded, every event answered exactly once, and
/// the replies leave in call order whatever the answering order.
pub fn host_policy(data: &[u8]) -> Depth {
    let Some((&n, rest)) = data.split_first() else {
        return Depth::Rejected;
    };
    let (controls, stream) = rest.split_at(usize::from(n).min(rest.len()));
    let mut rng = fixed_rng();
    let policy = crate::block_on::block_on(KmsHost::start(
        KmsHostConfig::default(),
        MemoryStore::default(),
        FIXED_TIME,
        &mut rng,
    ))
    .expect("the default host starts");
    let mut host = HostConnection::new(&HostConfig::default());
    let mut controls = controls.iter().copied();
    let mut pending: Vec<RequestEvent> = Vec::new();
    let mut request_calls = Vec::new();
    let mut output = Vec::new();
    let mut answered = 0usize;
    for piece in stream.chunks(STREAM_PIECE) {
        let mut rest = piece;
        while !rest.is_empty() {
            let before = output.len();
            match host.handle_input(FIXED_TIME, rest, &mut rng) {
                Ok(used) => rest = rest.get(used..).unwrap_or_default(),
                Err(_) => rest = &[],
            }
            while let Some(event) = host.poll_event() {
                if let HostEvent::Request(request) = event {
                    request_calls.push(request.context.call_id);
                    pending.push(request);
                }
            }
            answered += answer_some(&policy, &mut host, &mut pending, &mut controls, &mut rng);
            let _ = host.poll_transmit(&mut output);
            assert!(
                output.len() - before <= MAX_OUTPUT_PER_CALL,
                "host queued {} bytes",
                output.len() - before
            );
            if host.is_closed() {
                break;
            }
        }
    }
    for request in pending.drain(..) {
        answer_one(&policy, &mut host, &request, true, &mut rng);
        answered += 1;
    }
    let _ = host.poll_transmit(&mut output);
    assert_eq!(answered, request_calls.len(), "an event was lost");
    if !host.is_closed() {
        assert_eq!(host.unanswered_requests(), 0, "answered events still wait");
    }
    let reply_calls = response_call_ids(&output);
    assert!(
        is_subsequence(&request_calls, &reply_calls),
        "replies out of call order: requests {request_calls:?}, replies {reply_calls:?}"
    );
    if answered > 0 {
        Depth::Complete
    } else {
        bound_depth(&host)
    }
}

/// Answers pending events as the control bytes say; returns how many.
fn answer_some(
    policy: &KmsHost<MemoryStore>,
    host: &mut HostConnection,
    pending: &mut Vec<RequestEvent>,
    controls: &mut impl Iterator<Item = u8>,
    rng: &mut ScriptedRandom,
) -> usize {
    let mut answered = 0;
    while !pending.is_empty() {
        let Some(control) = controls.next() else {
            // No more choices: answer everything, in order.
            for request in pending.drain(..) {
                answer_one(policy, host, &request, true, rng);
                answered += 1;
            }
            return answered;
        };
        let action = control >> 6;
        if action == 3 {
            return answered;
        }
        let index = usize::from(control) % pending.len();
        let request = pending.remove(index);
        answer_one(policy, host, &request, action < 2, rng);
        answered += 1;
    }
    answered
}

fn answer_one(
    policy: &KmsHost<MemoryStore>,
    host: &mut HostConnection,
    request: &RequestEvent,
    decide: bool,
    rng: &mut ScriptedRandom,
) {
    let reply = if decide {
        crate::block_on::block_on(policy.decide(request)).reply
    } else {
        Err(HResult::KMS_NOT_ACTIVATED)
    };
    let sent = match reply {
        Ok(answer) => host.answer(request.id, answer, rng),
        Err(hresult) => host.refuse(request.id, hresult),
    };
    if sent.is_err() {
        host.refuse(request.id, HResult::INVALID_DATA)
            .expect("a waiting request can be refused");
    }
}

/// The call ids of the response PDUs in a host's output.
fn response_call_ids(output: &[u8]) -> Vec<u32> {
    let mut splitter = rpc::FrameSplitter::new(rpc::MAX_FRAG_LEN);
    let mut rest = output;
    let mut calls = Vec::new();
    while !rest.is_empty() {
        let Ok((used, frame)) = splitter.next_frame(rest) else {
            panic!("the host sent bytes that do not frame");
        };
        rest = rest.get(used..).unwrap_or_default();
        if let Some(frame) = frame {
            let pdu = rpc::Pdu::decode(&frame).expect("the host sends PDUs that decode");
            if matches!(pdu.body, rpc::PduBody::Response(_)) {
                calls.push(pdu.call_id);
            }
        }
    }
    calls
}

fn is_subsequence(needles: &[u32], haystack: &[u32]) -> bool {
    let mut hay = haystack.iter();
    needles.iter().all(|n| hay.any(|h| h == n))
}

/// Feeds a byte stream, as if from a host, to a client connection that has
/// requests queued, so that bind acks, responses and their verification are
/// all reached.
///
/// Input: one configuration byte (`% 3` picks V4, V5 or V6; bit 2 offers
/// NDR64; `(b >> 3) % 3 + 1` requests of [`fixed_request`]), then the host's
/// stream. Checks: output bounded; at most one verified answer per request.
pub fn client_stream(data: &[u8]) -> Depth {
    let Some((&setup, stream)) = data.split_first() else {
        return Depth::Rejected;
    };
    let (mut client, requests) = seeded_client(setup);
    let mut rng = fixed_rng();
    for index in 0..requests {
        let version = VERSIONS
            .get(usize::from(setup) % VERSIONS.len())
            .copied()
            .unwrap_or(Version::V6);
        client
            .send_request(fixed_request(version, index), &mut rng)
            .expect("a fresh client queues a request");
    }
    let mut out = Vec::new();
    let (mut bound, mut answers) = (false, 0u8);
    for piece in stream.chunks(STREAM_PIECE) {
        let mut rest = piece;
        while !rest.is_empty() {
            let result = client.handle_input(rest, &mut rng);
            out.clear();
            let _ = client.poll_transmit(&mut out);
            assert!(
                out.len() <= MAX_OUTPUT_PER_CALL,
                "client queued {}",
                out.len()
            );
            while let Some(event) = client.poll_event() {
                match event {
                    ClientEvent::Bound { .. } => bound = true,
                    ClientEvent::Answered(_) | ClientEvent::Refused(_) => answers += 1,
                }
            }
            match result {
                Ok(used) => rest = rest.get(used..).unwrap_or_default(),
                Err(_) => return client_depth(bound, answers),
            }
        }
    }
    assert!(
        answers <= requests,
        "{answers} answers to {requests} requests"
    );
    client_depth(bound, answers)
}

/// The client a `client_stream` configuration byte describes, and how many
/// requests it sends.
#[must_use]
pub fn seeded_client(setup: u8) -> (ClientConnection, u8) {
    let mut config = ClientConfig::default();
    config.set_ndr64(setup & 0b100 != 0);
    (ClientConnection::new(&config), (setup >> 3) % 3 + 1)
}

fn client_depth(bound: bool, answers: u8) -> Depth {
    match (bound, answers) {
        (_, 1..) => Depth::Complete,
        (true, 0) => Depth::Decoded,
        (false, 0) => Depth::Rejected,
    }
}

/// Parses a product key; one that parses must format and parse back to
/// itself.
pub fn product_key(data: &[u8]) -> Depth {
    let Ok(text) = std::str::from_utf8(data) else {
        return Depth::Rejected;
    };
    let Ok(key) = ProductKey::parse(text) else {
        return Depth::Rejected;
    };
    let again = ProductKey::parse(&key.to_string()).expect("a formatted key parses");
    assert_eq!(again, key, "product key changed in a round trip");
    let _ = key.partial();
    depth_if(key.checksum_ok() == Some(true))
}

/// Parses an ePID; one that parses must format and parse back to itself,
/// and its consistency checks must not panic.
pub fn epid(data: &[u8]) -> Depth {
    let Ok(text) = std::str::from_utf8(data) else {
        return Depth::Rejected;
    };
    let Ok(epid) = Epid::parse(text) else {
        return Depth::Rejected;
    };
    let again = Epid::parse(&epid.to_string()).expect("a formatted ePID parses");
    assert_eq!(again, epid, "ePID changed in a round trip");
    let problems = epid.problems(chrono::DateTime::UNIX_EPOCH);
    depth_if(problems.is_empty() || epid.likely_csvlk().is_some())
}

/// Dissects a packet capture, whole and in 7-byte pieces. Checks: both give
/// the same records; the records are bounded by the input (one KMS record
/// needs a 16-byte PDU of its own; warnings stop at the limit); a capture
/// that fails, fails the same way in pieces. The time bound is libFuzzer's
/// `-timeout` (the dissector is linear; see `benches/dissect.rs`).
#[cfg(feature = "pcap")]
pub fn pcap_capture(data: &[u8]) -> Depth {
    use crate::dissect::{self, Dissector, Event, Limits};

    let whole = dissect::dissect(data);
    let mut dissector = Dissector::new();
    let mut pieces = Vec::new();
    let mut failed = None;
    for piece in data.chunks(7) {
        if let Err(e) = dissector.handle_input(piece) {
            failed = Some(e);
            break;
        }
        pieces.extend(std::iter::from_fn(|| dissector.poll_record()));
    }
    if failed.is_none() {
        failed = dissector.finish().err();
        pieces.extend(std::iter::from_fn(|| dissector.poll_record()));
    }
    let records = match (whole, failed) {
        (Ok(records), None) => records,
        (Err(a), Some(b)) => {
            assert_eq!(a, b, "whole and in pieces fail differently");
            return Depth::Rejected;
        }
        (whole, failed) => panic!("whole: {whole:?}, in pieces: {failed:?}"),
    };
    assert_eq!(records, pieces, "whole and in pieces disagree");
    let warnings = records
        .iter()
        .filter(|r| matches!(r.event, Event::Warning { .. }))
        .count();
    assert!(
        warnings <= Limits::new().max_warnings() + 1,
        "{warnings} warnings"
    );
    let decoded = records.len() - warnings;
    assert!(
        decoded <= data.len() / 16,
        "{decoded} records from {} bytes",
        data.len()
    );
    depth_if(decoded > 0)
}
