//! `kms-client --load` against `kms-host` on loopback (memory store, the
//! admin endpoint on a free port): distinct clients counted by the host as
//! sent, on new connections and kept ones (the host's connection count
//! tells them apart), renewals of the same seed counted once, outcomes by
//! HRESULT for a host that refuses part of a mix, and errors by kind with
//! their exit status where nothing answers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::loopback::kms_client;
use crate::support::{KilledOnDrop, free_tcp_port, kms_host_until_ready};

/// A `kms-host` with its KMS port and its admin endpoint on loopback.
struct Host {
    kms: SocketAddr,
    admin: SocketAddr,
    /// Kills the host when the test is done with it.
    _process: KilledOnDrop,
}

impl Host {
    fn start(extra: &[&str]) -> Self {
        let kms = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let kms_arg = kms.to_string();
        let admin_arg = admin.to_string();
        let args = [
            "--listen", &kms_arg, "--admin", &admin_arg, "--store", "memory", "--skew", "off",
        ];
        let (process, ready) = kms_host_until_ready(args.iter().chain(extra));
        let process = KilledOnDrop(process);
        assert!(ready.is_some(), "kms-host did not start");
        Self {
            kms,
            admin,
            _process: process,
        }
    }

    /// The body of `GET path` on the admin endpoint.
    fn get(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(self.admin).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        body.to_owned()
    }

