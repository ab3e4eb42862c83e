//! From reassembled TCP conversations to decoded KMS records.
//!
//! Each conversation whose client stream starts with a DCE/RPC bind that
//! offers the KMS interface is walked PDU by PDU, in capture order. The
//! transfer syntax of each call comes from the bind and `alter_context`
//! results, as a host would see it; requests are decoded and decrypted, and
//! responses decrypted and parsed without the request state a client would
//! have (so echo and hash checks are not made: a capture is evidence, not a
//! peer to trust or distrust).

use std::fmt;

use serde_json::{Value, json};

use super::{Capture, CaptureError, Direction, TcpConversation, looks_like_rpc, read_capture};
use crate::HResult;
use crate::message::{self, RequestBody, ResponseBody};
use crate::rpc::{self, FrameSplitter, Ndr, Pdu, PduBody, ResultKind, StubReply};

/// Calls remembered per conversation while waiting for their replies.
const MAX_PENDING_CALLS: usize = 64;

/// One line of dissector output.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Record {
    /// A KMS request, decrypted.
    Request {
        /// Conversation index (order of first packet, from 0).
        conn: usize,
        /// The request.
        body: RequestBody,
    },
    /// A KMS response, decrypted (not verified against its request).
    Response {
        /// Conversation index.
        conn: usize,
        /// The response.
        body: ResponseBody,
    },
    /// A call answered with an HRESULT instead of a response.
    Error {
        /// Conversation index.
        conn: usize,
        /// The HRESULT.
        hresult: HResult,
    },
    /// Something that could not be decoded, and why.
    Warning {
        /// Conversation index, when the problem belongs to one.
        conn: Option<usize>,
        /// Index of the packet, for capture-level problems.
        packet: Option<usize>,
        /// What went wrong.
        message: String,
    },
}

impl Record {
    /// The record as one JSON object, in the documented line format: GUIDs
    /// lower-case, times RFC 3339 UTC to the second.
    ///
    /// ```
    /// use kms_activation::HResult;
    /// use kms_activation::dissect::Record;
    ///
    /// let line = Record::Error { conn: 0, hresult: HResult::KMS_ID_MISMATCH }.to_json();
    /// assert_eq!(line.to_string(), r#"{"conn":0,"kind":"error","hresult":"0xC004F042"}"#);
    /// ```
    #[must_use]
    pub fn to_json(&self) -> Value {
        match self {
            Self::Request { conn, body } => json!({
                "conn": conn,
                "kind": "request",
                "version": body.version.to_string(),
                "vm": body.is_virtual_machine(),
                "license_status": u32::from(body.license_status),
                "binding_expiration": body.binding_expiration,
                "app_id": body.application_id.to_string(),
                "sku_id": body.sku_id.to_string(),
                "kms_id": body.kms_id.to_string(),
                "cmid": body.cmid.to_string(),
                "previous_cmid": body.previous_cmid.to_string(),
                "client_time": body.client_time.to_string(),
                "workstation": body.workstation,
                "n_policy": body.n_policy,
            }),
            Self::Response { conn, body } => {
                let mut v = json!({
                    "conn": conn,
                    "kind": "response",
                    "version": body.version.to_string(),
                    "epid": body.epid,
                    "cmid": body.cmid.to_string(),
                    "client_time": body.client_time.to_string(),
                    "count": body.count,
                    "activation_interval": body.activation_interval,
                    "renewal_interval": body.renewal_interval,
                });
                if let (Some(hwid), Some(map)) = (body.hwid, v.as_object_mut()) {
                    map.insert("hwid".into(), Value::String(hwid.to_string()));
                }
                v
            }
            Self::Error { conn, hresult } => json!({
                "conn": conn,
                "kind": "error",
                "hresult": format!("{hresult:#}"),
            }),
            Self::Warning {
                conn,
                packet,
                message,
            } => json!({
                "conn": conn,
                "kind": "warning",
                "packet": packet,
                "message": message,
            }),
        }
    }
}

