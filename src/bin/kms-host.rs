//! kms-host: a KMS host on the tokio transport, with `KmsHost`'s policy.
//!
//! ```text
//! cargo run --release --features cli --bin kms-host                 # 127.0.0.1:1688 and [::1]:1688
//! cargo run --release --features cli --bin kms-host -- --listen 0.0.0.0:1688 --admin 127.0.0.1:9688
//! vlmcs -v 127.0.0.1:1688                                # a client, from the vlmcsd project
//! ```
//!
//! Genuine counting by default (each application's count is the number of
//! distinct clients seen in 30 days); `--count fixed:N` or `--count
//! twice-n` for emulator behaviour. One log line per activation on stderr,
//! at most 100 per 10 s, and connection events at most 20 per 10 s of each
//! kind, so that no client can flood the log (`RUST_LOG` sets the level,
//! `info` by default; `RUST_LOG=warn` for load tests); statistics on stdout
//! at SIGHUP and at shutdown; Ctrl-C or SIGTERM drains connections
//! gracefully, and the host exits within `--grace` and a second whatever
//! its store does. At start the soft limit of open files is raised to the
//! hard one, and connections are capped below it. Running a KMS host does
//! not license the software it activates.
//!
//! Exit status: see [`EXIT_STATUS`].

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kms_activation::host::store::{
    CountStore, MemoryStore, PostgresOptions, PostgresStore, SqliteStore, SqliteSync,
};
use kms_activation::host::{
    CidrAllowList, CountPolicy, HostConfig, KmsHost, KmsHostConfig, MaxClients, ProductAllowList,
    Statistics,
};
use kms_activation::message::Hwid;
use kms_activation::transport::tokio::Server;
use kms_activation::transport::{
    LogObserver, NoObserver, Observer, ServerConfig, ServerLimits, bind,
};
use kms_activation::{Epid, FileTime, OsRandom, Uuid, product};
use tokio::sync::watch;

#[path = "kms-host/admin.rs"]
mod admin;
#[path = "kms-host/dns_publish.rs"]
mod dns_publish;
#[path = "kms-host/sqlite_spec.rs"]
mod sqlite_spec;

/// The exit statuses, as `--help` and the README state them.
const EXIT_STATUS: &str = "Exit status:
  0  stopped by Ctrl-C or SIGTERM after draining its connections
  1  could not run: an address to listen on is taken, the store is
     unreachable, the host refused its configuration (an ePID or build it
     cannot use), or the server failed
  2  a bad argument (the value and what is wrong with it on stderr)";

