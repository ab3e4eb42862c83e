//! Capture files (pcap, pcapng) and the link, IP and TCP headers inside them.
//!
//! [`for_each_segment`] walks the records of a capture and hands every TCP
//! segment it can decode to a callback; everything else becomes a warning or
//! is ignored. Nothing here allocates per packet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use chrono::{DateTime, Utc};
use pcap_parser::pcapng::{Block, parse_block_be, parse_block_le, parse_sectionheaderblock};
use pcap_parser::traits::PcapNGPacketBlock;
use pcap_parser::{
    PcapError, parse_pcap_frame, parse_pcap_frame_be, parse_pcap_frame_modified, parse_pcap_header,
};

use super::{CaptureError, WarningKind, Warnings};

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

/// One decoded TCP segment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Segment<'a> {
    pub(super) timestamp: DateTime<Utc>,
    pub(super) src: SocketAddr,
    pub(super) dst: SocketAddr,
    pub(super) seq: u32,
    pub(super) ack: u32,
    pub(super) flags: u8,
    pub(super) payload: &'a [u8],
}

/// Walks every record of `bytes` and calls `on_segment(packet_index, segment,
/// warnings)` for each TCP segment. Returns the number of packet records read.
pub(super) fn for_each_segment<F>(
    bytes: &[u8],
    warnings: &mut Warnings,
    on_segment: F,
) -> Result<usize, CaptureError>
where
    F: FnMut(usize, Segment<'_>, &mut Warnings),
{
    let Some(magic) = bytes.first_chunk::<4>().map(|m| u32::from_le_bytes(*m)) else {
        return Err(CaptureError::TruncatedHeader);
    };
    let mut walker = Walker {
        warnings,
        on_segment,
        reported_linktypes: Vec::new(),
        index: 0,
    };
    if PCAP_MAGICS.contains(&magic) {
        walker.read_legacy(bytes)?;
    } else if magic == PCAPNG_MAGIC {
        walker.read_pcapng(bytes)?;
    } else {
        return Err(CaptureError::UnknownFormat { magic });
    }
    Ok(walker.index)
}

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

struct Walker<'w, F> {
    warnings: &'w mut Warnings,
    on_segment: F,
    reported_linktypes: Vec<u32>,
    /// Index of the next packet record.
    index: usize,
}

