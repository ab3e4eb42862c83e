//! DNS SRV discovery of KMS hosts with `hickory-resolver` (feature `dns`).
//!
//! The I/O half of [`KmsLocator`]: [`SrvResolver::lookup_srv`] queries
//! `_vlmcs._tcp.<domain>`, [`SrvResolver::lookup_host`] the addresses of a
//! host, and [`activate_through_async`] runs a whole attempt the way a
//! client does: the fixed or cached host first, otherwise the SRV records in
//! RFC 2782 order, failing over to the next host until one succeeds. Every
//! lookup is bounded by the resolver's timeout and attempts.
//!
//! [`SrvResolver`] is asynchronous and runs on the caller's Tokio runtime
//! (it may be created, used and dropped inside any task).
//! [`BlockingSrvResolver`] wraps it with a private runtime for code without
//! one (tools, the blocking transport), with [`activate_through`]; it must
//! not be used inside an async runtime, where its lookups return an error.
//!
//! ```no_run
//! use kms_activation::client::discovery::{DnsSettings, SrvResolver};
//!
//! # async fn run() -> Result<(), kms_activation::client::discovery::DiscoveryError> {
//! let resolver = SrvResolver::new(&DnsSettings::system())?;
//! for record in resolver.lookup_srv("example.org").await? {
//!     println!("{} {} {}:{}", record.priority, record.weight, record.target, record.port);
//! }
//! # Ok(())
//! # }
//! # fn main() { drop(run()); }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use super::srv::{FailedAttempt, KmsHostName, KmsLocator, SrvRecord, srv_query_name};
use crate::{HResult, RandomSource};

/// Default time one DNS query may take.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to query DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    name_servers: Option<Vec<SocketAddr>>,
    timeout: Duration,
    attempts: usize,
}

impl DnsSettings {
    /// The system's resolver configuration (`/etc/resolv.conf`, or the
    /// registry on Windows), with [`DEFAULT_DNS_TIMEOUT`] and two attempts.
    #[must_use]
    pub const fn system() -> Self {
        Self {
            name_servers: None,
            timeout: DEFAULT_DNS_TIMEOUT,
            attempts: 2,
        }
    }

    /// These name servers (UDP, then TCP for truncated answers) instead of
    /// the system's.
    #[must_use]
    pub fn with_name_servers(mut self, servers: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.name_servers = Some(servers.into_iter().collect());
        self
    }

    /// Time one query may take, and how many times it is sent.
    #[must_use]
    pub const fn with_timeout(mut self, timeout: Duration, attempts: usize) -> Self {
        self.timeout = timeout;
        self.attempts = attempts;
        self
    }
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self::system()
    }
}

/// Why a lookup gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The name does not exist (NXDOMAIN).
    #[error("{name}: the DNS name does not exist")]
    NameDoesNotExist {
        /// The name queried.
        name: String,
    },
    /// The name exists but holds no record of the type asked for.
    #[error("{name}: no records found")]
    NoRecords {
        /// The name queried.
        name: String,
    },
    /// No DNS server answered in time, or the resolver failed otherwise.
    #[error("{name}: DNS lookup failed: {reason}")]
    Lookup {
        /// The name queried.
        name: String,
        /// The resolver's explanation.
        reason: String,
    },
    /// The resolver could not be set up (no usable system configuration).
    #[error("DNS resolver unavailable: {0}")]
    Resolver(String),
}

impl DiscoveryError {
    /// The code a Windows client shows for this failure.
    ///
    /// ```
    /// use kms_activation::client::discovery::DiscoveryError;
    /// use kms_activation::HResult;
    /// let e = DiscoveryError::NameDoesNotExist { name: "_vlmcs._tcp.example.org.".into() };
    /// assert_eq!(e.hresult(), HResult::DNS_NAME_DOES_NOT_EXIST);
    /// ```
    #[must_use]
    pub const fn hresult(&self) -> HResult {
        match self {
            Self::NameDoesNotExist { .. } => HResult::DNS_NAME_DOES_NOT_EXIST,
            Self::NoRecords { .. } => HResult::DNS_NO_RECORDS,
            Self::Lookup { .. } | Self::Resolver(_) => HResult::new(0x8007_232A),
        }
    }

    fn from_net(name: &str, error: &NetError) -> Self {
        let name = name.to_owned();
        if error.is_nx_domain() {
            Self::NameDoesNotExist { name }
        } else if error.is_no_records_found() {
            Self::NoRecords { name }
        } else {
            Self::Lookup {
                name,
                reason: error.to_string(),
            }
        }
    }
}

