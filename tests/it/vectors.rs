//! Replays every captured vlmcs ↔ vlmcsd conversation of `tests/data/*.json`
//! through the host and client connections and compares bytes.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveDateTime;
use kms_activation::client::{ClientConfig, ClientConnection, ClientEvent};
use kms_activation::host::{FixedResponder, HostConfig, HostConnection, Responder};
use kms_activation::message::{self, Hwid, RequestBody, ResponseBody, Version};
use kms_activation::rpc::{self, Pdu, PduBody};
use kms_activation::{FileTime, HResult, LicenseStatus, ScriptedRandom, Uuid};
use serde::Deserialize;

use crate::support::RecordingResponder;

#[derive(Debug, Deserialize)]
pub struct Vector {
    pub scenario: String,
    pub client_options: String,
    pub request_fields: BTreeMap<String, String>,
    pub response_fields: Vec<BTreeMap<String, String>>,
    pub client_errors: Vec<String>,
    pub connections: Vec<Vec<Read>>,
}

#[derive(Debug, Deserialize)]
pub struct Read {
    pub dir: String,
    pub hex: String,
}

impl Read {
    pub fn bytes(&self) -> Vec<u8> {
        hex::decode(&self.hex).unwrap()
    }
    pub fn from_client(&self) -> bool {
        self.dir == "c2s"
    }
}

pub fn load_all() -> Vec<Vector> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "vectors missing in {}", dir.display());
    files
        .iter()
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect()
}

pub fn field<'a>(map: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    map.get(name)
        .unwrap_or_else(|| panic!("field {name} missing"))
        .as_str()
}

/// The first whitespace-separated token: "2 (OOB grace)" → "2".
pub fn head(s: &str) -> &str {
    s.split_whitespace().next().unwrap()
}

pub fn parse_time(s: &str) -> FileTime {
    let t = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .unwrap()
        .and_utc();
    FileTime::try_from(t).unwrap()
}

fn parse_version(s: &str) -> Version {
    let (major, minor) = s.split_once('.').unwrap();
    Version {
        major: major.parse().unwrap(),
        minor: minor.parse().unwrap(),
    }
}

/// The request the client decoded and the host logged, as a `RequestBody`.
pub fn expected_request(v: &Vector) -> RequestBody {
    request_from_fields(&v.request_fields)
}

/// A `RequestBody` from the fields vlmcs/vlmcsd print.
pub fn request_from_fields(f: &BTreeMap<String, String>) -> RequestBody {
    RequestBody {
        version: parse_version(field(f, "Protocol version")),
        vm_info: u32::from(field(f, "Client is a virtual machine") == "Yes"),
        license_status: LicenseStatus::from(
            head(field(f, "Licensing status")).parse::<u32>().unwrap(),
        ),
        binding_expiration: head(field(f, "Remaining time (0 = forever)"))
            .parse()
            .unwrap(),
        application_id: head(field(f, "Application ID")).parse().unwrap(),
        sku_id: head(field(f, "SKU ID (aka Activation ID)"))
            .parse()
            .unwrap(),
        kms_id: head(field(f, "KMS ID (aka KMS counted ID)"))
            .parse()
            .unwrap(),
        cmid: head(field(f, "Client machine ID")).parse().unwrap(),
        previous_cmid: head(field(f, "Previous client machine ID"))
            .parse()
            .unwrap(),
        n_policy: field(f, "N count policy (minimum clients)")
            .parse()
            .unwrap(),
        client_time: parse_time(field(f, "Client request timestamp (UTC)")),
        workstation: field(f, "Workstation name").to_owned(),
    }
}

/// Checks a response body against the fields the client printed.
pub fn assert_response_matches(body: &ResponseBody, f: &BTreeMap<String, String>) {
    assert_eq!(body.version, parse_version(field(f, "Protocol version")));
    assert_eq!(body.epid, field(f, "KMS host extended PID"));
    let cmid: Uuid = field(f, "Client machine ID").parse().unwrap();
    assert_eq!(body.cmid, cmid);
    assert_eq!(
        body.client_time,
        parse_time(field(f, "Client request timestamp (UTC)"))
    );
    assert_eq!(
        body.count.to_string(),
        field(f, "KMS host current active clients")
    );
    assert_eq!(
        body.renewal_interval.to_string(),
        field(f, "Renewal interval policy")
    );
    assert_eq!(
        body.activation_interval.to_string(),
        field(f, "Activation interval policy")
    );
    match f.get("KMS host Hardware ID") {
        Some(hwid) => assert_eq!(body.hwid.unwrap().to_string(), *hwid),
        None => assert_eq!(body.hwid, None),
    }
}

