//! DCE/RPC connection-oriented PDUs, as KMS uses them.
//!
//! This layer knows the RPC framing and the NDR stubs of the one KMS
//! operation (`RequestActivation`), but nothing of the KMS messages inside
//! them; those are opaque bytes here (their format is described in
//! [`crate::message`]).
//!
//! * [`frame_len`] splits a TCP byte stream into PDUs, deciding from the first
//!   10 bytes whether the next PDU is acceptable before anything is buffered.
//! * [`Pdu::decode`] / [`Pdu::encode`] convert one whole PDU ([`PduBody`]:
//!   bind, `alter_context`, their acks, `bind_nak`, request, response, fault).
//! * [`negotiate`] answers the presentation contexts of a bind or
//!   `alter_context` (NDR32, NDR64, bind-time feature negotiation).
//! * [`Reassembler`] joins a fragmented request under a byte cap.
//! * [`encode_request_stub`], [`decode_request_stub`],
//!   [`encode_response_stub`], [`decode_response_stub`] frame the KMS message
//!   in NDR32 or NDR64.
//!
//! What these PDUs look like on the wire, and the rules a KMS host applies to
//! them, is described in [`crate::dcerpc`].
//!
//! # No-panic contract
//!
//! Every decoder in this module ([`frame_len`], [`Pdu::decode`],
//! [`decode_request_stub`], [`decode_response_stub`], [`Reassembler::push`])
//! accepts arbitrary bytes and **never panics**: it returns a value or an
//! [`Error`] naming the field and its byte offset. Every count read from the
//! wire is checked against both a named limit (the `MAX_*` constants below)
//! and the bytes that remain before anything is allocated, so a decoder
//! never allocates more than a small multiple of its input.
//!
//! Every encoder **never panics** either, for any value of the public types.
//! Values the wire cannot express are clamped so that the bytes written stay
//! self-consistent: lists are cut at 255 entries (their count fields are one
//! byte) and a PDU longer than [`MAX_FRAG_LEN`] gets a saturated
//! `frag_length` (and does not decode). [`Pdu::decode`] never produces such
//! values, and `decode(encode(pdu)) == pdu` for every other PDU; check
//! [`Pdu::encoded_len`] when building PDUs from untrusted sizes.
//!
//! # Errors and faults
//!
//! `Error::fault_status` maps each error to the `nca_s_*` status a host
//! puts in a fault PDU, as rustls maps its errors to alerts.
#![cfg_attr(
    not(any(fuzzing, feature = "fuzzing")),
    allow(
        unreachable_pub,
        dead_code,
        unused_imports,
        reason = "a whole codec, public for the fuzz targets and tests (feature `fuzzing`); \
                  each engine uses a part of it"
    )
)]

mod bind;
mod call;
mod context;
mod frame;
mod header;
mod ndr;

use bytes::{BufMut, BytesMut};

pub use bind::{
    Bind, BindAck, BindNak, ContextElement, ContextResult, KMS_INTERFACE, NDR32, NDR64,
    NegotiationPolicy, ResultKind, SyntaxId, TransferSyntax, negotiate,
};
pub use call::{Fault, Reassembler, Request, Response};
pub use context::ContextTable;
pub use frame::{Frame, FrameSplitter, frame_len};
pub use header::{DREP, HEADER_LEN, PduType, PfcFlags};
pub use ndr::{
    Ndr, StubReply, decode_request_stub, decode_response_stub, encode_request_stub,
    encode_response_stub,
};

use crate::wire::{DecodeError, DecodeErrorKind, Reader};
use header::Header;

/// The largest PDU the wire format can describe: `frag_length` is a u16.
pub const MAX_FRAG_LEN: usize = 65_535;

/// The fragment size a host accepts by default.
///
/// 5840 bytes (four 1460-byte Ethernet segments) is the `max_xmit_frag` /
/// `max_recv_frag` that vlmcs and Windows clients advertise in their binds,
/// so a conforming peer never sends more. The largest KMS PDU is 312 bytes
/// (an NDR64 V6 response, see [PDU sizes](crate::dcerpc#pdu-sizes)), which leaves
/// ample room.
pub const DEFAULT_MAX_FRAG_LEN: usize = 5_840;

/// The most presentation contexts accepted in one bind or `alter_context` (and
/// results in one ack). Clients offer at most three (NDR32, NDR64, BTFN).
pub const MAX_CONTEXTS: usize = 16;

/// The most transfer syntaxes accepted in one presentation context. Clients
/// offer one; DCE allows a list.
pub const MAX_TRANSFER_SYNTAXES: usize = 8;

/// The longest secondary address accepted in a `bind_ack`, NUL included.
/// A TCP port needs 6 bytes (`"65535\0"`); named-pipe addresses are longer.
pub const MAX_SECONDARY_ADDR_LEN: usize = 256;

/// The most protocol versions accepted in a `bind_nak` (KMS hosts list one).
pub const MAX_PROTOCOL_VERSIONS: usize = 16;

