//! Host and client engines on inputs the captures do not cover: faults,
//! protocol violations, limits and backpressure.

use bytes::BytesMut;
use kms_activation::client::{
    BindAckProblem, CallMismatch, ClientConfig, ClientConnection, ClientError, ClientEvent,
    MAX_PENDING_EVENTS, MAX_PENDING_OUTPUT, MAX_QUEUED_REQUESTS,
};
use kms_activation::host::{
    FixedResponder, HostConfig, HostConnection, HostError, HostLimits, Responder,
};
use kms_activation::message::{RequestBody, Version};
use kms_activation::rpc::{
    self, Bind, ContextElement, Fault, Pdu, PduBody, PduType, PfcFlags, Request, ResultKind,
};
use kms_activation::{FileTime, HResult, LicenseStatus, ScriptedRandom, Uuid};

const NOW: FileTime = FileTime::from_ticks(134_397_882_570_000_000);

fn request_body(version: Version) -> RequestBody {
    RequestBody {
        version,
        vm_info: 0,
        license_status: LicenseStatus::OobGrace,
        binding_expiration: 43_200,
        application_id: "55c92734-d682-4d71-983e-d6ec3f16059f".parse().unwrap(),
        sku_id: "73111121-5638-40f6-bc11-f1d7b0d64300".parse().unwrap(),
        kms_id: "58e2134f-8e11-4d17-9cb2-91069c151148".parse().unwrap(),
        cmid: Uuid::from_u128(0x1111_1111_2222_3333_4444_5555_5555_5555),
        previous_cmid: Uuid::nil(),
        n_policy: 25,
        client_time: NOW,
        workstation: "pc.example.org".into(),
    }
}

fn encode(pdu: &Pdu) -> Vec<u8> {
    let mut out = BytesMut::new();
    pdu.encode(&mut out);
    out.to_vec()
}

fn decode_all(mut bytes: &[u8]) -> Vec<Pdu> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = rpc::frame_len(bytes, rpc::MAX_FRAG_LEN).unwrap().unwrap();
        out.push(Pdu::decode(&bytes[..len]).unwrap());
        bytes = &bytes[len..];
    }
    out
}

fn bind_ndr32(call_id: u32) -> Vec<u8> {
    encode(&Pdu {
        call_id,
        flags: PfcFlags::SINGLE,
        body: PduBody::Bind(Bind {
            max_xmit_frag: 5840,
            max_recv_frag: 5840,
            assoc_group_id: 0,
            contexts: vec![ContextElement {
                context_id: 0,
                abstract_syntax: rpc::KMS_INTERFACE,
                transfer_syntaxes: vec![rpc::NDR32],
            }],
        }),
    })
}

fn rpc_request(call_id: u32, context_id: u16, opnum: u16, stub: Vec<u8>) -> Vec<u8> {
    encode(&Pdu {
        call_id,
        flags: PfcFlags::SINGLE,
        body: PduBody::Request(Request {
            alloc_hint: u32::try_from(stub.len()).unwrap(),
            context_id,
            opnum,
            object: None,
            stub: stub.into(),
        }),
    })
}

fn kms_stub(version: Version) -> Vec<u8> {
    let mut msg = BytesMut::new();
    kms_activation::message::encode_request(
        &request_body(version),
        &mut ScriptedRandom::new([3; 16]),
        &mut msg,
    )
    .unwrap();
    let mut stub = BytesMut::new();
    rpc::encode_request_stub(rpc::Ndr::Ndr32, &msg, &mut stub);
    stub.to_vec()
}

struct Host {
    conn: HostConnection,
    responder: FixedResponder,
    rng: ScriptedRandom,
}

