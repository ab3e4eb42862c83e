//! Which clients each KMS host key (CSVLK) activates, checked against
//! Microsoft's tables, never against the crate's own rules.
//!
//! Oracles (copied under `tests/data/reference/`):
//! * `csvlk-coverage.md`: Microsoft's "activation versions" table (KMS
//!   planning guide) and the 2009 planning guide's Server 2008 / 2008 R2
//!   product-key groups;
//! * `gvlk-windows-current.csv`: Microsoft's published GVLKs, one per
//!   edition.
//!
//! Each row of the table is written below as the editions of the CSV it
//! lists; every other edition of the CSV must be refused, except the few
//! that Microsoft counts in one KMS group with a listed edition (the
//! table names families, the CSV single editions; see [`SAME_GROUP`]).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use kms_activation::product::{self, Csvlk};
use kms_activation::{ScriptedRandom, Uuid, epid};

const CSV: &str = include_str!("data/reference/gvlk-windows-current.csv");
const TABLE: &str = include_str!("data/reference/csvlk-coverage.md");

/// `edition → GVLK` from Microsoft's CSV.
fn gvlks() -> BTreeMap<&'static str, &'static str> {
    CSV.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (edition, gvlk) = l.rsplit_once(',').unwrap();
            (edition, gvlk.trim())
        })
        .collect()
}

fn kms_id_of(edition: &str) -> Uuid {
    let gvlk = gvlks()[edition];
    product::sku_by_gvlk(gvlk)
        .unwrap_or_else(|| panic!("{edition}: GVLK {gvlk} is not in the catalog"))
        .kms_id()
}

fn csvlk(id: &str, name: &str) -> &'static Csvlk {
    let c = product::csvlk(id.parse().unwrap()).unwrap();
    assert_eq!(c.name(), name, "{id}");
    c
}

// ------------------------------------------------------------ the table