/// The default cap on a reassembled request stub (64 KiB). Real KMS request
/// stubs are at most 276 bytes.
pub const MAX_STUB_LEN: usize = 64 * 1024;

/// `nca_s_op_rng_error`: the opnum is out of range (KMS has only opnum 0).
pub const NCA_S_OP_RNG_ERROR: u32 = 0x1C01_0002;
/// `nca_s_unk_if`: the request names a presentation context that was never
/// accepted (vlmcsd also sends it for a request before any bind).
pub const NCA_S_UNK_IF: u32 = 0x1C01_0003;
/// `nca_s_proto_error`: the peer broke the RPC protocol.
pub const NCA_S_PROTO_ERROR: u32 = 0x1C01_000B;
/// `nca_s_fault_ndr` (`RPC_X_BAD_STUB_DATA`, MS-RPCE §2.2.2.11): the stub
/// data of a call do not decode.
pub const NCA_S_FAULT_NDR: u32 = 0x0000_06F7;

/// Errors of the RPC layer.
///
/// Field names in [`DecodeError`]s are prefixed by the PDU part: `rpc.` (the
/// header), `bind.` (bind and `alter_context`), `bind_ack.` (`bind_ack` and
/// `alter_context_resp`), `bind_nak.`, `request.`, `response.`, `fault.`, and
/// `stub.` for the NDR stubs (whose offsets count from the start of the stub).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A PDU field does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The header names an RPC version other than 5.0.
    #[error("unsupported RPC version {major}.{minor} (only 5.0 is spoken)")]
    UnsupportedVersion {
        /// `rpc_vers`.
        major: u8,
        /// `rpc_vers_minor`.
        minor: u8,
    },
    /// The data representation is not little-endian integers with ASCII
    /// characters (the first `packed_drep` byte is not `0x10`).
    #[error("unsupported data representation {0:02x?}")]
    UnsupportedDataRepresentation([u8; 4]),
    /// The PDU carries an authentication trailer; KMS never authenticates.
    #[error("authenticated PDU (auth_length {auth_length}); KMS never authenticates")]
    Authenticated {
        /// The `auth_length` field.
        auth_length: u16,
    },
    /// `frag_length` is above the limit in force.
    #[error("fragment of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The `frag_length` field.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `frag_length` does not match the length of the frame being decoded.
    #[error("frag_length {frag_length} does not match the {frame_len}-byte frame")]
    LengthMismatch {
        /// The `frag_length` field.
        frag_length: usize,
        /// The bytes handed in.
        frame_len: usize,
    },
    /// A list count is above its limit (checked before allocating).
    #[error("{field} at byte {offset:#x}: {count} entries, limit {max}")]
    TooMany {
        /// The count field, e.g. `"bind.n_context_elem"`.
        field: &'static str,
        /// Its byte offset in the PDU.
        offset: usize,
        /// The count found on the wire.
        count: usize,
        /// The largest count accepted.
        max: usize,
    },
    /// A PTYPE this crate does not decode (auth3, shutdown, `co_cancel`,
    /// orphaned or unassigned).
    #[error("unsupported PDU type {0}")]
    UnknownPduType(u8),
    /// A middle or last request fragment arrived with no first fragment.
    #[error("request fragment of call {call_id} without a first fragment")]
    OrphanFragment {
        /// The fragment's call id.
        call_id: u32,
    },
    /// A request fragment of another call arrived while a fragmented call
    /// was being reassembled.
    #[error("fragment of call {got} while call {expected} is being reassembled")]
    InterleavedCall {
        /// The call being reassembled.
        expected: u32,
        /// The call id of the fragment.
        got: u32,
    },
    /// A fragment's context id or opnum differs from the first fragment's.
    #[error("fragment of call {call_id} changes its context id or opnum")]
    FragmentMismatch {
        /// The call id.
        call_id: u32,
    },
    /// The reassembled stub would exceed the cap.
    #[error("reassembled stub of {len} bytes exceeds the cap of {max}")]
    StubTooLarge {
        /// The stub length the fragments add up to.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// An NDR stub field does not decode (offset from the start of the stub).
    #[error("{0} (offset within the NDR stub)")]
    Stub(DecodeError),
    /// An NDR array's size argument and its conformance (max count) differ.
    #[error("stub: size {size} differs from the array conformance {conformance}")]
    StubSizeMismatch {
        /// The size argument (`requestSize` / `*responseSize`).
        size: u64,
        /// The array's conformance.
        conformance: u64,
    },
}

impl Error {
    /// The `nca_s_*` status a host puts in the fault PDU it sends for this
    /// error: [`NCA_S_FAULT_NDR`] for stub errors, [`NCA_S_PROTO_ERROR`] for
    /// everything else.
    ///
    /// (A bind that is not RPC 5.0 is better answered with a `bind_nak`, reason
    /// 4; that choice belongs to the engine.)
    #[must_use]
    pub(crate) const fn fault_status(&self) -> u32 {
        match self {
            Self::Stub(_) | Self::StubSizeMismatch { .. } => NCA_S_FAULT_NDR,
            Self::Decode(_)
            | Self::TooMany { .. }
            | Self::UnsupportedVersion { .. }
            | Self::UnsupportedDataRepresentation(_)
            | Self::Authenticated { .. }
            | Self::FrameTooLarge { .. }
            | Self::LengthMismatch { .. }
            | Self::UnknownPduType(_)
            | Self::OrphanFragment { .. }
            | Self::InterleavedCall { .. }
            | Self::FragmentMismatch { .. }
            | Self::StubTooLarge { .. } => NCA_S_PROTO_ERROR,
        }
    }
}

