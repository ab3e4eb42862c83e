//! From reassembled TCP bytes to decoded KMS records, as they arrive.
//!
//! A connection whose client stream starts with a DCE/RPC header is walked
//! PDU by PDU, in capture order, through one [`FrameSplitter`] per direction;
//! its records are released once a client bind or `alter_context` offers the
//! KMS interface (the few records before that wait, bounded). The transfer
//! syntax of each call comes from the bind and `alter_context` results, as a
//! host would see it; requests are decoded and decrypted, and responses
//! decrypted and parsed without the request state a client would have (so
//! echo and hash checks are not made: a capture is evidence, not a peer to
//! trust or distrust).

use std::collections::VecDeque;
use std::net::SocketAddr;

use chrono::{DateTime, Utc};

use super::tcp::Sink;
use super::{Direction, Stamp, Warning, Warnings, looks_like_rpc};
use crate::HResult;
use crate::message::{self, RequestBody, ResponseBody};
use crate::rpc::{self, ContextTable, FrameSplitter, Ndr, Pdu, PduBody, ResultKind, StubReply};

/// Calls remembered per conversation while waiting for their replies.
const MAX_PENDING_CALLS: usize = 64;
/// Records of an RPC conversation kept while it has not yet bound the KMS
/// interface; past this the conversation is taken as not KMS.
const MAX_HELD_RECORDS: usize = 16;
/// Server bytes kept while the client has not yet sent the 16 bytes that
/// tell whether the conversation is DCE/RPC.
const MAX_EARLY_SERVER_BYTES: usize = 4096;
/// Bytes of the client stream that tell whether it is DCE/RPC.
const RPC_HEADER_LEN: usize = 16;

/// The TCP connection a [`Record`] or [`Warning`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Conversation {
    /// 0-based index, in the order of the connections' first packets.
    #[cfg_attr(feature = "serde", serde(rename = "conn"))]
    pub index: usize,
    /// The client's address and port (see the
    /// [module docs](super#client-and-server)).
    pub client: SocketAddr,
    /// The server's address and port.
    pub server: SocketAddr,
}

/// One decoded item of a capture: where and when, and what.
///
/// With the `serde` feature it serializes as one flat object: `packet`,
/// `timestamp` (RFC 3339), `conn`, `client` and `server` (absent for
/// capture-level warnings), `kind` (`request`, `response`, `error` or
/// `warning`) and the fields of the [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Record {
    /// 0-based index of the packet that completed the record.
    pub packet: usize,
    /// Capture time of that packet.
    pub timestamp: DateTime<Utc>,
    /// The TCP connection, unless the record is about the capture file.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub conversation: Option<Conversation>,
    /// What was decoded.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub event: Event,
}

/// What a [`Record`] holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "kind", rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum Event {
    /// A KMS request, decrypted.
    Request(RequestBody),
    /// A KMS response, decrypted (not verified against its request).
    Response(ResponseBody),
    /// A call answered with an HRESULT instead of a response.
    Error {
        /// The HRESULT.
        hresult: HResult,
    },
    /// Something that could not be decoded, and why.
    Warning {
        /// What went wrong.
        message: String,
    },
}

impl From<Warning> for Record {
    fn from(warning: Warning) -> Self {
        Self {
            packet: warning.packet_index,
            timestamp: warning.timestamp,
            conversation: warning.conversation,
            event: Event::Warning {
                message: warning.kind.to_string(),
            },
        }
    }
}

/// The sink of the streaming dissector: decodes each connection's bytes as
/// they arrive and queues the records.
#[derive(Debug, Default)]
pub(super) struct KmsSink {
    queue: VecDeque<Record>,
}

/// What the dissector knows of one connection.
#[derive(Debug)]
pub(super) enum KmsConn {
    /// Fewer than 16 client bytes seen.
    Undecided {
        head: Vec<u8>,
        early_server: Vec<u8>,
    },
    /// A DCE/RPC conversation.
    Rpc(Box<Walker>),
    /// Not DCE/RPC, or not KMS: its bytes are ignored.
    Ignored,
}

/// Where the records of one delivery go.
struct Emit<'a> {
    at: Stamp,
    conversation: Conversation,
    warnings: &'a mut Warnings,
    queue: &'a mut VecDeque<Record>,
}

impl Emit<'_> {
    /// Moves the warnings of the lower layers to the queue, in order.
    fn flush_warnings(&mut self) {
        self.queue.extend(self.warnings.take().map(Record::from));
    }

    fn record(&self, event: Event) -> Record {
        Record {
            packet: self.at.packet,
            timestamp: self.at.timestamp,
            conversation: Some(self.conversation),
            event,
        }
    }
}

