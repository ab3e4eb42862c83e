//! The host side of one TCP connection.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};

use super::config::{HostConfig, HostLimits};
use super::event::{
    HostEvent, RejectReason, RejectedRequest, RequestContext, RequestEvent, RequestId,
};
use super::responder::{Answer, MAX_N_POLICY, Responder};
use crate::message::{self, ReceivedRequest, RequestBody, ResponseBody, Version};
use crate::rpc::{
    self, Bind, BindAck, ContextResult, ContextTable, Fault, FrameSplitter, NegotiationPolicy, Pdu,
    PduBody, PduType, PfcFlags, Reassembler, ResultKind, StubReply, TransferSyntax,
};
use crate::{FileTime, HResult, RandomSource};

/// Events kept for [`HostConnection::poll_event`] before the connection
/// stops consuming input.
const MAX_QUEUED_EVENTS: usize = 64;

/// Output budget reserved for each unanswered request: a response PDU
/// carrying the largest KMS response (PDU header, response header and the
/// NDR64 framing around the message), so that answering every waiting
/// request stays close to [`HostLimits::max_pending_output`].
const REPLY_RESERVE: usize = rpc::HEADER_LEN + 8 + 32 + message::MAX_RESPONSE_LEN;

/// Why a host connection closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The peer sent bytes that are not valid DCE/RPC, or a fragmented
    /// request that does not reassemble.
    #[error("malformed RPC input: {0}")]
    Rpc(#[from] rpc::Error),
    /// The peer sent a PDU that makes no sense at this point (a second bind,
    /// an `alter_context` before the bind, a server-side PDU type).
    #[error("unexpected {pdu_type:?} PDU")]
    UnexpectedPdu {
        /// The type of the offending PDU.
        pdu_type: PduType,
    },
    /// The peer negotiated more presentation contexts than the limit.
    #[error("too many presentation contexts (limit {limit})")]
    TooManyContexts {
        /// [`HostLimits::max_contexts`].
        limit: usize,
    },
    /// Input arrived after the connection closed.
    #[error("connection is closed")]
    Closed,
}

/// Why an [`Answer`] or refusal was not accepted. The request stays
/// unanswered (unless it was unknown): answer it again correctly, or
/// refuse it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// No unanswered request has this id on this connection (answered
    /// already, never issued, or the connection closed).
    #[error("no unanswered request {0}")]
    UnknownRequest(RequestId),
    /// The answer cannot be carried by the wire (an ePID over 63 UTF-16
    /// units or with a NUL, …).
    #[error("answer cannot be encoded: {0}")]
    Unencodable(message::Error),
    /// [`HResult::S_OK`] is not a refusal.
    #[error("S_OK is not a refusal")]
    SuccessIsNotARefusal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingBind,
    Bound { assoc_group_id: u32 },
    Closed,
}

/// A slot in the ordered reply queue: replies leave in the order their
/// calls arrived, whatever the order the embedder answers in.
#[derive(Debug)]
enum Slot {
    /// A KMS request handed out as an event, waiting for its answer.
    Waiting {
        id: RequestId,
        call_id: u32,
        context_id: u16,
        ndr: rpc::Ndr,
        received: Box<ReceivedRequest>,
    },
    /// Encoded reply PDUs held back behind an earlier waiting request.
    Ready(BytesMut),
}

/// The sans-IO host side of one KMS connection (one DCE/RPC association).
///
/// See the [module documentation](crate::host) for how to drive it.
#[derive(Debug)]
pub struct HostConnection {
    limits: HostLimits,
    negotiation: NegotiationPolicy,
    secondary_address: Vec<u8>,
    fixed_assoc_group_id: Option<u32>,
    verify_v4_mac: bool,
    max_clock_skew: Option<Duration>,
    peer: Option<SocketAddr>,
    connection_id: u64,
    state: State,
    /// Accepted presentation contexts.
    contexts: ContextTable,
    splitter: FrameSplitter,
    reassembler: Reassembler,
    /// Bytes ready to send, in order.
    outbound: BytesMut,
    /// Replies not yet sendable: the front is always `Waiting`.
    slots: VecDeque<Slot>,
    events: VecDeque<HostEvent>,
    next_request: u64,
    requests_served: u64,
}

