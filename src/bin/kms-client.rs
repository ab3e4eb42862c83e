//! A KMS client for probing hosts the way Windows and Office clients do
//! (`slmgr /ato`, `ospp.vbs /act`), with a verdict monitoring can read.
//!
//! ```text
//! kms-client                                   # 127.0.0.1:1688, Windows 10/11 Enterprise
//! kms-client kms.example.org                   # port 1688, as vlmcs assumes
//! kms-client 10.0.0.5:1700 --product "office ltsc professional plus 2021" -n 3
//! kms-client 127.0.0.1 --protocol 4 --no-ndr64 --no-btfn --json
//! kms-client 127.0.0.1 --charge 25             # 25 distinct CMIDs first, then the probe
//! kms-client .example.org                      # SRV discovery
//! kms-client --print-srv kms1.example.org:1688 # the SRV record that host should publish
//! ```
//!
//! The product (`--product`: a name, a SKU ID or a GVLK) comes from the
//! crate's catalog and is requested with its own default protocol version
//! unless `--protocol` says otherwise; an ambiguous name lists the
//! candidates. Each answer is judged as a real client would
//! ([`ActivationOutcome`]): activated, or the HRESULT it would show
//! (0xC004F038 when the count is below the product's threshold, the host's
//! refusal, 0xC004F074 when no host answered). The host's ePID is checked,
//! including whether its CSVLK activates the requested product.
//!
//! With `.DOMAIN` the hosts come from the `_vlmcs._tcp.DOMAIN` SRV records
//! (lowest priority first, weighted within a priority; `--random-order`
//! ignores priority and weight), the next host is tried when one refuses,
//! cannot be reached or times out, and the host that answered is reused for
//! the following requests unless `--no-host-caching`.
//!
//! `--load` turns the probe into a load generator for any KMS host: `-c`
//! concurrent workers, `--clients N` distinct machines drawn from `--seed`,
//! a product `--mix`, a new connection per activation or `--keepalive`,
//! `--rate` or as fast as possible, `--count` or `--duration`; every
//! response verified; activations/s, latency percentiles, outcomes by
//! HRESULT and errors by kind reported (`--json` for scripts). See the
//! `load` module.
//!
//! ```text
//! kms-client 127.0.0.1 --load -c 64 --clients 100000 --duration 30s
//! kms-client kms1 --load --keepalive --rate 500 --count 10000 --json \
//!     --mix "windows 10/11 enterprise=3,office ltsc professional plus 2021=1"
//! ```
//!
//! Exit status: see [`EXIT_STATUS`].
#![allow(
    rustdoc::broken_intra_doc_links,
    reason = "the argument docs are clap's --help text, where HOST[:PORT] is not a link"
)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use kms_activation::client::{
    ActivationOutcome, ClientConfig, ClientError, EpidCheck, FailedAttempt, KmsHostName,
    KmsLocator, LocatorConfig, MachineIdentity, ProductRequest, ProductRequestError, SrvSelection,
    srv_zone_line,
};
use kms_activation::license::LicenseTimeline;
use kms_activation::message::{MAX_WORKSTATION_LEN, RequestBody, Version};
use kms_activation::product::SkuLookupError;
use kms_activation::transport::Error as TransportError;
use kms_activation::transport::blocking::Client;
use kms_activation::{FileTime, HResult, OsRandom};
use serde::Serialize;

#[path = "kms-client/fleet.rs"]
mod fleet;
#[path = "kms-client/load.rs"]
mod load;
#[path = "kms-client/report.rs"]
mod report;
#[path = "kms-client/tally.rs"]
mod tally;

/// Exit status when a host accepted and never answered (with `--load`:
/// when any activation got no answer).
const EXIT_TIMEOUT: u8 = 3;

