//! The streaming dissector: capture bytes in, in pieces; records out, in
//! capture order.

use std::io::{self, Read};

use super::capture::RecordReader;
use super::kms::KmsSink;
use super::tcp::Reassembler;
use super::{CaptureError, Limits, Record, Warnings};

/// Size of the pieces [`ReadRecords`] reads.
const READ_CHUNK: usize = 64 << 10;

/// A sans-IO capture dissector: every KMS request, response and error of a
/// pcap or pcapng file, as typed [`Record`]s, in capture order.
///
/// Feed the file in pieces of any size with
/// [`handle_input`](Self::handle_input), take the records that are ready
/// with [`poll_record`](Self::poll_record) after each piece, and call
/// [`finish`](Self::finish) at the end of the file (it gives up gaps, ends
/// the open conversations and reports a truncated last record). Memory stays
/// bounded whatever the file's size: one capture record, the live TCP
/// connections within [`Limits`], and the records not yet polled (at most
/// one per 16 bytes of the last piece, so poll after every piece).
///
/// # Example
///
/// ```
/// use kms_activation::dissect::Dissector;
///
/// # fn records_of(file: &[u8]) -> Result<(), kms_activation::dissect::CaptureError> {
/// let mut dissector = Dissector::new();
/// for piece in file.chunks(4096) {
///     dissector.handle_input(piece)?;
///     while let Some(record) = dissector.poll_record() {
///         println!("{record:?}");
///     }
/// }
/// dissector.finish()?;
/// while let Some(record) = dissector.poll_record() {
///     println!("{record:?}");
/// }
/// # Ok(()) }
/// // A legacy pcap header (raw IP) and nothing else: no records.
/// let mut file = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// file.extend(65535u32.to_le_bytes());
/// file.extend(101u32.to_le_bytes());
/// records_of(&file)?;
/// # Ok::<(), kms_activation::dissect::CaptureError>(())
/// ```
#[derive(Debug)]
pub struct Dissector {
    reader: RecordReader,
    reassembler: Reassembler<KmsSink>,
    warnings: Warnings,
    failed: Option<CaptureError>,
    finished: bool,
}

impl Default for Dissector {
    fn default() -> Self {
        Self::new()
    }
}

impl Dissector {
    /// A dissector with the default [`Limits`].
    #[must_use]
    pub fn new() -> Self {
        Self::with_limits(Limits::new())
    }

    /// A dissector bounded by `limits`.
    #[must_use]
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            reader: RecordReader::new(),
            reassembler: Reassembler::new(limits, KmsSink::default()),
            warnings: Warnings::new(limits.max_warnings()),
            failed: None,
            finished: false,
        }
    }

    /// Packet records read so far.
    #[must_use]
    pub fn packets(&self) -> usize {
        self.reader.packets()
    }

    /// Takes the next piece of the capture file. Every byte is consumed.
    ///
    /// # Errors
    ///
    /// [`CaptureError`] when the file header is unreadable; the same error
    /// again on every later call. Damage after the header becomes warning
    /// records instead.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), CaptureError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        if self.finished {
            return Ok(());
        }
        let Self {
            reader,
            reassembler,
            warnings,
            ..
        } = self;
        let result = reader.handle_input(bytes, warnings, &mut |at, segment, warnings| {
            reassembler.sink_mut().flush_warnings(warnings);
            reassembler.handle_segment(at, segment, warnings);
        });
        self.reassembler
            .sink_mut()
            .flush_warnings(&mut self.warnings);
        result.inspect_err(|e| self.failed = Some(*e))
    }

    /// The end of the capture file: gives up the gaps of every open
    /// connection and ends its conversation. Later input is ignored.
    ///
    /// # Errors
    ///
    /// [`CaptureError::TruncatedHeader`] when the file ended inside its
    /// header, or the error [`handle_input`](Self::handle_input) returned.
    pub fn finish(&mut self) -> Result<(), CaptureError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let result = self.reader.finish(&mut self.warnings);
        self.reassembler
            .sink_mut()
            .flush_warnings(&mut self.warnings);
        self.reassembler.finish(&mut self.warnings);
        self.reassembler
            .sink_mut()
            .flush_warnings(&mut self.warnings);
        result.inspect_err(|e| self.failed = Some(*e))
    }

    /// The next record, in capture order.
    #[must_use]
    pub fn poll_record(&mut self) -> Option<Record> {
        self.reassembler.sink_mut().pop()
    }
}

/// Dissects a whole capture held in memory with the default [`Limits`].
///
/// # Errors
///
/// Only when the capture's file header is unreadable; later damage becomes
/// warning records next to whatever could be decoded.
pub fn dissect(capture: &[u8]) -> Result<Vec<Record>, CaptureError> {
    dissect_with_limits(capture, Limits::new())
}

/// Dissects a whole capture held in memory.
///
/// # Errors
///
/// As [`dissect`].
pub fn dissect_with_limits(capture: &[u8], limits: Limits) -> Result<Vec<Record>, CaptureError> {
    let mut dissector = Dissector::with_limits(limits);
    dissector.handle_input(capture)?;
    dissector.finish()?;
    Ok(std::iter::from_fn(|| dissector.poll_record()).collect())
}

/// Why [`ReadRecords`] stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Reading the file failed.
    #[error("read error: {0}")]
    Io(#[from] io::Error),
    /// The capture's file header is unreadable.
    #[error(transparent)]
    Capture(#[from] CaptureError),
}

/// The records of a capture read from any [`Read`], 64 KiB at a time: a
/// [`Dissector`] driven by an iterator. Memory stays bounded whatever the
/// file's size.
///
/// ```no_run
/// use kms_activation::dissect::ReadRecords;
///
/// let file = std::fs::File::open("capture.pcapng")?;
/// for record in ReadRecords::new(file) {
///     println!("{:?}", record?);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ReadRecords<R> {
    reader: R,
    dissector: Dissector,
    buffer: Vec<u8>,
    done: bool,
}

impl<R: Read> ReadRecords<R> {
    /// Reads `reader` with the default [`Limits`].
    pub fn new(reader: R) -> Self {
        Self::with_limits(reader, Limits::new())
    }

    /// Reads `reader` bounded by `limits`.
    pub fn with_limits(reader: R, limits: Limits) -> Self {
        Self {
            reader,
            dissector: Dissector::with_limits(limits),
            buffer: vec![0; READ_CHUNK],
            done: false,
        }
    }

    /// Packet records read so far.
    #[must_use]
    pub fn packets(&self) -> usize {
        self.dissector.packets()
    }
}

impl<R: Read> Iterator for ReadRecords<R> {
    type Item = Result<Record, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(record) = self.dissector.poll_record() {
                return Some(Ok(record));
            }
            if self.done {
                return None;
            }
            let result = match self.reader.read(&mut self.buffer) {
                Ok(0) => {
                    self.done = true;
                    self.dissector.finish().map_err(ReadError::from)
                }
                Ok(n) => self
                    .dissector
                    .handle_input(self.buffer.get(..n).unwrap_or_default())
                    .map_err(ReadError::from),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
                Err(e) => Err(ReadError::Io(e)),
            };
            if let Err(e) = result {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}
