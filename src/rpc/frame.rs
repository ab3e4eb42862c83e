//! The frame splitter: where a PDU ends in a TCP byte stream.

use std::ops::Deref;

use bytes::BytesMut;

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
/// # #[cfg(feature = "fuzzing")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
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
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "fuzzing"))]
/// # fn main() {}
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

/// One whole PDU taken from a stream by [`FrameSplitter::next_frame`]:
/// borrowed from the caller's input when it arrived in one piece, or owned
/// when it was assembled from several reads.
#[derive(Debug)]
pub enum Frame<'a> {
    /// The PDU lies whole inside the input slice: nothing was copied.
    Borrowed(&'a [u8]),
    /// The PDU was assembled from buffered pieces.
    Owned(BytesMut),
}

impl Deref for Frame<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Frame::Borrowed(bytes) => bytes,
            Frame::Owned(bytes) => bytes,
        }
    }
}

/// Splits a TCP byte stream into whole PDUs, buffering at most one PDU.
///
/// The one splitter behind the host and client engines and the capture
/// dissector. Feed it the bytes of a read with
/// [`next_frame`](Self::next_frame) until it has consumed them all; each
/// call returns how many bytes it took and, when a PDU is complete, the PDU.
/// The work per call is linear in the bytes consumed, and the buffer never
/// holds more than one PDU of at most `max_frag_len` bytes, because the
/// length is checked from the header before the body is buffered.
///
/// After an error the stream cannot be resynchronised: the splitter keeps
/// the header that failed ([`failed_header`](Self::failed_header)) and
/// refuses further input.
///
/// ```
/// # #[cfg(feature = "fuzzing")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use kms_activation::rpc::{FrameSplitter, DEFAULT_MAX_FRAG_LEN};
///
/// // Two 16-byte PDUs, arriving in reads of 5 and 27 bytes.
/// let mut stream = vec![5, 0, 0, 3, 0x10, 0, 0, 0, 16, 0, 0, 0, 7, 0, 0, 0];
/// stream.extend_from_within(..);
/// let mut splitter = FrameSplitter::new(DEFAULT_MAX_FRAG_LEN);
/// let mut frames = Vec::new();
/// for read in [&stream[..5], &stream[5..]] {
///     let mut offset = 0;
///     while offset < read.len() {
///         let (used, frame) = splitter.next_frame(&read[offset..])?;
///         offset += used;
///         frames.extend(frame.map(|f| f.to_vec()));
///     }
/// }
/// assert_eq!(frames.len(), 2);
/// assert_eq!(frames[1].len(), 16);
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "fuzzing"))]
/// # fn main() {}
/// ```
#[derive(Debug, Clone)]
pub struct FrameSplitter {
    buffer: BytesMut,
    max_frag_len: usize,
    failed: bool,
}