impl KmsSink {
    /// Moves the warnings of the lower layers to the queue, in order.
    pub(super) fn flush_warnings(&mut self, warnings: &mut Warnings) {
        self.queue.extend(warnings.take().map(Record::from));
    }

    /// The next record, in capture order.
    pub(super) fn pop(&mut self) -> Option<Record> {
        self.queue.pop_front()
    }
}

impl Sink for KmsSink {
    type State = KmsConn;

    fn open(&mut self, _: Conversation, _: usize, _: bool) -> KmsConn {
        KmsConn::Undecided {
            head: Vec::new(),
            early_server: Vec::new(),
        }
    }

    fn deliver(
        &mut self,
        state: &mut KmsConn,
        conversation: Conversation,
        direction: Direction,
        bytes: &[u8],
        at: Stamp,
        warnings: &mut Warnings,
    ) {
        let mut emit = Emit {
            at,
            conversation,
            warnings,
            queue: &mut self.queue,
        };
        emit.flush_warnings();
        match state {
            KmsConn::Ignored => {}
            KmsConn::Rpc(walker) => {
                walker.feed(direction, bytes, &mut emit);
                if walker.abandoned {
                    *state = KmsConn::Ignored;
                }
            }
            KmsConn::Undecided { head, early_server } => {
                if direction == Direction::ServerToClient {
                    if early_server.len().saturating_add(bytes.len()) > MAX_EARLY_SERVER_BYTES {
                        *state = KmsConn::Ignored;
                    } else {
                        early_server.extend_from_slice(bytes);
                    }
                    return;
                }
                let want = RPC_HEADER_LEN.saturating_sub(head.len()).min(bytes.len());
                let (first, rest) = bytes.split_at(want);
                head.extend_from_slice(first);
                if head.len() < RPC_HEADER_LEN {
                    return;
                }
                if !looks_like_rpc(head) {
                    *state = KmsConn::Ignored;
                    return;
                }
                let mut walker = Box::new(Walker::new());
                walker.feed(Direction::ServerToClient, early_server, &mut emit);
                walker.feed(Direction::ClientToServer, head, &mut emit);
                walker.feed(Direction::ClientToServer, rest, &mut emit);
                *state = if walker.abandoned {
                    KmsConn::Ignored
                } else {
                    KmsConn::Rpc(walker)
                };
            }
        }
    }

    fn close(
        &mut self,
        state: KmsConn,
        conversation: Conversation,
        at: Stamp,
        warnings: &mut Warnings,
    ) {
        let mut emit = Emit {
            at,
            conversation,
            warnings,
            queue: &mut self.queue,
        };
        emit.flush_warnings();
        if let KmsConn::Rpc(mut walker) = state {
            walker.finish(&mut emit);
        }
    }
}

fn side_name(side: usize) -> &'static str {
    if side == 0 { "client" } else { "server" }
}

/// Per-conversation state: the contexts negotiated and the calls in flight.
#[derive(Debug)]
pub(super) struct Walker {
    /// One splitter per direction: client (0) and server (1).
    splitters: [FrameSplitter; 2],
    is_kms: bool,
    /// Records waiting for the conversation to prove KMS.
    held: Vec<Record>,
    /// Too many records without a KMS bind: stop looking.
    abandoned: bool,
    broken: [bool; 2],
    /// Context ids offered in the last bind / `alter_context`, in order.
    offered: Vec<u16>,
    contexts: ContextTable,
    pending: Vec<(u32, Ndr)>,
}

impl Walker {
    fn new() -> Self {
        Self {
            splitters: [
                FrameSplitter::new(rpc::MAX_FRAG_LEN),
                FrameSplitter::new(rpc::MAX_FRAG_LEN),
            ],
            is_kms: false,
            held: Vec::new(),
            abandoned: false,
            broken: [false; 2],
            offered: Vec::new(),
            contexts: ContextTable::new(rpc::MAX_CONTEXTS),
            pending: Vec::new(),
        }
    }

    /// Whether a direction (0 client, 1 server) stopped framing.
    fn is_broken(&self, side: usize) -> bool {
        self.broken.get(side).copied().unwrap_or(true)
    }

    fn set_broken(&mut self, side: usize) {
        if let Some(flag) = self.broken.get_mut(side) {
            *flag = true;
        }
    }

    /// Takes bytes of one direction.
    fn feed(&mut self, direction: Direction, bytes: &[u8], out: &mut Emit<'_>) {
        let side = usize::from(direction == Direction::ServerToClient);
        let mut rest = bytes;
        while !rest.is_empty() && !self.is_broken(side) && !self.abandoned {
            let Some(splitter) = self.splitters.get_mut(side) else {
                return;
            };
            let frame = match splitter.next_frame(rest) {
                Ok((used, frame)) => {
                    rest = rest.get(used..).unwrap_or_default();
                    frame
                }
                Err(e) => {
                    self.warn(out, format!("{}: not DCE/RPC: {e}", side_name(side)));
                    self.set_broken(side);
                    return;
                }
            };
            let Some(frame) = frame else {
                return;
            };
            match Pdu::decode(&frame) {
                Ok(pdu) => self.pdu(pdu, side == 0, out),
                Err(e) => self.warn(out, format!("{}: malformed PDU: {e}", side_name(side))),
            }
        }
    }

