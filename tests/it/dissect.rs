//! Capture reading and TCP reassembly (`kms_activation::dissect`).
//!
//! The synthetic captures are built here by a small pcap / pcapng writer;
//! checksums are left at zero (the reader does not verify them).
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions"
)]

use std::net::SocketAddr;

use kms_activation::dissect::{
    CaptureError, Direction, Dissector, Event, Limits, Record, TcpConversation, WarningKind,
    dissect_with_limits, looks_like_rpc, read_capture, read_capture_with_limits,
};
use proptest::prelude::*;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

// ---------------------------------------------------------------- writers

/// Link layers the writer can frame packets in.
#[derive(Debug, Clone, Copy)]
enum L2 {
    Ethernet,
    EthernetVlan,
    Sll,
    Sll2,
    NullLe,
    NullBe,
    Loop,
    Raw,
}

impl L2 {
    fn linktype(self) -> u32 {
        match self {
            Self::Ethernet | Self::EthernetVlan => 1,
            Self::Sll => 113,
            Self::Sll2 => 276,
            Self::NullLe | Self::NullBe => 0,
            Self::Loop => 108,
            Self::Raw => 101,
        }
    }

    fn frame(self, v6: bool, ip: &[u8]) -> Vec<u8> {
        let ethertype: [u8; 2] = if v6 { [0x86, 0xdd] } else { [0x08, 0x00] };
        let family: u32 = if v6 { 30 } else { 2 };
        let mut f = Vec::new();
        match self {
            Self::Ethernet => {
                f.extend([0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]);
                f.extend(ethertype);
            }
            Self::EthernetVlan => {
                f.extend([0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]);
                f.extend([0x88, 0xa8, 0x00, 0x07, 0x81, 0x00, 0x00, 0x2a]);
                f.extend(ethertype);
            }
            Self::Sll => {
                f.extend([0, 0, 0x03, 0x04, 0, 6, 0x02, 0, 0, 0, 0, 1, 0, 0]);
                f.extend(ethertype);
            }
            Self::Sll2 => {
                f.extend(ethertype);
                f.extend([
                    0, 0, 0, 0, 0, 1, 0x03, 0x04, 0, 6, 0x02, 0, 0, 0, 0, 1, 0, 0,
                ]);
            }
            Self::NullLe => f.extend(family.to_le_bytes()),
            Self::NullBe | Self::Loop => f.extend(family.to_be_bytes()),
            Self::Raw => {}
        }
        f.extend(ip);
        f
    }
}

fn tcp_ip(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut tcp = Vec::new();
    tcp.extend(src.port().to_be_bytes());
    tcp.extend(dst.port().to_be_bytes());
    tcp.extend(seq.to_be_bytes());
    tcp.extend(ack.to_be_bytes());
    tcp.extend([0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    tcp.extend(payload);
    let mut ip = Vec::new();
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            let total = u16::try_from(20 + tcp.len()).unwrap();
            ip.extend([0x45, 0]);
            ip.extend(total.to_be_bytes());
            ip.extend([0, 0, 0x40, 0, 64, 6, 0, 0]);
            ip.extend(s.ip().octets());
            ip.extend(d.ip().octets());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            ip.extend([0x60, 0, 0, 0]);
            ip.extend(u16::try_from(tcp.len()).unwrap().to_be_bytes());
            ip.extend([6, 64]);
            ip.extend(s.ip().octets());
            ip.extend(d.ip().octets());
        }
        _ => panic!("mixed address families"),
    }
    ip.extend(tcp);
    ip
}

/// A legacy pcap file being written.
struct Pcap {
    buf: Vec<u8>,
    big_endian: bool,
}

impl Pcap {
    fn new(linktype: u32) -> Self {
        Self::with(linktype, false, false)
    }

    fn with(linktype: u32, big_endian: bool, nanos: bool) -> Self {
        let mut p = Self {
            buf: Vec::new(),
            big_endian,
        };
        p.u32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
        p.u16(2);
        p.u16(4);
        p.u32(0);
        p.u32(0);
        p.u32(65535);
        p.u32(linktype);
        p
    }

    fn u16(&mut self, v: u16) {
        let b = if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.buf.extend(b);
    }

    fn u32(&mut self, v: u32) {
        let b = if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.buf.extend(b);
    }

    fn record(&mut self, secs: u32, frac: u32, data: &[u8]) {
        let len = u32::try_from(data.len()).unwrap();
        self.u32(secs);
        self.u32(frac);
        self.u32(len);
        self.u32(len);
        self.buf.extend(data);
    }
}

/// A pcapng file being written (one section).
struct PcapNg {
    buf: Vec<u8>,
    big_endian: bool,
}

impl PcapNg {
    fn new(big_endian: bool) -> Self {
        let mut p = Self {
            buf: Vec::new(),
            big_endian,
        };
        let mut body = Vec::new();
        p.put32(&mut body, 0x1a2b_3c4d);
        p.put16(&mut body, 1);
        p.put16(&mut body, 0);
        body.extend([0xff; 8]); // section length: unknown
        p.block(0x0a0d_0d0a, &body);
        p
    }

    fn put16(&self, out: &mut Vec<u8>, v: u16) {
        out.extend(if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }

    fn put32(&self, out: &mut Vec<u8>, v: u32) {
        out.extend(if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }

    fn block(&mut self, kind: u32, body: &[u8]) {
        let mut b = Vec::new();
        let mut body = body.to_vec();
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        let len = u32::try_from(12 + body.len()).unwrap();
        self.put32(&mut b, kind);
        self.put32(&mut b, len);
        b.extend(&body);
        self.put32(&mut b, len);
        self.buf.extend(b);
    }

    fn interface(&mut self, linktype: u16, tsresol: Option<u8>) {
        let mut body = Vec::new();
        self.put16(&mut body, linktype);
        self.put16(&mut body, 0);
        self.put32(&mut body, 65535);
        if let Some(r) = tsresol {
            self.put16(&mut body, 9); // if_tsresol
            self.put16(&mut body, 1);
            body.extend([r, 0, 0, 0]);
            body.extend([0, 0, 0, 0]); // opt_endofopt
        }
        self.block(1, &body);
    }

    fn packet(&mut self, if_id: u32, ts: u64, data: &[u8]) {
        let mut body = Vec::new();
        self.put32(&mut body, if_id);
        self.put32(&mut body, u32::try_from(ts >> 32).unwrap());
        self.put32(&mut body, u32::try_from(ts & 0xffff_ffff).unwrap());
        let len = u32::try_from(data.len()).unwrap();
        self.put32(&mut body, len);
        self.put32(&mut body, len);
        body.extend(data);
        self.block(6, &body);
    }
}

/// One TCP connection written into a legacy pcap, one millisecond per packet.
struct Flow {
    pcap: Pcap,
    l2: L2,
    client: SocketAddr,
    server: SocketAddr,
    packets: u32,
}

impl Flow {
    fn new(l2: L2, client: &str, server: &str) -> Self {
        Self {
            pcap: Pcap::new(l2.linktype()),
            l2,
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
            packets: 0,
        }
    }

    fn send(&mut self, from_client: bool, seq: u32, ack: u32, flags: u8, payload: &[u8]) {
        let (src, dst) = if from_client {
            (self.client, self.server)
        } else {
            (self.server, self.client)
        };
        let ip = tcp_ip(src, dst, seq, ack, flags, payload);
        let frame = self.l2.frame(src.is_ipv6(), &ip);
        self.pcap.record(1_000, self.packets * 1_000, &frame);
        self.packets += 1;
    }

    fn c(&mut self, seq: u32, ack: u32, flags: u8, payload: &[u8]) {
        self.send(true, seq, ack, flags, payload);
    }

    fn s(&mut self, seq: u32, ack: u32, flags: u8, payload: &[u8]) {
        self.send(false, seq, ack, flags, payload);
    }

    /// SYN, SYN+ACK, ACK with the given initial sequence numbers.
    fn handshake(&mut self, client_isn: u32, server_isn: u32) {
        self.c(client_isn, 0, SYN, b"");
        self.s(server_isn, client_isn.wrapping_add(1), SYN | ACK, b"");
        self.c(
            client_isn.wrapping_add(1),
            server_isn.wrapping_add(1),
            ACK,
            b"",
        );
    }

    fn bytes(&self) -> Vec<u8> {
        self.pcap.buf.clone()
    }
}

/// Millisecond `n` of the synthetic captures, as the reader reports it.
fn ms(n: u32) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_000, n * 1_000_000).unwrap()
}