impl fmt::Display for Record {
    /// The JSON line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

/// Reads a pcap capture and returns every KMS record in it, in order:
/// capture-level warnings first, then each KMS conversation in the order of
/// its first packet.
///
/// # Errors
///
/// Only when the capture's file header is unreadable; later damage becomes
/// [`Record::Warning`]s next to whatever could be decoded.
pub fn dissect(capture: &[u8]) -> Result<Vec<Record>, CaptureError> {
    Ok(dissect_capture(&read_capture(capture)?))
}

/// The KMS records of an already reassembled capture.
#[must_use]
pub fn dissect_capture(capture: &Capture) -> Vec<Record> {
    let mut out: Vec<Record> = capture
        .warnings
        .iter()
        .map(|w| Record::Warning {
            conn: w.conn,
            packet: Some(w.packet_index),
            message: w.kind.to_string(),
        })
        .collect();
    for conversation in &capture.connections {
        dissect_conversation(conversation, &mut out);
    }
    out
}

/// Appends the KMS records of one TCP conversation to `out`. A
/// conversation that is not DCE/RPC, or that never binds the KMS interface,
/// adds nothing.
pub fn dissect_conversation(conversation: &TcpConversation, out: &mut Vec<Record>) {
    let client_start = conversation.stream(Direction::ClientToServer);
    if !looks_like_rpc(&client_start) {
        return;
    }
    let mut walker = Walker::new(conversation.index);
    // One splitter per direction: client (0) and server (1).
    let mut splitters = [
        FrameSplitter::new(rpc::MAX_FRAG_LEN),
        FrameSplitter::new(rpc::MAX_FRAG_LEN),
    ];
    for chunk in &conversation.chunks {
        let side = usize::from(chunk.direction == Direction::ServerToClient);
        let Some(splitter) = splitters.get_mut(side) else {
            continue;
        };
        let mut rest: &[u8] = &chunk.bytes;
        while !rest.is_empty() && !walker.is_broken(side) {
            let frame = match splitter.next_frame(rest) {
                Ok((used, frame)) => {
                    rest = rest.get(used..).unwrap_or_default();
                    frame
                }
                Err(e) => {
                    walker.warn(out, format!("{}: not DCE/RPC: {e}", side_name(side)));
                    walker.set_broken(side);
                    break;
                }
            };
            let Some(frame) = frame else {
                break;
            };
            match Pdu::decode(&frame) {
                Ok(pdu) => walker.pdu(pdu, side == 0, out),
                Err(e) => walker.warn(out, format!("{}: malformed PDU: {e}", side_name(side))),
            }
        }
    }
    if !walker.is_kms {
        out.truncate(walker.first_record.min(out.len()));
        return;
    }
    for (side, splitter) in splitters.iter().enumerate() {
        if splitter.buffered() > 0 && !walker.is_broken(side) {
            walker.warn(
                out,
                format!(
                    "{}: {} bytes of a truncated PDU at the end",
                    side_name(side),
                    splitter.buffered()
                ),
            );
        }
    }
}

fn side_name(side: usize) -> &'static str {
    if side == 0 { "client" } else { "server" }
}

/// Per-conversation state: the contexts negotiated and the calls in flight.
struct Walker {
    conn: usize,
    is_kms: bool,
    first_record: usize,
    broken: [bool; 2],
    /// Context ids offered in the last bind / `alter_context`, in order.
    offered: Vec<u16>,
    contexts: Vec<(u16, Ndr)>,
    pending: Vec<(u32, Ndr)>,
}

impl Walker {
    fn new(conn: usize) -> Self {
        Self {
            conn,
            is_kms: false,
            first_record: usize::MAX,
            broken: [false; 2],
            offered: Vec::new(),
            contexts: Vec::new(),
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

    fn push(&mut self, out: &mut Vec<Record>, record: Record) {
        self.first_record = self.first_record.min(out.len());
        out.push(record);
    }

    fn warn(&mut self, out: &mut Vec<Record>, message: String) {
        let record = Record::Warning {
            conn: Some(self.conn),
            packet: None,
            message,
        };
        self.push(out, record);
    }

    fn pdu(&mut self, pdu: Pdu, from_client: bool, out: &mut Vec<Record>) {
        match (pdu.body, from_client) {
            (PduBody::Bind(bind) | PduBody::AlterContext(bind), true) => {
                if bind
                    .contexts
                    .iter()
                    .any(|c| c.abstract_syntax.uuid == rpc::KMS_INTERFACE.uuid)
                {
                    self.is_kms = true;
                }
                self.offered = bind.contexts.iter().map(|c| c.context_id).collect();
            }
            (PduBody::BindAck(ack) | PduBody::AlterContextResp(ack), false) => {
                for (id, result) in self.offered.iter().zip(&ack.results) {
                    if result.result != ResultKind::Acceptance {
                        continue;
                    }
                    if let Some(ndr) = Ndr::from_syntax(&result.transfer_syntax) {
                        self.contexts.retain(|(known, _)| known != id);
                        if self.contexts.len() < rpc::MAX_CONTEXTS {
                            self.contexts.push((*id, ndr));
                        }
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

    fn context_ndr(&self, id: u16) -> Option<Ndr> {
        self.contexts
            .iter()
            .find(|(known, _)| *known == id)
            .map(|&(_, ndr)| ndr)
    }

    fn request(&mut self, call_id: u32, request: &rpc::Request, out: &mut Vec<Record>) {
        let Some(ndr) = self.context_ndr(request.context_id) else {
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
            Ok(received) => {
                let record = Record::Request {
                    conn: self.conn,
                    body: received.body().clone(),
                };
                self.push(out, record);
            }
            Err(e) => self.warn(out, format!("call {call_id}: undecodable KMS request: {e}")),
        }
    }

    fn response(&mut self, call_id: u32, response: &rpc::Response, out: &mut Vec<Record>) {
        let ndr = match self.pending.iter().position(|(id, _)| *id == call_id) {
            Some(i) => Some(self.pending.remove(i).1),
            None => self.context_ndr(response.context_id),
        };
        let Some(ndr) = ndr else {
            self.warn(out, format!("call {call_id}: response to an unknown call"));
            return;
        };
        match rpc::decode_response_stub(ndr, &response.stub) {
            Ok(StubReply::Error(hresult)) => {
                let record = Record::Error {
                    conn: self.conn,
                    hresult,
                };
                self.push(out, record);
            }
            Ok(StubReply::Message(msg)) => match message::decode_response_unverified(msg) {
                Ok(body) => {
                    let record = Record::Response {
                        conn: self.conn,
                        body,
                    };
                    self.push(out, record);
                }
                Err(e) => self.warn(
                    out,
                    format!("call {call_id}: undecodable KMS response: {e}"),
                ),
            },
            Err(e) => self.warn(out, format!("call {call_id}: malformed response stub: {e}")),
        }
    }
}
