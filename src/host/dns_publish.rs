//! A host publishing its own `_vlmcs._tcp` SRV record in DNS (feature `dns`).
//!
//! A Microsoft KMS host registers `_vlmcs._tcp.<zone>` itself by DNS
//! dynamic update, refreshes the registration every 24 hours and logs a
//! warning (event 12293) when that fails; clients find it through that
//! record ([`client::discovery`](crate::client::discovery)).
//! [`SrvPublisher`] does the same for this crate's hosts: it sends RFC 2136
//! updates, signed with a TSIG key (RFC 8945) when one is given, to the
//! zone's primary server.
//!
//! * [`SrvPublisher::publish`] adds `_vlmcs._tcp.ZONE SRV priority weight
//!   port target` (adding a record that is already there changes nothing,
//!   so publishing again is also the refresh);
//! * [`SrvPublisher::withdraw`] deletes exactly that record, matched by its
//!   data: other hosts' records under the same name are left alone;
//! * [`SrvPublisher::run`] is the driver: it publishes at once, again every
//!   [`PublisherConfig::refresh`] interval, retries a failure with
//!   exponential backoff, and returns when the stop future completes (then
//!   call `withdraw`);
//! * [`SrvPublisher::status`] tells how it went (published or not, failures
//!   counted, the last error), for metrics and readiness.
//!
//! A failure is logged at WARN (with the `tracing` feature; at most a few
//! lines a minute) under the target `kms_activation::dns_publish`.
//!
//! ```no_run
//! use std::time::Duration;
//! use kms_activation::host::dns_publish::{PublisherConfig, SrvPublisher, TsigKey};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let key = TsigKey::from_file("/etc/kms/update.key")?;
//! let config = PublisherConfig::new("example.org", 1688)?
//!     .with_server("192.0.2.53:53".parse()?)
//!     .with_tsig_key(key)
//!     .with_target("kms1.example.org")?;
//! let publisher = SrvPublisher::new(config)?;
//! let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
//! let driver = async { publisher.run(async { let _ = stop_rx.await; }).await };
//! # drop(stop_tx);
//! driver.await;
//! // At shutdown: remove this host's record, within a bound.
//! let _ = tokio::time::timeout(Duration::from_secs(5), publisher.withdraw()).await;
//! # Ok(())
//! # }
//! # fn main() { drop(run()); }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_resolver::proto::op::{DnsResponse, ResponseCode};
use hickory_resolver::proto::rr::rdata::SRV;
use hickory_resolver::proto::rr::rdata::tsig::TsigAlgorithm as WireAlgorithm;
use hickory_resolver::proto::rr::{Name, RData, Record, TSigner};

use crate::client::discovery::{DnsSettings, SrvResolver};
use crate::log_limit::LogLimit;

/// How often the record is published again (Microsoft's hosts: 24 hours).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(24 * 60 * 60);

/// TTL of the published record, in seconds (Microsoft's hosts: one hour).
pub const DEFAULT_TTL: u32 = 3600;

/// Priority and weight of the published record (Microsoft's defaults).
pub const DEFAULT_PRIORITY: u16 = 0;
/// See [`DEFAULT_PRIORITY`].
pub const DEFAULT_WEIGHT: u16 = 0;

/// Time one update (or the look-up of the zone's primary) may take.
pub const DEFAULT_UPDATE_TIMEOUT: Duration = Duration::from_secs(10);

/// First wait before a failed publication is tried again; it doubles at
/// each failure, up to [`MAX_RETRY`] (and never beyond the refresh
/// interval).
pub const DEFAULT_RETRY: Duration = Duration::from_secs(10);

/// Longest wait between two attempts after failures.
pub const MAX_RETRY: Duration = Duration::from_secs(15 * 60);

/// Fudge (allowed clock difference, in seconds) of signed updates; BIND's
/// and RFC 8945's recommended value.
const TSIG_FUDGE: u16 = 300;

