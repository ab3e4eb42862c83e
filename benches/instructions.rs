//! Instruction counts under valgrind's cachegrind: figures that do not move
//! with the machine's load, so CI can compare them with a committed baseline.
//!
//! ```text
//! cargo bench --features pcap,fuzzing --bench instructions -- --check benches/instructions.baseline   # CI: fails past +10 %
//! cargo bench --features pcap,fuzzing --bench instructions -- --save benches/instructions.baseline    # after a deliberate change
//! cargo bench --features pcap,fuzzing --bench instructions -- --run host_v6 1000                       # one workload, no valgrind
//! ```
//!
//! Each workload is measured twice under cachegrind (`--cache-sim=no`): with
//! `ITERATIONS` repetitions and with none. Both runs pay for process start
//! and the workload's setup; the difference divided by `ITERATIONS` is the
//! cost of one repetition. Run without arguments (as `cargo test --benches`
//! does) every workload runs once, as a smoke test.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "a benchmark: failures should stop it loudly"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::process::{Command, ExitCode};

use bytes::BytesMut;
use kms_activation::message::{self, Version};
use kms_activation::{Uuid, product, rpc};

mod fixtures;
use fixtures::{
    Counter, NOW, bound_host, client_pdus, hostile_capture, request, sent_and_response,
};

/// Growth past which `--check` fails, in percent.
const TOLERANCE_PERCENT: u64 = 10;

/// One measured operation: its name, repetitions per measurement, and a
/// setup that returns the operation.
struct Workload {
    name: &'static str,
    iterations: u64,
    setup: fn() -> Box<dyn FnMut()>,
}

fn host_exchange(version: Version) -> Box<dyn FnMut()> {
    let (bind, _, req) = client_pdus(version);
    let (mut host, mut responder, mut rng) = bound_host(&bind);
    let mut out = Vec::with_capacity(512);
    Box::new(move || {
        host.handle_input_with(NOW, black_box(&req), &mut responder, &mut rng)
            .unwrap();
        out.clear();
        black_box(host.poll_transmit(&mut out));
    })
}

fn build_request(version: Version) -> Box<dyn FnMut()> {
    let body = request(version);
    let mut rng = Counter(0);
    let mut out = BytesMut::with_capacity(512);
    Box::new(move || {
        out.clear();
        black_box(message::encode_request(black_box(&body), &mut rng, &mut out).unwrap());
    })
}

fn verify_response(version: Version) -> Box<dyn FnMut()> {
    let (sent, response) = sent_and_response(version);
    Box::new(move || {
        black_box(sent.verify_response(black_box(&response)).unwrap());
    })
}

const WINDOWS_10_ENTERPRISE: Uuid = Uuid::from_u128(0x7311_1121_5638_40f6_bc11_f1d7_b0d6_4300);
const WINDOWS_10_KMS_ID: Uuid = Uuid::from_u128(0x58e2_134f_8e11_4d17_9cb2_9106_9c15_1148);

fn workloads() -> Vec<Workload> {
    vec![
        Workload {
            name: "host_v4",
            iterations: 200,
            setup: || host_exchange(Version::V4),
        },
        Workload {
            name: "host_v5",
            iterations: 200,
            setup: || host_exchange(Version::V5),
        },
        Workload {
            name: "host_v6",
            iterations: 200,
            setup: || host_exchange(Version::V6),
        },
        Workload {
            name: "client_build_v4",
            iterations: 200,
            setup: || build_request(Version::V4),
        },
        Workload {
            name: "client_build_v6",
            iterations: 200,
            setup: || build_request(Version::V6),
        },
        Workload {
            name: "client_verify_v4",
            iterations: 200,
            setup: || verify_response(Version::V4),
        },
        Workload {
            name: "client_verify_v6",
            iterations: 200,
            setup: || verify_response(Version::V6),
        },
        Workload {
            name: "rpc_frame_and_decode",
            iterations: 1000,
            setup: || {
                let (_, _, req) = client_pdus(Version::V6);
                Box::new(move || {
                    let len = rpc::frame_len(black_box(&req), rpc::MAX_FRAG_LEN)
                        .unwrap()
                        .unwrap();
                    black_box(rpc::Pdu::decode(&req[..len]).unwrap());
                })
            },
        },
        Workload {
            name: "catalog_sku_by_id",
            iterations: 1000,
            setup: || {
                Box::new(|| {
                    black_box(product::sku(black_box(WINDOWS_10_ENTERPRISE)));
                })
            },
        },
        Workload {
            name: "catalog_sku_by_gvlk",
            iterations: 1000,
            setup: || {
                Box::new(|| {
                    black_box(product::sku_by_gvlk(black_box(
                        "NPPR9-FWDCX-D2C8J-H872K-2YT43",
                    )));
                })
            },
        },
        Workload {
            name: "catalog_csvlk_for_kms",
            iterations: 1000,
            setup: || {
                // The catalog's choice per KMS ID is made once, on first use:
                // the workload measures the lookups after it.
                black_box(product::csvlk_for_kms(WINDOWS_10_KMS_ID));
                Box::new(|| {
                    black_box(product::csvlk_for_kms(black_box(WINDOWS_10_KMS_ID)));
                })
            },
        },
        Workload {
            name: "dissect_1mib",
            iterations: 2,
            setup: || {
                let capture = hostile_capture(1 << 20);
                Box::new(move || {
                    black_box(kms_activation::dissect::dissect(black_box(&capture)).unwrap());
                })
            },
        },
    ]
}

