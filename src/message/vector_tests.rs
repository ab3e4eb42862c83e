//! The captured vlmcs ⇄ vlmcsd conversations (`tests/data/*.json`) replayed
//! through the message codecs: decode, byte-exact re-encode on both sides,
//! verification, and tampering.

use bytes::BytesMut;
use serde_json::Value;

use super::LicenseStatus;
use super::*;
use crate::crypto::{Block, Cbc};
use crate::random::ScriptedRandom;
use crate::time::FileTime;

/// One request/response pair of KMS messages taken out of the RPC PDUs.
struct Exchange {
    request: Vec<u8>,
    /// `None` when the host answered with an HRESULT and no message.
    response: Option<Vec<u8>>,
}

struct Vector {
    name: String,
    json: Value,
    exchanges: Vec<Exchange>,
}

fn u32_at(pdu: &[u8], off: usize) -> usize {
    u32::from_le_bytes(pdu[off..off + 4].try_into().unwrap()) as usize
}

/// The KMS request inside a request PDU (NDR32 or NDR64 stub).
fn kms_request(pdu: &[u8]) -> Vec<u8> {
    let n = u32_at(pdu, 24);
    let start = if pdu.len() == 32 + n { 32 } else { 40 };
    assert_eq!(pdu.len(), start + n, "request PDU layout");
    assert_eq!(
        u32_at(pdu, if start == 32 { 28 } else { 32 }),
        n,
        "conformance"
    );
    pdu[start..start + n].to_vec()
}

/// The KMS response inside a response PDU, or `None` for an error reply.
fn kms_response(pdu: &[u8]) -> Option<Vec<u8>> {
    let m = u32_at(pdu, 24);
    if m == 0 {
        return None;
    }
    let start = if u32_at(pdu, 28) != 0 {
        assert_eq!(u32_at(pdu, 32), m);
        36
    } else if u32_at(pdu, 32) != 0 {
        assert_eq!(u32_at(pdu, 40), m);
        48
    } else {
        return None;
    };
    Some(pdu[start..start + m].to_vec())
}

fn load_vectors() -> Vec<Vector> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let mut vectors = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    for path in paths {
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut exchanges = Vec::new();
        for conn in json["connections"].as_array().unwrap() {
            let mut pending: Option<Vec<u8>> = None;
            for read in conn.as_array().unwrap() {
                let pdu = hex::decode(read["hex"].as_str().unwrap()).unwrap();
                match (read["dir"].as_str().unwrap(), pdu[2]) {
                    ("c2s", 0) => pending = Some(kms_request(&pdu)),
                    ("s2c", 2) => exchanges.push(Exchange {
                        request: pending.take().expect("response without request"),
                        response: kms_response(&pdu),
                    }),
                    _ => {}
                }
            }
        }
        vectors.push(Vector {
            name: path.file_stem().unwrap().to_string_lossy().into_owned(),
            json,
            exchanges,
        });
    }
    assert_eq!(vectors.len(), 7);
    vectors
}

fn field<'a>(fields: &'a Value, key: &str) -> &'a str {
    fields[key]
        .as_str()
        .unwrap_or_else(|| panic!("missing {key}"))
}

fn first_word<'a>(fields: &'a Value, key: &str) -> &'a str {
    field(fields, key).split(' ').next().unwrap()
}

fn parse_version(text: &str) -> Version {
    let (major, minor) = text.split_once('.').unwrap();
    Version::new(major.parse().unwrap(), minor.parse().unwrap())
}

fn parse_time(text: &str) -> FileTime {
    let t = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .unwrap()
        .and_utc();
    FileTime::try_from(t).unwrap()
}

/// The request body the vector's `request_fields` describe.
fn expected_request(fields: &Value) -> RequestBody {
    RequestBody {
        version: parse_version(field(fields, "Protocol version")),
        vm_info: match field(fields, "Client is a virtual machine") {
            "No" => 0,
            "Yes" => 1,
            other => panic!("VM flag {other}"),
        },
        license_status: LicenseStatus::from(
            first_word(fields, "Licensing status")
                .parse::<u32>()
                .unwrap(),
        ),
        binding_expiration: first_word(fields, "Remaining time (0 = forever)")
            .parse()
            .unwrap(),
        application_id: first_word(fields, "Application ID").parse().unwrap(),
        sku_id: first_word(fields, "SKU ID (aka Activation ID)")
            .parse()
            .unwrap(),
        kms_id: first_word(fields, "KMS ID (aka KMS counted ID)")
            .parse()
            .unwrap(),
        cmid: first_word(fields, "Client machine ID").parse().unwrap(),
        previous_cmid: first_word(fields, "Previous client machine ID")
            .parse()
            .unwrap(),
        n_policy: first_word(fields, "N count policy (minimum clients)")
            .parse()
            .unwrap(),
        client_time: parse_time(field(fields, "Client request timestamp (UTC)")),
        workstation: field(fields, "Workstation name").to_owned(),
    }
}