impl Host {
    fn new(config: &HostConfig) -> Self {
        Self {
            conn: HostConnection::new(config),
            responder: FixedResponder::default(),
            rng: ScriptedRandom::new(vec![9; 4096]),
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Pdu>, HostError> {
        let used = self
            .conn
            .handle_input_with(NOW, bytes, &mut self.responder, &mut self.rng);
        let mut out = Vec::new();
        let _ = self.conn.poll_transmit(&mut out);
        let pdus = decode_all(&out);
        match used {
            Ok(n) => {
                assert_eq!(n, bytes.len());
                Ok(pdus)
            }
            Err(e) => {
                assert!(self.conn.is_closed());
                Err(e)
            }
        }
    }
}

/// A host whose limits differ from the defaults as `adjust` says.
fn host_with_limits(adjust: impl FnOnce(&mut HostLimits)) -> Host {
    let mut limits = HostLimits::default();
    adjust(&mut limits);
    let mut config = HostConfig::default();
    config.set_limits(limits);
    Host::new(&config)
}

fn fault_status(pdu: &Pdu) -> u32 {
    match &pdu.body {
        PduBody::Fault(Fault { status, .. }) => *status,
        other => panic!("expected a fault, got {other:?}"),
    }
}

fn hresult_of(pdu: &Pdu) -> HResult {
    match &pdu.body {
        PduBody::Response(r) => {
            match rpc::decode_response_stub(rpc::Ndr::Ndr32, &r.stub).unwrap() {
                rpc::StubReply::Error(h) => h,
                rpc::StubReply::Message(msg) => {
                    // Success only for a response that answers the request
                    // these tests send, checked as its client would.
                    let version = kms_activation::message::request_version(msg).unwrap();
                    let sent = kms_activation::message::encode_request(
                        &request_body(version),
                        &mut ScriptedRandom::new([3; 16]),
                        &mut BytesMut::new(),
                    )
                    .unwrap();
                    sent.verify_response(msg).unwrap();
                    HResult::S_OK
                }
            }
        }
        other => panic!("expected a response, got {other:?}"),
    }
}

#[test]
fn request_before_bind_gets_unknown_interface_fault() {
    let mut host = Host::new(&HostConfig::default());
    let reply = host
        .feed(&rpc_request(5, 0, 0, kms_stub(Version::V6)))
        .unwrap();
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].call_id, 5);
    assert_eq!(fault_status(&reply[0]), rpc::NCA_S_UNK_IF);
    assert!(reply[0].flags.contains(PfcFlags::DID_NOT_EXECUTE));
    assert!(!host.conn.is_closed());
}

#[test]
fn unknown_context_and_bad_opnum_fault_but_keep_the_connection() {
    let mut host = Host::new(&HostConfig::default());
    host.feed(&bind_ndr32(2)).unwrap();
    let reply = host
        .feed(&rpc_request(2, 7, 0, kms_stub(Version::V6)))
        .unwrap();
    assert_eq!(fault_status(&reply[0]), rpc::NCA_S_UNK_IF);
    let reply = host
        .feed(&rpc_request(3, 0, 1, kms_stub(Version::V6)))
        .unwrap();
    assert_eq!(fault_status(&reply[0]), rpc::NCA_S_OP_RNG_ERROR);
    let reply = host
        .feed(&rpc_request(4, 0, 0, kms_stub(Version::V6)))
        .unwrap();
    assert_eq!(hresult_of(&reply[0]), HResult::S_OK);
    assert_eq!(host.conn.requests_served(), 1);
}

#[test]
fn undecodable_kms_requests_get_invalid_data() {
    let mut host = Host::new(&HostConfig::default());
    host.feed(&bind_ndr32(2)).unwrap();
    // Stub whose NDR size disagrees with its conformance.
    let mut stub = kms_stub(Version::V6);
    stub[0] ^= 1;
    let reply = host.feed(&rpc_request(2, 0, 0, stub)).unwrap();
    assert_eq!(hresult_of(&reply[0]), HResult::INVALID_DATA);
    // Corrupted ciphertext: the padding no longer checks.
    let mut stub = kms_stub(Version::V6);
    let last = stub.len() - 1;
    stub[last] ^= 0xff;
    let reply = host.feed(&rpc_request(3, 0, 0, stub)).unwrap();
    assert_eq!(hresult_of(&reply[0]), HResult::INVALID_DATA);
    // A V4 request with a wrong MAC.
    let mut stub = kms_stub(Version::V4);
    let last = stub.len() - 1;
    stub[last] ^= 1;
    let reply = host.feed(&rpc_request(4, 0, 0, stub.clone())).unwrap();
    assert_eq!(hresult_of(&reply[0]), HResult::INVALID_DATA);
    // … accepted when the host is told not to check, as vlmcsd does.
    let mut config = HostConfig::default();
    config.set_verify_v4_mac(false);
    let mut lenient = Host::new(&config);
    lenient.feed(&bind_ndr32(2)).unwrap();
    let reply = lenient.feed(&rpc_request(2, 0, 0, stub)).unwrap();
    assert_eq!(hresult_of(&reply[0]), HResult::S_OK);
    assert!(!host.conn.is_closed());
}