fn run(workload: &Workload, iterations: u64) {
    let mut operation = (workload.setup)();
    for _ in 0..iterations {
        operation();
    }
}

/// Instructions executed by this program running `name` `iterations` times.
fn cachegrind(name: &str, iterations: u64) -> u64 {
    let exe = std::env::current_exe().expect("the bench knows its path");
    let out = std::env::temp_dir().join(format!(
        "kms-cachegrind-{}-{name}-{iterations}.out",
        std::process::id()
    ));
    let run = Command::new("valgrind")
        .arg("--tool=cachegrind")
        .arg("--cache-sim=no")
        .arg(format!("--cachegrind-out-file={}", out.display()))
        .arg(&exe)
        .args(["--run", name, &iterations.to_string()])
        .output()
        .expect("valgrind is installed");
    assert!(
        run.status.success(),
        "valgrind on {name}: {}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&out).expect("cachegrind wrote its output");
    let _ = std::fs::remove_file(&out);
    text.lines()
        .find_map(|line| line.strip_prefix("summary:"))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .expect("a cachegrind summary line")
}

fn measure(workload: &Workload) -> u64 {
    let with = cachegrind(workload.name, workload.iterations);
    let without = cachegrind(workload.name, 0);
    with.saturating_sub(without) / workload.iterations
}

fn read_baseline(path: &Path) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, n) = l.split_once(char::is_whitespace).expect("name count");
            (name.to_owned(), n.trim().parse().expect("a count"))
        })
        .collect()
}

fn write_baseline(path: &Path, figures: &[(&str, u64)]) {
    let mut text = String::from(
        "# Instructions per operation under cachegrind (benches/instructions.rs).\n\
         # Regenerate: cargo bench --bench instructions -- --save benches/instructions.baseline\n",
    );
    for (name, n) in figures {
        let _ = writeln!(text, "{name} {n}");
    }
    std::fs::write(path, text).unwrap();
}

/// Prints the table; returns the workloads that grew past the tolerance.
fn compare(figures: &[(&str, u64)], baseline: &BTreeMap<String, u64>) -> Vec<String> {
    let mut failed = Vec::new();
    println!("| workload | baseline | now | change |");
    println!("|---|---:|---:|---:|");
    for &(name, now) in figures {
        let Some(&base) = baseline.get(name) else {
            println!("| {name} | (none) | {now} | new |");
            failed.push(format!("{name}: not in the baseline"));
            continue;
        };
        // Tenths of a percent, in integers.
        let tenths = (i128::from(now) - i128::from(base)) * 1000 / i128::from(base.max(1));
        let sign = if tenths < 0 { '-' } else { '+' };
        let change = format!("{sign}{}.{} %", tenths.abs() / 10, tenths.abs() % 10);
        let verdict = if now * 100 > base * (100 + TOLERANCE_PERCENT) {
            failed.push(format!("{name}: {base} -> {now} ({change})"));
            " REGRESSION"
        } else {
            ""
        };
        println!("| {name} | {base} | {now} | {change}{verdict} |");
    }
    failed
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let workloads = workloads();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["--run", name, iterations] => {
            let workload = workloads
                .iter()
                .find(|w| w.name == *name)
                .unwrap_or_else(|| panic!("no workload {name}"));
            run(workload, iterations.parse().expect("a repetition count"));
            ExitCode::SUCCESS
        }
        [mode @ ("--check" | "--save"), path] => {
            let figures: Vec<(&str, u64)> =
                workloads.iter().map(|w| (w.name, measure(w))).collect();
            let path = Path::new(path);
            if *mode == "--save" {
                write_baseline(path, &figures);
                println!("wrote {}", path.display());
                return ExitCode::SUCCESS;
            }
            let failed = compare(&figures, &read_baseline(path));
            if failed.is_empty() {
                println!("instruction counts within +{TOLERANCE_PERCENT} % of the baseline");
                ExitCode::SUCCESS
            } else {
                for f in &failed {
                    println!("instruction count regression: {f}");
                }
                ExitCode::FAILURE
            }
        }
        [] => {
            for workload in &workloads {
                run(workload, 1);
            }
            println!("{} instruction-count workloads ran once", workloads.len());
            ExitCode::SUCCESS
        }
        other => {
            eprintln!(
                "usage: instructions [--check FILE | --save FILE | --run NAME N]; got {other:?}"
            );
            ExitCode::from(2)
        }
    }
}