/// A key file larger than this is refused unread.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Why publishing or withdrawing failed, or a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// A zone, target or key name is not a valid DNS name, or a value is
    /// out of range.
    #[error("invalid DNS publishing configuration: {0}")]
    Config(String),
    /// The TSIG key file cannot be read or parsed.
    #[error("TSIG key: {0}")]
    Key(String),
    /// The zone's primary server (its SOA MNAME) could not be found.
    #[error("cannot find the primary server of {zone}: {reason}")]
    NoServer {
        /// The zone.
        zone: String,
        /// The resolver's explanation.
        reason: String,
    },
    /// The server did not answer, or the answer could not be read or
    /// authenticated.
    #[error("DNS update to {server} failed: {reason}")]
    Network {
        /// The server the update went to.
        server: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The answer to a signed update is not signed with the key: a server
    /// that does not hold the key, or holds another secret under its name,
    /// answers so (BIND: NOTAUTH with TSIG error BADKEY or BADSIG,
    /// unsigned).
    #[error(
        "DNS update to {server} not authenticated with TSIG key {key}: {reason} (wrong key name or secret?)"
    )]
    Unauthenticated {
        /// The server the update went to.
        server: SocketAddr,
        /// The key's name.
        key: String,
        /// The DNS library's explanation.
        reason: String,
    },
    /// The server answered with an error code (REFUSED, NOTAUTH, NOTZONE,
    /// ...).
    #[error("DNS update to {server} refused: {rcode}")]
    Refused {
        /// The server the update went to.
        server: SocketAddr,
        /// The response code, as DNS names it (`REFUSED`, `NOTAUTH`, ...).
        rcode: String,
    },
}

/// The HMAC algorithm of a TSIG key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TsigAlgorithm {
    /// `hmac-sha256`.
    HmacSha256,
    /// `hmac-sha512`.
    HmacSha512,
}

impl TsigAlgorithm {
    /// The algorithm named as in a BIND key file (`hmac-sha256`,
    /// `hmac-sha512`; case does not matter).
    #[must_use]
    pub fn from_bind_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "hmac-sha256" => Some(Self::HmacSha256),
            "hmac-sha512" => Some(Self::HmacSha512),
            _ => None,
        }
    }

    const fn wire(self) -> WireAlgorithm {
        match self {
            Self::HmacSha256 => WireAlgorithm::HmacSha256,
            Self::HmacSha512 => WireAlgorithm::HmacSha512,
        }
    }
}

/// A TSIG key: its name (as the server knows it), algorithm and secret.
/// Its `Debug` output never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    name: Name,
    algorithm: TsigAlgorithm,
    secret: Vec<u8>,
}

