//! `dissect` on the packet captures gives exactly the expected records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kms_activation::dissect::{self, Dissector, Event, ReadRecords, Record};
use kms_activation::{Hwid, LicenseStatus, Uuid};
use serde::Deserialize;

use crate::vectors::{field, head, parse_time};

#[derive(Deserialize)]
struct Expected {
    request_fields: BTreeMap<String, String>,
    response_fields: Vec<BTreeMap<String, String>>,
    client_errors: Vec<String>,
}

fn id(s: &str) -> Uuid {
    head(s).parse().unwrap()
}

fn number(s: &str) -> u32 {
    head(s).parse().unwrap()
}

fn captures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pcaps");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    paths.sort();
    assert_eq!(paths.len(), 2, "{paths:?}");
    paths
}

/// Checks a request record against the fields vlmcs printed.
fn check_request(event: &Event, f: &BTreeMap<String, String>) {
    let Event::Request(body) = event else {
        panic!("expected a request, got {event:?}");
    };
    assert_eq!(body.version.to_string(), field(f, "Protocol version"));
    assert_eq!(
        body.is_virtual_machine(),
        field(f, "Client is a virtual machine") == "Yes"
    );
    assert_eq!(
        body.license_status,
        LicenseStatus::from(number(field(f, "Licensing status")))
    );
    assert_eq!(
        body.binding_expiration,
        number(field(f, "Remaining time (0 = forever)"))
    );
    assert_eq!(body.application_id, id(field(f, "Application ID")));
    assert_eq!(body.sku_id, id(field(f, "SKU ID (aka Activation ID)")));
    assert_eq!(body.kms_id, id(field(f, "KMS ID (aka KMS counted ID)")));
    assert_eq!(body.cmid, id(field(f, "Client machine ID")));
    assert_eq!(
        body.previous_cmid,
        id(field(f, "Previous client machine ID"))
    );
    assert_eq!(
        body.client_time,
        parse_time(field(f, "Client request timestamp (UTC)"))
    );
    assert_eq!(body.workstation, field(f, "Workstation name"));
    assert_eq!(
        body.n_policy,
        number(field(f, "N count policy (minimum clients)"))
    );
}

fn check_response(event: &Event, f: &BTreeMap<String, String>) {
    let Event::Response(body) = event else {
        panic!("expected a response, got {event:?}");
    };
    assert_eq!(body.version.to_string(), field(f, "Protocol version"));
    assert_eq!(body.epid, field(f, "KMS host extended PID"));
    assert_eq!(body.cmid, id(field(f, "Client machine ID")));
    assert_eq!(
        body.client_time,
        parse_time(field(f, "Client request timestamp (UTC)"))
    );
    assert_eq!(
        body.count,
        number(field(f, "KMS host current active clients"))
    );
    assert_eq!(
        body.activation_interval,
        number(field(f, "Activation interval policy"))
    );
    assert_eq!(
        body.renewal_interval,
        number(field(f, "Renewal interval policy"))
    );
    let hwid = f
        .get("KMS host Hardware ID")
        .map(|h| h.parse::<Hwid>().unwrap());
    assert_eq!(body.hwid, hwid);
}

#[test]
fn captures_dissect_to_expected_fields() {
    for path in captures() {
        let expected: Expected = serde_json::from_str(
            &std::fs::read_to_string(path.with_extension("expected.json")).unwrap(),
        )
        .unwrap();
        assert!(expected.client_errors.is_empty());
        let records = dissect::dissect(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            records.len(),
            2 * expected.response_fields.len(),
            "{}: {records:#?}",
            path.display()
        );
        for (pair, response) in records.chunks(2).zip(&expected.response_fields) {
            check_request(&pair[0].event, &expected.request_fields);
            check_response(&pair[1].event, response);
        }
        // Every record names its connection, and they come in capture order.
        let conversation = records[0].conversation.unwrap();
        assert_ne!(conversation.client, conversation.server);
        for pair in records.windows(2) {
            assert!(pair[0].packet < pair[1].packet, "{pair:#?}");
            assert!(pair[0].timestamp <= pair[1].timestamp);
        }
        for record in &records {
            assert_eq!(record.conversation.unwrap().client, conversation.client);
            assert_eq!(record.conversation.unwrap().server, conversation.server);
        }
    }
}

