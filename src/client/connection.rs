//! The client side of one TCP connection.

use std::collections::VecDeque;

use bytes::BytesMut;

use super::config::ClientConfig;
use crate::message::{self, RequestBody, SentRequest, VerifiedResponse};
use crate::rpc::{
    self, Bind, BindAck, ContextElement, FrameSplitter, Ndr, Pdu, PduBody, PduType, PfcFlags,
    ResultKind, StubReply, TransferSyntax,
};
use crate::{HResult, RandomSource};

/// Requests that may wait for the association before being sent.
pub const MAX_QUEUED_REQUESTS: usize = 64;
/// Events waiting in [`ClientConnection::poll_event`] at which
/// [`ClientConnection::handle_input`] stops consuming input.
pub const MAX_PENDING_EVENTS: usize = 64;
/// Bytes of output waiting in [`ClientConnection::transmit`] at which
/// [`ClientConnection::handle_input`] stops consuming input.
///
/// Each reply the client handles queues at most one PDU (a request or an
/// `alter_context`, at most a few hundred bytes), so `handle_input` leaves
/// less than this limit plus one PDU queued.
pub const MAX_PENDING_OUTPUT: usize = 4096;
/// Bind-time feature bits a client asks for (see [transfer syntaxes](crate::dcerpc#transfer-syntaxes)).
const BTFN_MASK: u64 = 3;

/// What a client connection reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The association is ready; tells which transfer syntaxes the host
    /// accepted and the bind-time features it acknowledged.
    Bound {
        /// The host accepted NDR32 (in the bind or an `alter_context`).
        ndr32: bool,
        /// The host accepted NDR64.
        ndr64: bool,
        /// Feature mask the host acknowledged, if it negotiated BTFN.
        btfn: Option<u64>,
    },
    /// A request was answered with a response that passed every check.
    ///
    /// Not yet an activation: a client activates only when the response's
    /// count reaches its N policy ([`ActivationOutcome::from_response`](super::ActivationOutcome::from_response)
    /// draws that conclusion).
    Answered(VerifiedResponse),
    /// The host answered a request with an HRESULT instead of a response.
    Refused(HResult),
}

/// Why a client connection failed. The connection is closed afterwards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The host sent bytes that are not valid DCE/RPC.
    #[error("malformed RPC from host: {0}")]
    Rpc(#[from] rpc::Error),
    /// A response failed verification against the request it answers.
    #[error("response failed verification: {0}")]
    Message(#[from] message::Error),
    /// A request could not be encoded (e.g. a workstation name too long).
    #[error("request could not be encoded: {0}")]
    Encode(message::Error),
    /// The host sent a PDU that does not answer what the client sent.
    #[error("unexpected {pdu_type:?} PDU from host")]
    UnexpectedPdu {
        /// Type of the PDU received.
        pdu_type: PduType,
    },
    /// The `bind_ack` or `alter_context_resp` does not match the offer.
    #[error("bad bind acknowledgement: {0}")]
    BadBindAck(BindAckProblem),
    /// The host accepted neither NDR32 nor NDR64.
    #[error("host accepted no transfer syntax")]
    NoTransferSyntax,
    /// A reply header does not match the call (call id, context, flags).
    #[error("reply does not match the call: {0}")]
    CallMismatch(CallMismatch),
    /// The host answered the call with an RPC fault.
    #[error("RPC fault {status:#010x}")]
    Fault {
        /// The fault's status code (`nca_s_*`).
        status: u32,
    },
    /// More than [`MAX_QUEUED_REQUESTS`] requests are waiting.
    #[error("too many queued requests")]
    QueueFull,
    /// The connection already failed or was closed.
    #[error("connection is closed")]
    Closed,
}

/// What is wrong with a `bind_ack` or `alter_context_resp`
/// ([`ClientError::BadBindAck`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum BindAckProblem {
    /// The `bind_ack` has not one result per presentation context offered.
    #[error("result count differs from contexts offered")]
    ResultCountMismatch,
    /// A transfer-syntax context was answered with `negotiate_ack`, which
    /// only the bind-time feature context may get.
    #[error("negotiate_ack for a transfer syntax")]
    NegotiateAckForTransferSyntax,
    /// The `alter_context_resp` has not exactly one result.
    #[error("alter_context_resp must carry one result")]
    AlterContextResultCount,
    /// A context was accepted with another transfer syntax than the one
    /// offered, or with a non-zero reason.
    #[error("accepted syntax is not the one offered")]
    AcceptedSyntaxNotOffered,
    /// The host acknowledged bind-time features other than the mask 3 the
    /// client asked for.
    #[error("bind-time features not acknowledged as 3")]
    FeaturesNotAcknowledged,
}

