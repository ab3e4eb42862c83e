//! The 16-byte common header every connection-oriented PDU starts with
//! (C706 §12.6.3.1, MS-RPCE §2.2.2.1; the fields KMS uses are listed under
//! [common header](crate::dcerpc#common-header)).

use std::fmt;
use std::ops::{BitOr, BitOrAssign};

use bytes::{BufMut, BytesMut};

use super::Error;
use crate::wire::{DecodeError, DecodeErrorKind, Reader};

/// Byte layout of the common header.
pub(crate) mod field {
    #![expect(
        dead_code,
        reason = "the full layout is documented even where the reader walks it in order"
    )]
    use std::ops::Range;

    /// `rpc_vers`: major protocol version, 5.
    pub(crate) const RPC_VERS: usize = 0;
    /// `rpc_vers_minor`: minor protocol version, 0.
    pub(crate) const RPC_VERS_MINOR: usize = 1;
    /// `PTYPE`: the PDU type.
    pub(crate) const PTYPE: usize = 2;
    /// `pfc_flags`.
    pub(crate) const PFC_FLAGS: usize = 3;
    /// `packed_drep`: the data representation label.
    pub(crate) const DREP: Range<usize> = 4..8;
    /// `frag_length`: the whole PDU, header included.
    pub(crate) const FRAG_LENGTH: Range<usize> = 8..10;
    /// `auth_length`: length of the authentication trailer.
    pub(crate) const AUTH_LENGTH: Range<usize> = 10..12;
    /// `call_id`.
    pub(crate) const CALL_ID: Range<usize> = 12..16;
}

/// Length of the common header.
pub const HEADER_LEN: usize = field::CALL_ID.end;

/// The only data representation this crate speaks and writes:
/// little-endian integers, ASCII characters, IEEE floats (C706 §14.1).
pub const DREP: [u8; 4] = [0x10, 0, 0, 0];

/// The PDU types of the connection-oriented protocol (C706 §12.6.4).
///
/// Types KMS never uses (auth3, shutdown, `co_cancel`, orphaned, and anything
/// unassigned) are kept as [`PduType::Unknown`], so the value survives a
/// round trip.
///
/// ```
/// use kms_activation::dcerpc::PduType;
///
/// assert_eq!(PduType::from(11), PduType::Bind);
/// assert_eq!(u8::from(PduType::Unknown(16)), 16);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PduType {
    /// `request` (0): a call from the client.
    Request,
    /// `response` (2): the reply to a request.
    Response,
    /// `fault` (3): an RPC-level failure of a call.
    Fault,
    /// `bind` (11): opens an association and proposes presentation contexts.
    Bind,
    /// `bind_ack` (12): accepts a bind, one result per proposed context.
    BindAck,
    /// `bind_nak` (13): refuses a bind as a whole.
    BindNak,
    /// `alter_context` (14): proposes more contexts on an open association.
    AlterContext,
    /// `alter_context_resp` (15): the answer to an `alter_context`.
    AlterContextResp,
    /// Any other PTYPE value.
    Unknown(u8),
}

impl From<u8> for PduType {
    fn from(value: u8) -> Self {
        match value {
            0 => Self::Request,           // C706 §12.6.4.9
            2 => Self::Response,          // C706 §12.6.4.10
            3 => Self::Fault,             // C706 §12.6.4.7
            11 => Self::Bind,             // C706 §12.6.4.3
            12 => Self::BindAck,          // C706 §12.6.4.4
            13 => Self::BindNak,          // C706 §12.6.4.5
            14 => Self::AlterContext,     // C706 §12.6.4.1
            15 => Self::AlterContextResp, // C706 §12.6.4.2
            other => Self::Unknown(other),
        }
    }
}

impl From<PduType> for u8 {
    fn from(value: PduType) -> Self {
        match value {
            PduType::Request => 0,
            PduType::Response => 2,
            PduType::Fault => 3,
            PduType::Bind => 11,
            PduType::BindAck => 12,
            PduType::BindNak => 13,
            PduType::AlterContext => 14,
            PduType::AlterContextResp => 15,
            PduType::Unknown(other) => other,
        }
    }
}