/// The exit statuses, as `--help` and the README state them.
const EXIT_STATUS: &str = "Exit status:
  0  every probe request was activated (the host's count reached the
     product's threshold: 25 for Windows clients, 5 for servers and Office)
  1  a request was not activated: refused by the host, the count below the
     threshold (0xC004F038), or no host reachable (0xC004F074); also a
     --charge request that failed so
  2  a bad argument (the value and what is wrong with it on stderr)
  3  a host accepted the connection and did not answer within --timeout
     (a probe or a --charge request)

With --load:
  0  every activation was answered with a verified response (S_OK), below
     the threshold or not
  1  the host refused some activations (an HRESULT other than S_OK), and
     every activation was answered
  2  a bad argument
  3  some activations got no answer: connect, timeout, protocol (a reply
     that failed verification), closed or io errors (counted by kind in the
     report, which is printed all the same)

Load (--load): activation i is sent by client i mod --clients (a CMID and
workstation name drawn from --seed, the same in every run) asking for its
product of the --mix; --protocol, --no-ndr64, --no-btfn and --timeout (per
exchange) apply. The report gives activations/s, latency percentiles of the
answered activations (from when each was due with --rate), outcomes by
HRESULT, errors by kind and the count the host reported, per product too.";

#[derive(Debug, Parser)]
#[command(
    about = "Probe KMS hosts as Windows and Office clients do",
    after_help = EXIT_STATUS
)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent command-line switches"
)]
struct Args {
    /// HOST[:PORT] (port 1688 when left out), or .DOMAIN for SRV discovery.
    #[arg(default_value = "127.0.0.1:1688")]
    target: String,
    /// Product to request: a name, a SKU ID or a GVLK.
    #[arg(long, default_value = "windows 10/11 enterprise")]
    product: String,
    /// Protocol major version (4, 5 or 6; default: the product's own).
    #[arg(long, value_parser = clap::value_parser!(u16).range(4..=6))]
    protocol: Option<u16>,
    /// Probe requests to send over one connection.
    #[arg(short = 'n', default_value_t = 1)]
    requests: u32,
    /// Send N requests with distinct CMIDs first, to bring a host to its
    /// threshold.
    #[arg(long, value_name = "N", default_value_t = 0)]
    charge: u32,
    /// Do not offer NDR64.
    #[arg(long)]
    no_ndr64: bool,
    /// Do not offer bind-time feature negotiation.
    #[arg(long)]
    no_btfn: bool,
    /// Workstation name to send (at most 63 characters, as the request's
    /// field holds).
    #[arg(long, default_value = "kms-client.example.org", value_parser = workstation_name)]
    workstation: String,
    /// Seconds to wait for the host at each step.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// One JSON object per response on stdout (with --load: one object,
    /// the run's report).
    #[arg(long)]
    json: bool,
    /// SRV discovery: ignore priority and weight and try hosts in random order.
    #[arg(long)]
    random_order: bool,
    /// SRV discovery: do not reuse the host that answered.
    #[arg(long)]
    no_host_caching: bool,
    /// SRV discovery: ask this DNS server (IP:PORT) instead of the system's.
    #[arg(long, value_name = "IP:PORT")]
    dns_server: Option<SocketAddr>,
    /// Print the SRV record HOST[:PORT] should publish (in .DOMAIN, or the
    /// domain of its name) and exit.
    #[arg(long, value_name = "HOST[:PORT]")]
    print_srv: Option<String>,
    #[command(flatten)]
    load: load::LoadArgs,
}

/// One line of `--json` output.
#[derive(Debug, Serialize)]
struct Report {
    host: String,
    product: &'static str,
    sku_id: String,
    protocol: String,
    epid: Option<String>,
    epid_valid: Option<bool>,
    hwid: Option<String>,
    count: Option<u32>,
    activation_interval: Option<u32>,
    renewal_interval: Option<u32>,
    latency_ms: Option<u64>,
    outcome: &'static str,
    hresult: String,
    description: String,
}

/// Why one attempt at one host gave no verified response.
#[derive(Debug)]
enum AttemptError {
    /// The host answered with an HRESULT.
    Refused(HResult),
    /// No connection, or the connection broke.
    Unreachable(String),
    /// Connected, but nothing came back in time.
    TimedOut(u64),
}

/// A connection to one host.
struct Session {
    host: KmsHostName,
    addresses: Vec<SocketAddr>,
    client: Client,
    answered: u32,
}

