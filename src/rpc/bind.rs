//! bind / `alter_context`, their acks, `bind_nak`, syntax identifiers and the
//! host's presentation-context negotiation (see
//! [bind and `alter_context`](crate::dcerpc#bind-and-alter_context) and
//! [context negotiation](crate::dcerpc#context-negotiation)).

use bytes::{BufMut, BytesMut};
use uuid::Uuid;

use super::{
    Error, MAX_CONTEXTS, MAX_PROTOCOL_VERSIONS, MAX_SECONDARY_ADDR_LEN, MAX_TRANSFER_SYNTAXES, Ndr,
    bounded_count, clamp_u8, put_zeros,
};
use crate::guid;
use crate::wire::{DecodeError, DecodeErrorKind, Reader};

/// Bytes of a syntax identifier on the wire: GUID + u32 version.
const SYNTAX_LEN: usize = 20;
/// Bytes of a context element before its transfer syntaxes.
const CONTEXT_HEAD_LEN: usize = 4 + SYNTAX_LEN;
/// Bytes of one context result.
const RESULT_LEN: usize = 4 + SYNTAX_LEN;
/// Bytes of a bind body before the context list.
const BIND_HEAD_LEN: usize = 12;
/// Bytes of a `bind_ack` body before the secondary address.
const ACK_HEAD_LEN: usize = 10;
/// PDU offset of the `bind_ack`'s secondary address (after its u16 length).
const SEC_ADDR_OFFSET: usize = 26;

/// An interface or transfer syntax: a UUID and a version (`p_syntax_id_t`).
///
/// On the wire: the GUID in its mixed-endian order, then a u32 version. For
/// an interface the major version is in the low u16 and the minor in the
/// high u16; a transfer syntax has a plain u32 version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SyntaxId {
    /// The syntax UUID.
    pub uuid: Uuid,
    /// The version as a u32.
    pub version: u32,
}

impl SyntaxId {
    /// The all-zero syntax that rejections and `negotiate_acks` carry.
    pub const NIL: Self = Self {
        uuid: Uuid::nil(),
        version: 0,
    };

    /// An interface syntax with a major and minor version.
    #[must_use]
    pub const fn interface(uuid: Uuid, major: u16, minor: u16) -> Self {
        Self {
            uuid,
            version: ((minor as u32) << 16) | major as u32,
        }
    }

    /// The interface major version (low u16 of [`SyntaxId::version`]).
    #[must_use]
    pub const fn major(&self) -> u16 {
        (self.version & 0xFFFF) as u16
    }

    /// The interface minor version (high u16 of [`SyntaxId::version`]).
    #[must_use]
    pub const fn minor(&self) -> u16 {
        (self.version >> 16) as u16
    }

    fn decode(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
        let uuid = r.guid(field)?;
        let version = r.u32(field)?;
        Ok(Self { uuid, version })
    }

    fn encode(&self, out: &mut BytesMut) {
        out.put_slice(&guid::to_wire(&self.uuid));
        out.put_u32_le(self.version);
    }
}

/// The KMS interface, `51c82175-844e-4750-b0d8-ec255555bc06` version 1.0.
pub const KMS_INTERFACE: SyntaxId = SyntaxId::interface(
    Uuid::from_u128(0x51c8_2175_844e_4750_b0d8_ec25_5555_bc06),
    1,
    0,
);

/// The NDR 2.0 transfer syntax (`8a885d04-1ceb-11c9-9fe8-08002b104860` v2).
pub const NDR32: SyntaxId = SyntaxId {
    uuid: Uuid::from_u128(0x8a88_5d04_1ceb_11c9_9fe8_0800_2b10_4860),
    version: 2,
};

/// The NDR64 transfer syntax (`71710533-beba-4937-8319-b5dbef9ccc36` v1,
/// MS-RPCE §2.2.5).
pub const NDR64: SyntaxId = SyntaxId {
    uuid: Uuid::from_u128(0x7171_0533_beba_4937_8319_b5db_ef9c_cc36),
    version: 1,
};

/// The first 8 wire bytes of a bind-time feature negotiation UUID
/// (`6cb71c2c-9812-4540-…`, MS-RPCE §3.3.1.5.3).
const BTFN_PREFIX: [u8; 8] = [0x2c, 0x1c, 0xb7, 0x6c, 0x12, 0x98, 0x40, 0x45];
/// The version of a bind-time feature negotiation syntax.
const BTFN_VERSION: u32 = 1;

