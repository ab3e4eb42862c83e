//! What both transports do around an engine, minus the I/O: feeding input
//! (keeping what the engine could not take yet), the idle and PDU
//! deadlines, when to close, and the client's wait for an outcome.

use std::time::{Duration, Instant};

use super::random::BufferedOsRandom;
use super::{CloseReason, Error, Observer, Outcome, ServerLimits, clock, deadline_after, now};
use crate::OsRandom;
use crate::client::{ClientConnection, ClientEvent};
use crate::host::{ActivationRecord, HostConnection, HostError};

/// Bytes read from a socket at a time. Real KMS PDUs are under 1 KiB.
pub(crate) const READ_CHUNK: usize = 2048;

/// Input kept for the engine beyond which a connection reads no more (the
/// engine waits for a handler that leaves requests unanswered); the
/// connection then ends at its deadline.
const MAX_KEPT_INPUT: usize = 8 * READ_CHUNK;

/// The server side of one connection around its [`HostConnection`].
pub(crate) struct ServerSession {
    conn: HostConnection,
    limits: ServerLimits,
    /// Received bytes the engine has not consumed yet (it stops while its
    /// output or answers are pending).
    pending: Vec<u8>,
    last_read: Instant,
    /// When the first byte of the PDU in progress arrived.
    pdu_started: Option<Instant>,
    /// When the read that completed the latest requests arrived.
    read_at: Instant,
    /// When the latest exchange's replies were written.
    settled_at: Instant,
}

impl ServerSession {
    pub(crate) fn new(conn: HostConnection, limits: ServerLimits, now: Instant) -> Self {
        Self {
            conn,
            limits,
            pending: Vec::new(),
            last_read: now,
            pdu_started: None,
            read_at: now,
            settled_at: now,
        }
    }

    pub(crate) fn conn(&mut self) -> &mut HostConnection {
        &mut self.conn
    }

    /// Feeds bytes just read. What the engine does not take now is kept
    /// and offered again by [`resume`](Self::resume).
    pub(crate) fn ingest(
        &mut self,
        bytes: &[u8],
        rng: &mut BufferedOsRandom,
    ) -> Result<(), HostError> {
        let (instant, time) = now();
        self.last_read = instant;
        self.read_at = instant;
        if self.pdu_started.is_none() {
            self.pdu_started = Some(instant);
        }
        if self.pending.is_empty() {
            let used = self.conn.handle_input(time, bytes, rng)?;
            self.pending
                .extend_from_slice(bytes.get(used..).unwrap_or_default());
        } else {
            self.pending.extend_from_slice(bytes);
            self.resume(rng)?;
        }
        Ok(())
    }

    /// Offers the kept input again, once the handler answered and the
    /// output was written. Returns whether input is still kept.
    pub(crate) fn resume(&mut self, rng: &mut BufferedOsRandom) -> Result<bool, HostError> {
        if self.pending.is_empty() {
            return Ok(false);
        }
        let time = clock::wall();
        let used = self.conn.handle_input(time, &self.pending, rng)?;
        self.pending.drain(..used.min(self.pending.len()));
        if self.pending.is_empty() {
            // Give the memory back: most connections never need it again.
            self.pending = Vec::new();
        }
        Ok(!self.pending.is_empty() && used > 0)
    }

    /// After the replies of an exchange (`written` bytes) were written:
    /// reports the records with their latency and, when the exchange
    /// answered something, ends the PDU deadline.
    pub(crate) fn finish_exchange(
        &mut self,
        records: &[ActivationRecord],
        written: usize,
        observer: &dyn Observer,
    ) {
        self.settled_at = clock::instant();
        if !records.is_empty() {
            let latency = self.settled_at.saturating_duration_since(self.read_at);
            for record in records {
                observer.request_processed(record, latency);
            }
        }
        if (written > 0 || !records.is_empty()) && self.pending.is_empty() {
            self.pdu_started = None;
        }
    }

    /// False while so much input waits for the engine that the connection
    /// should stop reading.
    pub(crate) fn wants_input(&self) -> bool {
        self.pending.len() < MAX_KEPT_INPUT
    }

    /// True while nothing is in progress: no partial PDU known, no input
    /// kept, no output or answer pending.
    pub(crate) fn is_idle(&self) -> bool {
        self.pdu_started.is_none()
            && self.pending.is_empty()
            && !self.conn.has_pending_output()
            && self.conn.unanswered_requests() == 0
    }

    /// True when idle with no activation half done: not bound yet, or
    /// bound and answered at least once. Such a connection is closed at once
    /// by a shutdown; one that was bound and has not sent its request yet
    /// gets the grace period.
    pub(crate) fn is_drainable(&self) -> bool {
        self.is_idle() && (!self.conn.is_bound() || self.conn.requests_served() > 0)
    }

    /// Since when the connection has had nothing to do (if it is idle).
    pub(crate) fn quiet_since(&self) -> Instant {
        self.settled_at.max(self.last_read)
    }

    /// Why the connection should close now, if it should.
    pub(crate) fn close_reason(&self, draining: bool) -> Option<CloseReason> {
        if self.conn.is_closed() {
            return Some(CloseReason::PeerClosed);
        }
        if self.conn.requests_served() >= self.limits.max_requests_per_connection {
            return Some(CloseReason::MaxRequests);
        }
        if draining && self.is_drainable() {
            return Some(CloseReason::Shutdown);
        }
        None
    }