const SERVER_2025: &[&str] = &[
    "Windows Server 2025 Standard",
    "Windows Server 2025 Datacenter",
    "Windows Server 2025 Datacenter: Azure Edition",
];
const SERVER_2022: &[&str] = &[
    "Windows Server 2022 Standard",
    "Windows Server 2022 Datacenter",
    "Windows Server 2022 Datacenter: Azure Edition",
];
/// Semi-Annual Channel releases counted with Server 2019 (1809 to 20H2).
const SAC_2019: &[&str] = &[
    "Windows Server Standard (SAC 1809-20H2)",
    "Windows Server Datacenter (SAC 1809-20H2)",
];
/// Semi-Annual Channel releases of the Server 2016 generation.
const SAC_2016: &[&str] = &[
    "Windows Server Standard (1803)",
    "Windows Server Datacenter (1803)",
    "Windows Server Standard (1709)",
    "Windows Server Datacenter (1709)",
];
const SERVER_2019: &[&str] = &[
    "Windows Server 2019 Standard",
    "Windows Server 2019 Datacenter",
    "Windows Server 2019 Essentials",
];
const SERVER_2016: &[&str] = &[
    "Windows Server 2016 Standard",
    "Windows Server 2016 Datacenter",
    "Windows Server 2016 Essentials",
];
const SERVER_2012_R2: &[&str] = &[
    "Windows Server 2012 R2 Standard",
    "Windows Server 2012 R2 Datacenter",
    "Windows Server 2012 R2 Essentials",
];
const SERVER_2012: &[&str] = &[
    "Windows Server 2012 Standard",
    "Windows Server 2012 MultiPoint Standard",
    "Windows Server 2012 MultiPoint Premium",
    "Windows Server 2012 Datacenter",
    "Windows Server 2012 Essentials",
];
const SERVER_2008_R2_A: &[&str] = &[
    "Windows Server 2008 R2 Web",
    "Windows Server 2008 R2 HPC edition",
];
const SERVER_2008_R2_B: &[&str] = &[
    "Windows Server 2008 R2 Standard",
    "Windows Server 2008 R2 Enterprise",
];
const SERVER_2008_R2_C: &[&str] = &[
    "Windows Server 2008 R2 Datacenter",
    "Windows Server 2008 R2 for Itanium-based Systems",
];
const SERVER_2008_A: &[&str] = &["Windows Web Server 2008", "Windows Server 2008 HPC"];
const SERVER_2008_B: &[&str] = &[
    "Windows Server 2008 Standard",
    "Windows Server 2008 Standard without Hyper-V",
    "Windows Server 2008 Enterprise",
    "Windows Server 2008 Enterprise without Hyper-V",
];
const SERVER_2008_C: &[&str] = &[
    "Windows Server 2008 Datacenter",
    "Windows Server 2008 Datacenter without Hyper-V",
    "Windows Server 2008 for Itanium-Based Systems",
];
/// "Windows 11 Enterprise LTSC 2024": one GVLK with Windows 10 LTSC 2021 and
/// 2019 in the CSV, so the table's line "without Windows 11 Enterprise LTSC
/// 2024" (Server 2022) cannot be told apart by GVLK; LTSC 2019 is listed for
/// Server 2022 and 2019, so the shared GVLK must activate there.
const LTSC_2019: &[&str] = &[
    "Windows 11 Enterprise LTSC 2024 / Windows 10 Enterprise LTSC 2021 and 2019",
    "Windows 11 Enterprise N LTSC 2024 / Windows 10 Enterprise N LTSC 2021 and 2019",
];
const LTSB_2016: &[&str] = &[
    "Windows 10 Enterprise LTSB 2016",
    "Windows 10 Enterprise N LTSB 2016",
];
const LTSB_2015: &[&str] = &[
    "Windows 10 Enterprise LTSB 2015",
    "Windows 10 Enterprise N LTSB 2015",
];
/// "Windows 10 Enterprise/N, Pro/N, Pro for Workstations/N, Education/N".
const WINDOWS_10: &[&str] = &[
    "Windows 11/10 Enterprise",
    "Windows 11/10 Enterprise N",
    "Windows 11/10 Pro",
    "Windows 11/10 Pro N",
    "Windows 11/10 Pro for Workstations",
    "Windows 11/10 Pro for Workstations N",
    "Windows 11/10 Education",
    "Windows 11/10 Education N",
];
/// "Windows 8.1 Enterprise, Pro".
const WINDOWS_8_1: &[&str] = &["Windows 8.1 Enterprise", "Windows 8.1 Pro"];
/// "Windows 7 Enterprise, Professional".
const WINDOWS_7: &[&str] = &["Windows 7 Enterprise", "Windows 7 Professional"];
const VISTA: &[&str] = &[
    "Windows Vista Business",
    "Windows Vista Business N",
    "Windows Vista Enterprise",
    "Windows Vista Enterprise N",
];
const SERVERS_TO_2012_R2: &[&[&str]] = &[
    SERVER_2012_R2,
    SERVER_2012,
    SERVER_2008_R2_A,
    SERVER_2008_R2_B,
    SERVER_2008_R2_C,
    SERVER_2008_A,
    SERVER_2008_B,
    SERVER_2008_C,
];

/// Editions of the CSV the table does not name but which Microsoft counts
/// in one KMS group with a named edition: they share its fate, whichever it
/// is. (The table lists "Pro", "Pro for Workstations", "Enterprise" and
/// their N editions as families; Pro Education, the E editions and `IoT`
/// Enterprise LTSC, which counts in the Windows 10/11 volume group, come
/// with them.)
const SAME_GROUP: &[(&str, &str)] = &[
    ("Windows 11/10 Pro Education", "Windows 11/10 Pro"),
    ("Windows 11/10 Pro Education N", "Windows 11/10 Pro N"),
    (
        "Windows 11/10 Pro for Workstations N",
        "Windows 11/10 Pro for Workstations",
    ),
    (
        "Windows IoT Enterprise LTSC 2024 / 2021",
        "Windows 11/10 Enterprise",
    ),
    ("Windows 8.1 Pro N", "Windows 8.1 Pro"),
    ("Windows 8.1 Enterprise N", "Windows 8.1 Enterprise"),
    ("Windows 7 Professional N", "Windows 7 Professional"),
    ("Windows 7 Professional E", "Windows 7 Professional"),
    ("Windows 7 Enterprise N", "Windows 7 Enterprise"),
    ("Windows 7 Enterprise E", "Windows 7 Enterprise"),
];

/// One row of the table: the host key, and the CSV editions it activates.
struct Row {
    csvlk_id: &'static str,
    csvlk_name: &'static str,
    /// The row's text in `csvlk-coverage.md` starts with this.
    markdown: &'static str,
    activates: Vec<&'static [&'static str]>,
}