/// The response body the vector's `response_fields` describe.
fn expected_response(fields: &Value) -> ResponseBody {
    ResponseBody {
        version: parse_version(field(fields, "Protocol version")),
        epid: field(fields, "KMS host extended PID").to_owned(),
        cmid: field(fields, "Client machine ID").parse().unwrap(),
        client_time: parse_time(field(fields, "Client request timestamp (UTC)")),
        count: field(fields, "KMS host current active clients")
            .parse()
            .unwrap(),
        activation_interval: field(fields, "Activation interval policy").parse().unwrap(),
        renewal_interval: field(fields, "Renewal interval policy").parse().unwrap(),
        hwid: fields
            .get("KMS host Hardware ID")
            .map(|v| v.as_str().unwrap().parse().unwrap()),
    }
}

fn block(bytes: &[u8]) -> Block {
    bytes.try_into().unwrap()
}

/// The host randomness behind a captured V5/V6 response: R (and `IV_s`).
fn host_randomness(request: &[u8], response: &[u8], version: Version) -> Vec<u8> {
    let iv_c = block(&request[4..20]);
    let iv = block(&response[4..20]);
    let cbc = if version == Version::V5 {
        Cbc::V5
    } else {
        Cbc::V6
    };
    let mut plain = response[20..].to_vec();
    cbc.decrypt(&iv, &mut plain);
    let pid_size = u32_at(&plain, 4);
    let rxi_at = 44 + pid_size;
    let r = crate::crypto::xor_block(&block(&plain[rxi_at..rxi_at + 16]), &cbc.decrypt_iv(&iv_c));
    let mut script = r.to_vec();
    if version == Version::V6 {
        script.extend_from_slice(&iv);
    }
    script
}

#[test]
fn vectors_decode_reencode_and_verify() {
    let mut pairs = 0;
    for vector in load_vectors() {
        let expected_req = expected_request(&vector.json["request_fields"]);
        let responses = vector.json["response_fields"].as_array().unwrap();
        if vector.name == "strict-bad-version" {
            let [exchange] = &vector.exchanges[..] else {
                panic!()
            };
            assert_eq!(
                decode_request(&exchange.request).unwrap_err(),
                Error::UnsupportedVersion { major: 7, minor: 0 }
            );
            assert_eq!(request_version(&exchange.request), Some(Version::new(7, 0)));
            assert!(exchange.response.is_none());
            continue;
        }
        for (i, exchange) in vector.exchanges.iter().enumerate() {
            let name = format!("{} #{i}", vector.name);
            // (a) the host decodes exactly the request fields.
            let received = decode_request(&exchange.request).unwrap();
            let body = received.body();
            assert_eq!(body.version, expected_req.version, "{name}");
            assert_eq!(body.vm_info, expected_req.vm_info, "{name}");
            assert_eq!(body.license_status, expected_req.license_status, "{name}");
            assert_eq!(
                body.binding_expiration, expected_req.binding_expiration,
                "{name}"
            );
            assert_eq!(body.application_id, expected_req.application_id, "{name}");
            assert_eq!(body.sku_id, expected_req.sku_id, "{name}");
            assert_eq!(body.kms_id, expected_req.kms_id, "{name}");
            assert_eq!(body.cmid, expected_req.cmid, "{name}");
            assert_eq!(body.previous_cmid, expected_req.previous_cmid, "{name}");
            assert_eq!(body.client_time, expected_req.client_time, "{name}");
            assert_eq!(body.workstation, expected_req.workstation, "{name}");
            assert_eq!(body.n_policy, expected_req.n_policy, "{name}");
            assert_eq!(body, &expected_req, "{name}");
            assert!(received.mac_ok(), "{name}");
            assert_eq!(received.extra_len(), 0);
            assert_eq!(request_version(&exchange.request), Some(body.version));

            // (b) the client re-encodes the captured request byte for byte.
            let version = body.version;
            let iv_c = if version == Version::V4 {
                Vec::new()
            } else {
                exchange.request[4..20].to_vec()
            };
            let mut rng = ScriptedRandom::new(iv_c);
            let mut out = BytesMut::new();
            let sent = encode_request(&expected_req, &mut rng, &mut out).unwrap();
            assert_eq!(rng.remaining(), 0);
            assert_eq!(hex::encode(&out), hex::encode(&exchange.request), "{name}");

            let Some(response) = &exchange.response else {
                assert_eq!(vector.name, "strict-unknown-kmsid");
                continue;
            };
            let fields = &responses[i];
            let expected_resp = expected_response(fields);
            assert_eq!(
                first_word(fields, "Size of KMS Response")
                    .parse::<usize>()
                    .unwrap(),
                response.len()
            );

            // (c) the host re-encodes the captured response byte for byte.
            let script = if version == Version::V4 {
                Vec::new()
            } else {
                host_randomness(&exchange.request, response, version)
            };
            let mut rng = ScriptedRandom::new(script);
            let answer = ResponseBody::answering(
                body,
                expected_resp.epid.clone(),
                expected_resp.count,
                expected_resp.activation_interval,
                expected_resp.renewal_interval,
                expected_resp.hwid,
            );
            assert_eq!(answer, expected_resp, "{name}");
            let mut out = BytesMut::new();
            received
                .encode_response(&answer, &mut rng, &mut out)
                .unwrap();
            assert_eq!(rng.remaining(), 0);
            assert_eq!(hex::encode(&out), hex::encode(response), "{name}");

            // (d) the client verifies it and reads the response fields.
            let verified = sent.verify_response(response).unwrap();
            assert_eq!(verified.body, expected_resp, "{name}");
            assert!(verified.warnings.is_empty(), "{name}");
            assert_eq!(decode_response_unverified(response).unwrap(), expected_resp);
            pairs += 1;
        }
    }
    assert_eq!(pairs, 7);
}

