//! The `kms-catalog` example: every catalog GVLK resolves to its SKU, ePID
//! checks exit non-zero on problems, unknown builds are refused, products
//! are found by name, and searches need every word.

use kms_activation::product;
use serde_json::Value;

use crate::loopback::kms_catalog;

fn json(out: &std::process::Output) -> Value {
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap()
}

#[test]
fn every_catalog_gvlk_gives_its_sku() {
    let mut signed = 0;
    for sku in product::skus() {
        let out = kms_catalog(&["--key", &sku.gvlk().to_lowercase(), "--json"]);
        assert!(
            out.status.success(),
            "{}: {}",
            sku.gvlk(),
            String::from_utf8_lossy(&out.stderr)
        );
        let v = json(&out);
        let found: kms_activation::Uuid = v["sku_id"].as_str().unwrap().parse().unwrap();
        assert!(
            product::skus_with_id(found)
                .iter()
                .any(|s| s.gvlk() == sku.gvlk()),
            "{} → {found}",
            sku.gvlk()
        );
        if v["checksum_ok"].is_null() {
            signed += 1;
            assert!(
                v["note"]
                    .as_str()
                    .unwrap()
                    .contains("signature, not a checksum")
            );
            assert_eq!(v["format"], "pre-windows-8");
        } else {
            assert_eq!(v["checksum_ok"], true);
        }
    }
    assert_eq!(signed, 48);
}

#[test]
fn epid_checks_and_generation() {
    // An ePID in vlmcsd's style with LCID 1076 (isiXhosa) is consistent.
    let out = kms_catalog(&[
        "--epid",
        "03612-00206-566-321466-03-1076-17763.0000-1062019",
        "--json",
    ]);
    assert_eq!(json(&out)["problems"], Value::Array(vec![]));
    assert!(out.status.success());
    // Problems give a non-zero exit.
    let out = kms_catalog(&[
        "--epid",
        "03612-00206-566-321466-03-1234-17763.0000-1062019",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("unknown lcid 1234"));
    // Unknown builds are refused, by the generator and the validator.
    let out = kms_catalog(&[
        "--new-epid",
        "47f3b983-7c53-4d45-abc6-bcd91e2dd90a",
        "--build",
        "1234",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = kms_catalog(&["--epid", "55041-00206-566-321466-03-1033-1234.0000-1062019"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("unknown build 1234"));
    // A product name works as well as a GUID, and the ePID it makes validates.
    let out = kms_catalog(&[
        "--new-epid",
        "office ltsc professional plus 2021",
        "--build",
        "20348",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made = json(&out);
    assert_eq!(made["csvlk"], "Office LTSC 2021");
    let out = kms_catalog(&["--epid", made["epid"].as_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn search_needs_every_word() {
    let out = kms_catalog(&["--search", "windows 11 enterprise", "--json"]);
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(names[0], "Windows 10/11 Enterprise");
    assert!(names.len() < 54, "{} rows", names.len());
    assert!(
        names
            .iter()
            .all(|n| n.contains("11") && n.contains("Enterprise")),
        "{names:?}"
    );
}

/// Generated ePIDs for every CSVLK with ePID data, on every catalog build
/// usable for ePIDs, with every known LCID, validate without problems.
#[test]
fn generated_epids_with_every_lcid_validate() {
    use chrono::{TimeZone, Utc};
    use kms_activation::epid::{self, KNOWN_LCIDS};
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    assert!(KNOWN_LCIDS.len() > 150);
    assert!(KNOWN_LCIDS.iter().any(|(id, _)| *id == 1076));
    let mut checked = 0;
    for csvlk in product::csvlks()
        .iter()
        .filter(|c| c.group_id().is_some() && c.key_ids().is_some())
    {
        for build in product::builds().iter().filter(|b| b.is_usable_for_epid()) {
            for (i, (lcid, _)) in KNOWN_LCIDS.iter().enumerate().step_by(7) {
                let mut rng = kms_activation::ScriptedRandom::new(vec![i as u8; 64]);
                let Ok(e) = epid::generate(csvlk, build.build(), now, &mut rng) else {
                    continue;
                };
                let e = kms_activation::Epid::new(
                    e.platform_id(),
                    e.group_id(),
                    e.key_id(),
                    e.channel(),
                    *lcid,
                    e.build(),
                    e.activation_date(),
                )
                .unwrap();
                assert_eq!(e.problems_for(csvlk, now), vec![], "{e}");
                checked += 1;
            }
        }
    }
    assert!(checked > 500, "{checked}");
}

#[test]
fn a_wrong_checksum_and_an_unknown_hresult_exit_1() {
    // Microsoft's GVLK of Windows 10/11 Enterprise, and the same key with
    // its last two characters swapped: no longer a valid key.
    let out = kms_catalog(&["--key", "NPPR9-FWDCX-D2C8J-H872K-2YT43"]);
    assert_eq!(out.status.code(), Some(0));
    let out = kms_catalog(&["--key", "NPPR9-FWDCX-D2C8J-H872K-2Y4T3", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["checksum_ok"], false);
    let out = kms_catalog(&["--key", "NPPR9-FWDCX-D2C8J-H872K-2Y4T3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("checksum WRONG"));

    // 0xC004F038 is in Microsoft's table of activation errors; 0x12345678 is not.
    let out = kms_catalog(&["--hresult", "0xC004F038"]);
    assert_eq!(out.status.code(), Some(0));
    let out = kms_catalog(&["--hresult", "0x12345678", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(json(&out)["description"].is_null());
    // Not an HRESULT at all is a bad argument.
    let out = kms_catalog(&["--hresult", "banana"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_states_the_exit_statuses() {
    let out = kms_catalog(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for line in [
        "Exit status:",
        "  0  found",
        "  1  looked up, and something is wrong",
        "  2  a bad argument",
    ] {
        assert!(help.contains(line), "{line:?} missing from\n{help}");
    }
}