fn rows() -> Vec<Row> {
    let clients_2019 = [
        LTSC_2019,
        LTSB_2016,
        LTSB_2015,
        WINDOWS_10,
        WINDOWS_8_1,
        WINDOWS_7,
    ];
    let mut server_2019 = vec![SAC_2019, SAC_2016, SERVER_2019, SERVER_2016];
    server_2019.extend(SERVERS_TO_2012_R2);
    server_2019.extend(clients_2019);
    let mut server_2022 = vec![SERVER_2022];
    server_2022.extend(server_2019.iter().copied());
    let mut server_2025 = vec![SERVER_2025];
    server_2025.extend(server_2022.iter().copied());
    // Server 2016: "Semi-Annual Channel" are the releases of its own
    // generation; 1809 and later count with Server 2019, a newer product.
    let mut server_2016 = vec![SAC_2016, SERVER_2016];
    server_2016.extend(SERVERS_TO_2012_R2);
    server_2016.extend([LTSB_2016, LTSB_2015, WINDOWS_10, WINDOWS_8_1, WINDOWS_7]);
    // Windows 10 client key: "Pro for Workstations" without its N edition.
    let windows_10_client: &'static [&'static str] = &[
        "Windows 11/10 Enterprise",
        "Windows 11/10 Enterprise N",
        "Windows 11/10 Pro",
        "Windows 11/10 Pro N",
        "Windows 11/10 Pro for Workstations",
        "Windows 11/10 Education",
        "Windows 11/10 Education N",
    ];
    vec![
        Row {
            csvlk_id: "84e331f6-4279-48c4-ab10-b75139181351",
            csvlk_name: "Windows Server 2025",
            markdown: "| Windows Server 2025 |",
            activates: server_2025,
        },
        Row {
            csvlk_id: "661f7658-7035-4b4c-9f35-010682943ec2",
            csvlk_name: "Windows Server 2022",
            markdown: "| Windows Server 2022 |",
            activates: server_2022,
        },
        Row {
            csvlk_id: "2e7a9ad1-a849-4b56-babe-17d5a29fe4b4",
            csvlk_name: "Windows Server 2019",
            markdown: "| Windows Server 2019 |",
            activates: server_2019,
        },
        Row {
            csvlk_id: "d6992aac-29e7-452a-bf10-bbfb8ccabe59",
            csvlk_name: "Windows Server 2016",
            markdown: "| Windows Server 2016 |",
            activates: server_2016,
        },
        Row {
            csvlk_id: "0724cb7d-3437-4cb7-93cb-830375d0079d",
            csvlk_name: "Windows 10 2015 VL",
            markdown: "| Windows 10 (client host key) |",
            activates: vec![LTSB_2015, windows_10_client, WINDOWS_8_1, WINDOWS_7],
        },
    ]
}

/// Checks `key` against a row: listed editions activated, the rest
/// refused (or, for [`SAME_GROUP`], as their named sibling).
fn check_row(key: &Csvlk, listed: &[&str]) -> Vec<String> {
    let mut wrong = Vec::new();
    let listed_here = |edition: &str| listed.contains(&edition);
    for edition in gvlks().keys() {
        let expected = if listed_here(edition) {
            true
        } else if let Some((_, sibling)) = SAME_GROUP.iter().find(|(e, _)| e == edition) {
            listed_here(sibling)
        } else {
            false
        };
        if key.activates(kms_id_of(edition)) != expected {
            wrong.push(format!(
                "{}: {edition} should be {}",
                key.name(),
                if expected { "activated" } else { "refused" }
            ));
        }
    }
    wrong
}

#[test]
fn the_markdowns_are_the_reference_file_rows() {
    for row in rows() {
        assert!(
            TABLE.lines().any(|l| l.starts_with(row.markdown)),
            "{} is not a row of csvlk-coverage.md",
            row.markdown
        );
    }
    for edition in SAME_GROUP.iter().flat_map(|(a, b)| [a, b]) {
        assert!(gvlks().contains_key(edition), "{edition} not in the CSV");
    }
}