/// The HRESULTs the client reported ("Error 0xC004F042 while …").
pub fn expected_errors(v: &Vector) -> Vec<HResult> {
    v.client_errors
        .iter()
        .map(|e| {
            let hex = e
                .split_whitespace()
                .nth(1)
                .unwrap()
                .trim_start_matches("0x");
            HResult::new(u32::from_str_radix(hex, 16).unwrap())
        })
        .collect()
}

/// The KMS message inside a request or response stub (either NDR).
fn stub_message(stub: &[u8], request: bool) -> Option<Vec<u8>> {
    let size = u32::from_le_bytes(stub[..4].try_into().unwrap()) as usize;
    let ndr = if request {
        if stub.len() == 8 + size {
            rpc::Ndr::Ndr32
        } else {
            rpc::Ndr::Ndr64
        }
    } else if stub.len() >= 12 && stub[4..8] != [0, 0, 0, 0] || stub.len() == 12 {
        rpc::Ndr::Ndr32
    } else {
        rpc::Ndr::Ndr64
    };
    if request {
        Some(rpc::decode_request_stub(ndr, stub).unwrap().to_vec())
    } else {
        match rpc::decode_response_stub(ndr, stub).unwrap() {
            rpc::StubReply::Message(m) => Some(m.to_vec()),
            rpc::StubReply::Error(_) => None,
        }
    }
}

/// Every PDU of one direction of a connection, in order.
fn pdus(conn: &[Read], from_client: bool) -> Vec<Vec<u8>> {
    let stream: Vec<u8> = conn
        .iter()
        .filter(|r| r.from_client() == from_client)
        .flat_map(Read::bytes)
        .collect();
    let mut out = Vec::new();
    let mut rest = stream.as_slice();
    while !rest.is_empty() {
        let len = rpc::frame_len(rest, rpc::MAX_FRAG_LEN).unwrap().unwrap();
        out.push(rest[..len].to_vec());
        rest = &rest[len..];
    }
    out
}

/// The KMS request and response messages of a connection, paired in order.
pub fn kms_exchanges(conn: &[Read]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let requests =
        pdus(conn, true)
            .into_iter()
            .filter_map(|p| match Pdu::decode(&p).unwrap().body {
                PduBody::Request(r) => stub_message(&r.stub, true),
                _ => None,
            });
    let responses =
        pdus(conn, false)
            .into_iter()
            .filter_map(|p| match Pdu::decode(&p).unwrap().body {
                PduBody::Response(r) => Some(stub_message(&r.stub, false)),
                _ => None,
            });
    requests.zip(responses).collect()
}

/// The host's choices in a captured conversation: port string, assoc group.
fn captured_bind_ack(conn: &[Read]) -> (u16, u32) {
    let ack = pdus(conn, false).into_iter().next().unwrap();
    match Pdu::decode(&ack).unwrap().body {
        PduBody::BindAck(a) => (
            std::str::from_utf8(&a.secondary_address)
                .unwrap()
                .parse()
                .unwrap(),
            a.assoc_group_id,
        ),
        other => panic!("first server PDU is not a bind_ack: {other:?}"),
    }
}

/// Zeroes the alignment pad of every bind_ack in a server byte stream (its
/// content is unspecified: vlmcsd leaves stale bytes there).
pub fn mask_bind_ack_pad(stream: &[u8]) -> Vec<u8> {
    let mut out = stream.to_vec();
    let mut at = 0;
    while at + 16 <= out.len() {
        let len = usize::from(u16::from_le_bytes([out[at + 8], out[at + 9]]));
        if out[at + 2] == 12 || out[at + 2] == 15 {
            let l = usize::from(u16::from_le_bytes([out[at + 24], out[at + 25]]));
            let pad_start = 26 + l;
            let pad_end = pad_start.next_multiple_of(4);
            for b in &mut out[at + pad_start..at + pad_end] {
                *b = 0;
            }
        }
        at += len;
    }
    out
}

