//! Packet-capture dissection: the capture half of the `kms-dissect` tool.
//!
//! Two ways in, sharing the same decoding and reassembly:
//!
//! * [`Dissector`] is the streaming one. Feed it a capture file's bytes in
//!   pieces of any size ([`Dissector::handle_input`]), call
//!   [`Dissector::finish`] at the end of the file, and take typed
//!   [`Record`]s ([`Dissector::poll_record`]) as soon as each KMS request,
//!   response or error is complete, in capture order. Its memory does not grow
//!   with the file: it buffers one capture record, the live TCP connections
//!   (bounded by [`Limits`]) and the records not yet taken. [`ReadRecords`]
//!   drives it from any [`std::io::Read`]; [`dissect`] from a byte slice.
//! * [`read_capture`] reassembles every TCP connection into two byte streams
//!   and returns them all at once, as a [`Capture`]: one [`TcpConversation`]
//!   per connection, each an ordered list of [`StreamChunk`]s, plus the
//!   [`Warning`]s met on the way. It keeps the streams, so its memory grows
//!   with the capture (up to [`Limits::max_stream_bytes`] per connection).
//!
//! ```text
//!  capture bytes ──► capture: pcap / pcapng records ──► link layer ──► IPv4 / IPv6 ──► TCP segment
//!                                                                                         │
//!                               tcp: reassembly, one connection table ◄───────────────────┘
//!                                 │                               │
//!   Dissector: DCE/RPC + KMS per connection ──► Record     read_capture: Capture { connections, warnings }
//! ```
//!
//! # What is read
//!
//! * **Files:** legacy pcap in both byte orders, with microsecond or nanosecond
//!   timestamps (and the old little-endian "modified" Kuznetzov variant; the
//!   header's time-zone correction is ignored, as it is always 0 in practice),
//!   and pcapng (any number of sections and interfaces, either byte order,
//!   enhanced and simple packet blocks; `if_tsresol` and `if_tsoffset` are
//!   honoured; simple packet blocks carry no time and get the Unix epoch).
//! * **Link types:** Ethernet (1, with any number of 802.1Q / 802.1ad VLAN
//!   tags), Linux cooked capture SLL (113) and SLL2 (276), BSD loopback NULL
//!   (0, family in the capturing host's byte order) and LOOP (108, big-endian
//!   family), and raw IP (101, 228 IPv4, 229 IPv6, and the historical 12 / 14).
//! * **Network:** IPv4 (options skipped; the first fragment of a fragmented
//!   datagram is used as far as it goes, later fragments are skipped with a
//!   warning) and IPv6 (hop-by-hop, routing, destination-options, fragment,
//!   AH, mobility, HIP, shim6 and experimental extension headers skipped; ESP
//!   and non-first fragments skipped with a warning).
//! * **Transport:** TCP only. Everything else is ignored silently. Checksums
//!   are not verified (captures taken on the sending host carry offloaded,
//!   unfilled checksums).
//!
//! # Client and server
//!
//! The side that sent the first SYN (without ACK) is the client; if the first
//! packet seen is a SYN+ACK, its receiver is the client. When the capture
//! starts in the middle of a connection, the side using port 1688 (the KMS
//! port) is the server; failing that, the side with the lower-numbered port
//! is the server; with equal ports, the destination of the first packet is
//! the server.
//!
//! # Reassembly
//!
//! Streams are reassembled by sequence number, modulo 2³²: out-of-order
//! segments are buffered until the gap before them fills; retransmitted and
//! overlapping bytes are delivered once (the first copy wins); SYN and FIN
//! consume their sequence number; data after a FIN or after a RST is dropped
//! with a warning. A gap that never fills (a segment the capture missed) is
//! skipped with a [`WarningKind::MissingBytes`] warning as soon as the peer
//! acknowledges data beyond it, when the out-of-order buffer is full, or at the
//! end of the capture, and the stream continues after it. When a capture
//! starts in the middle of a connection, each side's stream starts at the first
//! segment seen from that side.
//!
//! # Retiring connections
//!
//! At most [`Limits::max_connections`] connections are tracked at once. When a
//! new connection would exceed that, the oldest closed one (both FINs, or a
//! RST) is retired; failing that, the one idle longest if it has been idle for
//! [`Limits::idle_timeout`] of capture time. A retired connection's gaps are
//! given up and its conversation ends, as at the end of the capture. So a
//! capture of any number of sequential connections decodes all of them.
//!
//! # Limits
//!
//! Captures are untrusted input, so every buffer is bounded by a [`Limits`]
//! value ([`Limits::default`] unless given); in addition, at most 4096
//! segments wait behind a gap in each direction, and one capture record
//! (legacy pcap: 256 KiB of packet data; pcapng: a 16 MiB block) is buffered
//! at a time. Hitting a limit drops data (or gives up a gap) and records a
//! warning; it never fails the read. Work is linear in the input.
//!
//! # Records as JSON
//!
//! With the `serde` feature, [`Record`] (and the request and response bodies
//! inside it) implement `serde::Serialize`; `kms-dissect` prints each record
//! as one JSON object per line with `serde_json`.