#[derive(Debug, Parser)]
#[command(about = "A KMS host (tokio transport, KmsHost policy)", after_help = EXIT_STATUS)]
struct Args {
    /// Address to listen on, HOST:PORT (a name resolves to each of its
    /// addresses); repeat for several [default: 127.0.0.1:1688, and
    /// `[::1]:1688` when the machine has IPv6].
    #[arg(long = "listen", value_name = "ADDR", value_parser = resolve_address)]
    listen: Vec<Addresses>,
    /// Where counts, ePIDs and the activation log live: memory,
    /// `sqlite:FILE[?sync=full|normal]` or `postgres://USER@HOST/DB`.
    /// `sync=full` (the default) `fsync`s every commit: visits survive a
    /// power loss; `sync=normal` survives a killed process, not a power
    /// loss.
    #[arg(long, default_value = "memory", value_name = "STORE")]
    store: StoreSpec,
    /// With a `postgres://` store: verify the database's TLS certificate
    /// against the CA certificate(s) in this PEM file instead of the
    /// system's roots. TLS itself follows the URL's `sslmode`
    /// (`disable`, `prefer` as default, `require`, which verifies).
    #[arg(long, value_name = "FILE")]
    postgres_ca: Option<PathBuf>,
    /// An ePID to answer with for the CSVLK it belongs to; repeatable
    /// [default: generated once per CSVLK and kept in the store].
    #[arg(long = "epid", value_name = "EPID")]
    epids: Vec<String>,
    /// Hardware ID sent in V6 responses, 16 hex digits.
    #[arg(long)]
    hwid: Option<Hwid>,
    /// Windows build that generated ePIDs name [default: 26100]; a Windows
    /// Server key is never given a client build.
    #[arg(long, value_name = "BUILD", value_parser = parse_host_build)]
    host_build: Option<u32>,
    /// Hold only this host key (CSVLK), by ID or name (an exact name wins
    /// over a partial one); repeatable [default: every key of the catalog].
    /// A real host holds one key per product family: `kms-catalog --csvlks`
    /// lists the keys and what each activates.
    #[arg(long = "csvlk", value_name = "NAME-OR-ID", value_parser = parse_csvlk)]
    csvlks: Vec<Uuid>,
    /// Minutes a client waits before retrying a failed activation.
    #[arg(long, default_value_t = 120, value_name = "MINUTES")]
    activation_interval: u32,
    /// Minutes between renewals of an activated client.
    #[arg(long, default_value_t = 10_080, value_name = "MINUTES")]
    renewal_interval: u32,
    /// How the count is arrived at: genuine, fixed:N or twice-n.
    #[arg(long, default_value = "genuine", value_name = "POLICY")]
    count: CountSpec,
    /// Client clock skew tolerated, in minutes, or off.
    #[arg(long, default_value = "240", value_name = "MINUTES|off")]
    skew: SkewSpec,
    /// Only answer clients from these networks (CIDR, comma-separated or
    /// repeated).
    #[arg(long = "allow", value_name = "CIDR", value_parser = parse_networks)]
    allow: Vec<String>,
    /// Only activate these products, comma-separated: SKU IDs or KMS IDs,
    /// GVLKs, or names (a product group such as "Windows Server 2022", or an
    /// edition such as "windows 10/11 enterprise").
    #[arg(long, value_delimiter = ',', value_name = "PRODUCT,…", value_parser = parse_product)]
    products: Vec<Uuid>,
    /// Count at most this many clients per application (at least 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_clients: Option<u64>,
    /// Refuse NDR64 (behave like a Windows 7 / Server 2008 R2 host).
    #[arg(long)]
    no_ndr64: bool,
    /// Do not acknowledge bind-time feature negotiation.
    #[arg(long)]
    no_btfn: bool,
    /// Connections held at once (the oldest idle one is closed at the cap).
    #[arg(long, default_value_t = ServerLimits::default().max_connections, value_name = "N", value_parser = positive_usize)]
    max_connections: usize,
    /// Seconds a connection may wait for its next request.
    #[arg(long, default_value_t = 30, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Seconds a request may take to arrive whole.
    #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pdu_timeout: u64,
    /// Requests answered per connection before it is closed.
    #[arg(long, default_value_t = ServerLimits::default().max_requests_per_connection, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_requests: u64,
    /// Seconds exchanges in flight get to finish at shutdown.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    grace: u64,
    /// Serve the admin endpoint at `http://ADDR/`: health, readiness,
    /// metrics, status, clients, activation log, dashboard. A non-loopback
    /// address needs `--admin-token-file`. `--admin` alone: 127.0.0.1:9688.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9688")]
    admin: Option<SocketAddr>,
    /// A file holding the bearer token the admin endpoint requires on every
    /// route but /livez and /readyz.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Deprecated alias of `--admin` (metrics at `http://ADDR/metrics`;
    /// HOST:PORT, a name resolves to its first address).
    #[arg(long, value_name = "ADDR", value_parser = resolve_address, conflicts_with = "admin")]
    metrics: Option<Addresses>,
    /// Runtime worker threads [default: one per CPU].
    #[arg(long, value_name = "N", value_parser = positive_usize)]
    threads: Option<usize>,
    #[command(flatten)]
    dns: dns_publish::DnsArgs,
}

/// The addresses one `--listen` or `--metrics` value resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Addresses(Vec<SocketAddr>);