/// The body of a PDU, by type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PduBody {
    /// `bind` (PTYPE 11).
    Bind(Bind),
    /// `alter_context` (PTYPE 14): same layout as a bind.
    AlterContext(Bind),
    /// `bind_ack` (PTYPE 12).
    BindAck(BindAck),
    /// `alter_context_resp` (PTYPE 15): same layout as a `bind_ack`.
    AlterContextResp(BindAck),
    /// `bind_nak` (PTYPE 13).
    BindNak(BindNak),
    /// `request` (PTYPE 0).
    Request(Request),
    /// `response` (PTYPE 2).
    Response(Response),
    /// `fault` (PTYPE 3).
    Fault(Fault),
}

impl PduBody {
    /// The PTYPE of this body.
    #[must_use]
    pub const fn pdu_type(&self) -> PduType {
        match self {
            Self::Bind(_) => PduType::Bind,
            Self::AlterContext(_) => PduType::AlterContext,
            Self::BindAck(_) => PduType::BindAck,
            Self::AlterContextResp(_) => PduType::AlterContextResp,
            Self::BindNak(_) => PduType::BindNak,
            Self::Request(_) => PduType::Request,
            Self::Response(_) => PduType::Response,
            Self::Fault(_) => PduType::Fault,
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            Self::Bind(b) | Self::AlterContext(b) => b.encoded_len(),
            Self::BindAck(a) | Self::AlterContextResp(a) => a.encoded_len(),
            Self::BindNak(n) => n.encoded_len(),
            Self::Request(r) => r.encoded_len(),
            Self::Response(r) => r.encoded_len(),
            Self::Fault(_) => Fault::encoded_len(),
        }
    }
}

/// One connection-oriented PDU: the header fields that vary plus the body.
///
/// On the wire the header also holds the version (5.0), the data
/// representation ([`DREP`], always written as `10 00 00 00`), `frag_length`
/// (computed) and `auth_length` (always 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    /// `call_id`: a host copies the call id of the PDU it answers.
    pub call_id: u32,
    /// `pfc_flags`. For a [`Request`], the [`PfcFlags::OBJECT_UUID`] bit is
    /// written from [`Request::object`] whatever this says.
    pub flags: PfcFlags,
    /// The body.
    pub body: PduBody,
}

