//! TCP reassembly: segments in capture order in, per-connection chunks out.
//!
//! Each direction of a connection is a [`Half`]: the sequence number of the
//! next byte expected, how many bytes of the stream have been delivered (or
//! given up as missing), and the segments waiting behind a gap. Sequence
//! numbers are compared modulo 2³² relative to the next expected one, and
//! turned into 64-bit stream offsets, so wraparound needs no special case.
//! See the [module docs](super#reassembly) for the rules.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use chrono::{DateTime, Utc};

use super::capture::Segment;
use super::{Direction, KMS_PORT, Limits, StreamChunk, TcpConversation, WarningKind, Warnings};

/// Segments waiting behind a gap, per direction. Together with
/// [`Limits::max_out_of_order_bytes`] this bounds the bookkeeping too: a
/// flood of one-byte segments cannot cost far more memory than its bytes.
pub(super) const MAX_PENDING_SEGMENTS: usize = 4096;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// The low 32 bits of a stream offset (sequence numbers wrap at 2³²).
fn low32(x: u64) -> u32 {
    let [b0, b1, b2, b3, ..] = x.to_le_bytes();
    u32::from_le_bytes([b0, b1, b2, b3])
}

/// A sequence-number difference read as a signed distance.
fn signed(x: u32) -> i32 {
    i32::from_ne_bytes(x.to_ne_bytes())
}

/// Where a warning belongs.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    packet: usize,
    conn: usize,
}

impl Ctx {
    fn warn(self, warnings: &mut Warnings, kind: WarningKind) {
        warnings.push(self.packet, Some(self.conn), kind);
    }
}

/// Chunks of one connection, with its byte budget.
#[derive(Debug)]
struct Output {
    chunks: Vec<StreamChunk>,
    total: usize,
    limit_hit: bool,
    max: usize,
}

impl Output {
    fn deliver(
        &mut self,
        direction: Direction,
        bytes: &[u8],
        timestamp: DateTime<Utc>,
        warnings: &mut Warnings,
        ctx: Ctx,
    ) {
        let room = self.max.saturating_sub(self.total);
        let take = room.min(bytes.len());
        if take < bytes.len() && !self.limit_hit {
            self.limit_hit = true;
            ctx.warn(warnings, WarningKind::StreamLimit);
        }
        let Some(bytes) = bytes.get(..take).filter(|b| !b.is_empty()) else {
            return;
        };
        self.total = self.total.saturating_add(take);
        match self.chunks.last_mut() {
            Some(last) if last.direction == direction => {
                last.bytes.extend_from_slice(bytes);
                last.timestamp = timestamp;
            }
            _ => self.chunks.push(StreamChunk {
                direction,
                timestamp,
                bytes: bytes.to_vec(),
            }),
        }
    }
}

/// A segment waiting behind a gap.
#[derive(Debug)]
struct Pending {
    bytes: Vec<u8>,
    timestamp: DateTime<Utc>,
}

/// One direction of a connection.
#[derive(Debug)]
struct Half {
    direction: Direction,
    /// The sender's initial sequence number, once its SYN is seen.
    isn: Option<u32>,
    /// Sequence number of stream offset `delivered`; `None` until the first
    /// segment from this side.
    next_seq: Option<u32>,
    /// Stream bytes delivered or given up as missing.
    delivered: u64,
    /// Out-of-order segments by stream offset.
    pending: BTreeMap<u64, Pending>,
    pending_bytes: usize,
    /// Stream offset of the FIN, once seen.
    fin: Option<u64>,
}

impl Half {
    fn new(direction: Direction) -> Self {
        Self {
            direction,
            isn: None,
            next_seq: None,
            delivered: 0,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            fin: None,
        }
    }

    /// The stream offset of sequence number `seq`; `None` before the stream
    /// started (an ancient duplicate) or before the first segment.
    fn offset_of(&self, seq: u32) -> Option<u64> {
        let next = self.next_seq?;
        let delta = signed(seq.wrapping_sub(next));
        self.delivered.checked_add_signed(i64::from(delta))
    }