impl HostConnection {
    /// A connection in its initial state, waiting for a bind.
    #[must_use]
    pub fn new(config: &HostConfig) -> Self {
        Self {
            limits: *config.limits(),
            negotiation: *config.negotiation(),
            secondary_address: config.port().to_string().into_bytes(),
            fixed_assoc_group_id: config.assoc_group_id(),
            verify_v4_mac: config.verify_v4_mac(),
            max_clock_skew: config.max_clock_skew(),
            peer: None,
            connection_id: 0,
            state: State::AwaitingBind,
            contexts: ContextTable::new(config.limits().max_contexts),
            splitter: FrameSplitter::new(config.limits().max_frag_len),
            reassembler: Reassembler::new(config.limits().max_stub_len),
            outbound: BytesMut::new(),
            slots: VecDeque::new(),
            events: VecDeque::new(),
            next_request: 0,
            requests_served: 0,
        }
    }

    /// Records the client's address, reported with every request.
    #[must_use]
    pub fn with_peer(mut self, peer: SocketAddr) -> Self {
        self.peer = Some(peer);
        self
    }

    /// Records the transport's number for this connection, reported with
    /// every request.
    #[must_use]
    pub fn with_connection_id(mut self, id: u64) -> Self {
        self.connection_id = id;
        self
    }

    /// The client's address, if the transport gave it.
    #[must_use]
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The transport's number for this connection.
    #[must_use]
    pub fn connection_id(&self) -> u64 {
        self.connection_id
    }

    /// True once the connection has failed or been told to close; the
    /// caller should flush the output and close the socket.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// True once a bind has been acknowledged.
    #[must_use]
    pub fn is_bound(&self) -> bool {
        matches!(self.state, State::Bound { .. })
    }

    /// KMS requests answered (with a response or an HRESULT) so far.
    #[must_use]
    pub fn requests_served(&self) -> u64 {
        self.requests_served
    }

