//! `--admin ADDR`: kms-host's glue to `kms_activation::admin`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use kms_activation::admin::{self, AdminState, AdminToken, Outcomes};
use kms_activation::host::KmsHost;
use kms_activation::host::dns_publish::SrvPublisher;
use kms_activation::host::store::CountStore;
use kms_activation::metrics::HostMetrics;
use kms_activation::transport::{LogObserver, Observer};

use super::{Args, StoreSpec};

/// The admin endpoint's listener and token, checked before the host
/// starts.
pub(crate) struct Prepared {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    token: Option<AdminToken>,
}

/// Reads the token and binds the admin address; refuses a non-loopback
/// address without a token. `None` without `--admin` (or `--metrics`).
pub(crate) fn prepare(args: &Args) -> Result<Option<Prepared>, String> {
    let alias = args.metrics.as_ref().and_then(|a| a.0.first().copied());
    let Some(addr) = args.admin.or(alias) else {
        if args.admin_token_file.is_some() {
            return Err("--admin-token-file needs --admin ADDR".into());
        }
        return Ok(None);
    };
    if args.metrics.is_some() {
        tracing::warn!("--metrics is deprecated: use --admin {addr} (metrics stay at /metrics)");
    }
    let token = match &args.admin_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--admin-token-file {}: {e}", path.display()))?;
            Some(AdminToken::new(&text).ok_or_else(|| {
                format!("--admin-token-file {}: the file is empty", path.display())
            })?)
        }
        None => None,
    };
    admin::check_bind(addr, token.is_some()).map_err(|e| e.to_string())?;
    let listener = std::net::TcpListener::bind(addr).map_err(|e| format!("--admin {addr}: {e}"))?;
    let addr = listener.local_addr().unwrap_or(addr);
    Ok(Some(Prepared {
        listener,
        addr,
        token,
    }))
}

/// Serves the admin endpoint until `stopped`; returns the server's
/// observer (log, metrics, outcomes).
pub(crate) fn start<S: CountStore + 'static>(
    prepared: Prepared,
    host: &Arc<KmsHost<S>>,
    args: &Args,
    listening: Vec<SocketAddr>,
    publisher: Option<Arc<SrvPublisher>>,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> Arc<dyn Observer> {
    let metrics = Arc::new(HostMetrics::new());
    let outcomes = Arc::new(Outcomes::default());
    let store = match &args.store {
        StoreSpec::Memory => "memory".to_owned(),
        StoreSpec::Sqlite(path, _) => format!("sqlite:{}", path.display()),
        StoreSpec::Postgres(url) => url.clone(),
    };
    let mut state = AdminState::new(Arc::clone(host), &store)
        .with_metrics(Arc::clone(&metrics))
        .with_outcomes(Arc::clone(&outcomes));
    if let Some(token) = prepared.token {
        state = state.with_token(token);
    }
    if let Some(publisher) = publisher {
        state = state.with_dns_publisher(publisher);
    }
    state.set_listening(listening);
    let addr = prepared.addr;
    tokio::spawn(async move {
        if let Err(e) = admin::serve(prepared.listener, Arc::new(state), stopped).await {
            tracing::warn!("admin endpoint on {addr}: {e}");
        }
    });
    tracing::info!("admin endpoint on http://{addr}/ (metrics at /metrics)");
    Arc::new((LogObserver::new(), (metrics, outcomes)))
}