impl core::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name.to_ascii())
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl TsigKey {
    /// A key from its parts.
    ///
    /// # Errors
    ///
    /// [`PublishError::Key`] when the name is not a DNS name or the secret
    /// is empty.
    pub fn new(
        name: &str,
        algorithm: TsigAlgorithm,
        secret: Vec<u8>,
    ) -> Result<Self, PublishError> {
        let name = fqdn(name).map_err(|e| PublishError::Key(format!("key name {name:?}: {e}")))?;
        if secret.is_empty() {
            return Err(PublishError::Key("the secret is empty".into()));
        }
        Ok(Self {
            name,
            algorithm,
            secret,
        })
    }

    /// The key's name, as a fully qualified DNS name.
    #[must_use]
    pub fn name(&self) -> String {
        self.name.to_ascii()
    }

    /// The key's algorithm.
    #[must_use]
    pub const fn algorithm(&self) -> TsigAlgorithm {
        self.algorithm
    }

    /// Reads a BIND key file (as `tsig-keygen` writes it):
    ///
    /// ```text
    /// key "kms-update" {
    ///     algorithm hmac-sha256;
    ///     secret "c2VjcmV0IHNlY3JldCBzZWNyZXQgc2VjcmV0IQ==";
    /// };
    /// ```
    ///
    /// # Errors
    ///
    /// [`PublishError::Key`] when the file cannot be read (or is larger
    /// than 64 KiB) or is not one such key.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PublishError> {
        use std::io::Read as _;
        let path = path.as_ref();
        let file = std::fs::File::open(path)
            .map_err(|e| PublishError::Key(format!("{}: {e}", path.display())))?;
        let mut text = String::new();
        file.take(MAX_KEY_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| PublishError::Key(format!("{}: {e}", path.display())))?;
        if text.len() as u64 > MAX_KEY_FILE {
            return Err(PublishError::Key(format!(
                "{}: larger than {MAX_KEY_FILE} bytes",
                path.display()
            )));
        }
        Self::parse_bind(&text).map_err(|e| match e {
            PublishError::Key(reason) => PublishError::Key(format!("{}: {reason}", path.display())),
            other => other,
        })
    }

    /// Parses the text of a BIND key file holding one `key` statement
    /// (see [`TsigKey::from_file`]). Comments (`#`, `//`, `/* */`) are
    /// allowed.
    ///
    /// ```
    /// use kms_activation::host::dns_publish::{TsigAlgorithm, TsigKey};
    /// let key = TsigKey::parse_bind(
    ///     "key \"kms-update\" { algorithm hmac-sha512; secret \"AAECAwQ=\"; };",
    /// )?;
    /// assert_eq!(key.name(), "kms-update.");
    /// assert_eq!(key.algorithm(), TsigAlgorithm::HmacSha512);
    /// # Ok::<(), kms_activation::host::dns_publish::PublishError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`PublishError::Key`] when the text is not one key statement with a
    /// supported algorithm and a base64 secret.
    pub fn parse_bind(text: &str) -> Result<Self, PublishError> {
        let bad = |what: &str| PublishError::Key(what.to_owned());
        let tokens = tokenize(text)?;
        let mut tokens = tokens.iter().map(String::as_str);
        if tokens.next() != Some("key") {
            return Err(bad("expected a `key \"NAME\" { ... };` statement"));
        }
        let name = tokens.next().ok_or_else(|| bad("the key has no name"))?;
        if tokens.next() != Some("{") {
            return Err(bad("expected `{` after the key's name"));
        }
        let (mut algorithm, mut secret) = (None, None);
        loop {
            match tokens.next() {
                Some("}") => break,
                Some("algorithm") => {
                    let value = tokens
                        .next()
                        .ok_or_else(|| bad("algorithm without a value"))?;
                    algorithm = Some(TsigAlgorithm::from_bind_name(value).ok_or_else(|| {
                        PublishError::Key(format!(
                            "unsupported algorithm {value:?} (hmac-sha256 or hmac-sha512)"
                        ))
                    })?);
                }
                Some("secret") => {
                    let value = tokens.next().ok_or_else(|| bad("secret without a value"))?;
                    let compact: String = value.split_whitespace().collect();
                    secret = Some(
                        base64::engine::general_purpose::STANDARD
                            .decode(compact.as_bytes())
                            .map_err(|e| {
                                PublishError::Key(format!("the secret is not base64: {e}"))
                            })?,
                    );
                }
                Some(other) => {
                    return Err(PublishError::Key(format!(
                        "unexpected {other:?} in the key statement"
                    )));
                }
                None => return Err(bad("the key statement is not closed")),
            }
            if tokens.next() != Some(";") {
                return Err(bad("expected `;` after each clause"));
            }
        }
        match tokens.next() {
            Some(";") => {}
            _ => return Err(bad("expected `;` after the key statement")),
        }
        if tokens.next().is_some() {
            return Err(bad("one key per file, and nothing else"));
        }
        Self::new(
            name,
            algorithm.ok_or_else(|| bad("the key has no algorithm"))?,
            secret.ok_or_else(|| bad("the key has no secret"))?,
        )
    }

    fn signer(&self) -> Result<TSigner, PublishError> {
        TSigner::new(
            self.secret.clone(),
            self.algorithm.wire(),
            self.name.clone(),
            TSIG_FUDGE,
        )
        .map_err(|e| PublishError::Key(e.to_string()))
    }
}

/// Splits named.conf-style text into words, quoted strings (unquoted) and
/// the punctuation `{`, `}` and `;`, dropping comments.
fn tokenize(text: &str) -> Result<Vec<String>, PublishError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                let mut closed = false;
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        closed = true;
                        break;
                    }
                    last = c;
                }
                if !closed {
                    return Err(PublishError::Key("unterminated /* comment".into()));
                }
            }
            '{' | '}' | ';' => tokens.push(c.to_string()),
            '"' => {
                let mut word = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '"' {
                        closed = true;
                        break;
                    }
                    word.push(c);
                }
                if !closed {
                    return Err(PublishError::Key("unterminated quoted string".into()));
                }
                tokens.push(word);
            }
            c => {
                let mut word = c.to_string();
                while let Some(&next) = chars.peek() {
                    if next.is_whitespace() || matches!(next, '{' | '}' | ';' | '"') {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                tokens.push(word);
            }
        }
    }
    Ok(tokens)
}

