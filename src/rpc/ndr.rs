//! NDR32 / NDR64 stubs of `RequestActivation` (layouts in
//! [NDR stubs](crate::dcerpc#ndr-stubs-of-requestactivation)).
//!
//! The `[in]` stub carries `requestSize` and the conformant byte array; the
//! `[out]` stub carries `*responseSize`, the unique pointer to the response
//! array (its referent id, then the array) and the HRESULT return value.
//! Offsets in errors count from the start of the stub.
//!
//! Trailing bytes: a decoder accepts fewer than 8 zero bytes after the last
//! field (alignment some marshallers add; vlmcsd pads after an unaligned
//! HRESULT) and refuses anything else. Encoders never write them.

use bytes::{BufMut, BytesMut};

use super::{Error, put_zeros};
use crate::HResult;
use crate::wire::{DecodeError, DecodeErrorKind, Reader};

/// The referent id written for the non-NULL response pointer (the value
/// MIDL stubs and vlmcsd use).
const REFERENT_ID: u32 = 0x0002_0000;
/// Trailing zero bytes a decoder tolerates: less than one NDR64 alignment.
const MAX_TRAILING_ZEROS: usize = 7;

/// The data representation of a KMS call: the transfer syntax its
/// presentation context was accepted with (see
/// [NDR stubs](crate::dcerpc#ndr-stubs-of-requestactivation)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ndr {
    /// NDR 2.0: 4-byte integers and pointers.
    Ndr32,
    /// NDR64: 8-byte conformances and pointers, 8-byte alignment.
    Ndr64,
}

impl Ndr {
    /// The flavour a transfer syntax names, if it is NDR32 or NDR64 (the
    /// dissector reads it from a `bind_ack`).
    #[cfg(any(feature = "pcap", test))]
    #[must_use]
    pub(crate) fn from_syntax(syntax: &super::SyntaxId) -> Option<Self> {
        super::TransferSyntax::from_syntax(syntax).ndr()
    }
}

/// The outcome of a `RequestActivation` call as its `[out]` stub carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StubReply<'a> {
    /// Success: the KMS response message (HRESULT 0).
    Message(&'a [u8]),
    /// A KMS error: a NULL response pointer and this HRESULT.
    Error(HResult),
}

impl StubReply<'_> {
    /// The length of the stub [`encode_response_stub`] writes for this reply
    /// (the response PDU's `alloc_hint`).
    #[must_use]
    pub fn encoded_len(&self, ndr: Ndr) -> usize {
        match (self, ndr) {
            (Self::Message(m), _) => {
                let n = clamp_len(m.len());
                head_len(ndr)
                    .saturating_add(n)
                    .saturating_add(n.wrapping_neg() & 3)
                    .saturating_add(4)
            }
            (Self::Error(_), Ndr::Ndr32) => 12,
            (Self::Error(_), Ndr::Ndr64) => 20,
        }
    }
}

/// Bytes before the response array: size, referent, conformance.
const fn head_len(ndr: Ndr) -> usize {
    match ndr {
        Ndr::Ndr32 => 12,
        Ndr::Ndr64 => 24,
    }
}

/// The number of message bytes an encoder writes: sizes are u32 on the wire.
fn clamp_len(len: usize) -> usize {
    len.min(usize::try_from(u32::MAX).unwrap_or(usize::MAX))
}

fn clamp_message(message: &[u8]) -> (u32, &[u8]) {
    let n = clamp_len(message.len());
    let bytes = message.get(..n).unwrap_or(message);
    (u32::try_from(n).unwrap_or(u32::MAX), bytes)
}

/// Appends the `[in]` stub of `RequestActivation` carrying `message`.
///
/// NDR32: `requestSize`, conformance, bytes. NDR64: `requestSize`, 4 zero
/// bytes, u64 conformance, bytes. No trailing padding. (A message longer
/// than `u32::MAX` bytes is cut there.)
///
/// ```
/// # #[cfg(feature = "fuzzing")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bytes::BytesMut;
/// use kms_activation::rpc::{decode_request_stub, encode_request_stub, Ndr};
///
/// let mut stub = BytesMut::new();
/// encode_request_stub(Ndr::Ndr64, b"kms!", &mut stub);
/// assert_eq!(&stub[..16], &[4, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
/// assert_eq!(decode_request_stub(Ndr::Ndr64, &stub)?, b"kms!");
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "fuzzing"))]
/// # fn main() {}
/// ```
pub fn encode_request_stub(ndr: Ndr, message: &[u8], out: &mut BytesMut) {
    let (n, bytes) = clamp_message(message);
    out.put_u32_le(n);
    match ndr {
        Ndr::Ndr32 => out.put_u32_le(n),
        Ndr::Ndr64 => {
            put_zeros(out, 4);
            out.put_u64_le(u64::from(n));
        }
    }
    out.put_slice(bytes);
}