fn chunks(conv: &TcpConversation) -> Vec<(Direction, Vec<u8>)> {
    conv.chunks
        .iter()
        .map(|c| (c.direction, c.bytes.clone()))
        .collect()
}

fn kinds(capture: &kms_activation::dissect::Capture) -> Vec<(usize, Option<usize>, WarningKind)> {
    capture
        .warnings
        .iter()
        .map(|w| (w.packet_index, w.conn(), w.kind))
        .collect()
}

use Direction::{ClientToServer as C2S, ServerToClient as S2C};

// ---------------------------------------------------------------- real captures

fn pdu_types(stream: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        assert!(
            looks_like_rpc(rest),
            "not an RPC header: {:02x?}",
            &rest[..rest.len().min(16)]
        );
        let len = usize::from(u16::from_le_bytes([rest[8], rest[9]]));
        assert!(
            len >= 16 && len <= rest.len(),
            "frag_length {len} of {}",
            rest.len()
        );
        types.push(rest[2]);
        rest = &rest[len..];
    }
    types
}

fn check_kms_capture(name: &str) {
    let path = format!("{}/tests/data/pcaps/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(path).unwrap();
    let capture = read_capture(&bytes).unwrap();
    assert!(capture.warnings.is_empty(), "{:?}", capture.warnings);
    assert!(!capture.connections.is_empty());
    for conv in &capture.connections {
        assert!(conv.handshake_seen);
        assert_eq!(conv.server.port(), 11688);
        let up = pdu_types(&conv.stream(C2S));
        let down = pdu_types(&conv.stream(S2C));
        // bind, then requests (after an optional alter_context) ...
        assert_eq!(up.first(), Some(&11), "{up:?}");
        assert!(up[1..].iter().all(|t| matches!(t, 0 | 14)), "{up:?}");
        // ... answered by bind_ack, then responses (alter_context_resp).
        assert_eq!(down.first(), Some(&12), "{down:?}");
        assert!(down[1..].iter().all(|t| matches!(t, 2 | 15)), "{down:?}");
        assert_eq!(
            up.iter().map(|&t| usize::from(t == 0)).sum::<usize>(),
            down.iter().map(|&t| usize::from(t == 2)).sum::<usize>()
        );
        assert!(up.contains(&0));
        // One chunk per PDU here: vlmcs waits for each answer.
        assert_eq!(conv.chunks.len(), up.len() + down.len());
        for pair in conv.chunks.windows(2) {
            assert_ne!(pair[0].direction, pair[1].direction);
            assert!(pair[0].timestamp <= pair[1].timestamp);
        }
    }
}

#[test]
fn real_capture_v4_v5() {
    check_kms_capture("p-v4-win7-and-v5.pcap");
}

#[test]
fn real_capture_v6_ndr64() {
    check_kms_capture("p-v6-ndr64-win11-like.pcap");
}

// ---------------------------------------------------------------- synthetic

#[test]
fn in_order_exchange_with_timestamps() {
    let mut f = Flow::new(L2::Ethernet, "192.0.2.1:50000", "192.0.2.2:1688");
    f.handshake(1000, 5000);
    f.c(1001, 5001, PSH | ACK, b"hel");
    f.c(1004, 5001, PSH | ACK, b"lo");
    f.s(5001, 1006, PSH | ACK, b"hi");
    f.c(1006, 5003, FIN | ACK, b"");
    f.s(5003, 1007, FIN | ACK, b"");
    f.c(1007, 5004, ACK, b"");
    let capture = read_capture(&f.bytes()).unwrap();
    assert_eq!(capture.packets, 9);
    assert!(capture.warnings.is_empty(), "{:?}", capture.warnings);
    let [conv] = &capture.connections[..] else {
        panic!()
    };
    assert_eq!(conv.index, 0);
    assert_eq!(conv.first_packet, 0);
    assert_eq!(conv.client, "192.0.2.1:50000".parse().unwrap());
    assert_eq!(conv.server, "192.0.2.2:1688".parse().unwrap());
    assert_eq!(
        chunks(conv),
        vec![(C2S, b"hello".to_vec()), (S2C, b"hi".to_vec())]
    );
    // Merged chunk: stamped by the segment that completed it.
    assert_eq!(conv.chunks[0].timestamp, ms(4));
    assert_eq!(conv.chunks[1].timestamp, ms(5));
}

#[test]
fn ethernet_padding_is_not_payload() {
    let client: SocketAddr = "10.0.0.1:50000".parse().unwrap();
    let server: SocketAddr = "10.0.0.2:1688".parse().unwrap();
    let mut p = Pcap::new(1);
    for (seq, data) in [(1, &b"a"[..]), (2, b"b")] {
        let mut frame = L2::Ethernet.frame(false, &tcp_ip(client, server, seq, 0, ACK, data));
        frame.resize(60, 0); // minimum Ethernet frame
        p.record(0, 0, &frame);
    }
    let mut v6 = L2::Ethernet.frame(
        true,
        &tcp_ip(
            "[::1]:5".parse().unwrap(),
            "[::2]:1688".parse().unwrap(),
            1,
            0,
            ACK,
            b"c",
        ),
    );
    v6.extend([0xee; 4]); // trailer
    p.record(0, 0, &v6);
    let capture = read_capture(&p.buf).unwrap();
    assert!(capture.warnings.is_empty(), "{:?}", capture.warnings);
    assert_eq!(capture.connections[0].stream(C2S), b"ab");
    assert_eq!(capture.connections[1].stream(C2S), b"c");
}

#[test]
fn one_byte_segment_flood_is_bounded() {
    let mut f = Flow::new(L2::Raw, "10.0.0.1:50000", "10.0.0.2:1688");
    f.handshake(0, 0);
    // Every other byte, so nothing is contiguous: 5000 waiting segments.
    for i in 0..5000u32 {
        f.c(2 + 2 * i, 1, ACK, b"x");
    }
    let capture = read_capture(&f.bytes()).unwrap();
    assert_eq!(capture.warnings[0].kind, WarningKind::OutOfOrderLimit);
    assert_eq!(capture.warnings[0].packet_index, 3 + 4096);
    assert_eq!(capture.connections[0].stream(C2S), vec![b'x'; 5000]);
}

#[test]
fn out_of_order_segments_wait_for_the_gap() {
    let mut f = Flow::new(L2::EthernetVlan, "192.0.2.1:50000", "192.0.2.2:1688");
    f.handshake(1000, 5000);
    f.c(1011, 5001, ACK, b"k"); // 3
    f.c(1005, 5001, ACK, b"efgh"); // 4: overlaps the next one
    f.c(1007, 5001, ACK, b"ghij"); // 5
    f.c(1001, 5001, ACK, b"abcd"); // 6: fills the gap
    f.s(5001, 1012, ACK, b"ok");
    let capture = read_capture(&f.bytes()).unwrap();
    assert!(capture.warnings.is_empty(), "{:?}", capture.warnings);
    let conv = &capture.connections[0];
    assert_eq!(
        chunks(conv),
        vec![(C2S, b"abcdefghijk".to_vec()), (S2C, b"ok".to_vec())]
    );
    assert_eq!(conv.chunks[0].timestamp, ms(6));
}

#[test]
fn retransmissions_and_overlaps_are_delivered_once() {
    let mut f = Flow::new(L2::Sll, "10.1.1.1:49999", "10.1.1.2:1688");
    f.handshake(1000, 5000);
    f.c(1001, 5001, ACK, b"abcdef");
    f.c(1004, 5001, ACK, b"DEFghi"); // overlap: the first copy wins
    f.c(1001, 5001, ACK, b"abcdef"); // plain retransmission
    f.c(1001, 5001, ACK, b"abcdefghijkl"); // repacketised retransmission
    f.c(990, 5001, ACK, b"old"); // before the stream start
    let capture = read_capture(&f.bytes()).unwrap();
    assert!(capture.warnings.is_empty(), "{:?}", capture.warnings);
    assert_eq!(
        chunks(&capture.connections[0]),
        vec![(C2S, b"abcdefghijkl".to_vec())]
    );
}

#[test]
fn sequence_numbers_wrap_around() {
    let mut f = Flow::new(L2::Sll2, "[2001:db8::1]:50000", "[2001:db8::2]:1688");
    f.handshake(0xffff_fff8, 0xffff_ffff);
    // Client data from 0xffff_fff9 across 2^32; sent out of order.
    f.c(0x0000_0003, 0, ACK, b"KLMNOP");
    f.c(0xffff_fff9, 0, ACK, b"ABCDEFGHIJ");
    // Server data starts at 0 (its ISN was 0xffff_ffff).
    f.s(0, 0x0000_0009, ACK, b"xy");
    f.s(2, 0x0000_0009, ACK, b"z");
    let capture = read_capture(&f.bytes()).unwrap();
    assert!(capture.warnings.is_empty(), "{:?}", capture.warnings);
    let conv = &capture.connections[0];
    assert_eq!(conv.client, "[2001:db8::1]:50000".parse().unwrap());
    assert_eq!(
        chunks(conv),
        vec![(C2S, b"ABCDEFGHIJKLMNOP".to_vec()), (S2C, b"xyz".to_vec())]
    );
}

#[test]
fn missing_segment_acknowledged_by_the_peer() {
    let mut f = Flow::new(L2::NullLe, "127.0.0.1:50000", "127.0.0.1:1688");
    f.handshake(1000, 5000);
    // 1001..1005 "aaaa" was never captured.
    f.c(1005, 5001, ACK, b"bbbb"); // 3
    f.s(5001, 1009, ACK, b"resp"); // 4: acknowledges the lost bytes
    f.c(1009, 5005, ACK, b"cc");
    let capture = read_capture(&f.bytes()).unwrap();
    assert_eq!(
        kinds(&capture),
        vec![(4, Some(0), WarningKind::MissingBytes { len: 4 })]
    );
    assert_eq!(
        chunks(&capture.connections[0]),
        vec![
            (C2S, b"bbbb".to_vec()),
            (S2C, b"resp".to_vec()),
            (C2S, b"cc".to_vec())
        ]
    );
}

#[test]
fn missing_segment_never_filled_before_the_end() {
    let mut f = Flow::new(L2::NullBe, "[::1]:50000", "[::1]:1688");
    f.handshake(1000, 5000);
    f.c(1005, 5001, ACK, b"bbbb"); // 3
    f.c(1012, 5001, ACK, b"dd"); // 4
    let capture = read_capture(&f.bytes()).unwrap();
    assert_eq!(
        kinds(&capture),
        vec![
            (4, Some(0), WarningKind::MissingBytes { len: 4 }),
            (4, Some(0), WarningKind::MissingBytes { len: 3 }),
        ]
    );
    assert_eq!(
        chunks(&capture.connections[0]),
        vec![(C2S, b"bbbbdd".to_vec())]
    );
    assert_eq!(capture.connections[0].chunks[0].timestamp, ms(4));
}

#[test]
fn capture_starting_mid_connection() {
    let mut f = Flow::new(L2::Raw, "10.0.0.1:50000", "10.0.0.2:1688");
    f.s(7000, 3000, ACK, b"resp"); // the server speaks first in the capture
    f.c(3000, 7004, ACK, b"req2");
    f.s(7004, 3004, ACK, b"resp2");
    let capture = read_capture(&f.bytes()).unwrap();
    assert!(capture.warnings.is_empty(), "{:?}", capture.warnings);
    let conv = &capture.connections[0];
    assert!(!conv.handshake_seen);
    assert_eq!(conv.server, "10.0.0.2:1688".parse().unwrap());
    assert_eq!(
        chunks(conv),
        vec![
            (S2C, b"resp".to_vec()),
            (C2S, b"req2".to_vec()),
            (S2C, b"resp2".to_vec())
        ]
    );
}

#[test]
fn mid_connection_roles_without_kms_port() {
    // The lower port is the server.
    let mut f = Flow::new(L2::Loop, "10.0.0.1:40000", "10.0.0.2:8080");
    f.c(1, 1, ACK, b"x");
    let capture = read_capture(&f.bytes()).unwrap();
    assert_eq!(
        capture.connections[0].server,
        "10.0.0.2:8080".parse().unwrap()
    );
    let mut f = Flow::new(L2::Loop, "10.0.0.1:8080", "10.0.0.2:40000");
    f.c(1, 1, ACK, b"x");
    let capture = read_capture(&f.bytes()).unwrap();
    assert_eq!(
        capture.connections[0].server,
        "10.0.0.1:8080".parse().unwrap()
    );
    // Equal ports: the destination of the first packet.
    let mut f = Flow::new(L2::Loop, "10.0.0.1:5000", "10.0.0.2:5000");
    f.c(1, 1, ACK, b"x");
    let capture = read_capture(&f.bytes()).unwrap();
    assert_eq!(
        capture.connections[0].server,
        "10.0.0.2:5000".parse().unwrap()
    );
    // A SYN+ACK first: its receiver is the client.
    let mut f = Flow::new(L2::Loop, "10.0.0.1:40000", "10.0.0.2:80");
    f.s(9, 2, SYN | ACK, b"");
    let capture = read_capture(&f.bytes()).unwrap();
    assert_eq!(
        capture.connections[0].client,
        "10.0.0.1:40000".parse().unwrap()
    );
    assert!(capture.connections[0].handshake_seen);
}

#[test]
fn truncated_file_keeps_what_was_read() {
    let mut f = Flow::new(L2::Ethernet, "192.0.2.1:50000", "192.0.2.2:1688");
    f.handshake(1000, 5000);
    f.c(1001, 5001, ACK, b"complete");
    f.c(1009, 5001, ACK, b"cut short");
    let bytes = f.bytes();
    let capture = read_capture(&bytes[..bytes.len() - 4]).unwrap();
    assert_eq!(capture.packets, 4);
    assert_eq!(kinds(&capture), vec![(4, None, WarningKind::TruncatedFile)]);
    assert_eq!(
        chunks(&capture.connections[0]),
        vec![(C2S, b"complete".to_vec())]
    );
    // Cut inside a record header.
    let capture = read_capture(&bytes[..bytes.len() - 60]).unwrap();
    assert_eq!(kinds(&capture), vec![(4, None, WarningKind::TruncatedFile)]);
}

#[test]
fn corrupt_record_length_stops_reading() {
    let mut f = Flow::new(L2::Ethernet, "192.0.2.1:50000", "192.0.2.2:1688");
    f.c(1001, 5001, ACK, b"x");
    let mut bytes = f.bytes();
    bytes.extend([
        0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 1, 0, 0, 0, 1, 2, 3,
    ]);
    let capture = read_capture(&bytes).unwrap();
    assert_eq!(kinds(&capture), vec![(1, None, WarningKind::CorruptRecord)]);
    assert_eq!(capture.connections.len(), 1);
}

#[test]
fn garbage_packets_become_warnings() {
    let mut f = Flow::new(L2::Ethernet, "192.0.2.1:50000", "192.0.2.2:1688");
    f.handshake(1000, 5000);
    let mut garbage_ip = vec![0u8; 12];
    garbage_ip.extend([0x08, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x13, 0x37]);
    f.pcap.record(1_000, 3_000, &garbage_ip); // 3: IPv4 ethertype, nonsense header
    let mut bad_tcp = tcp_ip(f.client, f.server, 1001, 5001, ACK, b"zz");
    bad_tcp[20 + 12] = 0x20; // data offset 8 bytes
    f.pcap
        .record(1_000, 4_000, &L2::Ethernet.frame(false, &bad_tcp)); // 4
    f.pcap.record(1_000, 5_000, &[0x02, 0, 0]); // 5: runt frame
    let mut bad_v6 = vec![0u8; 12];
    bad_v6.extend([0x86, 0xdd, 0x60, 0, 0]);
    f.pcap.record(1_000, 6_000, &bad_v6); // 6
    f.packets = 7;
    f.c(1001, 5001, ACK, b"fine");
    let capture = read_capture(&f.bytes()).unwrap();
    assert_eq!(
        kinds(&capture),
        vec![
            (3, None, WarningKind::MalformedIpv4),
            (4, None, WarningKind::MalformedTcp),
            (5, None, WarningKind::MalformedLinkHeader),
            (6, None, WarningKind::MalformedIpv6),
        ]
    );
    assert_eq!(
        chunks(&capture.connections[0]),
        vec![(C2S, b"fine".to_vec())]
    );
}

#[test]
fn non_tcp_and_unsupported_link_types() {
    // UDP over IPv4 and ARP: ignored without a word.
    let mut p = Pcap::new(1);
    let mut udp = tcp_ip(
        "10.0.0.1:53".parse().unwrap(),
        "10.0.0.2:53".parse().unwrap(),
        0,
        0,
        0,
        b"",
    );
    udp[9] = 17;
    p.record(0, 0, &L2::Ethernet.frame(false, &udp));
    let mut arp = vec![0u8; 12];
    arp.extend([0x08, 0x06, 0, 1]);
    p.record(0, 0, &arp);
    let capture = read_capture(&p.buf).unwrap();
    assert_eq!(capture.packets, 2);
    assert!(capture.warnings.is_empty());
    assert!(capture.connections.is_empty());
    // An unknown link type is reported once.
    let mut p = Pcap::new(147);
    p.record(0, 0, b"abc");
    p.record(0, 0, b"def");
    let capture = read_capture(&p.buf).unwrap();
    assert_eq!(
        kinds(&capture),
        vec![(0, None, WarningKind::UnsupportedLinkType(147))]
    );
}

#[test]
fn ip_fragments() {
    let client: SocketAddr = "10.0.0.1:50000".parse().unwrap();
    let server: SocketAddr = "10.0.0.2:1688".parse().unwrap();
    let mut p = Pcap::new(101);
    let mut first = tcp_ip(client, server, 1, 0, ACK, b"abcd");
    first[6] = 0x20; // more fragments
    p.record(0, 0, &first);
    let mut later = tcp_ip(client, server, 5, 0, ACK, b"efgh");
    later[6] = 0x00;
    later[7] = 0x03; // fragment offset 24
    p.record(0, 0, &later);
    let capture = read_capture(&p.buf).unwrap();
    assert_eq!(
        kinds(&capture),
        vec![
            (0, None, WarningKind::IpFragmentIncomplete),
            (1, None, WarningKind::IpFragmentSkipped)
        ]
    );
    assert_eq!(capture.connections[0].stream(C2S), b"abcd");
}

#[test]
fn ipv6_extension_headers() {
    let client: SocketAddr = "[2001:db8::1]:50000".parse().unwrap();
    let server: SocketAddr = "[2001:db8::2]:1688".parse().unwrap();
    let plain = tcp_ip(client, server, 1, 0, ACK, b"data");
    let tcp = &plain[40..];
    // Hop-by-hop (8 bytes) -> destination options (16 bytes) -> fragment (first, last) -> TCP.
    let mut ext = vec![60, 0, 0, 0, 0, 0, 0, 0];
    ext.extend([44, 1]);
    ext.extend([0; 14]);
    ext.extend([6, 0, 0, 0, 0, 0, 0, 1]);
    let mut ip = plain[..40].to_vec();
    ip[6] = 0; // next header: hop-by-hop
    let len = u16::try_from(ext.len() + tcp.len()).unwrap();
    ip[4..6].copy_from_slice(&len.to_be_bytes());
    ip.extend(&ext);
    ip.extend(tcp);
    let mut esp = plain[..40].to_vec();
    esp[6] = 50;
    esp.extend([0; 16]);
    let mut p = Pcap::new(229);
    p.record(0, 0, &ip);
    p.record(0, 0, &esp);
    let capture = read_capture(&p.buf).unwrap();
    assert_eq!(
        kinds(&capture),
        vec![(1, None, WarningKind::UnsupportedIpv6Header(50))]
    );
    assert_eq!(capture.connections[0].stream(C2S), b"data");
}

#[test]
fn snaplen_truncated_packet_leaves_a_gap() {
    let client: SocketAddr = "10.0.0.1:50000".parse().unwrap();
    let server: SocketAddr = "10.0.0.2:1688".parse().unwrap();
    let mut p = Pcap::new(101);
    let full = tcp_ip(client, server, 1, 0, ACK, b"abcdefgh");
    p.record(0, 0, &full[..full.len() - 4]);
    p.record(0, 0, &tcp_ip(client, server, 9, 0, ACK, b"ij"));
    let capture = read_capture(&p.buf).unwrap();
    assert_eq!(
        kinds(&capture),
        vec![
            (0, None, WarningKind::PacketTruncated),
            (1, Some(0), WarningKind::MissingBytes { len: 4 })
        ]
    );
    assert_eq!(capture.connections[0].stream(C2S), b"abcdij");
}

#[test]
fn fin_and_rst() {
    let mut f = Flow::new(L2::Ethernet, "192.0.2.1:50000", "192.0.2.2:1688");
    f.handshake(1000, 5000);
    f.c(1001, 5001, FIN | ACK, b"bye"); // 3
    f.c(1001, 5001, FIN | ACK, b"bye"); // 4: retransmission, fine
    f.c(1005, 5001, ACK, b"late"); // 5: after the FIN
    f.s(5001, 1005, RST | ACK, b""); // 6
    f.s(5001, 1005, ACK, b"ghost"); // 7
    let capture = read_capture(&f.bytes()).unwrap();
    assert_eq!(
        kinds(&capture),
        vec![
            (5, Some(0), WarningKind::DataAfterFin),
            (7, Some(0), WarningKind::DataAfterReset)
        ]
    );
    assert_eq!(
        chunks(&capture.connections[0]),
        vec![(C2S, b"bye".to_vec())]
    );
}

#[test]
fn missing_bytes_before_fin() {
    let mut f = Flow::new(L2::Ethernet, "192.0.2.1:50000", "192.0.2.2:1688");
    f.handshake(1000, 5000);
    f.c(1001, 5001, ACK, b"ab");
    f.c(1006, 5001, FIN | ACK, b""); // 1003..1006 never seen
    let capture = read_capture(&f.bytes()).unwrap();
    assert_eq!(
        kinds(&capture),
        vec![(4, Some(0), WarningKind::MissingBytes { len: 3 })]
    );
}

#[test]
fn port_reuse_opens_a_new_conversation() {
    let mut f = Flow::new(L2::Ethernet, "192.0.2.1:50000", "192.0.2.2:1688");
    f.handshake(1000, 5000);
    f.c(1001, 5001, ACK, b"one");
    f.c(1000, 0, SYN, b""); // 4: retransmitted SYN, same connection
    f.handshake(9000, 7000); // 5..7: new ISN, new connection
    f.c(9001, 7001, ACK, b"two");
    let capture = read_capture(&f.bytes()).unwrap();
    assert!(capture.warnings.is_empty(), "{:?}", capture.warnings);
    let [a, b] = &capture.connections[..] else {
        panic!()
    };
    assert_eq!((a.index, b.index), (0, 1));
    assert_eq!(b.first_packet, 5);
    assert_eq!(a.stream(C2S), b"one");
    assert_eq!(b.stream(C2S), b"two");
}

#[test]
fn several_connections_in_capture_order() {
    let mut p = Pcap::new(101);
    let a: SocketAddr = "10.0.0.1:50001".parse().unwrap();
    let b: SocketAddr = "10.0.0.1:50002".parse().unwrap();
    let s: SocketAddr = "10.0.0.2:1688".parse().unwrap();
    p.record(0, 0, &tcp_ip(b, s, 1, 0, ACK, b"B1"));
    p.record(0, 0, &tcp_ip(a, s, 1, 0, ACK, b"A1"));
    p.record(0, 0, &tcp_ip(b, s, 3, 0, ACK, b"B2"));
    let capture = read_capture(&p.buf).unwrap();
    let streams: Vec<_> = capture
        .connections
        .iter()
        .map(|c| (c.client, c.stream(C2S)))
        .collect();
    assert_eq!(streams, vec![(b, b"B1B2".to_vec()), (a, b"A1".to_vec())]);
}

#[test]
fn connection_limit() {
    let mut p = Pcap::new(101);
    let s: SocketAddr = "10.0.0.2:1688".parse().unwrap();
    for port in 50000..50003 {
        let c = SocketAddr::new("10.0.0.1".parse().unwrap(), port);
        p.record(0, 0, &tcp_ip(c, s, 1, 0, ACK, b"x"));
    }
    let capture = read_capture_with_limits(&p.buf, &Limits::new().with_max_connections(1)).unwrap();
    assert_eq!(capture.connections.len(), 1);
    assert_eq!(
        kinds(&capture),
        vec![(1, None, WarningKind::ConnectionLimit)]
    );
}

#[test]
fn stream_limit() {
    let mut f = Flow::new(L2::Ethernet, "192.0.2.1:50000", "192.0.2.2:1688");
    f.handshake(1000, 5000);
    f.c(1001, 5001, ACK, b"hel");
    f.c(1004, 5001, ACK, b"lo world"); // 4
    f.s(5001, 1012, ACK, b"ok");
    let capture =
        read_capture_with_limits(&f.bytes(), &Limits::new().with_max_stream_bytes(5)).unwrap();
    assert_eq!(
        kinds(&capture),
        vec![(4, Some(0), WarningKind::StreamLimit)]
    );
    assert_eq!(
        chunks(&capture.connections[0]),
        vec![(C2S, b"hello".to_vec())]
    );
}

#[test]
fn out_of_order_limit_gives_up_the_gap() {
    let mut f = Flow::new(L2::Ethernet, "192.0.2.1:50000", "192.0.2.2:1688");
    f.handshake(1000, 5000);
    f.c(1005, 5001, ACK, b"bbbb"); // 3: buffered (4 bytes)
    f.c(1009, 5001, ACK, b"cccc"); // 4: would make 8
    f.c(1001, 5001, ACK, b"aaaa"); // 5: too late
    let limits = Limits::new().with_max_out_of_order_bytes(4);
    let capture = read_capture_with_limits(&f.bytes(), &limits).unwrap();
    assert_eq!(
        kinds(&capture),
        vec![
            (4, Some(0), WarningKind::OutOfOrderLimit),
            (4, Some(0), WarningKind::MissingBytes { len: 4 })
        ]
    );
    assert_eq!(capture.connections[0].stream(C2S), b"bbbbcccc");
}

#[test]
fn out_of_order_limit_gives_up_as_many_gaps_as_needed() {
    let mut f = Flow::new(L2::Ethernet, "192.0.2.1:50000", "192.0.2.2:1688");
    f.handshake(1000, 5000);
    f.c(1005, 5001, ACK, b"bb"); // 3
    f.c(1011, 5001, ACK, b"dd"); // 4: 4 bytes waiting
    f.c(1017, 5001, ACK, b"ffff"); // 5: both gaps given up, then buffered
    let limits = Limits::new().with_max_out_of_order_bytes(4);
    let capture = read_capture_with_limits(&f.bytes(), &limits).unwrap();
    assert_eq!(
        kinds(&capture),
        vec![
            (5, Some(0), WarningKind::OutOfOrderLimit),
            (5, Some(0), WarningKind::MissingBytes { len: 4 }),
            (5, Some(0), WarningKind::MissingBytes { len: 4 }),
            (5, Some(0), WarningKind::MissingBytes { len: 4 }),
        ]
    );
    assert_eq!(capture.connections[0].stream(C2S), b"bbddffff");
}

#[test]
fn warning_limit() {
    let mut p = Pcap::new(1);
    for _ in 0..5 {
        p.record(0, 0, &[1, 2, 3]);
    }
    let capture = read_capture_with_limits(&p.buf, &Limits::new().with_max_warnings(2)).unwrap();
    let got: Vec<_> = capture.warnings.iter().map(|w| w.kind).collect();
    assert_eq!(
        got,
        vec![
            WarningKind::MalformedLinkHeader,
            WarningKind::MalformedLinkHeader,
            WarningKind::WarningLimit
        ]
    );
}

#[test]
fn pcap_variants_big_endian_and_nanoseconds() {
    let client: SocketAddr = "10.0.0.1:50000".parse().unwrap();
    let server: SocketAddr = "10.0.0.2:1688".parse().unwrap();
    let frame = L2::Ethernet.frame(false, &tcp_ip(client, server, 1, 0, ACK, b"abc"));
    for (big_endian, nanos) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut p = Pcap::with(1, big_endian, nanos);
        p.record(1_700_000_000, 123_456, &frame);
        let capture = read_capture(&p.buf).unwrap();
        assert!(capture.warnings.is_empty());
        let chunk = &capture.connections[0].chunks[0];
        assert_eq!(chunk.bytes, b"abc");
        assert_eq!(chunk.timestamp.timestamp(), 1_700_000_000);
        let expect = if nanos { 123_456 } else { 123_456_000 };
        assert_eq!(
            chunk.timestamp.timestamp_subsec_nanos(),
            expect,
            "{big_endian} {nanos}"
        );
    }
}