/// `name` as a fully qualified DNS name (a final dot is implied).
fn fqdn(name: &str) -> Result<Name, String> {
    let trimmed = name.trim_end_matches('.');
    if trimmed.is_empty() {
        return Err("empty name".into());
    }
    let mut parsed = Name::from_ascii(trimmed).map_err(|e| e.to_string())?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// What to publish, where and how.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    zone: Name,
    port: u16,
    server: Option<SocketAddr>,
    tsig: Option<TsigKey>,
    target: Option<Name>,
    priority: u16,
    weight: u16,
    ttl: u32,
    refresh: Duration,
    retry: Duration,
    timeout: Duration,
    resolver: DnsSettings,
}

impl PublisherConfig {
    /// Publishing in `zone` a host that listens on `port`, with the
    /// defaults: the zone's primary server (its SOA MNAME, port 53), no
    /// TSIG key, this machine's name as target, [`DEFAULT_PRIORITY`],
    /// [`DEFAULT_WEIGHT`], [`DEFAULT_TTL`], [`DEFAULT_REFRESH`].
    ///
    /// # Errors
    ///
    /// [`PublishError::Config`] when `zone` is not a DNS name.
    pub fn new(zone: &str, port: u16) -> Result<Self, PublishError> {
        let zone = fqdn(zone).map_err(|e| PublishError::Config(format!("zone {zone:?}: {e}")))?;
        Ok(Self {
            zone,
            port,
            server: None,
            tsig: None,
            target: None,
            priority: DEFAULT_PRIORITY,
            weight: DEFAULT_WEIGHT,
            ttl: DEFAULT_TTL,
            refresh: DEFAULT_REFRESH,
            retry: DEFAULT_RETRY,
            timeout: DEFAULT_UPDATE_TIMEOUT,
            resolver: DnsSettings::system().with_timeout(DEFAULT_UPDATE_TIMEOUT, 2),
        })
    }

    /// Sends the updates to `server` instead of the zone's primary.
    #[must_use]
    pub const fn with_server(mut self, server: SocketAddr) -> Self {
        self.server = Some(server);
        self
    }

    /// Finds the zone's primary server (when no
    /// [`with_server`](Self::with_server) is given) by asking these DNS
    /// servers for the zone's SOA record and its MNAME's address, instead
    /// of the system's resolver: for a host whose resolver does not see
    /// the zone. The updates still go to the primary's port 53.
    ///
    /// ```
    /// use kms_activation::client::discovery::DnsSettings;
    /// use kms_activation::host::dns_publish::PublisherConfig;
    ///
    /// let internal = DnsSettings::system().with_name_servers(["192.0.2.53:53".parse().unwrap()]);
    /// let config = PublisherConfig::new("corp.example", 1688)?.with_resolver(internal);
    /// # drop(config);
    /// # Ok::<(), kms_activation::host::dns_publish::PublishError>(())
    /// ```
    #[must_use]
    pub fn with_resolver(mut self, settings: DnsSettings) -> Self {
        self.resolver = settings;
        self
    }

    /// Signs the updates with `key` (TSIG).
    #[must_use]
    pub fn with_tsig_key(mut self, key: TsigKey) -> Self {
        self.tsig = Some(key);
        self
    }

    /// The record's target: the name clients resolve to reach this host.
    ///
    /// # Errors
    ///
    /// [`PublishError::Config`] when `target` is not a DNS name.
    pub fn with_target(mut self, target: &str) -> Result<Self, PublishError> {
        self.target = Some(
            fqdn(target).map_err(|e| PublishError::Config(format!("target {target:?}: {e}")))?,
        );
        Ok(self)
    }

    /// The record's priority and weight (RFC 2782: lower priorities are
    /// tried first, weights share the load within a priority).
    #[must_use]
    pub const fn with_priority_weight(mut self, priority: u16, weight: u16) -> Self {
        self.priority = priority;
        self.weight = weight;
        self
    }

    /// The record's TTL, in seconds.
    #[must_use]
    pub const fn with_ttl(mut self, ttl: u32) -> Self {
        self.ttl = ttl;
        self
    }

    /// How often [`SrvPublisher::run`] publishes again after a success
    /// (at least one second).
    #[must_use]
    pub fn with_refresh(mut self, refresh: Duration) -> Self {
        self.refresh = refresh.max(Duration::from_secs(1));
        self
    }

    /// First wait after a failure (doubled at each further failure, up to
    /// [`MAX_RETRY`] and the refresh interval; at least 100 ms).
    #[must_use]
    pub fn with_retry(mut self, retry: Duration) -> Self {
        self.retry = retry.max(Duration::from_millis(100));
        self
    }

