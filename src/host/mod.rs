//! The host (server) side: one sans-IO [`HostConnection`] per TCP
//! connection, and [`KmsHost`], a policy that decides like a Microsoft KMS
//! host.
//!
//! # Layers
//!
//! * [`HostConnection`] speaks the DCE/RPC association (bind,
//!   `alter_context`, any number of calls), decodes and decrypts each KMS
//!   request, applies the protocol's own checks and reports every request
//!   that passes them as an event. It knows nothing of clients, counts or
//!   keys.
//! * The embedder answers each event with an [`Answer`] (ePID, count,
//!   intervals, HWID) or an [`HResult`](crate::HResult) refusal — when it is
//!   ready, so a database can be awaited in between.
//! * [`KmsHost`] is the ready-made policy: CSVLKs and their ePIDs, genuine
//!   client counting in a [`store::CountStore`], [`DecisionHook`]s,
//!   [`Statistics`] and an [`ActivationRecord`] per request.
//!   [`Responder`] is the minimal synchronous alternative for hosts that
//!   decide inline ([`FixedResponder`] is an emulator's fixed answer).
//!
//! # Driving a connection
//!
//! The methods fall into four kinds (after quinn-proto's `Connection`):
//!
//! * **input**: [`HostConnection::handle_input`] takes received bytes and the
//!   current time, and returns how many of them it consumed;
//! * **events**: [`HostConnection::poll_event`] yields each decoded request
//!   ([`HostEvent::Request`]) and each request the engine refused by itself
//!   ([`HostEvent::Rejected`], for logs);
//! * **commands**: [`HostConnection::answer`] and [`HostConnection::refuse`]
//!   settle a request, in any order; replies still leave in call order;
//! * **output**: [`HostConnection::transmit`] borrows the bytes to send and
//!   [`HostConnection::advance_transmit`] drops those sent.
//!
//! A loop: feed what the socket read to `handle_input`; settle the events;
//! write `transmit()` and advance; offer the input `handle_input` did not
//! consume again once output is written or requests are answered. Each call
//! does a bounded amount of work and buffers a bounded number of bytes
//! ([`HostLimits`]). When `handle_input` returns an error the connection is
//! closed, but a fault PDU may be queued: write `transmit()` before closing
//! the socket.
//!
//! # The protocol's own checks
//!
//! Done by the engine before any policy sees a request, answered with an
//! HRESULT in place of a response (the connection stays open):
//!
//! | check | HRESULT |
//! |---|---|
//! | the stub or KMS message does not decode; version other than 4.0, 5.0, 6.0; bad padding | 0x8007000D |
//! | V4 request whose MAC is wrong (switchable) | 0x8007000D |
//! | N policy above 1000 | 0x8007000D |
//! | client clock more than ±4 h (configurable, switchable) from `now` | 0xC004F06C |
//!
//! [`KmsHost`] adds the key checks of a genuine host: a KMS ID its CSVLKs do
//! not activate, a retail or pre-release KMS ID, or a KMS ID of another
//! application than the request's is refused with 0xC004F042.
//!
//! ```
//! use kms_activation::host::store::MemoryStore;
//! use kms_activation::host::{HostConfig, HostConnection, HostEvent, KmsHost, KmsHostConfig};
//! use kms_activation::{FileTime, ScriptedRandom};
//!
//! let now = FileTime::from_ticks(134_397_882_570_000_000);
//! let mut rng = ScriptedRandom::new(vec![0x5a; 4096]); // OsRandom in real use
//! let host = pollster::block_on(KmsHost::start(
//!     KmsHostConfig::default(),
//!     MemoryStore::default(),
//!     now,
//!     &mut rng,
//! ))?;
//! let mut conn = HostConnection::new(&HostConfig::default());
//!
//! // Bytes that are not DCE/RPC close the connection with an error.
//! assert!(conn.handle_input(now, b"GET / HTTP/1.1\r\n", &mut rng).is_err());
//! assert!(conn.is_closed());
//!
//! // The event loop of a well-behaved connection: settle every event.
//! while let Some(event) = conn.poll_event() {
//!     if let HostEvent::Request(request) = event {
//!         let decision = pollster::block_on(host.decide(&request));
//!         match decision.reply {
//!             Ok(answer) => conn.answer(request.id, answer, &mut rng)?,
//!             Err(hresult) => conn.refuse(request.id, hresult)?,
//!         }
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod activation;
mod config;
mod connection;
#[cfg(feature = "dns")]
#[cfg_attr(docsrs, doc(cfg(feature = "dns")))]
pub mod dns_publish;
mod event;
mod hook;
mod kms_host;
mod responder;
mod statistics;
pub mod store;

pub use activation::ActivationRecord;
pub use config::{DEFAULT_MAX_CLOCK_SKEW, HostConfig, HostLimits};
pub use connection::{AnswerError, HostConnection, HostError};
pub use event::{
    HostEvent, RejectReason, RejectedRequest, RequestContext, RequestEvent, RequestId,
};
pub use hook::{CidrAllowList, DecisionHook, MaxClients, ProductAllowList};
pub use kms_host::{
    CountPolicy, DEFAULT_COUNT_WINDOW, DEFAULT_HOST_BUILD, Decision, KmsHost, KmsHostConfig,
    KmsHostError,
};
pub use responder::{
    Answer, DEFAULT_ACTIVATION_INTERVAL, DEFAULT_RENEWAL_INTERVAL, FixedResponder, MAX_N_POLICY,
    Responder, capped_count, count_cap,
};
pub use statistics::{ApplicationCount, Statistics};
