//! The `kms-host` tool's arguments: every bad value is refused before the
//! host starts, with exit status 2 and the value echoed; addresses resolve.

use std::process::Command;

use crate::support::{kms_host_refused, kms_host_until_ready};

// Two ePIDs of the Windows Server 2019 CSVLK: group 206, key IDs
// 566174993 and 568381813, both in its range 551000000-570999999
// (KmsDataBase.xml in the shared reference; the first is the one it lists).
const EPID_A: &str = "06401-00206-566-174993-03-1033-9600.0000-2802018";
const EPID_B: &str = "03612-00206-568-381813-03-1033-14393.0000-2702018";

#[test]
fn bad_values_are_echoed_and_refused_with_status_2() {
    let (code, stderr) = kms_host_refused(["--allow", "192.168.0.0/16,10.0.0.0/33"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("\"10.0.0.0/33\" is not a network"),
        "{stderr}"
    );

    for (flag, value) in [
        ("--max-connections", "0"),
        ("--threads", "0"),
        ("--max-requests", "0"),
        ("--idle-timeout", "0"),
        ("--pdu-timeout", "0"),
        ("--max-clients", "0"),
        ("--max-connections", "many"),
    ] {
        let (code, stderr) = kms_host_refused([flag, value]);
        assert_eq!(code, Some(2), "{flag} {value}: {stderr}");
        assert!(
            stderr.contains(&format!("'{value}'")) && stderr.contains(flag),
            "{flag} {value}: {stderr}"
        );
    }

    for value in ["1688", "localhost", "localhost:99999", ":1688"] {
        let (code, stderr) = kms_host_refused(["--listen", value]);
        assert_eq!(code, Some(2), "--listen {value}: {stderr}");
        assert!(stderr.contains(&format!("'{value}'")), "{stderr}");
    }
}

#[test]
fn an_epid_given_twice_or_two_for_one_csvlk_are_refused() {
    let (code, stderr) = kms_host_refused(["--epid", EPID_A, "--epid", EPID_A]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("--epid {EPID_A} is given twice")),
        "{stderr}"
    );

    let (code, stderr) = kms_host_refused(["--epid", EPID_A, "--epid", EPID_B]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("give one ePID per CSVLK"), "{stderr}");
    assert!(
        stderr.contains(EPID_A) && stderr.contains(EPID_B),
        "{stderr}"
    );

    let (code, stderr) = kms_host_refused(["--epid", "not-an-epid"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--epid not-an-epid: not an ePID"),
        "{stderr}"
    );
}

#[test]
fn help_states_the_exit_statuses() {
    let out = Command::new(env!("CARGO_BIN_EXE_kms-host"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for line in [
        "Exit status:",
        "  0  stopped by",
        "  1  could not run",
        "  2  a bad argument",
    ] {
        assert!(help.contains(line), "{line:?} missing from\n{help}");
    }
}

/// `--listen localhost:0` resolves the name; the host listens on what it
/// resolved to (127.0.0.1, and ::1 where the machine has IPv6).
#[test]
fn a_listen_name_resolves() {
    let (mut host, ready) = kms_host_until_ready(["--listen", "localhost:0"]);
    host.kill().unwrap();
    host.wait().unwrap();
    let ready = ready.expect("kms-host never got ready");
    assert!(ready.contains("127.0.0.1:"), "{ready}");
    assert!(!ready.contains("127.0.0.1:0,"), "{ready}");
}
