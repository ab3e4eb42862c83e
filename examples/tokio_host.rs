//! The README's embedding example: a KMS host on the tokio transport, in
//! memory, on 127.0.0.1:1688 and `[::1]:1688`, until Ctrl-C.
//!
//! ```text
//! cargo run --example tokio_host --features tokio
//! ```
//!
//! In your own crate this needs `kms-activation` with the `tokio` feature and
//! `tokio` itself with `rt-multi-thread`, `macros` and `signal` (see the
//! README). `.ci/run` also builds the README's copy of this program in a
//! fresh crate.

use kms_activation::host::store::MemoryStore;
use kms_activation::host::{KmsHost, KmsHostConfig};
use kms_activation::transport::tokio::Server;
use kms_activation::transport::{ServerConfig, bind};
use kms_activation::{FileTime, OsRandom};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[expect(clippy::disallowed_methods, reason = "the host's clock enters here")]
    let now = FileTime::try_from(std::time::SystemTime::now())?;
    let store = MemoryStore::default(); // or SqliteStore / PostgresStore
    let host = KmsHost::start(KmsHostConfig::default(), store, now, &mut OsRandom).await?;
    let listeners = bind(&["127.0.0.1:1688".parse()?, "[::1]:1688".parse()?])?;
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    Server::new(host, ServerConfig::default())
        .serve(listeners, ctrl_c)
        .await?;
    Ok(())
}
