//! DCE/RPC connection-oriented PDUs, as KMS uses them (PROTOCOL.md §1–3).
//!
//! This layer knows the RPC framing and the NDR stubs of the one KMS
//! operation (`RequestActivation`), but nothing of the KMS messages inside
//! them; those are opaque bytes here.
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
//! [`Error::fault_status`] maps each error to the `nca_s_*` status a host
//! puts in a fault PDU, as rustls maps its errors to alerts.

mod bind;
mod call;
mod frame;
mod header;
mod ndr;

use bytes::{BufMut, BytesMut};

pub use bind::{
    Bind, BindAck, BindNak, ContextElement, ContextResult, KMS_INTERFACE, NDR32, NDR64,
    NegotiationPolicy, ResultKind, SyntaxId, TransferSyntax, negotiate,
};
pub use call::{Fault, Reassembler, Request, Response};
pub use frame::frame_len;
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
/// (an NDR64 V6 response, PROTOCOL.md §2.9), which leaves ample room.
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
    /// `frag_length` does not match the length of the frame handed to
    /// [`Pdu::decode`].
    #[error("frag_length {frag_length} does not match the {frame_len}-byte frame")]
    LengthMismatch {
        /// The `frag_length` field.
        frag_length: usize,
        /// The bytes handed in.
        frame_len: usize,
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
    #[error("stub: {0}")]
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
    pub const fn fault_status(&self) -> u32 {
        match self {
            Self::Stub(_) | Self::StubSizeMismatch { .. } => NCA_S_FAULT_NDR,
            Self::Decode(_)
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
    /// # Ok::<(), kms_activation::rpc::Error>(())
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
    /// The fault vlmcsd sends for an unknown context (PROTOCOL.md §2.7):
    ///
    /// ```
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
) -> Result<usize, DecodeError> {
    if count > max {
        return Err(DecodeError::new(
            offset,
            field,
            DecodeErrorKind::TooLarge { len: count, max },
        ));
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
        ));
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