    /// The host's status line of the Windows application.
    fn windows(&self) -> Value {
        let status: Value = serde_json::from_str(&self.get("/api/v1/status")).unwrap();
        status["applications"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "Windows")
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// A sample of the host's metrics, summed over its labels.
    fn metric(&self, name: &str) -> u64 {
        self.get("/metrics")
            .lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }

    /// Connections the host accepted: open now, or closed. Waits for the
    /// ones the client closed on leaving to be seen closed.
    fn connections_accepted(&self) -> u64 {
        for _ in 0..200 {
            if self.metric("kms_connections_open") == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.metric("kms_connections_open") + self.metric("kms_connections_closed_total")
    }
}

/// Runs `kms-client --load --json` and returns its exit status and report.
fn load(target: &str, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec![target, "--load", "--json"];
    all.extend_from_slice(args);
    let out = kms_client(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: stdout {stdout:?}, stderr {stderr}"));
    (out.status.code(), report)
}

fn errors_total(report: &Value) -> u64 {
    report["errors"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum()
}

#[test]
fn distinct_clients_on_new_connections_are_counted_as_sent() {
    let host = Host::start(&[]);
    let kms = host.kms.to_string();
    let (code, report) = load(&kms, &["--clients", "200", "--count", "600", "-c", "8"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["mode"], "new-connection");
    assert_eq!(report["sent"], 600);
    assert_eq!(report["activations"], 600);
    assert_eq!(report["outcomes"]["0x00000000"]["count"], 600, "{report}");
    assert_eq!(report["outcomes"]["0x00000000"]["name"], "S_OK");
    assert_eq!(report["outcomes"].as_object().unwrap().len(), 1);
    assert_eq!(errors_total(&report), 0);
    // The first 24 of 200 Windows clients are answered below their N
    // policy of 25 (the client would retry); the host caps its count at
    // twice that.
    assert_eq!(report["below_threshold"], 24);
    let product = &report["products"][0];
    assert_eq!(product["name"], "Windows 10/11 Enterprise");
    assert_eq!(product["sent"], 600);
    assert_eq!(product["host_count"]["min"], 1);
    assert_eq!(product["host_count"]["max"], 50);
    assert_eq!(product["host_count"]["last"], 50);
    for key in ["p50", "p90", "p99", "max"] {
        assert!(report["latency_ms"][key].as_f64().unwrap() > 0.0, "{key}");
    }
    assert!(report["latency_ms"]["p50"].as_f64() <= report["latency_ms"]["max"].as_f64());
    assert!(report["activations_per_second"].as_f64().unwrap() > 0.0);

    // The host stored 200 distinct clients from 600 requests, each on a
    // connection of its own.
    let windows = host.windows();
    assert_eq!(windows["clients"], 200, "{windows}");
    assert_eq!(windows["current_count"], 50, "{windows}");
    assert_eq!(host.metric("kms_requests_total"), 600);
    assert_eq!(host.connections_accepted(), 600);

    // A second run of the same seed renews the same 200 machines; another
    // seed brings 200 new ones.
    let (code, report) = load(&kms, &["--clients", "200", "--count", "200", "-c", "8"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["below_threshold"], 0);
    assert_eq!(host.windows()["clients"], 200);
    let (code, _) = load(&kms, &["--clients", "200", "--count", "200", "--seed", "9"]);
    assert_eq!(code, Some(0));
    assert_eq!(host.windows()["clients"], 400);
}

#[test]
fn keepalive_sends_every_activation_on_one_connection_per_worker() {
    let host = Host::start(&[]);
    let (code, report) = load(
        &host.kms.to_string(),
        &[
            "--keepalive",
            "--clients",
            "50",
            "--count",
            "300",
            "-c",
            "4",
        ],
    );
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["mode"], "keepalive");
    assert_eq!(report["outcomes"]["0x00000000"]["count"], 300, "{report}");
    assert_eq!(report["reconnects"], 0);
    assert_eq!(report["products"][0]["host_count"]["last"], 50);
    let windows = host.windows();
    assert_eq!(windows["clients"], 50, "{windows}");
    assert_eq!(host.metric("kms_requests_total"), 300);
    assert_eq!(host.connections_accepted(), 4);
}

/// A host holding only the Windows Server 2022 key refuses the Windows
/// 10/11 half of a one-to-one mix with 0xC004F042; the split is the
/// clients' (k even: the first product), whatever order the workers take.
#[test]
fn a_refused_part_of_the_mix_is_tallied_by_hresult() {
    let host = Host::start(&["--products", "windows server 2022 standard"]);
    let (code, report) = load(
        &host.kms.to_string(),
        &[
            "--mix",
            "windows server 2022 standard=1,windows 10/11 enterprise=1",
            "--clients",
            "10",
            "--count",
            "100",
            "-c",
            "6",
            "--protocol",
            "5",
        ],
    );
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["sent"], 100);
    assert_eq!(report["answered"], 100);
    assert_eq!(report["activations"], 50);
    assert_eq!(errors_total(&report), 0);
    let outcomes = report["outcomes"].as_object().unwrap();
    assert_eq!(outcomes.len(), 2, "{report}");
    assert_eq!(outcomes["0x00000000"]["count"], 50);
    assert_eq!(outcomes["0xC004F042"]["count"], 50);
    assert_eq!(
        outcomes["0xC004F042"]["name"],
        "SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH"
    );
    let products = report["products"].as_array().unwrap();
    assert_eq!(products[0]["name"], "Windows Server 2022 Standard");
    assert_eq!(products[0]["protocol"], "5.0");
    assert_eq!(products[0]["outcomes"]["0x00000000"]["count"], 50);
    assert_eq!(products[0]["host_count"]["max"], 5);
    assert_eq!(products[1]["name"], "Windows 10/11 Enterprise");
    assert_eq!(products[1]["outcomes"]["0xC004F042"]["count"], 50);
    assert!(products[1]["host_count"].is_null());
    // Five distinct servers counted; the refused clients are not.
    assert_eq!(host.windows()["clients"], 5);
}

#[test]
fn nothing_listening_or_a_host_that_hangs_up_are_errors_by_kind() {
    let nothing = SocketAddr::from(([127, 0, 0, 1], free_tcp_port())).to_string();
    let (code, report) = load(&nothing, &["--count", "20", "-c", "4", "--timeout", "2"]);
    assert_eq!(code, Some(3), "{report}");
    assert_eq!(report["sent"], 20);
    assert_eq!(report["answered"], 0);
    assert_eq!(report["errors"]["connect"], 20, "{report}");
    assert_eq!(errors_total(&report), 20);
    assert!(report["latency_ms"].is_null());
    assert!(
        report["error_examples"]["connect"]
            .as_str()
            .unwrap()
            .contains(&nothing),
        "{report}"
    );

    // Accepts and closes each connection at once.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let closer = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    let (code, report) = load(&closer, &["--count", "20", "-c", "4", "--timeout", "5"]);
    assert_eq!(code, Some(3), "{report}");
    assert_eq!(report["errors"]["closed"], 20, "{report}");
    assert_eq!(errors_total(&report), 20);
    assert_eq!(report["products"][0]["errors"], 20);
}

#[test]
fn load_options_need_load_and_bad_values_are_refused() {
    for args in [
        &["--keepalive"][..],
        &["-c", "4"],
        &["--load", "--mix", "office=1"],
        &["--load", "--mix", "windows 10/11 enterprise=0"],
        &["--load", "--duration", "5d"],
        &["--load", "--rate", "0"],
        &["--load", "--charge", "3"],
        &["--load", ".example.org"],
    ] {
        let out = kms_client(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = kms_client(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for line in [
        "With --load:",
        "  3  some activations got no answer",
        "--keepalive",
    ] {
        assert!(help.contains(line), "{line:?} missing from\n{help}");
    }
}

/// Forwards connections to `upstream`, changing one byte in the middle of
/// every `response` PDU the host sends (inside the encrypted KMS
/// response).
fn spawn_tampering_proxy(upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(host) = TcpStream::connect(upstream) else {
                continue;
            };
            let (mut from_client, mut to_host) =
                (client.try_clone().unwrap(), host.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_client, &mut to_host);
                let _ = to_host.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || tamper(host, client));
        }
    });
    addr
}

/// Copies PDUs (C706 §12.6: packet type at offset 2, little-endian
/// `frag_length` at offset 8) from `host` to `client`, each `response`
/// (type 2) with a byte of its middle flipped.
fn tamper(mut host: TcpStream, mut client: TcpStream) {
    loop {
        let mut header = [0u8; 16];
        if host.read_exact(&mut header).is_err() {
            return;
        }
        let length = usize::from(u16::from_le_bytes([header[8], header[9]]));
        let mut body = vec![0u8; length.saturating_sub(16)];
        if host.read_exact(&mut body).is_err() {
            return;
        }
        if header[2] == 2 && !body.is_empty() {
            let middle = body.len() / 2;
            body[middle] ^= 0x55;
        }
        if client
            .write_all(&header)
            .and_then(|()| client.write_all(&body))
            .is_err()
        {
            return;
        }
    }
}

#[test]
fn a_tampered_response_is_a_protocol_error_never_a_success() {
    let host = Host::start(&[]);
    let proxy = spawn_tampering_proxy(host.kms).to_string();
    let (code, report) = load(&proxy, &["--clients", "10", "--count", "30", "-c", "3"]);
    assert_eq!(code, Some(3), "{report}");
    assert_eq!(report["sent"], 30);
    assert_eq!(report["activations"], 0, "{report}");
    assert_eq!(report["answered"], 0, "{report}");
    assert_eq!(report["errors"]["protocol"], 30, "{report}");
    assert!(
        report["error_examples"]["protocol"]
            .as_str()
            .unwrap()
            .starts_with("bad reply"),
        "{report}"
    );
    // The host did answer all of them.
    assert_eq!(host.metric("kms_requests_total"), 30, "{report}");
}

/// Lower bounds that hold by construction: with --rate R the last of N
/// activations is not due before (N-1)/R, and --duration runs until it
/// has passed.
#[test]
fn paced_and_timed_runs() {
    let host = Host::start(&[]);
    let kms = host.kms.to_string();
    let (code, report) = load(&kms, &["--rate", "40", "--count", "20", "-c", "4"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["sent"], 20);
    assert_eq!(report["rate"], 40.0);
    assert!(
        report["elapsed_seconds"].as_f64().unwrap() >= 0.475,
        "{report}"
    );

    let (code, report) = load(&kms, &["--duration", "500ms", "-c", "2", "--keepalive"]);
    assert_eq!(code, Some(0), "{report}");
    let sent = report["sent"].as_u64().unwrap();
    assert!(sent > 0, "{report}");
    assert_eq!(report["activations"], sent);
    assert!(
        report["elapsed_seconds"].as_f64().unwrap() >= 0.5,
        "{report}"
    );
    // Two workers: two clients by default, the first two of the seed,
    // which the first run (four workers, four clients) already counted.
    assert_eq!(report["clients"], 2);
    assert_eq!(host.windows()["clients"], 4);
}

/// A host that closes each connection after five answers: a kept
/// connection it closed is opened again and the request sent once more,
/// counted as a reconnect and never as an error.
#[test]
fn keepalive_reconnects_when_the_host_closes_between_requests() {
    let host = Host::start(&["--max-requests", "5"]);
    let (code, report) = load(
        &host.kms.to_string(),
        &[
            "--keepalive",
            "--clients",
            "10",
            "--count",
            "100",
            "-c",
            "2",
        ],
    );
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["activations"], 100, "{report}");
    assert_eq!(errors_total(&report), 0, "{report}");
    let reconnects = report["reconnects"].as_u64().unwrap();
    // 100 requests on connections of at most 5: at least 20 connections,
    // the two first ones and the reopened ones.
    assert!(reconnects >= 18, "{report}");
    assert_eq!(host.connections_accepted(), 2 + reconnects);
    assert_eq!(host.metric("kms_requests_total"), 100);
}