struct Probe {
    args: Args,
    product: ProductRequest,
    config: ClientConfig,
    timeout: Duration,
    rng: OsRandom,
    session: Option<Session>,
}

#[expect(
    clippy::disallowed_methods,
    reason = "the client tool measures latency"
)]
fn monotonic_clock() -> Instant {
    Instant::now()
}

#[expect(
    clippy::disallowed_methods,
    reason = "the client tool reads the wall clock"
)]
fn wall_clock() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

impl Probe {
    /// The request `machine` sends now: a fresh installation in its grace
    /// period, as the timeline of the product's licence policy says.
    fn request(&self, machine: &MachineIdentity) -> RequestBody {
        let now = wall_clock();
        let timeline = LicenseTimeline::new(now, self.product.license_policy());
        let time = FileTime::try_from(now)
            .unwrap_or_default()
            .truncated_to_seconds();
        self.product.build(machine, &timeline.state_at(now), time)
    }

    /// Opens a connection to the first of `addresses` that accepts within
    /// the timeout, with the library's blocking client.
    fn connect(
        &self,
        host: &KmsHostName,
        addresses: &[SocketAddr],
    ) -> Result<Session, AttemptError> {
        let mut last = format!("{host} has no address");
        for address in addresses {
            match Client::connect(address, &self.config, self.timeout) {
                Ok(client) => {
                    return Ok(Session {
                        host: host.clone(),
                        addresses: addresses.to_vec(),
                        client,
                        answered: 0,
                    });
                }
                Err(TransportError::Timeout) => {
                    last = format!("connect {address}: no answer in {} s", self.args.timeout);
                }
                Err(e) => last = format!("connect {address}: {e}"),
            }
        }
        Err(AttemptError::Unreachable(last))
    }

    /// Sends `request` to `host` (reusing the open connection to it) and
    /// waits for the answer; reconnects once when the host closed the
    /// connection after an earlier request, as py-kms does.
    fn ask(
        &mut self,
        host: &KmsHostName,
        addresses: &[SocketAddr],
        request: &RequestBody,
    ) -> Result<(ActivationOutcome, Duration), AttemptError> {
        if self.session.as_ref().is_some_and(|s| s.host != *host) {
            self.session = None;
        }
        if self.session.is_none() {
            self.session = Some(self.connect(host, addresses)?);
        }
        match self.exchange(request) {
            Err(AttemptError::Unreachable(why))
                if self.session.as_ref().is_some_and(|s| s.answered > 0) =>
            {
                eprintln!(
                    "kms-client: {host} closed the connection after a request ({why}); reconnecting"
                );
                let addresses = self.session.take().map(|s| s.addresses).unwrap_or_default();
                self.session = Some(self.connect(host, &addresses)?);
                self.exchange(request)
            }
            other => other,
        }
    }

    /// One request over the open session, bounded as a whole by the
    /// timeout (the library client's per-exchange deadline: a host that
    /// dribbles its reply cannot hold the probe longer).
    fn exchange(
        &mut self,
        request: &RequestBody,
    ) -> Result<(ActivationOutcome, Duration), AttemptError> {
        let timeout_secs = self.args.timeout;
        let Some(session) = self.session.as_mut() else {
            return Err(AttemptError::Unreachable("no connection".into()));
        };
        let started = monotonic_clock();
        let outcome = match session.client.activate(request.clone()) {
            Ok(outcome) => outcome.conclusion(request, wall_clock()),
            Err(TransportError::Timeout) => return Err(AttemptError::TimedOut(timeout_secs)),
            Err(TransportError::Closed) => {
                return Err(AttemptError::Unreachable(
                    "the host closed the connection".into(),
                ));
            }
            Err(TransportError::Client(e @ ClientError::Encode(_))) => {
                return Err(AttemptError::Unreachable(e.to_string()));
            }
            Err(TransportError::Client(e)) => {
                return Err(AttemptError::Unreachable(format!("bad reply: {e}")));
            }
            Err(e) => return Err(AttemptError::Unreachable(e.to_string())),
        };
        session.answered += 1;
        let latency = started.elapsed();
        match outcome.response() {
            Some(_) => Ok((outcome, latency)),
            None => Err(AttemptError::Refused(outcome.hresult())),
        }
    }

