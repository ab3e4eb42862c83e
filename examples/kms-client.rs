//! A blocking KMS client for probing hosts: sends activation requests and
//! prints each verified response (or the host's HRESULT) as a JSON line.
//!
//! ```text
//! cargo run --example kms-client -- 127.0.0.1:1688
//! cargo run --example kms-client -- kms.example.org:1688 --product "office ltsc 2021 proplus" --requests 3
//! cargo run --example kms-client -- 127.0.0.1:1688 --protocol 4 --no-ndr64 --no-btfn
//! ```
//!
//! The product (application, SKU and KMS IDs, N policy and protocol version)
//! comes from the crate's catalog. Exit status: 0 when every request was
//! answered with a verified response, 1 on refusals or failures, 2 on bad
//! arguments.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kms_activation::client::{ClientConfig, ClientConnection, ClientEvent};
use kms_activation::message::{RequestBody, Version};
use kms_activation::product;
use kms_activation::{FileTime, LicenseStatus, RandomSource, Uuid};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Probe a KMS host with activation requests")]
struct Args {
    /// Host and port, e.g. 127.0.0.1:1688.
    host: String,
    /// Product to request, searched by name in the catalog.
    #[arg(long, default_value = "windows 10/11 enterprise")]
    product: String,
    /// Protocol major version (4, 5 or 6; default: the product's).
    #[arg(long)]
    protocol: Option<u16>,
    /// Requests to send over the connection.
    #[arg(long, default_value_t = 1)]
    requests: usize,
    /// Do not offer NDR64.
    #[arg(long)]
    no_ndr64: bool,
    /// Do not offer bind-time feature negotiation.
    #[arg(long)]
    no_btfn: bool,
    /// Workstation name to send.
    #[arg(long, default_value = "kms-client.example.org")]
    workstation: String,
    /// Seconds to wait for the host at each step.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

/// Randomness from the operating system.
struct OsRandom;

impl RandomSource for OsRandom {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if let Err(e) = getrandom::fill(dest) {
            eprintln!("kms-client: no OS randomness: {e}");
            std::process::exit(1);
        }
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the client tool reads the wall clock"
)]
fn now() -> FileTime {
    FileTime::try_from(chrono::Utc::now())
        .unwrap_or_default()
        .truncated_to_seconds()
}

fn request(args: &Args, rng: &mut OsRandom) -> Result<RequestBody, String> {
    let sku = *product::search_skus(&args.product)
        .first()
        .ok_or_else(|| format!("no product matches {:?}", args.product))?;
    let item = sku.kms_item().ok_or("the product has no KMS ID")?;
    let major = args.protocol.unwrap_or(item.default_protocol_major());
    let mut cmid = [0u8; 16];
    rng.fill_bytes(&mut cmid);
    eprintln!(
        "kms-client: requesting {} (KMS ID {}), protocol {major}.0",
        sku.name(),
        item.id()
    );
    Ok(RequestBody {
        version: Version::new(major, 0),
        vm_info: 0,
        license_status: LicenseStatus::OobGrace,
        binding_expiration: 43_200,
        application_id: item.application_id(),
        sku_id: sku.id(),
        kms_id: item.id(),
        cmid: uuid_v4(cmid),
        previous_cmid: Uuid::nil(),
        n_policy: item.n_count_policy(),
        client_time: now(),
        workstation: args.workstation.clone(),
    })
}

/// A random (version 4) UUID from 16 random bytes.
fn uuid_v4(bytes: [u8; 16]) -> Uuid {
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

fn run(args: &Args) -> Result<bool, String> {
    let mut rng = OsRandom;
    let body = request(args, &mut rng)?;
    let addr = args
        .host
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", args.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", args.host))?;
    let timeout = Duration::from_secs(args.timeout);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;

    let mut config = ClientConfig::default();
    config.set_ndr64(!args.no_ndr64).set_btfn(!args.no_btfn);
    let mut client = ClientConnection::new(&config);
    for _ in 0..args.requests {
        client
            .send_request(body.clone(), &mut rng)
            .map_err(|e| e.to_string())?;
    }
    let mut all_activated = true;
    let mut buf = [0u8; 2048];
    // Received bytes the client has not consumed yet: `buf[start..end]`.
    let (mut start, mut end) = (0, 0);
    while !client.is_idle() {
        let queued = client.transmit();
        if !queued.is_empty() {
            let sent = queued.len();
            stream.write_all(queued).map_err(|e| format!("send: {e}"))?;
            client.advance_transmit(sent);
        }
        if start == end {
            end = stream.read(&mut buf).map_err(|e| format!("receive: {e}"))?;
            start = 0;
            if end == 0 {
                return Err("host closed the connection".into());
            }
        }
        start += client
            .handle_input(buf.get(start..end).unwrap_or_default(), &mut rng)
            .map_err(|e| format!("bad reply: {e}"))?;
        while let Some(event) = client.poll_event() {
            let line = match event {
                ClientEvent::Bound { ndr32, ndr64, btfn } => {
                    json!({"kind": "bound", "ndr32": ndr32, "ndr64": ndr64, "btfn": btfn})
                }
                ClientEvent::Activated(r) => {
                    let b = &r.body;
                    all_activated &= b.count >= body.n_policy;
                    json!({
                        "kind": "response",
                        "version": b.version.to_string(),
                        "epid": b.epid,
                        "hwid": b.hwid.map(|h| h.to_string()),
                        "count": b.count,
                        "enough_clients": b.count >= body.n_policy,
                        "activation_interval": b.activation_interval,
                        "renewal_interval": b.renewal_interval,
                        "size_mismatch": r.warnings.size_mismatch,
                        "iv_reused": r.warnings.iv_reused,
                    })
                }
                ClientEvent::Refused(h) => {
                    all_activated = false;
                    json!({"kind": "error", "hresult": format!("{h:#}"), "meaning": h.to_string()})
                }
                other => json!({"kind": "event", "event": format!("{other:?}")}),
            };
            if writeln!(std::io::stdout(), "{line}").is_err() {
                return Ok(all_activated);
            }
        }
    }
    Ok(all_activated)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("kms-client: {e}");
            ExitCode::FAILURE
        }
    }
}