mod capture;
mod kms;
mod stream;
mod tcp;
pub use kms::{Conversation, Event, Record};
pub use stream::{Dissector, ReadError, ReadRecords, dissect, dissect_with_limits};

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Default for [`Limits::max_connections`]: TCP connections tracked at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default for [`Limits::max_out_of_order_bytes`]: bytes buffered ahead of a gap,
/// per direction of a connection (256 KiB).
pub const DEFAULT_MAX_OUT_OF_ORDER_BYTES: usize = 256 << 10;
/// Default for [`Limits::max_stream_bytes`]: reassembled bytes [`read_capture`]
/// keeps per connection, both directions together (16 MiB).
pub const DEFAULT_MAX_STREAM_BYTES: usize = 16 << 20;
/// Default for [`Limits::max_warnings`]: warnings kept per capture.
pub const DEFAULT_MAX_WARNINGS: usize = 10_000;
/// Default for [`Limits::idle_timeout`]: capture time after which a silent
/// connection may be retired to make room (5 minutes).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The TCP port of KMS, used to tell the server of a connection whose start
/// was not captured.
pub const KMS_PORT: u16 = 1688;

/// Bounds on the memory a [`Dissector`] or [`read_capture_with_limits`] uses.
///
/// Each limit, when exceeded, drops data and adds a [`Warning`]; reading goes
/// on. Build one with [`Limits::new`] (the defaults) and the `with_*` setters.
///
/// ```
/// use kms_activation::dissect::Limits;
/// let limits = Limits::new().with_max_connections(16);
/// assert_eq!(limits.max_connections(), 16);
/// assert_eq!(limits.max_stream_bytes(), 16 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    connections: usize,
    out_of_order_bytes: usize,
    stream_bytes: usize,
    warnings: usize,
    idle_timeout: Duration,
}