#[test]
fn responder_refusals_travel_as_hresults() {
    let mut host = Host::new(&HostConfig::default());
    host.responder.set_require_known_kms_id(true);
    host.feed(&bind_ndr32(2)).unwrap();
    let mut body = request_body(Version::V5);
    body.kms_id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let mut msg = BytesMut::new();
    kms_activation::message::encode_request(&body, &mut ScriptedRandom::new([1; 16]), &mut msg)
        .unwrap();
    let mut stub = BytesMut::new();
    rpc::encode_request_stub(rpc::Ndr::Ndr32, &msg, &mut stub);
    let reply = host.feed(&rpc_request(2, 0, 0, stub.to_vec())).unwrap();
    assert_eq!(hresult_of(&reply[0]), HResult::KMS_ID_MISMATCH);
    // The Windows application ID with an Office KMS ID is refused too.
    body.kms_id = "e6a6f1bf-9d40-40c3-aa9f-c77ba21578c0".parse().unwrap();
    assert_eq!(
        host.responder
            .respond(NOW, &crate::support::context(), &body)
            .unwrap_err(),
        HResult::KMS_ID_MISMATCH
    );
    body.application_id = "0ff1ce15-a989-479d-af46-f275c6370663".parse().unwrap();
    assert!(
        host.responder
            .respond(NOW, &crate::support::context(), &body)
            .is_ok()
    );
}

#[test]
fn protocol_violations_close_the_connection() {
    // Not DCE/RPC at all.
    let mut host = Host::new(&HostConfig::default());
    assert!(matches!(
        host.feed(b"GET / HTTP/1.1\r\n\r\n"),
        Err(HostError::Rpc(_))
    ));
    assert_eq!(host.feed(b"more"), Err(HostError::Closed));
    // A second bind.
    let mut host = Host::new(&HostConfig::default());
    host.feed(&bind_ndr32(2)).unwrap();
    assert_eq!(
        host.feed(&bind_ndr32(3)),
        Err(HostError::UnexpectedPdu {
            pdu_type: PduType::Bind
        })
    );
    // A PDU only a server sends.
    let mut host = Host::new(&HostConfig::default());
    let fault = encode(&Pdu {
        call_id: 1,
        flags: PfcFlags::SINGLE,
        body: PduBody::Fault(Fault {
            alloc_hint: 0,
            context_id: 0,
            cancel_count: 0,
            status: 0,
        }),
    });
    assert!(matches!(
        host.feed(&fault),
        Err(HostError::UnexpectedPdu { .. })
    ));
}

#[test]
fn oversized_frames_are_refused_before_buffering() {
    let mut host = host_with_limits(|l| l.max_frag_len = 400);
    // Only the 16-byte header of a 4000-byte PDU is offered.
    let mut header = bind_ndr32(2)[..16].to_vec();
    header[8..10].copy_from_slice(&4000u16.to_le_bytes());
    assert!(matches!(
        host.feed(&header),
        Err(HostError::Rpc(rpc::Error::FrameTooLarge { .. }))
    ));
}

#[test]
fn backpressure_stops_consuming_until_output_is_drained() {
    let mut host = host_with_limits(|l| l.max_pending_output = 600);
    host.feed(&bind_ndr32(2)).unwrap();
    let mut pipelined = Vec::new();
    for call in 0..10 {
        pipelined.extend(rpc_request(call, 0, 0, kms_stub(Version::V6)));
    }
    let request_len = pipelined.len() / 10;
    let mut offset = 0;
    let mut rounds = 0;
    let mut replies = 0;
    while offset < pipelined.len() {
        let left = pipelined.len() - offset;
        let used = host
            .conn
            .handle_input_with(
                NOW,
                &pipelined[offset..],
                &mut host.responder,
                &mut host.rng,
            )
            .unwrap();
        // Two replies fill the 600-byte output limit: with more than two
        // requests left, the host must stop short of the end.
        assert!(
            used < left || left <= 2 * request_len,
            "consumed all {left} bytes left despite the output limit"
        );
        assert!(used <= 3 * request_len, "consumed {used} bytes in one call");
        offset += used;
        let mut out = Vec::new();
        let _ = host.conn.poll_transmit(&mut out);
        assert!(out.len() <= 600 + 320, "queued {} bytes", out.len());
        replies += decode_all(&out).len();
        rounds += 1;
        assert!(rounds < 100);
    }
    assert_eq!(replies, 10);
    assert!(rounds > 1);
}