/// The randomness the captured host drew, in the order our host draws it.
fn captured_host_randomness(conn: &[Read]) -> ScriptedRandom {
    let mut rng = ScriptedRandom::default();
    for (request, response) in kms_exchanges(conn) {
        if let Some(response) = response {
            rng.push(&message::replay_randomness(&request, &response).unwrap());
        }
    }
    rng
}

/// The responder playing the captured host: its ePID and HWID, vlmcsd's
/// default count rule (2 × N), default intervals, refusing unknown KMS IDs.
fn captured_responder(v: &Vector) -> RecordingResponder<FixedResponder> {
    let mut inner = FixedResponder::default();
    if let Some(first) = v.response_fields.first() {
        inner.set_epid(field(first, "KMS host extended PID"));
        if let Some(hwid) = first.get("KMS host Hardware ID") {
            inner.set_hwid(hwid.parse::<Hwid>().unwrap());
        }
    }
    inner.set_require_known_kms_id(true);
    RecordingResponder::new(inner)
}

/// Runs the captured client bytes through a host connection, cut into the
/// chunks `split` gives, and returns the host's output and the requests the
/// responder saw.
pub fn run_host(
    v: &Vector,
    conn: &[Read],
    split: &dyn Fn(&[u8]) -> Vec<Vec<u8>>,
) -> (Vec<u8>, Vec<RequestBody>) {
    let (port, assoc) = captured_bind_ack(conn);
    let mut config = HostConfig::default();
    config.set_port(port).set_assoc_group_id(Some(assoc));
    let mut host = HostConnection::new(&config);
    let mut responder = captured_responder(v);
    let mut rng = captured_host_randomness(conn);
    let now = expected_request(v).client_time;
    let mut out = Vec::new();
    for read in conn.iter().filter(|r| r.from_client()) {
        for chunk in split(&read.bytes()) {
            let mut rest = chunk.as_slice();
            while !rest.is_empty() {
                let used = host
                    .handle_input_with(now, rest, &mut responder, &mut rng)
                    .unwrap();
                let _ = host.poll_transmit(&mut out);
                rest = &rest[used..];
            }
        }
    }
    assert!(!host.is_closed());
    assert_eq!(
        rng.remaining(),
        0,
        "host drew less randomness than the capture"
    );
    (out, responder.seen)
}

/// Runs a client connection against the captured server bytes, cut into
/// chunks by `split`; returns its output and events.
pub fn run_client(
    v: &Vector,
    conn: &[Read],
    split: &dyn Fn(&[u8]) -> Vec<Vec<u8>>,
) -> (Vec<u8>, Vec<ClientEvent>) {
    let mut config = ClientConfig::default();
    config
        .set_ndr64(v.client_options.contains("-N1"))
        .set_btfn(!v.client_options.contains("-B0"));
    let exchanges = kms_exchanges(conn);
    let mut rng = ScriptedRandom::default();
    for (request, _) in &exchanges {
        if message::request_version(request).is_some_and(|v| v.major >= 5) {
            rng.push(&request[4..20]);
        }
    }
    let mut client = ClientConnection::new(&config);
    for _ in &exchanges {
        client.send_request(expected_request(v), &mut rng).unwrap();
    }
    let mut out = Vec::new();
    let mut events = Vec::new();
    let _ = client.poll_transmit(&mut out);
    for read in conn.iter().filter(|r| !r.from_client()) {
        for chunk in split(&read.bytes()) {
            let used = client.handle_input(&chunk, &mut rng).unwrap();
            assert_eq!(used, chunk.len());
            out.extend_from_slice(client.transmit());
            client.advance_transmit(usize::MAX);
            events.extend(std::iter::from_fn(|| client.poll_event()));
        }
    }
    assert!(client.is_idle());
    (out, events)
}

pub fn whole(bytes: &[u8]) -> Vec<Vec<u8>> {
    vec![bytes.to_vec()]
}

pub fn client_stream(conn: &[Read]) -> Vec<u8> {
    conn.iter()
        .filter(|r| r.from_client())
        .flat_map(Read::bytes)
        .collect()
}

pub fn server_stream(conn: &[Read]) -> Vec<u8> {
    conn.iter()
        .filter(|r| !r.from_client())
        .flat_map(Read::bytes)
        .collect()
}