    fn advance(&mut self, n: u64) {
        self.delivered = self.delivered.saturating_add(n);
        self.next_seq = self.next_seq.map(|s| s.wrapping_add(low32(n)));
    }

    /// Gives up the bytes before `target` as missing.
    fn skip_to(&mut self, target: u64, warnings: &mut Warnings, ctx: Ctx) {
        if let Some(len) = target.checked_sub(self.delivered).filter(|&n| n > 0) {
            ctx.warn(warnings, WarningKind::MissingBytes { len });
            self.advance(len);
        }
    }

    /// Delivers the pending segments that have become contiguous, stamped
    /// with `timestamp` (or their own when `None`).
    fn drain(
        &mut self,
        timestamp: Option<DateTime<Utc>>,
        out: &mut Output,
        warnings: &mut Warnings,
        ctx: Ctx,
    ) {
        while let Some(entry) = self.pending.first_entry() {
            let start = *entry.key();
            if start > self.delivered {
                break;
            }
            let pending = entry.remove();
            self.pending_bytes = self.pending_bytes.saturating_sub(pending.bytes.len());
            let skip = usize::try_from(self.delivered.saturating_sub(start)).unwrap_or(usize::MAX);
            if let Some(fresh) = pending.bytes.get(skip..).filter(|b| !b.is_empty()) {
                let ts = timestamp.unwrap_or(pending.timestamp);
                out.deliver(self.direction, fresh, ts, warnings, ctx);
                self.advance(fresh.len() as u64);
            }
        }
    }

    /// Takes the payload of a segment whose first byte has sequence number `seq`.
    #[expect(
        clippy::too_many_arguments,
        reason = "internal plumbing between the halves"
    )]
    fn accept(
        &mut self,
        seq: u32,
        payload: &[u8],
        timestamp: DateTime<Utc>,
        limits: &Limits,
        out: &mut Output,
        warnings: &mut Warnings,
        ctx: Ctx,
    ) {
        let Some(start) = self.offset_of(seq) else {
            return;
        };
        let mut payload = payload;
        if let Some(fin) = self.fin {
            let room = usize::try_from(fin.saturating_sub(start)).unwrap_or(usize::MAX);
            if room < payload.len() {
                ctx.warn(warnings, WarningKind::DataAfterFin);
                payload = payload.get(..room).unwrap_or_default();
            }
        }
        let mut warned = false;
        // Each round either returns or gives up one gap (consuming at least
        // one waiting segment, or reaching this one), so it ends.
        loop {
            if start <= self.delivered {
                let skip =
                    usize::try_from(self.delivered.saturating_sub(start)).unwrap_or(usize::MAX);
                let Some(fresh) = payload.get(skip..).filter(|b| !b.is_empty()) else {
                    return; // retransmission of delivered bytes
                };
                out.deliver(self.direction, fresh, timestamp, warnings, ctx);
                self.advance(fresh.len() as u64);
                self.drain(Some(timestamp), out, warnings, ctx);
                return;
            }
            if payload.is_empty() {
                return;
            }
            let fits = self.pending.len() < MAX_PENDING_SEGMENTS
                && self
                    .pending_bytes
                    .checked_add(payload.len())
                    .is_some_and(|n| n <= limits.max_out_of_order_bytes());
            if fits {
                self.insert(start, payload, timestamp);
                return;
            }
            if !warned {
                warned = true;
                ctx.warn(warnings, WarningKind::OutOfOrderLimit);
            }
            // Give up the first gap: continue at this segment or at the first
            // one waiting, whichever comes first.
            let target = self
                .pending
                .first_key_value()
                .map_or(start, |(&k, _)| k.min(start));
            self.skip_to(target, warnings, ctx);
            self.drain(Some(timestamp), out, warnings, ctx);
        }
    }

    fn insert(&mut self, start: u64, payload: &[u8], timestamp: DateTime<Utc>) {
        match self.pending.get_mut(&start) {
            Some(existing) if existing.bytes.len() >= payload.len() => {}
            Some(existing) => {
                self.pending_bytes = self
                    .pending_bytes
                    .saturating_sub(existing.bytes.len())
                    .saturating_add(payload.len());
                existing.bytes = payload.to_vec();
                existing.timestamp = timestamp;
            }
            None => {
                self.pending_bytes = self.pending_bytes.saturating_add(payload.len());
                self.pending.insert(
                    start,
                    Pending {
                        bytes: payload.to_vec(),
                        timestamp,
                    },
                );
            }
        }
    }

    /// The peer acknowledged up to sequence number `ack`: bytes of a gap it
    /// acknowledged were sent but not captured, so stop waiting for them.
    fn acknowledged(
        &mut self,
        ack: u32,
        timestamp: DateTime<Utc>,
        out: &mut Output,
        warnings: &mut Warnings,
        ctx: Ctx,
    ) {
        let Some(acked) = self.offset_of(ack).filter(|&a| a > self.delivered) else {
            return;
        };
        while let Some((&first, _)) = self.pending.first_key_value() {
            if first > acked {
                break;
            }
            self.skip_to(first, warnings, ctx);
            self.drain(Some(timestamp), out, warnings, ctx);
        }
    }

    /// Gives up every gap and delivers what is left (end of capture or RST).
    fn flush(&mut self, out: &mut Output, warnings: &mut Warnings, ctx: Ctx) {
        while let Some((&first, _)) = self.pending.first_key_value() {
            self.skip_to(first, warnings, ctx);
            self.drain(None, out, warnings, ctx);
        }
    }
}