#[test]
fn alter_context_adds_contexts_up_to_the_limit() {
    let mut host = host_with_limits(|l| l.max_contexts = 2);
    host.feed(&bind_ndr32(2)).unwrap();
    let alter = |id: u16| {
        encode(&Pdu {
            call_id: 2,
            flags: PfcFlags::SINGLE,
            body: PduBody::AlterContext(Bind {
                max_xmit_frag: 5840,
                max_recv_frag: 5840,
                assoc_group_id: 0,
                contexts: vec![ContextElement {
                    context_id: id,
                    abstract_syntax: rpc::KMS_INTERFACE,
                    transfer_syntaxes: vec![rpc::NDR64],
                }],
            }),
        })
    };
    let reply = host.feed(&alter(1)).unwrap();
    let PduBody::AlterContextResp(resp) = &reply[0].body else {
        panic!()
    };
    assert_eq!(resp.results[0].result, ResultKind::Acceptance);
    assert!(resp.secondary_address.is_empty());
    assert_eq!(
        host.feed(&alter(5)),
        Err(HostError::TooManyContexts { limit: 2 })
    );
}

#[test]
fn ndr32_only_host_serves_a_client_that_offers_ndr64() {
    let mut config = HostConfig::default();
    config.set_ndr64(false).set_btfn(false);
    let (events, _) = exchange(&config, &ClientConfig::default(), 3);
    assert!(matches!(
        events[0],
        ClientEvent::Bound {
            ndr32: true,
            ndr64: false,
            btfn: None
        }
    ));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ClientEvent::Answered(_)))
            .count(),
        3
    );
}

/// A client and host stepped in memory; returns the client's events and the
/// number of steps taken.
fn exchange(
    host_config: &HostConfig,
    client_config: &ClientConfig,
    requests: usize,
) -> (Vec<ClientEvent>, usize) {
    let mut rng = ScriptedRandom::new(
        (0..4096u32)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect::<Vec<_>>(),
    );
    let mut client = ClientConnection::new(client_config);
    for version in [Version::V4, Version::V5, Version::V6]
        .into_iter()
        .cycle()
        .take(requests)
    {
        client
            .send_request(request_body(version), &mut rng)
            .unwrap();
    }
    let mut host = HostConnection::new(host_config);
    let mut responder = FixedResponder::default();
    let mut events = Vec::new();
    let mut steps = 0;
    while !client.is_idle() {
        steps += 1;
        assert!(steps < 50, "exchange did not finish");
        let mut wire = Vec::new();
        let _ = client.poll_transmit(&mut wire);
        host.handle_input_with(NOW, &wire, &mut responder, &mut rng)
            .unwrap();
        wire.clear();
        let _ = host.poll_transmit(&mut wire);
        assert_eq!(client.handle_input(&wire, &mut rng), Ok(wire.len()));
        events.extend(std::iter::from_fn(|| client.poll_event()));
    }
    (events, steps)
}

#[test]
fn every_client_and_host_configuration_interoperates() {
    for host_ndr64 in [false, true] {
        for host_btfn in [false, true] {
            for client_ndr64 in [false, true] {
                for client_btfn in [false, true] {
                    for first_ndr32 in [false, true] {
                        let mut h = HostConfig::default();
                        h.set_ndr64(host_ndr64).set_btfn(host_btfn);
                        let mut c = ClientConfig::default();
                        c.set_ndr64(client_ndr64)
                            .set_btfn(client_btfn)
                            .set_first_call_ndr32(first_ndr32);
                        let (events, _) = exchange(&h, &c, 4);
                        let activated: Vec<_> = events
                            .iter()
                            .filter_map(|e| match e {
                                ClientEvent::Answered(r) => Some(r),
                                _ => None,
                            })
                            .collect();
                        assert_eq!(activated.len(), 4, "{h:?} {c:?}");
                        assert!(activated.iter().all(|r| r.warnings.is_empty()));
                        assert!(activated[2].body.hwid.is_some());
                        assert_eq!(activated[0].body.hwid, None);
                    }
                }
            }
        }
    }
}

