//! `KmsHost`: a host policy that behaves like a Microsoft KMS host.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::activation::ActivationRecord;
use super::connection::HostConnection;
use super::event::{HostEvent, RejectedRequest, RequestEvent};
use super::hook::DecisionHook;
use super::responder::{
    Answer, DEFAULT_ACTIVATION_INTERVAL, DEFAULT_RENEWAL_INTERVAL, capped_count, count_cap,
};
use super::statistics::{ApplicationCount, Counters, Statistics};
use super::store::{CountStore, StoreError, Visit};
use crate::epid::{self, Epid, EpidError, EpidProblem, GenerateError};
use crate::log_limit::LogLimit;
use crate::message::{Hwid, Version};
use crate::product::{self, Csvlk};
use crate::{FileTime, HResult, RandomSource, Uuid};

/// How a [`KmsHost`] arrives at the count it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CountPolicy {
    /// As a Windows KMS host: per application (Windows, Office 2010,
    /// Office 2013+), the distinct CMIDs that asked within the counting
    /// window, the asking client included, capped at twice the largest N
    /// policy among them ([`count_cap`](super::count_cap)). Clients activate
    /// once the count reaches their N policy (25 for Windows clients, 5 for
    /// servers and Office). The default.
    #[default]
    Genuine,
    /// **Not genuine**: always this count (an emulator that activates every
    /// client at once when the count is at least its N policy).
    Fixed(u32),
    /// **Not genuine**: twice the request's N policy, at least 1 (what
    /// vlmcsd reports by default).
    TwiceNPolicy,
}

/// How a [`KmsHost`] is set up. Validated by [`KmsHost::start`].
///
/// ```
/// use kms_activation::host::{CountPolicy, KmsHostConfig};
/// use std::time::Duration;
///
/// let mut config = KmsHostConfig::default();
/// config
///     .set_host_build(20348)
///     .set_intervals(120, 10_080)
///     .set_count_policy(CountPolicy::Genuine)
///     .set_count_window(Duration::from_secs(30 * 86_400));
/// assert_eq!(config.host_build(), 20348);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsHostConfig {
    csvlks: Option<Vec<Uuid>>,
    epids: Vec<String>,
    host_build: u32,
    hwid: Hwid,
    activation_interval: u32,
    renewal_interval: u32,
    versions: BTreeSet<Version>,
    count_policy: CountPolicy,
    count_window: Duration,
    log_retention: Duration,
    store_failure: HResult,
}

/// The counting window of a Windows KMS host: 30 days.
pub const DEFAULT_COUNT_WINDOW: Duration = Duration::from_secs(30 * 86_400);

/// The host build ePIDs are generated for by default: 26100, Windows
/// Server 2025, on which every CSVLK can be installed.
pub const DEFAULT_HOST_BUILD: u32 = 26_100;

impl Default for KmsHostConfig {
    fn default() -> Self {
        Self {
            csvlks: None,
            epids: Vec::new(),
            host_build: DEFAULT_HOST_BUILD,
            hwid: Hwid([0x3A, 0x1C, 0x04, 0x96, 0x00, 0xB6, 0x00, 0x76]),
            activation_interval: DEFAULT_ACTIVATION_INTERVAL,
            renewal_interval: DEFAULT_RENEWAL_INTERVAL,
            versions: [Version::V4, Version::V5, Version::V6]
                .into_iter()
                .collect(),
            count_policy: CountPolicy::Genuine,
            count_window: DEFAULT_COUNT_WINDOW,
            log_retention: DEFAULT_COUNT_WINDOW,
            store_failure: HResult::BINDING_SERVICE_NOT_ENABLED,
        }
    }
}

impl KmsHostConfig {
    /// Holds exactly these CSVLKs (by activation ID), and so activates only
    /// the KMS IDs they cover; the default holds every CSVLK in the
    /// [catalog](crate::product) that has ePID data.
    pub fn set_csvlks(&mut self, csvlk_ids: impl IntoIterator<Item = Uuid>) -> &mut Self {
        self.csvlks = Some(csvlk_ids.into_iter().collect());
        self
    }