    /// Time one update may take.
    #[must_use]
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The refresh interval.
    #[must_use]
    pub const fn refresh(&self) -> Duration {
        self.refresh
    }
}

/// How publishing has gone so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishStatus {
    /// Whether the last publish succeeded and no withdraw followed.
    pub published: bool,
    /// Successful publications (the first and each refresh).
    pub successes: u64,
    /// Failed publications or withdrawals, in all.
    pub failures: u64,
    /// Failures since the last success.
    pub consecutive_failures: u64,
    /// The last failure's explanation (kept after a later success).
    pub last_error: Option<String>,
}

impl PublishStatus {
    /// Whether the record is published and the last update succeeded:
    /// what a readiness check wants (false until the first publication,
    /// after a failed refresh and after the withdrawal).
    #[must_use]
    pub const fn is_healthy(&self) -> bool {
        self.published && self.consecutive_failures == 0
    }
}

/// Publishes and withdraws one host's `_vlmcs._tcp` SRV record. Shareable
/// between tasks (`&self` methods); its updates run on the caller's Tokio
/// runtime (time and I/O enabled). See the [module docs](self).
#[derive(Debug)]
pub struct SrvPublisher {
    config: PublisherConfig,
    owner: Name,
    record: Record,
    status: Mutex<PublishStatus>,
    #[cfg_attr(not(feature = "tracing"), allow(dead_code, reason = "used to log"))]
    warnings: LogLimit,
}

impl SrvPublisher {
    /// A publisher with `config`. Reads the machine's host name when the
    /// config names no target: a name without a dot is qualified with the
    /// zone.
    ///
    /// # Errors
    ///
    /// [`PublishError::Config`] when no target is given and the machine's
    /// name cannot be found.
    pub fn new(config: PublisherConfig) -> Result<Self, PublishError> {
        let owner = Name::from_ascii("_vlmcs._tcp")
            .and_then(|prefix| prefix.append_domain(&config.zone))
            .map_err(|e| PublishError::Config(format!("record name: {e}")))?;
        let target = match &config.target {
            Some(target) => target.clone(),
            None => machine_name(&config.zone)?,
        };
        let record = Record::from_rdata(
            owner.clone(),
            config.ttl,
            RData::SRV(SRV::new(
                config.priority,
                config.weight,
                config.port,
                target,
            )),
        );
        Ok(Self {
            config,
            owner,
            record,
            status: Mutex::new(PublishStatus::default()),
            warnings: LogLimit::new(Duration::from_secs(60), 3),
        })
    }

    /// The record this publisher manages, in zone-file syntax.
    #[must_use]
    pub fn record_text(&self) -> String {
        match &self.record.data {
            RData::SRV(srv) => format!(
                "{} {} IN SRV {} {} {} {}",
                self.owner, self.config.ttl, srv.priority, srv.weight, srv.port, srv.target
            ),
            other => format!("{} {} IN {other}", self.owner, self.config.ttl),
        }
    }

    /// The zone the record is published in, fully qualified
    /// (`example.org.`).
    #[must_use]
    pub fn zone(&self) -> String {
        self.config.zone.to_ascii()
    }