#[test]
fn pcapng_both_byte_orders() {
    let client: SocketAddr = "[fe80::1]:50000".parse().unwrap();
    let server: SocketAddr = "[fe80::2]:1688".parse().unwrap();
    for big_endian in [false, true] {
        let mut p = PcapNg::new(big_endian);
        p.interface(1, None); // microseconds
        p.interface(113, Some(9)); // nanoseconds
        let eth = L2::Ethernet.frame(true, &tcp_ip(client, server, 1, 0, ACK, b"ab"));
        let sll = L2::Sll.frame(true, &tcp_ip(client, server, 3, 0, ACK, b"cd"));
        p.packet(0, 1_700_000_000_000_001, &eth);
        p.packet(1, 1_700_000_000_000_000_002, &sll);
        p.packet(7, 0, &eth); // no such interface
        let capture = read_capture(&p.buf).unwrap();
        assert_eq!(capture.packets, 3);
        assert_eq!(
            kinds(&capture),
            vec![(2, None, WarningKind::UnknownInterface(7))]
        );
        let conv = &capture.connections[0];
        assert_eq!(conv.stream(C2S), b"abcd");
        let ts = conv.chunks[0].timestamp;
        assert_eq!(
            (ts.timestamp(), ts.timestamp_subsec_nanos()),
            (1_700_000_000, 2)
        );
        // Truncated in the middle of the last block.
        let cut = &p.buf[..p.buf.len() - 10];
        let capture = read_capture(cut).unwrap();
        assert_eq!(kinds(&capture), vec![(2, None, WarningKind::TruncatedFile)]);
    }
}