/// Decodes the `[in]` stub of `RequestActivation`; returns the KMS request.
///
/// Checks that `requestSize` equals the array conformance and fits in the
/// stub, that the NDR64 alignment gap is zero, and that at most 7 zero bytes
/// follow the array.
///
/// # Errors
///
/// [`Error::StubSizeMismatch`], or [`Error::Stub`] with the field and its
/// offset in the stub.
///
/// ```
/// # #[cfg(feature = "fuzzing")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use kms_activation::rpc::{decode_request_stub, Error, Ndr};
///
/// let stub = [3, 0, 0, 0, 3, 0, 0, 0, b'a', b'b', b'c'];
/// assert_eq!(decode_request_stub(Ndr::Ndr32, &stub)?, b"abc");
/// let bad = [3, 0, 0, 0, 2, 0, 0, 0, b'a', b'b'];
/// assert_eq!(
///     decode_request_stub(Ndr::Ndr32, &bad),
///     Err(Error::StubSizeMismatch { size: 3, conformance: 2 })
/// );
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "fuzzing"))]
/// # fn main() {}
/// ```
pub fn decode_request_stub(ndr: Ndr, stub: &[u8]) -> Result<&[u8], Error> {
    let mut r = Reader::new(stub);
    let size = r.u32("stub.request_size").map_err(Error::Stub)?;
    let conformance = read_conformance(&mut r, ndr)?;
    let message = read_array(&mut r, size, conformance, "stub.request")?;
    finish(&r)?;
    Ok(message)
}

/// Appends the `[out]` stub of `RequestActivation` (layouts on
/// [success](crate::dcerpc#output-stub-on-success) and
/// [error](crate::dcerpc#output-stub-on-error)).
///
/// A message: `*responseSize`, referent `0x00020000`, conformance, the bytes,
/// zero bytes to the next multiple of 4, HRESULT 0. An error: size 0, a NULL
/// pointer and the HRESULT (12 bytes in NDR32, 20 in NDR64).
///
/// ```
/// # #[cfg(feature = "fuzzing")]
/// # fn main() {
/// use bytes::BytesMut;
/// use kms_activation::HResult;
/// use kms_activation::rpc::{encode_response_stub, Ndr, StubReply};
///
/// let mut stub = BytesMut::new();
/// encode_response_stub(Ndr::Ndr32, StubReply::Error(HResult::KMS_ID_MISMATCH), &mut stub);
/// assert_eq!(&stub[..], &[0, 0, 0, 0, 0, 0, 0, 0, 0x42, 0xf0, 0x04, 0xc0]);
///
/// stub.clear();
/// encode_response_stub(Ndr::Ndr32, StubReply::Message(b"abcde"), &mut stub);
/// assert_eq!(stub.len(), 12 + 5 + 3 + 4);
/// # }
/// # #[cfg(not(feature = "fuzzing"))]
/// # fn main() {}
/// ```
pub fn encode_response_stub(ndr: Ndr, reply: StubReply<'_>, out: &mut BytesMut) {
    match reply {
        StubReply::Message(message) => {
            let (n, bytes) = clamp_message(message);
            out.put_u32_le(n);
            match ndr {
                Ndr::Ndr32 => {
                    out.put_u32_le(REFERENT_ID);
                    out.put_u32_le(n);
                }
                Ndr::Ndr64 => {
                    put_zeros(out, 4);
                    out.put_u64_le(u64::from(REFERENT_ID));
                    out.put_u64_le(u64::from(n));
                }
            }
            out.put_slice(bytes);
            put_zeros(out, bytes.len().wrapping_neg() & 3);
            out.put_u32_le(HResult::S_OK.code());
        }
        StubReply::Error(hresult) => {
            put_zeros(out, 4);
            match ndr {
                Ndr::Ndr32 => put_zeros(out, 4),
                Ndr::Ndr64 => put_zeros(out, 12),
            }
            out.put_u32_le(hresult.code());
        }
    }
}

