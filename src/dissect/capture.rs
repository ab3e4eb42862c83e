//! Capture files (pcap, pcapng) and the link, IP and TCP headers inside them.
//!
//! [`RecordReader`] takes a capture file in pieces, frames its records (one
//! buffered at a time) and hands every TCP segment it can decode to a
//! callback; everything else becomes a warning or is ignored. Nothing here
//! allocates per packet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use chrono::{DateTime, Utc};
use pcap_parser::pcapng::{Block, parse_block_be, parse_block_le, parse_sectionheaderblock};
use pcap_parser::traits::PcapNGPacketBlock;
use pcap_parser::{
    PcapError, parse_pcap_frame, parse_pcap_frame_be, parse_pcap_frame_modified, parse_pcap_header,
};

use super::{CaptureError, Stamp, WarningKind, Warnings};

/// Legacy pcap magic numbers, as the first four bytes read little-endian.
/// Microsecond, nanosecond, "modified" (Kuznetzov) format; then the
/// byte-swapped microsecond and nanosecond forms.
const PCAP_MAGICS: [u32; 5] = [
    0xa1b2_c3d4,
    0xa1b2_3c4d,
    0xa1b2_cd34,
    0xd4c3_b2a1,
    0x4d3c_b2a1,
];
/// pcapng section header block type (a palindrome, so either byte order).
const PCAPNG_MAGIC: u32 = 0x0a0d_0d0a;
/// A legacy record claiming more than this is taken as corruption, not
/// truncation (Wireshark's usual maximum snapshot length).
const MAX_RECORD_LEN: u32 = 256 * 1024;

/// Link types (<https://www.tcpdump.org/linktypes.html>).
mod linktype {
    pub(super) const NULL: u32 = 0;
    pub(super) const ETHERNET: u32 = 1;
    /// `DLT_RAW` as written by most systems' libpcap before the 101 mapping.
    pub(super) const RAW_DLT12: u32 = 12;
    /// `DLT_RAW` on OpenBSD.
    pub(super) const RAW_DLT14: u32 = 14;
    pub(super) const RAW: u32 = 101;
    pub(super) const LOOP: u32 = 108;
    pub(super) const LINUX_SLL: u32 = 113;
    pub(super) const IPV4: u32 = 228;
    pub(super) const IPV6: u32 = 229;
    pub(super) const LINUX_SLL2: u32 = 276;
}

/// `EtherType` values.
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;

/// IP protocol numbers.
const PROTO_TCP: u8 = 6;
const PROTO_IPV6_HOP_BY_HOP: u8 = 0;
const PROTO_IPV6_ROUTING: u8 = 43;
const PROTO_IPV6_FRAGMENT: u8 = 44;
const PROTO_ESP: u8 = 50;
const PROTO_AH: u8 = 51;
const PROTO_IPV6_DEST_OPTS: u8 = 60;
const PROTO_MOBILITY: u8 = 135;
const PROTO_HIP: u8 = 139;
const PROTO_SHIM6: u8 = 140;
const PROTO_EXPERIMENT1: u8 = 253;
const PROTO_EXPERIMENT2: u8 = 254;

/// The largest pcapng block accepted; a longer one is taken as corruption.
const MAX_BLOCK_LEN: u32 = 16 << 20;
/// Interface descriptions kept per pcapng section; packets on later ones
/// are reported as on an unknown interface.
const MAX_INTERFACES: usize = 1024;
/// Length of a legacy pcap file header.
const LEGACY_HEADER_LEN: usize = 24;
/// pcapng byte-order magic, read little-endian.
const PCAPNG_BYTE_ORDER: u32 = 0x1a2b_3c4d;

/// One decoded TCP segment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Segment<'a> {
    pub(super) src: SocketAddr,
    pub(super) dst: SocketAddr,
    pub(super) seq: u32,
    pub(super) ack: u32,
    pub(super) flags: u8,
    pub(super) payload: &'a [u8],
}

/// What to do with each decoded segment.
pub(super) type OnSegment<'f> = dyn FnMut(Stamp, &Segment<'_>, &mut Warnings) + 'f;