/// How a reply's header fails to match the call it answers
/// ([`ClientError::CallMismatch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum CallMismatch {
    /// The reply is not a single fragment (first and last flags both set).
    #[error("reply is not a single fragment")]
    NotSingleFragment,
    /// The reply carries another call id than the call's.
    #[error("call id not echoed")]
    CallIdNotEchoed,
    /// The response names another presentation context than the request.
    #[error("context id not echoed")]
    ContextIdNotEchoed,
    /// The response's cancel count is not zero.
    #[error("cancel count is not zero")]
    NonZeroCancelCount,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitBindAck,
    AwaitAlterContextResp,
    Ready,
    AwaitResponse,
    Closed,
}

/// A request on the wire, waiting for its response.
#[derive(Debug)]
struct InFlight {
    context_id: u16,
    ndr: Ndr,
    sent: SentRequest,
}

/// The sans-IO client side of one KMS connection.
///
/// Created with its bind queued. Requests given to
/// [`send_request`](Self::send_request) go out one at a time, each after the
/// previous one was answered. See the [module documentation](crate::client).
#[derive(Debug)]
pub struct ClientConnection {
    config: ClientConfig,
    phase: Phase,
    call_id: u32,
    ndr32_context: Option<u16>,
    ndr64_context: Option<u16>,
    offered: Vec<(u16, TransferSyntax)>,
    btfn_ack: Option<u64>,
    requests_sent: u64,
    queued: VecDeque<RequestBody>,
    in_flight: Option<InFlight>,
    splitter: FrameSplitter,
    outbound: BytesMut,
    events: VecDeque<ClientEvent>,
}

impl ClientConnection {
    /// A connection with its bind queued for [`poll_transmit`](Self::poll_transmit).
    #[must_use]
    pub fn new(config: &ClientConfig) -> Self {
        let mut offered = vec![(0, TransferSyntax::Ndr32)];
        if config.ndr64() {
            offered.push((1, TransferSyntax::Ndr64));
        }
        if config.btfn() {
            let id = u16::try_from(offered.len()).unwrap_or(u16::MAX);
            offered.push((id, TransferSyntax::BindTimeFeatures(BTFN_MASK)));
        }
        let mut conn = Self {
            config: config.clone(),
            phase: Phase::AwaitBindAck,
            call_id: config.first_call_id(),
            ndr32_context: None,
            ndr64_context: None,
            offered,
            btfn_ack: None,
            requests_sent: 0,
            queued: VecDeque::new(),
            in_flight: None,
            splitter: FrameSplitter::new(rpc::MAX_FRAG_LEN),
            outbound: BytesMut::new(),
            events: VecDeque::new(),
        };
        let contexts = conn
            .offered
            .iter()
            .map(|(id, syntax)| context(*id, syntax))
            .collect();
        let mut flags = PfcFlags::SINGLE;
        if config.multiplex() {
            flags |= PfcFlags::CONC_MPX;
        }
        conn.queue(&Pdu {
            call_id: conn.call_id,
            flags,
            body: PduBody::Bind(conn.bind_body(contexts)),
        });
        conn
    }