/// What a transfer syntax identifier means.
///
/// `from_syntax` and `to_syntax` are inverse: every [`SyntaxId`] survives the
/// round trip (anything not recognised exactly, version included, is
/// [`TransferSyntax::Other`]).
///
/// ```
/// # #[cfg(feature = "fuzzing")]
/// # fn main() {
/// use kms_activation::rpc::{NDR64, TransferSyntax};
///
/// assert_eq!(TransferSyntax::from_syntax(&NDR64), TransferSyntax::Ndr64);
/// let btfn = TransferSyntax::BindTimeFeatures(3).to_syntax();
/// assert_eq!(btfn.uuid.to_string(), "6cb71c2c-9812-4540-0300-000000000000");
/// assert_eq!(TransferSyntax::from_syntax(&btfn), TransferSyntax::BindTimeFeatures(3));
/// # }
/// # #[cfg(not(feature = "fuzzing"))]
/// # fn main() {}
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferSyntax {
    /// NDR 2.0 ([`NDR32`]).
    Ndr32,
    /// NDR64 ([`NDR64`]).
    Ndr64,
    /// Bind-time feature negotiation with the requested feature bitmask
    /// (0x1 security-context multiplexing, 0x2 keep connection on orphan).
    BindTimeFeatures(u64),
    /// Anything else.
    Other(SyntaxId),
}

impl TransferSyntax {
    /// Classifies a syntax identifier.
    #[must_use]
    pub fn from_syntax(syntax: &SyntaxId) -> Self {
        if *syntax == NDR32 {
            return Self::Ndr32;
        }
        if *syntax == NDR64 {
            return Self::Ndr64;
        }
        let wire = guid::to_wire(&syntax.uuid);
        if let Some((head, tail)) = wire.split_first_chunk::<8>()
            && *head == BTFN_PREFIX
            && syntax.version == BTFN_VERSION
            && let Ok(mask) = <[u8; 8]>::try_from(tail)
        {
            return Self::BindTimeFeatures(u64::from_le_bytes(mask));
        }
        Self::Other(*syntax)
    }

    /// The syntax identifier that carries this meaning.
    #[must_use]
    pub fn to_syntax(self) -> SyntaxId {
        match self {
            Self::Ndr32 => NDR32,
            Self::Ndr64 => NDR64,
            Self::BindTimeFeatures(mask) => {
                let mut wire = [0u8; guid::GUID_LEN];
                for (dst, src) in wire
                    .iter_mut()
                    .zip(BTFN_PREFIX.iter().chain(mask.to_le_bytes().iter()))
                {
                    *dst = *src;
                }
                SyntaxId {
                    uuid: guid::from_wire(&wire),
                    version: BTFN_VERSION,
                }
            }
            Self::Other(s) => s,
        }
    }

    /// The NDR flavour, for the two data representations.
    #[must_use]
    pub const fn ndr(&self) -> Option<Ndr> {
        match self {
            Self::Ndr32 => Some(Ndr::Ndr32),
            Self::Ndr64 => Some(Ndr::Ndr64),
            Self::BindTimeFeatures(_) | Self::Other(_) => None,
        }
    }
}

impl From<Ndr> for TransferSyntax {
    fn from(ndr: Ndr) -> Self {
        match ndr {
            Ndr::Ndr32 => Self::Ndr32,
            Ndr::Ndr64 => Self::Ndr64,
        }
    }
}

/// One presentation context proposed in a bind or `alter_context`
/// (`p_cont_elem_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextElement {
    /// `p_cont_id`: the id requests use to name this context.
    pub context_id: u16,
    /// The interface ([`KMS_INTERFACE`] for KMS).
    pub abstract_syntax: SyntaxId,
    /// The transfer syntaxes offered, in order of preference (one in
    /// practice; several are accepted, up to [`MAX_TRANSFER_SYNTAXES`]).
    pub transfer_syntaxes: Vec<SyntaxId>,
}

