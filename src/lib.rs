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
//!            bytes from peer                      bytes to peer
//!   socket ──────────────────► handle_input() ──► poll_transmit() ──► socket
//!                                   │      ▲
//!                         RequestBody│      │Answer / HResult
//!                                   ▼      │
//!                                 Responder (host policy)
//! ```
//!
//! ## Layers
//!
//! * [`rpc`]: DCE/RPC connection-oriented PDUs, NDR32/NDR64 stubs of the
//!   single `RequestActivation` call, context negotiation, frame splitting.
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
//! A host connection per TCP connection, a [`host::Responder`] deciding the
//! answers:
//!
//! ```
//! use kms_activation::host::{FixedResponder, HostConfig, HostConnection};
//! use kms_activation::{FileTime, ScriptedRandom};
//!
//! let config = HostConfig::default();
//! let mut conn = HostConnection::new(&config);
//! let mut responder = FixedResponder::default();
//! let mut rng = ScriptedRandom::new([1u8; 64]); // an OS-backed source in real use
//! # let bytes_from_socket: &[u8] = &[];
//! let now = FileTime::from_ticks(134_397_882_570_000_000);
//! let used = conn.handle_input_with(now, bytes_from_socket, &mut responder, &mut rng)?;
//! # assert_eq!(used, 0);
//! let mut to_send = Vec::new();
//! let _ = conn.poll_transmit(&mut to_send);
//! # Ok::<(), kms_activation::host::HostError>(())
//! ```
//!
//! See `examples/kms-host.rs` for a complete blocking TCP host.
//!
//! ## Crate features
//!
//! * *default*: none; the core has no I/O dependencies.
//! * `pcap`: the `dissect` module (reads pcap files with `pcap-parser`).
//!
//! ## Minimum supported Rust version
//!
//! Rust 1.89, edition 2024.
#![forbid(unsafe_code)]
#![deny(rustdoc::broken_intra_doc_links)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

pub mod client;
mod crypto;
#[cfg(feature = "pcap")]
#[cfg_attr(docsrs, doc(cfg(feature = "pcap")))]
pub mod dissect;
pub mod epid;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod guid;
pub mod host;
pub mod hresult;
pub mod license;
pub mod message;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub mod product;
pub mod product_key;
mod random;
pub mod rpc;
mod time;
#[cfg(any(feature = "tokio", feature = "blocking"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "tokio", feature = "blocking"))))]
pub mod transport;
pub mod wire;

pub use epid::Epid;
pub use error::Error;
pub use hresult::HResult;
pub use message::{Hwid, LicenseStatus, RequestBody, ResponseBody, Version};
pub use product_key::{ProductKey, ProductKeyError};
pub use random::{OsRandom, RandomSource, ScriptedRandom};
pub use time::{FileTime, FileTimeRangeError};
pub use uuid::Uuid;