/// Decodes the `[out]` stub of `RequestActivation`.
///
/// A NULL response pointer gives [`StubReply::Error`] with the HRESULT (the
/// size field is then ignored). Otherwise the size must equal the
/// conformance and fit in the stub; the alignment bytes before the HRESULT
/// are skipped whatever they hold, and a non-zero HRESULT gives
/// [`StubReply::Error`] even though data were present (see the
/// [error stub](crate::dcerpc#output-stub-on-error)).
///
/// # Errors
///
/// [`Error::StubSizeMismatch`], or [`Error::Stub`] with the field and its
/// offset in the stub.
///
/// ```
/// # #[cfg(feature = "fuzzing")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use kms_activation::HResult;
/// use kms_activation::rpc::{decode_response_stub, Ndr, StubReply};
///
/// let error = [0, 0, 0, 0, 0, 0, 0, 0, 0x0d, 0x00, 0x07, 0x80];
/// assert_eq!(
///     decode_response_stub(Ndr::Ndr32, &error)?,
///     StubReply::Error(HResult::INVALID_DATA)
/// );
/// let ok = [2, 0, 0, 0, 0, 0, 2, 0, 2, 0, 0, 0, b'h', b'i', 0, 0, 0, 0, 0, 0];
/// assert_eq!(decode_response_stub(Ndr::Ndr32, &ok)?, StubReply::Message(b"hi"));
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "fuzzing"))]
/// # fn main() {}
/// ```
pub fn decode_response_stub(ndr: Ndr, stub: &[u8]) -> Result<StubReply<'_>, Error> {
    let mut r = Reader::new(stub);
    let size = r.u32("stub.response_size").map_err(Error::Stub)?;
    let referent = match ndr {
        Ndr::Ndr32 => u64::from(r.u32("stub.referent").map_err(Error::Stub)?),
        Ndr::Ndr64 => {
            alignment_gap(&mut r)?;
            r.u64("stub.referent").map_err(Error::Stub)?
        }
    };
    if referent == 0 {
        let hresult = r.u32("stub.hresult").map_err(Error::Stub)?;
        finish(&r)?;
        return Ok(StubReply::Error(HResult::new(hresult)));
    }
    let conformance = match ndr {
        Ndr::Ndr32 => u64::from(r.u32("stub.conformance").map_err(Error::Stub)?),
        Ndr::Ndr64 => r.u64("stub.conformance").map_err(Error::Stub)?,
    };
    let message = read_array(&mut r, size, conformance, "stub.response")?;
    r.skip(message.len().wrapping_neg() & 3, "stub.pad")
        .map_err(Error::Stub)?;
    let hresult = r.u32("stub.hresult").map_err(Error::Stub)?;
    finish(&r)?;
    Ok(match HResult::new(hresult) {
        HResult::S_OK => StubReply::Message(message),
        error => StubReply::Error(error),
    })
}

/// The conformance of the `[in]` array (after the NDR64 alignment gap).
fn read_conformance(r: &mut Reader<'_>, ndr: Ndr) -> Result<u64, Error> {
    match ndr {
        Ndr::Ndr32 => r.u32("stub.conformance").map(u64::from),
        Ndr::Ndr64 => {
            alignment_gap(r)?;
            r.u64("stub.conformance")
        }
    }
    .map_err(Error::Stub)
}

/// The 4 bytes that align an NDR64 u64 after a leading u32: must be zero
/// (a reader taking the size as a u64, as vlmcsd does, would otherwise see
/// another value).
fn alignment_gap(r: &mut Reader<'_>) -> Result<(), Error> {
    let at = r.offset();
    match r.u32("stub.align").map_err(Error::Stub)? {
        0 => Ok(()),
        value => Err(Error::Stub(Reader::invalid_at(
            at,
            "stub.align",
            u64::from(value),
        ))),
    }
}

/// The conformant byte array whose size argument is `size`.
fn read_array<'a>(
    r: &mut Reader<'a>,
    size: u32,
    conformance: u64,
    field: &'static str,
) -> Result<&'a [u8], Error> {
    if u64::from(size) != conformance {
        return Err(Error::StubSizeMismatch {
            size: u64::from(size),
            conformance,
        });
    }
    let len = usize::try_from(size).unwrap_or(usize::MAX);
    r.take(len, field).map_err(Error::Stub)
}