impl ContextElement {
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let context_id = r.u16("bind.p_cont_id")?;
        let count_at = r.offset();
        let n = r.u8("bind.n_transfer_syn")?;
        r.skip(1, "bind.reserved")?;
        let abstract_syntax = SyntaxId::decode(r, "bind.abstract_syntax")?;
        let n = bounded_count(
            r,
            count_at,
            "bind.n_transfer_syn",
            usize::from(n),
            MAX_TRANSFER_SYNTAXES,
            SYNTAX_LEN,
        )?;
        let mut transfer_syntaxes = Vec::with_capacity(n);
        for _ in 0..n {
            transfer_syntaxes.push(SyntaxId::decode(r, "bind.transfer_syntax")?);
        }
        Ok(Self {
            context_id,
            abstract_syntax,
            transfer_syntaxes,
        })
    }

    fn encoded_len(&self) -> usize {
        let (_, n) = clamp_u8(self.transfer_syntaxes.len());
        CONTEXT_HEAD_LEN.saturating_add(n.saturating_mul(SYNTAX_LEN))
    }

    fn encode(&self, out: &mut BytesMut) {
        let (count, n) = clamp_u8(self.transfer_syntaxes.len());
        out.put_u16_le(self.context_id);
        out.put_u8(count);
        out.put_u8(0);
        self.abstract_syntax.encode(out);
        for syntax in self.transfer_syntaxes.iter().take(n) {
            syntax.encode(out);
        }
    }
}

/// The body of a bind or `alter_context`
/// ([layout](crate::dcerpc#bind-and-alter_context)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Largest fragment the client sends (vlmcs: 5840).
    pub max_xmit_frag: u16,
    /// Largest fragment the client receives (vlmcs: 5840).
    pub max_recv_frag: u16,
    /// Association group; clients send 0.
    pub assoc_group_id: u32,
    /// The proposed contexts (at most [`MAX_CONTEXTS`] decode).
    pub contexts: Vec<ContextElement>,
}

impl Bind {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let max_xmit_frag = r.u16("bind.max_xmit_frag")?;
        let max_recv_frag = r.u16("bind.max_recv_frag")?;
        let assoc_group_id = r.u32("bind.assoc_group_id")?;
        let count_at = r.offset();
        let n = r.u8("bind.n_context_elem")?;
        r.skip(3, "bind.reserved")?;
        let n = bounded_count(
            r,
            count_at,
            "bind.n_context_elem",
            usize::from(n),
            MAX_CONTEXTS,
            CONTEXT_HEAD_LEN,
        )?;
        let mut contexts = Vec::with_capacity(n);
        for _ in 0..n {
            contexts.push(ContextElement::decode(r)?);
        }
        r.finish("bind")?;
        Ok(Self {
            max_xmit_frag,
            max_recv_frag,
            assoc_group_id,
            contexts,
        })
    }

    pub(crate) fn encoded_len(&self) -> usize {
        let (_, n) = clamp_u8(self.contexts.len());
        self.contexts
            .iter()
            .take(n)
            .fold(BIND_HEAD_LEN, |acc, c| acc.saturating_add(c.encoded_len()))
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        let (count, n) = clamp_u8(self.contexts.len());
        out.put_u16_le(self.max_xmit_frag);
        out.put_u16_le(self.max_recv_frag);
        out.put_u32_le(self.assoc_group_id);
        out.put_u8(count);
        put_zeros(out, 3);
        for context in self.contexts.iter().take(n) {
            context.encode(out);
        }
    }
}

/// The `result` of one presentation context (`p_cont_def_result_t`).
///
/// ```
/// # #[cfg(feature = "fuzzing")]
/// # fn main() {
/// use kms_activation::rpc::ResultKind;
///
/// assert_eq!(ResultKind::from(3), ResultKind::NegotiateAck);
/// assert_eq!(u16::from(ResultKind::Unknown(9)), 9);
/// # }
/// # #[cfg(not(feature = "fuzzing"))]
/// # fn main() {}
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultKind {
    /// 0: the context is accepted with the transfer syntax given.
    Acceptance,
    /// 1: rejected by the user (server application).
    UserRejection,
    /// 2: rejected by the RPC runtime; the reason says why.
    ProviderRejection,
    /// 3: the answer to a bind-time feature negotiation (MS-RPCE
    /// §2.2.2.4); the reason holds the accepted feature bitmask.
    NegotiateAck,
    /// Any other value.
    Unknown(u16),
}

impl From<u16> for ResultKind {
    fn from(value: u16) -> Self {
        match value {
            0 => Self::Acceptance,        // C706 §12.6.3.1 p_cont_def_result_t
            1 => Self::UserRejection,     // C706 §12.6.3.1
            2 => Self::ProviderRejection, // C706 §12.6.3.1
            3 => Self::NegotiateAck,      // MS-RPCE §2.2.2.4
            other => Self::Unknown(other),
        }
    }
}

