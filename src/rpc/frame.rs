//! The frame splitter: where a PDU ends in a TCP byte stream.

use super::header::{HEADER_LEN, field, frag_length_too_short};
use super::{Error, MAX_FRAG_LEN};
use crate::wire::Reader;

/// Bytes [`frame_len`] needs to decide: the header up to `frag_length`.
const DECIDING_LEN: usize = field::FRAG_LENGTH.end;

/// The length of the PDU at the start of `buf`, decided from its first 10
/// bytes, before the caller buffers the body.
///
/// * `Ok(None)`: fewer than 10 bytes are buffered; read more.
/// * `Ok(Some(n))`: the first PDU is `n` bytes (`n` may exceed
///   `buf.len()`: keep reading until `n` bytes are buffered, then hand
///   exactly those to [`Pdu::decode`](super::Pdu::decode)).
///
/// `max_frag_len` is the largest PDU the caller will buffer (for example
/// [`DEFAULT_MAX_FRAG_LEN`](super::DEFAULT_MAX_FRAG_LEN)); values above
/// [`MAX_FRAG_LEN`] change nothing.
///
/// # Errors
///
/// [`Error::UnsupportedVersion`] unless the version is 5.0,
/// [`Error::Decode`] for a `frag_length` below 16, and
/// [`Error::FrameTooLarge`] for one above `max_frag_len`. The stream cannot
/// be resynchronised after any of these: close the connection.
///
/// # Examples
///
/// ```
/// use kms_activation::rpc::{frame_len, Error, DEFAULT_MAX_FRAG_LEN};
///
/// let header = [5, 0, 11, 3, 0x10, 0, 0, 0, 0x74, 0x00];
/// assert_eq!(frame_len(&header[..9], DEFAULT_MAX_FRAG_LEN)?, None);
/// assert_eq!(frame_len(&header, DEFAULT_MAX_FRAG_LEN)?, Some(116));
///
/// let huge = [5, 0, 0, 3, 0x10, 0, 0, 0, 0xff, 0xff];
/// assert_eq!(
///     frame_len(&huge, DEFAULT_MAX_FRAG_LEN),
///     Err(Error::FrameTooLarge { len: 65_535, max: DEFAULT_MAX_FRAG_LEN })
/// );
/// # Ok::<(), Error>(())
/// ```
pub fn frame_len(buf: &[u8], max_frag_len: usize) -> Result<Option<usize>, Error> {
    let Some(head) = buf.get(..DECIDING_LEN) else {
        return Ok(None);
    };
    let mut r = Reader::new(head);
    let major = r.u8("rpc.rpc_vers")?;
    let minor = r.u8("rpc.rpc_vers_minor")?;
    if (major, minor) != (5, 0) {
        return Err(Error::UnsupportedVersion { major, minor });
    }
    r.skip(
        field::FRAG_LENGTH.start.saturating_sub(r.offset()),
        "rpc.header",
    )?;
    let frag_length = r.u16("rpc.frag_length")?;
    let len = usize::from(frag_length);
    if len < HEADER_LEN {
        return Err(frag_length_too_short(frag_length).into());
    }
    let max = max_frag_len.min(MAX_FRAG_LEN);
    if len > max {
        return Err(Error::FrameTooLarge { len, max });
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decides_from_ten_bytes() {
        let mut head = [5, 0, 0, 3, 0x10, 0, 0, 0, 16, 0];
        for n in 0..10 {
            assert_eq!(frame_len(&head[..n], 100), Ok(None));
        }
        assert_eq!(frame_len(&head, 100), Ok(Some(16)));
        head[8] = 15;
        assert_eq!(
            frame_len(&head, 100).unwrap_err().to_string(),
            "rpc.frag_length at byte 0x8: invalid value 0xf"
        );
        head[8] = 101;
        assert_eq!(
            frame_len(&head, 100),
            Err(Error::FrameTooLarge { len: 101, max: 100 })
        );
        assert_eq!(frame_len(&head, 101), Ok(Some(101)));
        head[0] = 4;
        assert_eq!(
            frame_len(&head, 100),
            Err(Error::UnsupportedVersion { major: 4, minor: 0 })
        );
    }
}
