//! Decoding primitives shared by every codec: an offset-tracking reader over a
//! complete frame and the [`DecodeError`] it reports.
//!
//! Every parser in this crate works on a frame that is already whole (the RPC
//! frame splitter is the only place that deals with "need more bytes"). The
//! reader uses `nom`'s *complete* number parsers internally; no `nom` type
//! escapes this module. Each failure names the field that was being read and
//! the byte offset where it starts, counted from the beginning of the buffer
//! the caller handed in.

#![allow(
    dead_code,
    reason = "skeleton: the codecs that use the reader land next"
)]

use std::fmt;

use nom::Parser;
use nom::number::complete::{le_u8, le_u16, le_u32, le_u64};
use uuid::Uuid;

/// What went wrong while decoding a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The field needs more bytes than remain in the frame.
    Truncated {
        /// Bytes the field needs.
        need: usize,
        /// Bytes that remain.
        have: usize,
    },
    /// The field holds a value this implementation refuses.
    Invalid {
        /// The offending value (widened to 64 bits).
        value: u64,
    },
    /// A length field exceeds a limit.
    TooLarge {
        /// The length found on the wire.
        len: usize,
        /// The largest length accepted.
        max: usize,
    },
    /// Bytes are left over after the last field.
    Trailing {
        /// How many bytes are left over.
        len: usize,
    },
}

/// A decoding failure: which field, at which byte offset, and why.
///
/// Displays as, for example,
/// `request.sku_id at byte 0x48: truncated (need 16, have 4)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError {
    offset: usize,
    field: &'static str,
    kind: DecodeErrorKind,
}

impl DecodeError {
    /// Builds an error for `field` at `offset`.
    #[must_use]
    pub const fn new(offset: usize, field: &'static str, kind: DecodeErrorKind) -> Self {
        Self {
            offset,
            field,
            kind,
        }
    }

    /// Byte offset of the field, from the start of the decoded buffer.
    #[must_use]
    pub const fn offset(&self) -> usize {
        self.offset
    }

    /// Name of the field, e.g. `"rpc.frag_length"`.
    #[must_use]
    pub const fn field(&self) -> &'static str {
        self.field
    }

    /// What went wrong.
    #[must_use]
    pub const fn kind(&self) -> DecodeErrorKind {
        self.kind
    }

    /// The same error with its offset shifted by `base` bytes, for a field
    /// decoded from a sub-slice that starts `base` bytes into a larger frame.
    #[must_use]
    pub const fn shifted(self, base: usize) -> Self {
        Self {
            offset: self.offset.saturating_add(base),
            ..self
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {:#x}: ", self.field, self.offset)?;
        match self.kind {
            DecodeErrorKind::Truncated { need, have } => {
                write!(f, "truncated (need {need}, have {have})")
            }
            DecodeErrorKind::Invalid { value } => write!(f, "invalid value {value:#x}"),
            DecodeErrorKind::TooLarge { len, max } => {
                write!(f, "too large ({len} bytes, limit {max})")
            }
            DecodeErrorKind::Trailing { len } => write!(f, "{len} trailing bytes"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A cursor over a complete frame that remembers its offset.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

type NomError<'a> = nom::error::Error<&'a [u8]>;

impl<'a> Reader<'a> {
    /// A reader at offset 0 of `buf`.
    pub(crate) const fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Current offset from the start of the buffer.
    pub(crate) const fn offset(&self) -> usize {
        self.pos
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// An error at the current offset.
    pub(crate) const fn error(&self, field: &'static str, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(self.pos, field, kind)
    }

    /// An `Invalid` error for `field` at `offset`.
    pub(crate) const fn invalid_at(offset: usize, field: &'static str, value: u64) -> DecodeError {
        DecodeError::new(offset, field, DecodeErrorKind::Invalid { value })
    }

    fn truncated(&self, field: &'static str, need: usize) -> DecodeError {
        self.error(
            field,
            DecodeErrorKind::Truncated {
                need,
                have: self.remaining(),
            },
        )
    }

    fn number<T>(
        &mut self,
        field: &'static str,
        width: usize,
        mut parser: impl Parser<&'a [u8], Output = T, Error = NomError<'a>>,
    ) -> Result<T, DecodeError> {
        match parser.parse(self.rest()) {
            Ok((_, value)) => {
                self.pos += width;
                Ok(value)
            }
            Err(_) => Err(self.truncated(field, width)),
        }
    }

    /// Reads one byte.
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.number(field, 1, le_u8)
    }

    /// Reads a little-endian u16.
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.number(field, 2, le_u16)
    }

    /// Reads a little-endian u32.
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.number(field, 4, le_u32)
    }

    /// Reads a little-endian u64.
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.number(field, 8, le_u64)
    }

    /// Reads `len` bytes.
    pub(crate) fn take(
        &mut self,
        len: usize,
        field: &'static str,
    ) -> Result<&'a [u8], DecodeError> {
        match nom::bytes::complete::take::<usize, &'a [u8], NomError<'a>>(len).parse(self.rest()) {
            Ok((_, taken)) => {
                self.pos += len;
                Ok(taken)
            }
            Err(_) => Err(self.truncated(field, len)),
        }
    }

    /// Reads a fixed-size array.
    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Reads a GUID in its mixed-endian wire order (see [`crate::guid`]).
    pub(crate) fn guid(&mut self, field: &'static str) -> Result<Uuid, DecodeError> {
        self.array::<16>(field).map(|b| crate::guid::from_wire(&b))
    }

    /// Skips `len` bytes.
    pub(crate) fn skip(&mut self, len: usize, field: &'static str) -> Result<(), DecodeError> {
        self.take(len, field).map(|_| ())
    }

    /// Everything not yet read.
    pub(crate) fn take_rest(&mut self) -> &'a [u8] {
        let rest = self.rest();
        self.pos = self.buf.len();
        rest
    }

    /// Fails with `Trailing` unless every byte was read.
    pub(crate) fn finish(&self, field: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            len => Err(self.error(field, DecodeErrorKind::Trailing { len })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_tracks_offset() {
        let mut r = Reader::new(&[1, 2, 0, 3, 0, 0, 0, 9]);
        assert_eq!(r.u8("a").unwrap(), 1);
        assert_eq!(r.u16("b").unwrap(), 2);
        assert_eq!(r.u32("c").unwrap(), 3);
        assert_eq!(r.offset(), 7);
        assert!(r.finish("end").is_err());
        let err = r.u16("d").unwrap_err();
        assert_eq!(err.offset(), 7);
        assert_eq!(err.kind(), DecodeErrorKind::Truncated { need: 2, have: 1 });
        assert_eq!(err.to_string(), "d at byte 0x7: truncated (need 2, have 1)");
    }

    #[test]
    fn take_past_end_is_an_error_not_a_panic() {
        let mut r = Reader::new(&[0; 4]);
        assert!(r.take(usize::MAX, "x").is_err());
        assert_eq!(r.take(4, "x").unwrap().len(), 4);
        assert!(r.finish("end").is_ok());
    }
}