    /// Asks the hosts the target names until one answers `request`.
    fn activate(
        &mut self,
        locator: &mut KmsLocator,
        request: &RequestBody,
    ) -> Result<(KmsHostName, ActivationOutcome, Duration), Vec<FailedAttempt<AttemptError>>> {
        let result = if self.is_srv() {
            self.activate_srv(locator, request)
        } else {
            let hosts = locator.candidates(&[], &mut self.rng);
            locator.try_hosts(hosts, |host| {
                let addresses = resolve(host)?;
                self.ask(host, &addresses, request)
            })
        };
        let (host, (outcome, latency), failures) = result?;
        for failure in &failures {
            eprintln!(
                "kms-client: {}: {}; trying the next host",
                host_label(&failure.host),
                describe(&failure.error)
            );
        }
        Ok((host, outcome, latency))
    }

    fn is_srv(&self) -> bool {
        self.args.target.starts_with('.')
    }

    #[cfg(feature = "dns")]
    #[expect(clippy::type_complexity, reason = "mirrors try_hosts")]
    fn activate_srv(
        &mut self,
        locator: &mut KmsLocator,
        request: &RequestBody,
    ) -> Result<
        (
            KmsHostName,
            (ActivationOutcome, Duration),
            Vec<FailedAttempt<AttemptError>>,
        ),
        Vec<FailedAttempt<AttemptError>>,
    > {
        use kms_activation::client::discovery::{
            AttemptFailure, BlockingSrvResolver, DnsSettings, activate_through,
        };
        let mut settings = DnsSettings::system().with_timeout(self.timeout, 2);
        if let Some(server) = self.args.dns_server {
            settings = settings.with_name_servers([server]);
        }
        let resolver = BlockingSrvResolver::new(&settings).map_err(|e| {
            vec![FailedAttempt {
                host: KmsHostName::new(self.args.target.clone(), 0),
                error: AttemptError::Unreachable(e.to_string()),
            }]
        })?;
        let mut rng = OsRandom;
        let result = activate_through(
            locator,
            &resolver,
            &mut rng,
            |e| AttemptError::Unreachable(e.to_string()),
            |host, addresses| self.ask(host, addresses, request),
        );
        result.map_err(|failure| match failure {
            AttemptFailure::AllHostsFailed(failures) => failures,
            AttemptFailure::Discovery(e) => {
                eprintln!("kms-client: discovery failed: {e} ({:#})", e.hresult());
                vec![FailedAttempt {
                    host: KmsHostName::new(self.args.target.clone(), 0),
                    error: AttemptError::Unreachable(e.to_string()),
                }]
            }
            _ => Vec::new(),
        })
    }

    #[cfg(not(feature = "dns"))]
    #[expect(clippy::type_complexity, reason = "mirrors try_hosts")]
    fn activate_srv(
        &mut self,
        _locator: &mut KmsLocator,
        _request: &RequestBody,
    ) -> Result<
        (
            KmsHostName,
            (ActivationOutcome, Duration),
            Vec<FailedAttempt<AttemptError>>,
        ),
        Vec<FailedAttempt<AttemptError>>,
    > {
        Err(vec![FailedAttempt {
            host: KmsHostName::new(self.args.target.clone(), 0),
            error: AttemptError::Unreachable("SRV discovery needs the `dns` feature".into()),
        }])
    }
}

/// A workstation name the request can carry: at most
/// [`MAX_WORKSTATION_LEN`] UTF-16 units and no NUL.
fn workstation_name(text: &str) -> Result<String, String> {
    let len = text.encode_utf16().count();
    if len > MAX_WORKSTATION_LEN {
        return Err(format!(
            "{len} characters (UTF-16 units); the request holds at most {MAX_WORKSTATION_LEN}"
        ));
    }
    if text.contains('\0') {
        return Err("contains a NUL character".into());
    }
    Ok(text.to_owned())
}

/// A host as the messages name it: `HOST:PORT`, or the bare name when there
/// is no port (the `.DOMAIN` of SRV discovery).
fn host_label(host: &KmsHostName) -> String {
    if host.port == 0 {
        host.host.clone()
    } else {
        host.to_string()
    }
}