    /// Uses this ePID for the held CSVLK(s) it belongs to (by group and key
    /// range) instead of a generated one. May be called once per CSVLK.
    pub fn add_epid(&mut self, epid: impl Into<String>) -> &mut Self {
        self.epids.push(epid.into());
        self
    }

    /// The build generated ePIDs name (default [`DEFAULT_HOST_BUILD`]).
    #[must_use]
    pub const fn host_build(&self) -> u32 {
        self.host_build
    }

    /// Sets the host build generated ePIDs name: a Windows build of the
    /// catalog ([`KmsHostError::UnknownHostBuild`] otherwise). A key is never
    /// given a build it is not used on ([`Csvlk::allows_host_build`]): on a
    /// client build the default key set leaves the Windows Server keys out,
    /// and holding one explicitly is an error.
    pub const fn set_host_build(&mut self, build: u32) -> &mut Self {
        self.host_build = build;
        self
    }

    /// Sets the hardware ID sent in V6 responses.
    pub const fn set_hwid(&mut self, hwid: Hwid) -> &mut Self {
        self.hwid = hwid;
        self
    }

    /// Sets the activation (retry) and renewal intervals, in minutes
    /// (defaults 120 and 10 080).
    pub const fn set_intervals(&mut self, activation: u32, renewal: u32) -> &mut Self {
        self.activation_interval = activation;
        self.renewal_interval = renewal;
        self
    }

    /// Accepts only these protocol versions; others are refused with
    /// [`HResult::INVALID_DATA`] (default: 4.0, 5.0 and 6.0).
    pub fn set_versions(&mut self, versions: impl IntoIterator<Item = Version>) -> &mut Self {
        self.versions = versions.into_iter().collect();
        self
    }

    /// Sets how the count is arrived at (default [`CountPolicy::Genuine`]).
    pub const fn set_count_policy(&mut self, policy: CountPolicy) -> &mut Self {
        self.count_policy = policy;
        self
    }

    /// Sets the counting window (default [`DEFAULT_COUNT_WINDOW`], 30 days).
    pub const fn set_count_window(&mut self, window: Duration) -> &mut Self {
        self.count_window = window;
        self
    }

    /// Keeps activation records this long (default 30 days).
    pub const fn set_log_retention(&mut self, retention: Duration) -> &mut Self {
        self.log_retention = retention;
        self
    }

    /// The HRESULT sent when the store cannot record a client (default
    /// [`HResult::BINDING_SERVICE_NOT_ENABLED`], 0xC004F039: "the KMS could
    /// not be used"; the client retries after its activation interval).
    pub const fn set_store_failure_result(&mut self, result: HResult) -> &mut Self {
        self.store_failure = result;
        self
    }
}