/// Plaintext offsets (from KMS byte 20) that no V5 check covers: the ePID
/// characters. A single-byte change of ciphertext garbles one plaintext block
/// and flips one byte of the next, so a change goes unnoticed when both land
/// in the ePID characters. V5 has no MAC over the response base.
fn v5_unprotected(pos: usize, pid_size: usize) -> bool {
    let epid = 8..8 + pid_size - 2;
    let Some(rel) = pos.checked_sub(20) else {
        return false;
    };
    let garbled_start = rel - rel % 16;
    epid.contains(&garbled_start)
        && epid.contains(&(garbled_start + 15))
        && epid.contains(&(rel + 16))
}

#[test]
fn tampering_any_byte_of_a_captured_response_is_detected() {
    let mut checked = 0;
    for vector in load_vectors() {
        for exchange in &vector.exchanges {
            let Some(response) = &exchange.response else {
                continue;
            };
            let received = decode_request(&exchange.request).unwrap();
            let version = received.version();
            let mut rng = ScriptedRandom::new(exchange.request.get(4..20).unwrap_or_default());
            let sent = encode_request(received.body(), &mut rng, &mut BytesMut::new()).unwrap();
            let pid_size = if version == Version::V4 {
                u32_at(response, 4)
            } else {
                // The ePID in UTF-16 with its NUL, from the decrypted response.
                let body = sent.verify_response(response).unwrap().body;
                (body.epid.encode_utf16().count() + 1) * 2
            };
            for pos in 0..response.len() {
                for mask in [0x01, 0x80, 0xff] {
                    let mut bad = response.clone();
                    bad[pos] ^= mask;
                    let result = sent.verify_response(&bad);
                    if version == Version::V5 && v5_unprotected(pos, pid_size) {
                        continue;
                    }
                    assert!(
                        result.is_err(),
                        "{}: byte {pos} ^ {mask:#x} accepted",
                        vector.name
                    );
                    checked += 1;
                }
            }
            // The right variant for chosen positions.
            let flip = |pos: usize, mask: u8| {
                let mut bad = response.clone();
                bad[pos] ^= mask;
                sent.verify_response(&bad).unwrap_err()
            };
            let last = response.len() - 1;
            assert!(matches!(flip(2, 1), Error::ResponseVersionMismatch { .. }));
            match version.major {
                4 => {
                    assert_eq!(flip(4, 1), Error::EpidSize { size: 99 });
                    assert_eq!(flip(last, 1), Error::V4Mac);
                    assert_eq!(flip(8, 1), Error::V4Mac);
                    assert_eq!(flip(4, 0x20), Error::EpidTerminator);
                }
                5 => {
                    assert_eq!(flip(5, 1), Error::IvMismatch);
                    assert_eq!(flip(last, 0xff), Error::Padding);
                    // Garbles part of the ePID, flips a CMID byte.
                    assert_eq!(flip(20 + 106 - 16, 1), Error::CmidMismatch);
                    // Garbles RandomXoredIVs, flips a Hash byte.
                    assert_eq!(flip(20 + 160, 1), Error::SaltHash);
                }
                _ => {
                    // IV_s byte 0 flips the inner minor version.
                    assert_eq!(
                        flip(4, 1),
                        Error::InnerVersionMismatch {
                            outer: Version::V6,
                            inner: Version::new(6, 1)
                        }
                    );
                    // IV_s byte 4 flips PIDSize.
                    assert_eq!(flip(8, 1), Error::EpidSize { size: 99 });
                    // IV_s byte 8 flips an ePID character (and P0).
                    assert_eq!(flip(12, 1), Error::Hmac);
                    assert_eq!(flip(last, 0xff), Error::Padding);
                    // Garbles the Hash, flips a XoredIVs byte.
                    assert_eq!(flip(20 + 200 - 16, 1), Error::XoredIvsMismatch);
                    // Garbles the Hash, flips a HwId byte.
                    assert_eq!(flip(20 + 180 - 16, 1), Error::SaltHash);
                    // Flips a byte of the HMAC, garbling the HwId/XoredIVs block.
                    assert_eq!(flip(20 + 220 - 16, 1), Error::XoredIvsMismatch);
                    // Garbles the HMAC block's neighbour (HMAC ‖ pad): flips a pad byte.
                    assert_eq!(flip(20 + 235 - 16, 1), Error::Padding);
                }
            }
        }
    }
    assert!(checked > 3000);
}
