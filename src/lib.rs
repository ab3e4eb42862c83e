//! # kms-activation
//!
//! A sans-IO implementation of the wire protocol of Microsoft's Key
//! Management Service (KMS), the volume-activation protocol Windows and
//! Office clients speak to a KMS host on TCP port 1688.
//!
//! Running a KMS host does not license the software it activates; that still
//! takes a volume licence from Microsoft. This crate implements the protocol.
//!
//! ## What this crate does not do: network I/O
//!
//! Like `rustls` and `quinn-proto`, the core reads no socket, no clock and no
//! global randomness. Bytes, the current time and a [`RandomSource`] go in;
//! bytes and typed values come out. That makes every exchange reproducible
//! (the tests replay captured traffic byte for byte) and lets the same
//! engines run under blocking I/O, tokio, or a packet-capture replayer.
//!
//! ```text
//!            bytes from peer                    bytes to peer
//!   socket ──────────────────► handle_input()   transmit() ──────────► socket
//!                                   │               ▲
//!                      poll_event() │               │ answer() / refuse()
//!                                   ▼               │
//!                        KmsHost::decide() ── CountStore (memory, SQLite, PostgreSQL)
//! ```
//!
//! ## Layers
//!
//! * [`dcerpc`]: how KMS uses connection-oriented DCE/RPC (PDUs, context
//!   negotiation, the NDR32/NDR64 stubs of the single `RequestActivation`
//!   call); the codecs themselves are internal to the engines.
//! * [`message`]: the KMS request and response of protocol V4, V5 and V6,
//!   with their cryptography (AES-CBC, the V4 CBC-MAC, the V6 HMAC).
//! * [`host`] and [`client`]: sans-IO connection engines.
//! * [`product`], [`product_key`], [`epid`], [`hresult`], [`license`]: what
//!   the GUIDs and numbers mean: products, GVLKs, host ePIDs, error codes
//!   and the license-state timeline.
//! * `dissect` (feature `pcap`): KMS conversations in packet captures.
//!
//! ## Getting started
//!
//! A [`host::KmsHost`] shared by all connections decides; a
//! [`host::HostConnection`] per TCP connection speaks the protocol:
//!
//! ```
//! use kms_activation::host::store::MemoryStore;
//! use kms_activation::host::{HostConfig, HostConnection, KmsHost, KmsHostConfig};
//! use kms_activation::{FileTime, ScriptedRandom};
//!
//! let mut rng = ScriptedRandom::new(vec![1u8; 4096]); // kms_activation::OsRandom in real use
//! let now = FileTime::from_ticks(134_397_882_570_000_000); // FileTime::try_from(SystemTime::now())
//! let host = pollster::block_on(KmsHost::start(
//!     KmsHostConfig::default(),
//!     MemoryStore::default(),
//!     now,
//!     &mut rng,
//! ))?;
//! let mut conn = HostConnection::new(&HostConfig::default());
//! # let bytes_from_socket: &[u8] = &[];
//! let used = conn.handle_input(now, bytes_from_socket, &mut rng)?;
//! let records = host.process_blocking(&mut conn, &mut rng); // or `process(..).await`
//! let to_send = conn.transmit();
//! # assert_eq!((used, records.len(), to_send.len()), (0, 0, 0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The store's operations are futures. The examples here run them with
//! `pollster::block_on` (add `pollster` to your dev-dependencies, or use
//! the executor you have); [`host::KmsHost::process_blocking`] needs none.
//!
//! ## Embedding: a socket loop
//!
//! The whole of a host over `std::net`, without the ready-made transports:
//! read, hand the bytes and the time to the engine, let the policy
//! ([`host::KmsHost`], genuine counting) answer, write what the engine
//! queued; offer again what it did not take. A real server also needs
//! timeouts and a bound on connections: the `tokio` and `blocking`
//! features' `transport` servers add them (and
//! the `kms-host` tool, feature `cli`, is a complete host on the tokio one).
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::{TcpListener, TcpStream};
//! use std::time::SystemTime;
//!
//! use kms_activation::host::store::MemoryStore;
//! use kms_activation::host::{HostConfig, HostConnection, KmsHost, KmsHostConfig};
//! use kms_activation::{FileTime, OsRandom};
//!
//! /// Serves one connection until the peer closes it or breaks the protocol.
//! fn serve(mut stream: TcpStream, host: &KmsHost<MemoryStore>, config: &HostConfig) -> std::io::Result<()> {
//!     let mut conn = HostConnection::new(config).with_peer(stream.peer_addr()?);
//!     let mut rng = OsRandom;
//!     let mut buf = [0u8; 2048];
//!     loop {
//!         let n = stream.read(&mut buf)?;
//!         if n == 0 {
//!             return Ok(());
//!         }
//!         let mut input = &buf[..n];
//!         loop {
//!             # #[expect(clippy::disallowed_methods, reason = "the I/O loop reads the clock")]
//!             let now = FileTime::try_from(SystemTime::now()).unwrap_or_default();
//!             let result = conn.handle_input(now, input, &mut rng);
//!             // Decide every request (awaiting the store), then send the replies
//!             // (and, after an error, the fault the engine queued).
//!             let _records = host.process_blocking(&mut conn, &mut rng);
//!             stream.write_all(conn.transmit())?;
//!             let sent = conn.transmit().len();
//!             conn.advance_transmit(sent);
//!             match result {
//!                 Err(_) => return Ok(()), // the engine closed the connection
//!                 Ok(used) if used == input.len() => break,
//!                 Ok(used) => input = &input[used..], // it waited for the replies to go
//!             }
//!         }
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # #[expect(clippy::disallowed_methods, reason = "the I/O loop reads the clock")]
//! let now = FileTime::try_from(SystemTime::now())?;
//! let store = MemoryStore::default();
//! let host = pollster::block_on(KmsHost::start(KmsHostConfig::default(), store, now, &mut OsRandom))?;
//! let config = HostConfig::default();
//! let listener = TcpListener::bind("127.0.0.1:0")?; // 0.0.0.0:1688 for real
//! # let addr = listener.local_addr()?;
//! # let peer = std::thread::spawn(move || {
//! #     let mut s = TcpStream::connect(addr).unwrap();
//! #     s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
//! #     let mut rest = Vec::new();
//! #     s.read_to_end(&mut rest).unwrap(); // closed by the host: not DCE/RPC
//! # });
//! for stream in listener.incoming().take(1) {
//!     serve(stream?, &host, &config)?; // a thread or task per connection in a real host
//! }
//! # peer.join().unwrap();
//! # Ok(())
//! # }
//! ```
//!
//! ## Crate features
//!
//! * *default*: none; the core has no I/O dependencies.
//! * `pcap`: the `dissect` module (reads pcap and pcapng files with `pcap-parser`).
//! * `serde`: `serde::Serialize` on the public value types (messages, catalog
//!   entries, ePIDs, activation and dissector records).
//! * `dns`: `client::discovery`, DNS SRV discovery of KMS hosts
//!   (`_vlmcs._tcp`) with `hickory-resolver`, failover and host caching;
//!   `host::dns_publish`, a host publishing its own SRV record by DNS update
//!   (RFC 2136, TSIG).
//! * `tracing`: every [`host::ActivationRecord`] is also emitted as a
//!   `tracing` event (target `kms_activation::activation`).
//! * `sqlite`: `host::store::SqliteStore`, the host's clients, activation
//!   log and ePIDs in one SQLite file (`rusqlite` with the bundled library),
//!   with group commit.
//! * `postgres`: `host::store::PostgresStore`, one PostgreSQL database
//!   shared by a fleet of hosts (`tokio-postgres`; needs a Tokio runtime).
//! * `tokio`: `transport::tokio`, a server (thousands
//!   of connections, limits, graceful shutdown) and a client over
//!   `tokio::net`.
//! * `blocking`: `transport::blocking`, the same over
//!   `std::net`, the server on a bounded thread pool.
//! * `metrics`: `metrics::HostMetrics`, Prometheus metrics of a host (with
//!   `tokio`, an HTTP endpoint for them).
//! * `cli`: the command-line tools `kms-host`, `kms-client`, `kms-catalog`
//!   and `kms-dissect` (`cargo install kms-activation --features cli`); it
//!   turns on every feature the tools use. A library user never needs it.
//! * `fuzzing`: unstable internals for the fuzz targets and the test suite
//!   (no stability promise).
//!
//! ## Minimum supported Rust version
//!
//! Rust 1.89, edition 2024.
#![forbid(unsafe_code)]
#![deny(rustdoc::broken_intra_doc_links)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
#[allow(
    clippy::disallowed_methods,
    reason = "the admin endpoint is I/O: it reads the clocks for uptime, readiness and the dashboard"
)]
pub mod admin;
mod block_on;
pub mod client;
mod crypto;
pub mod dcerpc;
#[cfg(feature = "pcap")]
#[cfg_attr(docsrs, doc(cfg(feature = "pcap")))]
pub mod dissect;
pub mod epid;
mod error;
// Fuzzing entry points, for the `fuzz/` targets and the corpus replay test
// only: feature `fuzzing` (or `--cfg fuzzing`), no stability promise.
#[cfg(any(fuzzing, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod guid;
pub mod host;
pub mod hresult;
pub mod license;
#[cfg_attr(
    not(feature = "tracing"),
    allow(dead_code, reason = "its users log with the tracing feature")
)]
mod log_limit;
pub mod message;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub mod product;
pub mod product_key;
mod random;
#[cfg(not(any(fuzzing, feature = "fuzzing")))]
mod rpc;
// The DCE/RPC codecs the engines use: public only for the fuzz targets and
// the test suite (feature `fuzzing`), with no stability promise. The protocol
// notes are in `dcerpc`.
#[cfg(any(fuzzing, feature = "fuzzing"))]
#[doc(hidden)]
pub mod rpc;
#[cfg(feature = "serde")]
mod serde_text;
mod time;
#[cfg(any(feature = "tokio", feature = "blocking"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "tokio", feature = "blocking"))))]
pub mod transport;
pub mod wire;

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use epid::Epid;
pub use error::Error;
pub use hresult::HResult;
pub use message::{Hwid, LicenseStatus, RequestBody, ResponseBody, Version};
pub use product_key::{ProductKey, ProductKeyError};
pub use random::{OsRandom, RandomSource, ScriptedRandom};
pub use time::{FileTime, FileTimeRangeError};
pub use uuid::Uuid;

/// The `chrono` the API is written in: ePID dates, license timelines and
/// capture timestamps are [`chrono::DateTime<chrono::Utc>`],
/// [`chrono::NaiveDate`] and [`chrono::TimeDelta`]. Use this re-export to
/// build and read them with the same version. It is built without the
/// `clock` feature; `chrono::Utc::now()` needs `chrono` with `clock` (or
/// `now`) in your own dependencies.
pub use chrono;