fn header_error<I>(e: &nom::Err<PcapError<I>>) -> CaptureError {
    match e {
        nom::Err::Incomplete(_) => CaptureError::TruncatedHeader,
        nom::Err::Error(_) | nom::Err::Failure(_) => CaptureError::MalformedHeader,
    }
}

/// Builds a timestamp from seconds and a fraction in `units_per_sec`.
fn timestamp(secs: i64, fraction: u64, units_per_sec: u64) -> Option<DateTime<Utc>> {
    let units = units_per_sec.max(1);
    let carry = i64::try_from(fraction / units).ok()?;
    let rest = u128::from(fraction % units);
    let nanos = u32::try_from(rest * 1_000_000_000 / u128::from(units)).ok()?;
    DateTime::from_timestamp(secs.checked_add(carry)?, nanos)
}

/// Units per second of a pcapng `if_tsresol` value.
fn ts_resolution(tsresol: u8) -> Option<u64> {
    if tsresol & 0x80 == 0 {
        10u64.checked_pow(u32::from(tsresol))
    } else {
        1u64.checked_shl(u32::from(tsresol & 0x7f))
    }
}

/// What a pcapng interface description tells about its packets.
#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: u32,
    units_per_sec: u64,
    offset_secs: i64,
}

/// A legacy pcap file's settings, from its header.
#[derive(Debug, Clone, Copy)]
struct Legacy {
    big_endian: bool,
    modified: bool,
    units_per_sec: u64,
    linktype: u32,
}

impl Legacy {
    /// Length of a record header.
    fn record_header_len(self) -> usize {
        if self.modified { 24 } else { 16 }
    }
}

/// Where the reader is in the file.
#[derive(Debug)]
enum State {
    /// Before the first four bytes.
    Magic,
    /// Reading a legacy pcap header.
    LegacyHeader,
    /// Reading legacy records.
    Legacy(Legacy),
    /// Reading the first pcapng section header.
    PcapngHeader,
    /// Reading pcapng blocks.
    Pcapng {
        big_endian: bool,
        interfaces: Vec<Interface>,
    },
    /// A record could not be framed: the rest of the file is ignored.
    Stopped,
}

/// How many bytes the next unit (header, record, block) needs.
enum Need {
    /// At least this many bytes before the length is known.
    Prefix(usize),
    /// The unit is exactly this long.
    Whole(usize),
    /// The unit cannot be framed: stop reading.
    Corrupt,
}

fn read_u32(bytes: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let end = at.checked_add(4)?;
    let b = bytes.get(at..end)?.first_chunk::<4>()?;
    Some(if big_endian {
        u32::from_be_bytes(*b)
    } else {
        u32::from_le_bytes(*b)
    })
}

/// A push reader of capture files: bytes in, in pieces of any size; one
/// callback per decoded TCP segment out. It buffers at most one record.
#[derive(Debug)]
pub(super) struct RecordReader {
    state: State,
    /// The start of an incomplete unit.
    buffer: Vec<u8>,
    /// Link types already reported as unsupported.
    reported_linktypes: Vec<u32>,
    /// Index of the next packet record.
    packets: usize,
    /// Capture time of the last packet read.
    last_timestamp: DateTime<Utc>,
}

impl RecordReader {
    pub(super) fn new() -> Self {
        Self {
            state: State::Magic,
            buffer: Vec::new(),
            reported_linktypes: Vec::new(),
            packets: 0,
            last_timestamp: DateTime::UNIX_EPOCH,
        }
    }

    /// Packet records read so far.
    pub(super) fn packets(&self) -> usize {
        self.packets
    }

    /// Where the next file-level problem would be reported.
    pub(super) fn stamp(&self) -> Stamp {
        Stamp {
            packet: self.packets,
            timestamp: self.last_timestamp,
        }
    }

    fn warn(&self, warnings: &mut Warnings, kind: WarningKind) {
        warnings.push(self.stamp(), None, kind);
    }

    /// Whether the file header has been read.
    pub(super) fn has_header(&self) -> bool {
        !matches!(
            self.state,
            State::Magic | State::LegacyHeader | State::PcapngHeader
        )
    }