impl<F> Walker<'_, F>
where
    F: FnMut(usize, Segment<'_>, &mut Warnings),
{
    fn warn(&mut self, kind: WarningKind) {
        self.warnings.push(self.index, None, kind);
    }

    fn read_legacy(&mut self, bytes: &[u8]) -> Result<(), CaptureError> {
        let (mut rest, header) = parse_pcap_header(bytes).map_err(|e| header_error(&e))?;
        let big_endian = header.is_bigendian();
        let modified = header.is_modified_format();
        let units_per_sec = if header.is_nanosecond_precision() {
            1_000_000_000
        } else {
            1_000_000
        };
        let linktype = u32::from_ne_bytes(header.network.0.to_ne_bytes());
        while !rest.is_empty() {
            let parsed = if modified {
                parse_pcap_frame_modified(rest)
            } else if big_endian {
                parse_pcap_frame_be(rest)
            } else {
                parse_pcap_frame(rest)
            };
            match parsed {
                Ok((next, record)) => {
                    rest = next;
                    let ts = timestamp(
                        i64::from(record.ts_sec),
                        u64::from(record.ts_usec),
                        units_per_sec,
                    );
                    self.packet(ts, linktype, record.data);
                }
                Err(nom::Err::Incomplete(_)) => {
                    let caplen = rest.get(8..12).and_then(|b| b.first_chunk::<4>()).map(|b| {
                        if big_endian {
                            u32::from_be_bytes(*b)
                        } else {
                            u32::from_le_bytes(*b)
                        }
                    });
                    if caplen.is_some_and(|len| len > MAX_RECORD_LEN) {
                        self.warn(WarningKind::CorruptRecord);
                    } else {
                        self.warn(WarningKind::TruncatedFile);
                    }
                    break;
                }
                Err(_) => {
                    self.warn(WarningKind::CorruptRecord);
                    break;
                }
            }
        }
        Ok(())
    }

    fn read_pcapng(&mut self, bytes: &[u8]) -> Result<(), CaptureError> {
        let (mut rest, section) = parse_sectionheaderblock(bytes).map_err(|e| header_error(&e))?;
        let mut big_endian = section.big_endian();
        let mut interfaces: Vec<Interface> = Vec::new();
        while !rest.is_empty() {
            let parsed = if big_endian {
                parse_block_be(rest)
            } else {
                parse_block_le(rest)
            };
            let block = match parsed {
                Ok((next, block)) => {
                    rest = next;
                    block
                }
                Err(nom::Err::Incomplete(_)) => {
                    self.warn(WarningKind::TruncatedFile);
                    break;
                }
                Err(_) => {
                    self.warn(WarningKind::CorruptRecord);
                    break;
                }
            };
            match block {
                Block::SectionHeader(section) => {
                    big_endian = section.big_endian();
                    interfaces.clear();
                }
                Block::InterfaceDescription(idb) => interfaces.push(Interface {
                    linktype: u32::from_ne_bytes(idb.linktype.0.to_ne_bytes()),
                    units_per_sec: ts_resolution(idb.if_tsresol).unwrap_or(1_000_000),
                    offset_secs: idb.if_tsoffset,
                }),
                Block::EnhancedPacket(epb) => {
                    let Some(iface) = usize::try_from(epb.if_id)
                        .ok()
                        .and_then(|i| interfaces.get(i))
                        .copied()
                    else {
                        self.warn(WarningKind::UnknownInterface(epb.if_id));
                        self.index = self.index.saturating_add(1);
                        continue;
                    };
                    let raw = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                    let units = iface.units_per_sec.max(1);
                    let ts = i64::try_from(raw / units)
                        .ok()
                        .and_then(|secs| secs.checked_add(iface.offset_secs))
                        .and_then(|secs| timestamp(secs, raw % units, units));
                    self.packet(ts, iface.linktype, epb.packet_data());
                }
                Block::SimplePacket(spb) => {
                    // Simple packet blocks have no timestamp and belong to interface 0.
                    let Some(iface) = interfaces.first().copied() else {
                        self.warn(WarningKind::UnknownInterface(0));
                        self.index = self.index.saturating_add(1);
                        continue;
                    };
                    self.packet(
                        Some(DateTime::UNIX_EPOCH),
                        iface.linktype,
                        spb.packet_data(),
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Decodes one packet record and advances the packet index.
    fn packet(&mut self, ts: Option<DateTime<Utc>>, linktype: u32, data: &[u8]) {
        let timestamp = ts.unwrap_or_else(|| {
            self.warn(WarningKind::BadTimestamp);
            DateTime::UNIX_EPOCH
        });
        match link_payload(linktype, data) {
            Link::Ipv4(ip) => {
                if let Some(segment) = ipv4(ip, timestamp, self.warnings, self.index) {
                    (self.on_segment)(self.index, segment, self.warnings);
                }
            }
            Link::Ipv6(ip) => {
                if let Some(segment) = ipv6(ip, timestamp, self.warnings, self.index) {
                    (self.on_segment)(self.index, segment, self.warnings);
                }
            }
            Link::Other => {}
            Link::Malformed => self.warn(WarningKind::MalformedLinkHeader),
            Link::Unsupported => {
                if !self.reported_linktypes.contains(&linktype) {
                    self.reported_linktypes.push(linktype);
                    self.warn(WarningKind::UnsupportedLinkType(linktype));
                }
            }
        }
        self.index = self.index.saturating_add(1);
    }
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
fn ipv4<'a>(
    data: &'a [u8],
    timestamp: DateTime<Utc>,
    warnings: &mut Warnings,
    index: usize,
) -> Option<Segment<'a>> {
    let Some(header) = data.first_chunk::<20>() else {
        warnings.push(index, None, WarningKind::MalformedIpv4);
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
        warnings.push(index, None, WarningKind::MalformedIpv4);
        return None;
    }
    if proto != PROTO_TCP {
        return None;
    }
    let frag = u16::from_be_bytes([ff0, ff1]);
    if frag & 0x1fff != 0 {
        warnings.push(index, None, WarningKind::IpFragmentSkipped);
        return None;
    }
    if frag & 0x2000 != 0 {
        warnings.push(index, None, WarningKind::IpFragmentIncomplete);
    }
    let truncated = total > data.len();
    if truncated {
        warnings.push(index, None, WarningKind::PacketTruncated);
    }
    let end = total.min(data.len());
    let l4 = data.get(ihl..end)?;
    let src = IpAddr::V4(Ipv4Addr::new(s0, s1, s2, s3));
    let dst = IpAddr::V4(Ipv4Addr::new(d0, d1, d2, d3));
    tcp(l4, src, dst, timestamp, warnings, index, truncated)
}

/// Decodes an IPv6 packet, skipping extension headers; `Some` for TCP.
fn ipv6<'a>(
    data: &'a [u8],
    timestamp: DateTime<Utc>,
    warnings: &mut Warnings,
    index: usize,
) -> Option<Segment<'a>> {
    let Some(header) = data.first_chunk::<40>() else {
        warnings.push(index, None, WarningKind::MalformedIpv6);
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
        warnings.push(index, None, WarningKind::MalformedIpv6);
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
                    return malformed_v6(warnings, index, truncated);
                };
                next = nh;
                (usize::from(len) + 1) * 8
            }
            PROTO_AH => {
                // RFC 4302 §2.2: length in 4-octet units, minus 2.
                let Some(&[nh, len]) = data.get(at..end).and_then(|e| e.first_chunk::<2>()) else {
                    return malformed_v6(warnings, index, truncated);
                };
                next = nh;
                (usize::from(len) + 2) * 4
            }
            PROTO_IPV6_FRAGMENT => {
                let Some(&[nh, _, o0, o1, ..]) =
                    data.get(at..end).and_then(|e| e.first_chunk::<8>())
                else {
                    return malformed_v6(warnings, index, truncated);
                };
                let offset_flags = u16::from_be_bytes([o0, o1]);
                if offset_flags >> 3 != 0 {
                    warnings.push(index, None, WarningKind::IpFragmentSkipped);
                    return None;
                }
                fragmented = offset_flags & 1 != 0;
                next = nh;
                8
            }
            PROTO_ESP => {
                warnings.push(index, None, WarningKind::UnsupportedIpv6Header(next));
                return None;
            }
            _ => return None,
        };
        at = at.saturating_add(ext_len);
    }
    if fragmented {
        warnings.push(index, None, WarningKind::IpFragmentIncomplete);
    }
    if truncated {
        warnings.push(index, None, WarningKind::PacketTruncated);
    }
    let Some(l4) = data.get(at..end) else {
        return malformed_v6(warnings, index, truncated);
    };
    tcp(l4, src, dst, timestamp, warnings, index, truncated)
}

fn malformed_v6<T>(warnings: &mut Warnings, index: usize, truncated: bool) -> Option<T> {
    if truncated {
        warnings.push(index, None, WarningKind::PacketTruncated);
    } else {
        warnings.push(index, None, WarningKind::MalformedIpv6);
    }
    None
}

/// Decodes a TCP header. A header cut short by the snapshot length
/// (`truncated`, already reported) is skipped silently.
fn tcp<'a>(
    data: &'a [u8],
    src: IpAddr,
    dst: IpAddr,
    timestamp: DateTime<Utc>,
    warnings: &mut Warnings,
    index: usize,
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
            timestamp,
            src: SocketAddr::new(src, u16::from_be_bytes([p0, p1])),
            dst: SocketAddr::new(dst, u16::from_be_bytes([q0, q1])),
            seq: u32::from_be_bytes([s0, s1, s2, s3]),
            ack: u32::from_be_bytes([a0, a1, a2, a3]),
            flags,
            payload,
        })
    });
    if parsed.is_none() && !truncated {
        warnings.push(index, None, WarningKind::MalformedTcp);
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