    /// Requests handed out as events and not yet answered or refused.
    #[must_use]
    pub fn unanswered_requests(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| matches!(slot, Slot::Waiting { .. }))
            .count()
    }

    /// Bytes of replies held back behind a request still waiting.
    fn held_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|slot| match slot {
                Slot::Ready(bytes) => bytes.len(),
                Slot::Waiting { .. } => 0,
            })
            .sum()
    }

    /// True while output is ready to send.
    #[must_use]
    pub fn has_pending_output(&self) -> bool {
        !self.outbound.is_empty()
    }

    /// Marks the connection closed (e.g. on an idle timeout). Output already
    /// ready stays available; unanswered requests are dropped.
    pub fn close(&mut self) {
        self.state = State::Closed;
        self.drop_unanswered();
    }

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<HostEvent> {
        self.events.pop_front()
    }

    /// The bytes ready to send, without copying; after writing some of them
    /// call [`advance_transmit`](Self::advance_transmit) with how many.
    #[must_use]
    pub fn transmit(&self) -> &[u8] {
        &self.outbound
    }

    /// Drops the first `n` bytes of [`transmit`](Self::transmit) (sent).
    pub fn advance_transmit(&mut self, n: usize) {
        self.outbound.advance(n.min(self.outbound.len()));
    }

    /// Appends all output ready to send to `out` and returns how many bytes
    /// it appended (a copying alternative to
    /// [`transmit`](Self::transmit)).
    #[must_use = "the bytes appended to `out` must be sent to the peer"]
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.outbound.len();
        out.extend_from_slice(&self.outbound);
        self.outbound.clear();
        n
    }

    /// Feeds bytes received from the client at time `now`.
    ///
    /// Consumes input until it is exhausted or the connection must wait:
    /// while [`HostLimits::max_pending_output`] bytes are waiting to be sent
    /// (counting a full response for each unanswered request),
    /// [`HostLimits::max_unanswered_requests`] requests wait for an answer,
    /// or 64 events wait in [`poll_event`](Self::poll_event). Returns how
    /// many bytes of `input` it consumed; offer the rest again once output
    /// is sent, requests answered or events polled. Any split of the byte
    /// stream gives the same result. `rng` supplies the association group
    /// id (unless configured).
    ///
    /// KMS requests come out as [`HostEvent::Request`]; answer each with
    /// [`answer`](Self::answer) or [`refuse`](Self::refuse). Requests that
    /// fail the protocol's own checks are answered by the engine and
    /// reported as [`HostEvent::Rejected`]:
    ///
    /// | check | HRESULT |
    /// |---|---|
    /// | stub or message does not decode, version not 4.0/5.0/6.0, bad padding | 0x8007000D |
    /// | V4 MAC wrong (unless [`HostConfig::set_verify_v4_mac`] is off) | 0x8007000D |
    /// | N policy above 1000 | 0x8007000D |
    /// | client clock off by more than [`HostConfig::max_clock_skew`] | 0xC004F06C |
    ///
    /// # Errors
    ///
    /// Input that is not a valid DCE/RPC association closes the connection:
    /// bytes that do not frame (a wrong RPC version gets a `bind_nak` first),
    /// a PDU that does not decode, a PDU out of place, too many contexts, or
    /// a fragmented request that does not reassemble (a fault is queued
    /// first). Send what [`transmit`](Self::transmit) holds before closing
    /// the socket.
    pub fn handle_input(
        &mut self,
        now: FileTime,
        input: &[u8],
        rng: &mut dyn RandomSource,
    ) -> Result<usize, HostError> {
        if self.state == State::Closed {
            return if input.is_empty() {
                Ok(0)
            } else {
                Err(HostError::Closed)
            };
        }
        let mut consumed = 0;
        while !self.must_wait() && consumed < input.len() {
            let rest = input.get(consumed..).unwrap_or_default();
            let (used, frame) = match self.splitter.next_frame(rest) {
                Ok(step) => step,
                Err(e) => {
                    let header = self.splitter.failed_header().to_vec();
                    return Err(self.fail_framing(e, &header));
                }
            };
            consumed += used;
            if let Some(frame) = frame {
                self.handle_frame(now, &frame, rng)?;
                if self.state == State::Closed {
                    break;
                }
            }
        }
        Ok(consumed)
    }

    /// [`handle_input`](Self::handle_input) with every request answered at
    /// once by a synchronous [`Responder`]: the simple way to run a host
    /// whose decisions need no I/O. Returns the bytes consumed, which is all
    /// of `input` unless output must be sent first or the connection closed.
    ///
    /// # Errors
    ///
    /// As [`handle_input`](Self::handle_input). A responder's answer the wire
    /// cannot carry is refused with [`HResult::INVALID_DATA`]; use the event
    /// API to see that as an error instead.
    pub fn handle_input_with(
        &mut self,
        now: FileTime,
        input: &[u8],
        responder: &mut dyn Responder,
        rng: &mut dyn RandomSource,
    ) -> Result<usize, HostError> {
        let mut consumed = 0;
        loop {
            let rest = input.get(consumed..).unwrap_or_default();
            consumed += self.handle_input(now, rest, rng)?;
            let mut answered = false;
            while let Some(event) = self.poll_event() {
                let HostEvent::Request(request) = event else {
                    continue;
                };
                answered = true;
                let result = match responder.respond(now, &request.context, &request.body) {
                    Ok(answer) => self.answer(request.id, answer, rng),
                    Err(hresult) => self.refuse(request.id, hresult),
                };
                if result.is_err() {
                    // The answer cannot be encoded: the client gets the
                    // generic refusal instead.
                    let _ = self.refuse(request.id, HResult::INVALID_DATA);
                }
            }
            if !answered || consumed >= input.len() || self.is_closed() {
                return Ok(consumed);
            }
        }
    }

    /// Answers request `id` with `answer`. The response leaves after the
    /// replies to every earlier call of this connection.
    ///
    /// `rng` supplies the response's salt and IV.
    ///
    /// # Errors
    ///
    /// [`AnswerError::UnknownRequest`] if `id` is not waiting;
    /// [`AnswerError::Unencodable`] if the wire cannot carry `answer` (the
    /// request stays waiting: answer it correctly or refuse it).
    pub fn answer(
        &mut self,
        id: RequestId,
        answer: Answer,
        rng: &mut dyn RandomSource,
    ) -> Result<(), AnswerError> {
        let (index, call_id, context_id, ndr, received) = self.waiting(id)?;
        let hwid = (received.version() == Version::V6).then_some(answer.hwid);
        let body = ResponseBody::answering(
            received.body(),
            answer.epid,
            answer.count,
            answer.activation_interval,
            answer.renewal_interval,
            hwid,
        );
        let mut message = BytesMut::with_capacity(message::MAX_RESPONSE_LEN);
        received
            .encode_response(&body, rng, &mut message)
            .map_err(AnswerError::Unencodable)?;
        let pdu = response_pdu(call_id, context_id, ndr, StubReply::Message(&message));
        self.complete(index, &pdu);
        Ok(())
    }

    /// Refuses request `id`: the client receives `hresult` in place of a
    /// response (in order, as for [`answer`](Self::answer)).
    ///
    /// # Errors
    ///
    /// [`AnswerError::UnknownRequest`] if `id` is not waiting;
    /// [`AnswerError::SuccessIsNotARefusal`] for [`HResult::S_OK`].
    pub fn refuse(&mut self, id: RequestId, hresult: HResult) -> Result<(), AnswerError> {
        if hresult == HResult::S_OK {
            return Err(AnswerError::SuccessIsNotARefusal);
        }
        let (index, call_id, context_id, ndr, _) = self.waiting(id)?;
        let pdu = response_pdu(call_id, context_id, ndr, StubReply::Error(hresult));
        self.complete(index, &pdu);
        Ok(())
    }

    /// Refuses, with `hresult`, every request still waiting for an answer,
    /// whether or not its event was taken (a transport does this when the
    /// handler ran out of time); returns how many were refused. Their
    /// events, if not taken yet, are dropped.
    ///
    /// # Errors
    ///
    /// [`AnswerError::SuccessIsNotARefusal`] for [`HResult::S_OK`].
    pub fn refuse_unanswered(&mut self, hresult: HResult) -> Result<usize, AnswerError> {
        if hresult == HResult::S_OK {
            return Err(AnswerError::SuccessIsNotARefusal);
        }
        self.events.retain(|e| !matches!(e, HostEvent::Request(_)));
        let waiting: Vec<RequestId> = self
            .slots
            .iter()
            .filter_map(|slot| match slot {
                Slot::Waiting { id, .. } => Some(*id),
                Slot::Ready(_) => None,
            })
            .collect();
        for &id in &waiting {
            self.refuse(id, hresult)?;
        }
        Ok(waiting.len())
    }

    fn waiting(
        &self,
        id: RequestId,
    ) -> Result<(usize, u32, u16, rpc::Ndr, &ReceivedRequest), AnswerError> {
        self.slots
            .iter()
            .enumerate()
            .find_map(|(index, slot)| match slot {
                Slot::Waiting {
                    id: slot_id,
                    call_id,
                    context_id,
                    ndr,
                    received,
                } if *slot_id == id => Some((index, *call_id, *context_id, *ndr, &**received)),
                _ => None,
            })
            .ok_or(AnswerError::UnknownRequest(id))
    }

    /// Puts the encoded reply in slot `index` and releases every reply that
    /// is no longer behind a waiting request.
    fn complete(&mut self, index: usize, pdu: &Pdu) {
        self.requests_served = self.requests_served.saturating_add(1);
        if index == 0 {
            // The oldest call: its reply goes straight out.
            self.slots.pop_front();
            pdu.encode(&mut self.outbound);
        } else if let Some(slot) = self.slots.get_mut(index) {
            let mut bytes = BytesMut::with_capacity(pdu.encoded_len());
            pdu.encode(&mut bytes);
            *slot = Slot::Ready(bytes);
        }
        while let Some(Slot::Ready(_)) = self.slots.front() {
            if let Some(Slot::Ready(bytes)) = self.slots.pop_front() {
                self.outbound.unsplit(bytes);
            }
        }
    }

    fn must_wait(&self) -> bool {
        let unanswered = self.unanswered_requests();
        self.outbound.len() + self.held_bytes() + unanswered * REPLY_RESERVE
            >= self.limits.max_pending_output
            || unanswered >= self.limits.max_unanswered_requests
            || self.events.len() >= MAX_QUEUED_EVENTS
    }

    fn drop_unanswered(&mut self) {
        self.slots.clear();
        self.events.retain(|e| !matches!(e, HostEvent::Request(_)));
    }

    fn fail(&mut self, error: HostError) -> HostError {
        self.state = State::Closed;
        error
    }

    /// Closes on bytes that do not frame as a PDU. A first bind in another
    /// RPC version gets a `bind_nak` naming 5.0 first.
    fn fail_framing(&mut self, error: rpc::Error, header: &[u8]) -> HostError {
        let is_bind = header.get(2) == Some(&u8::from(PduType::Bind));
        if matches!(error, rpc::Error::UnsupportedVersion { .. })
            && is_bind
            && self.state == State::AwaitingBind
        {
            self.queue_bind_nak(frame_call_id(header).unwrap_or(0));
        }
        self.fail(error.into())
    }

    fn queue_bind_nak(&mut self, call_id: u32) {
        self.queue(&Pdu {
            call_id,
            flags: PfcFlags::SINGLE,
            body: PduBody::BindNak(rpc::BindNak {
                reject_reason: rpc::BindNak::REASON_PROTOCOL_VERSION,
                versions: vec![(5, 0)],
            }),
        });
    }

    fn handle_frame(
        &mut self,
        now: FileTime,
        frame: &[u8],
        rng: &mut dyn RandomSource,
    ) -> Result<(), HostError> {
        let pdu = match Pdu::decode(frame) {
            Ok(pdu) => pdu,
            Err(e) => {
                if let Some(call_id) = frame_call_id(frame) {
                    self.queue_fault(call_id, 0, e.fault_status());
                }
                return Err(self.fail(e.into()));
            }
        };
        let call_id = pdu.call_id;
        let flags = pdu.flags;
        match (pdu.body, self.state) {
            (PduBody::Bind(bind), State::AwaitingBind) => {
                self.handle_bind(call_id, flags, &bind, rng)
            }
            (PduBody::AlterContext(alter), State::Bound { assoc_group_id }) => {
                self.handle_alter_context(call_id, &alter, assoc_group_id)
            }
            (PduBody::Request(request), State::Bound { .. }) => {
                self.handle_request(now, call_id, flags, request)
            }
            (PduBody::Request(request), _) => {
                // A call before any bind names no negotiated context.
                self.queue_fault(call_id, request.context_id, rpc::NCA_S_UNK_IF);
                Ok(())
            }
            (body, _) => {
                let pdu_type = Pdu {
                    call_id,
                    flags,
                    body,
                }
                .pdu_type();
                Err(self.fail(HostError::UnexpectedPdu { pdu_type }))
            }
        }
    }

    fn handle_bind(
        &mut self,
        call_id: u32,
        flags: PfcFlags,
        bind: &Bind,
        rng: &mut dyn RandomSource,
    ) -> Result<(), HostError> {
        let assoc_group_id = self
            .fixed_assoc_group_id
            .unwrap_or_else(|| random_assoc_group(rng));
        let results = self.negotiate(bind)?;
        self.state = State::Bound { assoc_group_id };
        let ack = BindAck {
            max_xmit_frag: self.cap_fragment(bind.max_xmit_frag),
            max_recv_frag: self.cap_fragment(bind.max_recv_frag),
            assoc_group_id,
            secondary_address: self.secondary_address.clone(),
            results,
        };
        // The `bind_ack` copies the bind's flags.
        self.queue(&Pdu {
            call_id,
            flags,
            body: PduBody::BindAck(ack),
        });
        Ok(())
    }

    /// A fragment size the client offered, capped at what this host accepts.
    fn cap_fragment(&self, offered: u16) -> u16 {
        u16::try_from(self.limits.max_frag_len).map_or(offered, |max| offered.min(max))
    }

    fn handle_alter_context(
        &mut self,
        call_id: u32,
        alter: &Bind,
        assoc_group_id: u32,
    ) -> Result<(), HostError> {
        let results = self.negotiate(alter)?;
        let resp = BindAck {
            max_xmit_frag: self.cap_fragment(alter.max_xmit_frag),
            max_recv_frag: self.cap_fragment(alter.max_recv_frag),
            assoc_group_id,
            secondary_address: Vec::new(),
            results,
        };
        self.queue(&Pdu {
            call_id,
            flags: PfcFlags::SINGLE,
            body: PduBody::AlterContextResp(resp),
        });
        Ok(())
    }

    /// Negotiates the contexts of a bind or `alter_context` and remembers the
    /// accepted ones.
    fn negotiate(&mut self, bind: &Bind) -> Result<Vec<ContextResult>, HostError> {
        let results = rpc::negotiate(&bind.contexts, self.negotiation);
        for (element, result) in bind.contexts.iter().zip(&results) {
            if result.result != ResultKind::Acceptance {
                continue;
            }
            let ndr = match TransferSyntax::from_syntax(&result.transfer_syntax) {
                TransferSyntax::Ndr32 => rpc::Ndr::Ndr32,
                TransferSyntax::Ndr64 => rpc::Ndr::Ndr64,
                _ => continue,
            };
            if !self.contexts.insert(element.context_id, ndr) {
                let limit = self.limits.max_contexts;
                return Err(self.fail(HostError::TooManyContexts { limit }));
            }
        }
        Ok(results)
    }

    fn handle_request(
        &mut self,
        now: FileTime,
        call_id: u32,
        flags: PfcFlags,
        request: rpc::Request,
    ) -> Result<(), HostError> {
        let context_id = request.context_id;
        let Some(ndr) = self.contexts.get(context_id) else {
            self.queue_fault(call_id, context_id, rpc::NCA_S_UNK_IF);
            return Ok(());
        };
        if request.opnum != 0 {
            self.queue_fault(call_id, context_id, rpc::NCA_S_OP_RNG_ERROR);
            return Ok(());
        }
        let request = match self.reassembler.push(call_id, flags, request) {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(e) => {
                // The stream of fragments cannot be trusted any more.
                self.queue_fault(call_id, context_id, e.fault_status());
                return Err(self.fail(e.into()));
            }
        };
        let context = RequestContext {
            peer: self.peer,
            connection_id: self.connection_id,
            call_id,
            ndr,
            received_at: now,
        };
        match self.check(now, ndr, &request.stub) {
            Ok(received) => {
                let id = RequestId(self.next_request);
                self.next_request += 1;
                self.events.push_back(HostEvent::Request(RequestEvent {
                    id,
                    context,
                    body: received.body().clone(),
                }));
                self.slots.push_back(Slot::Waiting {
                    id,
                    call_id,
                    context_id,
                    ndr,
                    received: Box::new(received),
                });
            }
            Err(rejection) => {
                let (reason, body) = *rejection;
                let result = match reason {
                    RejectReason::ClockSkew { .. } => HResult::INVALID_TIMESTAMP,
                    _ => HResult::INVALID_DATA,
                };
                self.requests_served = self.requests_served.saturating_add(1);
                self.queue(&response_pdu(
                    call_id,
                    context_id,
                    ndr,
                    StubReply::Error(result),
                ));
                self.events.push_back(HostEvent::Rejected(RejectedRequest {
                    context,
                    body,
                    reason,
                    result,
                }));
            }
        }
        Ok(())
    }

    /// Decodes a KMS request and applies the protocol's own checks.
    fn check(
        &self,
        now: FileTime,
        ndr: rpc::Ndr,
        stub: &[u8],
    ) -> Result<ReceivedRequest, Box<(RejectReason, Option<RequestBody>)>> {
        let message = rpc::decode_request_stub(ndr, stub)
            .map_err(|_| Box::new((RejectReason::BadStub, None)))?;
        let received = message::decode_request(message)
            .map_err(|e| Box::new((RejectReason::Undecodable(e), None)))?;
        let body = received.body();
        if self.verify_v4_mac && received.version() == Version::V4 && !received.mac_ok() {
            return Err(Box::new((RejectReason::BadMac, Some(body.clone()))));
        }
        if body.n_policy > MAX_N_POLICY {
            let n_policy = body.n_policy;
            return Err(Box::new((
                RejectReason::NPolicyTooLarge { n_policy },
                Some(body.clone()),
            )));
        }
        if let Some(max) = self.max_clock_skew {
            let skew = body.client_time.signed_duration_since(now);
            let within = skew.abs().to_std().is_ok_and(|skew| skew <= max);
            if !within {
                let minutes = skew.num_minutes();
                return Err(Box::new((
                    RejectReason::ClockSkew { minutes },
                    Some(body.clone()),
                )));
            }
        }
        Ok(received)
    }

    fn queue_fault(&mut self, call_id: u32, context_id: u16, status: u32) {
        self.queue(&Pdu {
            call_id,
            flags: PfcFlags::SINGLE | PfcFlags::DID_NOT_EXECUTE,
            body: PduBody::Fault(Fault {
                alloc_hint: 32,
                context_id,
                cancel_count: 0,
                status,
            }),
        });
    }

    /// Queues a reply: straight out when no earlier call waits for its
    /// answer, held in order behind it otherwise.
    fn queue(&mut self, pdu: &Pdu) {
        if self.slots.is_empty() {
            pdu.encode(&mut self.outbound);
        } else {
            let mut bytes = BytesMut::with_capacity(pdu.encoded_len());
            pdu.encode(&mut bytes);
            self.slots.push_back(Slot::Ready(bytes));
        }
    }
}

/// The response PDU carrying `reply` for call `call_id`.
fn response_pdu(call_id: u32, context_id: u16, ndr: rpc::Ndr, reply: StubReply<'_>) -> Pdu {
    let mut stub = BytesMut::with_capacity(320);
    rpc::encode_response_stub(ndr, reply, &mut stub);
    Pdu {
        call_id,
        flags: PfcFlags::SINGLE,
        body: PduBody::Response(rpc::Response {
            alloc_hint: u32::try_from(stub.len()).unwrap_or(u32::MAX),
            context_id,
            cancel_count: 0,
            stub: stub.freeze(),
        }),
    }
}

/// The call id of a PDU whose header is at least partly readable.
fn frame_call_id(frame: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = frame.get(12..16)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// A random non-zero association group id.
fn random_assoc_group(rng: &mut dyn RandomSource) -> u32 {
    let mut bytes = [0u8; 4];
    rng.fill_bytes(&mut bytes);
    u32::from_le_bytes(bytes).max(1)
}