/// Why a [`KmsHost`] could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KmsHostError {
    /// A configured CSVLK ID is not in the catalog.
    #[error("unknown CSVLK {0}")]
    UnknownCsvlk(Uuid),
    /// No CSVLK is held, so nothing would be activated.
    #[error("no CSVLK to activate with")]
    NoCsvlk,
    /// The host build ePIDs are generated for is not a Windows build of the
    /// catalog.
    #[error(
        "unknown host build {0}: not a Windows build of the catalog (server builds: {known})",
        known = server_builds()
    )]
    UnknownHostBuild(u32),
    /// No catalog CSVLK can be installed on the host build (for example a
    /// client build, which holds no Windows Server key, and no client key
    /// has ePID data for it).
    #[error("no CSVLK can be used on host build {build} ({name})")]
    NoCsvlkForBuild {
        /// The host build.
        build: u32,
        /// Its display name.
        name: &'static str,
    },
    /// A configured ePID does not parse.
    #[error("ePID {epid:?} does not parse: {error}")]
    BadEpid {
        /// The ePID as configured.
        epid: String,
        /// Why.
        error: EpidError,
    },
    /// A configured ePID belongs to no CSVLK the host holds.
    #[error("ePID {epid:?} belongs to no CSVLK this host holds")]
    EpidForNoHeldCsvlk {
        /// The ePID as configured.
        epid: String,
    },
    /// A configured ePID is inconsistent with its CSVLK.
    #[error("ePID {epid:?} is inconsistent with {csvlk}: {problems:?}")]
    ImplausibleEpid {
        /// The ePID as configured.
        epid: String,
        /// The CSVLK's name.
        csvlk: &'static str,
        /// What is wrong.
        problems: Vec<EpidProblem>,
    },
    /// No ePID could be generated for a configured CSVLK.
    #[error("cannot generate an ePID for {csvlk}: {error}")]
    Generate {
        /// The CSVLK's name.
        csvlk: &'static str,
        /// Why.
        error: GenerateError,
    },
    /// The host's time is not a date.
    #[error("host time {0} is out of range")]
    BadTime(FileTime),
    /// The store could not agree on the ePIDs.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A held CSVLK and the ePID the host answers with for it.
#[derive(Debug, Clone)]
struct HeldKey {
    csvlk: &'static Csvlk,
    epid: String,
}

/// The outcome of one request decided by [`KmsHost::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// What to send: an answer, or a refusal.
    pub reply: Result<Answer, HResult>,
    /// The activation record (queued for the store's activation log).
    pub record: ActivationRecord,
}

/// A ready-made host policy that behaves like a Microsoft KMS host.
///
/// * **CSVLKs and ePIDs**: it holds a set of CSVLKs (all in the catalog by
///   default) and activates exactly the KMS IDs they cover
///   ([`Csvlk::activates`], generated from Microsoft's activation tables: a
///   Windows Server key also covers the older Windows products); other KMS IDs,
///   retail and pre-release groups, and KMS IDs of another application are
///   refused with [`HResult::KMS_ID_MISMATCH`]. It answers each KMS ID with
///   the ePID of the CSVLK that covers it, given in the configuration or
///   generated once for the configured host build and then kept in the
///   store, so it stays the same across restarts and across the hosts of a
///   fleet sharing a store.
/// * **Counting**: genuine by default ([`CountPolicy::Genuine`]), through a
///   [`CountStore`]; fixed-count modes are opt-in.
/// * **Hooks**: [`DecisionHook`]s admit, cap or adjust; see
///   [`CidrAllowList`](super::CidrAllowList),
///   [`ProductAllowList`](super::ProductAllowList),
///   [`MaxClients`](super::MaxClients).
/// * **Records and statistics**: every request yields an
///   [`ActivationRecord`], queued for the store's activation log, which is
///   written behind the answer ([`CountStore::queue_activation`]), and
///   emitted as a `tracing` event with the `tracing` feature;
///   [`statistics`](Self::statistics) reports what `slmgr /dlv` shows, and
///   the store failures the host counted.
/// * **Store failures**: a visit the store cannot record in time is refused
///   with the configured HRESULT (0xC004F039 by default), logged at WARN
///   with its cause (rate-limited, with the `tracing` feature) and counted
///   in [`Statistics::store_errors`].
///
/// The protocol's own checks (decoding, N policy, clock skew) are done by
/// [`HostConnection`] before a request reaches the policy.
///
/// A `KmsHost` is shared by all connections (`&self` everywhere). With an
/// asynchronous runtime, drive each connection with
/// [`process`](Self::process); without one, use
/// [`process_blocking`](Self::process_blocking).
///
/// ```
/// use kms_activation::host::store::MemoryStore;
/// use kms_activation::host::{HostConfig, HostConnection, KmsHost, KmsHostConfig};
/// use kms_activation::{FileTime, ScriptedRandom};
///
/// let now = FileTime::from_ticks(134_397_882_570_000_000);
/// let mut rng = ScriptedRandom::new(vec![7u8; 4096]); // an OS source in real use
/// let host = pollster::block_on(KmsHost::start(
///     KmsHostConfig::default(),
///     MemoryStore::default(),
///     now,
///     &mut rng,
/// ))?;
/// let mut conn = HostConnection::new(&HostConfig::default());
/// # let bytes_from_socket: &[u8] = &[];
/// let used = conn.handle_input(now, bytes_from_socket, &mut rng)?;
/// let records = host.process_blocking(&mut conn, &mut rng);
/// # assert_eq!((used, records.len()), (0, 0));
/// // ...then send conn.transmit() and call conn.advance_transmit(n).
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KmsHost<S> {
    store: S,
    keys: Vec<HeldKey>,
    /// KMS ID → index in `keys` of the CSVLK that answers it.
    by_kms_id: HashMap<Uuid, usize>,
    hwid: Hwid,
    activation_interval: u32,
    renewal_interval: u32,
    versions: BTreeSet<Version>,
    count_policy: CountPolicy,
    count_window_ticks: u64,
    log_retention_ticks: u64,
    store_failure: HResult,
    hooks: Vec<Box<dyn DecisionHook>>,
    counters: Counters,
    /// Bounds the WARN lines about store failures.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code, reason = "used to log"))]
    store_warnings: LogLimit,
}

