//! Choosing KMS hosts the way clients do: SRV order, failover, host caching.
//!
//! Clients find KMS hosts through the DNS SRV records `_vlmcs._tcp.<domain>`
//! that hosts publish. This module holds the pure part of that, with no DNS
//! and no socket (the lookup itself is `client::discovery`, feature `dns`):
//!
//! * [`order_srv_records`] puts SRV records in the order to try them: by
//!   RFC 2782, the lowest priority first and, within one priority, a
//!   weighted random order; or, with priority and weight switched off
//!   ([`SrvSelection::Random`]), a uniformly random order, as clients do
//!   when hosts publish no priority and weight.
//! * [`KmsLocator`] keeps what a client remembers between attempts: a
//!   configured host (which overrides discovery, like `slmgr /skms` or
//!   `ospp.vbs /sethst`), or the host that last succeeded (host caching, on
//!   by default, `ospp.vbs /cachst`), and tries candidates in order until
//!   one succeeds ([`KmsLocator::try_hosts`]); a cached host that fails is
//!   forgotten and discovery runs again.
//! * [`srv_zone_line`] prints the record a host should publish.

use core::fmt;

use crate::RandomSource;
use crate::random::below;

/// The service label clients look up: `_vlmcs._tcp.<domain>`.
pub const KMS_SRV_LABEL: &str = "_vlmcs._tcp";

/// The TCP port of KMS unless configured otherwise.
pub const DEFAULT_KMS_PORT: u16 = 1688;

/// One SRV record of `_vlmcs._tcp.<domain>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SrvRecord {
    /// Lower values are tried first.
    pub priority: u16,
    /// Relative share among records of the same priority.
    pub weight: u16,
    /// TCP port of the host.
    pub port: u16,
    /// Host name (without the trailing dot).
    pub target: String,
}

/// A KMS host to connect to: a name (or address literal) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct KmsHostName {
    /// Host name or IP address literal.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl SrvRecord {
    /// The record `priority weight port target`.
    #[must_use]
    pub fn new(priority: u16, weight: u16, port: u16, target: impl Into<String>) -> Self {
        Self {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }
}

impl KmsHostName {
    /// `host` on `port`.
    #[must_use]
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// Reads `HOST`, `HOST:PORT`, `[V6]:PORT` or a bare IPv6 address; a
    /// missing port is [`DEFAULT_KMS_PORT`], as `vlmcs` and `slmgr /skms`
    /// assume.
    ///
    /// ```
    /// use kms_activation::client::KmsHostName;
    /// assert_eq!(KmsHostName::parse("kms.example.org"), Some(KmsHostName::new("kms.example.org", 1688)));
    /// assert_eq!(KmsHostName::parse("10.0.0.5:1700"), Some(KmsHostName::new("10.0.0.5", 1700)));
    /// assert_eq!(KmsHostName::parse("[::1]:1688"), Some(KmsHostName::new("::1", 1688)));
    /// assert_eq!(KmsHostName::parse("fe80::1"), Some(KmsHostName::new("fe80::1", 1688)));
    /// assert_eq!(KmsHostName::parse("host:port"), None);
    /// ```
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(port) => port.parse().ok()?,
                None if after.is_empty() => DEFAULT_KMS_PORT,
                None => return None,
            };
            return Some(Self::new(host, port));
        }
        match text.rsplit_once(':') {
            // Two or more colons without brackets: a bare IPv6 address.
            Some((host, _)) if host.contains(':') => Some(Self::new(text, DEFAULT_KMS_PORT)),
            Some((host, port)) => Some(Self::new(host, port.parse().ok()?)),
            None => Some(Self::new(text, DEFAULT_KMS_PORT)),
        }
    }
}

impl fmt::Display for KmsHostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<&SrvRecord> for KmsHostName {
    fn from(record: &SrvRecord) -> Self {
        Self::new(record.target.clone(), record.port)
    }
}

/// How SRV records are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SrvSelection {
    /// RFC 2782: lowest priority first, weighted random within a priority.
    #[default]
    PriorityWeight,
    /// Priority and weight ignored: a uniformly random order.
    Random,
}