/// Accepts fewer than 8 trailing zero bytes, nothing else.
fn finish(r: &Reader<'_>) -> Result<(), Error> {
    let mut rest = r.clone();
    let len = rest.remaining();
    let trailing = rest.take_rest();
    if len > MAX_TRAILING_ZEROS || trailing.iter().any(|&b| b != 0) {
        return Err(Error::Stub(DecodeError::new(
            r.offset(),
            "stub.end",
            DecodeErrorKind::Trailing { len },
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{NDR32, NDR64};

    #[test]
    fn flavour_and_syntax_identifier() {
        // The transfer syntax UUIDs and versions of C706 and MS-RPCE.
        assert_eq!(Ndr::from_syntax(&NDR64), Some(Ndr::Ndr64));
        assert_eq!(Ndr::from_syntax(&NDR32), Some(Ndr::Ndr32));
        let mut ndr64 = NDR64;
        ndr64.version = 2;
        assert_eq!(Ndr::from_syntax(&ndr64), None);
        assert_eq!(
            NDR64.uuid,
            "71710533-beba-4937-8319-b5dbef9ccc36"
                .parse::<uuid::Uuid>()
                .unwrap()
        );
    }

    #[test]
    fn error_stubs_match_protocol() {
        let mut out = BytesMut::new();
        encode_response_stub(
            Ndr::Ndr64,
            StubReply::Error(HResult::INVALID_DATA),
            &mut out,
        );
        assert_eq!(
            &out[..],
            &[
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0d, 0, 0x07, 0x80
            ]
        );
        assert_eq!(StubReply::Error(HResult::S_OK).encoded_len(Ndr::Ndr64), 20);
        assert_eq!(
            decode_response_stub(Ndr::Ndr64, &out),
            Ok(StubReply::Error(HResult::INVALID_DATA))
        );
    }

    #[test]
    fn response_round_trips_every_pad_length() {
        for ndr in [Ndr::Ndr32, Ndr::Ndr64] {
            for len in 0..9 {
                let message: Vec<u8> = (1..=len).collect();
                let reply = StubReply::Message(&message);
                let mut out = BytesMut::new();
                encode_response_stub(ndr, reply, &mut out);
                assert_eq!(out.len(), reply.encoded_len(ndr));
                assert_eq!(out.len() % 4, 0);
                assert_eq!(decode_response_stub(ndr, &out), Ok(reply));
            }
        }
    }

    #[test]
    fn non_zero_hresult_with_data_is_an_error() {
        // vlmcsd's layout: HRESULT right after odd-length data, pad after.
        let stub = [
            1, 0, 0, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0xAA, 0, 0, 0, 0x42, 0xf0, 0x04, 0xc0,
        ];
        assert_eq!(
            decode_response_stub(Ndr::Ndr32, &stub),
            Ok(StubReply::Error(HResult::KMS_ID_MISMATCH))
        );
    }

    #[test]
    fn trailing_bytes_and_gaps() {
        let mut stub = vec![1, 0, 0, 0, 1, 0, 0, 0, 9];
        assert_eq!(decode_request_stub(Ndr::Ndr32, &stub), Ok(&[9][..]));
        stub.extend_from_slice(&[0; 7]);
        assert_eq!(decode_request_stub(Ndr::Ndr32, &stub), Ok(&[9][..]));
        stub.push(0);
        assert_eq!(
            decode_request_stub(Ndr::Ndr32, &stub)
                .unwrap_err()
                .to_string(),
            "stub.end at byte 0x9: 8 trailing bytes (offset within the NDR stub)"
        );
        let nonzero = [1, 0, 0, 0, 1, 0, 0, 0, 9, 1];
        assert!(decode_request_stub(Ndr::Ndr32, &nonzero).is_err());
        // Size beyond the stub.
        let short = [9, 0, 0, 0, 9, 0, 0, 0, 1];
        assert_eq!(
            decode_request_stub(Ndr::Ndr32, &short)
                .unwrap_err()
                .to_string(),
            "stub.request at byte 0x8: truncated (need 9, have 1) (offset within the NDR stub)"
        );
        // NDR64 gap must be zero.
        let gap = [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
        assert_eq!(
            decode_request_stub(Ndr::Ndr64, &gap)
                .unwrap_err()
                .to_string(),
            "stub.align at byte 0x4: invalid value 0x1 (offset within the NDR stub)"
        );
        // NDR64 conformance above u32.
        let big = [1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7];
        assert_eq!(
            decode_request_stub(Ndr::Ndr64, &big),
            Err(Error::StubSizeMismatch {
                size: 1,
                conformance: 0x1_0000_0001
            })
        );
    }
}