/// At most this many WARN lines about store failures per minute (the rest
/// are counted and reported with the next line).
const STORE_WARNINGS_PER_MINUTE: u32 = 10;

impl<S> std::fmt::Debug for KmsHost<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsHost")
            .field("csvlks", &self.keys.len())
            .field("count_policy", &self.count_policy)
            .field("hooks", &self.hooks.len())
            .finish_non_exhaustive()
    }
}

impl<S: CountStore> KmsHost<S> {
    /// Validates `config`, agrees the ePIDs with `store` and returns the
    /// host. `now` dates generated ePIDs; `rng` draws them (it is used
    /// before the returned future first suspends, so it need not be `Send`).
    ///
    /// # Errors
    ///
    /// [`KmsHostError`]: unknown CSVLKs, a configured ePID that does not
    /// parse, belongs to no held CSVLK or is inconsistent with it, or a
    /// store that cannot be read.
    pub fn start<R: RandomSource + ?Sized>(
        config: KmsHostConfig,
        store: S,
        now: FileTime,
        rng: &mut R,
    ) -> impl Future<Output = Result<Self, KmsHostError>> + Send + use<S, R> {
        let prepared = prepare(&config, now, rng);
        async move {
            let candidates = prepared?;
            let mut keys = Vec::with_capacity(candidates.len());
            for (csvlk, epid, given) in candidates {
                let epid = match (given, csvlk.id()) {
                    (true, _) | (false, None) => epid,
                    (false, Some(id)) => store.host_epid(id, &epid).await?,
                };
                keys.push(HeldKey { csvlk, epid });
            }
            Ok(Self::assemble(config, store, keys))
        }
    }

    fn assemble(config: KmsHostConfig, store: S, keys: Vec<HeldKey>) -> Self {
        let mut by_kms_id: HashMap<Uuid, usize> = HashMap::new();
        for item in product::kms_items() {
            let kms_id = item.id();
            let best = keys
                .iter()
                .enumerate()
                .filter(|(_, key)| key.csvlk.activates(kms_id))
                .max_by_key(|(_, key)| preference(key.csvlk, kms_id));
            if let Some((index, _)) = best {
                by_kms_id.insert(kms_id, index);
            }
        }
        Self {
            store,
            keys,
            by_kms_id,
            hwid: config.hwid,
            activation_interval: config.activation_interval,
            renewal_interval: config.renewal_interval,
            versions: config.versions,
            count_policy: config.count_policy,
            count_window_ticks: duration_ticks(config.count_window),
            log_retention_ticks: duration_ticks(config.log_retention),
            store_failure: config.store_failure,
            hooks: Vec::new(),
            counters: Counters::default(),
            store_warnings: LogLimit::new(Duration::from_secs(60), STORE_WARNINGS_PER_MINUTE),
        }
    }