    /// How publishing has gone so far.
    #[must_use]
    pub fn status(&self) -> PublishStatus {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PublishStatus> {
        match self.status.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Adds the record (RFC 2136 add to the `_vlmcs._tcp` `RRset`; the
    /// server ignores a duplicate, so this is also the refresh). The
    /// outcome is counted in [`SrvPublisher::status`], and a failure is
    /// logged.
    ///
    /// # Errors
    ///
    /// [`PublishError`] when the server cannot be found, does not answer,
    /// or refuses the update.
    pub async fn publish(&self) -> Result<(), PublishError> {
        let result = self.update(true).await;
        self.note("publish", &result);
        result
    }

    /// Deletes exactly this publisher's record (RFC 2136 delete of one RR
    /// by its data): records of other hosts under the same name stay.
    ///
    /// # Errors
    ///
    /// [`PublishError`] as for [`SrvPublisher::publish`].
    pub async fn withdraw(&self) -> Result<(), PublishError> {
        let result = self.update(false).await;
        self.note("withdraw", &result);
        if result.is_ok() {
            self.lock().published = false;
        }
        result
    }

    /// Publishes now, then again every refresh interval; after a failure,
    /// again after a backoff ([`PublisherConfig::with_retry`], doubling up
    /// to [`MAX_RETRY`]). Returns as soon as `stop` completes, cancelling
    /// an update in flight; the record stays published (await this, then
    /// call [`SrvPublisher::withdraw`] to remove it).
    pub async fn run(&self, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let ceiling = MAX_RETRY.min(self.config.refresh);
        let mut backoff = self.config.retry.min(ceiling);
        loop {
            // A stop also cancels an update in flight, so that a withdraw
            // that follows is not overtaken by this add.
            let published = tokio::select! {
                () = &mut stop => return,
                result = self.publish() => result.is_ok(),
            };
            let wait = if published {
                backoff = self.config.retry.min(ceiling);
                self.config.refresh
            } else {
                let wait = backoff;
                backoff = backoff.saturating_mul(2).min(ceiling);
                wait
            };
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn note(&self, what: &str, result: &Result<(), PublishError>) {
        // The counts under the lock; the log lines after it.
        let (failed_before, failures) = {
            let mut status = self.lock();
            let failed_before = status.consecutive_failures;
            if result.is_ok() {
                if what == "publish" {
                    status.published = true;
                    status.successes = status.successes.saturating_add(1);
                }
                status.consecutive_failures = 0;
            } else {
                status.failures = status.failures.saturating_add(1);
                status.consecutive_failures = status.consecutive_failures.saturating_add(1);
            }
            if let Err(e) = result {
                status.last_error = Some(e.to_string());
            }
            (failed_before, status.failures)
        };
        match result {
            Ok(()) => self.info(what, failed_before),
            Err(e) => self.warn(what, failures, e),
        }
    }

    #[cfg_attr(
        not(feature = "tracing"),
        allow(clippy::unused_self, reason = "logs only with the tracing feature")
    )]
    fn info(&self, what: &str, failed_before: u64) {
        #[cfg(feature = "tracing")]
        if failed_before > 0 {
            tracing::info!(
                target: "kms_activation::dns_publish",
                record = %self.record_text(),
                "DNS {what} of the KMS SRV record succeeded after {failed_before} failures"
            );
        } else {
            tracing::debug!(
                target: "kms_activation::dns_publish",
                record = %self.record_text(),
                "DNS {what} done"
            );
        }
        #[cfg(not(feature = "tracing"))]
        let _ = (what, failed_before);
    }

    #[cfg_attr(
        not(feature = "tracing"),
        allow(clippy::unused_self, reason = "logs only with the tracing feature")
    )]
    fn warn(&self, what: &str, failures: u64, error: &PublishError) {
        #[cfg(feature = "tracing")]
        {
            #[allow(
                clippy::disallowed_methods,
                reason = "paces log lines only; nothing else reads this clock"
            )]
            let now = std::time::Instant::now();
            if let crate::log_limit::Admit::Yes { suppressed } = self.warnings.admit(now) {
                tracing::warn!(
                    target: "kms_activation::dns_publish",
                    record = %self.record_text(),
                    failures,
                    suppressed,
                    "DNS {what} of the KMS SRV record failed: {error}"
                );
            }
        }
        #[cfg(not(feature = "tracing"))]
        let _ = (what, failures, error);
    }

    async fn update(&self, add: bool) -> Result<(), PublishError> {
        let server = match self.config.server {
            Some(server) => server,
            None => self.primary().await?,
        };
        let network = |reason: String| PublishError::Network { server, reason };
        let signer = self.config.tsig.as_ref().map(TsigKey::signer).transpose()?;
        let stream = UdpClientStream::builder(server, TokioRuntimeProvider::default())
            .with_timeout(Some(self.config.timeout))
            .with_signer(signer)
            .build();
        let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
        let background = tokio::spawn(background);
        let rrset = self.record.clone();
        let zone = self.config.zone.clone();
        let mut handle = client.clone();
        let sent = async move {
            if add {
                handle.append(rrset, zone, false).await
            } else {
                handle.delete_by_rdata(rrset, zone).await
            }
        };
        let outcome = tokio::time::timeout(self.config.timeout.saturating_mul(2), sent).await;
        drop(client);
        background.abort();
        let response: DnsResponse = outcome
            .map_err(|_| network("no answer in time".into()))?
            .map_err(|e| {
                let reason = e.to_string();
                let lower = reason.to_ascii_lowercase();
                match &self.config.tsig {
                    // The library names TSIG or the MAC when an answer
                    // fails its verification.
                    Some(key) if lower.contains("tsig") || lower.contains("hmac") => {
                        PublishError::Unauthenticated {
                            server,
                            key: key.name(),
                            reason,
                        }
                    }
                    _ => network(reason),
                }
            })?;
        match response.metadata.response_code {
            ResponseCode::NoError => Ok(()),
            code => Err(PublishError::Refused {
                server,
                rcode: code.to_str().to_owned(),
            }),
        }
    }

    /// The zone's primary server: its SOA MNAME, resolved, port 53.
    async fn primary(&self) -> Result<SocketAddr, PublishError> {
        let zone = self.config.zone.to_ascii();
        let no_server = |reason: String| PublishError::NoServer {
            zone: zone.clone(),
            reason,
        };
        let lookups =
            SrvResolver::new(&self.config.resolver).map_err(|e| no_server(e.to_string()))?;
        let resolver = lookups.hickory();
        let soa = resolver
            .soa_lookup(self.config.zone.clone())
            .await
            .map_err(|e| no_server(e.to_string()))?;
        let mname = soa
            .answers()
            .iter()
            .find_map(|record| match &record.data {
                RData::SOA(soa) => Some(soa.mname.clone()),
                _ => None,
            })
            .ok_or_else(|| no_server("no SOA record".into()))?;
        let ips = resolver
            .lookup_ip(mname.clone())
            .await
            .map_err(|e| no_server(format!("{mname}: {e}")))?;
        ips.iter()
            .next()
            .map(|ip| SocketAddr::new(ip, 53))
            .ok_or_else(|| no_server(format!("{mname} has no address")))
    }
}