#[test]
fn unreadable_headers() {
    assert_eq!(read_capture(&[]), Err(CaptureError::TruncatedHeader));
    assert_eq!(
        read_capture(&[0xd4, 0xc3]),
        Err(CaptureError::TruncatedHeader)
    );
    assert_eq!(
        read_capture(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0]),
        Err(CaptureError::TruncatedHeader)
    );
    assert_eq!(
        read_capture(b"GET / HTTP/1.1"),
        Err(CaptureError::UnknownFormat { magic: 0x2054_4547 })
    );
    let mut ng = PcapNg::new(false).buf;
    ng[8..12].copy_from_slice(&[1, 2, 3, 4]); // bad byte-order magic
    assert_eq!(read_capture(&ng), Err(CaptureError::MalformedHeader));
    // A header alone is an empty capture.
    let capture = read_capture(&Pcap::new(1).buf).unwrap();
    assert_eq!(
        (
            capture.packets,
            capture.connections.len(),
            capture.warnings.len()
        ),
        (0, 0, 0)
    );
}

#[test]
fn warning_display() {
    let mut f = Flow::new(L2::NullLe, "127.0.0.1:50000", "127.0.0.1:1688");
    f.handshake(1000, 5000);
    f.c(1005, 5001, ACK, b"bbbb");
    let capture = read_capture(&f.bytes()).unwrap();
    let warning = &capture.warnings[0];
    assert_eq!(
        warning.to_string(),
        "packet 3, connection 0: 4 bytes never captured: skipped"
    );
    let conversation = warning.conversation.unwrap();
    assert_eq!(conversation.client.to_string(), "127.0.0.1:50000");
    assert_eq!(conversation.server.to_string(), "127.0.0.1:1688");
    assert_eq!(warning.timestamp, ms(3));
}