impl Limits {
    /// The default limits (the `DEFAULT_*` constants of this module).
    #[must_use]
    pub const fn new() -> Self {
        Self {
            connections: DEFAULT_MAX_CONNECTIONS,
            out_of_order_bytes: DEFAULT_MAX_OUT_OF_ORDER_BYTES,
            stream_bytes: DEFAULT_MAX_STREAM_BYTES,
            warnings: DEFAULT_MAX_WARNINGS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }

    /// Connections tracked at once. When a new one would exceed it, a closed
    /// or idle one is retired (see the [module docs](self#retiring-connections));
    /// when none can be, packets of the new connection are ignored
    /// ([`WarningKind::ConnectionLimit`], once).
    #[must_use]
    pub const fn max_connections(&self) -> usize {
        self.connections
    }

    /// Sets [`Limits::max_connections`].
    #[must_use]
    pub const fn with_max_connections(mut self, n: usize) -> Self {
        self.connections = n;
        self
    }

    /// Bytes buffered ahead of a gap, per direction of a connection. When a
    /// segment would exceed it (or 4096 segments already wait), the gap is given up
    /// ([`WarningKind::OutOfOrderLimit`]) and the stream continues after it.
    #[must_use]
    pub const fn max_out_of_order_bytes(&self) -> usize {
        self.out_of_order_bytes
    }

    /// Sets [`Limits::max_out_of_order_bytes`].
    #[must_use]
    pub const fn with_max_out_of_order_bytes(mut self, n: usize) -> Self {
        self.out_of_order_bytes = n;
        self
    }

    /// Reassembled bytes [`read_capture`] keeps per connection (both
    /// directions together); later bytes are dropped
    /// ([`WarningKind::StreamLimit`], once per connection). A [`Dissector`]
    /// keeps no streams and ignores it.
    #[must_use]
    pub const fn max_stream_bytes(&self) -> usize {
        self.stream_bytes
    }

    /// Sets [`Limits::max_stream_bytes`].
    #[must_use]
    pub const fn with_max_stream_bytes(mut self, n: usize) -> Self {
        self.stream_bytes = n;
        self
    }

    /// Warnings kept (capture, reassembly and KMS warnings together); when
    /// reached, one last [`WarningKind::WarningLimit`] is added and later
    /// warnings are dropped.
    #[must_use]
    pub const fn max_warnings(&self) -> usize {
        self.warnings
    }

    /// Sets [`Limits::max_warnings`].
    #[must_use]
    pub const fn with_max_warnings(mut self, n: usize) -> Self {
        self.warnings = n;
        self
    }

    /// Capture time without a packet after which a connection may be retired
    /// when the table is full.
    #[must_use]
    pub const fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Sets [`Limits::idle_timeout`].
    #[must_use]
    pub const fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything [`read_capture`] read from one capture file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capture {
    /// Packet records read (TCP or not).
    pub packets: usize,
    /// The TCP connections, in the order of their first packet
    /// (`connections[i].index == i`).
    pub connections: Vec<TcpConversation>,
    /// What could not be decoded or reassembled, in the order met.
    pub warnings: Vec<Warning>,
}

/// One TCP connection and its two reassembled byte streams.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpConversation {
    /// 0-based position in [`Capture::connections`], in order of first packet.
    pub index: usize,
    /// 0-based index of the connection's first packet in the capture.
    pub first_packet: usize,
    /// The client's address (see the [module docs](self#client-and-server)).
    pub client: SocketAddr,
    /// The server's address.
    pub server: SocketAddr,
    /// Whether the client's SYN (or the server's SYN+ACK) was captured; `false`
    /// when the capture starts in the middle of the connection.
    pub handshake_seen: bool,
    /// The reassembled bytes in the order they became contiguous; consecutive
    /// bytes in one direction are merged into one chunk, so chunks alternate
    /// direction.
    pub chunks: Vec<StreamChunk>,
}

impl TcpConversation {
    /// All bytes of one direction, concatenated.
    #[must_use]
    pub fn stream(&self, direction: Direction) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in self.chunks.iter().filter(|c| c.direction == direction) {
            out.extend_from_slice(&chunk.bytes);
        }
        out
    }
}

/// Which way bytes travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Direction {
    /// From the client to the server (binds, requests).
    ClientToServer,
    /// From the server to the client (bind acks, responses).
    ServerToClient,
}

impl Direction {
    /// The other direction.
    #[must_use]
    pub const fn reverse(self) -> Self {
        match self {
            Self::ClientToServer => Self::ServerToClient,
            Self::ServerToClient => Self::ClientToServer,
        }
    }
}