    /// The next deadline and what passing it means.
    pub(crate) fn deadline(&self) -> (Instant, CloseReason) {
        let idle = (
            deadline_after(self.quiet_since(), self.limits.idle_timeout),
            CloseReason::IdleTimeout,
        );
        match self.pdu_started {
            Some(start) if deadline_after(start, self.limits.pdu_timeout) < idle.0 => (
                deadline_after(start, self.limits.pdu_timeout),
                CloseReason::PduTimeout,
            ),
            _ => idle,
        }
    }

    pub(crate) fn handler_timeout(&self) -> Duration {
        self.limits.handler_timeout
    }
}

/// The client side of one connection around its [`ClientConnection`].
pub(crate) struct ClientSession {
    pub(crate) conn: ClientConnection,
    /// Received bytes the engine has not consumed yet.
    pending: Vec<u8>,
    rng: OsRandom,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession").finish_non_exhaustive()
    }
}

impl ClientSession {
    pub(crate) fn new(conn: ClientConnection) -> Self {
        Self {
            conn,
            pending: Vec::new(),
            rng: OsRandom,
        }
    }

    /// Queues a request.
    pub(crate) fn send(&mut self, request: crate::RequestBody) -> Result<(), Error> {
        self.conn.send_request(request, &mut self.rng)?;
        Ok(())
    }

    /// Feeds bytes read and returns the outcome of the request in flight
    /// once the engine has it.
    pub(crate) fn ingest(&mut self, bytes: &[u8]) -> Result<Option<Outcome>, Error> {
        self.pending.extend_from_slice(bytes);
        loop {
            if let Some(outcome) = self.poll_outcome() {
                return Ok(Some(outcome));
            }
            let used = self.conn.handle_input(&self.pending, &mut self.rng)?;
            self.pending.drain(..used.min(self.pending.len()));
            if used == 0 {
                return Ok(self.poll_outcome());
            }
        }
    }

    fn poll_outcome(&mut self) -> Option<Outcome> {
        while let Some(event) = self.conn.poll_event() {
            match event {
                ClientEvent::Answered(response) => return Some(Outcome::Answered(response)),
                ClientEvent::Refused(hresult) => return Some(Outcome::Refused(hresult)),
                _ => {}
            }
        }
        None
    }

    /// The output to write.
    pub(crate) fn transmit(&self) -> &[u8] {
        self.conn.transmit()
    }

    pub(crate) fn advance_transmit(&mut self, n: usize) {
        self.conn.advance_transmit(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostConfig;
    use crate::transport::NoObserver;

    /// The first 16 bytes of a bind PDU of 116 bytes.
    const BIND_HEAD: [u8; 16] = [5, 0, 11, 3, 0x10, 0, 0, 0, 116, 0, 0, 0, 1, 0, 0, 0];

    #[test]
    fn a_pdu_in_progress_has_its_own_deadline_and_progress_ends_it() {
        let limits = ServerLimits {
            idle_timeout: Duration::from_secs(30),
            pdu_timeout: Duration::from_secs(2),
            ..ServerLimits::default()
        };
        let start = clock::instant();
        let conn = HostConnection::new(&HostConfig::default());
        let mut session = ServerSession::new(conn, limits, start);
        let mut rng = BufferedOsRandom;
        assert!(session.is_idle() && session.is_drainable());
        assert_eq!(session.deadline().1, CloseReason::IdleTimeout);

        session.ingest(&BIND_HEAD, &mut rng).unwrap();
        let (deadline, why) = session.deadline();
        assert_eq!(why, CloseReason::PduTimeout);
        assert!(deadline <= clock::instant() + Duration::from_secs(2));
        assert!(!session.is_idle());
        // More bytes of the same PDU do not move its deadline.
        session.ingest(&[0; 8], &mut rng).unwrap();
        assert_eq!(session.deadline().0, deadline);

        // An exchange that answered something ends the PDU deadline.
        session.finish_exchange(&[], 84, &NoObserver);
        assert_eq!(session.deadline().1, CloseReason::IdleTimeout);
        assert!(session.is_idle());
        assert_eq!(session.close_reason(false), None);
    }

    #[test]
    fn durations_too_long_for_the_clock_mean_never() {
        let limits = ServerLimits {
            idle_timeout: Duration::MAX,
            pdu_timeout: Duration::MAX,
            handler_timeout: Duration::MAX,
            ..ServerLimits::default()
        };
        let start = clock::instant();
        let conn = HostConnection::new(&HostConfig::default());
        let mut session = ServerSession::new(conn, limits, start);
        let (deadline, why) = session.deadline();
        assert_eq!(why, CloseReason::IdleTimeout);
        assert!(deadline > start + Duration::from_secs(365 * 24 * 3600));
        session.ingest(&BIND_HEAD, &mut BufferedOsRandom).unwrap();
        assert!(session.deadline().0 > start + Duration::from_secs(365 * 24 * 3600));
    }

    #[test]
    fn garbage_is_an_error_that_closes_the_connection() {
        let conn = HostConnection::new(&HostConfig::default());
        let mut session = ServerSession::new(conn, ServerLimits::default(), clock::instant());
        assert!(session.wants_input());
        // Garbage closes the engine: an error, not a panic, and nothing kept.
        let result = session.ingest(b"GET / HTTP/1.1\r\n\r\n", &mut BufferedOsRandom);
        assert!(result.is_err());
        assert_eq!(session.close_reason(false), Some(CloseReason::PeerClosed));
    }
}