/// An asynchronous DNS resolver for KMS discovery, on the caller's Tokio
/// runtime (with time and I/O enabled): its lookups are futures to await
/// in a task, and it may be dropped anywhere.
pub struct SrvResolver {
    resolver: TokioResolver,
}

impl core::fmt::Debug for SrvResolver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SrvResolver").finish_non_exhaustive()
    }
}

impl SrvResolver {
    /// A resolver with `settings`. Needs no runtime to be created; its
    /// lookups run on the runtime that awaits them.
    ///
    /// # Errors
    ///
    /// [`DiscoveryError::Resolver`] when the system configuration cannot be
    /// read.
    pub fn new(settings: &DnsSettings) -> Result<Self, DiscoveryError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match &settings.name_servers {
            None => TokioResolver::builder_tokio()
                .map_err(|e| DiscoveryError::Resolver(e.to_string()))?,
            Some(servers) => {
                let configs = servers
                    .iter()
                    .map(|server| {
                        let mut udp = ConnectionConfig::udp();
                        udp.port = server.port();
                        let mut tcp = ConnectionConfig::tcp();
                        tcp.port = server.port();
                        NameServerConfig::new(server.ip(), true, vec![udp, tcp])
                    })
                    .collect();
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(configs),
                    provider,
                )
            }
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.timeout = settings.timeout;
        options.attempts = settings.attempts;
        options.cache_size = 0;
        let resolver = builder
            .build()
            .map_err(|e| DiscoveryError::Resolver(e.to_string()))?;
        Ok(Self { resolver })
    }

    /// The hickory resolver underneath, for the crate's other lookups
    /// (the SOA query of `host::dns_publish`).
    pub(crate) const fn hickory(&self) -> &TokioResolver {
        &self.resolver
    }

    /// The `_vlmcs._tcp` SRV records of `domain`, as published (unordered;
    /// see [`order_srv_records`](super::order_srv_records)).
    ///
    /// # Errors
    ///
    /// [`DiscoveryError`] when the name does not exist, has no SRV record,
    /// or no server answered in time.
    pub async fn lookup_srv(&self, domain: &str) -> Result<Vec<SrvRecord>, DiscoveryError> {
        let name = srv_query_name(domain);
        let lookup = self
            .resolver
            .srv_lookup(name.as_str())
            .await
            .map_err(|e| DiscoveryError::from_net(&name, &e))?;
        let records: Vec<SrvRecord> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => Some(SrvRecord {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target: srv.target.to_utf8().trim_end_matches('.').to_owned(),
                }),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            return Err(DiscoveryError::NoRecords { name });
        }
        Ok(records)
    }

    /// The addresses of `host` (an IP literal is returned as is), each with
    /// `host`'s port.
    ///
    /// # Errors
    ///
    /// [`DiscoveryError`] when the name does not resolve.
    pub async fn lookup_host(&self, host: &KmsHostName) -> Result<Vec<SocketAddr>, DiscoveryError> {
        if let Ok(ip) = host.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, host.port)]);
        }
        let name = format!("{}.", host.host.trim_end_matches('.'));
        let ips = self
            .resolver
            .lookup_ip(name.as_str())
            .await
            .map_err(|e| DiscoveryError::from_net(&name, &e))?;
        Ok(ips
            .iter()
            .map(|ip| SocketAddr::new(ip, host.port))
            .collect())
    }
}

/// A blocking wrapper of [`SrvResolver`] with a private single-threaded
/// runtime, for code that has no runtime of its own (tools, the blocking
/// transport).
///
/// **Not for use inside an async runtime**: there its lookups return
/// [`DiscoveryError::Resolver`] instead of blocking a worker (use
/// [`SrvResolver`] and `.await`). Dropping it is safe anywhere.
///
/// ```no_run
/// use kms_activation::client::discovery::{BlockingSrvResolver, DnsSettings};
///
/// let resolver = BlockingSrvResolver::new(&DnsSettings::system())?;
/// for record in resolver.lookup_srv("example.org")? {
///     println!("{} {} {}:{}", record.priority, record.weight, record.target, record.port);
/// }
/// # Ok::<(), kms_activation::client::discovery::DiscoveryError>(())
/// ```
pub struct BlockingSrvResolver {
    runtime: Option<tokio::runtime::Runtime>,
    resolver: SrvResolver,
}