/// Contiguous bytes of one direction of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamChunk {
    /// Which way the bytes travelled.
    pub direction: Direction,
    /// Capture time of the segment that completed the chunk (its last bytes,
    /// or the segment that filled the gap before them).
    pub timestamp: DateTime<Utc>,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// Something in the capture that could not be decoded or reassembled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Warning {
    /// 0-based index of the packet concerned (for file-level problems, the
    /// index the next packet would have had).
    pub packet_index: usize,
    /// Capture time of that packet (for file-level problems, of the last
    /// packet read; the Unix epoch before the first).
    pub timestamp: DateTime<Utc>,
    /// The connection concerned, if any.
    pub conversation: Option<Conversation>,
    /// What happened.
    pub kind: WarningKind,
}

impl Warning {
    /// The index of the connection concerned ([`TcpConversation::index`]), if any.
    #[must_use]
    pub fn conn(&self) -> Option<usize> {
        self.conversation.map(|c| c.index)
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "packet {}", self.packet_index)?;
        if let Some(conversation) = self.conversation {
            write!(f, ", connection {}", conversation.index)?;
        }
        write!(f, ": {}", self.kind)
    }
}

/// The kinds of [`Warning`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum WarningKind {
    /// The file ends in the middle of a record; what came before was read.
    TruncatedFile,
    /// A record is malformed (for example an impossible length), so the rest
    /// of the file cannot be framed and is not read.
    CorruptRecord,
    /// A packet's link type is not one this module decodes (reported once per
    /// link type).
    UnsupportedLinkType(u32),
    /// A pcapng packet names an interface that was not described.
    UnknownInterface(u32),
    /// A packet's timestamp does not fit a date; the Unix epoch is used instead.
    BadTimestamp,
    /// A link-layer header is shorter than its type requires.
    MalformedLinkHeader,
    /// An IPv4 header is malformed.
    MalformedIpv4,
    /// An IPv6 header or extension header is malformed.
    MalformedIpv6,
    /// A TCP header is malformed.
    MalformedTcp,
    /// The packet was cut short by the capture's snapshot length: the bytes
    /// present are used and the rest become a gap.
    PacketTruncated,
    /// A non-first IP fragment: skipped (IP reassembly is not done).
    IpFragmentSkipped,
    /// The first fragment of a fragmented IP datagram: its TCP bytes are used
    /// as far as they go, the rest become a gap.
    IpFragmentIncomplete,
    /// An IPv6 extension header this module cannot skip (ESP): packet skipped.
    UnsupportedIpv6Header(u8),
    /// More live connections than [`Limits::max_connections`], none of them
    /// closed or idle: the new connection is ignored (reported once).
    ConnectionLimit,
    /// More bytes than [`Limits::max_out_of_order_bytes`] waiting behind a gap:
    /// the gap is given up (a [`WarningKind::MissingBytes`] follows).
    OutOfOrderLimit,
    /// More bytes than [`Limits::max_stream_bytes`] in one connection kept by
    /// [`read_capture`]: the rest is dropped (reported once per connection).
    StreamLimit,
    /// Bytes of a stream were never captured: the stream continues after them.
    MissingBytes {
        /// How many bytes are missing.
        len: u64,
    },
    /// Data sent after the sender's FIN: dropped.
    DataAfterFin,
    /// Data sent after a RST: dropped.
    DataAfterReset,
    /// [`Limits::max_warnings`] reached: later warnings are dropped.
    WarningLimit,
}

