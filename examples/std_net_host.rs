//! A KMS host over plain `std::net`, without a runtime and without the
//! ready-made transports: a thread per connection, each a loop that reads,
//! hands the bytes and the time to the sans-IO engine ([`HostConnection`]),
//! lets the policy ([`KmsHost`], genuine counting in memory) decide, and
//! writes what the engine queued.
//!
//! ```text
//! cargo run --example std_net_host            # 127.0.0.1:1688
//! cargo run --example std_net_host -- 0.0.0.0:1688
//! ```
//!
//! `KmsHost::start` is `async` (a store may wait on a database); with the
//! memory store it completes at once, so a minimal executor (`pollster`)
//! runs it. A real server also bounds connections and times out idle and
//! slow peers: the `blocking` feature's `transport::blocking::Server` does
//! both on a bounded thread pool.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kms_activation::host::store::MemoryStore;
use kms_activation::host::{HostConfig, HostConnection, KmsHost, KmsHostConfig};
use kms_activation::{FileTime, OsRandom};

#[expect(clippy::disallowed_methods, reason = "the I/O loop reads the clock")]
fn now() -> FileTime {
    FileTime::try_from(SystemTime::now()).unwrap_or_default()
}

/// Serves one connection until the peer closes it, breaks the protocol or
/// stays silent for 30 seconds.
fn serve(
    mut stream: TcpStream,
    host: &KmsHost<MemoryStore>,
    config: &HostConfig,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut conn = HostConnection::new(config).with_peer(stream.peer_addr()?);
    let mut rng = OsRandom;
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        let Some(mut input) = buf.get(..n).filter(|read| !read.is_empty()) else {
            return Ok(()); // the peer closed the connection
        };
        loop {
            let result = conn.handle_input(now(), input, &mut rng);
            // Decide every request the engine reported, then send the replies
            // (and, after a protocol error, the fault the engine queued).
            for record in host.process_blocking(&mut conn, &mut rng) {
                eprintln!("{:?}: {}", record.peer, record.result);
            }
            stream.write_all(conn.transmit())?;
            let sent = conn.transmit().len();
            conn.advance_transmit(sent);
            match result {
                Err(e) => {
                    eprintln!("closing: {e}");
                    return Ok(());
                }
                Ok(used) => match input.get(used..) {
                    Some(rest) if !rest.is_empty() => input = rest, // offered again
                    _ => break,
                },
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:1688".to_owned());
    let store = MemoryStore::default();
    let host = pollster::block_on(KmsHost::start(
        KmsHostConfig::default(),
        store,
        now(),
        &mut OsRandom,
    ))?;
    let host = Arc::new(host);
    let config = Arc::new(HostConfig::default());
    let listener = TcpListener::bind(&address)?;
    eprintln!("listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let (host, config) = (Arc::clone(&host), Arc::clone(&config));
        std::thread::spawn(move || {
            if let Err(e) = serve(stream, &host, &config) {
                eprintln!("connection: {e}");
            }
        });
    }
    Ok(())
}