impl Pdu {
    /// Decodes exactly one complete PDU.
    ///
    /// `frame` must be the whole PDU: its `frag_length` must equal
    /// `frame.len()` (use [`frame_len`] to cut a stream). Every field is
    /// checked; reserved bytes are ignored.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedVersion`], [`Error::UnsupportedDataRepresentation`],
    /// [`Error::Authenticated`], [`Error::LengthMismatch`],
    /// [`Error::UnknownPduType`], or [`Error::Decode`] naming the field and
    /// its byte offset in `frame` (truncated, over a limit, trailing bytes…).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "fuzzing")]
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use kms_activation::rpc::{Pdu, PduBody, PduType, NCA_S_UNK_IF};
    ///
    /// let bytes = [
    ///     0x05, 0x00, 0x03, 0x23, 0x10, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x02, 0x00,
    ///     0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x01, 0x1c,
    ///     0x00, 0x00, 0x00, 0x00,
    /// ];
    /// let pdu = Pdu::decode(&bytes)?;
    /// assert_eq!(pdu.pdu_type(), PduType::Fault);
    /// assert_eq!(pdu.call_id, 2);
    /// let PduBody::Fault(fault) = &pdu.body else { unreachable!() };
    /// assert_eq!(fault.status, NCA_S_UNK_IF);
    ///
    /// let err = Pdu::decode(&bytes[..31]).unwrap_err();
    /// assert_eq!(err.to_string(), "frag_length 32 does not match the 31-byte frame");
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "fuzzing"))]
    /// # fn main() {}
    /// ```
    pub fn decode(frame: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(frame);
        let header = Header::decode(&mut r)?;
        let frag_length = usize::from(header.frag_length);
        if frag_length < HEADER_LEN {
            return Err(header::frag_length_too_short(header.frag_length).into());
        }
        if frag_length != frame.len() {
            return Err(Error::LengthMismatch {
                frag_length,
                frame_len: frame.len(),
            });
        }
        let body = match header.ptype {
            PduType::Bind => PduBody::Bind(Bind::decode(&mut r)?),
            PduType::AlterContext => PduBody::AlterContext(Bind::decode(&mut r)?),
            PduType::BindAck => PduBody::BindAck(BindAck::decode(&mut r)?),
            PduType::AlterContextResp => PduBody::AlterContextResp(BindAck::decode(&mut r)?),
            PduType::BindNak => PduBody::BindNak(BindNak::decode(&mut r)?),
            PduType::Request => PduBody::Request(Request::decode(&mut r, header.flags)?),
            PduType::Response => PduBody::Response(Response::decode(&mut r)?),
            PduType::Fault => PduBody::Fault(Fault::decode(&mut r)?),
            PduType::Unknown(t) => return Err(Error::UnknownPduType(t)),
        };
        Ok(Self {
            call_id: header.call_id,
            flags: header.flags,
            body,
        })
    }

    /// Appends the PDU to `out`, with `frag_length` computed.
    ///
    /// Never panics; see the [module documentation](self) for how values the
    /// wire cannot express are clamped.
    ///
    /// # Examples
    ///
    /// The fault vlmcsd sends for an unknown context (see the
    /// [fault body](crate::dcerpc#fault-body)):
    ///
    /// ```
    /// # #[cfg(feature = "fuzzing")]
    /// # fn main() {
    /// use bytes::BytesMut;
    /// use kms_activation::rpc::{Fault, Pdu, PduBody, PfcFlags, NCA_S_UNK_IF};
    ///
    /// let pdu = Pdu {
    ///     call_id: 2,
    ///     flags: PfcFlags::SINGLE | PfcFlags::DID_NOT_EXECUTE,
    ///     body: PduBody::Fault(Fault {
    ///         alloc_hint: 32,
    ///         context_id: 0,
    ///         cancel_count: 0,
    ///         status: NCA_S_UNK_IF,
    ///     }),
    /// };
    /// let mut out = BytesMut::new();
    /// pdu.encode(&mut out);
    /// assert_eq!(out.len(), pdu.encoded_len());
    /// assert_eq!(&out[..16], &[5, 0, 3, 0x23, 0x10, 0, 0, 0, 32, 0, 0, 0, 2, 0, 0, 0]);
    /// assert_eq!(Pdu::decode(&out), Ok(pdu));
    /// # }
    /// # #[cfg(not(feature = "fuzzing"))]
    /// # fn main() {}
    /// ```
    pub fn encode(&self, out: &mut BytesMut) {
        let len = self.encoded_len();
        out.reserve(len);
        let header = Header {
            ptype: self.pdu_type(),
            flags: self.wire_flags(),
            frag_length: u16::try_from(len).unwrap_or(u16::MAX),
            call_id: self.call_id,
        };
        header.encode(out);
        match &self.body {
            PduBody::Bind(b) | PduBody::AlterContext(b) => b.encode(out),
            PduBody::BindAck(a) | PduBody::AlterContextResp(a) => a.encode(out),
            PduBody::BindNak(n) => n.encode(out),
            PduBody::Request(r) => r.encode(out),
            PduBody::Response(r) => r.encode(out),
            PduBody::Fault(f) => f.encode(out),
        }
    }

    /// The number of bytes [`Pdu::encode`] appends (its `frag_length`, when
    /// at most [`MAX_FRAG_LEN`]).
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.body.encoded_len())
    }

    /// The PTYPE of this PDU.
    #[must_use]
    pub const fn pdu_type(&self) -> PduType {
        self.body.pdu_type()
    }

    /// The flags as written: for a request, `OBJECT_UUID` follows the object.
    fn wire_flags(&self) -> PfcFlags {
        match &self.body {
            PduBody::Request(r) => self.flags.with(PfcFlags::OBJECT_UUID, r.object.is_some()),
            _ => self.flags,
        }
    }
}

/// Checks a count read at `offset` against `max` and against the bytes left
/// in `r` (each entry at least `min_entry_len` bytes) before anything is
/// allocated for it.
pub(crate) fn bounded_count(
    r: &Reader<'_>,
    offset: usize,
    field: &'static str,
    count: usize,
    max: usize,
    min_entry_len: usize,
) -> Result<usize, Error> {
    if count > max {
        return Err(Error::TooMany {
            field,
            offset,
            count,
            max,
        });
    }
    let need = count.saturating_mul(min_entry_len);
    if need > r.remaining() {
        return Err(DecodeError::new(
            offset,
            field,
            DecodeErrorKind::Truncated {
                need,
                have: r.remaining(),
            },
        )
        .into());
    }
    Ok(count)
}

/// The number of list entries an encoder writes: the count field is a byte.
pub(crate) fn clamp_u8(len: usize) -> (u8, usize) {
    let n = u8::try_from(len).unwrap_or(u8::MAX);
    (n, usize::from(n))
}