/// The `pfc_flags` byte of the common header (C706 §12.6.3.1).
///
/// Every KMS PDU is a single fragment ([`PfcFlags::SINGLE`]); binds usually
/// add [`PfcFlags::CONC_MPX`] and faults [`PfcFlags::DID_NOT_EXECUTE`].
///
/// ```
/// # #[cfg(feature = "fuzzing")]
/// # fn main() {
/// use kms_activation::rpc::PfcFlags;
///
/// let flags = PfcFlags::SINGLE | PfcFlags::CONC_MPX;
/// assert_eq!(flags, PfcFlags(0x13));
/// assert!(flags.contains(PfcFlags::FIRST_FRAG));
/// assert!(!flags.contains(PfcFlags::MAYBE));
/// # }
/// # #[cfg(not(feature = "fuzzing"))]
/// # fn main() {}
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PfcFlags(pub u8);

impl PfcFlags {
    /// `PFC_FIRST_FRAG`: the first fragment of a PDU.
    pub const FIRST_FRAG: Self = Self(0x01);
    /// `PFC_LAST_FRAG`: the last fragment of a PDU.
    pub const LAST_FRAG: Self = Self(0x02);
    /// `PFC_PENDING_CANCEL` in calls; `PFC_SUPPORT_HEADER_SIGN` in binds
    /// (MS-RPCE §2.2.2.3).
    pub const SUPPORT_HEADER_SIGN: Self = Self(0x04);
    /// `PFC_CONC_MPX`: concurrent multiplexing requested (binds).
    pub const CONC_MPX: Self = Self(0x10);
    /// `PFC_DID_NOT_EXECUTE`: the call was not executed (faults).
    pub const DID_NOT_EXECUTE: Self = Self(0x20);
    /// `PFC_MAYBE`: "maybe" call semantics.
    pub const MAYBE: Self = Self(0x40);
    /// `PFC_OBJECT_UUID`: a request carries an object UUID.
    pub const OBJECT_UUID: Self = Self(0x80);
    /// `FIRST_FRAG | LAST_FRAG`: a PDU sent whole, as every KMS PDU is.
    pub const SINGLE: Self = Self(0x03);

    /// True when every bit of `other` is set in `self`.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the bits of `other` set (`on`) or cleared (`!on`).
    #[must_use]
    pub const fn with(self, other: Self, on: bool) -> Self {
        if on {
            Self(self.0 | other.0)
        } else {
            Self(self.0 & !other.0)
        }
    }
}

impl BitOr for PfcFlags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for PfcFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for PfcFlags {
    /// `PfcFlags(0x13: FIRST_FRAG | LAST_FRAG | CONC_MPX)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(PfcFlags, &str); 8] = [
            (PfcFlags::FIRST_FRAG, "FIRST_FRAG"),
            (PfcFlags::LAST_FRAG, "LAST_FRAG"),
            (PfcFlags::SUPPORT_HEADER_SIGN, "SUPPORT_HEADER_SIGN"),
            (PfcFlags(0x08), "RESERVED_08"),
            (PfcFlags::CONC_MPX, "CONC_MPX"),
            (PfcFlags::DID_NOT_EXECUTE, "DID_NOT_EXECUTE"),
            (PfcFlags::MAYBE, "MAYBE"),
            (PfcFlags::OBJECT_UUID, "OBJECT_UUID"),
        ];
        write!(f, "PfcFlags({:#04x}", self.0)?;
        let mut sep = ": ";
        for (flag, name) in NAMES {
            if self.contains(flag) {
                write!(f, "{sep}{name}")?;
                sep = " | ";
            }
        }
        f.write_str(")")
    }
}

/// The decoded common header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) ptype: PduType,
    pub(crate) flags: PfcFlags,
    pub(crate) frag_length: u16,
    pub(crate) call_id: u32,
}

