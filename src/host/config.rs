//! Configuration shared by every connection of a host.

use std::time::Duration;

use crate::rpc::{self, NegotiationPolicy};

/// The clock skew a Windows KMS host tolerates: four hours either way.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(4 * 3600);

/// Resource limits a host applies to each connection.
///
/// Every buffer a peer can make the host fill is bounded by one of these.
///
/// Like every option struct of this crate (`transport::ServerLimits`,
/// [`MemoryStoreLimits`](crate::host::store::MemoryStoreLimits), the SQLite and PostgreSQL
/// store options), it has public fields and a `Default`: name what you change.
///
/// ```
/// use kms_activation::host::{HostConfig, HostLimits};
///
/// let limits = HostLimits {
///     max_unanswered_requests: 4,
///     ..HostLimits::default()
/// };
/// let mut config = HostConfig::default();
/// config.set_limits(limits);
/// # assert_eq!(config.limits().max_unanswered_requests, 4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// Largest PDU accepted (`frag_length`), checked from the first 10 bytes
    /// of a PDU before its body is buffered.
    pub max_frag_len: usize,
    /// Largest request stub accepted after fragment reassembly.
    pub max_stub_len: usize,
    /// Output kept queued before the connection stops consuming input
    /// (backpressure for clients that send without reading).
    pub max_pending_output: usize,
    /// Presentation contexts remembered per connection.
    pub max_contexts: usize,
    /// KMS requests handed out as [`HostEvent::Request`](super::HostEvent::Request)
    /// and not yet answered. At the limit the connection consumes no more
    /// input until one is answered or refused.
    pub max_unanswered_requests: usize,
}

impl Default for HostLimits {
    fn default() -> Self {
        Self {
            max_frag_len: rpc::DEFAULT_MAX_FRAG_LEN,
            max_stub_len: 4096,
            max_pending_output: 4096,
            max_contexts: 16,
            max_unanswered_requests: 16,
        }
    }
}

/// How a host negotiates and which details it reports.
///
/// ```
/// use kms_activation::host::HostConfig;
///
/// let mut config = HostConfig::default();
/// config.set_port(1688).set_ndr64(false).set_assoc_group_id(Some(0x1234));
/// assert_eq!(config.port(), 1688);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    port: u16,
    negotiation: NegotiationPolicy,
    assoc_group_id: Option<u32>,
    verify_v4_mac: bool,
    max_clock_skew: Option<Duration>,
    limits: HostLimits,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            port: 1688,
            negotiation: NegotiationPolicy::default(),
            assoc_group_id: None,
            verify_v4_mac: true,
            max_clock_skew: Some(DEFAULT_MAX_CLOCK_SKEW),
            limits: HostLimits::default(),
        }
    }
}

impl HostConfig {
    /// The TCP port reported in the `bind_ack`'s secondary address.
    #[must_use]
    pub const fn port(&self) -> u16 {
        self.port
    }

    /// Sets the TCP port reported in the `bind_ack` (default 1688).
    pub const fn set_port(&mut self, port: u16) -> &mut Self {
        self.port = port;
        self
    }

    /// Transfer syntaxes and features the host accepts.
    pub(crate) const fn negotiation(&self) -> &NegotiationPolicy {
        &self.negotiation
    }

    /// Whether the host accepts NDR64 (default true).
    #[must_use]
    pub const fn ndr64(&self) -> bool {
        self.negotiation.ndr64
    }

    /// Whether the host acknowledges bind-time feature negotiation (default true).
    #[must_use]
    pub const fn btfn(&self) -> bool {
        self.negotiation.btfn
    }

    /// Accept NDR64 (on by default, as Windows 8 and later hosts do).
    pub const fn set_ndr64(&mut self, on: bool) -> &mut Self {
        self.negotiation.ndr64 = on;
        self
    }

    /// Acknowledge bind-time feature negotiation (on by default).
    pub const fn set_btfn(&mut self, on: bool) -> &mut Self {
        self.negotiation.btfn = on;
        self
    }

    /// The association group reported to clients; `None` (the default)
    /// draws a random non-zero one per connection.
    #[must_use]
    pub const fn assoc_group_id(&self) -> Option<u32> {
        self.assoc_group_id
    }

    /// Fixes the association group id (tests, captures); `None` draws one.
    pub const fn set_assoc_group_id(&mut self, id: Option<u32>) -> &mut Self {
        self.assoc_group_id = id;
        self
    }

    /// Whether V4 requests with a wrong MAC are refused (default true;
    /// vlmcsd does not check).
    #[must_use]
    pub const fn verify_v4_mac(&self) -> bool {
        self.verify_v4_mac
    }

    /// Refuse (true) or accept (false) V4 requests whose MAC is wrong.
    pub const fn set_verify_v4_mac(&mut self, on: bool) -> &mut Self {
        self.verify_v4_mac = on;
        self
    }

    /// How far the client's clock may be from the host's `now` before the
    /// request is refused with [`HResult::INVALID_TIMESTAMP`](crate::HResult::INVALID_TIMESTAMP)
    /// (0xC004F06C); `None` when the check is off.
    #[must_use]
    pub const fn max_clock_skew(&self) -> Option<Duration> {
        self.max_clock_skew
    }

    /// Sets the tolerated clock skew (default
    /// [`DEFAULT_MAX_CLOCK_SKEW`], ±4 hours, as a Windows host); `None`
    /// switches the check off, as emulators such as vlmcsd do by default.
    pub const fn set_max_clock_skew(&mut self, skew: Option<Duration>) -> &mut Self {
        self.max_clock_skew = skew;
        self
    }

    /// Per-connection resource limits.
    #[must_use]
    pub const fn limits(&self) -> &HostLimits {
        &self.limits
    }

    /// Replaces the per-connection resource limits.
    pub const fn set_limits(&mut self, limits: HostLimits) -> &mut Self {
        self.limits = limits;
        self
    }
}
