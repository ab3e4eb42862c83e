//! The troubleshooting dissector: every KMS request, response and error in a
//! packet capture, one JSON object per line.
//!
//! ```text
//! cargo run --features pcap --example kms-dissect -- capture.pcap
//! ```
//!
//! Reads pcap files (Ethernet, Linux cooked, loopback/null and raw IP link
//! types; IPv4 and IPv6), reassembles each TCP connection and finds KMS
//! conversations on any port. Damage in the capture shows up as
//! `{"kind":"warning",…}` lines next to whatever could be decoded.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kms_activation::dissect;

#[derive(Debug, Parser)]
#[command(about = "Print the KMS requests, responses and errors of a pcap file as JSON lines")]
struct Args {
    /// The capture file (pcap).
    capture: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let bytes = match std::fs::read(&args.capture) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("kms-dissect: cannot read {}: {e}", args.capture.display());
            return ExitCode::from(2);
        }
    };
    let records = match dissect::dissect(&bytes) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kms-dissect: {}: {e}", args.capture.display());
            return ExitCode::from(2);
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for record in records {
        if writeln!(out, "{record}").is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
