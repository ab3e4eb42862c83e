//! kms-host's `--dns-publish` options: this host's `_vlmcs._tcp` SRV
//! record, published by DNS update at start, refreshed, withdrawn at
//! shutdown (the library's `host::dns_publish`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kms_activation::client::discovery::DnsSettings;
use kms_activation::host::dns_publish::{DEFAULT_TTL, PublisherConfig, SrvPublisher, TsigKey};

/// How long the withdrawal at shutdown may take.
const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DnsArgs {
    /// Publish this host's `_vlmcs._tcp.ZONE` SRV record by DNS dynamic
    /// update (RFC 2136): added at start, refreshed, deleted at shutdown
    /// (within 3 s); failures are logged at WARN and retried.
    #[arg(long = "dns-publish", value_name = "ZONE")]
    zone: Option<String>,
    /// DNS server to send the updates to [default: the zone's primary,
    /// from its SOA record, port 53].
    #[arg(long = "dns-server", value_name = "ADDR[:PORT]", requires = "zone")]
    server: Option<String>,
    /// Find the zone's primary (its SOA record and the primary's address)
    /// by asking this DNS server instead of the system's resolver.
    #[arg(
        long = "dns-resolver",
        value_name = "ADDR[:PORT]",
        requires = "zone",
        conflicts_with = "server"
    )]
    resolver: Option<String>,
    /// Sign the updates with this TSIG key (a BIND key file,
    /// hmac-sha256 or hmac-sha512).
    #[arg(long = "dns-tsig-key", value_name = "FILE", requires = "zone")]
    key: Option<PathBuf>,
    /// Name clients connect to [default: this machine's host name,
    /// qualified with ZONE when it has no domain].
    #[arg(long = "dns-target", value_name = "NAME", requires = "zone")]
    target: Option<String>,
    /// SRV priority of the record (lower is tried first).
    #[arg(
        long = "dns-priority",
        default_value_t = 0,
        value_name = "N",
        requires = "zone"
    )]
    priority: u16,
    /// SRV weight of the record (share of the load within a priority).
    #[arg(
        long = "dns-weight",
        default_value_t = 0,
        value_name = "N",
        requires = "zone"
    )]
    weight: u16,
    /// TTL of the record, in seconds.
    #[arg(long = "dns-ttl", default_value_t = DEFAULT_TTL, value_name = "SECONDS", requires = "zone")]
    ttl: u32,
    /// How often the record is published again: seconds, or a number
    /// with s, m, h or d.
    #[arg(long = "dns-refresh", default_value = "24h", value_name = "INTERVAL", value_parser = parse_interval, requires = "zone")]
    refresh: Duration,
}

/// `90`, `90s`, `15m`, `24h`, `1d`: at least one second.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => s.split_at(at),
        None => (s, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{s:?}: expected seconds, or a number with s, m, h or d"
            ));
        }
    };
    let seconds = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s:?}: expected a positive whole number"))?;
    Ok(Duration::from_secs(seconds))
}

/// `ADDR`, `ADDR:PORT`, `[V6]:PORT`, `NAME` or `NAME:PORT` (port 53 by
/// default); errors name `flag`.
async fn resolve_server(flag: &str, spec: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = spec.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = spec.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    let with_port = if spec.contains(':') {
        spec.to_owned()
    } else {
        format!("{spec}:53")
    };
    tokio::net::lookup_host(with_port.as_str())
        .await
        .map_err(|e| format!("{flag} {spec}: {e}"))?
        .next()
        .ok_or_else(|| format!("{flag} {spec}: no address"))
}

/// A publisher and its driver task.
pub(crate) type Publishing = Option<(Arc<SrvPublisher>, tokio::task::JoinHandle<()>)>;

/// Starts publishing (in a task that stops with `stop`) when
/// `--dns-publish` was given; the record names `port`.
pub(crate) async fn start(
    args: &DnsArgs,
    port: u16,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<Publishing, String> {
    let Some(zone) = &args.zone else {
        return Ok(None);
    };
    let mut config = PublisherConfig::new(zone, port)
        .map_err(|e| format!("--dns-publish: {e}"))?
        .with_priority_weight(args.priority, args.weight)
        .with_ttl(args.ttl)
        .with_refresh(args.refresh);
    if let Some(server) = &args.server {
        config = config.with_server(resolve_server("--dns-server", server).await?);
    }
    if let Some(resolver) = &args.resolver {
        let server = resolve_server("--dns-resolver", resolver).await?;
        config = config.with_resolver(DnsSettings::system().with_name_servers([server]));
    }
    if let Some(path) = &args.key {
        config = config
            .with_tsig_key(TsigKey::from_file(path).map_err(|e| format!("--dns-tsig-key: {e}"))?);
    }
    if let Some(target) = &args.target {
        config = config
            .with_target(target)
            .map_err(|e| format!("--dns-target: {e}"))?;
    }
    let publisher = Arc::new(SrvPublisher::new(config).map_err(|e| format!("--dns-publish: {e}"))?);
    tracing::info!(record = %publisher.record_text(), "publishing in DNS");
    let running = Arc::clone(&publisher);
    let driver = tokio::spawn(async move { running.run(stop).await });
    Ok(Some((publisher, driver)))
}

/// The publisher, for the admin endpoint's readiness and metrics.
pub(crate) fn publisher(publishing: &Publishing) -> Option<Arc<SrvPublisher>> {
    publishing
        .as_ref()
        .map(|(publisher, _)| Arc::clone(publisher))
}

/// Once the driver has stopped (its stop future completed), deletes this
/// host's record, all within [`WITHDRAW_TIMEOUT`].
pub(crate) async fn withdraw(publishing: Publishing) {
    let Some((publisher, driver)) = publishing else {
        return;
    };
    let stopped_then_withdrawn = async {
        let _ = driver.await;
        publisher.withdraw().await
    };
    match tokio::time::timeout(WITHDRAW_TIMEOUT, stopped_then_withdrawn).await {
        Ok(Ok(())) => tracing::info!(record = %publisher.record_text(), "withdrawn from DNS"),
        // The publisher has logged the failure.
        Ok(Err(_)) => {}
        Err(_) => tracing::warn!(
            record = %publisher.record_text(),
            "DNS withdraw of the KMS SRV record failed: no answer within {WITHDRAW_TIMEOUT:?}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_interval("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_interval("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "0", "h", "5w", "-1s", "1.5h", "99999999999999999999d"] {
            assert!(parse_interval(bad).is_err(), "{bad:?}");
        }
    }
}
