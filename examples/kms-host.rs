//! A minimal blocking KMS host over the sans-IO `HostConnection`.
//!
//! ```text
//! cargo run --example kms-host -- --listen 127.0.0.1:1688
//! vlmcs -v 127.0.0.1:1688          # from the vlmcsd project
//! ```
//!
//! One thread per connection (at most `--max-connections`), an idle timeout
//! per connection, and a log line per request on stderr. It answers with a
//! fixed ePID and HWID and reports twice the client's N policy unless
//! `--count` is given. This is a test tool: running a KMS host does not
//! license the software it activates.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use kms_activation::host::{Answer, FixedResponder, HostConfig, HostConnection, Responder};
use kms_activation::message::{Hwid, RequestBody};
use kms_activation::{FileTime, HResult, RandomSource};

#[derive(Debug, Parser)]
#[command(about = "Minimal blocking KMS host (test tool)")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:1688")]
    listen: SocketAddr,
    /// Extended product ID to report (default: a Windows Server 2022 host ePID).
    #[arg(long)]
    epid: Option<String>,
    /// Hardware ID to report in V6 responses, 16 hex digits.
    #[arg(long)]
    hwid: Option<Hwid>,
    /// Client count to report (default: twice the client's N policy).
    #[arg(long)]
    count: Option<u32>,
    /// Disable NDR64 (behave like a Windows 7 / Server 2008 R2 host).
    #[arg(long)]
    no_ndr64: bool,
    /// Disable bind-time feature negotiation.
    #[arg(long)]
    no_btfn: bool,
    /// Seconds a connection may stay idle.
    #[arg(long, default_value_t = 30)]
    idle_timeout: u64,
    /// Connections served at once; more are refused.
    #[arg(long, default_value_t = 64)]
    max_connections: usize,
}

/// Randomness from the operating system.
struct OsRandom;

impl RandomSource for OsRandom {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if let Err(e) = getrandom::fill(dest) {
            eprintln!("kms-host: no OS randomness: {e}");
            std::process::exit(1);
        }
    }
}

/// Logs each request and the answer given.
struct LoggingResponder {
    inner: FixedResponder,
    peer: SocketAddr,
}

impl Responder for LoggingResponder {
    fn respond(
        &mut self,
        now: FileTime,
        context: &kms_activation::host::RequestContext,
        request: &RequestBody,
    ) -> Result<Answer, HResult> {
        let result = self.inner.respond(now, context, request);
        let outcome = match &result {
            Ok(answer) => format!("count {}", answer.count),
            Err(hresult) => format!("refused {hresult}"),
        };
        eprintln!(
            "{} v{} kms_id {} sku {} cmid {} ws {:?} N {}: {}",
            self.peer,
            request.version,
            request.kms_id,
            request.sku_id,
            request.cmid,
            request.workstation,
            request.n_policy,
            outcome
        );
        result
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the I/O loop is where the wall clock enters the sans-IO engine"
)]
fn now() -> FileTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| {
            chrono::DateTime::from_timestamp(i64::try_from(d.as_secs()).ok()?, d.subsec_nanos())
        })
        .and_then(|t| FileTime::try_from(t).ok())
        .unwrap_or_default()
}

fn serve(
    mut stream: TcpStream,
    config: &HostConfig,
    responder: FixedResponder,
    idle: Duration,
) -> io::Result<()> {
    let peer = stream.peer_addr()?;
    stream.set_read_timeout(Some(idle))?;
    stream.set_write_timeout(Some(idle))?;
    stream.set_nodelay(true)?;
    let mut conn = HostConnection::new(config);
    let mut responder = LoggingResponder {
        inner: responder,
        peer,
    };
    let mut rng = OsRandom;
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                eprintln!("{peer}: idle timeout");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut input = buf.get(..n).unwrap_or_default();
        while !input.is_empty() {
            let result = conn.handle_input_with(now(), input, &mut responder, &mut rng);
            out.clear();
            let _ = conn.poll_transmit(&mut out);
            stream.write_all(&out)?;
            match result {
                Ok(used) => input = input.get(used..).unwrap_or_default(),
                Err(e) => {
                    eprintln!("{peer}: closing: {e}");
                    return Ok(());
                }
            }
        }
    }
}

fn main() {
    let args = Args::parse();
    let mut config = HostConfig::default();
    config
        .set_port(args.listen.port())
        .set_ndr64(!args.no_ndr64)
        .set_btfn(!args.no_btfn);
    let mut responder = FixedResponder::default();
    responder.set_count(args.count);
    if let Some(epid) = args.epid {
        responder.set_epid(epid);
    }
    if let Some(hwid) = args.hwid {
        responder.set_hwid(hwid);
    }
    let listener = match TcpListener::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("kms-host: cannot listen on {}: {e}", args.listen);
            std::process::exit(2);
        }
    };
    eprintln!("kms-host: listening on {}", args.listen);
    let config = Arc::new(config);
    let active = Arc::new(AtomicUsize::new(0));
    let idle = Duration::from_secs(args.idle_timeout);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if active.fetch_add(1, Ordering::SeqCst) >= args.max_connections {
            active.fetch_sub(1, Ordering::SeqCst);
            eprintln!("kms-host: connection limit reached, refusing");
            continue;
        }
        let (config, responder, active) =
            (Arc::clone(&config), responder.clone(), Arc::clone(&active));
        std::thread::spawn(move || {
            if let Err(e) = serve(stream, &config, responder, idle) {
                eprintln!("kms-host: connection error: {e}");
            }
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}