impl fmt::Display for WarningKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TruncatedFile => f.write_str("capture file truncated: last record incomplete"),
            Self::CorruptRecord => f.write_str("corrupt record: rest of the file skipped"),
            Self::UnsupportedLinkType(t) => write!(f, "unsupported link type {t}"),
            Self::UnknownInterface(i) => write!(f, "packet on undescribed interface {i}"),
            Self::BadTimestamp => f.write_str("timestamp out of range"),
            Self::MalformedLinkHeader => f.write_str("malformed link-layer header"),
            Self::MalformedIpv4 => f.write_str("malformed IPv4 header"),
            Self::MalformedIpv6 => f.write_str("malformed IPv6 header"),
            Self::MalformedTcp => f.write_str("malformed TCP header"),
            Self::PacketTruncated => {
                f.write_str("packet truncated by the capture's snapshot length")
            }
            Self::IpFragmentSkipped => f.write_str("non-first IP fragment skipped"),
            Self::IpFragmentIncomplete => {
                f.write_str("fragmented IP datagram: only the first fragment is used")
            }
            Self::UnsupportedIpv6Header(h) => write!(f, "IPv6 next header {h} cannot be skipped"),
            Self::ConnectionLimit => {
                f.write_str("connection limit reached: later connections ignored")
            }
            Self::OutOfOrderLimit => f.write_str("out-of-order buffer full: gap given up"),
            Self::StreamLimit => f.write_str("stream limit reached: later bytes dropped"),
            Self::MissingBytes { len } => write!(f, "{len} bytes never captured: skipped"),
            Self::DataAfterFin => f.write_str("data after FIN dropped"),
            Self::DataAfterReset => f.write_str("data after RST dropped"),
            Self::WarningLimit => f.write_str("warning limit reached: later warnings dropped"),
        }
    }
}

/// Why a capture could not be read at all.
///
/// Only the file header can cause this; problems in later records become
/// [`Warning`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// The first four bytes are neither a pcap nor a pcapng magic number.
    #[error("not a pcap or pcapng file (magic {magic:#010x})")]
    UnknownFormat {
        /// The first four bytes, read little-endian.
        magic: u32,
    },
    /// The file is shorter than its header.
    #[error("capture file header truncated")]
    TruncatedHeader,
    /// The header has a known magic number but does not parse.
    #[error("malformed capture file header")]
    MalformedHeader,
}

/// Reads a capture with the default [`Limits`].
///
/// See the [module docs](self) for what is decoded and how connections are
/// reassembled.
///
/// # Errors
///
/// [`CaptureError`] when the file header is unreadable. Everything after the
/// header is best effort: garbled packets become warnings, and a truncated
/// file yields what could be decoded plus a [`WarningKind::TruncatedFile`].
///
/// # Example
///
/// A one-packet capture (legacy pcap, raw IPv4) carrying 3 bytes of data:
///
/// ```
/// use kms_activation::dissect::{read_capture, Direction};
///
/// let mut ip = vec![0x45, 0, 0, 43, 0, 0, 0x40, 0, 64, 6, 0, 0];
/// ip.extend([10, 0, 0, 1, 10, 0, 0, 2]); // source, destination
/// ip.extend([0xc3, 0x50, 0x06, 0x98]); // ports 50000 -> 1688
/// ip.extend([0, 0, 0, 1, 0, 0, 0, 0]); // seq 1, ack 0
/// ip.extend([0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]); // PSH|ACK
/// ip.extend(b"abc");
///
/// let mut file = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]; // magic, version 2.4
/// file.extend([0; 8]); // time zone, accuracy
/// file.extend(65535u32.to_le_bytes()); // snapshot length
/// file.extend(101u32.to_le_bytes()); // link type: raw IP
/// file.extend([0; 8]); // timestamp
/// let len = u32::try_from(ip.len())?;
/// file.extend(len.to_le_bytes()); // captured length
/// file.extend(len.to_le_bytes()); // original length
/// file.extend(&ip);
///
/// let capture = read_capture(&file)?;
/// assert!(capture.warnings.is_empty());
/// let conn = &capture.connections[0];
/// assert_eq!(conn.server.port(), 1688);
/// assert_eq!(conn.stream(Direction::ClientToServer), b"abc");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_capture(bytes: &[u8]) -> Result<Capture, CaptureError> {
    read_capture_with_limits(bytes, &Limits::new())
}