    /// True once the connection failed or was closed.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// True when every request given so far has been answered.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_none() && self.queued.is_empty()
    }

    /// Queues an activation request. It is encoded (drawing its IV from
    /// `rng`) and sent as soon as the association is ready and no other
    /// call is outstanding.
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] after a failure, [`ClientError::QueueFull`]
    /// past [`MAX_QUEUED_REQUESTS`], [`ClientError::Encode`] if the request
    /// cannot be encoded.
    pub fn send_request(
        &mut self,
        request: RequestBody,
        rng: &mut dyn RandomSource,
    ) -> Result<(), ClientError> {
        if self.phase == Phase::Closed {
            return Err(ClientError::Closed);
        }
        if self.queued.len() >= MAX_QUEUED_REQUESTS {
            return Err(ClientError::QueueFull);
        }
        self.queued.push_back(request);
        self.send_next(rng)
    }

    /// Appends all queued output to `out`; returns how many bytes.
    ///
    /// Copies the bytes once more than [`transmit`](Self::transmit) and
    /// [`advance_transmit`](Self::advance_transmit), which let the caller
    /// write straight from the connection's queue.
    #[must_use = "the bytes appended to `out` must be sent to the host"]
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.outbound.len();
        out.extend_from_slice(&self.outbound);
        self.outbound.clear();
        n
    }

    /// The queued output, oldest byte first, borrowed without copying.
    ///
    /// Write some prefix of it to the host, then drop what was written with
    /// [`advance_transmit`](Self::advance_transmit).
    #[must_use]
    pub fn transmit(&self) -> &[u8] {
        &self.outbound
    }

    /// Drops the first `n` bytes of [`transmit`](Self::transmit), once they
    /// were sent. `n` past the end drops everything.
    pub fn advance_transmit(&mut self, n: usize) {
        let n = n.min(self.outbound.len());
        let _sent = self.outbound.split_to(n);
    }

    /// The next thing that happened, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Feeds bytes received from the host; returns how many bytes of
    /// `input` it consumed.
    ///
    /// Consumption is bounded: it stops, before the next PDU, once
    /// [`MAX_PENDING_EVENTS`] events wait in [`poll_event`](Self::poll_event)
    /// or at least [`MAX_PENDING_OUTPUT`] bytes wait in
    /// [`transmit`](Self::transmit). The caller then drains both and offers
    /// the rest of `input` again; until it does, the returned count may be
    /// less than `input.len()` (even 0). Any split of the byte stream gives
    /// the same result. `rng` supplies the IV of the next queued request.
    ///
    /// # Errors
    ///
    /// Any malformed, unexpected or unverifiable reply closes the
    /// connection and is returned.
    pub fn handle_input(
        &mut self,
        input: &[u8],
        rng: &mut dyn RandomSource,
    ) -> Result<usize, ClientError> {
        if self.phase == Phase::Closed {
            return if input.is_empty() {
                Ok(0)
            } else {
                Err(ClientError::Closed)
            };
        }
        let mut consumed = 0;
        while self.events.len() < MAX_PENDING_EVENTS && self.outbound.len() < MAX_PENDING_OUTPUT {
            let rest = input.get(consumed..).unwrap_or_default();
            if rest.is_empty() {
                break;
            }
            let (used, frame) = match self.splitter.next_frame(rest) {
                Ok(split) => split,
                Err(e) => return Err(self.fail(e.into())),
            };
            consumed += used;
            let Some(frame) = frame else {
                break;
            };
            if let Err(e) = self.handle_frame(&frame, rng) {
                return Err(self.fail(e));
            }
        }
        Ok(consumed)
    }

    fn fail(&mut self, error: ClientError) -> ClientError {
        self.phase = Phase::Closed;
        error
    }

    fn handle_frame(
        &mut self,
        frame: &[u8],
        rng: &mut dyn RandomSource,
    ) -> Result<(), ClientError> {
        let pdu = Pdu::decode(frame)?;
        if !pdu.flags.contains(PfcFlags::SINGLE) {
            return Err(ClientError::CallMismatch(CallMismatch::NotSingleFragment));
        }
        let pdu_type = pdu.pdu_type();
        match (pdu.body, self.phase) {
            (PduBody::BindAck(ack), Phase::AwaitBindAck) => {
                self.expect_call_id(pdu.call_id)?;
                self.handle_bind_ack(&ack, rng)
            }
            (PduBody::AlterContextResp(resp), Phase::AwaitAlterContextResp) => {
                self.expect_call_id(pdu.call_id)?;
                self.handle_alter_context_resp(&resp, rng)
            }
            (PduBody::Response(response), Phase::AwaitResponse) => {
                self.expect_call_id(pdu.call_id)?;
                self.handle_response(&response, rng)
            }
            (PduBody::Fault(fault), _) => Err(ClientError::Fault {
                status: fault.status,
            }),
            (PduBody::BindNak(_), Phase::AwaitBindAck) => Err(ClientError::NoTransferSyntax),
            _ => Err(ClientError::UnexpectedPdu { pdu_type }),
        }
    }

    fn expect_call_id(&self, call_id: u32) -> Result<(), ClientError> {
        if call_id == self.call_id {
            Ok(())
        } else {
            Err(ClientError::CallMismatch(CallMismatch::CallIdNotEchoed))
        }
    }

    fn handle_bind_ack(
        &mut self,
        ack: &BindAck,
        rng: &mut dyn RandomSource,
    ) -> Result<(), ClientError> {
        if ack.results.len() != self.offered.len() {
            return Err(ClientError::BadBindAck(BindAckProblem::ResultCountMismatch));
        }
        for ((id, offered), result) in self.offered.clone().iter().zip(&ack.results) {
            match (offered, result.result) {
                (TransferSyntax::BindTimeFeatures(_), ResultKind::NegotiateAck) => {
                    self.btfn_ack = Some(u64::from(result.reason));
                }
                (TransferSyntax::BindTimeFeatures(_), _) => {}
                (_, ResultKind::Acceptance) => self.accept(*id, offered, result)?,
                (_, ResultKind::NegotiateAck) => {
                    return Err(ClientError::BadBindAck(
                        BindAckProblem::NegotiateAckForTransferSyntax,
                    ));
                }
                _ => {}
            }
        }
        let wants_alter = self.config.first_call_ndr32()
            && self.ndr32_context.is_none()
            && self.ndr64_context.is_some();
        if wants_alter {
            let contexts = vec![context(0, &TransferSyntax::Ndr32)];
            self.queue(&Pdu {
                call_id: self.call_id,
                flags: PfcFlags::SINGLE | PfcFlags::CONC_MPX,
                body: PduBody::AlterContext(self.bind_body(contexts)),
            });
            self.offered = vec![(0, TransferSyntax::Ndr32)];
            self.phase = Phase::AwaitAlterContextResp;
            return Ok(());
        }
        self.become_ready(rng)
    }

    fn handle_alter_context_resp(
        &mut self,
        resp: &BindAck,
        rng: &mut dyn RandomSource,
    ) -> Result<(), ClientError> {
        let [result] = resp.results.as_slice() else {
            return Err(ClientError::BadBindAck(
                BindAckProblem::AlterContextResultCount,
            ));
        };
        if result.result == ResultKind::Acceptance {
            self.accept(0, &TransferSyntax::Ndr32, result)?;
        }
        self.become_ready(rng)
    }

    /// Checks an acceptance result against the syntax offered and records it.
    fn accept(
        &mut self,
        id: u16,
        offered: &TransferSyntax,
        result: &rpc::ContextResult,
    ) -> Result<(), ClientError> {
        if result.reason != 0 || TransferSyntax::from_syntax(&result.transfer_syntax) != *offered {
            return Err(ClientError::BadBindAck(
                BindAckProblem::AcceptedSyntaxNotOffered,
            ));
        }
        match offered {
            TransferSyntax::Ndr32 => self.ndr32_context = Some(id),
            TransferSyntax::Ndr64 => self.ndr64_context = Some(id),
            _ => {}
        }
        Ok(())
    }

    fn become_ready(&mut self, rng: &mut dyn RandomSource) -> Result<(), ClientError> {
        if self.ndr32_context.is_none() && self.ndr64_context.is_none() {
            return Err(ClientError::NoTransferSyntax);
        }
        if self.config.btfn() && self.btfn_ack.is_some_and(|mask| mask != BTFN_MASK) {
            return Err(ClientError::BadBindAck(
                BindAckProblem::FeaturesNotAcknowledged,
            ));
        }
        self.events.push_back(ClientEvent::Bound {
            ndr32: self.ndr32_context.is_some(),
            ndr64: self.ndr64_context.is_some(),
            btfn: self.btfn_ack,
        });
        self.phase = Phase::Ready;
        self.send_next(rng)
    }

    fn handle_response(
        &mut self,
        response: &rpc::Response,
        rng: &mut dyn RandomSource,
    ) -> Result<(), ClientError> {
        let Some(call) = self.in_flight.take() else {
            return Err(ClientError::UnexpectedPdu {
                pdu_type: PduType::Response,
            });
        };
        if response.context_id != call.context_id {
            return Err(ClientError::CallMismatch(CallMismatch::ContextIdNotEchoed));
        }
        if response.cancel_count != 0 {
            return Err(ClientError::CallMismatch(CallMismatch::NonZeroCancelCount));
        }
        let event = match rpc::decode_response_stub(call.ndr, &response.stub)? {
            StubReply::Error(hresult) => ClientEvent::Refused(hresult),
            StubReply::Message(message) => {
                ClientEvent::Answered(call.sent.verify_response(message)?)
            }
        };
        self.events.push_back(event);
        self.call_id = self.call_id.wrapping_add(1);
        self.phase = Phase::Ready;
        self.send_next(rng)
    }

    /// Sends the next queued request if the association is idle.
    fn send_next(&mut self, rng: &mut dyn RandomSource) -> Result<(), ClientError> {
        if self.phase != Phase::Ready {
            return Ok(());
        }
        let Some(request) = self.queued.pop_front() else {
            return Ok(());
        };
        let use_ndr32 = match (self.ndr32_context, self.ndr64_context) {
            (Some(_), None) => true,
            (None, _) => false,
            (Some(_), Some(_)) => self.config.first_call_ndr32() && self.requests_sent == 0,
        };
        let (context_id, ndr) = match (use_ndr32, self.ndr32_context, self.ndr64_context) {
            (true, Some(id), _) | (false, Some(id), None) => (id, Ndr::Ndr32),
            (_, _, Some(id)) => (id, Ndr::Ndr64),
            (_, None, None) => return Err(self.fail(ClientError::NoTransferSyntax)),
        };
        let mut message = BytesMut::with_capacity(message::V6_REQUEST_LEN);
        let sent = message::encode_request(&request, rng, &mut message)
            .map_err(|e| self.fail(ClientError::Encode(e)))?;
        let mut stub = BytesMut::with_capacity(message.len() + 16);
        rpc::encode_request_stub(ndr, &message, &mut stub);
        self.queue(&Pdu {
            call_id: self.call_id,
            flags: PfcFlags::SINGLE,
            body: PduBody::Request(rpc::Request {
                alloc_hint: u32::try_from(stub.len()).unwrap_or(u32::MAX),
                context_id,
                opnum: 0,
                object: None,
                stub: stub.freeze(),
            }),
        });
        self.in_flight = Some(InFlight {
            context_id,
            ndr,
            sent,
        });
        self.requests_sent = self.requests_sent.saturating_add(1);
        self.phase = Phase::AwaitResponse;
        Ok(())
    }

    fn bind_body(&self, contexts: Vec<ContextElement>) -> Bind {
        Bind {
            max_xmit_frag: self.config.max_frag(),
            max_recv_frag: self.config.max_frag(),
            assoc_group_id: 0,
            contexts,
        }
    }

    fn queue(&mut self, pdu: &Pdu) {
        pdu.encode(&mut self.outbound);
    }
}

/// A presentation context offering the KMS interface in one syntax.
fn context(id: u16, syntax: &TransferSyntax) -> ContextElement {
    ContextElement {
        context_id: id,
        abstract_syntax: rpc::KMS_INTERFACE,
        transfer_syntaxes: vec![syntax.to_syntax()],
    }
}
