//! A host with a policy of its own: a [`DecisionHook`] that refuses
//! workstations outside a lab domain and shortens the retry interval, and an
//! [`Observer`] that counts connections and logs each decision with its
//! latency.
//!
//! ```text
//! cargo run --example custom_hook --features tokio
//! ```
//!
//! Hooks run inside [`KmsHost`] for every request that passed the
//! protocol's checks; the observer sees what the transport does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kms_activation::host::store::MemoryStore;
use kms_activation::host::{
    ActivationRecord, Answer, DecisionHook, KmsHost, KmsHostConfig, RequestContext,
};
use kms_activation::message::RequestBody;
use kms_activation::transport::tokio::Server;
use kms_activation::transport::{CloseReason, Observer, ServerConfig, bind};
use kms_activation::{FileTime, HResult, OsRandom};

/// Admits only workstations named `*.lab.example`, and asks the clients it
/// answers to retry a failed activation after 30 minutes instead of 120.
struct LabOnly;

impl DecisionHook for LabOnly {
    fn admit(&self, _context: &RequestContext, request: &RequestBody) -> Result<(), HResult> {
        if request.workstation.ends_with(".lab.example") {
            Ok(())
        } else {
            Err(HResult::ACCESS_DENIED)
        }
    }

    fn adjust(&self, _context: &RequestContext, _request: &RequestBody, answer: &mut Answer) {
        answer.activation_interval = 30;
    }
}

/// Counts connections and prints every decision.
#[derive(Default)]
struct Log {
    open: AtomicU64,
}

impl Observer for Log {
    fn connection_opened(&self, peer: SocketAddr, connection_id: u64) {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        eprintln!("#{connection_id} {peer}: opened ({open} open)");
    }

    fn connection_closed(&self, peer: SocketAddr, connection_id: u64, reason: &CloseReason) {
        let open = self.open.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        eprintln!("#{connection_id} {peer}: {reason} ({open} open)");
    }

    fn request_processed(&self, record: &ActivationRecord, latency: Duration) {
        eprintln!(
            "#{} {}: {} count {:?} in {latency:?}",
            record.connection_id, record.workstation, record.result, record.count
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[expect(clippy::disallowed_methods, reason = "the host's clock enters here")]
    let now = FileTime::try_from(std::time::SystemTime::now())?;
    let host = KmsHost::start(
        KmsHostConfig::default(),
        MemoryStore::default(),
        now,
        &mut OsRandom,
    )
    .await?
    .with_hook(LabOnly);
    let listeners = bind(&["127.0.0.1:1688".parse()?])?;
    let observer = Arc::new(Log::default());
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    Server::new(host, ServerConfig::default())
        .with_observer(observer)
        .serve(listeners, ctrl_c)
        .await?;
    Ok(())
}