impl From<ResultKind> for u16 {
    fn from(value: ResultKind) -> Self {
        match value {
            ResultKind::Acceptance => 0,
            ResultKind::UserRejection => 1,
            ResultKind::ProviderRejection => 2,
            ResultKind::NegotiateAck => 3,
            ResultKind::Unknown(other) => other,
        }
    }
}

/// The answer to one proposed context (`p_result_t`, 24 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextResult {
    /// Accepted, rejected, or `negotiate_ack`.
    pub result: ResultKind,
    /// For rejections: 0 not specified, 1 abstract syntax not supported,
    /// 2 transfer syntaxes not supported, 3 local limit exceeded. For a
    /// `negotiate_ack`: the accepted feature bitmask. 0 for acceptance.
    pub reason: u16,
    /// The accepted transfer syntax; [`SyntaxId::NIL`] otherwise.
    pub transfer_syntax: SyntaxId,
}

impl ContextResult {
    /// Reason code: the abstract syntax (interface) is not supported.
    pub const REASON_ABSTRACT_SYNTAX: u16 = 1;
    /// Reason code: none of the proposed transfer syntaxes is supported.
    pub const REASON_TRANSFER_SYNTAXES: u16 = 2;

    /// An acceptance of `syntax`.
    #[must_use]
    pub const fn accept(syntax: SyntaxId) -> Self {
        Self {
            result: ResultKind::Acceptance,
            reason: 0,
            transfer_syntax: syntax,
        }
    }

    /// A provider rejection with `reason`.
    #[must_use]
    pub const fn reject(reason: u16) -> Self {
        Self {
            result: ResultKind::ProviderRejection,
            reason,
            transfer_syntax: SyntaxId::NIL,
        }
    }

    /// The NDR flavour the context now uses, if it was accepted with one.
    #[must_use]
    pub fn ndr(&self) -> Option<Ndr> {
        match self.result {
            ResultKind::Acceptance => TransferSyntax::from_syntax(&self.transfer_syntax).ndr(),
            _ => None,
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let result = ResultKind::from(r.u16("bind_ack.result")?);
        let reason = r.u16("bind_ack.reason")?;
        let transfer_syntax = SyntaxId::decode(r, "bind_ack.transfer_syntax")?;
        Ok(Self {
            result,
            reason,
            transfer_syntax,
        })
    }

    fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(self.result.into());
        out.put_u16_le(self.reason);
        self.transfer_syntax.encode(out);
    }
}

/// The body of a `bind_ack` or `alter_context_resp`
/// ([layout](crate::dcerpc#bind-acknowledgement)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindAck {
    /// Echo of the bind's `max_xmit_frag`.
    pub max_xmit_frag: u16,
    /// Echo of the bind's `max_recv_frag`.
    pub max_recv_frag: u16,
    /// Host-chosen association group, non-zero.
    pub assoc_group_id: u32,
    /// The secondary address (the host's port as ASCII, e.g. `b"1688"`)
    /// **without** its trailing NUL; empty in an `alter_context_resp`, where
    /// the wire length is 0. At most [`MAX_SECONDARY_ADDR_LEN`] − 1 bytes
    /// decode.
    pub secondary_address: Vec<u8>,
    /// One result per proposed context, in order.
    pub results: Vec<ContextResult>,
}

impl BindAck {
    /// The address bytes written: the u16 length field must also count
    /// the NUL.
    fn written_address(&self) -> &[u8] {
        let max = usize::from(u16::MAX).saturating_sub(1);
        self.secondary_address
            .get(..max)
            .unwrap_or(&self.secondary_address)
    }

    /// The wire length of the secondary address, NUL included (0 if empty).
    fn address_wire_len(&self) -> usize {
        match self.written_address().len() {
            0 => 0,
            n => n.saturating_add(1),
        }
    }