/// `n` connections one after the other, each opened and closed cleanly.
fn sequential_connections(n: u16) -> Vec<u8> {
    let mut p = Pcap::new(101);
    let s: SocketAddr = "10.0.0.2:1688".parse().unwrap();
    for i in 0..n {
        let c = SocketAddr::new("10.0.0.1".parse().unwrap(), 10_000 + i % 50_000);
        let at = u32::from(i);
        p.record(at, 0, &tcp_ip(c, s, 100, 0, SYN, b""));
        p.record(at, 1, &tcp_ip(s, c, 900, 101, SYN | ACK, b""));
        p.record(at, 2, &tcp_ip(c, s, 101, 901, ACK | PSH, b"hi"));
        p.record(at, 3, &tcp_ip(c, s, 103, 901, FIN | ACK, b""));
        p.record(at, 4, &tcp_ip(s, c, 901, 104, FIN | ACK, b""));
    }
    p.buf
}

#[test]
fn closed_connections_are_retired_so_all_sequential_ones_decode() {
    let capture = read_capture(&sequential_connections(20_000)).unwrap();
    assert!(capture.warnings.is_empty(), "{:?}", &capture.warnings[..1]);
    assert_eq!(capture.connections.len(), 20_000);
    for (i, conv) in capture.connections.iter().enumerate() {
        assert_eq!(conv.index, i);
        assert_eq!(conv.stream(C2S), b"hi");
    }
}