    /// The length of the unit starting at `bytes`.
    fn need(&self, bytes: &[u8]) -> Result<Need, CaptureError> {
        Ok(match &self.state {
            State::Magic => Need::Prefix(4),
            State::LegacyHeader => Need::Whole(LEGACY_HEADER_LEN),
            State::Legacy(legacy) => {
                let header = legacy.record_header_len();
                match read_u32(bytes, 8, legacy.big_endian) {
                    None => Need::Prefix(header),
                    Some(caplen) if caplen > MAX_RECORD_LEN => Need::Corrupt,
                    Some(caplen) => Need::Whole(header.saturating_add(caplen as usize)),
                }
            }
            State::PcapngHeader => match block_len(bytes, false) {
                Some(Ok(len)) => Need::Whole(len),
                Some(Err(())) => return Err(CaptureError::MalformedHeader),
                None => Need::Prefix(12),
            },
            State::Pcapng { big_endian, .. } => match block_len(bytes, *big_endian) {
                Some(Ok(len)) => Need::Whole(len),
                Some(Err(())) => Need::Corrupt,
                None => Need::Prefix(12),
            },
            State::Stopped => Need::Prefix(0),
        })
    }

    /// Takes the next piece of the file. Every byte is consumed: a unit
    /// that is not yet whole waits in the buffer for the next piece.
    ///
    /// # Errors
    ///
    /// When the file header is unreadable.
    pub(super) fn handle_input(
        &mut self,
        mut input: &[u8],
        warnings: &mut Warnings,
        on_segment: &mut OnSegment<'_>,
    ) -> Result<(), CaptureError> {
        while !input.is_empty() {
            if matches!(self.state, State::Stopped) {
                return Ok(());
            }
            if self.buffer.is_empty() {
                // Fast path: whole units straight from the input.
                match self.need(input)? {
                    Need::Whole(len) if len <= input.len() => {
                        let (unit, rest) = input.split_at(len);
                        self.unit(unit, warnings, on_segment)?;
                        input = rest;
                        continue;
                    }
                    Need::Corrupt => {
                        self.stop(warnings);
                        return Ok(());
                    }
                    Need::Prefix(len)
                        if matches!(self.state, State::Magic) && len <= input.len() =>
                    {
                        // Only the magic number is read by prefix alone.
                        self.magic(input)?;
                        continue;
                    }
                    _ => {}
                }
            }
            // Slow path: grow the buffer towards the unit's length.
            let target = match self.need(&self.buffer)? {
                Need::Prefix(len) | Need::Whole(len) => len,
                Need::Corrupt => {
                    self.stop(warnings);
                    return Ok(());
                }
            };
            let want = target.saturating_sub(self.buffer.len()).max(1);
            let (take, rest) = input.split_at(want.min(input.len()));
            self.buffer.extend_from_slice(take);
            input = rest;
            match self.need(&self.buffer)? {
                Need::Whole(len) if len <= self.buffer.len() => {
                    let unit = std::mem::take(&mut self.buffer);
                    let result = self.unit(&unit, warnings, on_segment);
                    // Keep the allocation for the next unit.
                    self.buffer = unit;
                    self.buffer.clear();
                    result?;
                }
                Need::Prefix(len)
                    if matches!(self.state, State::Magic) && len <= self.buffer.len() =>
                {
                    let head = std::mem::take(&mut self.buffer);
                    self.magic(&head)?;
                    // The magic number is part of the header that follows.
                    self.buffer = head;
                }
                Need::Corrupt => {
                    self.stop(warnings);
                    return Ok(());
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The end of the file.
    ///
    /// # Errors
    ///
    /// When the file ended inside its header.
    pub(super) fn finish(&mut self, warnings: &mut Warnings) -> Result<(), CaptureError> {
        if !self.has_header() {
            return Err(CaptureError::TruncatedHeader);
        }
        if !self.buffer.is_empty() && !matches!(self.state, State::Stopped) {
            self.buffer.clear();
            self.warn(warnings, WarningKind::TruncatedFile);
        }
        Ok(())
    }

    fn stop(&mut self, warnings: &mut Warnings) {
        self.warn(warnings, WarningKind::CorruptRecord);
        self.state = State::Stopped;
        self.buffer = Vec::new();
    }

    /// Picks the format from the first four bytes (not consumed).
    fn magic(&mut self, head: &[u8]) -> Result<(), CaptureError> {
        let Some(magic) = head.first_chunk::<4>().map(|m| u32::from_le_bytes(*m)) else {
            return Err(CaptureError::TruncatedHeader);
        };
        self.state = if PCAP_MAGICS.contains(&magic) {
            State::LegacyHeader
        } else if magic == PCAPNG_MAGIC {
            State::PcapngHeader
        } else {
            return Err(CaptureError::UnknownFormat { magic });
        };
        Ok(())
    }

    /// One whole header, record or block.
    fn unit(
        &mut self,
        unit: &[u8],
        warnings: &mut Warnings,
        on_segment: &mut OnSegment<'_>,
    ) -> Result<(), CaptureError> {
        match &mut self.state {
            State::Magic => self.magic(unit)?,
            State::LegacyHeader => {
                let (_, header) = parse_pcap_header(unit).map_err(|e| header_error(&e))?;
                self.state = State::Legacy(Legacy {
                    big_endian: header.is_bigendian(),
                    modified: header.is_modified_format(),
                    units_per_sec: if header.is_nanosecond_precision() {
                        1_000_000_000
                    } else {
                        1_000_000
                    },
                    linktype: u32::from_ne_bytes(header.network.0.to_ne_bytes()),
                });
            }
            State::Legacy(legacy) => {
                let legacy = *legacy;
                let parsed = if legacy.modified {
                    parse_pcap_frame_modified(unit)
                } else if legacy.big_endian {
                    parse_pcap_frame_be(unit)
                } else {
                    parse_pcap_frame(unit)
                };
                let Ok((_, record)) = parsed else {
                    self.stop(warnings);
                    return Ok(());
                };
                let ts = timestamp(
                    i64::from(record.ts_sec),
                    u64::from(record.ts_usec),
                    legacy.units_per_sec,
                );
                self.packet(ts, legacy.linktype, record.data, warnings, on_segment);
            }
            State::PcapngHeader => {
                let (_, section) = parse_sectionheaderblock(unit).map_err(|e| header_error(&e))?;
                self.state = State::Pcapng {
                    big_endian: section.big_endian(),
                    interfaces: Vec::new(),
                };
            }
            State::Pcapng { .. } => self.block(unit, warnings, on_segment),
            State::Stopped => {}
        }
        Ok(())
    }

    fn block(&mut self, unit: &[u8], warnings: &mut Warnings, on_segment: &mut OnSegment<'_>) {
        let State::Pcapng {
            big_endian,
            interfaces,
        } = &mut self.state
        else {
            return;
        };
        let parsed = if *big_endian {
            parse_block_be(unit)
        } else {
            parse_block_le(unit)
        };
        let Ok((_, block)) = parsed else {
            self.stop(warnings);
            return;
        };
        match block {
            Block::SectionHeader(section) => {
                *big_endian = section.big_endian();
                interfaces.clear();
            }
            Block::InterfaceDescription(idb) if interfaces.len() < MAX_INTERFACES => {
                interfaces.push(Interface {
                    linktype: u32::from_ne_bytes(idb.linktype.0.to_ne_bytes()),
                    units_per_sec: ts_resolution(idb.if_tsresol).unwrap_or(1_000_000),
                    offset_secs: idb.if_tsoffset,
                });
            }
            Block::EnhancedPacket(epb) => {
                let iface = usize::try_from(epb.if_id)
                    .ok()
                    .and_then(|i| interfaces.get(i))
                    .copied();
                let Some(iface) = iface else {
                    self.unknown_interface(epb.if_id, warnings);
                    return;
                };
                let raw = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                let units = iface.units_per_sec.max(1);
                let ts = i64::try_from(raw / units)
                    .ok()
                    .and_then(|secs| secs.checked_add(iface.offset_secs))
                    .and_then(|secs| timestamp(secs, raw % units, units));
                self.packet(ts, iface.linktype, epb.packet_data(), warnings, on_segment);
            }
            // Simple packet blocks have no timestamp and belong to interface 0.
            Block::SimplePacket(spb) => {
                let Some(iface) = interfaces.first().copied() else {
                    self.unknown_interface(0, warnings);
                    return;
                };
                let epoch = Some(DateTime::UNIX_EPOCH);
                self.packet(
                    epoch,
                    iface.linktype,
                    spb.packet_data(),
                    warnings,
                    on_segment,
                );
            }
            _ => {}
        }
    }

    /// A packet on an interface the section did not describe.
    fn unknown_interface(&mut self, if_id: u32, warnings: &mut Warnings) {
        self.warn(warnings, WarningKind::UnknownInterface(if_id));
        self.packets = self.packets.saturating_add(1);
    }

    /// Decodes one packet record and advances the packet index.
    fn packet(
        &mut self,
        ts: Option<DateTime<Utc>>,
        linktype: u32,
        data: &[u8],
        warnings: &mut Warnings,
        on_segment: &mut OnSegment<'_>,
    ) {
        let at = Stamp {
            packet: self.packets,
            timestamp: ts.unwrap_or(DateTime::UNIX_EPOCH),
        };
        if ts.is_none() {
            warnings.push(at, None, WarningKind::BadTimestamp);
        }
        self.last_timestamp = at.timestamp;
        match link_payload(linktype, data) {
            Link::Ipv4(ip) => {
                if let Some(segment) = ipv4(ip, warnings, at) {
                    on_segment(at, &segment, warnings);
                }
            }
            Link::Ipv6(ip) => {
                if let Some(segment) = ipv6(ip, warnings, at) {
                    on_segment(at, &segment, warnings);
                }
            }
            Link::Other => {}
            Link::Malformed => warnings.push(at, None, WarningKind::MalformedLinkHeader),
            Link::Unsupported => {
                if !self.reported_linktypes.contains(&linktype) {
                    self.reported_linktypes.push(linktype);
                    warnings.push(at, None, WarningKind::UnsupportedLinkType(linktype));
                }
            }
        }
        self.packets = self.packets.saturating_add(1);
    }
}

/// The total length of the pcapng block starting at `bytes`: `None` while
/// fewer than 12 bytes are there, `Err` when the length is impossible.
fn block_len(bytes: &[u8], big_endian: bool) -> Option<Result<usize, ()>> {
    let kind = read_u32(bytes, 0, false)?;
    // A section header carries its own byte order.
    let big_endian = if kind == PCAPNG_MAGIC {
        match read_u32(bytes, 8, false)? {
            PCAPNG_BYTE_ORDER => false,
            bom if bom == PCAPNG_BYTE_ORDER.swap_bytes() => true,
            _ => return Some(Err(())),
        }
    } else {
        big_endian
    };
    let len = read_u32(bytes, 4, big_endian)?;
    if len < 12 || len % 4 != 0 || len > MAX_BLOCK_LEN {
        return Some(Err(()));
    }
    Some(usize::try_from(len).map_err(|_| ()))
}

/// What the link layer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link<'a> {
    Ipv4(&'a [u8]),
    Ipv6(&'a [u8]),
    /// A protocol this module ignores (ARP, LLC, ...).
    Other,
    /// The link header is too short.
    Malformed,
    /// A link type this module does not decode.
    Unsupported,
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let end = at.checked_add(2)?;
    bytes
        .get(at..end)?
        .first_chunk::<2>()
        .map(|b| u16::from_be_bytes(*b))
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    bytes
        .get(at..end)?
        .first_chunk::<4>()
        .map(|b| u32::from_be_bytes(*b))
}

fn by_ethertype(ethertype: u16, rest: &[u8]) -> Link<'_> {
    match ethertype {
        ETHERTYPE_IPV4 => Link::Ipv4(rest),
        ETHERTYPE_IPV6 => Link::Ipv6(rest),
        _ => Link::Other,
    }
}

/// BSD address families seen in NULL / LOOP headers.
fn by_family(family: u32, rest: &[u8]) -> Link<'_> {
    match family {
        2 => Link::Ipv4(rest),
        // AF_INET6: Linux 10, Windows (Npcap loopback) 23, NetBSD/OpenBSD 24,
        // FreeBSD 28, macOS 30.
        10 | 23 | 24 | 28 | 30 => Link::Ipv6(rest),
        _ => Link::Other,
    }
}

fn by_version(ip: &[u8]) -> Link<'_> {
    match ip.first().map(|b| b >> 4) {
        Some(4) => Link::Ipv4(ip),
        Some(6) => Link::Ipv6(ip),
        _ => Link::Malformed,
    }
}

/// Strips the link-layer header.
fn link_payload(linktype: u32, data: &[u8]) -> Link<'_> {
    match linktype {
        linktype::ETHERNET => {
            let mut at = 12;
            loop {
                let Some(ethertype) = be16(data, at) else {
                    return Link::Malformed;
                };
                let Some(next) = at.checked_add(2) else {
                    return Link::Malformed;
                };
                if matches!(
                    ethertype,
                    ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD
                ) {
                    // Tag control information (2 bytes), then the next EtherType.
                    at = next.saturating_add(2);
                    continue;
                }
                return data
                    .get(next..)
                    .map_or(Link::Malformed, |rest| by_ethertype(ethertype, rest));
            }
        }
        linktype::LINUX_SLL => match (be16(data, 14), data.get(16..)) {
            (Some(proto), Some(rest)) => by_ethertype(proto, rest),
            _ => Link::Malformed,
        },
        linktype::LINUX_SLL2 => match (be16(data, 0), data.get(20..)) {
            (Some(proto), Some(rest)) => by_ethertype(proto, rest),
            _ => Link::Malformed,
        },
        linktype::NULL => match (data.first_chunk::<4>(), data.get(4..)) {
            (Some(family), Some(rest)) => {
                // Host byte order of the capturing machine: families are small,
                // so a value with high bits set was written big-endian.
                let le = u32::from_le_bytes(*family);
                let family = if le > 0xffff {
                    u32::from_be_bytes(*family)
                } else {
                    le
                };
                by_family(family, rest)
            }
            _ => Link::Malformed,
        },
        linktype::LOOP => match (be32(data, 0), data.get(4..)) {
            (Some(family), Some(rest)) => by_family(family, rest),
            _ => Link::Malformed,
        },
        linktype::RAW | linktype::RAW_DLT12 | linktype::RAW_DLT14 => by_version(data),
        linktype::IPV4 => Link::Ipv4(data),
        linktype::IPV6 => Link::Ipv6(data),
        _ => Link::Unsupported,
    }
}

/// Decodes an IPv4 packet; `Some` for TCP.
fn ipv4<'a>(data: &'a [u8], warnings: &mut Warnings, at: Stamp) -> Option<Segment<'a>> {
    let Some(header) = data.first_chunk::<20>() else {
        warnings.push(at, None, WarningKind::MalformedIpv4);
        return None;
    };
    let [
        vihl,
        _,
        tl0,
        tl1,
        _,
        _,
        ff0,
        ff1,
        _,
        proto,
        _,
        _,
        s0,
        s1,
        s2,
        s3,
        d0,
        d1,
        d2,
        d3,
    ] = *header;
    let ihl = usize::from(vihl & 0x0f).saturating_mul(4);
    let total = usize::from(u16::from_be_bytes([tl0, tl1]));
    // A total length of 0 is what segmentation offload leaves in captures
    // taken on the sender: use the captured length.
    let total = if total == 0 { data.len() } else { total };
    if vihl >> 4 != 4 || ihl < 20 || total < ihl || data.len() < ihl {
        warnings.push(at, None, WarningKind::MalformedIpv4);
        return None;
    }
    if proto != PROTO_TCP {
        return None;
    }
    let frag = u16::from_be_bytes([ff0, ff1]);
    if frag & 0x1fff != 0 {
        warnings.push(at, None, WarningKind::IpFragmentSkipped);
        return None;
    }
    if frag & 0x2000 != 0 {
        warnings.push(at, None, WarningKind::IpFragmentIncomplete);
    }
    let truncated = total > data.len();
    if truncated {
        warnings.push(at, None, WarningKind::PacketTruncated);
    }
    let end = total.min(data.len());
    let l4 = data.get(ihl..end)?;
    let src = IpAddr::V4(Ipv4Addr::new(s0, s1, s2, s3));
    let dst = IpAddr::V4(Ipv4Addr::new(d0, d1, d2, d3));
    tcp(l4, src, dst, warnings, at, truncated)
}