#[test]
fn each_row_of_microsofts_table() {
    let mut wrong = Vec::new();
    for row in rows() {
        let listed: Vec<&str> = row.activates.iter().copied().flatten().copied().collect();
        for edition in &listed {
            assert!(gvlks().contains_key(edition), "{edition} not in the CSV");
        }
        let key = csvlk(row.csvlk_id, row.csvlk_name);
        wrong.extend(check_row(key, &listed));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The Azure-only and lab keys of a Windows Server generation cover what
/// its production key covers.
#[test]
fn variants_of_a_server_key_cover_the_same_row() {
    let variants = [
        (
            "82fcf64d-f9dd-4411-9c79-f2eed16d4eb8",
            "Windows Server 2025 (Azure-only)",
            "84e331f6-4279-48c4-ab10-b75139181351",
        ),
        (
            "e73aabfa-12bc-4705-b551-2dd076bebc7d",
            "Windows Server 2022 (Azure-only)",
            "661f7658-7035-4b4c-9f35-010682943ec2",
        ),
    ];
    for (variant, name, production) in variants {
        let variant = csvlk(variant, name);
        let production = product::csvlk(production.parse().unwrap()).unwrap();
        for edition in gvlks().keys() {
            let kms = kms_id_of(edition);
            assert_eq!(
                variant.activates(kms),
                production.activates(kms),
                "{name}: {edition}"
            );
        }
    }
}

/// "A key never activates a newer product": the 2022 key refuses every
/// Server 2025 edition, the 2019 key every Server 2022 edition.
#[test]
fn never_a_newer_product() {
    let s2022 = csvlk(
        "661f7658-7035-4b4c-9f35-010682943ec2",
        "Windows Server 2022",
    );
    let s2019 = csvlk(
        "2e7a9ad1-a849-4b56-babe-17d5a29fe4b4",
        "Windows Server 2019",
    );
    for edition in SERVER_2025 {
        assert!(!s2022.activates(kms_id_of(edition)), "{edition}");
        assert!(!s2019.activates(kms_id_of(edition)), "{edition}");
    }
    for edition in SERVER_2022 {
        assert!(!s2019.activates(kms_id_of(edition)), "{edition}");
    }
}

// ------------------------------------------------- Server 2008 / 2008 R2

const R2_A: &str = "f73d1bcd-0802-47dd-b2d9-81bf2f8c0744";
const R2_B: &str = "c99b641f-c4ea-4e63-bec3-5ed2ccd0f357";
const R2_C: &str = "8fe15d04-fc66-40e6-bf34-942481e06fd8";
const V_A: &str = "c448fa06-49d1-44ec-82bb-0085545c3b51";
const V_B: &str = "56df4151-1f9f-41bf-acaa-2941c071872b";
const V_C: &str = "c90d1b4e-8aa8-439e-8b9e-b6d6b6a6d975";

/// The 2009 planning guide's groups: Client VL < A < B < C; a key activates
/// its group and every lower one, of its generation and of the Vista /
/// 2008 generation; never Windows 8 or later, never Server 2012 or later.
#[test]
fn server_2008_channels() {
    let client_vl_7: &[&[&str]] = &[WINDOWS_7, VISTA];
    let cases: [(&str, &str, Vec<&[&str]>); 6] = [
        (
            R2_A,
            "Windows Server 2008 R2 A (Web & HPC)",
            vec![SERVER_2008_R2_A, SERVER_2008_A],
        ),
        (
            R2_B,
            "Windows Server 2008 R2 B (Standard & Enterprise)",
            vec![
                SERVER_2008_R2_A,
                SERVER_2008_R2_B,
                SERVER_2008_A,
                SERVER_2008_B,
            ],
        ),
        (
            R2_C,
            "Windows Server 2008 R2 C (Datacenter)",
            vec![
                SERVER_2008_R2_A,
                SERVER_2008_R2_B,
                SERVER_2008_R2_C,
                SERVER_2008_A,
                SERVER_2008_B,
                SERVER_2008_C,
            ],
        ),
        (
            V_A,
            "Windows Server 2008 A (Web & HPC)",
            vec![SERVER_2008_A],
        ),
        (
            V_B,
            "Windows Server 2008 B (Standard & Enterprise)",
            vec![SERVER_2008_A, SERVER_2008_B],
        ),
        (
            V_C,
            "Windows Server 2008 C (Datacenter)",
            vec![SERVER_2008_A, SERVER_2008_B, SERVER_2008_C],
        ),
    ];
    let mut wrong = Vec::new();
    for (id, name, mut groups) in cases {
        // Client VL: Windows 7 (with its N/E editions) for the R2 keys,
        // Vista for both generations.
        if name.contains("R2") {
            groups.extend(client_vl_7);
        } else {
            groups.push(VISTA);
        }
        let mut listed: Vec<&str> = groups.into_iter().flatten().copied().collect();
        if name.contains("R2") {
            listed.extend([
                "Windows 7 Professional N",
                "Windows 7 Professional E",
                "Windows 7 Enterprise N",
                "Windows 7 Enterprise E",
            ]);
        }
        wrong.extend(check_row(csvlk(id, name), &listed));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The reported bug: a host holding only the Server 2008 R2 channel A key
/// answered a Server 2008 R2 Datacenter client.
#[test]
fn server_2008_r2_a_refuses_datacenter_and_activates_windows_7() {
    let a = csvlk(R2_A, "Windows Server 2008 R2 A (Web & HPC)");
    assert!(!a.activates(kms_id_of("Windows Server 2008 R2 Datacenter")));
    assert!(!a.activates(kms_id_of("Windows Server 2008 R2 Standard")));
    assert!(a.activates(kms_id_of("Windows Server 2008 R2 Web")));
    assert!(a.activates(kms_id_of("Windows 7 Professional")));
    assert!(a.activates(kms_id_of("Windows Vista Business")));
    let b = csvlk(R2_B, "Windows Server 2008 R2 B (Standard & Enterprise)");
    assert!(b.activates(kms_id_of("Windows Server 2008 R2 Web")));
    assert!(b.activates(kms_id_of("Windows Server 2008 R2 Enterprise")));
    assert!(!b.activates(kms_id_of("Windows Server 2008 R2 Datacenter")));
    let c = csvlk(R2_C, "Windows Server 2008 R2 C (Datacenter)");
    for edition in [SERVER_2008_R2_A, SERVER_2008_R2_B, SERVER_2008_R2_C].concat() {
        assert!(c.activates(kms_id_of(edition)), "{edition}");
    }
    assert!(!c.activates(kms_id_of("Windows Server 2012 Standard")));
    assert!(!c.activates(kms_id_of("Windows 8 Pro")));
}

// ------------------------------------------------ every published GVLK

/// Every GVLK Microsoft publishes is in the catalog, and a host holding
/// every key activates it.
#[test]
fn every_published_gvlk_is_activated_by_some_key() {
    let gvlks = gvlks();
    assert_eq!(gvlks.len(), 78, "editions in the CSV");
    let held: Vec<&Csvlk> = product::csvlks()
        .iter()
        .filter(|c| c.id().is_some() && c.group_id().is_some() && c.key_ids().is_some())
        .collect();
    for (edition, gvlk) in gvlks {
        let sku = product::sku_by_gvlk(gvlk)
            .unwrap_or_else(|| panic!("{edition}: {gvlk} is not in the catalog"));
        let item = sku.kms_item().unwrap();
        assert!(
            !item.is_retail() && !item.is_preview(),
            "{edition}: {}",
            item.name()
        );
        assert!(
            held.iter().any(|c| c.activates(item.id())),
            "{edition} ({gvlk}): no host key activates {}",
            item.name()
        );
    }
}

/// The Server 2025 Datacenter: Azure Edition key Microsoft publishes.
#[test]
fn server_2025_azure_edition_gvlk() {
    let sku = product::sku_by_gvlk("XGN3F-F394H-FD2MY-PP6FD-8MCRC").unwrap();
    assert_eq!(sku.kms_item().unwrap().name(), "Windows Server 2025");
    assert!(sku.name().contains("Azure Edition"));
}

// ------------------------------------------------------ ePID agreement

/// The client-side ePID check follows the same data: an ePID of a row's key
/// "can activate" exactly what the row lists (for the editions with no
/// other key sharing the ePID's group and range).
#[test]
fn epid_check_agrees_with_the_table() {
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    for row in rows() {
        let key = csvlk(row.csvlk_id, row.csvlk_name);
        let mut rng = ScriptedRandom::new(vec![3; 64]);
        let e = epid::generate(key, 26_100, now, &mut rng).unwrap();
        assert_eq!(e.candidate_csvlks().count(), 1, "{}", key.name());
        let listed: Vec<&str> = row.activates.iter().copied().flatten().copied().collect();
        for edition in listed {
            assert!(
                e.can_activate(kms_id_of(edition)),
                "{}: {edition}",
                key.name()
            );
        }
        for edition in SERVER_2025 {
            let expected = row.csvlk_name == "Windows Server 2025";
            assert_eq!(e.can_activate(kms_id_of(edition)), expected, "{edition}");
        }
    }
}