/// Per-connection state.
#[derive(Debug)]
struct Conn {
    index: usize,
    first_packet: usize,
    client: SocketAddr,
    server: SocketAddr,
    handshake_seen: bool,
    client_half: Half,
    server_half: Half,
    out: Output,
    reset: bool,
    last_packet: usize,
}

impl Conn {
    fn finish(mut self, warnings: &mut Warnings) -> TcpConversation {
        let ctx = Ctx {
            packet: self.last_packet,
            conn: self.index,
        };
        for half in [&mut self.client_half, &mut self.server_half] {
            half.flush(&mut self.out, warnings, ctx);
            if !self.reset
                && let Some(fin) = half.fin
            {
                half.skip_to(fin, warnings, ctx);
            }
        }
        TcpConversation {
            index: self.index,
            first_packet: self.first_packet,
            client: self.client,
            server: self.server,
            handshake_seen: self.handshake_seen,
            chunks: self.out.chunks,
        }
    }
}

/// The endpoints of a connection in a fixed order.
type Key = (SocketAddr, SocketAddr);

fn key(a: SocketAddr, b: SocketAddr) -> Key {
    if a <= b { (a, b) } else { (b, a) }
}

/// Picks (client, server) for a connection whose first packet is `segment`.
fn roles(segment: &Segment<'_>) -> (SocketAddr, SocketAddr, bool) {
    let (src, dst) = (segment.src, segment.dst);
    let syn = segment.flags & SYN != 0;
    let ack = segment.flags & ACK != 0;
    if syn && !ack {
        (src, dst, true)
    } else if syn {
        (dst, src, true)
    } else if dst.port() == KMS_PORT {
        (src, dst, false)
    } else if src.port() == KMS_PORT || src.port() < dst.port() {
        (dst, src, false)
    } else {
        (src, dst, false)
    }
}

/// Reassembles every connection of a capture.
#[derive(Debug)]
pub(super) struct Reassembler {
    limits: Limits,
    conns: Vec<Conn>,
    by_key: HashMap<Key, usize>,
    limit_reported: bool,
}