impl Header {
    /// Reads and checks the 16 header bytes at the start of `r`.
    ///
    /// Checks the version (5.0), the integer and character representation
    /// (the first `packed_drep` byte must be `0x10`; the float representation
    /// and the two reserved bytes are ignored, KMS carries no floats) and that
    /// `auth_length` is 0. The PTYPE is returned as read; `frag_length` is
    /// checked by the caller against the frame.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let major = r.u8("rpc.rpc_vers")?;
        let minor = r.u8("rpc.rpc_vers_minor")?;
        if (major, minor) != (5, 0) {
            return Err(Error::UnsupportedVersion { major, minor });
        }
        let ptype = PduType::from(r.u8("rpc.ptype")?);
        let flags = PfcFlags(r.u8("rpc.pfc_flags")?);
        let drep = r.array::<4>("rpc.packed_drep")?;
        if drep.first() != DREP.first() {
            return Err(Error::UnsupportedDataRepresentation(drep));
        }
        let frag_length = r.u16("rpc.frag_length")?;
        let auth_length = r.u16("rpc.auth_length")?;
        if auth_length != 0 {
            return Err(Error::Authenticated { auth_length });
        }
        let call_id = r.u32("rpc.call_id")?;
        Ok(Self {
            ptype,
            flags,
            frag_length,
            call_id,
        })
    }

    /// Appends the 16 header bytes (`auth_length` 0, [`DREP`]).
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u8(5);
        out.put_u8(0);
        out.put_u8(self.ptype.into());
        out.put_u8(self.flags.0);
        out.put_slice(&DREP);
        out.put_u16_le(self.frag_length);
        out.put_u16_le(0);
        out.put_u32_le(self.call_id);
    }
}

/// A `frag_length` below the header size, as a decode error at its offset.
pub(crate) fn frag_length_too_short(value: u16) -> DecodeError {
    DecodeError::new(
        field::FRAG_LENGTH.start,
        "rpc.frag_length",
        DecodeErrorKind::Invalid {
            value: u64::from(value),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdu_type_round_trips_every_byte() {
        for b in 0..=u8::MAX {
            assert_eq!(u8::from(PduType::from(b)), b);
        }
    }

    #[test]
    fn flags_debug_names_bits() {
        assert_eq!(
            format!("{:?}", PfcFlags(0x23)),
            "PfcFlags(0x23: FIRST_FRAG | LAST_FRAG | DID_NOT_EXECUTE)"
        );
        assert_eq!(
            PfcFlags(0x83).with(PfcFlags::OBJECT_UUID, false),
            PfcFlags::SINGLE
        );
    }

    #[test]
    fn header_checks() {
        let ok = [5, 0, 0, 3, 0x10, 0, 0, 0, 24, 0, 0, 0, 2, 0, 0, 0];
        let h = Header::decode(&mut Reader::new(&ok)).unwrap();
        assert_eq!(h.ptype, PduType::Request);
        assert_eq!(h.frag_length, 24);
        let mut out = BytesMut::new();
        h.encode(&mut out);
        assert_eq!(&out[..], &ok);

        let mut bad = ok;
        bad[1] = 1;
        assert_eq!(
            Header::decode(&mut Reader::new(&bad)),
            Err(Error::UnsupportedVersion { major: 5, minor: 1 })
        );
        let mut bad = ok;
        bad[4] = 0x00;
        assert_eq!(
            Header::decode(&mut Reader::new(&bad)),
            Err(Error::UnsupportedDataRepresentation([0, 0, 0, 0]))
        );
        let mut bad = ok;
        bad[10] = 8;
        assert_eq!(
            Header::decode(&mut Reader::new(&bad)),
            Err(Error::Authenticated { auth_length: 8 })
        );
        let err = Header::decode(&mut Reader::new(&ok[..9])).unwrap_err();
        assert!(
            matches!(err, Error::Decode(e) if e.offset() == 8 && e.field() == "rpc.frag_length")
        );
    }
}