    /// Adds a decision hook; hooks are consulted in the order added.
    #[must_use]
    pub fn with_hook(mut self, hook: impl DecisionHook + 'static) -> Self {
        self.hooks.push(Box::new(hook));
        self
    }

    /// The store behind the host.
    #[must_use]
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The refusal sent when the store fails
    /// ([`KmsHostConfig::set_store_failure_result`]); transports send it too
    /// when the host runs out of time.
    #[must_use]
    pub fn store_failure_result(&self) -> HResult {
        self.store_failure
    }

    /// The activation (retry) and renewal intervals answered, in minutes.
    #[must_use]
    pub const fn intervals(&self) -> (u32, u32) {
        (self.activation_interval, self.renewal_interval)
    }

    /// The counting window's length, in FILETIME ticks (100 ns).
    #[must_use]
    pub const fn count_window_ticks(&self) -> u64 {
        self.count_window_ticks
    }

    /// The held CSVLKs with the ePID answered for each.
    pub fn epids(&self) -> impl Iterator<Item = (&'static Csvlk, &str)> {
        self.keys.iter().map(|k| (k.csvlk, k.epid.as_str()))
    }

    /// The ePID answered for `kms_id`, if the host activates it.
    #[must_use]
    pub fn epid_for(&self, kms_id: Uuid) -> Option<&str> {
        let key = self.keys.get(*self.by_kms_id.get(&kms_id)?)?;
        Some(&key.epid)
    }

    /// Decides one request: the answer or refusal to send, and its record.
    /// The visit is committed to the store before this completes; the record
    /// is only queued for the store's activation log
    /// ([`CountStore::queue_activation`]), which is written behind the
    /// answer.
    pub async fn decide(&self, event: &RequestEvent) -> Decision {
        let reply = self.reply(event).await;
        let (count, result) = match &reply {
            Ok(answer) => (Some(answer.count), HResult::S_OK),
            Err(hresult) => (None, *hresult),
        };
        let now = event.context.received_at;
        let record = ActivationRecord::new(
            now,
            event.context.peer,
            event.context.connection_id,
            &event.body,
            count,
            result,
        );
        self.log(&record, Some(event.body.license_status));
        Decision { reply, record }
    }