/// Puts `records` in the order a client tries them (see [`SrvSelection`]).
/// Records whose target is `.` ("no service here", RFC 2782) are dropped.
///
/// Within one priority the RFC's weighted draw is repeated until every
/// record is placed: each remaining record is picked with probability
/// proportional to its weight, and records of weight 0 have a small chance
/// (they are placed first in the running order, so they are only picked
/// when the draw is 0).
///
/// ```
/// use kms_activation::client::{order_srv_records, SrvRecord, SrvSelection};
/// use kms_activation::ScriptedRandom;
///
/// let record = |priority, weight, target: &str| SrvRecord::new(priority, weight, 1688, target);
/// let records = vec![record(10, 0, "backup"), record(0, 60, "kms1"), record(0, 40, "kms2")];
/// let mut rng = ScriptedRandom::new([3u8; 64]);
/// let order = order_srv_records(records, SrvSelection::PriorityWeight, &mut rng);
/// assert_eq!(order.last().unwrap().target, "backup"); // priority 10 comes after 0
/// ```
pub fn order_srv_records<R: RandomSource + ?Sized>(
    records: Vec<SrvRecord>,
    selection: SrvSelection,
    rng: &mut R,
) -> Vec<SrvRecord> {
    let mut remaining: Vec<SrvRecord> = records.into_iter().filter(|r| r.target != ".").collect();
    let mut out = Vec::with_capacity(remaining.len());
    match selection {
        SrvSelection::Random => {
            while !remaining.is_empty() {
                let n = u64::try_from(remaining.len()).unwrap_or(u64::MAX);
                let i = usize::try_from(below(rng, n)).unwrap_or(0);
                out.push(remaining.swap_remove(i.min(remaining.len().saturating_sub(1))));
            }
        }
        SrvSelection::PriorityWeight => {
            // Weight 0 first within a priority, as RFC 2782 arranges them.
            remaining.sort_by_key(|r| (r.priority, r.weight != 0));
            while let Some(priority) = remaining.first().map(|r| r.priority) {
                let end = remaining.partition_point(|r| r.priority == priority);
                let mut group: Vec<SrvRecord> = remaining.drain(..end).collect();
                while !group.is_empty() {
                    let total: u64 = group.iter().map(|r| u64::from(r.weight)).sum();
                    let draw = below(rng, total.saturating_add(1));
                    let mut running = 0u64;
                    let pick = group
                        .iter()
                        .position(|r| {
                            running += u64::from(r.weight);
                            running >= draw
                        })
                        .unwrap_or(0);
                    out.push(group.remove(pick));
                }
            }
        }
    }
    out
}

/// The SRV record a KMS host named `target` listening on `port` should
/// publish in `domain`, as a zone-file line (TTL, class, type, priority,
/// weight, port, target), every name absolute.
///
/// ```
/// use kms_activation::client::srv_zone_line;
/// assert_eq!(
///     srv_zone_line("example.org", "kms1.example.org", 1688, 0, 0, 3600),
///     "_vlmcs._tcp.example.org. 3600 IN SRV 0 0 1688 kms1.example.org."
/// );
/// ```
#[must_use]
pub fn srv_zone_line(
    domain: &str,
    target: &str,
    port: u16,
    priority: u16,
    weight: u16,
    ttl: u32,
) -> String {
    format!(
        "{KMS_SRV_LABEL}.{} {ttl} IN SRV {priority} {weight} {port} {}",
        absolute(domain),
        absolute(target)
    )
}

/// `name` with exactly one trailing dot.
fn absolute(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// The SRV name clients query for `domain`: `_vlmcs._tcp.<domain>.`.
///
/// ```
/// assert_eq!(kms_activation::client::srv_query_name("example.org"), "_vlmcs._tcp.example.org.");
/// ```
#[must_use]
pub fn srv_query_name(domain: &str) -> String {
    format!("{KMS_SRV_LABEL}.{}", absolute(domain))
}

/// Where a [`KmsLocator`] looks for hosts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HostSource {
    /// One configured host; no discovery (`slmgr /skms`).
    Fixed(KmsHostName),
    /// Discovery through the SRV records of a DNS domain.
    Srv {
        /// The domain holding `_vlmcs._tcp` records.
        domain: String,
    },
}

/// The settings of a [`KmsLocator`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocatorConfig {
    source: HostSource,
    caching: bool,
    selection: SrvSelection,
}