/// Appends `n` zero bytes.
pub(crate) fn put_zeros(out: &mut BytesMut, n: usize) {
    out.put_bytes(0, n);
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::OnceLock;

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::HResult;
    use uuid::Uuid;

    /// One TCP read of a captured connection.
    struct Read {
        c2s: bool,
        bytes: Vec<u8>,
    }

    /// Every connection of every vector: (file name, reads).
    fn vectors() -> &'static [(String, Vec<Read>)] {
        static VECTORS: OnceLock<Vec<(String, Vec<Read>)>> = OnceLock::new();
        VECTORS.get_or_init(|| {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
            let mut files: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            files.sort();
            assert!(files.len() >= 7, "vectors missing from {dir}");
            let mut out = Vec::new();
            for path in files {
                let json: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                for conn in json["connections"].as_array().unwrap() {
                    let reads = conn
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| Read {
                            c2s: r["dir"] == "c2s",
                            bytes: hex::decode(r["hex"].as_str().unwrap()).unwrap(),
                        })
                        .collect();
                    out.push((name.clone(), reads));
                }
            }
            out
        })
    }

    fn encode(pdu: &Pdu) -> Vec<u8> {
        let mut out = BytesMut::new();
        pdu.encode(&mut out);
        assert_eq!(out.len(), pdu.encoded_len());
        out.to_vec()
    }

    /// `bytes` with a `bind_ack`'s pad zeroed (vlmcsd leaves stale bytes).
    fn mask_bind_ack_pad(bytes: &[u8]) -> Vec<u8> {
        let mut masked = bytes.to_vec();
        if matches!(bytes[2], 12 | 15) {
            let l = usize::from(u16::from_le_bytes([bytes[24], bytes[25]]));
            let start = 26 + l;
            let pad = (4 - start % 4) % 4;
            masked[start..start + pad].fill(0);
        }
        masked
    }

    #[test]
    fn every_vector_pdu_decodes_and_re_encodes() {
        let mut count = 0;
        let mut stale_pads = 0;
        for (name, reads) in vectors() {
            for read in reads {
                let len = frame_len(&read.bytes, DEFAULT_MAX_FRAG_LEN).unwrap();
                assert_eq!(len, Some(read.bytes.len()), "{name}");
                let pdu = Pdu::decode(&read.bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                let again = encode(&pdu);
                assert_eq!(again, mask_bind_ack_pad(&read.bytes), "{name}: {pdu:?}");
                if again != read.bytes {
                    stale_pads += 1;
                }
                assert_eq!(Pdu::decode(&again).unwrap(), pdu);
                count += 1;
            }
        }
        assert!(count >= 40, "only {count} PDUs");
        assert!(
            stale_pads > 0,
            "the vectors are known to hold stale pad bytes"
        );
    }

    #[test]
    fn negotiate_reproduces_captured_acks() {
        let mut checked = 0;
        for (name, reads) in vectors() {
            let mut offered: Option<Vec<ContextElement>> = None;
            for read in reads {
                match Pdu::decode(&read.bytes).unwrap().body {
                    PduBody::Bind(b) | PduBody::AlterContext(b) => offered = Some(b.contexts),
                    PduBody::BindAck(a) | PduBody::AlterContextResp(a) => {
                        let contexts = offered.take().unwrap();
                        let results = negotiate(&contexts, NegotiationPolicy::default());
                        assert_eq!(results, a.results, "{name}");
                        checked += 1;
                    }
                    _ => {}
                }
            }
        }
        assert!(checked >= 10);
    }

    #[test]
    fn vector_stubs_decode_with_their_context_and_re_encode() {
        let mut errors = Vec::new();
        let mut ndrs = Vec::new();
        for (name, reads) in vectors() {
            let mut table: HashMap<u16, Ndr> = HashMap::new();
            let mut offered = Vec::new();
            let mut call: Option<(u32, Ndr)> = None;
            for read in reads {
                let pdu = Pdu::decode(&read.bytes).unwrap();
                match pdu.body {
                    PduBody::Bind(b) | PduBody::AlterContext(b) => offered = b.contexts,
                    PduBody::BindAck(a) | PduBody::AlterContextResp(a) => {
                        for (c, r) in offered.iter().zip(&a.results) {
                            if let Some(ndr) = r.ndr() {
                                table.insert(c.context_id, ndr);
                            }
                        }
                    }
                    PduBody::Request(req) => {
                        assert!(read.c2s);
                        assert_eq!(req.opnum, 0);
                        assert_eq!(req.alloc_hint as usize, req.stub.len(), "{name}");
                        let ndr = table[&req.context_id];
                        let message = decode_request_stub(ndr, &req.stub).unwrap();
                        assert!(matches!(message.len(), 252 | 260), "{name}");
                        let mut out = BytesMut::new();
                        encode_request_stub(ndr, message, &mut out);
                        assert_eq!(out, req.stub, "{name}");
                        call = Some((pdu.call_id, ndr));
                        ndrs.push(ndr);
                    }
                    PduBody::Response(resp) => {
                        let (call_id, ndr) = call.take().unwrap();
                        assert_eq!(call_id, pdu.call_id);
                        assert_eq!(resp.alloc_hint as usize, resp.stub.len(), "{name}");
                        let reply = decode_response_stub(ndr, &resp.stub).unwrap();
                        if let StubReply::Error(h) = reply {
                            errors.push(h);
                        }
                        assert_eq!(reply.encoded_len(ndr), resp.stub.len());
                        let mut out = BytesMut::new();
                        encode_response_stub(ndr, reply, &mut out);
                        assert_eq!(out, resp.stub, "{name}");
                    }
                    PduBody::BindNak(_) | PduBody::Fault(_) => panic!("{name}: unexpected"),
                }
            }
        }
        errors.sort();
        assert_eq!(errors, [HResult::INVALID_DATA, HResult::KMS_ID_MISMATCH]);
        assert!(ndrs.contains(&Ndr::Ndr32) && ndrs.contains(&Ndr::Ndr64));
    }

    /// Splits `chunks` (one TCP read each) into PDUs the way a host does.
    fn split(chunks: &[&[u8]]) -> Vec<Pdu> {
        let mut buf = Vec::new();
        let mut pdus = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(n) = frame_len(&buf, DEFAULT_MAX_FRAG_LEN).unwrap() {
                if buf.len() < n {
                    break;
                }
                pdus.push(Pdu::decode(&buf[..n]).unwrap());
                buf.drain(..n);
            }
        }
        assert!(buf.is_empty());
        pdus
    }

    #[test]
    fn a_stream_cut_anywhere_yields_the_same_pdus() {
        for (name, reads) in vectors() {
            let stream: Vec<u8> = reads.iter().flat_map(|r| r.bytes.clone()).collect();
            let expected: Vec<Pdu> = reads
                .iter()
                .map(|r| Pdu::decode(&r.bytes).unwrap())
                .collect();
            assert_eq!(split(&[&stream]), expected, "{name}");
            for cut in 0..=stream.len() {
                let (a, b) = stream.split_at(cut);
                assert_eq!(split(&[a, b]), expected, "{name} cut at {cut}");
            }
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            assert_eq!(split(&bytes), expected, "{name} byte by byte");
        }
    }

    #[test]
    fn oversized_frag_length_is_refused_from_the_first_ten_bytes() {
        let mut head = vectors()[0].1[0].bytes[..10].to_vec();
        head[8..10].copy_from_slice(&5841u16.to_le_bytes());
        assert_eq!(
            frame_len(&head, DEFAULT_MAX_FRAG_LEN),
            Err(Error::FrameTooLarge {
                len: 5841,
                max: DEFAULT_MAX_FRAG_LEN
            })
        );
        assert_eq!(frame_len(&head, MAX_FRAG_LEN), Ok(Some(5841)));
    }

    #[test]
    fn fault_encodes_as_protocol_2_7() {
        let pdu = Pdu {
            call_id: 2,
            flags: PfcFlags::SINGLE | PfcFlags::DID_NOT_EXECUTE,
            body: PduBody::Fault(Fault {
                alloc_hint: 32,
                context_id: 0,
                cancel_count: 0,
                status: NCA_S_UNK_IF,
            }),
        };
        assert_eq!(
            hex::encode(encode(&pdu)),
            "05000323100000002000000002000000\
             20000000000000000300011c00000000"
        );
    }

    #[test]
    fn decode_errors_name_field_and_offset() {
        let bind = &vectors()[0].1[0].bytes;
        assert_eq!(
            Pdu::decode(&bind[..bind.len() - 1]),
            Err(Error::LengthMismatch {
                frag_length: bind.len(),
                frame_len: bind.len() - 1
            })
        );
        let mut unknown = bind.clone();
        unknown[2] = 16;
        assert_eq!(Pdu::decode(&unknown), Err(Error::UnknownPduType(16)));
        // A request too short for its fixed fields.
        let req = [
            5, 0, 0, 3, 0x10, 0, 0, 0, 20, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0,
        ];
        assert_eq!(
            Pdu::decode(&req).unwrap_err().to_string(),
            "request.p_cont_id at byte 0x14: truncated (need 2, have 0)"
        );
        // A request with an object UUID.
        let mut obj = vec![5, 0, 0, 0x83, 0x10, 0, 0, 0, 41, 0, 0, 0, 1, 0, 0, 0];
        obj.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        obj.extend_from_slice(&[0xAB; 16]);
        obj.push(0x77);
        let pdu = Pdu::decode(&obj).unwrap();
        let PduBody::Request(r) = &pdu.body else {
            panic!()
        };
        assert_eq!(r.object, Some(crate::guid::from_wire(&[0xAB; 16])));
        assert_eq!(&r.stub[..], &[0x77]);
        assert_eq!(encode(&pdu), obj);
        assert_eq!(
            Error::Stub(DecodeError::new(
                0,
                "stub",
                DecodeErrorKind::Trailing { len: 1 }
            ))
            .fault_status(),
            NCA_S_FAULT_NDR
        );
        assert_eq!(Error::UnknownPduType(16).fault_status(), NCA_S_PROTO_ERROR);
        let top: crate::Error = Error::UnknownPduType(16).into();
        assert_eq!(top.to_string(), "unsupported PDU type 16");
    }

    #[test]
    fn encode_clamps_what_the_wire_cannot_express() {
        let bind = Bind {
            max_xmit_frag: 1,
            max_recv_frag: 1,
            assoc_group_id: 0,
            contexts: vec![
                ContextElement {
                    context_id: 0,
                    abstract_syntax: KMS_INTERFACE,
                    transfer_syntaxes: vec![NDR32; 300],
                };
                2
            ],
        };
        let pdu = Pdu {
            call_id: 1,
            flags: PfcFlags::SINGLE,
            body: PduBody::Bind(bind),
        };
        let bytes = encode(&pdu);
        assert_eq!(bytes.len(), 16 + 12 + 2 * (24 + 255 * 20));
        assert_eq!(bytes[28 + 2], 255);
        let huge = Pdu {
            call_id: 1,
            flags: PfcFlags::SINGLE,
            body: PduBody::Response(Response {
                alloc_hint: 0,
                context_id: 0,
                cancel_count: 0,
                stub: Bytes::from(vec![0; 70_000]),
            }),
        };
        let bytes = encode(&huge);
        assert_eq!(&bytes[8..10], &[0xff, 0xff]);
        assert!(Pdu::decode(&bytes).is_err());
    }

    // --- property tests -------------------------------------------------

    fn arb_uuid() -> impl Strategy<Value = Uuid> {
        prop_oneof![
            Just(KMS_INTERFACE.uuid),
            Just(NDR32.uuid),
            Just(NDR64.uuid),
            any::<u128>().prop_map(Uuid::from_u128),
        ]
    }

    fn arb_syntax() -> impl Strategy<Value = SyntaxId> {
        prop_oneof![
            Just(NDR32),
            Just(NDR64),
            any::<u64>().prop_map(|m| TransferSyntax::BindTimeFeatures(m).to_syntax()),
            (arb_uuid(), any::<u32>()).prop_map(|(uuid, version)| SyntaxId { uuid, version }),
        ]
    }

    fn arb_context() -> impl Strategy<Value = ContextElement> {
        (
            any::<u16>(),
            arb_syntax(),
            prop::collection::vec(arb_syntax(), 0..=MAX_TRANSFER_SYNTAXES),
        )
            .prop_map(
                |(context_id, abstract_syntax, transfer_syntaxes)| ContextElement {
                    context_id,
                    abstract_syntax,
                    transfer_syntaxes,
                },
            )
    }

    fn arb_bind() -> impl Strategy<Value = Bind> {
        (
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            prop::collection::vec(arb_context(), 0..=MAX_CONTEXTS),
        )
            .prop_map(
                |(max_xmit_frag, max_recv_frag, assoc_group_id, contexts)| Bind {
                    max_xmit_frag,
                    max_recv_frag,
                    assoc_group_id,
                    contexts,
                },
            )
    }

    fn arb_result() -> impl Strategy<Value = ContextResult> {
        (any::<u16>(), any::<u16>(), arb_syntax()).prop_map(|(r, reason, transfer_syntax)| {
            ContextResult {
                result: ResultKind::from(r % 5),
                reason,
                transfer_syntax,
            }
        })
    }

    fn arb_bind_ack() -> impl Strategy<Value = BindAck> {
        (
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            prop_oneof![
                prop::collection::vec(b'0'..=b'9', 0..6),
                prop::collection::vec(any::<u8>(), 0..MAX_SECONDARY_ADDR_LEN),
            ],
            prop::collection::vec(arb_result(), 0..=MAX_CONTEXTS),
        )
            .prop_map(
                |(max_xmit_frag, max_recv_frag, assoc_group_id, secondary_address, results)| {
                    BindAck {
                        max_xmit_frag,
                        max_recv_frag,
                        assoc_group_id,
                        secondary_address,
                        results,
                    }
                },
            )
    }

    fn arb_bind_nak() -> impl Strategy<Value = BindNak> {
        (
            any::<u16>(),
            prop::collection::vec(any::<(u8, u8)>(), 0..=MAX_PROTOCOL_VERSIONS),
        )
            .prop_map(|(reject_reason, versions)| BindNak {
                reject_reason,
                versions,
            })
    }

    fn arb_stub() -> impl Strategy<Value = Bytes> {
        prop::collection::vec(any::<u8>(), 0..400).prop_map(Bytes::from)
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        (
            any::<u32>(),
            any::<u16>(),
            any::<u16>(),
            prop::option::of(arb_uuid()),
            arb_stub(),
        )
            .prop_map(|(alloc_hint, context_id, opnum, object, stub)| Request {
                alloc_hint,
                context_id,
                opnum,
                object,
                stub,
            })
    }

    fn arb_response() -> impl Strategy<Value = Response> {
        (any::<u32>(), any::<u16>(), any::<u8>(), arb_stub()).prop_map(
            |(alloc_hint, context_id, cancel_count, stub)| Response {
                alloc_hint,
                context_id,
                cancel_count,
                stub,
            },
        )
    }

    fn arb_fault() -> impl Strategy<Value = Fault> {
        (any::<u32>(), any::<u16>(), any::<u8>(), any::<u32>()).prop_map(
            |(alloc_hint, context_id, cancel_count, status)| Fault {
                alloc_hint,
                context_id,
                cancel_count,
                status,
            },
        )
    }

    fn arb_body() -> impl Strategy<Value = PduBody> {
        prop_oneof![
            arb_bind().prop_map(PduBody::Bind),
            arb_bind().prop_map(PduBody::AlterContext),
            arb_bind_ack().prop_map(PduBody::BindAck),
            arb_bind_ack().prop_map(PduBody::AlterContextResp),
            arb_bind_nak().prop_map(PduBody::BindNak),
            arb_request().prop_map(PduBody::Request),
            arb_response().prop_map(PduBody::Response),
            arb_fault().prop_map(PduBody::Fault),
        ]
    }

    fn arb_pdu() -> impl Strategy<Value = Pdu> {
        (any::<u32>(), any::<u8>(), arb_body()).prop_map(|(call_id, flags, body)| {
            let mut flags = PfcFlags(flags);
            if let PduBody::Request(r) = &body {
                flags = flags.with(PfcFlags::OBJECT_UUID, r.object.is_some());
            }
            Pdu {
                call_id,
                flags,
                body,
            }
        })
    }

    /// A mutation of valid bytes: flips, then a truncation, then maybe a
    /// `frag_length` patched to the new length so the body parsers run.
    fn mutate(bytes: &[u8], flips: &[(usize, u8)], keep: usize, patch: bool) -> Vec<u8> {
        let mut bytes = bytes.to_vec();
        if !bytes.is_empty() {
            let n = bytes.len();
            for &(at, x) in flips {
                bytes[at % n] ^= x;
            }
        }
        bytes.truncate(keep % (bytes.len() + 1));
        if patch && bytes.len() >= 10 {
            let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
            bytes[8..10].copy_from_slice(&len.to_le_bytes());
        }
        bytes
    }

    /// Runs every decoder on `bytes`; they must return, not panic.
    fn decode_everything(bytes: &[u8]) {
        let _ = frame_len(bytes, DEFAULT_MAX_FRAG_LEN);
        let _ = frame_len(bytes, 0);
        if let Ok(pdu) = Pdu::decode(bytes) {
            let again = encode(&pdu);
            assert_eq!(Pdu::decode(&again).unwrap(), pdu);
            if let PduBody::Request(r) = &pdu.body {
                let mut re = Reassembler::new(64);
                let _ = re.push(pdu.call_id, pdu.flags, r.clone());
            }
        }
        for ndr in [Ndr::Ndr32, Ndr::Ndr64] {
            let _ = decode_request_stub(ndr, bytes);
            let _ = decode_response_stub(ndr, bytes);
            if let Some(stub) = bytes.get(24..) {
                let _ = decode_request_stub(ndr, stub);
                let _ = decode_response_stub(ndr, stub);
            }
        }
    }

    proptest! {
        #[test]
        fn pdu_round_trip(pdu in arb_pdu()) {
            let bytes = encode(&pdu);
            prop_assert_eq!(frame_len(&bytes, MAX_FRAG_LEN).unwrap(), Some(bytes.len()));
            let decoded = Pdu::decode(&bytes).unwrap();
            prop_assert_eq!(&decoded, &pdu);
            prop_assert_eq!(encode(&decoded), bytes);
        }

        #[test]
        fn stub_round_trip(message in prop::collection::vec(any::<u8>(), 0..600),
                           hresult in any::<u32>(), ndr64 in any::<bool>()) {
            let ndr = if ndr64 { Ndr::Ndr64 } else { Ndr::Ndr32 };
            let mut out = BytesMut::new();
            encode_request_stub(ndr, &message, &mut out);
            prop_assert_eq!(decode_request_stub(ndr, &out).unwrap(), &message[..]);
            for reply in [StubReply::Message(&message), StubReply::Error(HResult::new(hresult))] {
                out.clear();
                encode_response_stub(ndr, reply, &mut out);
                prop_assert_eq!(out.len(), reply.encoded_len(ndr));
                prop_assert_eq!(decode_response_stub(ndr, &out).unwrap(), reply);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            decode_everything(&bytes);
            let mut with_header = vec![5, 0, bytes.first().copied().unwrap_or(0) % 16, 3, 0x10, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
            with_header.extend_from_slice(&bytes);
            let len = u16::try_from(with_header.len()).unwrap();
            with_header[8..10].copy_from_slice(&len.to_le_bytes());
            decode_everything(&with_header);
        }

        #[test]
        fn mutated_pdus_never_panic(pdu in arb_pdu(),
                                    flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
                                    keep in any::<usize>(), patch in any::<bool>()) {
            decode_everything(&mutate(&encode(&pdu), &flips, keep, patch));
        }

        #[test]
        fn mutated_vectors_never_panic(pick in any::<prop::sample::Index>(),
                                       flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
                                       keep in any::<usize>(), patch in any::<bool>()) {
            let all: Vec<&Read> = vectors().iter().flat_map(|(_, r)| r).collect();
            let read = pick.get(&all);
            decode_everything(&mutate(&read.bytes, &flips, keep, patch));
        }
    }
}