#[test]
fn streaming_in_any_piece_size_gives_the_same_records() {
    for path in captures() {
        let bytes = std::fs::read(&path).unwrap();
        let whole = dissect::dissect(&bytes).unwrap();
        for piece in [1, 3, 16, 100, 4096] {
            let mut dissector = Dissector::new();
            let mut records = Vec::new();
            for chunk in bytes.chunks(piece) {
                dissector.handle_input(chunk).unwrap();
                records.extend(std::iter::from_fn(|| dissector.poll_record()));
            }
            dissector.finish().unwrap();
            records.extend(std::iter::from_fn(|| dissector.poll_record()));
            assert_eq!(records, whole, "{} in pieces of {piece}", path.display());
        }
        let read: Vec<Record> = ReadRecords::new(bytes.as_slice())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read, whole);
    }
}

#[test]
fn truncated_and_garbled_captures_warn_but_never_panic() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pcaps/p-v6-ndr64-win11-like.pcap");
    let bytes = std::fs::read(path).unwrap();
    let events = |records: &[Record]| -> Vec<Event> {
        records
            .iter()
            .filter(|r| !matches!(r.event, Event::Warning { .. }))
            .map(|r| r.event.clone())
            .collect()
    };
    let full = events(&dissect::dissect(&bytes).unwrap());
    assert_eq!(full.len(), 2);
    let mut longest = 0;
    for cut in (24..bytes.len()).step_by(7) {
        let records = dissect::dissect(&bytes[..cut]).unwrap();
        // Whatever decodes is a prefix of the full output, plus warnings.
        let decoded = events(&records);
        assert_eq!(decoded[..], full[..decoded.len()], "cut at {cut}");
        longest = longest.max(decoded.len());
    }
    assert_eq!(longest, 2, "some cut keeps the whole exchange");
    let mut garbled = bytes.clone();
    for i in (100..garbled.len()).step_by(13) {
        garbled[i] ^= 0x5a;
        let _ = dissect::dissect(&garbled).unwrap();
    }
    // A capture cut inside the response leaves a truncation warning.
    let records = dissect::dissect(&bytes[..bytes.len() - 250]).unwrap();
    assert!(
        records.iter().any(
            |r| matches!(&r.event, Event::Warning { message } if message.contains("truncated"))
        ),
        "{records:?}"
    );
}

#[cfg(feature = "serde")]
#[test]
fn records_serialize_as_flat_json_objects() {
    use serde_json::json;

    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pcaps/p-v6-ndr64-win11-like.pcap");
    let records = dissect::dissect(&std::fs::read(path).unwrap()).unwrap();
    let request = serde_json::to_value(&records[0]).unwrap();
    assert_eq!(request["kind"], "request");
    assert_eq!(request["conn"], 0);
    assert_eq!(request["client"], "127.0.0.1:42664");
    assert_eq!(request["server"], "127.0.0.1:11688");
    assert_eq!(request["timestamp"], "2026-11-22T02:35:27.479404Z");
    assert_eq!(request["version"], "6.0");
    assert_eq!(request["client_time"], "2026-11-22T02:35:27Z");
    assert_eq!(request["sku_id"], "73111121-5638-40f6-bc11-f1d7b0d64300");
    assert_eq!(request["license_status"], 2);
    assert_eq!(request["workstation"], "pcap-client.example.net");
    let response = serde_json::to_value(&records[1]).unwrap();
    assert_eq!(response["kind"], "response");
    assert_eq!(
        response["epid"],
        "05426-00206-565-184251-03-1068-9200.0000-1222025"
    );
    assert_eq!(response["count"], 50);

    let error = Event::Error {
        hresult: kms_activation::HResult::KMS_ID_MISMATCH,
    };
    assert_eq!(
        serde_json::to_value(error).unwrap(),
        json!({"kind": "error", "hresult": "0xC004F042"})
    );
}