    /// Pad after the address so that `n_results` sits at a PDU offset
    /// divisible by 4.
    fn pad_len(address_wire_len: usize) -> usize {
        SEC_ADDR_OFFSET
            .saturating_add(address_wire_len)
            .wrapping_neg()
            & 3
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let max_xmit_frag = r.u16("bind_ack.max_xmit_frag")?;
        let max_recv_frag = r.u16("bind_ack.max_recv_frag")?;
        let assoc_group_id = r.u32("bind_ack.assoc_group_id")?;
        let len_at = r.offset();
        let len = usize::from(r.u16("bind_ack.sec_addr_length")?);
        if len > MAX_SECONDARY_ADDR_LEN {
            return Err(DecodeError::new(
                len_at,
                "bind_ack.sec_addr_length",
                DecodeErrorKind::TooLarge {
                    len,
                    max: MAX_SECONDARY_ADDR_LEN,
                },
            )
            .into());
        }
        let addr_at = r.offset();
        let address = r.take(len, "bind_ack.sec_addr")?;
        let secondary_address = match address.split_last() {
            None => Vec::new(),
            Some((0, text)) => text.to_vec(),
            Some((&last, text)) => {
                return Err(Reader::invalid_at(
                    addr_at.saturating_add(text.len()),
                    "bind_ack.sec_addr",
                    u64::from(last),
                )
                .into());
            }
        };
        // Pad content is unspecified (vlmcsd leaves stale bytes): skip it.
        r.skip(Self::pad_len(len), "bind_ack.pad")?;
        let count_at = r.offset();
        let n = r.u8("bind_ack.n_results")?;
        r.skip(3, "bind_ack.reserved")?;
        let n = bounded_count(
            r,
            count_at,
            "bind_ack.n_results",
            usize::from(n),
            MAX_CONTEXTS,
            RESULT_LEN,
        )?;
        let mut results = Vec::with_capacity(n);
        for _ in 0..n {
            results.push(ContextResult::decode(r)?);
        }
        r.finish("bind_ack")?;
        Ok(Self {
            max_xmit_frag,
            max_recv_frag,
            assoc_group_id,
            secondary_address,
            results,
        })
    }

    pub(crate) fn encoded_len(&self) -> usize {
        let addr = self.address_wire_len();
        let (_, n) = clamp_u8(self.results.len());
        ACK_HEAD_LEN
            .saturating_add(addr)
            .saturating_add(Self::pad_len(addr))
            .saturating_add(4)
            .saturating_add(n.saturating_mul(RESULT_LEN))
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        let addr_len = self.address_wire_len();
        let (count, n) = clamp_u8(self.results.len());
        out.put_u16_le(self.max_xmit_frag);
        out.put_u16_le(self.max_recv_frag);
        out.put_u32_le(self.assoc_group_id);
        out.put_u16_le(u16::try_from(addr_len).unwrap_or(u16::MAX));
        if addr_len > 0 {
            out.put_slice(self.written_address());
            out.put_u8(0);
        }
        put_zeros(out, Self::pad_len(addr_len));
        out.put_u8(count);
        put_zeros(out, 3);
        for result in self.results.iter().take(n) {
            result.encode(out);
        }
    }
}

/// The body of a `bind_nak` ([layout](crate::dcerpc#bind-refusal)).
///
/// Decoding ignores anything after the version list (MS-RPCE allows a pad,
/// a signature and extended error information there); encoding writes the
/// list and zero-pads the PDU to a multiple of 4 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindNak {
    /// `provider_reject_reason`: 0 not specified, 1 temporary congestion,
    /// 2 local limit exceeded, 4 protocol version not supported, …
    pub reject_reason: u16,
    /// The supported protocol versions as (major, minor), e.g. `[(5, 0)]`
    /// (at most [`MAX_PROTOCOL_VERSIONS`] decode).
    pub versions: Vec<(u8, u8)>,
}

impl BindNak {
    /// `reject_reason`: protocol version not supported.
    pub const REASON_PROTOCOL_VERSION: u16 = 4;

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let reject_reason = r.u16("bind_nak.provider_reject_reason")?;
        let count_at = r.offset();
        let n = r.u8("bind_nak.n_protocols")?;
        let n = bounded_count(
            r,
            count_at,
            "bind_nak.n_protocols",
            usize::from(n),
            MAX_PROTOCOL_VERSIONS,
            2,
        )?;
        let mut versions = Vec::with_capacity(n);
        for _ in 0..n {
            let major = r.u8("bind_nak.protocol_major")?;
            let minor = r.u8("bind_nak.protocol_minor")?;
            versions.push((major, minor));
        }
        r.take_rest();
        Ok(Self {
            reject_reason,
            versions,
        })
    }

    fn unpadded_len(&self) -> usize {
        let (_, n) = clamp_u8(self.versions.len());
        3usize.saturating_add(n.saturating_mul(2))
    }

    fn pad_len(&self) -> usize {
        // The body starts at PDU offset 16, a multiple of 4.
        self.unpadded_len().wrapping_neg() & 3
    }

    pub(crate) fn encoded_len(&self) -> usize {
        self.unpadded_len().saturating_add(self.pad_len())
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        let (count, n) = clamp_u8(self.versions.len());
        out.put_u16_le(self.reject_reason);
        out.put_u8(count);
        for &(major, minor) in self.versions.iter().take(n) {
            out.put_u8(major);
            out.put_u8(minor);
        }
        put_zeros(out, self.pad_len());
    }
}

