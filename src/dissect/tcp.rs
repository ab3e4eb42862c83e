//! TCP reassembly: segments in capture order in, per-connection chunks out.
//!
//! Each direction of a connection is a [`Half`]: the sequence number of the
//! next byte expected, how many bytes of the stream have been delivered (or
//! given up as missing), and the segments waiting behind a gap. Sequence
//! numbers are compared modulo 2³² relative to the next expected one, and
//! turned into 64-bit stream offsets, so wraparound needs no special case.
//! See the [module docs](super#reassembly) for the rules.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;

use chrono::{DateTime, Utc};

use super::capture::Segment;
use super::{
    Conversation, Direction, KMS_PORT, Limits, Stamp, StreamChunk, TcpConversation, WarningKind,
    Warnings,
};

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
    at: Stamp,
    conversation: Conversation,
}

impl Ctx {
    fn warn(self, warnings: &mut Warnings, kind: WarningKind) {
        warnings.push(self.at, Some(self.conversation), kind);
    }

    /// This packet, at another capture time (bytes that waited behind a gap).
    fn at_time(self, timestamp: DateTime<Utc>) -> Stamp {
        Stamp {
            packet: self.at.packet,
            timestamp,
        }
    }
}

/// Where reassembled bytes go: one call per contiguous run of one direction.
type Deliver<'a> = dyn FnMut(Direction, &[u8], Stamp, &mut Warnings) + 'a;

/// What the reassembler tells about each connection.
pub(super) trait Sink {
    /// Per-connection state of the sink.
    type State;

    /// A connection starts.
    fn open(
        &mut self,
        conversation: Conversation,
        first_packet: usize,
        handshake_seen: bool,
    ) -> Self::State;

    /// Bytes of one direction became contiguous.
    fn deliver(
        &mut self,
        state: &mut Self::State,
        conversation: Conversation,
        direction: Direction,
        bytes: &[u8],
        at: Stamp,
        warnings: &mut Warnings,
    );

    /// The connection is retired (closed, idle, or the capture ended): no
    /// more bytes will come.
    fn close(
        &mut self,
        state: Self::State,
        conversation: Conversation,
        at: Stamp,
        warnings: &mut Warnings,
    );
}

/// The sink of [`super::read_capture`]: keeps every connection's chunks.
#[derive(Debug, Default)]
pub(super) struct Collector {
    finished: Vec<TcpConversation>,
    max_stream_bytes: usize,
}

/// What [`Collector`] keeps of one connection.
#[derive(Debug)]
pub(super) struct Collected {
    first_packet: usize,
    handshake_seen: bool,
    chunks: Vec<StreamChunk>,
    total: usize,
    limit_hit: bool,
}

impl Collector {
    pub(super) fn new(max_stream_bytes: usize) -> Self {
        Self {
            finished: Vec::new(),
            max_stream_bytes,
        }
    }

    /// The conversations, in the order of their first packet.
    pub(super) fn into_conversations(mut self) -> Vec<TcpConversation> {
        self.finished.sort_by_key(|c| c.index);
        self.finished
    }
}

impl Sink for Collector {
    type State = Collected;

    fn open(&mut self, _: Conversation, first_packet: usize, handshake_seen: bool) -> Collected {
        Collected {
            first_packet,
            handshake_seen,
            chunks: Vec::new(),
            total: 0,
            limit_hit: false,
        }
    }

    fn deliver(
        &mut self,
        state: &mut Collected,
        conversation: Conversation,
        direction: Direction,
        bytes: &[u8],
        at: Stamp,
        warnings: &mut Warnings,
    ) {
        let room = self.max_stream_bytes.saturating_sub(state.total);
        let take = room.min(bytes.len());
        if take < bytes.len() && !state.limit_hit {
            state.limit_hit = true;
            warnings.push(at, Some(conversation), WarningKind::StreamLimit);
        }
        let Some(bytes) = bytes.get(..take).filter(|b| !b.is_empty()) else {
            return;
        };
        state.total = state.total.saturating_add(take);
        match state.chunks.last_mut() {
            Some(last) if last.direction == direction => {
                last.bytes.extend_from_slice(bytes);
                last.timestamp = at.timestamp;
            }
            _ => state.chunks.push(StreamChunk {
                direction,
                timestamp: at.timestamp,
                bytes: bytes.to_vec(),
            }),
        }
    }