/// Decodes an IPv6 packet, skipping extension headers; `Some` for TCP.
fn ipv6<'a>(data: &'a [u8], warnings: &mut Warnings, stamp: Stamp) -> Option<Segment<'a>> {
    let Some(header) = data.first_chunk::<40>() else {
        warnings.push(stamp, None, WarningKind::MalformedIpv6);
        return None;
    };
    let (fixed, addrs) = header.split_at(8);
    let &[v, _, _, _, pl0, pl1, next, _] = fixed else {
        return None;
    };
    let (src, dst) = addrs.split_at(16);
    let src = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(src).ok()?));
    let dst = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(dst).ok()?));
    if v >> 4 != 6 {
        warnings.push(stamp, None, WarningKind::MalformedIpv6);
        return None;
    }
    let payload_len = usize::from(u16::from_be_bytes([pl0, pl1]));
    // 0 means a jumbogram (or offload): use the captured length.
    let end = if payload_len == 0 {
        data.len()
    } else {
        payload_len.saturating_add(40)
    };
    let truncated = end > data.len();
    let end = end.min(data.len());

    let mut next = next;
    let mut at = 40usize;
    let mut fragmented = false;
    loop {
        let ext_len = match next {
            PROTO_TCP => break,
            PROTO_IPV6_HOP_BY_HOP
            | PROTO_IPV6_ROUTING
            | PROTO_IPV6_DEST_OPTS
            | PROTO_MOBILITY
            | PROTO_HIP
            | PROTO_SHIM6
            | PROTO_EXPERIMENT1
            | PROTO_EXPERIMENT2 => {
                // RFC 8200 §4: length in 8-octet units, not counting the first 8.
                let Some(&[nh, len]) = data.get(at..end).and_then(|e| e.first_chunk::<2>()) else {
                    return malformed_v6(warnings, stamp, truncated);
                };
                next = nh;
                (usize::from(len) + 1) * 8
            }
            PROTO_AH => {
                // RFC 4302 §2.2: length in 4-octet units, minus 2.
                let Some(&[nh, len]) = data.get(at..end).and_then(|e| e.first_chunk::<2>()) else {
                    return malformed_v6(warnings, stamp, truncated);
                };
                next = nh;
                (usize::from(len) + 2) * 4
            }
            PROTO_IPV6_FRAGMENT => {
                let Some(&[nh, _, o0, o1, ..]) =
                    data.get(at..end).and_then(|e| e.first_chunk::<8>())
                else {
                    return malformed_v6(warnings, stamp, truncated);
                };
                let offset_flags = u16::from_be_bytes([o0, o1]);
                if offset_flags >> 3 != 0 {
                    warnings.push(stamp, None, WarningKind::IpFragmentSkipped);
                    return None;
                }
                fragmented = offset_flags & 1 != 0;
                next = nh;
                8
            }
            PROTO_ESP => {
                warnings.push(stamp, None, WarningKind::UnsupportedIpv6Header(next));
                return None;
            }
            _ => return None,
        };
        at = at.saturating_add(ext_len);
    }
    if fragmented {
        warnings.push(stamp, None, WarningKind::IpFragmentIncomplete);
    }
    if truncated {
        warnings.push(stamp, None, WarningKind::PacketTruncated);
    }
    let Some(l4) = data.get(at..end) else {
        return malformed_v6(warnings, stamp, truncated);
    };
    tcp(l4, src, dst, warnings, stamp, truncated)
}