/// This machine's host name as a DNS name; a name without a dot is
/// qualified with `zone`.
fn machine_name(zone: &Name) -> Result<Name, PublishError> {
    let read = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok());
    let name = read
        .as_deref()
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| {
            PublishError::Config("cannot read this machine's name; give a target".into())
        })?;
    let bad = |e: String| PublishError::Config(format!("machine name {name:?}: {e}"));
    if name.trim_end_matches('.').contains('.') {
        fqdn(name).map_err(bad)
    } else {
        Name::from_ascii(name)
            .and_then(|host| host.append_domain(zone))
            .map_err(|e| bad(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_bind_key_file_with_comments() {
        let key = TsigKey::parse_bind(
            "# made by hand\n/* a\n block */ key \"kms.example.\" {\n\
             \talgorithm HMAC-SHA256; // the default\n\
             \tsecret \"AAEC AwQ=\";\n};\n",
        )
        .unwrap();
        assert_eq!(key.name(), "kms.example.");
        assert_eq!(key.algorithm(), TsigAlgorithm::HmacSha256);
        assert_eq!(key.secret, [0, 1, 2, 3, 4]);
        assert!(!format!("{key:?}").contains("AAEC"));
    }

    #[test]
    fn refuses_what_is_not_one_good_key() {
        for text in [
            "",
            "key \"k\" { algorithm hmac-md5; secret \"AAAA\"; };",
            "key \"k\" { algorithm hmac-sha256; secret \"not base64!\"; };",
            "key \"k\" { algorithm hmac-sha256; };",
            "key \"k\" { secret \"AAAA\"; };",
            "key \"k\" { algorithm hmac-sha256; secret \"AAAA\"; }",
            "key \"k\" { algorithm hmac-sha256; secret \"AAAA\" };",
            "key \"k\" { algorithm hmac-sha256; secret \"AAAA\"; }; key \"j\" { };",
            "key \"k\" { algorithm hmac-sha256; secret \"\"; };",
            "key \"k\" { algorithm hmac-sha256; secret \"AAAA; };",
            "key \"k\" { algorithm hmac-sha256; /* secret \"AAAA\"; };",
            "options { };",
        ] {
            assert!(
                matches!(TsigKey::parse_bind(text), Err(PublishError::Key(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn the_record_is_the_srv_of_the_zone() {
        let config = PublisherConfig::new("Example.Test.", 1688)
            .unwrap()
            .with_target("kms1.example.test")
            .unwrap()
            .with_priority_weight(10, 20)
            .with_ttl(600);
        let publisher = SrvPublisher::new(config).unwrap();
        assert_eq!(
            publisher.record_text(),
            "_vlmcs._tcp.Example.Test. 600 IN SRV 10 20 1688 kms1.example.test."
        );
        assert!(PublisherConfig::new("", 1688).is_err());
        assert!(PublisherConfig::new("a..b", 1688).is_err());
    }
}