    fn close(&mut self, state: Collected, conversation: Conversation, _: Stamp, _: &mut Warnings) {
        self.finished.push(TcpConversation {
            index: conversation.index,
            first_packet: state.first_packet,
            client: conversation.client,
            server: conversation.server,
            handshake_seen: state.handshake_seen,
            chunks: state.chunks,
        });
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
        out: &mut Deliver<'_>,
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
                let at = ctx.at_time(timestamp.unwrap_or(pending.timestamp));
                out(self.direction, fresh, at, warnings);
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
        out: &mut Deliver<'_>,
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
                out(self.direction, fresh, ctx.at_time(timestamp), warnings);
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
        out: &mut Deliver<'_>,
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
    fn flush(&mut self, out: &mut Deliver<'_>, warnings: &mut Warnings, ctx: Ctx) {
        while let Some((&first, _)) = self.pending.first_key_value() {
            self.skip_to(first, warnings, ctx);
            self.drain(None, out, warnings, ctx);
        }
    }
    /// Whether the sender's FIN was seen and everything before it delivered.
    fn is_finished(&self) -> bool {
        self.fin.is_some_and(|fin| self.delivered >= fin) && self.pending.is_empty()
    }
}

/// Per-connection state.
#[derive(Debug)]
struct Conn<T> {
    conversation: Conversation,
    client_half: Half,
    server_half: Half,
    reset: bool,
    /// Whether the connection is in the closed queue.
    queued_closed: bool,
    last: Stamp,
    state: T,
}

impl<T> Conn<T> {
    fn is_closed(&self) -> bool {
        self.reset || (self.client_half.is_finished() && self.server_half.is_finished())
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

/// Reassembles the connections of a capture, at most
/// [`Limits::max_connections`] at a time, and hands their bytes to a [`Sink`].
#[derive(Debug)]
pub(super) struct Reassembler<S: Sink> {
    limits: Limits,
    sink: S,
    conns: HashMap<Key, Conn<S::State>>,
    /// Closed connections in the order they closed (entries of connections
    /// retired or reopened since are skipped).
    closed: VecDeque<(Key, usize)>,
    next_index: usize,
    limit_reported: bool,
}

impl<S: Sink> Reassembler<S> {
    pub(super) fn new(limits: Limits, sink: S) -> Self {
        Self {
            limits,
            sink,
            conns: HashMap::new(),
            closed: VecDeque::new(),
            next_index: 0,
            limit_reported: false,
        }
    }

    /// The sink, to take what it produced so far.
    pub(super) fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Whether `segment` opens a new connection on the 4-tuple of `conn`: a
    /// SYN without ACK that is not a retransmission of the client's SYN.
    fn reopens(conn: &Conn<S::State>, segment: &Segment<'_>) -> bool {
        segment.flags & (SYN | ACK) == SYN
            && (segment.src != conn.conversation.client
                || conn.client_half.isn != Some(segment.seq))
    }

    /// Ends a connection: gives up its gaps and tells the sink.
    fn retire(&mut self, key: &Key, warnings: &mut Warnings) {
        let Some(mut conn) = self.conns.remove(key) else {
            return;
        };
        let ctx = Ctx {
            at: conn.last,
            conversation: conn.conversation,
        };
        let sink = &mut self.sink;
        let state = &mut conn.state;
        let conversation = conn.conversation;
        let mut out = |direction: Direction, bytes: &[u8], at: Stamp, warnings: &mut Warnings| {
            sink.deliver(state, conversation, direction, bytes, at, warnings);
        };
        for half in [&mut conn.client_half, &mut conn.server_half] {
            half.flush(&mut out, warnings, ctx);
            if !conn.reset
                && let Some(fin) = half.fin
            {
                half.skip_to(fin, warnings, ctx);
            }
        }
        self.sink
            .close(conn.state, conversation, conn.last, warnings);
    }

    /// Retires the oldest closed connection, or else the one idle longest if
    /// it has been idle long enough; `false` when neither exists.
    fn make_room(&mut self, now: Stamp, warnings: &mut Warnings) -> bool {
        while let Some((key, index)) = self.closed.pop_front() {
            if self
                .conns
                .get(&key)
                .is_some_and(|c| c.conversation.index == index)
            {
                self.retire(&key, warnings);
                return true;
            }
        }
        let idle = self
            .conns
            .iter()
            .min_by_key(|(_, c)| (c.last.timestamp, c.conversation.index))
            .filter(|(_, c)| {
                now.timestamp
                    .signed_duration_since(c.last.timestamp)
                    .to_std()
                    .is_ok_and(|idle| idle >= self.limits.idle_timeout())
            })
            .map(|(key, _)| *key);
        match idle {
            Some(key) => {
                self.retire(&key, warnings);
                true
            }
            None => false,
        }
    }

    fn lookup_or_open(
        &mut self,
        at: Stamp,
        segment: &Segment<'_>,
        warnings: &mut Warnings,
    ) -> Option<Key> {
        let key = key(segment.src, segment.dst);
        if let Some(conn) = self.conns.get(&key) {
            if !Self::reopens(conn, segment) {
                return Some(key);
            }
            self.retire(&key, warnings);
        }
        if self.conns.len() >= self.limits.max_connections() && !self.make_room(at, warnings) {
            if !self.limit_reported {
                self.limit_reported = true;
                warnings.push(at, None, WarningKind::ConnectionLimit);
            }
            return None;
        }
        let (client, server, handshake_seen) = roles(segment);
        let conversation = Conversation {
            index: self.next_index,
            client,
            server,
        };
        self.next_index = self.next_index.saturating_add(1);
        let state = self.sink.open(conversation, at.packet, handshake_seen);
        self.conns.insert(
            key,
            Conn {
                conversation,
                client_half: Half::new(Direction::ClientToServer),
                server_half: Half::new(Direction::ServerToClient),
                reset: false,
                queued_closed: false,
                last: at,
                state,
            },
        );
        Some(key)
    }

    /// Takes one segment, in capture order.
    pub(super) fn handle_segment(
        &mut self,
        at: Stamp,
        segment: &Segment<'_>,
        warnings: &mut Warnings,
    ) {
        let Some(key) = self.lookup_or_open(at, segment, warnings) else {
            return;
        };
        let limits = self.limits;
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        conn.last = at;
        let ctx = Ctx {
            at,
            conversation: conn.conversation,
        };
        let Conn {
            conversation,
            client_half,
            server_half,
            reset,
            state,
            ..
        } = conn;
        let conversation = *conversation;
        let sink = &mut self.sink;
        let mut out = |direction: Direction, bytes: &[u8], at: Stamp, warnings: &mut Warnings| {
            sink.deliver(state, conversation, direction, bytes, at, warnings);
        };
        let (half, other) = if segment.src == conversation.client {
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
            half.flush(&mut out, warnings, ctx);
            other.flush(&mut out, warnings, ctx);
        } else {
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
                other.acknowledged(segment.ack, at.timestamp, &mut out, warnings, ctx);
            }
            half.accept(
                data_seq,
                segment.payload,
                at.timestamp,
                &limits,
                &mut out,
                warnings,
                ctx,
            );
            if flags & FIN != 0 && half.fin.is_none() {
                half.fin = half
                    .offset_of(data_seq)
                    .map(|o| o.saturating_add(segment.payload.len() as u64));
            }
        }
        if !conn.queued_closed && conn.is_closed() {
            conn.queued_closed = true;
            self.closed.push_back((key, conn.conversation.index));
        }
    }

    /// Ends the capture: retires every connection, in the order of their
    /// first packet.
    pub(super) fn finish(&mut self, warnings: &mut Warnings) {
        let mut live: Vec<(usize, Key)> = self
            .conns
            .iter()
            .map(|(key, conn)| (conn.conversation.index, *key))
            .collect();
        live.sort_unstable();
        for (_, key) in live {
            self.retire(&key, warnings);
        }
    }

    /// The sink, once the capture is finished.
    pub(super) fn into_sink(self) -> S {
        self.sink
    }
}