fn resolve(host: &KmsHostName) -> Result<Vec<SocketAddr>, AttemptError> {
    (host.host.as_str(), host.port)
        .to_socket_addrs()
        .map(Iterator::collect)
        .map_err(|e| AttemptError::Unreachable(format!("cannot resolve {}: {e}", host.host)))
}

fn describe(error: &AttemptError) -> String {
    match error {
        AttemptError::Refused(h) => format!("refused with {h}"),
        AttemptError::Unreachable(why) => why.clone(),
        AttemptError::TimedOut(secs) => format!("timed out after {secs} s"),
    }
}

/// The locator the target calls for.
fn locator(args: &Args) -> Result<KmsLocator, String> {
    let config = if let Some(domain) = args.target.strip_prefix('.') {
        if domain.is_empty() {
            return Err("`.` needs a domain, e.g. .example.org".into());
        }
        let selection = if args.random_order {
            SrvSelection::Random
        } else {
            SrvSelection::PriorityWeight
        };
        LocatorConfig::discover(domain)
            .with_caching(!args.no_host_caching)
            .with_selection(selection)
    } else {
        let host = KmsHostName::parse(&args.target)
            .ok_or_else(|| format!("{:?} is not HOST[:PORT]", args.target))?;
        LocatorConfig::fixed(host)
    };
    Ok(KmsLocator::new(config))
}

fn print_srv(args: &Args, text: &str) -> ExitCode {
    let Some(host) = KmsHostName::parse(text) else {
        eprintln!("kms-client: {text:?} is not HOST[:PORT]");
        return ExitCode::from(2);
    };
    let domain = match args.target.strip_prefix('.') {
        Some(domain) => domain.to_owned(),
        None => match host.host.split_once('.') {
            Some((_, domain)) if !domain.is_empty() => domain.to_owned(),
            _ => {
                eprintln!(
                    "kms-client: {} has no domain; give one as .DOMAIN",
                    host.host
                );
                return ExitCode::from(2);
            }
        },
    };
    println!(
        "{}",
        srv_zone_line(&domain, &host.host, host.port, 0, 0, 3600)
    );
    ExitCode::SUCCESS
}

fn product(args: &Args) -> Result<ProductRequest, String> {
    resolve_product(&args.product, args.protocol)
}

/// The product `text` names (a name, a SKU ID or a GVLK), spoken in
/// protocol `protocol` or its own default; an ambiguous name lists the
/// candidates.
fn resolve_product(text: &str, protocol: Option<u16>) -> Result<ProductRequest, String> {
    let product = ProductRequest::for_product(text).map_err(|e| match e {
        ProductRequestError::Lookup(SkuLookupError::Ambiguous { query, candidates }) => {
            let mut text = format!(
                "{} products match {query:?}; name one of them:",
                candidates.len()
            );
            for sku in candidates.iter().take(40) {
                let _ = write!(text, "\n  {:<60} {}", sku.name(), sku.id());
            }
            text
        }
        other => other.to_string(),
    })?;
    Ok(match protocol {
        Some(major) => product.with_version(Version::new(major, 0)),
        None => product,
    })
}