#[test]
fn client_rejects_mismatched_replies() {
    let mut rng = ScriptedRandom::new([5; 64]);
    // A reply with the wrong call id.
    let mut client = ClientConnection::new(&ClientConfig::default());
    let mut bind = Vec::new();
    let _ = client.poll_transmit(&mut bind);
    let mut host = HostConnection::new(&HostConfig::default());
    let mut responder = FixedResponder::default();
    host.handle_input_with(NOW, &bind, &mut responder, &mut rng)
        .unwrap();
    let mut ack = Vec::new();
    let _ = host.poll_transmit(&mut ack);
    let mut wrong = ack.clone();
    wrong[12] ^= 0x40;
    let mut fresh = ClientConnection::new(&ClientConfig::default());
    assert!(matches!(
        fresh.handle_input(&wrong, &mut rng),
        Err(ClientError::CallMismatch(CallMismatch::CallIdNotEchoed))
    ));
    assert!(fresh.is_closed());
    // A fault instead of a bind_ack.
    let fault = encode(&Pdu {
        call_id: 2,
        flags: PfcFlags::SINGLE | PfcFlags::DID_NOT_EXECUTE,
        body: PduBody::Fault(Fault {
            alloc_hint: 32,
            context_id: 0,
            cancel_count: 0,
            status: rpc::NCA_S_PROTO_ERROR,
        }),
    });
    let mut fresh = ClientConnection::new(&ClientConfig::default());
    assert_eq!(
        fresh.handle_input(&fault, &mut rng),
        Err(ClientError::Fault {
            status: rpc::NCA_S_PROTO_ERROR
        })
    );
    // The genuine ack, cut anywhere, binds.
    for cut in 0..ack.len() {
        let mut fresh = ClientConnection::new(&ClientConfig::default());
        assert_eq!(fresh.handle_input(&ack[..cut], &mut rng), Ok(cut));
        assert_eq!(
            fresh.handle_input(&ack[cut..], &mut rng),
            Ok(ack.len() - cut)
        );
        assert!(!fresh.is_closed());
    }
}

/// A client with `requests` V6 requests queued, and its random source.
fn client_with_requests(requests: usize) -> (ClientConnection, ScriptedRandom) {
    let mut rng = ScriptedRandom::new(
        (0..8192u32)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect::<Vec<_>>(),
    );
    let mut client = ClientConnection::new(&ClientConfig::default());
    for _ in 0..requests {
        client
            .send_request(request_body(Version::V6), &mut rng)
            .unwrap();
    }
    (client, rng)
}