impl Reassembler {
    pub(super) fn new(limits: Limits) -> Self {
        Self {
            limits,
            conns: Vec::new(),
            by_key: HashMap::new(),
            limit_reported: false,
        }
    }

    /// Whether `segment` opens a new connection on the 4-tuple of `conn`: a
    /// SYN without ACK that is not a retransmission of the client's SYN.
    fn reopens(conn: &Conn, segment: &Segment<'_>) -> bool {
        segment.flags & (SYN | ACK) == SYN
            && (segment.src != conn.client || conn.client_half.isn != Some(segment.seq))
    }

    fn lookup_or_open(
        &mut self,
        packet: usize,
        segment: &Segment<'_>,
        warnings: &mut Warnings,
    ) -> Option<usize> {
        let key = key(segment.src, segment.dst);
        if let Some(&i) = self.by_key.get(&key)
            && let Some(conn) = self.conns.get(i)
            && !Self::reopens(conn, segment)
        {
            return Some(i);
        }
        if self.conns.len() >= self.limits.max_connections() {
            if !self.limit_reported {
                self.limit_reported = true;
                warnings.push(packet, None, WarningKind::ConnectionLimit);
            }
            return None;
        }
        let index = self.conns.len();
        let (client, server, handshake_seen) = roles(segment);
        self.conns.push(Conn {
            index,
            first_packet: packet,
            client,
            server,
            handshake_seen,
            client_half: Half::new(Direction::ClientToServer),
            server_half: Half::new(Direction::ServerToClient),
            out: Output {
                chunks: Vec::new(),
                total: 0,
                limit_hit: false,
                max: self.limits.max_stream_bytes(),
            },
            reset: false,
            last_packet: packet,
        });
        self.by_key.insert(key, index);
        Some(index)
    }

    /// Takes one segment, in capture order.
    pub(super) fn handle_segment(
        &mut self,
        packet: usize,
        segment: &Segment<'_>,
        warnings: &mut Warnings,
    ) {
        let Some(index) = self.lookup_or_open(packet, segment, warnings) else {
            return;
        };
        let limits = self.limits;
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        conn.last_packet = packet;
        let ctx = Ctx {
            packet,
            conn: index,
        };
        let Conn {
            client,
            client_half,
            server_half,
            out,
            reset,
            ..
        } = conn;
        let (half, other) = if segment.src == *client {
            (client_half, server_half)
        } else {
            (server_half, client_half)
        };
        let flags = segment.flags;
        if *reset {
            if !segment.payload.is_empty() {
                ctx.warn(warnings, WarningKind::DataAfterReset);
            }
            return;
        }
        if flags & RST != 0 {
            *reset = true;
            half.flush(out, warnings, ctx);
            other.flush(out, warnings, ctx);
            return;
        }
        let syn = flags & SYN != 0;
        if syn && half.isn.is_none() && half.delivered == 0 {
            half.isn = Some(segment.seq);
            half.next_seq = Some(segment.seq.wrapping_add(1));
        }
        if half.next_seq.is_none() {
            half.next_seq = Some(segment.seq);
        }
        let data_seq = if syn {
            segment.seq.wrapping_add(1)
        } else {
            segment.seq
        };
        // The acknowledgement is about the other direction's earlier bytes:
        // settle them before this segment's data.
        if flags & ACK != 0 {
            other.acknowledged(segment.ack, segment.timestamp, out, warnings, ctx);
        }
        half.accept(
            data_seq,
            segment.payload,
            segment.timestamp,
            &limits,
            out,
            warnings,
            ctx,
        );
        if flags & FIN != 0 && half.fin.is_none() {
            half.fin = half
                .offset_of(data_seq)
                .map(|o| o.saturating_add(segment.payload.len() as u64));
        }
    }

    /// Ends the capture: flushes every gap and returns the conversations.
    pub(super) fn finish(self, warnings: &mut Warnings) -> Vec<TcpConversation> {
        self.conns
            .into_iter()
            .map(|conn| conn.finish(warnings))
            .collect()
    }
}
