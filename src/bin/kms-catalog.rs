//! The KMS admin's lookup tool: products, GVLKs, product keys, HRESULTs and
//! host ePIDs.
//!
//! ```text
//! cargo run --release --features cli --bin kms-catalog                          # every SKU
//! cargo run --release --features cli --bin kms-catalog -- --search "windows 11 enterprise"
//! cargo run --release --features cli --bin kms-catalog -- --key NPPR9-FWDCX-D2C8J-H872K-2YT43
//! cargo run --release --features cli --bin kms-catalog -- --csvlks --search "server 2022"
//! cargo run --release --features cli --bin kms-catalog -- --hresult 0xC004F038
//! cargo run --release --features cli --bin kms-catalog -- --epid 05426-00206-565-184251-03-1068-9200.0000-1222025
//! cargo run --release --features cli --bin kms-catalog -- --new-epid 47f3b983-7c53-4d45-abc6-bcd91e2dd90a
//! cargo run --release --features cli --bin kms-catalog -- --new-epid "office ltsc professional plus 2021" --build 20348
//! ```
//!
//! Human-readable by default; `--json` prints one JSON object per line.
//! `--search` lists the SKUs whose name holds every word, best match first.
//! `--key` reads both key formats; a key of the pre-Windows 8 format is
//! reported with `"checksum_ok": null`, as it carries a signature rather
//! than a checksum. Exit status: see [`EXIT_STATUS`].

use std::io::Write;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Parser;
use kms_activation::product::{self, Csvlk, Sku, SkuLookupError};
use kms_activation::product_key::KeyFormat;
use kms_activation::{Epid, HResult, ProductKey, RandomSource, Uuid, epid};
use serde_json::{Value, json};

/// The exit statuses, as `--help` and the README state them.
const EXIT_STATUS: &str = "Exit status:
  0  found, and nothing wrong with it
  1  looked up, and something is wrong: --key has a wrong checksum, --hresult
     is a code the catalog does not know, --epid has problems
  2  a bad argument: not a key, not an HRESULT, not an ePID, no product
     matches (the reason on stderr)";

#[derive(Debug, Parser)]
#[command(
    about = "Look up KMS products, GVLKs, product keys, HRESULTs and ePIDs",
    after_help = EXIT_STATUS
)]
struct Args {
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// List only SKUs whose name holds every word of TEXT (case-insensitive,
    /// any order), best match first.
    #[arg(long, value_name = "TEXT")]
    search: Option<String>,
    /// Decode a product key and find its product if it is a GVLK.
    #[arg(long, value_name = "KEY", conflicts_with_all = ["search", "hresult", "epid", "new_epid"])]
    key: Option<String>,
    /// Explain an activation error code, e.g. 0xC004F038.
    #[arg(long, value_name = "CODE", conflicts_with_all = ["search", "epid", "new_epid"])]
    hresult: Option<String>,
    /// Check a KMS host ePID for consistency (exit status 1 when it has
    /// problems).
    #[arg(long, value_name = "EPID", conflicts_with_all = ["search", "new_epid"])]
    epid: Option<String>,
    /// Generate a consistent ePID for a CSVLK (by its ID), for the CSVLK
    /// that covers a KMS ID, or for the CSVLK that activates a product (by
    /// SKU ID, GVLK or name).
    #[arg(
        long,
        value_name = "CSVLK-KMS-ID-OR-PRODUCT",
        conflicts_with = "search"
    )]
    new_epid: Option<String>,
    /// List the host keys (CSVLKs) with their IDs and the products each
    /// activates (with --search: those whose name holds every word).
    #[arg(long, conflicts_with_all = ["key", "hresult", "epid", "new_epid"])]
    csvlks: bool,
    /// Host OS build for --new-epid (default: the newest known build; a
    /// build the catalog does not know is refused).
    #[arg(long, value_name = "N", requires = "new_epid")]
    build: Option<u32>,
}

/// Randomness from the operating system (for `--new-epid`).
struct OsRandom;

impl RandomSource for OsRandom {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if getrandom::fill(dest).is_err() {
            dest.fill(0x5a);
        }
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "a command-line tool reads the clock"
)]
fn now() -> DateTime<Utc> {
    Utc::now()
}

fn fail(message: &str) -> ExitCode {
    eprintln!("kms-catalog: {message}");
    ExitCode::from(2)
}

/// Prints one record; a closed stdout (`| head`) ends the program quietly.
fn emit(json_mode: bool, value: &Value, text: &str) {
    let mut out = std::io::stdout().lock();
    let written = if json_mode {
        writeln!(out, "{value}")
    } else {
        writeln!(out, "{text}")
    };
    if written.is_err() {
        std::process::exit(0);
    }
}

