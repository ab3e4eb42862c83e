//! The host side of one TCP connection.

use bytes::BytesMut;

use super::config::{HostConfig, HostLimits};
use super::responder::Responder;
use crate::message::{self, ResponseBody, Version};
use crate::rpc::{
    self, Bind, BindAck, ContextResult, Fault, NegotiationPolicy, Pdu, PduBody, PduType, PfcFlags,
    Reassembler, ResultKind, StubReply, TransferSyntax,
};
use crate::{FileTime, HResult, RandomSource};

/// Bytes buffered before a PDU is framed: the whole common header, so that
/// even a refused PDU's call id is known (no PDU is shorter).
const LENGTH_PREFIX: usize = rpc::HEADER_LEN;

/// Why a host connection closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The peer sent bytes that are not valid DCE/RPC.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingBind,
    Bound { assoc_group_id: u32 },
    Closed,
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
    state: State,
    /// Accepted presentation contexts: id → data representation.
    contexts: Vec<(u16, rpc::Ndr)>,
    inbound: BytesMut,
    outbound: BytesMut,
    reassembler: Reassembler,
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
            state: State::AwaitingBind,
            contexts: Vec::new(),
            inbound: BytesMut::new(),
            outbound: BytesMut::new(),
            reassembler: Reassembler::new(config.limits().max_stub_len),
            requests_served: 0,
        }
    }

    /// True once the connection has failed or been told to close; the
    /// caller should flush [`poll_transmit`](Self::poll_transmit) and close
    /// the socket.
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

    /// True while output is queued; the connection consumes no more input
    /// once [`HostLimits::max_pending_output`] bytes are waiting.
    #[must_use]
    pub fn has_pending_output(&self) -> bool {
        !self.outbound.is_empty()
    }

    /// Marks the connection closed (e.g. on an idle timeout). Queued output
    /// stays available to [`poll_transmit`](Self::poll_transmit).
    pub fn close(&mut self) {
        self.state = State::Closed;
    }

    /// Appends all queued output to `out` and returns how many bytes it
    /// appended.
    #[must_use = "the bytes appended to `out` must be sent to the peer"]
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.outbound.len();
        out.extend_from_slice(&self.outbound);
        self.outbound.clear();
        n
    }

    /// Feeds bytes received from the client at time `now`.
    ///
    /// Consumes input until it is exhausted or until
    /// [`HostLimits::max_pending_output`] bytes of output are queued, and
    /// returns how many bytes of `input` it consumed; offer the rest again
    /// after draining [`poll_transmit`](Self::poll_transmit). Any split of
    /// the byte stream gives the same result. Each KMS request is answered
    /// through `responder`; `rng` supplies the association group id (unless
    /// configured) and the response salts and IVs.
    ///
    /// # Errors
    ///
    /// Input that is not a valid DCE/RPC association closes the connection;
    /// a fault PDU may have been queued for the peer first. KMS-level
    /// problems (undecodable, unsupported or refused requests) are not
    /// errors: they are answered with an HRESULT and the connection goes on.
    pub fn handle_input(
        &mut self,
        now: FileTime,
        input: &[u8],
        responder: &mut dyn Responder,
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
        while self.outbound.len() < self.limits.max_pending_output {
            let rest = input.get(consumed..).unwrap_or_default();
            // Fast path: a whole PDU at the start of the input, nothing buffered.
            if self.inbound.is_empty()
                && rest.len() >= LENGTH_PREFIX
                && let Some(len) = self.whole_frame_len(rest)?
            {
                let frame = rest.get(..len).unwrap_or_default();
                consumed += len;
                self.handle_frame(now, frame, responder, rng)?;
                if self.state == State::Closed {
                    break;
                }
                continue;
            }
            let framed = if self.inbound.len() < LENGTH_PREFIX {
                Ok(None)
            } else {
                rpc::frame_len(&self.inbound, self.limits.max_frag_len)
            };
            let target = match framed {
                Ok(None) => LENGTH_PREFIX,
                Ok(Some(len)) => len,
                Err(e) => {
                    let prefix = self.inbound.split().freeze();
                    return Err(self.fail_framing(e, &prefix));
                }
            };
            let missing = target.saturating_sub(self.inbound.len());
            if missing > 0 {
                let take = missing.min(rest.len());
                if take == 0 {
                    break;
                }
                self.inbound
                    .extend_from_slice(rest.get(..take).unwrap_or_default());
                consumed += take;
                continue;
            }
            let frame = self.inbound.split_to(target);
            self.handle_frame(now, &frame, responder, rng)?;
            if self.state == State::Closed {
                break;
            }
        }
        Ok(consumed)
    }

    /// The length of the first PDU of `buf` if all of it is there.
    fn whole_frame_len(&mut self, buf: &[u8]) -> Result<Option<usize>, HostError> {
        match rpc::frame_len(buf, self.limits.max_frag_len) {
            Ok(Some(len)) if len <= buf.len() => Ok(Some(len)),
            Ok(_) => Ok(None),
            Err(e) => Err(self.fail_framing(e, buf)),
        }
    }

    fn fail(&mut self, error: HostError) -> HostError {
        self.state = State::Closed;
        error
    }

    /// Closes on bytes that do not frame as a PDU. A first bind in another
    /// RPC version gets a `bind_nak` naming 5.0 first (PROTOCOL.md §2.4).
    fn fail_framing(&mut self, error: rpc::Error, prefix: &[u8]) -> HostError {
        let is_bind = prefix.get(2) == Some(&u8::from(PduType::Bind));
        if matches!(error, rpc::Error::UnsupportedVersion { .. })
            && is_bind
            && self.state == State::AwaitingBind
        {
            self.queue_bind_nak(frame_call_id(prefix).unwrap_or(0));
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
        responder: &mut dyn Responder,
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
                self.handle_request(now, call_id, flags, request, responder, rng);
                Ok(())
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
            max_xmit_frag: bind.max_xmit_frag,
            max_recv_frag: bind.max_recv_frag,
            assoc_group_id,
            secondary_address: self.secondary_address.clone(),
            results,
        };
        // The `bind_ack` copies the bind's flags (PROTOCOL.md §2.1).
        self.queue(&Pdu {
            call_id,
            flags,
            body: PduBody::BindAck(ack),
        });
        Ok(())
    }

    fn handle_alter_context(
        &mut self,
        call_id: u32,
        alter: &Bind,
        assoc_group_id: u32,
    ) -> Result<(), HostError> {
        let results = self.negotiate(alter)?;
        let resp = BindAck {
            max_xmit_frag: alter.max_xmit_frag,
            max_recv_frag: alter.max_recv_frag,
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
        let results = rpc::negotiate(&bind.contexts, &self.negotiation);
        for (element, result) in bind.contexts.iter().zip(&results) {
            if result.result != ResultKind::Acceptance {
                continue;
            }
            let ndr = match TransferSyntax::from_syntax(&result.transfer_syntax) {
                TransferSyntax::Ndr32 => rpc::Ndr::Ndr32,
                TransferSyntax::Ndr64 => rpc::Ndr::Ndr64,
                _ => continue,
            };
            if let Some(entry) = self
                .contexts
                .iter_mut()
                .find(|(id, _)| *id == element.context_id)
            {
                entry.1 = ndr;
            } else if self.contexts.len() < self.limits.max_contexts {
                self.contexts.push((element.context_id, ndr));
            } else {
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
        responder: &mut dyn Responder,
        rng: &mut dyn RandomSource,
    ) {
        let context_id = request.context_id;
        let Some(ndr) = self.context_ndr(context_id) else {
            self.queue_fault(call_id, context_id, rpc::NCA_S_UNK_IF);
            return;
        };
        if request.opnum != 0 {
            self.queue_fault(call_id, context_id, rpc::NCA_S_OP_RNG_ERROR);
            return;
        }
        let request = match self.reassembler.push(call_id, flags, request) {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(e) => {
                self.queue_fault(call_id, context_id, e.fault_status());
                return;
            }
        };
        let mut stub = BytesMut::with_capacity(320);
        match self.answer(now, ndr, &request.stub, responder, rng) {
            Ok(message) => rpc::encode_response_stub(ndr, StubReply::Message(&message), &mut stub),
            Err(hresult) => rpc::encode_response_stub(ndr, StubReply::Error(hresult), &mut stub),
        }
        self.requests_served = self.requests_served.saturating_add(1);
        let response = rpc::Response {
            alloc_hint: u32::try_from(stub.len()).unwrap_or(u32::MAX),
            context_id,
            cancel_count: 0,
            stub: stub.freeze(),
        };
        self.queue(&Pdu {
            call_id,
            flags: PfcFlags::SINGLE,
            body: PduBody::Response(response),
        });
    }

    /// Decodes one KMS request and builds the KMS response message, or the
    /// HRESULT that replaces it (PROTOCOL.md §6.1).
    fn answer(
        &self,
        now: FileTime,
        ndr: rpc::Ndr,
        stub: &[u8],
        responder: &mut dyn Responder,
        rng: &mut dyn RandomSource,
    ) -> Result<BytesMut, HResult> {
        let message = rpc::decode_request_stub(ndr, stub).map_err(|_| HResult::INVALID_DATA)?;
        let received = message::decode_request(message).map_err(|_| HResult::INVALID_DATA)?;
        if self.verify_v4_mac && received.version() == Version::V4 && !received.mac_ok() {
            return Err(HResult::INVALID_DATA);
        }
        let answer = responder.respond(now, received.body())?;
        let hwid = (received.version() == Version::V6).then_some(answer.hwid);
        let body = ResponseBody::answering(
            received.body(),
            answer.epid,
            answer.count,
            answer.activation_interval,
            answer.renewal_interval,
            hwid,
        );
        let mut out = BytesMut::with_capacity(message::MAX_RESPONSE_LEN);
        received
            .encode_response(&body, rng, &mut out)
            .map_err(|_| HResult::INVALID_DATA)?;
        Ok(out)
    }

    fn context_ndr(&self, context_id: u16) -> Option<rpc::Ndr> {
        self.contexts
            .iter()
            .find(|(id, _)| *id == context_id)
            .map(|&(_, ndr)| ndr)
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

    fn queue(&mut self, pdu: &Pdu) {
        pdu.encode(&mut self.outbound);
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
