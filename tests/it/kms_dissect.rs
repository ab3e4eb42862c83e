//! `dissect` on the packet captures prints exactly the expected fields.

use std::collections::BTreeMap;
use std::path::Path;

use kms_activation::dissect::{self, Record};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::vectors::{field, head, parse_time};

#[derive(Deserialize)]
struct Expected {
    request_fields: BTreeMap<String, String>,
    response_fields: Vec<BTreeMap<String, String>>,
    client_errors: Vec<String>,
}

fn id(s: &str) -> Value {
    Value::String(head(s).to_lowercase())
}

/// The request line built from the fields vlmcs printed.
fn expected_request_line(f: &BTreeMap<String, String>) -> Value {
    json!({
        "conn": 0,
        "kind": "request",
        "version": field(f, "Protocol version"),
        "vm": field(f, "Client is a virtual machine") == "Yes",
        "license_status": head(field(f, "Licensing status")).parse::<u32>().unwrap(),
        "binding_expiration": head(field(f, "Remaining time (0 = forever)")).parse::<u32>().unwrap(),
        "app_id": id(field(f, "Application ID")),
        "sku_id": id(field(f, "SKU ID (aka Activation ID)")),
        "kms_id": id(field(f, "KMS ID (aka KMS counted ID)")),
        "cmid": id(field(f, "Client machine ID")),
        "previous_cmid": id(field(f, "Previous client machine ID")),
        "client_time": parse_time(field(f, "Client request timestamp (UTC)")).to_string(),
        "workstation": field(f, "Workstation name"),
        "n_policy": field(f, "N count policy (minimum clients)").parse::<u32>().unwrap(),
    })
}

fn expected_response_line(f: &BTreeMap<String, String>) -> Value {
    let mut v = json!({
        "conn": 0,
        "kind": "response",
        "version": field(f, "Protocol version"),
        "epid": field(f, "KMS host extended PID"),
        "cmid": id(field(f, "Client machine ID")),
        "client_time": parse_time(field(f, "Client request timestamp (UTC)")).to_string(),
        "count": field(f, "KMS host current active clients").parse::<u32>().unwrap(),
        "activation_interval": field(f, "Activation interval policy").parse::<u32>().unwrap(),
        "renewal_interval": field(f, "Renewal interval policy").parse::<u32>().unwrap(),
    });
    if let Some(hwid) = f.get("KMS host Hardware ID") {
        v.as_object_mut()
            .unwrap()
            .insert("hwid".into(), Value::String(hwid.clone()));
    }
    v
}

#[test]
fn captures_dissect_to_expected_fields() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pcaps");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "pcap") {
            continue;
        }
        let expected_path = path.with_extension("expected.json");
        let expected: Expected =
            serde_json::from_str(&std::fs::read_to_string(&expected_path).unwrap()).unwrap();
        let records = dissect::dissect(&std::fs::read(&path).unwrap()).unwrap();
        let lines: Vec<Value> = records.iter().map(Record::to_json).collect();
        let mut want = Vec::new();
        for response in &expected.response_fields {
            want.push(expected_request_line(&expected.request_fields));
            want.push(expected_response_line(response));
        }
        assert!(expected.client_errors.is_empty());
        assert_eq!(lines, want, "{}", path.display());
        seen += 1;
    }
    assert_eq!(seen, 2);
}

#[test]
fn truncated_and_garbled_captures_warn_but_never_panic() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pcaps/p-v6-ndr64-win11-like.pcap");
    let bytes = std::fs::read(path).unwrap();
    for cut in (24..bytes.len()).step_by(7) {
        let records = dissect::dissect(&bytes[..cut]).unwrap();
        // Whatever decodes is a prefix of the full output, plus warnings.
        let decoded = records
            .iter()
            .filter(|r| !matches!(r, Record::Warning { .. }))
            .count();
        assert!(decoded <= 2);
    }
    let mut garbled = bytes.clone();
    for i in (100..garbled.len()).step_by(13) {
        garbled[i] ^= 0x5a;
        let _ = dissect::dissect(&garbled).unwrap();
    }
    // A capture cut inside the response leaves a truncation warning.
    let records = dissect::dissect(&bytes[..bytes.len() - 250]).unwrap();
    assert!(
        records.iter().any(|r| matches!(r, Record::Warning { .. })),
        "{records:?}"
    );
}