#[test]
fn client_input_is_bounded_by_pending_output_and_events() {
    // Record a host's replies to a full queue of requests, step by step.
    let (mut client, mut rng) = client_with_requests(MAX_QUEUED_REQUESTS);
    let mut host = HostConnection::new(&HostConfig::default());
    let mut host_rng = ScriptedRandom::new([7; 8192]);
    let mut responder = FixedResponder::default();
    let mut replies = Vec::new();
    while !client.is_idle() {
        let mut wire = Vec::new();
        let _ = client.poll_transmit(&mut wire);
        host.handle_input_with(NOW, &wire, &mut responder, &mut host_rng)
            .unwrap();
        let start = replies.len();
        let _ = host.poll_transmit(&mut replies);
        let fresh = &replies[start..];
        assert_eq!(client.handle_input(fresh, &mut rng), Ok(fresh.len()));
        while client.poll_event().is_some() {}
    }

    // The same client again, offered every reply at once: it stops once
    // its queued output passes the limit.
    let (mut client, mut rng) = client_with_requests(MAX_QUEUED_REQUESTS);
    client.advance_transmit(usize::MAX);
    let mut offset = client.handle_input(&replies, &mut rng).unwrap();
    assert!(offset < replies.len());
    assert!(client.transmit().len() >= MAX_PENDING_OUTPUT);
    assert_eq!(client.handle_input(&replies[offset..], &mut rng), Ok(0));

    // Draining only the output, it stops at the event limit.
    while offset < replies.len() {
        client.advance_transmit(client.transmit().len());
        let used = client.handle_input(&replies[offset..], &mut rng).unwrap();
        if used == 0 {
            break;
        }
        offset += used;
    }
    assert!(offset < replies.len());
    let mut events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
    assert_eq!(events.len(), MAX_PENDING_EVENTS);

    // Draining both, it takes the rest and ends like the stepped exchange.
    while offset < replies.len() {
        client.advance_transmit(client.transmit().len());
        offset += client.handle_input(&replies[offset..], &mut rng).unwrap();
        events.extend(std::iter::from_fn(|| client.poll_event()));
    }
    assert_eq!(events.len(), MAX_QUEUED_REQUESTS + 1);
    assert!(matches!(events[0], ClientEvent::Bound { .. }));
    assert!(
        events[1..]
            .iter()
            .all(|e| matches!(e, ClientEvent::Answered(_)))
    );
    assert!(client.is_idle());
}

#[test]
fn client_transmit_borrows_and_advances() {
    let mut client = ClientConnection::new(&ClientConfig::default());
    let bind = client.transmit().to_vec();
    assert!(!bind.is_empty());
    client.advance_transmit(10);
    assert_eq!(client.transmit(), &bind[10..]);
    let mut rest = Vec::new();
    assert_eq!(client.poll_transmit(&mut rest), bind.len() - 10);
    assert_eq!(rest, &bind[10..]);
    assert!(client.transmit().is_empty());
    client.advance_transmit(5);
    assert!(client.transmit().is_empty());
}

#[test]
fn typed_client_errors_keep_their_wording() {
    assert_eq!(
        ClientError::BadBindAck(BindAckProblem::ResultCountMismatch).to_string(),
        "bad bind acknowledgement: result count differs from contexts offered"
    );
    assert_eq!(
        ClientError::BadBindAck(BindAckProblem::FeaturesNotAcknowledged).to_string(),
        "bad bind acknowledgement: bind-time features not acknowledged as 3"
    );
    assert_eq!(
        ClientError::CallMismatch(CallMismatch::CallIdNotEchoed).to_string(),
        "reply does not match the call: call id not echoed"
    );
    assert_eq!(
        ClientError::CallMismatch(CallMismatch::NonZeroCancelCount).to_string(),
        "reply does not match the call: cancel count is not zero"
    );
}

#[test]
fn client_reports_hresult_refusals() {
    struct Refuse;
    impl Responder for Refuse {
        fn respond(
            &mut self,
            _: FileTime,
            _: &kms_activation::host::RequestContext,
            _: &RequestBody,
        ) -> Result<kms_activation::host::Answer, HResult> {
            Err(HResult::INVALID_TIMESTAMP)
        }
    }
    let mut rng = ScriptedRandom::new([5; 256]);
    let mut client = ClientConnection::new(&ClientConfig::default());
    client
        .send_request(request_body(Version::V6), &mut rng)
        .unwrap();
    let mut host = HostConnection::new(&HostConfig::default());
    let mut refuse = Refuse;
    for _ in 0..4 {
        let mut wire = Vec::new();
        let _ = client.poll_transmit(&mut wire);
        host.handle_input_with(NOW, &wire, &mut refuse, &mut rng)
            .unwrap();
        wire.clear();
        let _ = host.poll_transmit(&mut wire);
        client.handle_input(&wire, &mut rng).unwrap();
    }
    let events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
    assert_eq!(
        events.last(),
        Some(&ClientEvent::Refused(HResult::INVALID_TIMESTAMP))
    );
    assert!(client.is_idle());
}