fn malformed_v6<T>(warnings: &mut Warnings, at: Stamp, truncated: bool) -> Option<T> {
    if truncated {
        warnings.push(at, None, WarningKind::PacketTruncated);
    } else {
        warnings.push(at, None, WarningKind::MalformedIpv6);
    }
    None
}

/// Decodes a TCP header. A header cut short by the snapshot length
/// (`truncated`, already reported) is skipped silently.
fn tcp<'a>(
    data: &'a [u8],
    src: IpAddr,
    dst: IpAddr,
    warnings: &mut Warnings,
    at: Stamp,
    truncated: bool,
) -> Option<Segment<'a>> {
    let header = data.first_chunk::<20>();
    let parsed = header.and_then(|h| {
        let [
            p0,
            p1,
            q0,
            q1,
            s0,
            s1,
            s2,
            s3,
            a0,
            a1,
            a2,
            a3,
            off,
            flags,
            ..,
        ] = *h;
        let len = usize::from(off >> 4) * 4;
        let payload = if len >= 20 {
            data.get(len..)?
        } else {
            return None;
        };
        Some(Segment {
            src: SocketAddr::new(src, u16::from_be_bytes([p0, p1])),
            dst: SocketAddr::new(dst, u16::from_be_bytes([q0, q1])),
            seq: u32::from_be_bytes([s0, s1, s2, s3]),
            ack: u32::from_be_bytes([a0, a1, a2, a3]),
            flags,
            payload,
        })
    });
    if parsed.is_none() && !truncated {
        warnings.push(at, None, WarningKind::MalformedTcp);
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution() {
        assert_eq!(ts_resolution(6), Some(1_000_000));
        assert_eq!(ts_resolution(9), Some(1_000_000_000));
        assert_eq!(ts_resolution(0x80 | 0x0a), Some(1024));
        assert_eq!(ts_resolution(20), None);
        assert_eq!(ts_resolution(0x80 | 0x40), None);
    }

    #[test]
    fn timestamps_normalise() {
        let t = timestamp(10, 1_500_000, 1_000_000).unwrap();
        assert_eq!(t.timestamp(), 11);
        assert_eq!(t.timestamp_subsec_nanos(), 500_000_000);
        assert!(timestamp(i64::MAX, 0, 1).is_none());
    }

    #[test]
    fn link_types() {
        let ip4 = [0x45u8, 0, 0, 20];
        assert_eq!(
            link_payload(linktype::NULL, &[2, 0, 0, 0, 0x45]),
            Link::Ipv4(&[0x45])
        );
        assert_eq!(
            link_payload(linktype::NULL, &[0, 0, 0, 30, 0x60]),
            Link::Ipv6(&[0x60])
        );
        assert_eq!(
            link_payload(linktype::LOOP, &[0, 0, 0, 2, 0x45]),
            Link::Ipv4(&[0x45])
        );
        assert_eq!(link_payload(linktype::RAW, &ip4), Link::Ipv4(&ip4));
        assert_eq!(link_payload(linktype::RAW, &[0x10]), Link::Malformed);
        assert_eq!(link_payload(linktype::IPV6, &[1]), Link::Ipv6(&[1]));
        assert_eq!(link_payload(147, &[1]), Link::Unsupported);
        let mut eth = vec![0u8; 12];
        eth.extend([0x81, 0x00, 0, 5, 0x88, 0xa8, 0, 6, 0x86, 0xdd, 0x60]);
        assert_eq!(link_payload(linktype::ETHERNET, &eth), Link::Ipv6(&[0x60]));
        assert_eq!(
            link_payload(linktype::ETHERNET, &eth[..15]),
            Link::Malformed
        );
        let mut arp = vec![0u8; 12];
        arp.extend([0x08, 0x06]);
        assert_eq!(link_payload(linktype::ETHERNET, &arp), Link::Other);
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend([0; 18]);
        sll2.push(0x45);
        assert_eq!(
            link_payload(linktype::LINUX_SLL2, &sll2),
            Link::Ipv4(&[0x45])
        );
    }
}