impl core::fmt::Debug for BlockingSrvResolver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BlockingSrvResolver")
            .finish_non_exhaustive()
    }
}

impl BlockingSrvResolver {
    /// A resolver with `settings` and a runtime of its own.
    ///
    /// # Errors
    ///
    /// [`DiscoveryError::Resolver`] when the system configuration cannot be
    /// read or the runtime cannot start.
    pub fn new(settings: &DnsSettings) -> Result<Self, DiscoveryError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DiscoveryError::Resolver(e.to_string()))?;
        let resolver = SrvResolver::new(settings)?;
        Ok(Self {
            runtime: Some(runtime),
            resolver,
        })
    }

    /// The async resolver inside.
    #[must_use]
    pub const fn resolver(&self) -> &SrvResolver {
        &self.resolver
    }

    fn block_on<T>(
        &self,
        lookup: impl std::future::Future<Output = Result<T, DiscoveryError>>,
    ) -> Result<T, DiscoveryError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(DiscoveryError::Resolver(
                "BlockingSrvResolver cannot block inside an async runtime; use SrvResolver".into(),
            ));
        }
        match &self.runtime {
            Some(runtime) => runtime.block_on(lookup),
            None => Err(DiscoveryError::Resolver("the resolver is shut down".into())),
        }
    }

    /// [`SrvResolver::lookup_srv`], blocking.
    ///
    /// # Errors
    ///
    /// As [`SrvResolver::lookup_srv`]; [`DiscoveryError::Resolver`] inside
    /// an async runtime.
    pub fn lookup_srv(&self, domain: &str) -> Result<Vec<SrvRecord>, DiscoveryError> {
        self.block_on(self.resolver.lookup_srv(domain))
    }

    /// [`SrvResolver::lookup_host`], blocking.
    ///
    /// # Errors
    ///
    /// As [`SrvResolver::lookup_host`]; [`DiscoveryError::Resolver`] inside
    /// an async runtime.
    pub fn lookup_host(&self, host: &KmsHostName) -> Result<Vec<SocketAddr>, DiscoveryError> {
        self.block_on(self.resolver.lookup_host(host))
    }
}

impl Drop for BlockingSrvResolver {
    fn drop(&mut self) {
        // A runtime dropped the ordinary way blocks, which panics inside
        // another runtime; this shutdown never blocks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// How a discovery-driven attempt failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttemptFailure<E> {
    /// Discovery found no host to try.
    Discovery(DiscoveryError),
    /// Every host found failed, in the order tried.
    AllHostsFailed(Vec<FailedAttempt<E>>),
}

/// Runs one activation attempt the way a client does: looks up the SRV
/// records when the locator needs it, orders them, resolves each host and
/// calls `attempt` with its name and addresses, failing over to the next
/// host until one succeeds. A cached host that fails is forgotten and the
/// SRV records are looked up for the rest of the attempt.
///
/// `attempt` decides what counts as failure: a connection refused, a
/// timeout, a refusal HRESULT. A host whose name does not resolve fails
/// with `unresolved`'s value.
///
/// # Errors
///
/// [`AttemptFailure`] when no host could be found or none succeeded.
///
/// This is the blocking form (see [`BlockingSrvResolver`]); in async code
/// use [`activate_through_async`].
#[expect(
    clippy::type_complexity,
    reason = "a tuple the caller destructures at once"
)]
pub fn activate_through<T, E, R: RandomSource + ?Sized>(
    locator: &mut KmsLocator,
    resolver: &BlockingSrvResolver,
    rng: &mut R,
    mut unresolved: impl FnMut(DiscoveryError) -> E,
    mut attempt: impl FnMut(&KmsHostName, &[SocketAddr]) -> Result<T, E>,
) -> Result<(KmsHostName, T, Vec<FailedAttempt<E>>), AttemptFailure<E>> {
    let mut earlier: Vec<FailedAttempt<E>> = Vec::new();
    let mut try_one = |host: &KmsHostName| match resolver.lookup_host(host) {
        Ok(addresses) => attempt(host, &addresses),
        Err(e) => Err(unresolved(e)),
    };
    // A fixed or cached host first, without DNS.
    if locator.dns_domain().is_none() {
        let hosts = locator.candidates(&[], rng);
        match locator.try_hosts(hosts, &mut try_one) {
            Ok(done) => return Ok(done),
            Err(failures) => earlier = failures,
        }
    }
    let Some(domain) = locator.dns_domain().map(str::to_owned) else {
        return Err(AttemptFailure::AllHostsFailed(earlier));
    };
    let srv = resolver
        .lookup_srv(&domain)
        .map_err(AttemptFailure::Discovery)?;
    let tried: Vec<KmsHostName> = earlier.iter().map(|f| f.host.clone()).collect();
    let hosts: Vec<KmsHostName> = locator
        .candidates(&srv, rng)
        .into_iter()
        .filter(|h| !tried.contains(h))
        .collect();
    match locator.try_hosts(hosts, &mut try_one) {
        Ok((host, value, failures)) => {
            earlier.extend(failures);
            Ok((host, value, earlier))
        }
        Err(failures) => {
            earlier.extend(failures);
            Err(AttemptFailure::AllHostsFailed(earlier))
        }
    }
}

