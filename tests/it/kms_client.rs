//! The `kms-client` example against loopback KMS hosts: a genuine-counting
//! `KmsHost` (0xC004F038, then `--charge 25`), every protocol version, a host
//! that closes after each answer, a host that never answers, and product
//! lookups.

use kms_activation::host::KmsHostConfig;
use serde_json::Value;

use crate::loopback::{Behaviour, kms_client, spawn_host};

fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn below_the_threshold_then_charged_to_activation() {
    let addr = spawn_host(KmsHostConfig::default(), Behaviour::KeepOpen).to_string();
    let out = kms_client(&[&addr, "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(line["outcome"], "failed");
    assert_eq!(line["hresult"], "0xC004F038");
    assert_eq!(line["count"], 1);
    assert_eq!(line["product"], "Windows 10/11 Enterprise");
    assert_eq!(line["protocol"], "6.0");
    assert_eq!(line["epid_valid"], true);
    assert_eq!(line["host"], addr.as_str());
    let keys: Vec<&str> = line
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "host",
            "product",
            "sku_id",
            "protocol",
            "epid",
            "epid_valid",
            "hwid",
            "count",
            "activation_interval",
            "renewal_interval",
            "latency_ms",
            "outcome",
            "hresult",
            "description"
        ]
    );

    let out = kms_client(&[&addr, "--charge", "25", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("charged 25 clients"), "{stderr}");
    let lines = json_lines(&out.stdout);
    assert_eq!(lines[0]["outcome"], "activated");
    assert_eq!(lines[0]["hresult"], "0x00000000");
    assert!(lines[0]["count"].as_u64().unwrap() >= 25);
}

#[test]
fn every_protocol_version_and_the_products_own_default() {
    let addr = spawn_host(KmsHostConfig::default(), Behaviour::KeepOpen).to_string();
    for (protocol, extra) in [("4", "--no-ndr64"), ("5", "--no-btfn"), ("6", "-n1")] {
        let out = kms_client(&[
            &addr,
            "--protocol",
            protocol,
            extra,
            "--json",
            "--product",
            "windows server 2019 standard",
        ]);
        let lines = json_lines(&out.stdout);
        assert_eq!(lines[0]["protocol"], format!("{protocol}.0"));
        assert!(
            lines[0]["count"].as_u64().is_some(),
            "{:?}",
            String::from_utf8_lossy(&out.stderr)
        );
        if protocol == "6" {
            assert!(lines[0]["hwid"].is_string());
        } else {
            assert!(lines[0]["hwid"].is_null());
        }
    }
    // Windows 7 speaks V4 unless told otherwise; its GVLK names it.
    let out = kms_client(&[
        &addr,
        "--json",
        "--product",
        "FJ82H-XT6CR-J8D7P-XQJJ2-GPDD4",
    ]);
    let lines = json_lines(&out.stdout);
    assert_eq!(lines[0]["product"], "Windows 7 Professional");
    assert_eq!(lines[0]["protocol"], "4.0");
}

#[test]
fn a_host_closing_after_each_answer_is_reconnected() {
    let addr = spawn_host(KmsHostConfig::default(), Behaviour::CloseAfterAnswer).to_string();
    let out = kms_client(&[&addr, "-n", "3", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(json_lines(&out.stdout).len(), 3, "{stderr}");
    assert!(
        stderr.contains("closed the connection after a request"),
        "{stderr}"
    );
    assert!(stderr.contains("reconnecting"), "{stderr}");
}

#[test]
fn a_silent_host_times_out_with_its_own_status() {
    let addr = spawn_host(KmsHostConfig::default(), Behaviour::Silent).to_string();
    let out = kms_client(&[&addr, "--timeout", "1", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("timed out after 1 s"), "{stderr}");
    assert_eq!(json_lines(&out.stdout)[0]["outcome"], "failed");
}

#[test]
fn nothing_listening_is_no_host_and_ambiguous_products_list_candidates() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = kms_client(&[&free, "--json", "--timeout", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_lines(&out.stdout)[0]["hresult"], "0xC004F074");

    let out = kms_client(&[&free, "--product", "office 2021"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("products match"), "{stderr}");
    assert!(
        stderr.contains("Office LTSC Professional Plus 2021"),
        "{stderr}"
    );

    let out = kms_client(&["--print-srv", "kms1.example.org"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "_vlmcs._tcp.example.org. 3600 IN SRV 0 0 1688 kms1.example.org."
    );
}

/// Accepts one connection, reads the client's bind, then sends the start of
/// a `bind_ack` one byte every 200 ms: a 16-byte common header (C706
/// §12.6.1: version 5.0, PTYPE 12, first and last fragment, little-endian
/// data representation) announcing a 1000-byte PDU, then zero bytes. Every
/// read of the client gets a byte well within any per-read timeout, and the
/// PDU would take more than three minutes to complete.
fn spawn_dribbler() -> std::net::SocketAddr {
    use std::io::{Read, Write};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut bind = [0u8; 16];
        if stream.read_exact(&mut bind).is_err() {
            return;
        }
        let frag_length = 1000u16.to_le_bytes();
        let mut bytes = vec![
            5,
            0,
            12,
            0x03,
            0x10,
            0,
            0,
            0,
            frag_length[0],
            frag_length[1],
            0,
            0,
            1,
            0,
            0,
            0,
        ];
        bytes.resize(1000, 0);
        for byte in bytes {
            std::thread::sleep(std::time::Duration::from_millis(200));
            if stream.write_all(&[byte]).is_err() {
                return; // the client gave up
            }
        }
    });
    addr
}

#[test]
fn a_host_dribbling_one_byte_at_a_time_times_out_at_the_deadline() {
    let addr = spawn_dribbler().to_string();
    // `kms_client` fails the test if the tool runs for a minute.
    let out = kms_client(&[&addr, "--timeout", "2", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("timed out after 2 s"), "{stderr}");
    assert_eq!(json_lines(&out.stdout)[0]["outcome"], "failed");
}

#[test]
fn a_too_long_workstation_name_is_the_callers_error() {
    // The request's workstation field holds 64 UTF-16 units with the NUL.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let name = "w".repeat(64);
    let out = kms_client(&[&free, "--workstation", &name]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--workstation"), "{stderr}");
    assert!(stderr.contains("64 characters"), "{stderr}");
    assert!(!stderr.contains("0xC004F074"), "{stderr}");
    assert!(out.stdout.is_empty());
    // 63 is accepted: nothing listens, so no host (status 1).
    let out = kms_client(&[&free, "--workstation", &name[1..], "--timeout", "2"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn help_states_the_exit_statuses() {
    let out = kms_client(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for line in [
        "Exit status:",
        "  0  every probe request was activated",
        "  1  a request was not activated",
        "  2  a bad argument",
        "  3  a host accepted the connection and did not answer within --timeout",
    ] {
        assert!(help.contains(line), "{line:?} missing from\n{help}");
    }
}

#[test]
fn a_failed_srv_lookup_names_the_domain_without_a_port() {
    // A DNS server address where nothing answers: discovery fails.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns = socket.local_addr().unwrap().to_string();
    drop(socket);
    let out = kms_client(&[
        ".nothing.example.test",
        "--dns-server",
        &dns,
        "--timeout",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(".nothing.example.test"), "{stderr}");
    assert!(!stderr.contains(".nothing.example.test:0"), "{stderr}");
}