/// Reads a capture, bounding memory by `limits`.
///
/// # Errors
///
/// As [`read_capture`].
pub fn read_capture_with_limits(bytes: &[u8], limits: &Limits) -> Result<Capture, CaptureError> {
    let mut warnings = Warnings::new(limits.max_warnings());
    let mut reader = capture::RecordReader::new();
    let mut reassembler =
        tcp::Reassembler::new(*limits, tcp::Collector::new(limits.max_stream_bytes()));
    reader.handle_input(bytes, &mut warnings, &mut |at, segment, warnings| {
        reassembler.handle_segment(at, segment, warnings);
    })?;
    reader.finish(&mut warnings)?;
    reassembler.finish(&mut warnings);
    Ok(Capture {
        packets: reader.packets(),
        connections: reassembler.into_sink().into_conversations(),
        warnings: warnings.into_vec(),
    })
}

/// Whether `first_bytes` start with a DCE/RPC connection-oriented PDU header:
/// version 5.0, a known connection-oriented PTYPE, little-endian ASCII data
/// representation (`10 00 00 00`), and a fragment length of at least 16.
///
/// Needs the whole 16-byte header; fewer bytes give `false`.
///
/// ```
/// use kms_activation::dissect::looks_like_rpc;
/// let bind = [5, 0, 11, 0x13, 0x10, 0, 0, 0, 0x78, 0, 0, 0, 1, 0, 0, 0];
/// assert!(looks_like_rpc(&bind));
/// assert!(!looks_like_rpc(b"GET / HTTP/1.1\r\n"));
/// ```
#[must_use]
pub fn looks_like_rpc(first_bytes: &[u8]) -> bool {
    let Some(header) = first_bytes.first_chunk::<16>() else {
        return false;
    };
    let [vers, minor, ptype, _flags, d0, d1, d2, d3, f0, f1, ..] = *header;
    // MS-RPCE 2.2.2.1 / DCE 1.1 §12.6: connection-oriented PDU types
    // (request, response, fault, bind, bind_ack, bind_nak, alter_context,
    // alter_context_resp, auth3, shutdown, co_cancel, orphaned).
    let known = matches!(ptype, 0 | 2 | 3 | 11..=19);
    vers == 5
        && minor == 0
        && known
        && [d0, d1, d2, d3] == [0x10, 0, 0, 0]
        && u16::from_le_bytes([f0, f1]) >= 16
}

/// Where in the capture something happened: a packet's index and capture time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    packet: usize,
    timestamp: DateTime<Utc>,
}

/// The bounded warning list shared by the layers. Every warning, whatever
/// its layer, takes a slot through [`Warnings::admit`].
#[derive(Debug)]
struct Warnings {
    list: Vec<Warning>,
    max: usize,
    count: usize,
    full: bool,
}

impl Warnings {
    fn new(max: usize) -> Self {
        Self {
            list: Vec::new(),
            max,
            count: 0,
            full: false,
        }
    }

    /// Takes a slot for one warning; `false` when the limit is reached (the
    /// first refusal queues the [`WarningKind::WarningLimit`] warning).
    fn admit(&mut self, at: Stamp) -> bool {
        if self.full {
            return false;
        }
        if self.count >= self.max {
            self.full = true;
            self.list.push(Warning {
                packet_index: at.packet,
                timestamp: at.timestamp,
                conversation: None,
                kind: WarningKind::WarningLimit,
            });
            return false;
        }
        self.count = self.count.saturating_add(1);
        true
    }

    fn push(&mut self, at: Stamp, conversation: Option<Conversation>, kind: WarningKind) {
        if self.admit(at) {
            self.list.push(Warning {
                packet_index: at.packet,
                timestamp: at.timestamp,
                conversation,
                kind,
            });
        }
    }

    /// Takes the warnings queued so far (the streaming dissector turns them
    /// into records as it goes).
    fn take(&mut self) -> std::vec::Drain<'_, Warning> {
        self.list.drain(..)
    }

    fn into_vec(self) -> Vec<Warning> {
        self.list
    }
}