/// [`activate_through`] for async code, on the caller's runtime: the same
/// order and failover, with an asynchronous `attempt`.
///
/// # Errors
///
/// [`AttemptFailure`] when no host could be found or none succeeded.
pub async fn activate_through_async<T, E, R: RandomSource + ?Sized>(
    locator: &mut KmsLocator,
    resolver: &SrvResolver,
    rng: &mut R,
    mut unresolved: impl FnMut(DiscoveryError) -> E,
    mut attempt: impl AsyncFnMut(&KmsHostName, &[SocketAddr]) -> Result<T, E>,
) -> Result<(KmsHostName, T, Vec<FailedAttempt<E>>), AttemptFailure<E>> {
    let mut failures: Vec<FailedAttempt<E>> = Vec::new();
    // A fixed or cached host first, without DNS.
    let first = if locator.dns_domain().is_none() {
        locator.candidates(&[], rng)
    } else {
        Vec::new()
    };
    let mut tries = AsyncTries {
        locator: &mut *locator,
        resolver,
        unresolved: &mut unresolved,
        attempt: &mut attempt,
        failures: &mut failures,
    };
    if let Some((host, value)) = tries.first_success(first).await {
        return Ok((host, value, failures));
    }
    let Some(domain) = locator.dns_domain().map(str::to_owned) else {
        return Err(AttemptFailure::AllHostsFailed(failures));
    };
    let srv = resolver
        .lookup_srv(&domain)
        .await
        .map_err(AttemptFailure::Discovery)?;
    let tried: Vec<KmsHostName> = failures.iter().map(|f| f.host.clone()).collect();
    let hosts: Vec<KmsHostName> = locator
        .candidates(&srv, rng)
        .into_iter()
        .filter(|h| !tried.contains(h))
        .collect();
    let mut tries = AsyncTries {
        locator,
        resolver,
        unresolved: &mut unresolved,
        attempt: &mut attempt,
        failures: &mut failures,
    };
    if let Some((host, value)) = tries.first_success(hosts).await {
        return Ok((host, value, failures));
    }
    Err(AttemptFailure::AllHostsFailed(failures))
}

/// What [`activate_through_async`] needs to try a list of hosts in order.
struct AsyncTries<'a, U, A, E> {
    locator: &'a mut KmsLocator,
    resolver: &'a SrvResolver,
    unresolved: &'a mut U,
    attempt: &'a mut A,
    failures: &'a mut Vec<FailedAttempt<E>>,
}

impl<U, A, E> AsyncTries<'_, U, A, E> {
    /// Tries `hosts` in order and returns the first success; every failure
    /// is recorded with the locator and kept in `failures`.
    async fn first_success<T>(&mut self, hosts: Vec<KmsHostName>) -> Option<(KmsHostName, T)>
    where
        U: FnMut(DiscoveryError) -> E,
        A: AsyncFnMut(&KmsHostName, &[SocketAddr]) -> Result<T, E>,
    {
        for host in hosts {
            let result = match self.resolver.lookup_host(&host).await {
                Ok(addresses) => (self.attempt)(&host, &addresses).await,
                Err(e) => Err((self.unresolved)(e)),
            };
            match result {
                Ok(value) => {
                    self.locator.record_success(&host);
                    return Some((host, value));
                }
                Err(error) => {
                    self.locator.record_failure(&host);
                    self.failures.push(FailedAttempt { host, error });
                }
            }
        }
        None
    }
}