#[test]
fn bind_in_another_rpc_version_gets_a_bind_nak() {
    for split in [false, true] {
        let mut host = Host::new(&HostConfig::default());
        let mut bind = bind_ndr32(9);
        bind[1] = 1; // RPC 5.1
        let used = if split {
            // Through the buffering path: a few bytes first.
            host.conn
                .handle_input_with(NOW, &bind[..4], &mut host.responder, &mut host.rng)
                .unwrap();
            host.conn
                .handle_input_with(NOW, &bind[4..], &mut host.responder, &mut host.rng)
        } else {
            host.conn
                .handle_input_with(NOW, &bind, &mut host.responder, &mut host.rng)
        };
        assert!(matches!(
            used,
            Err(HostError::Rpc(rpc::Error::UnsupportedVersion { .. }))
        ));
        let mut out = Vec::new();
        let _ = host.conn.poll_transmit(&mut out);
        let reply = decode_all(&out);
        assert_eq!(reply.len(), 1, "split {split}");
        assert_eq!(reply[0].call_id, 9);
        let PduBody::BindNak(nak) = &reply[0].body else {
            panic!("{reply:?}")
        };
        assert_eq!(nak.reject_reason, rpc::BindNak::REASON_PROTOCOL_VERSION);
        assert_eq!(nak.versions, vec![(5, 0)]);
    }
    // Any other PDU in a wrong version just closes.
    let mut host = Host::new(&HostConfig::default());
    let mut request = rpc_request(2, 0, 0, kms_stub(Version::V6));
    request[1] = 1;
    assert!(host.feed(&request).is_err());
}

#[test]
fn fragmented_requests_are_reassembled_under_the_cap() {
    let stub = kms_stub(Version::V6);
    let fragment = |flags: PfcFlags, part: &[u8]| {
        encode(&Pdu {
            call_id: 2,
            flags,
            body: PduBody::Request(Request {
                alloc_hint: u32::try_from(stub.len()).unwrap(),
                context_id: 0,
                opnum: 0,
                object: None,
                stub: part.to_vec().into(),
            }),
        })
    };
    let (head, tail) = stub.split_at(100);
    let mut host = Host::new(&HostConfig::default());
    host.feed(&bind_ndr32(2)).unwrap();
    assert!(
        host.feed(&fragment(PfcFlags::FIRST_FRAG, head))
            .unwrap()
            .is_empty()
    );
    let reply = host.feed(&fragment(PfcFlags::LAST_FRAG, tail)).unwrap();
    assert_eq!(hresult_of(&reply[0]), HResult::S_OK);

    // A call whose fragments add up to more than the cap is refused.
    let mut host = host_with_limits(|l| l.max_stub_len = 200);
    host.feed(&bind_ndr32(2)).unwrap();
    assert!(
        host.feed(&fragment(PfcFlags::FIRST_FRAG, head))
            .unwrap()
            .is_empty()
    );
    // The fault is sent, then the connection closes: the fragment stream
    // cannot be trusted any more.
    let err = host
        .conn
        .handle_input_with(
            NOW,
            &fragment(PfcFlags::LAST_FRAG, tail),
            &mut host.responder,
            &mut host.rng,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        HostError::Rpc(rpc::Error::StubTooLarge { .. })
    ));
    assert!(host.conn.is_closed());
    let reply = decode_all(host.conn.transmit());
    assert_eq!(fault_status(&reply[0]), rpc::NCA_S_PROTO_ERROR);
}

#[test]
fn bind_ack_fragment_sizes_are_capped_at_what_the_host_accepts() {
    let ack_sizes = |host: &mut Host, offered: u16| {
        let mut bind = bind_ndr32(2);
        bind[16..18].copy_from_slice(&offered.to_le_bytes()); // max_xmit_frag
        bind[18..20].copy_from_slice(&offered.to_le_bytes()); // max_recv_frag
        let reply = host.feed(&bind).unwrap();
        match &reply[0].body {
            PduBody::BindAck(ack) => (ack.max_xmit_frag, ack.max_recv_frag),
            other => panic!("expected a bind_ack, got {other:?}"),
        }
    };
    let mut small = host_with_limits(|l| l.max_frag_len = 1000);
    assert_eq!(ack_sizes(&mut small, 5840), (1000, 1000));
    let mut small = host_with_limits(|l| l.max_frag_len = 1000);
    assert_eq!(ack_sizes(&mut small, 900), (900, 900));
    let mut default = Host::new(&HostConfig::default());
    assert_eq!(ack_sizes(&mut default, 5840), (5840, 5840));
}