/// An address literal, or HOST:PORT resolved by the system resolver
/// (`localhost:1688`).
fn resolve_address(text: &str) -> Result<Addresses, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Addresses(vec![addr]));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("expected HOST:PORT, e.g. 0.0.0.0:1688 or localhost:1688".into());
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err("expected HOST:PORT with a port from 0 to 65535".into());
    }
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    Ok(Addresses(addrs))
}

/// A count of at least one.
fn positive_usize(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Networks, comma-separated; the one that does not parse is named.
fn parse_networks(text: &str) -> Result<String, String> {
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        part.parse::<CidrAllowList>().map_err(|e| {
            format!("{part:?} is not a network (CIDR such as 10.0.0.0/8, or an address): {e}")
        })?;
    }
    Ok(text.to_owned())
}

/// Refuses what clap cannot see alone: an ePID that is not one, and two
/// ePIDs for the same CSVLK (the host answers with one per CSVLK).
fn validate(args: &Args) -> Result<(), String> {
    let mut claimed: HashMap<&'static str, &str> = HashMap::new();
    for text in &args.epids {
        let epid = Epid::parse(text).map_err(|e| format!("--epid {text}: not an ePID: {e}"))?;
        let csvlks = product::csvlks().iter().filter(|csvlk| {
            csvlk.group_id() == Some(epid.group_id())
                && csvlk
                    .key_ids()
                    .is_some_and(|keys| keys.contains(epid.key_id()))
        });
        for csvlk in csvlks {
            if let Some(first) = claimed.insert(csvlk.name(), text) {
                return Err(if first == text {
                    format!("--epid {text} is given twice")
                } else {
                    format!(
                        "--epid {first} and --epid {text} are both for {}; give one ePID per CSVLK",
                        csvlk.name()
                    )
                });
            }
        }
    }
    if args.postgres_ca.is_some() && !matches!(args.store, StoreSpec::Postgres(_)) {
        return Err("--postgres-ca needs a postgres:// store".into());
    }
    Ok(())
}

#[derive(Clone, PartialEq, Eq)]
enum StoreSpec {
    Memory,
    Sqlite(PathBuf, SqliteSync),
    Postgres(String),
}

/// Never shows a PostgreSQL password (the "ready" line logs the store).
impl std::fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory => f.write_str("Memory"),
            Self::Sqlite(path, sync) => f.debug_tuple("Sqlite").field(path).field(sync).finish(),
            Self::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&kms_activation::host::store::redact_url(url))
                .finish(),
        }
    }
}

impl FromStr for StoreSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "memory" {
            Ok(Self::Memory)
        } else if let Some(spec) = s.strip_prefix("sqlite:") {
            let (path, sync) = sqlite_spec::parse(spec)?;
            Ok(Self::Sqlite(path, sync))
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(Self::Postgres(s.to_owned()))
        } else {
            Err(format!(
                "unknown store {s:?}: expected memory, sqlite:FILE or postgres://…"
            ))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CountSpec(CountPolicy);

impl FromStr for CountSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "genuine" => Ok(Self(CountPolicy::Genuine)),
            "twice-n" => Ok(Self(CountPolicy::TwiceNPolicy)),
            _ => s
                .strip_prefix("fixed:")
                .and_then(|n| n.parse().ok())
                .map(|n| Self(CountPolicy::Fixed(n)))
                .ok_or_else(|| {
                    format!("unknown count policy {s:?}: expected genuine, fixed:N or twice-n")
                }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SkewSpec(Option<Duration>);

impl FromStr for SkewSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "off" {
            return Ok(Self(None));
        }
        s.parse::<u64>()
            .map(|minutes| Self(Some(Duration::from_secs(minutes * 60))))
            .map_err(|_| format!("--skew takes minutes or off, not {s:?}"))
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the example's main loop is where the wall clock enters"
)]
fn now() -> FileTime {
    FileTime::try_from(std::time::SystemTime::now()).unwrap_or_default()
}