#[test]
fn idle_connections_are_retired_when_the_table_is_full() {
    let s: SocketAddr = "10.0.0.2:1688".parse().unwrap();
    let client = |port| SocketAddr::new("10.0.0.1".parse().unwrap(), port);
    let limits = Limits::new()
        .with_max_connections(2)
        .with_idle_timeout(std::time::Duration::from_secs(60));
    // Two silent connections at t = 0, a third at t = 61 s: the oldest goes.
    let mut p = Pcap::new(101);
    p.record(0, 0, &tcp_ip(client(50000), s, 1, 0, ACK, b"a"));
    p.record(30, 0, &tcp_ip(client(50001), s, 1, 0, ACK, b"b"));
    p.record(61, 0, &tcp_ip(client(50002), s, 1, 0, ACK, b"c"));
    p.record(62, 0, &tcp_ip(client(50001), s, 2, 0, ACK, b"B"));
    let capture = read_capture_with_limits(&p.buf, &limits).unwrap();
    assert!(capture.warnings.is_empty(), "{:?}", capture.warnings);
    let streams: Vec<_> = capture.connections.iter().map(|c| c.stream(C2S)).collect();
    assert_eq!(streams, vec![b"a".to_vec(), b"bB".to_vec(), b"c".to_vec()]);
    // The same third connection at t = 59 s: nobody is idle long enough.
    let mut p = Pcap::new(101);
    p.record(0, 0, &tcp_ip(client(50000), s, 1, 0, ACK, b"a"));
    p.record(30, 0, &tcp_ip(client(50001), s, 1, 0, ACK, b"b"));
    p.record(59, 0, &tcp_ip(client(50002), s, 1, 0, ACK, b"c"));
    let capture = read_capture_with_limits(&p.buf, &limits).unwrap();
    assert_eq!(capture.connections.len(), 2);
    assert_eq!(
        kinds(&capture),
        vec![(2, None, WarningKind::ConnectionLimit)]
    );
}

