//! The troubleshooting dissector: every KMS request, response and error in a
//! packet capture, one JSON object per line.
//!
//! ```text
//! cargo run --release --features cli --bin kms-dissect -- capture.pcapng
//! ```
//!
//! The capture is read as a stream (memory stays bounded whatever its size)
//! and each record is printed as soon as it is decoded, in capture order.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kms_activation::dissect::ReadRecords;

/// The exit statuses, as `--help` and the README state them.
const EXIT_STATUS: &str = "Exit status:
  0  the whole capture was read (damage inside it shows as warning lines)
  1  the output could not be written
  2  the capture cannot be opened or read, or is not a pcap or pcapng
     file; or a bad argument";

/// Print the KMS requests, responses and errors of a packet capture as JSON lines.
///
/// Reads pcap (either byte order, micro- or nanosecond timestamps) and pcapng
/// files; link types Ethernet (with VLAN tags), Linux cooked capture v1 and
/// v2, BSD loopback and raw IP; IPv4 and IPv6. Every TCP connection is
/// reassembled and KMS conversations are found on any port. Each line is one
/// record: `packet`, `timestamp`, `conn`, `client`, `server`, `kind`
/// (`request`, `response`, `error`, `warning`) and the decoded fields. Damage
/// in the capture shows up as `warning` lines next to whatever could be
/// decoded.
#[derive(Debug, Parser)]
#[command(verbatim_doc_comment, after_help = EXIT_STATUS)]
struct Args {
    /// The capture file (pcap or pcapng); `-` reads standard input.
    capture: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let input: Box<dyn std::io::Read> = if args.capture.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(&args.capture) {
            Ok(file) => Box::new(file),
            Err(e) => {
                eprintln!("kms-dissect: cannot open {}: {e}", args.capture.display());
                return ExitCode::from(2);
            }
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for record in ReadRecords::new(input) {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                let _ = out.flush();
                eprintln!("kms-dissect: {}: {e}", args.capture.display());
                return ExitCode::from(2);
            }
        };
        let written = serde_json::to_writer(&mut out, &record)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out));
        if written.is_err() {
            return ExitCode::FAILURE;
        }
    }
    if out.flush().is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