impl FrameSplitter {
    /// A splitter accepting PDUs of at most `max_frag_len` bytes (capped at
    /// [`MAX_FRAG_LEN`]).
    #[must_use]
    pub fn new(max_frag_len: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            max_frag_len: max_frag_len.min(MAX_FRAG_LEN),
            failed: false,
        }
    }

    /// Bytes of an incomplete PDU waiting for the rest.
    #[must_use]
    pub fn buffered(&self) -> usize {
        if self.failed { 0 } else { self.buffer.len() }
    }

    /// After an error, the first bytes (up to the 16-byte header) of the
    /// PDU that failed to frame; empty otherwise.
    #[must_use]
    pub fn failed_header(&self) -> &[u8] {
        if self.failed { &self.buffer } else { &[] }
    }

    /// Takes bytes from `input` until one PDU is complete or `input` is
    /// exhausted. Returns how many bytes it consumed and the PDU, if one
    /// completed; call again with the rest of `input`.
    ///
    /// # Errors
    ///
    /// The errors of [`frame_len`]. The stream is broken afterwards, and
    /// every later call fails again without consuming anything.
    pub fn next_frame<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Option<Frame<'a>>), Error> {
        if self.failed {
            return Err(self.recheck());
        }
        if self.buffer.is_empty() && input.len() >= HEADER_LEN {
            // Fast path: a PDU starts at the beginning of the input.
            match frame_len(input, self.max_frag_len) {
                Ok(Some(len)) => {
                    if let Some(frame) = input.get(..len) {
                        return Ok((len, Some(Frame::Borrowed(frame))));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    self.fail_with(input);
                    return Err(e);
                }
            }
        }
        let mut consumed = 0;
        loop {
            let target = if self.buffer.len() < HEADER_LEN {
                HEADER_LEN
            } else {
                match frame_len(&self.buffer, self.max_frag_len) {
                    Ok(Some(len)) => len,
                    Ok(None) => HEADER_LEN,
                    Err(e) => {
                        self.failed = true;
                        self.buffer.truncate(HEADER_LEN);
                        return Err(e);
                    }
                }
            };
            let missing = target.saturating_sub(self.buffer.len());
            if missing == 0 {
                let frame = self.buffer.split_to(target);
                return Ok((consumed, Some(Frame::Owned(frame))));
            }
            let rest = input.get(consumed..).unwrap_or_default();
            let take = missing.min(rest.len());
            if take == 0 {
                return Ok((consumed, None));
            }
            self.buffer
                .extend_from_slice(rest.get(..take).unwrap_or_default());
            consumed += take;
        }
    }

    fn fail_with(&mut self, head: &[u8]) {
        self.failed = true;
        self.buffer.clear();
        self.buffer
            .extend_from_slice(head.get(..HEADER_LEN).unwrap_or(head));
    }

    fn recheck(&self) -> Error {
        match frame_len(&self.buffer, self.max_frag_len) {
            Err(e) => e,
            Ok(_) => Error::FrameTooLarge {
                len: self.buffer.len(),
                max: self.max_frag_len,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdu(len: u8) -> Vec<u8> {
        let mut v = vec![5, 0, 0, 3, 0x10, 0, 0, 0, len, 0, 0, 0, 9, 0, 0, 0];
        v.resize(usize::from(len), 0xab);
        v
    }

    fn split_all(splitter: &mut FrameSplitter, input: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        let mut frames = Vec::new();
        let mut offset = 0;
        while offset < input.len() {
            let (used, frame) = splitter.next_frame(&input[offset..])?;
            assert!(used > 0 || frame.is_some(), "no progress at {offset}");
            offset += used;
            frames.extend(frame.map(|f| f.to_vec()));
        }
        Ok(frames)
    }

    #[test]
    fn any_split_gives_the_same_frames() {
        let stream: Vec<u8> = [pdu(16), pdu(40), pdu(17)].concat();
        for cut in 0..=stream.len() {
            let mut splitter = FrameSplitter::new(100);
            let mut frames = split_all(&mut splitter, &stream[..cut]).unwrap();
            frames.extend(split_all(&mut splitter, &stream[cut..]).unwrap());
            assert_eq!(frames, vec![pdu(16), pdu(40), pdu(17)], "cut at {cut}");
            assert_eq!(splitter.buffered(), 0);
        }
    }

    #[test]
    fn whole_input_frames_are_borrowed() {
        let stream = pdu(20);
        let mut splitter = FrameSplitter::new(100);
        let (used, frame) = splitter.next_frame(&stream).unwrap();
        assert_eq!(used, 20);
        assert!(matches!(frame, Some(Frame::Borrowed(_))));
    }

    #[test]
    fn oversized_frame_is_refused_from_the_header_and_sticks() {
        let mut splitter = FrameSplitter::new(32);
        let big = pdu(200);
        assert_eq!(splitter.next_frame(&big[..12]).map(|(n, _)| n), Ok(12));
        assert_eq!(
            splitter.next_frame(&big[12..]).map(|(n, _)| n),
            Err(Error::FrameTooLarge { len: 200, max: 32 })
        );
        assert_eq!(splitter.failed_header().len(), 16);
        assert_eq!(splitter.buffered(), 0);
        assert!(splitter.next_frame(&pdu(16)).is_err());
        let mut fast = FrameSplitter::new(32);
        assert!(fast.next_frame(&big).is_err());
        assert_eq!(&fast.failed_header()[..3], &[5, 0, 0]);
    }

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