/// A little-endian microsecond legacy pcap rewritten as pcapng.
fn as_pcapng(legacy: &[u8], big_endian: bool) -> Vec<u8> {
    let u32_at = |at: usize| u32::from_le_bytes(legacy[at..at + 4].try_into().unwrap());
    let mut ng = PcapNg::new(big_endian);
    ng.interface(u16::try_from(u32_at(20)).unwrap(), None);
    let mut at = 24;
    while at + 16 <= legacy.len() {
        let ts = u64::from(u32_at(at)) * 1_000_000 + u64::from(u32_at(at + 4));
        let len = u32_at(at + 8) as usize;
        ng.packet(0, ts, &legacy[at + 16..at + 16 + len]);
        at += 16 + len;
    }
    ng.buf
}

#[test]
fn reading_in_pieces_gives_the_same_records_for_every_format() {
    let mut inputs = samples();
    let real = [inputs[0].clone(), inputs[1].clone()];
    inputs.push(as_pcapng(&real[0], true));
    inputs.push(as_pcapng(&real[1], false));
    for (i, bytes) in inputs.iter().enumerate() {
        let whole = kms_activation::dissect::dissect(bytes).unwrap();
        if !(2..4).contains(&i) {
            assert!(
                whole.iter().any(|r| matches!(r.event, Event::Response(_))),
                "input {i}: {whole:?}"
            );
        }
        if i >= 4 {
            let legacy = kms_activation::dissect::dissect(&real[i - 4]).unwrap();
            assert_eq!(whole, legacy, "pcapng and pcap agree");
        }
        for piece in [1, 2, 5, 17, 64] {
            let mut dissector = Dissector::new();
            let mut records = Vec::new();
            for chunk in bytes.chunks(piece) {
                dissector.handle_input(chunk).unwrap();
                records.extend(std::iter::from_fn(|| dissector.poll_record()));
            }
            dissector.finish().unwrap();
            records.extend(std::iter::from_fn(|| dissector.poll_record()));
            assert_eq!(records, whole, "pieces of {piece}");
        }
    }
}

/// The client and server PDUs of the first conversation of a sample capture.
fn kms_exchange() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let path = format!(
        "{}/tests/data/pcaps/p-v6-ndr64-win11-like.pcap",
        env!("CARGO_MANIFEST_DIR")
    );
    let capture = read_capture(&std::fs::read(path).unwrap()).unwrap();
    let conv = &capture.connections[0];
    let pdus = |direction| {
        conv.chunks
            .iter()
            .filter(|c| c.direction == direction)
            .map(|c| c.bytes.clone())
            .collect::<Vec<_>>()
    };
    (pdus(C2S), pdus(S2C))
}

#[test]
fn records_of_interleaved_conversations_come_in_capture_order() {
    let (up, down) = kms_exchange();
    // bind, alter_context, request; bind_ack, alter_context_resp, response
    assert_eq!((up.len(), down.len()), (3, 3));
    let server4: SocketAddr = "10.0.0.2:1688".parse().unwrap();
    let a_client: SocketAddr = "10.0.0.1:50001".parse().unwrap();
    let b_client: SocketAddr = "[2001:db8::1]:50002".parse().unwrap();
    let server6: SocketAddr = "[2001:db8::2]:1688".parse().unwrap();
    let mut p = Pcap::new(101);
    let mut seq = [1u32; 4];
    let mut send =
        |p: &mut Pcap, t: u32, from: SocketAddr, to: SocketAddr, k: usize, data: &[u8]| {
            p.record(t, 0, &tcp_ip(from, to, seq[k], 0, PSH, data));
            seq[k] += u32::try_from(data.len()).unwrap();
        };
    // a and b bind (packets 0-7), b asks, a asks, a is answered, b is answered.
    for i in 0..2 {
        let t = 4 * u32::try_from(i).unwrap();
        send(&mut p, t, a_client, server4, 0, &up[i]);
        send(&mut p, t + 1, b_client, server6, 2, &up[i]);
        send(&mut p, t + 2, server4, a_client, 1, &down[i]);
        send(&mut p, t + 3, server6, b_client, 3, &down[i]);
    }
    send(&mut p, 9, b_client, server6, 2, &up[2]);
    send(&mut p, 10, a_client, server4, 0, &up[2]);
    send(&mut p, 11, server4, a_client, 1, &down[2]);
    send(&mut p, 12, server6, b_client, 3, &down[2]);
    let records = kms_activation::dissect::dissect(&p.buf).unwrap();
    let summary: Vec<(usize, i64, SocketAddr, SocketAddr, &str)> = records
        .iter()
        .map(|r| {
            let conv = r.conversation.unwrap();
            let kind = match r.event {
                Event::Request(_) => "request",
                Event::Response(_) => "response",
                _ => "other",
            };
            (
                conv.index,
                r.timestamp.timestamp(),
                conv.client,
                conv.server,
                kind,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, 9, b_client, server6, "request"),
            (0, 10, a_client, server4, "request"),
            (0, 11, a_client, server4, "response"),
            (1, 12, b_client, server6, "response"),
        ]
    );
    assert_eq!(
        records.iter().map(|r| r.packet).collect::<Vec<_>>(),
        [8, 9, 10, 11]
    );
}