/// How long the statistics (at SIGHUP, at shutdown) may take: a hung
/// store costs a warning, not a hung host.
const STATISTICS_TIMEOUT: Duration = Duration::from_secs(2);

/// How long past `--grace` the host may take to stop, whatever its store
/// does: the server's forced close and flush, the final statistics.
const STOP_MARGIN: Duration = Duration::from_secs(1);

/// File descriptors kept for everything but client connections: listeners,
/// the runtime, the store's connections, metrics scrapes, stdio.
const RESERVED_DESCRIPTORS: u64 = 64;

/// Raises the soft limit of open files to the hard one and returns the
/// connection cap that fits under it: `requested`, or fewer. Says so in
/// the log.
fn descriptor_cap(requested: usize) -> usize {
    #[cfg(unix)]
    {
        let before = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft);
        let limit = match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(limit) => limit,
            Err(e) => {
                tracing::warn!("cannot read or raise the open-file limit: {e}");
                match before {
                    Ok(soft) => soft,
                    Err(_) => return requested,
                }
            }
        };
        if let Ok(before) = before
            && before < limit
        {
            tracing::info!(from = before, to = limit, "raised the open-file limit");
        }
        // Half the descriptors at most go to the reserve, so a tiny limit
        // still leaves room for clients.
        let reserve = RESERVED_DESCRIPTORS.min(limit / 2);
        let fits = usize::try_from(limit.saturating_sub(reserve))
            .unwrap_or(usize::MAX)
            .max(1);
        if fits < requested {
            tracing::info!(
                open_files = limit,
                max_connections = fits,
                "connections capped below the open-file limit (was {requested})"
            );
            return fits;
        }
        requested
    }
    #[cfg(not(unix))]
    {
        requested
    }
}

/// `--host-build`: a Windows build of the catalog.
fn parse_host_build(text: &str) -> Result<u32, String> {
    let build: u32 = text
        .trim()
        .parse()
        .map_err(|e| format!("{text:?} is not a build number: {e}"))?;
    if product::build(build).is_none() {
        let known: Vec<String> = product::builds()
            .iter()
            .filter(|b| b.is_usable_for_epid())
            .map(|b| format!("{} ({})", b.build(), b.name()))
            .collect();
        return Err(format!(
            "unknown host build {build}: not a Windows build of the catalog; server builds: {}",
            known.join(", ")
        ));
    }
    Ok(build)
}

/// `--csvlk`: a host key by ID or name.
fn parse_csvlk(text: &str) -> Result<Uuid, String> {
    let csvlk = product::find_csvlk(text).map_err(|e| e.to_string())?;
    csvlk
        .id()
        .ok_or_else(|| format!("{} has no ID and cannot be held", csvlk.name()))
}