/// Host side, byte for byte: requests decode to the logged fields and the
/// host's output equals the captured server bytes (bind_ack pad aside).
pub fn check_host(v: &Vector, split: &dyn Fn(&[u8]) -> Vec<Vec<u8>>) {
    let expected = expected_request(v);
    for conn in &v.connections {
        let (out, seen) = run_host(v, conn, split);
        assert_eq!(
            hex::encode(mask_bind_ack_pad(&out)),
            hex::encode(mask_bind_ack_pad(&server_stream(conn))),
            "{}: host output differs",
            v.scenario
        );
        // A request that fails to decode never reaches the responder.
        if expected.version.major <= 6 {
            assert!(!seen.is_empty(), "{}", v.scenario);
        }
        for body in seen {
            assert_eq!(body, expected, "{}", v.scenario);
        }
    }
}

/// Client side, byte for byte, and the verified responses or HRESULTs.
pub fn check_client(v: &Vector, split: &dyn Fn(&[u8]) -> Vec<Vec<u8>>) {
    for conn in &v.connections {
        let (out, events) = run_client(v, conn, split);
        assert_eq!(
            hex::encode(&out),
            hex::encode(client_stream(conn)),
            "{}: client output differs",
            v.scenario
        );
        let mut activated = Vec::new();
        let mut refused = Vec::new();
        for e in events {
            match e {
                ClientEvent::Answered(r) => activated.push(r.body),
                ClientEvent::Refused(h) => refused.push(h),
                ClientEvent::Bound { .. } => {}
                other => panic!("unexpected event {other:?}"),
            }
        }
        assert_eq!(refused, expected_errors(v), "{}", v.scenario);
        assert_eq!(activated.len(), v.response_fields.len(), "{}", v.scenario);
        for (body, fields) in activated.iter().zip(&v.response_fields) {
            assert_response_matches(body, fields);
        }
    }
}

#[test]
fn host_reproduces_every_capture() {
    for v in load_all() {
        check_host(&v, &whole);
    }
}

#[test]
fn client_reproduces_every_capture() {
    for v in load_all() {
        check_client(&v, &whole);
    }
}

#[test]
fn captured_requests_decode_to_logged_fields() {
    for v in load_all() {
        let expected = expected_request(&v);
        for conn in &v.connections {
            for (request, _) in kms_exchanges(conn) {
                match message::decode_request(&request) {
                    Ok(received) => assert_eq!(*received.body(), expected, "{}", v.scenario),
                    Err(e) => {
                        assert!(expected.version.major > 6, "{}: {e}", v.scenario);
                        assert_eq!(expected_errors(&v), vec![HResult::INVALID_DATA]);
                    }
                }
            }
        }
    }
}

/// The responder's view is what a real policy would see.
#[test]
fn responder_trait_object_is_usable() {
    let v = load_all()
        .into_iter()
        .find(|v| v.scenario.starts_with("v6"))
        .unwrap();
    let request = expected_request(&v);
    let ask = |r: &mut dyn Responder| {
        r.respond(
            FileTime::from_ticks(0),
            &crate::support::context(),
            &request,
        )
        .unwrap()
    };
    // The defaults: the documented ePID and HWID, 2 × N, default intervals.
    let defaults = ask(Box::new(FixedResponder::default()).as_mut());
    assert_eq!(
        defaults.epid,
        "03612-04573-012-345678-03-1033-20348.0000-2652024"
    );
    assert_eq!(
        defaults.hwid,
        Hwid([0x36, 0x4F, 0x46, 0x3A, 0x88, 0x63, 0xD3, 0x5F])
    );
    assert_eq!(defaults.count, 2 * request.n_policy);
    assert_eq!(
        (defaults.activation_interval, defaults.renewal_interval),
        (120, 10_080)
    );
    // Every setting reaches the answer through the trait object.
    let mut fixed = FixedResponder::new(
        "05426-00206-565-184251-03-1068-9200.0000-1222025",
        Hwid([7; 8]),
    );
    fixed.set_count(Some(7)).set_intervals(60, 600);
    let mut r: Box<dyn Responder> = Box::new(fixed);
    let answer = ask(r.as_mut());
    assert_eq!(
        answer.epid,
        "05426-00206-565-184251-03-1068-9200.0000-1222025"
    );
    assert_eq!(answer.hwid, Hwid([7; 8]));
    assert_eq!(answer.count, 7);
    assert_eq!(
        (answer.activation_interval, answer.renewal_interval),
        (60, 600)
    );
}