impl LocatorConfig {
    /// Discovery in `domain`, host caching on, RFC 2782 order.
    #[must_use]
    pub fn discover(domain: impl Into<String>) -> Self {
        Self {
            source: HostSource::Srv {
                domain: domain.into(),
            },
            caching: true,
            selection: SrvSelection::PriorityWeight,
        }
    }

    /// Always `host`; discovery never runs.
    #[must_use]
    pub const fn fixed(host: KmsHostName) -> Self {
        Self {
            source: HostSource::Fixed(host),
            caching: true,
            selection: SrvSelection::PriorityWeight,
        }
    }

    /// Turns host caching on (the default) or off.
    #[must_use]
    pub const fn with_caching(mut self, caching: bool) -> Self {
        self.caching = caching;
        self
    }

    /// Chooses how SRV records are ordered.
    #[must_use]
    pub const fn with_selection(mut self, selection: SrvSelection) -> Self {
        self.selection = selection;
        self
    }

    /// Where hosts come from.
    #[must_use]
    pub const fn source(&self) -> &HostSource {
        &self.source
    }

    /// Whether the last successful host is remembered.
    #[must_use]
    pub const fn caching(&self) -> bool {
        self.caching
    }

    /// How SRV records are ordered.
    #[must_use]
    pub const fn selection(&self) -> SrvSelection {
        self.selection
    }
}

/// One failed attempt of [`KmsLocator::try_hosts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedAttempt<E> {
    /// The host tried.
    pub host: KmsHostName,
    /// Why it failed.
    pub error: E,
}

/// What a client remembers about KMS hosts between activation attempts.
///
/// ```
/// use kms_activation::client::{KmsHostName, KmsLocator, LocatorConfig, SrvRecord};
/// use kms_activation::ScriptedRandom;
///
/// let mut locator = KmsLocator::new(LocatorConfig::discover("example.org"));
/// assert_eq!(locator.dns_domain(), Some("example.org")); // nothing cached: look up SRV
/// let srv = vec![
///     SrvRecord::new(0, 0, 1688, "kms1.example.org"),
///     SrvRecord::new(1, 0, 1688, "kms2.example.org"),
/// ];
/// let mut rng = ScriptedRandom::new([0u8; 64]);
/// let hosts = locator.candidates(&srv, &mut rng);
/// // kms1 refuses, kms2 activates.
/// let result = locator.try_hosts(hosts, |host| {
///     if host.host == "kms1.example.org" { Err("refused") } else { Ok("activated") }
/// });
/// let (host, answer, failures) = result.unwrap();
/// assert_eq!((host.host.as_str(), answer, failures.len()), ("kms2.example.org", "activated", 1));
/// // Host caching: the next attempt goes straight to kms2.
/// assert_eq!(locator.cached(), Some(&KmsHostName::new("kms2.example.org", 1688)));
/// assert_eq!(locator.dns_domain(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsLocator {
    config: LocatorConfig,
    cached: Option<KmsHostName>,
}

impl KmsLocator {
    /// A locator with nothing cached.
    #[must_use]
    pub const fn new(config: LocatorConfig) -> Self {
        Self {
            config,
            cached: None,
        }
    }

    /// The settings.
    #[must_use]
    pub const fn config(&self) -> &LocatorConfig {
        &self.config
    }

    /// The host that last succeeded, while caching is on.
    #[must_use]
    pub const fn cached(&self) -> Option<&KmsHostName> {
        self.cached.as_ref()
    }

    /// The domain to query for SRV records before the next attempt, or
    /// `None` when no lookup is needed (a fixed host, or a cached one).
    #[must_use]
    pub fn dns_domain(&self) -> Option<&str> {
        match &self.config.source {
            HostSource::Fixed(_) => None,
            HostSource::Srv { .. } if self.cached.is_some() => None,
            HostSource::Srv { domain } => Some(domain),
        }
    }

    /// The hosts to try next, in order: the fixed host; or the cached host
    /// (when `srv` is empty because no lookup was needed); or the SRV
    /// records in the configured order.
    pub fn candidates<R: RandomSource + ?Sized>(
        &self,
        srv: &[SrvRecord],
        rng: &mut R,
    ) -> Vec<KmsHostName> {
        if let HostSource::Fixed(host) = &self.config.source {
            return vec![host.clone()];
        }
        let mut out: Vec<KmsHostName> = self.cached.iter().cloned().collect();
        for record in order_srv_records(srv.to_vec(), self.config.selection, rng) {
            let host = KmsHostName::from(&record);
            if !out.contains(&host) {
                out.push(host);
            }
        }
        out
    }