    /// The connection ended: a PDU cut short is worth a warning.
    fn finish(&mut self, out: &mut Emit<'_>) {
        for side in 0..2 {
            let buffered = self.splitters.get(side).map_or(0, FrameSplitter::buffered);
            if buffered > 0 && !self.is_broken(side) {
                self.warn(
                    out,
                    format!(
                        "{}: {buffered} bytes of a truncated PDU at the end",
                        side_name(side)
                    ),
                );
            }
        }
    }

    fn push(&mut self, out: &mut Emit<'_>, event: Event) {
        let record = out.record(event);
        if self.is_kms {
            out.queue.push_back(record);
        } else if self.held.len() < MAX_HELD_RECORDS {
            self.held.push(record);
        } else {
            self.abandoned = true;
            self.held = Vec::new();
        }
    }

    /// A warning, within the capture's warning budget.
    fn warn(&mut self, out: &mut Emit<'_>, message: String) {
        if out.warnings.admit(out.at) {
            self.push(out, Event::Warning { message });
        } else {
            out.flush_warnings();
        }
    }

    fn pdu(&mut self, pdu: Pdu, from_client: bool, out: &mut Emit<'_>) {
        match (pdu.body, from_client) {
            (PduBody::Bind(bind) | PduBody::AlterContext(bind), true) => {
                if bind
                    .contexts
                    .iter()
                    .any(|c| c.abstract_syntax.uuid == rpc::KMS_INTERFACE.uuid)
                    && !self.is_kms
                {
                    self.is_kms = true;
                    out.queue.extend(self.held.drain(..));
                }
                self.offered = bind.contexts.iter().map(|c| c.context_id).collect();
            }
            (PduBody::BindAck(ack) | PduBody::AlterContextResp(ack), false) => {
                for (id, result) in self.offered.iter().zip(&ack.results) {
                    if result.result != ResultKind::Acceptance {
                        continue;
                    }
                    if let Some(ndr) = Ndr::from_syntax(&result.transfer_syntax) {
                        // A full table keeps the contexts it has.
                        let _ = self.contexts.insert(*id, ndr);
                    }
                }
            }
            (PduBody::Request(request), true) => self.request(pdu.call_id, &request, out),
            (PduBody::Response(response), false) => self.response(pdu.call_id, &response, out),
            (PduBody::Fault(fault), false) => self.warn(
                out,
                format!(
                    "call {} failed with RPC fault {:#010x}",
                    pdu.call_id, fault.status
                ),
            ),
            _ => {}
        }
    }

    fn request(&mut self, call_id: u32, request: &rpc::Request, out: &mut Emit<'_>) {
        let Some(ndr) = self.contexts.get(request.context_id) else {
            self.warn(
                out,
                format!(
                    "call {call_id} names unknown context {}",
                    request.context_id
                ),
            );
            return;
        };
        if self.pending.len() >= MAX_PENDING_CALLS {
            self.pending.remove(0);
        }
        self.pending.push((call_id, ndr));
        let decoded = rpc::decode_request_stub(ndr, &request.stub)
            .map_err(|e| e.to_string())
            .and_then(|msg| message::decode_request(msg).map_err(|e| e.to_string()));
        match decoded {
            Ok(received) => self.push(out, Event::Request(received.body().clone())),
            Err(e) => self.warn(out, format!("call {call_id}: undecodable KMS request: {e}")),
        }
    }

    fn response(&mut self, call_id: u32, response: &rpc::Response, out: &mut Emit<'_>) {
        let ndr = match self.pending.iter().position(|(id, _)| *id == call_id) {
            Some(i) => Some(self.pending.remove(i).1),
            None => self.contexts.get(response.context_id),
        };
        let Some(ndr) = ndr else {
            self.warn(out, format!("call {call_id}: response to an unknown call"));
            return;
        };
        match rpc::decode_response_stub(ndr, &response.stub) {
            Ok(StubReply::Error(hresult)) => self.push(out, Event::Error { hresult }),
            Ok(StubReply::Message(msg)) => match message::decode_response_unverified(msg) {
                Ok(body) => self.push(out, Event::Response(body)),
                Err(e) => self.warn(
                    out,
                    format!("call {call_id}: undecodable KMS response: {e}"),
                ),
            },
            Err(e) => self.warn(out, format!("call {call_id}: malformed response stub: {e}")),
        }
    }
}