#[test]
fn kms_warnings_count_against_the_warning_limit() {
    let (up, down) = kms_exchange();
    let mut f = Flow::new(L2::Raw, "10.0.0.1:50000", "10.0.0.2:1688");
    f.handshake(1000, 5000);
    let mut seq = 1001u32;
    let mut ack = 5001u32;
    for i in 0..2 {
        f.c(seq, ack, ACK, &up[i]);
        seq += u32::try_from(up[i].len()).unwrap();
        f.s(ack, seq, ACK, &down[i]);
        ack += u32::try_from(down[i].len()).unwrap();
    }
    // 50 requests on a context that was never negotiated: 50 warnings.
    let mut bad = up[2].clone();
    bad[20] ^= 0x7f; // context id
    for _ in 0..50 {
        f.c(seq, ack, ACK, &bad);
        seq += u32::try_from(bad.len()).unwrap();
    }
    let all = dissect_with_limits(&f.bytes(), Limits::new()).unwrap();
    let warnings = |records: &[Record]| {
        records
            .iter()
            .filter(|r| matches!(r.event, Event::Warning { .. }))
            .count()
    };
    assert_eq!(warnings(&all), 50, "{:?}", &all[..1]);
    let capped = dissect_with_limits(&f.bytes(), Limits::new().with_max_warnings(7)).unwrap();
    assert_eq!(warnings(&capped), 8, "7 and the limit warning");
    assert!(matches!(
        &capped.last().unwrap().event,
        Event::Warning { message } if message.contains("warning limit")
    ));
}

#[test]
fn rpc_detection() {
    let header = |ptype: u8, drep: u8, len: u16| {
        let mut h = vec![5, 0, ptype, 3, drep, 0, 0, 0];
        h.extend(len.to_le_bytes());
        h.extend([0, 0, 1, 0, 0, 0]);
        h
    };
    assert!(looks_like_rpc(&header(11, 0x10, 116)));
    assert!(looks_like_rpc(&header(0, 0x10, 16)));
    assert!(!looks_like_rpc(&header(0, 0x10, 15)));
    assert!(!looks_like_rpc(&header(1, 0x10, 100))); // connectionless ping
    assert!(!looks_like_rpc(&header(11, 0x00, 100))); // big-endian
    assert!(!looks_like_rpc(&header(11, 0x10, 100)[..15]));
    let mut v4 = header(11, 0x10, 100);
    v4[0] = 4;
    assert!(!looks_like_rpc(&v4));
}

// ---------------------------------------------------------------- properties

/// A small valid capture of each kind, for mutation.
fn samples() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for name in ["p-v4-win7-and-v5.pcap", "p-v6-ndr64-win11-like.pcap"] {
        let path = format!("{}/tests/data/pcaps/{name}", env!("CARGO_MANIFEST_DIR"));
        out.push(std::fs::read(path).unwrap());
    }
    let mut f = Flow::new(
        L2::EthernetVlan,
        "[2001:db8::1]:50000",
        "[2001:db8::2]:1688",
    );
    f.handshake(0xffff_fff0, 10);
    f.c(0xffff_fffa, 11, ACK, b"later");
    f.c(0xffff_fff1, 11, ACK, b"first");
    f.s(11, 0xffff_ffff, ACK | FIN, b"resp");
    out.push(f.bytes());
    let mut ng = PcapNg::new(true);
    ng.interface(276, Some(0x83));
    ng.packet(
        0,
        5,
        &L2::Sll2.frame(
            false,
            &tcp_ip(
                "1.2.3.4:5".parse().unwrap(),
                "5.6.7.8:1688".parse().unwrap(),
                1,
                0,
                SYN,
                b"",
            ),
        ),
    );
    ng.packet(
        0,
        6,
        &L2::Sll2.frame(
            false,
            &tcp_ip(
                "1.2.3.4:5".parse().unwrap(),
                "5.6.7.8:1688".parse().unwrap(),
                2,
                0,
                ACK,
                b"abc",
            ),
        ),
    );
    out.push(ng.buf);
    out
}

fn arbitrary_capture() -> impl Strategy<Value = Vec<u8>> {
    let magics: Vec<[u8; 4]> = vec![
        [0xd4, 0xc3, 0xb2, 0xa1],
        [0xa1, 0xb2, 0xc3, 0xd4],
        [0x4d, 0x3c, 0xb2, 0xa1],
        [0x34, 0xcd, 0xb2, 0xa1],
        [0x0a, 0x0d, 0x0d, 0x0a],
    ];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        (
            proptest::sample::select(magics),
            proptest::collection::vec(any::<u8>(), 0..512)
        )
            .prop_map(|(m, rest)| {
                let mut v = m.to_vec();
                v.extend(rest);
                v
            }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in arbitrary_capture()) {
        let _ = read_capture(&bytes);
    }

    #[test]
    fn mutated_captures_never_panic(
        which in 0usize..4,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..12),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = samples().swap_remove(which);
        for (at, xor) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= xor;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok(capture) = read_capture(&bytes) {
            for conv in &capture.connections {
                prop_assert_eq!(conv.index, capture.connections.iter().position(|c| c == conv).unwrap());
            }
        }
    }

    #[test]
    fn segment_order_does_not_matter(
        pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 1..12),
        isn in any::<u32>(),
        order in Just((0..12usize).collect::<Vec<_>>()).prop_shuffle(),
    ) {
        let mut f = Flow::new(L2::Ethernet, "192.0.2.1:50000", "192.0.2.2:1688");
        f.handshake(isn, 77);
        let mut seqs = Vec::new();
        let mut seq = isn.wrapping_add(1);
        for p in &pieces {
            seqs.push(seq);
            seq = seq.wrapping_add(u32::try_from(p.len()).unwrap());
        }
        for &i in order.iter().filter(|&&i| i < pieces.len()) {
            f.c(seqs[i], 78, ACK, &pieces[i]);
        }
        let capture = read_capture(&f.bytes()).unwrap();
        prop_assert!(capture.warnings.is_empty(), "{:?}", capture.warnings);
        let conv = &capture.connections[0];
        prop_assert_eq!(conv.chunks.len(), 1);
        prop_assert_eq!(conv.stream(C2S), pieces.concat());
    }
}