    /// Records that `host` activated the client: remembered when caching
    /// is on.
    pub fn record_success(&mut self, host: &KmsHostName) {
        if self.config.caching && matches!(self.config.source, HostSource::Srv { .. }) {
            self.cached = Some(host.clone());
        }
    }

    /// Records that `host` failed: a cached host is forgotten, so that the
    /// next attempt runs discovery again.
    pub fn record_failure(&mut self, host: &KmsHostName) {
        if self.cached.as_ref() == Some(host) {
            self.cached = None;
        }
    }

    /// Tries `hosts` in order with `attempt` until one succeeds, recording
    /// each success and failure. Returns the host that succeeded, its
    /// result and the failures before it; or every failure.
    ///
    /// # Errors
    ///
    /// Every [`FailedAttempt`], in order, when no host succeeded (empty when
    /// `hosts` was).
    #[expect(
        clippy::type_complexity,
        reason = "a tuple the caller destructures at once"
    )]
    pub fn try_hosts<T, E>(
        &mut self,
        hosts: Vec<KmsHostName>,
        mut attempt: impl FnMut(&KmsHostName) -> Result<T, E>,
    ) -> Result<(KmsHostName, T, Vec<FailedAttempt<E>>), Vec<FailedAttempt<E>>> {
        let mut failures = Vec::new();
        for host in hosts {
            match attempt(&host) {
                Ok(value) => {
                    self.record_success(&host);
                    return Ok((host, value, failures));
                }
                Err(error) => {
                    self.record_failure(&host);
                    failures.push(FailedAttempt { host, error });
                }
            }
        }
        Err(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ScriptedRandom;
    use std::collections::HashMap;

    /// A deterministic generator for statistics (`SplitMix64`).
    struct SplitMix(u64);

    impl RandomSource for SplitMix {
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for chunk in dest.chunks_mut(8) {
                self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = self.0;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
            }
        }
    }

    fn record(priority: u16, weight: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: 1688,
            target: target.into(),
        }
    }

    #[test]
    fn weights_within_a_priority_over_10_000_draws() {
        let records = vec![
            record(0, 60, "a"),
            record(0, 30, "b"),
            record(0, 10, "c"),
            record(5, 100, "backup"),
        ];
        let mut rng = SplitMix(2782);
        let mut first: HashMap<String, u32> = HashMap::new();
        for _ in 0..10_000 {
            let order = order_srv_records(records.clone(), SrvSelection::PriorityWeight, &mut rng);
            assert_eq!(order.len(), 4);
            assert_eq!(order[3].target, "backup", "priority 5 always last");
            *first.entry(order[0].target.clone()).or_default() += 1;
        }
        for (target, share) in [("a", 0.60), ("b", 0.30), ("c", 0.10)] {
            let got = f64::from(first[target]) / 10_000.0;
            assert!((got - share).abs() < 0.02, "{target}: {got} vs {share}");
        }
    }

    #[test]
    fn zero_weights_are_rare_but_possible_and_random_ignores_weights() {
        let records = vec![record(0, 0, "zero"), record(0, 100, "heavy")];
        let mut rng = SplitMix(7);
        let zero_first = (0..10_000)
            .filter(|_| {
                order_srv_records(records.clone(), SrvSelection::PriorityWeight, &mut rng)[0].target
                    == "zero"
            })
            .count();
        assert!((50..=200).contains(&zero_first), "{zero_first}"); // about 1/101
        let records = vec![record(0, 1000, "a"), record(9, 1, "b")];
        let a_first = (0..10_000)
            .filter(|_| {
                order_srv_records(records.clone(), SrvSelection::Random, &mut rng)[0].target == "a"
            })
            .count();
        assert!((4_800..=5_200).contains(&a_first), "{a_first}");
    }

    #[test]
    fn priorities_are_tried_in_order_and_dot_targets_dropped() {
        let records = vec![
            record(20, 5, "c"),
            record(10, 5, "b"),
            record(0, 5, "a"),
            record(0, 5, "."),
        ];
        let mut rng = ScriptedRandom::new([0u8; 256]);
        let order: Vec<String> = order_srv_records(records, SrvSelection::PriorityWeight, &mut rng)
            .into_iter()
            .map(|r| r.target)
            .collect();
        assert_eq!(order, ["a", "b", "c"]);
    }

    #[test]
    fn failover_order_and_caching_on() {
        let srv = vec![
            record(0, 0, "kms1"),
            record(1, 0, "kms2"),
            record(2, 0, "kms3"),
        ];
        let mut rng = ScriptedRandom::new([0u8; 1024]);
        let mut locator = KmsLocator::new(LocatorConfig::discover("example.org"));
        let mut tried = Vec::new();
        let hosts = locator.candidates(&srv, &mut rng);
        let (host, (), failures) = locator
            .try_hosts(hosts, |h| {
                tried.push(h.host.clone());
                if h.host == "kms3" {
                    Ok(())
                } else {
                    Err(h.host.len())
                }
            })
            .unwrap();
        assert_eq!(tried, ["kms1", "kms2", "kms3"]);
        assert_eq!(host.host, "kms3");
        assert_eq!(failures.len(), 2);
        assert_eq!(locator.cached().map(|h| h.host.as_str()), Some("kms3"));
        // Cached: no lookup, the cached host alone.
        assert_eq!(locator.dns_domain(), None);
        assert_eq!(
            locator.candidates(&[], &mut rng),
            [KmsHostName::new("kms3", 1688)]
        );
        // The cached host fails: forgotten, discovery again.
        let hosts = locator.candidates(&[], &mut rng);
        assert!(locator.try_hosts(hosts, |_| Err::<(), _>("down")).is_err());
        assert_eq!(locator.cached(), None);
        assert_eq!(locator.dns_domain(), Some("example.org"));
        // A cached host comes first, and is not repeated from SRV.
        locator.record_success(&KmsHostName::new("kms2", 1688));
        let hosts = locator.candidates(&srv, &mut rng);
        let names: Vec<&str> = hosts.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(names, ["kms2", "kms1", "kms3"]);
    }

    #[test]
    fn caching_off_and_fixed_hosts() {
        let srv = vec![record(0, 0, "kms1")];
        let mut rng = ScriptedRandom::new([0u8; 64]);
        let mut locator =
            KmsLocator::new(LocatorConfig::discover("example.org").with_caching(false));
        let hosts = locator.candidates(&srv, &mut rng);
        assert!(locator.try_hosts(hosts, |_| Ok::<_, ()>(())).is_ok());
        assert_eq!(locator.cached(), None);
        assert_eq!(locator.dns_domain(), Some("example.org"));

        let fixed = KmsHostName::new("10.0.0.1", 1700);
        let mut locator = KmsLocator::new(LocatorConfig::fixed(fixed.clone()));
        assert_eq!(locator.dns_domain(), None);
        assert_eq!(
            locator.candidates(&srv, &mut rng),
            std::slice::from_ref(&fixed)
        );
        let hosts = locator.candidates(&srv, &mut rng);
        let failures = locator
            .try_hosts(hosts, |_| Err::<(), _>("refused"))
            .unwrap_err();
        assert_eq!(
            failures,
            [FailedAttempt {
                host: fixed,
                error: "refused"
            }]
        );
        assert!(
            locator
                .try_hosts(Vec::new(), |_| Ok::<_, ()>(()))
                .unwrap_err()
                .is_empty()
        );
    }

    #[test]
    fn host_names() {
        let h = KmsHostName::parse("kms").unwrap();
        assert_eq!(h.to_string(), "kms:1688");
        assert_eq!(KmsHostName::new("::1", 1688).to_string(), "[::1]:1688");
        assert_eq!(
            KmsHostName::parse("[::1]"),
            Some(KmsHostName::new("::1", 1688))
        );
        assert_eq!(KmsHostName::parse("[::1]x"), None);
        assert_eq!(KmsHostName::parse("a:99999"), None);
        assert_eq!(KmsHostName::parse(" "), None);
        assert_eq!(srv_query_name("example.org."), "_vlmcs._tcp.example.org.");
    }
}