fn report(
    args: &Args,
    probe: &Probe,
    host: &str,
    outcome: &ActivationOutcome,
    latency: Option<Duration>,
) -> bool {
    let response = outcome.response();
    let line = Report {
        host: host.to_owned(),
        product: probe.product.sku().name(),
        sku_id: probe.product.sku().id().to_string(),
        protocol: probe.product.version().to_string(),
        epid: response.map(|r| r.epid.clone()),
        epid_valid: response.map(|r| r.epid_check.is_valid()),
        hwid: response.and_then(|r| r.hwid).map(|h| h.to_string()),
        count: response.map(|r| r.count),
        activation_interval: response.map(|r| r.activation_interval),
        renewal_interval: response.map(|r| r.renewal_interval),
        latency_ms: latency.map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX)),
        outcome: if outcome.is_activated() {
            "activated"
        } else {
            "failed"
        },
        hresult: format!("{:#}", outcome.hresult()),
        description: outcome.description(),
    };
    let text = if args.json {
        serde_json::to_string(&line).unwrap_or_default()
    } else {
        let mut text = format!(
            "{host}: {} ({}) protocol {}: {} {}: {}",
            line.product, line.sku_id, line.protocol, line.outcome, line.hresult, line.description
        );
        if let Some(r) = response {
            let _ = write!(
                text,
                "\n  ePID {} ({})\n  HWID {}  count {}  intervals {} / {} min  {} ms",
                r.epid,
                match &r.epid_check {
                    EpidCheck::Valid(_) => "consistent".to_owned(),
                    check => format!("problems: {}", check.problems().join("; ")),
                },
                line.hwid.as_deref().unwrap_or("-"),
                r.count,
                r.activation_interval,
                r.renewal_interval,
                line.latency_ms.unwrap_or_default(),
            );
        }
        text
    };
    // A closed stdout (`| head`) is not an error of the host.
    writeln!(std::io::stdout(), "{text}").is_ok()
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(text) = &args.print_srv {
        return print_srv(&args, text);
    }
    if args.load.load {
        return load::run(&args);
    }
    let (product, mut locator) = match product(&args).and_then(|p| Ok((p, locator(&args)?))) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("kms-client: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = ClientConfig::default();
    config.set_ndr64(!args.no_ndr64).set_btfn(!args.no_btfn);
    let timeout = Duration::from_secs(args.timeout.max(1));
    let mut probe = Probe {
        product,
        config,
        timeout,
        rng: OsRandom,
        session: None,
        args,
    };
    eprintln!(
        "kms-client: {} ({}), KMS ID {}, protocol {}",
        probe.product.sku().name(),
        probe.product.sku().id(),
        probe.product.kms_item().id(),
        probe.product.version()
    );

    // Charging: distinct clients the host counts, reported on stderr.
    for i in 1..=probe.args.charge {
        let machine = MachineIdentity::random(format!("charge{i}.example.org"), &mut probe.rng);
        let request = probe.request(&machine);
        match probe.activate(&mut locator, &request) {
            Ok((_, outcome, _)) if i == probe.args.charge => eprintln!(
                "kms-client: charged {i} clients; the host counts {}",
                outcome.response().map_or(0, |r| r.count)
            ),
            Ok(_) => {}
            Err(failures) => {
                let last = failures.last();
                let why = last.map_or_else(|| "no host".to_owned(), |f| describe(&f.error));
                eprintln!("kms-client: charge request {i} failed: {why}");
                return if matches!(last.map(|f| &f.error), Some(AttemptError::TimedOut(_))) {
                    ExitCode::from(EXIT_TIMEOUT)
                } else {
                    ExitCode::FAILURE
                };
            }
        }
    }

    let machine = MachineIdentity::random(probe.args.workstation.clone(), &mut probe.rng);
    let mut all_activated = true;
    let mut timed_out = false;
    for _ in 0..probe.args.requests {
        let request = probe.request(&machine);
        let (host, outcome, latency) = match probe.activate(&mut locator, &request) {
            Ok((host, outcome, latency)) => (host.to_string(), outcome, Some(latency)),
            Err(failures) => {
                for failure in &failures {
                    eprintln!(
                        "kms-client: {}: {}",
                        host_label(&failure.host),
                        describe(&failure.error)
                    );
                }
                let last = failures.last();
                timed_out |= matches!(last.map(|f| &f.error), Some(AttemptError::TimedOut(_)));
                let outcome = match last.map(|f| &f.error) {
                    Some(AttemptError::Refused(h)) => ActivationOutcome::refused(*h),
                    _ => ActivationOutcome::no_host(),
                };
                let host = last.map_or_else(|| probe.args.target.clone(), |f| host_label(&f.host));
                (host, outcome, None)
            }
        };
        all_activated &= outcome.is_activated();
        if !report(&probe.args, &probe, &host, &outcome, latency) {
            break;
        }
        if timed_out {
            break;
        }
    }
    if timed_out {
        ExitCode::from(EXIT_TIMEOUT)
    } else if all_activated {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
