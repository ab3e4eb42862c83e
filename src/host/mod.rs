//! The host (server) side: one sans-IO [`HostConnection`] per TCP connection.
//!
//! A host connection turns the bytes a client sent into the bytes to send
//! back. It speaks the DCE/RPC association (bind, `alter_context`, any number of
//! calls), decodes and decrypts each KMS request and asks a [`Responder`] how
//! to answer it: with an [`Answer`] (ePID, count, intervals, HWID) or with an
//! [`HResult`](crate::HResult) refusal.
//!
//! # Driving a connection
//!
//! The methods fall into three kinds (after quinn-proto's `Connection`):
//!
//! * **input**: [`HostConnection::handle_input`] takes received bytes and the
//!   current time, and returns how many of them it consumed;
//! * **output**: [`HostConnection::poll_transmit`] appends the bytes to send
//!   to a buffer the caller owns;
//! * **getters**: [`HostConnection::is_closed`] and friends.
//!
//! Call `handle_input` with what the socket produced; then `poll_transmit` and
//! write everything it produced; repeat with any input `handle_input` did not
//! consume. When `handle_input` returns an error the connection is closed, but
//! a fault PDU may be queued: drain `poll_transmit` before closing the socket.
//!
//! ```
//! use kms_activation::host::{FixedResponder, HostConfig, HostConnection};
//! use kms_activation::{FileTime, ScriptedRandom};
//!
//! let config = HostConfig::default();
//! let mut responder = FixedResponder::default();
//! let mut rng = ScriptedRandom::new([0x5a; 64]);
//! let mut conn = HostConnection::new(&config);
//! let now = FileTime::from_ticks(134_397_882_570_000_000);
//!
//! // Bytes that are not DCE/RPC close the connection with an error.
//! let err = conn.handle_input_with(now, b"GET / HTTP/1.1\r\n", &mut responder, &mut rng);
//! assert!(err.is_err());
//! assert!(conn.is_closed());
//! ```

mod activation;
mod config;
mod connection;
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
    Responder,
};
pub use statistics::{ApplicationCount, Statistics};