fn sku_json(sku: &Sku) -> Value {
    let item = sku.kms_item();
    json!({
        "name": sku.name(),
        "sku_id": sku.id().to_string(),
        "kms_id": sku.kms_id().to_string(),
        "app_id": item.map(|k| k.application_id().to_string()),
        "gvlk": sku.gvlk(),
        "n_policy": item.map(product::KmsItem::n_count_policy),
        "protocol": item.map(|k| format!("{}.0", k.default_protocol_major())),
    })
}

fn list_skus(args: &Args) -> ExitCode {
    let skus: Vec<&Sku> = match &args.search {
        Some(text) => product::search_skus(text),
        None => product::skus().iter().collect(),
    };
    if skus.is_empty() {
        return fail("no product matches");
    }
    for sku in skus {
        let v = sku_json(sku);
        let item = sku.kms_item();
        let text = format!(
            "{:<60} {}  sku {}  N {}  v{}.0",
            sku.name(),
            sku.gvlk(),
            sku.id(),
            item.map_or(0, product::KmsItem::n_count_policy),
            item.map_or(0, product::KmsItem::default_protocol_major),
        );
        emit(args.json, &v, &text);
    }
    ExitCode::SUCCESS
}

fn list_csvlks(args: &Args) -> ExitCode {
    let keys: Vec<&Csvlk> = match &args.search {
        Some(text) => product::search_csvlks(text),
        None => product::csvlks().iter().collect(),
    };
    if keys.is_empty() {
        return fail("no CSVLK matches");
    }
    for c in keys {
        let mut activates: Vec<(&'static str, Uuid, bool)> = c
            .kms_items()
            .map(|k| (k.name(), k.id(), c.is_own_key_of(k.id())))
            .collect();
        // Its own products first, then by name.
        activates.sort_by_key(|&(name, _, own)| (!own, name));
        let v = json!({
            "name": c.name(),
            "csvlk_id": c.id().map(|id| id.to_string()),
            "group_id": c.group_id(),
            "key_ids": c.key_ids().map(|r| [r.min(), r.max()]),
            "release_date": c.release_date().map(|d| d.to_string()),
            "lab": c.is_lab(),
            "preview": c.is_preview(),
            "server_key": c.is_server_key(),
            "activates": activates
                .iter()
                .map(|(name, id, own)| json!({"kms_id": id.to_string(), "name": name, "own": own}))
                .collect::<Vec<_>>(),
        });
        let mut kind = vec![if c.is_server_key() {
            "server key"
        } else {
            "client key"
        }];
        if c.is_lab() {
            kind.push("lab");
        }
        if c.is_preview() {
            kind.push("pre-release");
        }
        let mut text = format!(
            "{}  {}  ({}{})",
            c.name(),
            c.id()
                .map_or_else(|| "(no id)".to_owned(), |id| id.to_string()),
            kind.join(", "),
            c.release_date()
                .map_or_else(String::new, |d| format!(", released {d}")),
        );
        let names: Vec<String> = activates
            .iter()
            .map(|(name, _, own)| {
                if *own {
                    format!("{name} (own)")
                } else {
                    (*name).to_owned()
                }
            })
            .collect();
        text.push_str(
            "
  activates: ",
        );
        text.push_str(if names.is_empty() { "nothing" } else { "" });
        text.push_str(&names.join(", "));
        emit(args.json, &v, &text);
    }
    ExitCode::SUCCESS
}

fn key(args: &Args, text: &str) -> ExitCode {
    let key = match ProductKey::decode(text) {
        Ok(k) => k,
        Err(e) => return fail(&format!("{text:?} is not a product key: {e}")),
    };
    let sku = product::sku_by_gvlk(&key.to_string());
    let signed = key.format() == KeyFormat::Signed;
    let note = signed.then_some(
        "pre-Windows 8 key format: the key carries a digital signature, not a checksum; \
         it cannot be verified offline",
    );
    let v = json!({
        "key": key.to_string(),
        "format": if signed { "pre-windows-8" } else { "windows-8" },
        "group": key.group_id(),
        "serial": key.key_id(),
        "security": key.security_value(),
        "checksum_ok": key.checksum_ok(),
        "note": note,
        "sku_id": sku.map(|s| s.id().to_string()),
        "name": sku.map(Sku::name),
    });
    let fields = match (key.group_id(), key.key_id(), key.security_value()) {
        (Some(group), Some(serial), Some(security)) => format!(
            "group {group}  serial {serial}  security {security:#x}  checksum {}",
            if key.checksum_ok() == Some(true) {
                "ok"
            } else {
                "WRONG"
            }
        ),
        _ => note.unwrap_or_default().to_owned(),
    };
    let text = format!(
        "key {key} (…{})\n  {fields}\n  {}",
        key.partial(),
        sku.map_or_else(
            || "not a known GVLK".to_owned(),
            |s| format!("GVLK of {} ({})", s.name(), s.id())
        )
    );
    emit(args.json, &v, &text);
    if key.checksum_ok() == Some(false) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn hresult(args: &Args, text: &str) -> ExitCode {
    let Ok(code) = text.parse::<HResult>() else {
        return fail(&format!("{text:?} is not an HRESULT (try 0xC004F038)"));
    };
    let info = code.info();
    let v = json!({
        "hresult": format!("{code:#}"),
        "name": info.and_then(|i| i.name),
        "description": info.map(|i| i.description),
        "fix": info.map(|i| i.fix),
    });
    let text = match info {
        Some(i) => format!(
            "{code:#} {}\n  {}\n  Fix: {}",
            i.name.unwrap_or("(no symbolic name)"),
            i.description,
            i.fix
        ),
        None => format!("{code:#}: not an activation code this catalog knows"),
    };
    emit(args.json, &v, &text);
    if info.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn check_epid(args: &Args, text: &str) -> ExitCode {
    let parsed = match Epid::parse(text) {
        Ok(e) => e,
        Err(e) => return fail(&format!("{text:?} is not an ePID: {e}")),
    };
    let problems: Vec<String> = parsed
        .problems(now())
        .iter()
        .map(ToString::to_string)
        .collect();
    let csvlk = parsed.likely_csvlk();
    let v = json!({
        "epid": parsed.to_string(),
        "valid": problems.is_empty(),
        "problems": problems,
        "csvlk": csvlk.map(Csvlk::name),
    });
    let mut out = format!(
        "ePID {parsed}\n  CSVLK: {}\n  {}",
        csvlk.map_or("unknown", Csvlk::name),
        if problems.is_empty() {
            "consistent"
        } else {
            "problems:"
        }
    );
    for p in &problems {
        out.push_str("\n    - ");
        out.push_str(p);
    }
    emit(args.json, &v, &out);
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The CSVLK `--new-epid` names: a CSVLK ID, a KMS ID, or a product (SKU
/// ID, GVLK or name) whose KMS ID a CSVLK activates.
fn csvlk_named(text: &str) -> Result<&'static Csvlk, String> {
    if let Ok(id) = text.trim().parse::<Uuid>()
        && let Some(csvlk) = product::csvlk(id).or_else(|| product::csvlk_for_kms(id))
    {
        return Ok(csvlk);
    }
    match product::find_sku(text) {
        Ok(sku) => product::csvlk_for_kms(sku.kms_id())
            .ok_or_else(|| format!("no CSVLK in the catalog activates {}", sku.name())),
        Err(SkuLookupError::Ambiguous { candidates, .. }) => {
            let names: Vec<&str> = candidates.iter().take(12).map(|s| s.name()).collect();
            Err(format!(
                "{text:?} matches {} products; name one of: {}",
                candidates.len(),
                names.join("; ")
            ))
        }
        Err(e) => Err(format!(
            "{text:?} is neither a CSVLK ID, a KMS ID with a CSVLK nor a product: {e}"
        )),
    }
}

fn new_epid(args: &Args, text: &str) -> ExitCode {
    let csvlk = match csvlk_named(text) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let build = match args.build {
        Some(b) => b,
        None => match product::builds()
            .iter()
            .filter(|b| b.is_usable_for_epid())
            .map(product::WinBuild::build)
            .max()
        {
            Some(b) => b,
            None => return fail("no host build known"),
        },
    };
    match epid::generate(csvlk, build, now(), &mut OsRandom) {
        Ok(e) => {
            let v = json!({"epid": e.to_string(), "csvlk": csvlk.name(), "build": build});
            emit(args.json, &v, &e.to_string());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!(
            "cannot generate an ePID for {}: {e}",
            csvlk.name()
        )),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(k) = &args.key {
        return key(&args, k);
    }
    if let Some(h) = &args.hresult {
        return hresult(&args, h);
    }
    if let Some(e) = &args.epid {
        return check_epid(&args, e);
    }
    if let Some(text) = &args.new_epid {
        return new_epid(&args, text);
    }
    if args.csvlks {
        return list_csvlks(&args);
    }
    list_skus(&args)
}