    /// Logs and counts a request the engine refused by itself.
    #[allow(
        clippy::unused_async,
        reason = "public signature; its record is queued for the log without waiting"
    )]
    pub async fn record_rejection(&self, rejected: &RejectedRequest) -> Option<ActivationRecord> {
        let Some(body) = &rejected.body else {
            self.counters.count(None, true);
            return None;
        };
        let record = ActivationRecord::new(
            rejected.context.received_at,
            rejected.context.peer,
            rejected.context.connection_id,
            body,
            None,
            rejected.result,
        );
        self.log(&record, Some(body.license_status));
        Some(record)
    }

    /// Decides every request `conn` has reported and answers it, in order;
    /// returns the records. Awaits the store between a request and its
    /// answer; `rng` is only used between those waits.
    pub async fn process<R: RandomSource + Send + ?Sized>(
        &self,
        conn: &mut HostConnection,
        rng: &mut R,
    ) -> Vec<ActivationRecord> {
        let mut records = Vec::new();
        while let Some(event) = conn.poll_event() {
            match event {
                HostEvent::Request(request) => {
                    let decision = self.decide(&request).await;
                    reply(conn, &request, decision.reply, rng);
                    records.push(decision.record);
                }
                HostEvent::Rejected(rejected) => {
                    records.extend(self.record_rejection(&rejected).await);
                }
            }
        }
        records
    }

    /// [`process`](Self::process) for hosts without an async runtime: blocks
    /// the thread while the store works.
    pub fn process_blocking<R: RandomSource + ?Sized>(
        &self,
        conn: &mut HostConnection,
        rng: &mut R,
    ) -> Vec<ActivationRecord> {
        let mut records = Vec::new();
        while let Some(event) = conn.poll_event() {
            match event {
                HostEvent::Request(request) => {
                    let decision = crate::block_on::block_on(self.decide(&request));
                    reply(conn, &request, decision.reply, rng);
                    records.push(decision.record);
                }
                HostEvent::Rejected(rejected) => {
                    records.extend(crate::block_on::block_on(self.record_rejection(&rejected)));
                }
            }
        }
        records
    }

    /// The statistics `slmgr /dlv` shows on a host: requests by outcome and
    /// license state, and the current count of every application.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot report the counts.
    pub async fn statistics(&self, now: FileTime) -> Result<Statistics, StoreError> {
        let window_start = self.window_start(now);
        let mut counts = Vec::new();
        for application in product::applications() {
            let tally = match self.store.tally(application.id(), window_start).await {
                Ok(tally) => tally,
                Err(error) => {
                    self.store_failed("reading the counts", &error);
                    return Err(error);
                }
            };
            if tally.clients == 0 {
                continue;
            }
            counts.push(ApplicationCount {
                application_id: application.id(),
                clients: tally.clients,
                current_count: capped_count(tally.clients, tally.max_n_policy),
            });
        }
        Ok(self.counters.snapshot_with(counts, self.store.health()))
    }

    async fn reply(&self, event: &RequestEvent) -> Result<Answer, HResult> {
        let request = &event.body;
        if !self.versions.contains(&request.version) {
            return Err(HResult::INVALID_DATA);
        }
        let key = self.key_for(request.kms_id, request.application_id)?;
        for hook in &self.hooks {
            hook.admit(&event.context, request)?;
        }
        let count = match self.count_policy {
            CountPolicy::Fixed(count) => count,
            CountPolicy::TwiceNPolicy => count_cap(request.n_policy),
            CountPolicy::Genuine => {
                let capacity = self
                    .hooks
                    .iter()
                    .filter_map(|h| h.capacity(request.application_id))
                    .min();
                let now = event.context.received_at;
                let visit = Visit {
                    application_id: request.application_id,
                    cmid: request.cmid,
                    n_policy: request.n_policy,
                    at: now,
                    window_start: self.window_start(now),
                    capacity,
                };
                let tally = self.store.record_visit(visit).await.map_err(|error| {
                    self.store_failed("recording a visit", &error);
                    self.store_failure
                })?;
                if !tally.admitted {
                    return Err(HResult::CLIENT_TABLE_FULL);
                }
                capped_count(tally.clients, tally.max_n_policy)
            }
        };
        let mut answer = Answer {
            epid: key.epid.clone(),
            hwid: self.hwid,
            count,
            activation_interval: self.activation_interval,
            renewal_interval: self.renewal_interval,
        };
        for hook in &self.hooks {
            hook.adjust(&event.context, request, &mut answer);
        }
        Ok(answer)
    }

    /// The held key answering `kms_id`, if it is a volume KMS ID of
    /// `application_id` that a held CSVLK activates.
    fn key_for(&self, kms_id: Uuid, application_id: Uuid) -> Result<&HeldKey, HResult> {
        product::volume_kms_item(kms_id, application_id).ok_or(HResult::KMS_ID_MISMATCH)?;
        self.by_kms_id
            .get(&kms_id)
            .and_then(|&i| self.keys.get(i))
            .ok_or(HResult::KMS_ID_MISMATCH)
    }

    fn window_start(&self, now: FileTime) -> FileTime {
        FileTime::from_ticks(now.ticks().saturating_sub(self.count_window_ticks))
    }

    fn log(&self, record: &ActivationRecord, status: Option<crate::LicenseStatus>) {
        self.counters.count(status, !record.is_answered());
        #[cfg(feature = "tracing")]
        emit_tracing(record);
        let retain_since =
            FileTime::from_ticks(record.time.ticks().saturating_sub(self.log_retention_ticks));
        // The log is written behind the answer. A record the store cannot
        // take does not change the answer (the count was committed, or
        // refused, before); it is counted and reported.
        if let Err(error) = self.store.queue_activation(record.clone(), retain_since) {
            let dropped = self.counters.dropped_record();
            self.warn("activation record dropped", dropped, &error);
        }
    }

    /// Counts a failed store operation and reports it (WARN, rate-limited).
    fn store_failed(&self, operation: &str, error: &StoreError) {
        let total = self.counters.store_error();
        self.warn(operation, total, error);
    }

    #[cfg_attr(
        not(feature = "tracing"),
        allow(clippy::unused_self, reason = "logs only with the tracing feature")
    )]
    fn warn(&self, what: &str, total: u64, error: &StoreError) {
        #[cfg(feature = "tracing")]
        {
            #[allow(
                clippy::disallowed_methods,
                reason = "paces log lines only; no decision reads this clock"
            )]
            let now = std::time::Instant::now();
            if let crate::log_limit::Admit::Yes { suppressed } = self.store_warnings.admit(now) {
                tracing::warn!(
                    target: "kms_activation::store",
                    total,
                    suppressed,
                    "store failure: {what}: {error}"
                );
            }
        }
        #[cfg(not(feature = "tracing"))]
        let _ = (what, total, error);
    }
}

