//! What a host connection reports: KMS requests to answer, and requests the
//! engine refused by itself.

use std::fmt;
use std::net::SocketAddr;

use crate::message::{self, RequestBody, Version};
use crate::rpc::Ndr;
use crate::{FileTime, HResult};

/// Names one KMS request on one [`HostConnection`](super::HostConnection);
/// pass it back to [`answer`](super::HostConnection::answer) or
/// [`refuse`](super::HostConnection::refuse).
///
/// Ids count up from 0 on each connection and are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub(crate) u64);

impl RequestId {
    /// The request's position on its connection (0 for the first).
    #[must_use]
    pub const fn index(self) -> u64 {
        self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Where and how a request arrived: everything but the request itself.
///
/// The engine fills it in; [`RequestContext::new`] makes one for calling a
/// policy directly (tests, replays):
///
/// ```
/// use kms_activation::FileTime;
/// use kms_activation::dcerpc::Ndr;
/// use kms_activation::host::RequestContext;
///
/// let mut context = RequestContext::new(FileTime::from_ticks(134_397_882_570_000_000));
/// context.peer = Some("192.0.2.7:50123".parse()?);
/// assert_eq!((context.connection_id, context.ndr), (0, Ndr::Ndr32));
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestContext {
    /// The client's address, as given to
    /// [`HostConnection::with_peer`](super::HostConnection::with_peer).
    pub peer: Option<SocketAddr>,
    /// The number the transport gave the connection
    /// ([`HostConnection::with_connection_id`](super::HostConnection::with_connection_id)).
    pub connection_id: u64,
    /// The DCE/RPC call id of the request PDU.
    pub call_id: u32,
    /// The transfer syntax the request was encoded in.
    pub ndr: Ndr,
    /// When the request's last byte was handed to the engine.
    pub received_at: FileTime,
}

/// A decoded KMS request that passed the protocol's own checks and waits
/// for the embedder's [`Answer`](super::Answer) or refusal.
///
/// [`RequestEvent::detached`] makes one outside an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestEvent {
    /// Pass this to [`answer`](super::HostConnection::answer) or
    /// [`refuse`](super::HostConnection::refuse).
    pub id: RequestId,
    /// Peer, connection, call id, transfer syntax, arrival time.
    pub context: RequestContext,
    /// The decoded, decrypted request.
    pub body: RequestBody,
}

impl RequestContext {
    /// The context of a request received at `received_at` on no connection:
    /// no peer, connection id 0, call id 0, NDR32. Set the public fields to
    /// change any of them.
    #[must_use]
    pub const fn new(received_at: FileTime) -> Self {
        Self {
            peer: None,
            connection_id: 0,
            call_id: 0,
            ndr: Ndr::Ndr32,
            received_at,
        }
    }
}

impl RequestEvent {
    /// An event that belongs to no connection, for exercising a policy
    /// (tests, benchmarks, replays) without the engine: its id names no
    /// request, so [`answer`](super::HostConnection::answer) refuses it.
    #[must_use]
    pub const fn detached(context: RequestContext, body: RequestBody) -> Self {
        Self {
            id: RequestId(u64::MAX),
            context,
            body,
        }
    }

    /// The request's protocol version.
    #[must_use]
    pub const fn version(&self) -> Version {
        self.body.version
    }
}

/// Why the engine refused a request before the embedder saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The stub or KMS message does not decode, is of an unknown version,
    /// or does not decrypt (answered with [`HResult::INVALID_DATA`]).
    Undecodable(message::Error),
    /// The stub does not decode in the negotiated transfer syntax
    /// ([`HResult::INVALID_DATA`]).
    BadStub,
    /// A V4 request whose MAC is wrong ([`HResult::INVALID_DATA`]).
    BadMac,
    /// N policy above [`MAX_N_POLICY`](super::MAX_N_POLICY)
    /// ([`HResult::INVALID_DATA`]).
    NPolicyTooLarge {
        /// The request's N policy.
        n_policy: u32,
    },
    /// The client's clock is further from the host's than the configured
    /// skew ([`HResult::INVALID_TIMESTAMP`]).
    ClockSkew {
        /// Client time minus host time, in whole minutes.
        minutes: i64,
    },
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Undecodable(e) => write!(f, "undecodable request: {e}"),
            Self::BadStub => f.write_str("request stub does not decode"),
            Self::BadMac => f.write_str("V4 request with a wrong MAC"),
            Self::NPolicyTooLarge { n_policy } => {
                write!(f, "N policy {n_policy} above {}", super::MAX_N_POLICY)
            }
            Self::ClockSkew { minutes } => {
                write!(f, "client clock off by {minutes} minutes")
            }
        }
    }
}

/// A request the engine answered by itself with an HRESULT.
///
/// Reported so that a host can log and count it like any other request;
/// nothing needs to be done with it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RejectedRequest {
    /// Peer, connection, call id, transfer syntax, arrival time.
    pub context: RequestContext,
    /// The decoded request, when it decoded.
    pub body: Option<RequestBody>,
    /// Why it was refused.
    pub reason: RejectReason,
    /// The HRESULT sent to the client.
    pub result: HResult,
}

/// What a [`HostConnection`](super::HostConnection) reports through
/// [`poll_event`](super::HostConnection::poll_event).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostEvent {
    /// A request to answer with
    /// [`answer`](super::HostConnection::answer) or
    /// [`refuse`](super::HostConnection::refuse).
    Request(RequestEvent),
    /// A request the engine already refused (for logs and statistics).
    Rejected(RejectedRequest),
}