/// `--products`: a KMS ID or SKU ID, a GVLK or a name.
fn parse_product(text: &str) -> Result<Uuid, String> {
    match product::find_product(text) {
        Ok(found) => Ok(found.id()),
        Err(product::SkuLookupError::Ambiguous { query, candidates }) => {
            let names: Vec<&str> = candidates.iter().take(8).map(|s| s.name()).collect();
            Err(format!(
                "{} products match {query:?}: {}{}; give a longer name or an ID",
                candidates.len(),
                names.join("; "),
                if candidates.len() > names.len() {
                    "; …"
                } else {
                    ""
                }
            ))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn host_config(args: &Args) -> KmsHostConfig {
    let mut config = KmsHostConfig::default();
    config
        .set_intervals(args.activation_interval, args.renewal_interval)
        .set_count_policy(args.count.0);
    if !args.csvlks.is_empty() {
        config.set_csvlks(args.csvlks.iter().copied());
    }
    if let Some(build) = args.host_build {
        config.set_host_build(build);
    }
    if let Some(hwid) = args.hwid {
        config.set_hwid(hwid);
    }
    for epid in &args.epids {
        config.add_epid(epid.clone());
    }
    config
}

fn server_config(args: &Args, port: u16) -> ServerConfig {
    let mut host = HostConfig::default();
    host.set_port(port)
        .set_ndr64(!args.no_ndr64)
        .set_btfn(!args.no_btfn)
        .set_max_clock_skew(args.skew.0);
    let limits = ServerLimits {
        max_connections: descriptor_cap(args.max_connections),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        pdu_timeout: Duration::from_secs(args.pdu_timeout),
        max_requests_per_connection: args.max_requests,
        shutdown_grace: Duration::from_secs(args.grace),
        ..ServerLimits::default()
    };
    ServerConfig::new(host, limits)
}

fn print_statistics(statistics: &Statistics) {
    println!(
        "requests: {} total, {} failed",
        statistics.total_requests, statistics.failed_requests
    );
    let names = [
        "unlicensed",
        "licensed",
        "initial grace",
        "out-of-tolerance grace",
        "non-genuine grace",
        "notification",
        "extended grace",
    ];
    for (name, n) in names.iter().zip(statistics.requests_by_license_status) {
        println!("  {name}: {n}");
    }
    println!("  other: {}", statistics.requests_other_status);
    for count in &statistics.counts {
        println!(
            "count {}: {} (clients {})",
            count.name().unwrap_or("unknown application"),
            count.current_count,
            count.clients
        );
    }
}

/// Waits for Ctrl-C or SIGTERM, printing statistics at each SIGHUP.
async fn signals<S: CountStore + 'static>(host: Arc<KmsHost<S>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut hup), Ok(mut term)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = term.recv() => return,
                _ = hup.recv() => {
                    // A stop signal during the statistics is not held up.
                    tokio::select! {
                        biased;
                        _ = tokio::signal::ctrl_c() => return,
                        _ = term.recv() => return,
                        () = statistics(&host, STATISTICS_TIMEOUT) => {}
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = host;
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Prints the host's statistics, unless the store does not give them
/// within `limit`.
async fn statistics<S: CountStore + 'static>(host: &KmsHost<S>, limit: Duration) {
    match tokio::time::timeout(limit, host.statistics(now())).await {
        Ok(Ok(statistics)) => print_statistics(&statistics),
        Ok(Err(e)) => tracing::warn!("statistics unavailable: {e}"),
        Err(_) => tracing::warn!("statistics unavailable: the store did not answer in time"),
    }
}

/// Every address `--listen` resolved to, each once; the default pair
/// without it.
fn listen_addresses(args: &Args) -> Vec<SocketAddr> {
    if args.listen.is_empty() {
        return vec![
            SocketAddr::from(([127, 0, 0, 1], 1688)),
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 1688)),
        ];
    }
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for addr in args.listen.iter().flat_map(|a| &a.0) {
        if !addrs.contains(addr) {
            addrs.push(*addr);
        }
    }
    addrs
}

/// Runs the host on `store` until a signal; generic over the store so that
/// every backend goes through the same code.
async fn run<S: CountStore + 'static>(args: Args, store: S) -> Result<(), String> {
    let admin = admin::prepare(&args)?;
    let addrs = listen_addresses(&args);
    let listeners = bind(&addrs).map_err(|e| format!("cannot listen on {addrs:?}: {e}"))?;
    let mut bound = Vec::new();
    for listener in &listeners {
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        bound.push(addr);
    }
    let port = bound.first().map_or(1688, SocketAddr::port);

    let mut host = KmsHost::start(host_config(&args), store, now(), &mut OsRandom)
        .await
        .map_err(|e| format!("cannot start the host: {e}"))?;
    if !args.allow.is_empty() {
        let list: CidrAllowList = args
            .allow
            .join(",")
            .parse()
            .map_err(|e| format!("--allow: {e}"))?;
        host = host.with_hook(list);
    }
    if !args.products.is_empty() {
        let list = args
            .products
            .iter()
            .fold(ProductAllowList::default(), |list, &id| {
                if product::kms_item(id).is_some() {
                    list.with_kms_id(id)
                } else {
                    list.with_sku(id)
                }
            });
        host = host.with_hook(list);
    }
    if let Some(max) = args.max_clients {
        host = host.with_hook(MaxClients(max));
    }
    for (csvlk, epid) in host.epids() {
        tracing::debug!(csvlk = csvlk.name(), %epid, "ePID");
    }
    let host = Arc::new(host);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let publisher = dns_publish::start(&args.dns, port, stopped(stop_rx.clone())).await?;
    let observer: Arc<dyn Observer> = match admin {
        Some(admin) => admin::start(
            admin,
            &host,
            &args,
            bound.clone(),
            dns_publish::publisher(&publisher),
            stopped(stop_rx.clone()),
        ),
        None => Arc::new((LogObserver::new(), NoObserver)),
    };

    tracing::info!(
        listen = ?bound,
        store = ?args.store,
        count = ?args.count.0,
        skew = ?args.skew.0,
        "kms-host ready"
    );
    let server = Server::new(Arc::clone(&host), server_config(&args, port)).with_observer(observer);
    let grace = Duration::from_secs(args.grace);
    let result = serve_and_stop(server, listeners, &host, grace).await;
    let _ = stop_tx.send(true);
    dns_publish::withdraw(publisher).await;
    result
}

/// Serves until a stop signal, then stops within `grace` and
/// [`STOP_MARGIN`] whatever the store does: draining, flushing and the
/// final statistics included.
async fn serve_and_stop<S: CountStore + 'static>(
    server: Server<Arc<KmsHost<S>>>,
    listeners: Vec<std::net::TcpListener>,
    host: &Arc<KmsHost<S>>,
    grace: Duration,
) -> Result<(), String> {
    let signalled = tokio::spawn(signals(Arc::clone(host)));
    // When the stop signal came, so that the whole stop has a deadline.
    let (stopping_tx, mut stopping) = watch::channel(None);
    let served = server.serve(listeners, async move {
        let _ = signalled.await;
        let deadline = tokio::time::Instant::now().checked_add(grace.saturating_add(STOP_MARGIN));
        let _ = stopping_tx.send(Some(deadline));
        tracing::info!("shutting down: draining connections");
    });
    let stop_by = async {
        match stopping.wait_for(Option::is_some).await.map(|at| *at) {
            Ok(Some(Some(deadline))) => tokio::time::sleep_until(deadline).await,
            _ => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        result = served => result.map_err(|e| format!("server: {e}")),
        () = stop_by => Err("server: connections or the store did not stop in time".to_owned()),
    };
    // The final statistics within what is left of the stop's deadline.
    let deadline = stopping.borrow().flatten();
    let left = deadline.map_or(STATISTICS_TIMEOUT, |deadline| {
        deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(STATISTICS_TIMEOUT)
    });
    statistics(host, left).await;
    result
}

async fn dispatch(args: Args) -> Result<(), String> {
    match args.store.clone() {
        StoreSpec::Memory => run(args, MemoryStore::default()).await,
        StoreSpec::Sqlite(path, sync) => {
            let store = SqliteStore::open_with(&path, sqlite_spec::options(sync))
                .map_err(|e| format!("--store sqlite:{}: {e}", path.display()))?;
            run(args, store).await
        }
        StoreSpec::Postgres(url) => {
            let mut options = PostgresOptions::default();
            if let Some(path) = &args.postgres_ca {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("--postgres-ca {}: {e}", path.display()))?;
                options = options.with_root_certificates(pem);
            }
            let store = PostgresStore::connect_with(&url, options)
                .await
                .map_err(|e| format!("--store postgres://…: {e}"))?;
            run(args, store).await
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = validate(&args) {
        eprintln!("kms-host: {e}");
        return ExitCode::from(2);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kms-host: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(args));
    // Tasks left (a scrape, a store's connection task) do not hold the exit up.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kms-host: {e}");
            ExitCode::FAILURE
        }
    }
}