/// Sends `reply` for `request` on `conn`. An answer the wire cannot carry
/// (impossible with validated ePIDs) is turned into a refusal.
fn reply<R: RandomSource + ?Sized>(
    conn: &mut HostConnection,
    request: &RequestEvent,
    reply: Result<Answer, HResult>,
    rng: &mut R,
) {
    let mut rng = rng;
    let sent = match reply {
        Ok(answer) => conn.answer(request.id, answer, &mut rng),
        Err(hresult) => conn.refuse(request.id, hresult),
    };
    if sent.is_err() {
        let _ = conn.refuse(request.id, HResult::INVALID_DATA);
    }
}

/// Activation lines written at most per 10 s: a flood of requests does not
/// flood the log (the first line after a spell says how many were dropped).
#[cfg(feature = "tracing")]
static ACTIVATION_LINES: crate::log_limit::LogLimit =
    crate::log_limit::LogLimit::new(std::time::Duration::from_secs(10), 100);

#[cfg(feature = "tracing")]
#[expect(
    clippy::disallowed_methods,
    reason = "the rate limit of a log line reads the monotonic clock"
)]
fn emit_tracing(record: &ActivationRecord) {
    if !tracing::enabled!(target: "kms_activation::activation", tracing::Level::INFO) {
        return;
    }
    let crate::log_limit::Admit::Yes { suppressed } =
        ACTIVATION_LINES.admit(std::time::Instant::now())
    else {
        return;
    };
    tracing::info!(
        target: "kms_activation::activation",
        suppressed,
        peer = record.peer.map(tracing::field::display),
        connection = record.connection_id,
        protocol = %record.protocol,
        n_policy = record.n_policy,
        workstation = %record.workstation,
        cmid = %record.cmid,
        client_time = %record.client_time,
        virtual_machine = record.virtual_machine,
        license_status = u32::from(record.license_status),
        minutes_to_expiry = record.minutes_to_expiry,
        sku_id = %record.sku_id,
        sku = record.sku_name().unwrap_or("unknown"),
        count = record.count,
        result = %format_args!("{:#}", record.result),
        activates = record.activates(),
        "activation request processed"
    );
}