/// What the host supports when it answers presentation contexts.
///
/// `Default` enables both, as vlmcsd does by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiationPolicy {
    /// The host accepts NDR64 (and then rejects NDR32 offered alongside it).
    pub ndr64: bool,
    /// The host answers bind-time feature negotiation.
    pub btfn: bool,
}

impl Default for NegotiationPolicy {
    fn default() -> Self {
        Self {
            ndr64: true,
            btfn: true,
        }
    }
}

/// The bind-time features a host grants: the two MS-RPCE defines.
const BTFN_KNOWN_FEATURES: u64 = 0x3;

/// Answers each proposed context of a bind or `alter_context`, in order
/// (the [context negotiation](crate::dcerpc#context-negotiation) of Windows ≥ 8
/// hosts, as vlmcsd emulates it).
///
/// * Abstract syntax other than the KMS UUID, or interface major version
///   other than 1: provider rejection, reason 1.
/// * Otherwise the first acceptable transfer syntax of the element wins:
///   - NDR64, when `policy.ndr64`: accepted;
///   - NDR32: accepted, **unless** `policy.ndr64` and some element of the
///     same PDU with the KMS interface (major 1) offers NDR64;
///   - bind-time feature negotiation, when `policy.btfn`: `negotiate_ack` with
///     reason = requested bitmask AND 3.
/// * No acceptable syntax: provider rejection, reason 2.
///
/// # Examples
///
/// What vlmcs offers and vlmcsd answers:
///
/// ```
/// # #[cfg(feature = "fuzzing")]
/// # fn main() {
/// use kms_activation::rpc::{
///     negotiate, ContextElement, ContextResult, NegotiationPolicy, ResultKind, TransferSyntax,
///     KMS_INTERFACE, NDR32, NDR64,
/// };
///
/// let offer = |id, syntax| ContextElement {
///     context_id: id,
///     abstract_syntax: KMS_INTERFACE,
///     transfer_syntaxes: vec![syntax],
/// };
/// let contexts = [
///     offer(0, NDR32),
///     offer(1, NDR64),
///     offer(2, TransferSyntax::BindTimeFeatures(3).to_syntax()),
/// ];
/// let results = negotiate(&contexts, NegotiationPolicy::default());
/// assert_eq!(results[0], ContextResult::reject(2));
/// assert_eq!(results[1], ContextResult::accept(NDR64));
/// assert_eq!((results[2].result, results[2].reason), (ResultKind::NegotiateAck, 3));
///
/// // The follow-up `alter_context` offers NDR32 alone: accepted.
/// let results = negotiate(&[offer(0, NDR32)], NegotiationPolicy::default());
/// assert_eq!(results, [ContextResult::accept(NDR32)]);
/// # }
/// # #[cfg(not(feature = "fuzzing"))]
/// # fn main() {}
/// ```
#[must_use]
pub fn negotiate(contexts: &[ContextElement], policy: NegotiationPolicy) -> Vec<ContextResult> {
    let is_kms = |c: &ContextElement| {
        c.abstract_syntax.uuid == KMS_INTERFACE.uuid
            && c.abstract_syntax.major() == KMS_INTERFACE.major()
    };
    let ndr64_offered = policy.ndr64
        && contexts.iter().filter(|c| is_kms(c)).any(|c| {
            c.transfer_syntaxes
                .iter()
                .any(|s| TransferSyntax::from_syntax(s) == TransferSyntax::Ndr64)
        });
    contexts
        .iter()
        .map(|c| {
            if !is_kms(c) {
                return ContextResult::reject(ContextResult::REASON_ABSTRACT_SYNTAX);
            }
            c.transfer_syntaxes
                .iter()
                .find_map(|s| match TransferSyntax::from_syntax(s) {
                    TransferSyntax::Ndr64 if policy.ndr64 => Some(ContextResult::accept(NDR64)),
                    TransferSyntax::Ndr32 if !ndr64_offered => Some(ContextResult::accept(NDR32)),
                    TransferSyntax::BindTimeFeatures(mask) if policy.btfn => Some(ContextResult {
                        result: ResultKind::NegotiateAck,
                        reason: u16::try_from(mask & BTFN_KNOWN_FEATURES).unwrap_or(0),
                        transfer_syntax: SyntaxId::NIL,
                    }),
                    _ => None,
                })
                .unwrap_or(ContextResult::reject(
                    ContextResult::REASON_TRANSFER_SYNTAXES,
                ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{Pdu, PduBody, PfcFlags};

    fn kms(id: u16, syntaxes: &[SyntaxId]) -> ContextElement {
        ContextElement {
            context_id: id,
            abstract_syntax: KMS_INTERFACE,
            transfer_syntaxes: syntaxes.to_vec(),
        }
    }

    #[test]
    fn syntax_constants_match_protocol_wire_bytes() {
        assert_eq!(
            guid::to_wire(&KMS_INTERFACE.uuid),
            [
                0x75, 0x21, 0xc8, 0x51, 0x4e, 0x84, 0x50, 0x47, 0xb0, 0xd8, 0xec, 0x25, 0x55, 0x55,
                0xbc, 0x06
            ]
        );
        assert_eq!(KMS_INTERFACE.version, 1);
        assert_eq!((KMS_INTERFACE.major(), KMS_INTERFACE.minor()), (1, 0));
        assert_eq!(
            guid::to_wire(&NDR32.uuid),
            [
                0x04, 0x5d, 0x88, 0x8a, 0xeb, 0x1c, 0xc9, 0x11, 0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10,
                0x48, 0x60
            ]
        );
        assert_eq!(
            guid::to_wire(&NDR64.uuid),
            [
                0x33, 0x05, 0x71, 0x71, 0xba, 0xbe, 0x37, 0x49, 0x83, 0x19, 0xb5, 0xdb, 0xef, 0x9c,
                0xcc, 0x36
            ]
        );
        let btfn = TransferSyntax::BindTimeFeatures(3).to_syntax();
        assert_eq!(
            guid::to_wire(&btfn.uuid),
            [
                0x2c, 0x1c, 0xb7, 0x6c, 0x12, 0x98, 0x40, 0x45, 3, 0, 0, 0, 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn transfer_syntax_classification_needs_exact_version() {
        let old_ndr = SyntaxId {
            version: 1,
            ..NDR32
        };
        assert_eq!(
            TransferSyntax::from_syntax(&old_ndr),
            TransferSyntax::Other(old_ndr)
        );
        let btfn_v2 = SyntaxId {
            version: 2,
            ..TransferSyntax::BindTimeFeatures(1).to_syntax()
        };
        assert_eq!(
            TransferSyntax::from_syntax(&btfn_v2),
            TransferSyntax::Other(btfn_v2)
        );
    }

    #[test]
    fn negotiation_rules() {
        let btfn = TransferSyntax::BindTimeFeatures(0xFF).to_syntax();
        let all = NegotiationPolicy::default();
        let ndr32_only = NegotiationPolicy {
            ndr64: false,
            btfn: false,
        };
        // NDR64-only host answers of the negotiation rules.
        assert_eq!(
            negotiate(
                &[kms(0, &[NDR32]), kms(1, &[NDR64]), kms(2, &[btfn])],
                ndr32_only
            ),
            [
                ContextResult::accept(NDR32),
                ContextResult::reject(2),
                ContextResult::reject(2)
            ]
        );
        // BTFN mask is ANDed with 3.
        let r = negotiate(&[kms(2, &[btfn])], all);
        assert_eq!((r[0].result, r[0].reason), (ResultKind::NegotiateAck, 3));
        // Wrong interface or major version: reason 1.
        let mut other = kms(0, &[NDR32]);
        other.abstract_syntax = SyntaxId::interface(Uuid::from_u128(7), 1, 0);
        let mut v2 = kms(1, &[NDR32]);
        v2.abstract_syntax = SyntaxId::interface(KMS_INTERFACE.uuid, 2, 0);
        let mut minor = kms(2, &[NDR32]);
        minor.abstract_syntax = SyntaxId::interface(KMS_INTERFACE.uuid, 1, 3);
        assert_eq!(
            negotiate(&[other, v2, minor], all),
            [
                ContextResult::reject(1),
                ContextResult::reject(1),
                ContextResult::accept(NDR32)
            ]
        );
        // Several transfer syntaxes: the first acceptable one; NDR32 loses to
        // NDR64 in the same element.
        let unknown = SyntaxId::interface(Uuid::from_u128(9), 1, 0);
        assert_eq!(
            negotiate(&[kms(0, &[unknown, NDR32, NDR64])], all),
            [ContextResult::accept(NDR64)]
        );
        assert_eq!(
            negotiate(&[kms(0, &[unknown, NDR32, NDR64])], ndr32_only),
            [ContextResult::accept(NDR32)]
        );
        // An NDR64 offer under a foreign interface does not block NDR32.
        let mut foreign64 = kms(1, &[NDR64]);
        foreign64.abstract_syntax.uuid = Uuid::from_u128(5);
        assert_eq!(
            negotiate(&[kms(0, &[NDR32]), foreign64], all),
            [ContextResult::accept(NDR32), ContextResult::reject(1)]
        );
        // No transfer syntax at all.
        assert_eq!(negotiate(&[kms(0, &[])], all), [ContextResult::reject(2)]);
        assert_eq!(ContextResult::accept(NDR64).ndr(), Some(Ndr::Ndr64));
        assert_eq!(ContextResult::reject(2).ndr(), None);
    }

    fn decode_body(bytes: &[u8]) -> Result<Pdu, Error> {
        Pdu::decode(bytes)
    }

    fn frame(ptype: u8, body: &[u8]) -> Vec<u8> {
        let len = u16::try_from(16 + body.len()).unwrap().to_le_bytes();
        let mut v = vec![
            5, 0, ptype, 3, 0x10, 0, 0, 0, len[0], len[1], 0, 0, 1, 0, 0, 0,
        ];
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn bind_limits_are_checked_before_allocating() {
        // 200 contexts claimed: over the limit.
        let err = decode_body(&frame(
            11,
            &[0xd0, 0x16, 0xd0, 0x16, 0, 0, 0, 0, 200, 0, 0, 0],
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "bind.n_context_elem at byte 0x18: 200 entries, limit 16"
        );
        // 3 contexts claimed, no bytes for them.
        let err = decode_body(&frame(
            11,
            &[0xd0, 0x16, 0xd0, 0x16, 0, 0, 0, 0, 3, 0, 0, 0],
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "bind.n_context_elem at byte 0x18: truncated (need 72, have 0)"
        );
        // Trailing byte after the list.
        let err = decode_body(&frame(
            11,
            &[0xd0, 0x16, 0xd0, 0x16, 0, 0, 0, 0, 0, 0, 0, 0, 9],
        ))
        .unwrap_err();
        assert_eq!(err.to_string(), "bind at byte 0x1c: 1 trailing bytes");
    }

    #[test]
    fn bind_ack_address_and_pad() {
        let ack = BindAck {
            max_xmit_frag: 5840,
            max_recv_frag: 5840,
            assoc_group_id: 0x1234,
            secondary_address: b"1688".to_vec(),
            results: vec![ContextResult::accept(NDR32)],
        };
        for (addr, len) in [(&b""[..], 56), (b"1688", 60), (b"11688", 60), (b"123", 60)] {
            let pdu = Pdu {
                call_id: 2,
                flags: PfcFlags::SINGLE,
                body: PduBody::BindAck(BindAck {
                    secondary_address: addr.to_vec(),
                    ..ack.clone()
                }),
            };
            let mut out = BytesMut::new();
            pdu.encode(&mut out);
            assert_eq!(out.len(), len, "{addr:?}");
            assert_eq!(Pdu::decode(&out), Ok(pdu));
        }
        // An address without its NUL is refused at the last byte.
        let mut body = vec![0xd0, 0x16, 0xd0, 0x16, 1, 0, 0, 0, 2, 0, b'1', b'6'];
        body.extend_from_slice(&[0, 0, 0, 0]);
        let err = decode_body(&frame(12, &body)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bind_ack.sec_addr at byte 0x1b: invalid value 0x36"
        );
        // An over-long address is refused from its length.
        let mut body = vec![0xd0, 0x16, 0xd0, 0x16, 1, 0, 0, 0, 0xff, 0x7f];
        body.resize(body.len() + 64, 0);
        let err = decode_body(&frame(12, &body)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("bind_ack.sec_addr_length at byte 0x18: too large")
        );
    }

    #[test]
    fn bind_nak_round_trip_and_padding() {
        let pdu = Pdu {
            call_id: 9,
            flags: PfcFlags::SINGLE,
            body: PduBody::BindNak(BindNak {
                reject_reason: BindNak::REASON_PROTOCOL_VERSION,
                versions: vec![(5, 0)],
            }),
        };
        let mut out = BytesMut::new();
        pdu.encode(&mut out);
        assert_eq!(&out[16..], &[4, 0, 1, 5, 0, 0, 0, 0]);
        assert_eq!(Pdu::decode(&out), Ok(pdu));
    }
}
