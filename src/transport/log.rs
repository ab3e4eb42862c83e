//! Log lines for a server's events, each kind rate-limited.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::{CloseReason, Observer, clock};
use crate::log_limit::{Admit, LogLimit};

/// Lines of one kind written at most per interval.
const BURST: u32 = 20;
/// The interval of [`BURST`].
const INTERVAL: Duration = Duration::from_secs(10);

/// An [`Observer`] that writes a server's events as `tracing` lines
/// (target `kms_activation::transport`), each kind at most 20 lines per 10
/// seconds; the first line after a suppressed spell says how many were
/// dropped (`suppressed`). A flood of bad connections thus writes a bounded
/// amount.
///
/// | event | level |
/// |---|---|
/// | connection opened, or closed normally (by the peer, at shutdown, after the request limit) | DEBUG |
/// | connection closed otherwise (timeouts, eviction, protocol or I/O errors) | INFO |
/// | connection refused (server full), `accept` failing, handler timed out or panicked | WARN |
///
/// ```
/// use kms_activation::transport::{LogObserver, Observer};
///
/// let log = LogObserver::new();
/// log.connection_refused("127.0.0.1:50000".parse().unwrap());
/// ```
#[derive(Debug)]
pub struct LogObserver {
    opened: LogLimit,
    closed: LogLimit,
    closed_abnormally: LogLimit,
    refused: LogLimit,
    accept: LogLimit,
    handler: LogLimit,
}

impl Default for LogObserver {
    fn default() -> Self {
        Self::new()
    }
}

impl LogObserver {
    /// An observer with fresh limits.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            opened: LogLimit::new(INTERVAL, BURST),
            closed: LogLimit::new(INTERVAL, BURST),
            closed_abnormally: LogLimit::new(INTERVAL, BURST),
            refused: LogLimit::new(INTERVAL, BURST),
            accept: LogLimit::new(INTERVAL, BURST),
            handler: LogLimit::new(INTERVAL, BURST),
        }
    }
}

/// `Some(suppressed)` when a line of this kind may be written now.
fn admit(limit: &LogLimit) -> Option<u64> {
    match limit.admit(clock::instant()) {
        Admit::Yes { suppressed } => Some(suppressed),
        Admit::No => None,
    }
}

impl Observer for LogObserver {
    fn connection_opened(&self, peer: SocketAddr, connection_id: u64) {
        if !tracing::enabled!(target: "kms_activation::transport", tracing::Level::DEBUG) {
            return;
        }
        if let Some(suppressed) = admit(&self.opened) {
            tracing::debug!(target: "kms_activation::transport", %peer, connection = connection_id, suppressed, "connection opened");
        }
    }

    fn connection_closed(&self, peer: SocketAddr, connection_id: u64, reason: &CloseReason) {
        match reason {
            CloseReason::PeerClosed | CloseReason::Shutdown | CloseReason::MaxRequests => {
                if !tracing::enabled!(target: "kms_activation::transport", tracing::Level::DEBUG) {
                    return;
                }
                if let Some(suppressed) = admit(&self.closed) {
                    tracing::debug!(target: "kms_activation::transport", %peer, connection = connection_id, %reason, suppressed, "connection closed");
                }
            }
            _ => {
                if let Some(suppressed) = admit(&self.closed_abnormally) {
                    tracing::info!(target: "kms_activation::transport", %peer, connection = connection_id, %reason, suppressed, "connection closed");
                }
            }
        }
    }

    fn connection_refused(&self, peer: SocketAddr) {
        if let Some(suppressed) = admit(&self.refused) {
            tracing::warn!(target: "kms_activation::transport", %peer, suppressed, "connection refused: server full and no connection idle");
        }
    }

    fn accept_failed(&self, error: &io::Error, full: bool) {
        if let Some(suppressed) = admit(&self.accept) {
            if full {
                tracing::warn!(target: "kms_activation::transport", %error, suppressed, "out of file descriptors: closing the oldest idle connection, if any");
            } else {
                tracing::warn!(target: "kms_activation::transport", %error, suppressed, "accept failed");
            }
        }
    }

    fn handler_failed(&self, peer: SocketAddr, connection_id: u64, refused: usize, panicked: bool) {
        if let Some(suppressed) = admit(&self.handler) {
            let what = if panicked {
                "handler panicked"
            } else {
                "handler timed out"
            };
            tracing::warn!(target: "kms_activation::transport", %peer, connection = connection_id, refused, suppressed, "{what}: unanswered requests refused");
        }
    }
}