/// Ranks CSVLKs covering the same KMS ID: its own keys first, then
/// production keys, then general keys before Azure-only ones, then the most
/// recent release.
fn preference(csvlk: &Csvlk, kms_id: Uuid) -> (bool, bool, bool, Option<chrono::NaiveDate>) {
    (
        csvlk.is_own_key_of(kms_id),
        !csvlk.is_lab() && !csvlk.is_preview(),
        !csvlk.is_azure_only(),
        csvlk.release_date(),
    )
}

/// The catalog's RTM server builds, for error messages.
fn server_builds() -> String {
    let builds: Vec<String> = product::builds()
        .iter()
        .filter(|b| b.is_usable_for_epid())
        .map(|b| b.build().to_string())
        .collect();
    builds.join(", ")
}

fn duration_ticks(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos() / 100).unwrap_or(u64::MAX)
}

/// Resolves the held CSVLKs and their candidate ePIDs: `(csvlk, ePID,
/// configured)`.
fn prepare<R: RandomSource + ?Sized>(
    config: &KmsHostConfig,
    now: FileTime,
    rng: &mut R,
) -> Result<Vec<(&'static Csvlk, String, bool)>, KmsHostError> {
    let today: DateTime<Utc> = now.to_datetime().ok_or(KmsHostError::BadTime(now))?;
    let build = product::build(config.host_build)
        .ok_or(KmsHostError::UnknownHostBuild(config.host_build))?;
    let explicit = config.csvlks.is_some();
    let held: Vec<&'static Csvlk> = match &config.csvlks {
        Some(ids) => ids
            .iter()
            .map(|&id| product::csvlk(id).ok_or(KmsHostError::UnknownCsvlk(id)))
            .collect::<Result<_, _>>()?,
        None => product::csvlks()
            .iter()
            .filter(|c| c.id().is_some() && c.group_id().is_some() && c.key_ids().is_some())
            .collect(),
    };
    if held.is_empty() {
        return Err(KmsHostError::NoCsvlk);
    }
    let mut given: HashMap<usize, String> = HashMap::new();
    for text in &config.epids {
        let parsed = Epid::parse(text).map_err(|error| KmsHostError::BadEpid {
            epid: text.clone(),
            error,
        })?;
        let mut matched = false;
        for (index, csvlk) in held.iter().enumerate() {
            let same_range = csvlk.group_id() == Some(parsed.group_id())
                && csvlk.key_ids().is_some_and(|r| r.contains(parsed.key_id()));
            if !same_range {
                continue;
            }
            let problems = parsed.problems_for(csvlk, today);
            if !problems.is_empty() {
                return Err(KmsHostError::ImplausibleEpid {
                    epid: text.clone(),
                    csvlk: csvlk.name(),
                    problems,
                });
            }
            given.insert(index, parsed.to_string());
            matched = true;
        }
        if !matched {
            return Err(KmsHostError::EpidForNoHeldCsvlk { epid: text.clone() });
        }
    }
    let mut out = Vec::with_capacity(held.len());
    for (index, csvlk) in held.into_iter().enumerate() {
        if let Some(epid) = given.remove(&index) {
            out.push((csvlk, epid, true));
            continue;
        }
        match epid::generate(csvlk, config.host_build, today, rng) {
            Ok(epid) => out.push((csvlk, epid.to_string(), false)),
            Err(error) if explicit => {
                return Err(KmsHostError::Generate {
                    csvlk: csvlk.name(),
                    error,
                });
            }
            // A catalog key that cannot be given a plausible ePID (released
            // after `now`, or a server key on a client build) is left out of
            // the default set.
            Err(_) => {}
        }
    }
    if out.is_empty() {
        return Err(KmsHostError::NoCsvlkForBuild {
            build: build.build(),
            name: build.name(),
        });
    }
    Ok(out)
}
