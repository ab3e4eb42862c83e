//! Generator and freshness check for `src/product/data.rs`.
//!
//! Reads `tests/data/reference/KmsDataBase.xml` (public domain) and the rows
//! of [`SEED_EXTRAS`] taken from Microsoft's published GVLK tables
//! (`tests/data/reference/gvlk-windows-seed.csv`, `gvlk-windows-current.csv`),
//! fixes the XML's known errors ([`CORRECTIONS`]), works out what each host
//! key activates ([`COVERAGE`], from Microsoft's activation tables), renders
//! the Rust tables and compares them with the checked-in file. It panics on
//! any reference to a KMS ID, SKU or host key that does not exist. With
//! `KMS_REGENERATE=1` in the environment it rewrites the file instead:
//!
//! ```text
//! KMS_REGENERATE=1 cargo test --test product_data
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines,
    reason = "a test-only generator: failing loudly on bad input is the point"
)]

#[path = "common/seed.rs"]
mod seed;
use seed::parse_seed;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

const XML_PATH: &str = "tests/data/reference/KmsDataBase.xml";
const SEED_PATH: &str = "tests/data/reference/gvlk-windows-seed.csv";
const CURRENT_PATH: &str = "tests/data/reference/gvlk-windows-current.csv";
const OUT_PATH: &str = "src/product/data.rs";

/// A SKU the XML lacks, added from one of Microsoft's published GVLK tables.
struct SeedExtra {
    /// The GVLK exactly as in the CSV.
    gvlk: &'static str,
    /// Which CSV lists it ([`SEED_PATH`] or [`CURRENT_PATH`]).
    csv: &'static str,
    /// Display name given here.
    name: &'static str,
    /// SKU (activation) ID.
    sku_id: &'static str,
    /// KMS ID it counts under.
    kms_id: &'static str,
}

/// GVLKs from the published tables that `KmsDataBase.xml` does not contain.
///
/// * Windows Server version 1709 (Semi-Annual Channel). The XML has no entry,
///   and no SKU ID, for them. Their SKU IDs are those of the same editions of
///   version 1803 (`ServerDatacenterACor` e49c08e7-…, `ServerStandardACor`
///   61c5ef22-…), which the XML already lists with the 1803 GVLKs under the
///   Windows Server 2016 KMS ID: a public key list (`KeyListServer2016VL` in a
///   C# key-finder, found with the code search) maps the 1709 and the 1803 GVLK
///   of each edition to the same activation ID, and py-kms' copy of the XML
///   carries the two 1709 rows with a nil ID as placeholders. The KMS ID is
///   therefore the 1803 rows' one, Windows Server 2016 (6e9fc069-…).
/// * Windows Server 2025 Datacenter: Azure Edition (`XGN3F-…`, Microsoft's
///   current table). The XML gives this edition (`ServerTurbine`) the SKU ID
///   c2e946d1-… with another key (`NQ8HH-…`, which Microsoft does not
///   publish). Public activation scripts found with the code search pair
///   c2e946d1-… with `XGN3F-…` for the Server 2025 (Germanium) `ServerTurbine`
///   edition, one of them with `NQ8HH-…` in an older revision: one SKU, two
///   keys. So the row shares the XML row's SKU ID and its KMS ID, Windows
///   Server 2025 (4b83307d-…).
const SEED_EXTRAS: &[SeedExtra] = &[
    SeedExtra {
        gvlk: "6Y6KB-N82V8-D8CQV-23MJW-BWTG6",
        csv: SEED_PATH,
        name: "Windows Server Datacenter (Semi-Annual Channel v.1709)",
        sku_id: "e49c08e7-da82-42f8-bde2-b570fbcae76c",
        kms_id: "6e9fc069-257d-4bc4-b4a7-750514d32743",
    },
    SeedExtra {
        gvlk: "DPCNP-XQFKJ-BJF7R-FRC8D-GF6G4",
        csv: SEED_PATH,
        name: "Windows Server Standard (Semi-Annual Channel v.1709)",
        sku_id: "61c5ef22-f14f-4553-a824-c4b31e84b100",
        kms_id: "6e9fc069-257d-4bc4-b4a7-750514d32743",
    },
    SeedExtra {
        gvlk: "XGN3F-F394H-FD2MY-PP6FD-8MCRC",
        csv: CURRENT_PATH,
        name: "Windows Server 2025 Datacenter: Azure Edition",
        sku_id: "c2e946d1-cfa2-4523-8c87-30bc696ee584",
        kms_id: KMS_SERVER_2025,
    },
];

// ---------------------------------------------------------------- coverage
//
// What each host key (CSVLK) activates. The XML lists, for each key, only
// the KMS IDs it is the own key of (and for some keys not even those, see
// `CORRECTIONS`). A host holding a key activates more: Microsoft's KMS
// planning guide ("activation versions", copied as facts into
// `tests/data/reference/csvlk-coverage.md`) lists per host-key group the
// servers and clients it activates. The rules below encode that table:
//
// * A Windows Server key activates every older Windows Server KMS ID and the
//   client KMS IDs the table lists for its group (2016 and later). Windows 8
//   and Vista are not in the table for those groups, so these keys do not
//   activate them.
// * Windows Server 2012 R2 and 2012 keys (not in the current table) follow
//   Microsoft's earlier planning guide: every older server, and the clients
//   of their time (Windows 8.1 / 8 / 7 / Vista for 2012 R2, 8 / 7 / Vista for
//   2012); the 2012 R2 key updated for Windows 10 also Windows 10.
// * Windows 7 / Server 2008 R2 and Vista / Server 2008 keys form one
//   hierarchy: Client VL < channel A (Web, HPC) < channel B (Standard,
//   Enterprise) < channel C (Datacenter, Itanium). A key activates its own
//   channel and every lower one, of its generation and of the older one.
// * Windows client keys activate client KMS IDs only: Windows 10 keys as the
//   table's "Windows 10" row (plus the LTSB/LTSC KMS ID each is the key of,
//   and the older ones), Windows 8.1 / 8 keys their own and the older clients.
// * Every other key (Office, China Government, pre-release) activates what
//   the XML lists.
//
// The generator then checks that no key activates a KMS ID first activated
// by a key released after it ("a key never activates a newer product"),
// that every ID named here exists, and that every CSVLK of the XML has a rule.
// Retail KMS IDs are never activated (a genuine host refuses them).

const KMS_SERVER_2025: &str = "4b83307d-7788-50ff-8d1f-1861915bdb9d";
const KMS_SERVER_2022: &str = "b74263e4-0f92-46c6-bcf8-c11d5efe2959";
const KMS_SERVER_2019: &str = "8449b1fb-f0ea-497a-99ab-66ca96e9a0f5";
const KMS_SERVER_2016: &str = "6e9fc069-257d-4bc4-b4a7-750514d32743";
const KMS_SERVER_2012_R2: &str = "8456efd3-0c04-4089-8740-5b7238535a65";
const KMS_SERVER_2012: &str = "8665cb71-468c-4aa3-a337-cb9bc9d5eaac";
const KMS_SERVER_2008_R2_A: &str = "0fc6ccaf-ff0e-4fae-9d08-4370785bf7ed";
const KMS_SERVER_2008_R2_B: &str = "ca87f5b6-cd46-40c0-b06d-8ecd57a4373f";
const KMS_SERVER_2008_R2_C: &str = "b2ca2689-a9a8-42d7-938d-cf8e9f201958";
const KMS_SERVER_2008_A: &str = "33e156e4-b76f-4a52-9f91-f641dd95ac48";
const KMS_SERVER_2008_B: &str = "8fe53387-3087-4447-8985-f75132215ac9";
const KMS_SERVER_2008_C: &str = "8a21fdf3-cbc5-44eb-83f3-fe284e6680a7";
const KMS_WINDOWS_10: &str = "58e2134f-8e11-4d17-9cb2-91069c151148";
const KMS_LTSC_2019: &str = "11b15659-e603-4cf1-9c1f-f0ec01b81888";
const KMS_LTSB_2016: &str = "969fe3c0-a3ec-491a-9f25-423605deb365";
const KMS_WINDOWS_8_1: &str = "cb8fc780-2c05-495a-9710-85afffc904d7";
const KMS_WINDOWS_8: &str = "3c40b358-5948-45af-923b-53d21fcc7e79";
const KMS_WINDOWS_7: &str = "7fde5219-fbfa-484a-82c9-34d1ad53e856";
const KMS_WINDOWS_VISTA: &str = "212a64dc-43b1-4d3d-a30c-2fc69d2095c6";

/// Every server KMS ID up to Windows Server 2012 R2.
const SERVERS_TO_2012_R2: &[&str] = &[
    KMS_SERVER_2012_R2,
    KMS_SERVER_2012,
    KMS_SERVER_2008_R2_A,
    KMS_SERVER_2008_R2_B,
    KMS_SERVER_2008_R2_C,
    KMS_SERVER_2008_A,
    KMS_SERVER_2008_B,
    KMS_SERVER_2008_C,
];

/// The clients of the table's Windows Server 2019, 2022 and 2025 rows
/// (Windows 11 Enterprise LTSC 2024 shares its KMS ID with LTSC 2019/2021).
const CLIENTS_2019: &[&str] = &[
    KMS_WINDOWS_10,
    KMS_LTSC_2019,
    KMS_LTSB_2016,
    KMS_WINDOWS_8_1,
    KMS_WINDOWS_7,
];

/// A coverage rule: the keys it applies to and what they activate.
struct Coverage {
    /// The family, for the comments and messages.
    family: &'static str,
    /// CSVLK IDs (`"-"` for the one XML entry without an ID).
    csvlks: &'static [&'static str],
    /// A Windows Server key (installed on server builds only).
    server: bool,
    /// KMS IDs activated besides the XML's list, in groups.
    activates: &'static [&'static [&'static str]],
}

const COVERAGE: &[Coverage] = &[
    Coverage {
        family: "Windows Server 2025",
        csvlks: &[
            "84e331f6-4279-48c4-ab10-b75139181351",
            "82fcf64d-f9dd-4411-9c79-f2eed16d4eb8",
            "6bad0243-1c35-46b2-b8e6-7a853e37413f",
        ],
        server: true,
        activates: &[
            &[
                KMS_SERVER_2025,
                KMS_SERVER_2022,
                KMS_SERVER_2019,
                KMS_SERVER_2016,
            ],
            SERVERS_TO_2012_R2,
            CLIENTS_2019,
        ],
    },
    Coverage {
        family: "Windows Server 2022",
        csvlks: &[
            "661f7658-7035-4b4c-9f35-010682943ec2",
            "e73aabfa-12bc-4705-b551-2dd076bebc7d",
            "22105925-48c3-4ff4-a294-f654bb27e390",
        ],
        server: true,
        activates: &[
            &[KMS_SERVER_2022, KMS_SERVER_2019, KMS_SERVER_2016],
            SERVERS_TO_2012_R2,
            CLIENTS_2019,
        ],
    },
    Coverage {
        family: "Windows Server 2019",
        csvlks: &[
            "2e7a9ad1-a849-4b56-babe-17d5a29fe4b4",
            "3c006fa7-3b03-45a4-93da-63ddc1bdce11",
            "9db83b52-9904-4326-8957-ebe6feedf37c",
        ],
        server: true,
        activates: &[
            &[KMS_SERVER_2019, KMS_SERVER_2016],
            SERVERS_TO_2012_R2,
            CLIENTS_2019,
        ],
    },
    Coverage {
        family: "Windows Server 2016",
        csvlks: &[
            "d6992aac-29e7-452a-bf10-bbfb8ccabe59",
            "3c2da9a5-1c6e-45d1-855f-fdbef536676f",
        ],
        server: true,
        activates: &[
            &[KMS_SERVER_2016],
            SERVERS_TO_2012_R2,
            &[
                KMS_WINDOWS_10,
                KMS_LTSB_2016,
                KMS_WINDOWS_8_1,
                KMS_WINDOWS_7,
            ],
        ],
    },
    Coverage {
        family: "Windows Server 2012 R2 with Windows 10",
        csvlks: &[
            "20e938bb-df44-45ee-bde1-4e4fe7477f37",
            "9e3fde40-d4b3-4c1d-9bde-32735aa19b39",
        ],
        server: true,
        activates: &[
            SERVERS_TO_2012_R2,
            &[
                KMS_WINDOWS_10,
                KMS_WINDOWS_8_1,
                KMS_WINDOWS_8,
                KMS_WINDOWS_7,
                KMS_WINDOWS_VISTA,
            ],
        ],
    },
    Coverage {
        family: "Windows Server 2012 R2",
        csvlks: &["dcb88f6f-b090-405b-850e-dabcccf3693f"],
        server: true,
        activates: &[
            SERVERS_TO_2012_R2,
            &[
                KMS_WINDOWS_8_1,
                KMS_WINDOWS_8,
                KMS_WINDOWS_7,
                KMS_WINDOWS_VISTA,
            ],
        ],
    },
    Coverage {
        family: "Windows Server 2012",
        // Both lab entries sharing fe27276b-… activate the 2012 KMS ID.
        csvlks: &[
            "7b37c913-252b-46be-ad80-b2b5ceade8af",
            "fe27276b-a5a9-4b4d-88e3-14271beb79be",
        ],
        server: true,
        activates: &[
            &[
                KMS_SERVER_2012,
                KMS_SERVER_2008_R2_A,
                KMS_SERVER_2008_R2_B,
                KMS_SERVER_2008_R2_C,
                KMS_SERVER_2008_A,
                KMS_SERVER_2008_B,
                KMS_SERVER_2008_C,
            ],
            &[KMS_WINDOWS_8, KMS_WINDOWS_7, KMS_WINDOWS_VISTA],
        ],
    },
    Coverage {
        family: "Windows Server 2008 R2 channel C",
        csvlks: &["8fe15d04-fc66-40e6-bf34-942481e06fd8"],
        server: true,
        activates: &[&[
            KMS_SERVER_2008_R2_C,
            KMS_SERVER_2008_R2_B,
            KMS_SERVER_2008_R2_A,
            KMS_SERVER_2008_C,
            KMS_SERVER_2008_B,
            KMS_SERVER_2008_A,
            KMS_WINDOWS_7,
            KMS_WINDOWS_VISTA,
        ]],
    },
    Coverage {
        family: "Windows Server 2008 R2 channel B",
        csvlks: &["c99b641f-c4ea-4e63-bec3-5ed2ccd0f357"],
        server: true,
        activates: &[&[
            KMS_SERVER_2008_R2_B,
            KMS_SERVER_2008_R2_A,
            KMS_SERVER_2008_B,
            KMS_SERVER_2008_A,
            KMS_WINDOWS_7,
            KMS_WINDOWS_VISTA,
        ]],
    },
    Coverage {
        family: "Windows Server 2008 R2 channel A",
        csvlks: &["f73d1bcd-0802-47dd-b2d9-81bf2f8c0744"],
        server: true,
        activates: &[&[
            KMS_SERVER_2008_R2_A,
            KMS_SERVER_2008_A,
            KMS_WINDOWS_7,
            KMS_WINDOWS_VISTA,
        ]],
    },
    Coverage {
        family: "Windows Server 2008 channel C",
        csvlks: &["c90d1b4e-8aa8-439e-8b9e-b6d6b6a6d975"],
        server: true,
        activates: &[&[
            KMS_SERVER_2008_C,
            KMS_SERVER_2008_B,
            KMS_SERVER_2008_A,
            KMS_WINDOWS_VISTA,
        ]],
    },
    Coverage {
        family: "Windows Server 2008 channel B",
        csvlks: &["56df4151-1f9f-41bf-acaa-2941c071872b"],
        server: true,
        activates: &[&[KMS_SERVER_2008_B, KMS_SERVER_2008_A, KMS_WINDOWS_VISTA]],
    },
    Coverage {
        family: "Windows Server 2008 channel A",
        csvlks: &["c448fa06-49d1-44ec-82bb-0085545c3b51"],
        server: true,
        activates: &[&[KMS_SERVER_2008_A, KMS_WINDOWS_VISTA]],
    },
    Coverage {
        family: "Windows 10 LTSC 2019 (client)",
        csvlks: &[
            "90da7373-1c51-430b-bf26-c97e9c5cdc31",
            "60b3ec1b-9545-4921-821f-311b129dd6f6",
        ],
        server: false,
        activates: &[CLIENTS_2019],
    },
    Coverage {
        family: "Windows 10 LTSB 2016 (client)",
        csvlks: &[
            "30a42c86-b7a0-4a34-8c90-ff177cb2acb7",
            "d552befb-48cc-4327-8f39-47d2d94f987c",
        ],
        server: false,
        activates: &[&[
            KMS_WINDOWS_10,
            KMS_LTSB_2016,
            KMS_WINDOWS_8_1,
            KMS_WINDOWS_7,
        ]],
    },
    Coverage {
        family: "Windows 10 (client)",
        csvlks: &[
            "0724cb7d-3437-4cb7-93cb-830375d0079d",
            "7a802526-4c94-4bd1-ba14-835a1aca2120",
        ],
        server: false,
        activates: &[&[KMS_WINDOWS_10, KMS_WINDOWS_8_1, KMS_WINDOWS_7]],
    },
    Coverage {
        family: "Windows 8.1 (client)",
        csvlks: &[
            "29d0b60f-66da-4858-bcaf-9eb513cd310d",
            "4614b66f-a1d7-441c-9731-23f22d0ff4e5",
        ],
        server: false,
        activates: &[&[
            KMS_WINDOWS_8_1,
            KMS_WINDOWS_8,
            KMS_WINDOWS_7,
            KMS_WINDOWS_VISTA,
        ]],
    },
    Coverage {
        family: "Windows 8 (client)",
        csvlks: &[
            "24259a22-3bf0-44af-a68b-1b858bce1894",
            "044ba67a-4c54-47ee-941a-d6f2efaa6891",
        ],
        server: false,
        activates: &[&[KMS_WINDOWS_8, KMS_WINDOWS_7, KMS_WINDOWS_VISTA]],
    },
    Coverage {
        family: "Windows 7 and Vista (client)",
        csvlks: &[
            "d188820a-cb63-4bad-a9a2-40b843ee23b7",
            "212a64dc-43b1-4d3d-a30c-2fc69d2095c6",
            "4871de8b-3adf-4455-a7d3-fd7b6c01c939",
        ],
        server: false,
        activates: &[],
    },
    Coverage {
        family: "Windows Server pre-release",
        csvlks: &["c609957a-dc23-48b3-8c6b-31b303479de2"],
        server: true,
        activates: &[],
    },
    Coverage {
        family: "Windows client, as listed",
        csvlks: &[
            "ecc0774a-aed3-4e1a-b815-2b31781adfea",
            "d521c0fd-1732-4c15-8b98-a41b2a95bbc4",
            "b8cf7a60-5668-41b0-addd-6de32e69b0c6",
        ],
        server: false,
        activates: &[],
    },
    Coverage {
        family: "Office, as listed",
        csvlks: &[
            "f3d89bbf-c0ec-47ce-a8fa-e5a5f97e447f",
            "47f3b983-7c53-4d45-abc6-bcd91e2dd90a",
            "70512334-47b4-44db-a233-be5ea33b914c",
            "98ebfe73-2084-4c97-932c-c0cd1643bea7",
            "2e28138a-847f-42bc-9752-61b03fff33cd",
            "-",
            "bfe7a195-4f8f-4f0b-a622-cf13c7d16864",
        ],
        server: false,
        activates: &[],
    },
];

/// A known error in the XML's `Activate` lists, fixed here.
struct Correction {
    /// The CSVLKs whose list is wrong.
    csvlks: &'static [&'static str],
    /// The KMS ID the XML lists wrongly.
    listed: &'static str,
    /// What it should be, or `None` to drop it.
    fixed: Option<&'static str>,
}

/// Known errors of the XML, each checked to still be present.
///
/// 1. The three Windows Server 2022 keys list 10a7e9fb-…, which no `KmsItem`
///    defines (nothing else in the XML, and nothing found with the code
///    search, names it), while the Windows Server 2022 `KmsItem`
///    b74263e4-…, under which all six Server 2022 editions count, is listed
///    by no key. The keys are the Server 2022 host keys: b74263e4-….
/// 2. The Windows 10 and 8.1 pre-release key lists 5f94a0bb-… and the Vista
///    pre-release key e4ce4674-…, both undefined pre-release groups: dropped.
/// 3. The Windows 10 LTSB 2016 keys (and their lab twin) list the Windows 10
///    LTSC 2019 KMS ID, a product released two years after the key; a key
///    never activates a newer product (LTSC 2019 needs the Server 2019 or the
///    LTSC 2019 host key): dropped.
const CORRECTIONS: &[Correction] = &[
    Correction {
        csvlks: &[
            "661f7658-7035-4b4c-9f35-010682943ec2",
            "e73aabfa-12bc-4705-b551-2dd076bebc7d",
            "22105925-48c3-4ff4-a294-f654bb27e390",
        ],
        listed: "10a7e9fb-ca8c-5352-88f5-91b8dbe13b22",
        fixed: Some(KMS_SERVER_2022),
    },
    Correction {
        csvlks: &["d521c0fd-1732-4c15-8b98-a41b2a95bbc4"],
        listed: "5f94a0bb-d5a0-4081-a685-5819418b2fe0",
        fixed: None,
    },
    Correction {
        csvlks: &["b8cf7a60-5668-41b0-addd-6de32e69b0c6"],
        listed: "e4ce4674-966b-5e34-9b98-e988af5fad64",
        fixed: None,
    },
    Correction {
        csvlks: &[
            "30a42c86-b7a0-4a34-8c90-ff177cb2acb7",
            "d552befb-48cc-4327-8f39-47d2d94f987c",
        ],
        listed: KMS_LTSC_2019,
        fixed: None,
    },
];

fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

// ---------------------------------------------------------------- model

struct App {
    id: u128,
    name: String,
    min_active_clients: u32,
    vlmcsd_index: u8,
}

struct Kms {
    id: u128,
    name: String,
    app: u128,
    n_count: u32,
    protocol_major: u16,
    retail: bool,
    preview: bool,
    can_map: bool,
}

struct SkuRow {
    id: u128,
    name: String,
    gvlk: String,
    kms: u128,
    generated: bool,
    seed: bool,
}

struct CsvlkRow {
    id: Option<u128>,
    name: String,
    group: Option<u32>,
    range: Option<(u32, u32)>,
    release: Option<(i32, u32, u32)>,
    lab: bool,
    preview: bool,
    vlmcsd_index: Option<u8>,
    epid: Option<String>,
    invalid_builds: Vec<u8>,
    /// The KMS IDs the XML lists (after [`CORRECTIONS`]): the key's own.
    listed: Vec<u128>,
    /// Everything the key activates ([`COVERAGE`]), sorted; filled by [`catalog`].
    activates: Vec<u128>,
    /// A Windows Server key; filled by [`catalog`].
    server: bool,
}

struct Build {
    number: u32,
    name: String,
    platform: u32,
    release: (i32, u32, u32),
    use_for_epid: bool,
    may_be_server: bool,
    ndr64: bool,
}

/// Everything parsed from the XML (before the seed extras are added).
struct Parsed {
    apps: Vec<App>,
    kms: Vec<Kms>,
    skus: Vec<SkuRow>,
    csvlks: Vec<CsvlkRow>,
    builds: Vec<Build>,
}

// ---------------------------------------------------------------- parsing

/// Attribute by name, ignoring ASCII case (the XML spells one
/// `DefaultKmsprotocol`); empty values count as absent.
fn attr<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    node.attributes()
        .find(|a| a.name().eq_ignore_ascii_case(name))
        .map(|a| a.value().trim())
        .filter(|v| !v.is_empty())
}

fn req<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> &'a str {
    attr(node, name).unwrap_or_else(|| panic!("{} lacks {name}", node.tag_name().name()))
}

fn guid(text: &str) -> u128 {
    let t = text.trim_matches(|c| c == '{' || c == '}');
    u128::from_str_radix(&t.replace('-', ""), 16).unwrap_or_else(|e| panic!("bad GUID {text}: {e}"))
}

fn flag(node: roxmltree::Node<'_, '_>, name: &str, default: bool) -> bool {
    match attr(node, name) {
        None => default,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => panic!("bad boolean {name}={v}"),
    }
}

fn date(text: &str) -> (i32, u32, u32) {
    let day = text.split('T').next().unwrap();
    let mut it = day.split('-');
    let y: i32 = it.next().unwrap().parse().unwrap();
    let m: u32 = it.next().unwrap().parse().unwrap();
    let d: u32 = it.next().unwrap().parse().unwrap();
    assert!(
        chrono::NaiveDate::from_ymd_opt(y, m, d).is_some(),
        "bad date {text}"
    );
    (y, m, d)
}

fn children<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
    tag: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    node.children().filter(move |n| n.has_tag_name(tag))
}

/// Parses `KmsDataBase.xml`.
fn parse_xml(text: &str) -> Parsed {
    let doc = roxmltree::Document::parse(text).expect("XML parses");
    let root = doc.root_element();
    let mut p = Parsed {
        apps: vec![],
        kms: vec![],
        skus: vec![],
        csvlks: vec![],
        builds: vec![],
    };
    for b in root.descendants().filter(|n| n.has_tag_name("WinBuild")) {
        p.builds.push(Build {
            number: req(b, "BuildNumber").parse().unwrap(),
            name: req(b, "DisplayName").to_owned(),
            platform: req(b, "PlatformId").parse().unwrap(),
            release: date(req(b, "ReleaseDate")),
            use_for_epid: flag(b, "UseForEpid", false),
            may_be_server: flag(b, "MayBeServer", false),
            ndr64: flag(b, "UsesNDR64", false),
        });
    }
    for c in root.descendants().filter(|n| n.has_tag_name("CsvlkItem")) {
        let min = attr(c, "MinKeyId").map(|v| v.parse::<u32>().unwrap());
        let max = attr(c, "MaxKeyId").map(|v| v.parse::<u32>().unwrap());
        let invalid = attr(c, "InvalidWinBuild")
            .map(|v| {
                v.trim_matches(|ch| ch == '[' || ch == ']')
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| s.trim().parse::<u8>().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        p.csvlks.push(CsvlkRow {
            id: attr(c, "Id").map(guid),
            name: req(c, "DisplayName").to_owned(),
            group: attr(c, "GroupId").map(|v| v.parse().unwrap()),
            range: min.zip(max),
            release: attr(c, "ReleaseDate").map(date),
            lab: flag(c, "IsLab", false),
            preview: flag(c, "IsPreview", false),
            vlmcsd_index: attr(c, "VlmcsdIndex").map(|v| v.parse().unwrap()),
            epid: attr(c, "EPid").map(str::to_owned),
            invalid_builds: invalid,
            listed: children(c, "Activate")
                .map(|a| guid(req(a, "KmsItem")))
                .collect(),
            activates: vec![],
            server: false,
        });
    }
    for a in root.descendants().filter(|n| n.has_tag_name("AppItem")) {
        let app_id = guid(req(a, "Id"));
        p.apps.push(App {
            id: app_id,
            name: req(a, "DisplayName").to_owned(),
            min_active_clients: req(a, "MinActiveClients").parse().unwrap(),
            vlmcsd_index: req(a, "VlmcsdIndex").parse().unwrap(),
        });
        for k in children(a, "KmsItem") {
            let kms_id = guid(req(k, "Id"));
            let protocol = attr(k, "DefaultKmsProtocol").unwrap_or("6.0");
            let (major, minor) = protocol.split_once('.').unwrap();
            assert_eq!(minor, "0", "protocol {protocol}");
            p.kms.push(Kms {
                id: kms_id,
                name: req(k, "DisplayName").to_owned(),
                app: app_id,
                n_count: attr(k, "NCountPolicy").map_or(25, |v| v.parse().unwrap()),
                protocol_major: major.parse().unwrap(),
                retail: flag(k, "IsRetail", false),
                preview: flag(k, "IsPreview", false),
                can_map: flag(k, "CanMapToDefaultCsvlk", true),
            });
            for s in children(k, "SkuItem") {
                p.skus.push(SkuRow {
                    id: guid(req(s, "Id")),
                    name: req(s, "DisplayName").to_owned(),
                    gvlk: req(s, "Gvlk").to_owned(),
                    kms: kms_id,
                    generated: flag(s, "IsGeneratedGvlk", false),
                    seed: false,
                });
            }
        }
    }
    p
}

/// `(edition, gvlk)` rows of `gvlk-windows-current.csv`.
fn parse_current(text: &str) -> Vec<(String, String)> {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (edition, gvlk) = l.rsplit_once(',').unwrap_or_else(|| panic!("CSV line {l}"));
            (edition.to_owned(), gvlk.trim().to_owned())
        })
        .collect()
}

/// The XML plus the seed extras and the coverage, each table sorted for
/// binary search. Panics on any reference to a KMS ID, SKU or CSVLK that
/// does not exist, except the known errors in [`CORRECTIONS`].
fn catalog(xml: &str, seed: &str, current: &str) -> Parsed {
    let mut p = parse_xml(xml);
    let seed = parse_seed(seed);
    let current = parse_current(current);
    for extra in SEED_EXTRAS {
        let listed = match extra.csv {
            SEED_PATH => seed.iter().any(|(_, _, g)| g == extra.gvlk),
            CURRENT_PATH => current.iter().any(|(_, g)| g == extra.gvlk),
            other => panic!("seed extra {}: unknown CSV {other}", extra.gvlk),
        };
        assert!(listed, "seed extra {} is not in {}", extra.gvlk, extra.csv);
        assert!(
            p.skus.iter().all(|s| s.gvlk != extra.gvlk),
            "seed extra {} is already in the XML: drop it from SEED_EXTRAS",
            extra.gvlk
        );
        let (sku, kms) = (guid(extra.sku_id), guid(extra.kms_id));
        assert!(
            p.kms.iter().any(|k| k.id == kms),
            "seed extra {}: KMS ID {} does not exist",
            extra.gvlk,
            extra.kms_id
        );
        if let Some(same) = p.skus.iter().find(|s| s.id == sku) {
            assert_eq!(
                same.kms, kms,
                "seed extra {}: SKU {} counts under another KMS ID in the XML",
                extra.gvlk, extra.sku_id
            );
        }
        p.skus.push(SkuRow {
            id: sku,
            name: extra.name.to_owned(),
            gvlk: extra.gvlk.to_owned(),
            kms,
            generated: false,
            seed: true,
        });
    }
    for s in &p.skus {
        assert!(
            p.kms.iter().any(|k| k.id == s.kms),
            "SKU {} ({}) counts under KMS ID {:032x}, which does not exist",
            s.name,
            s.gvlk,
            s.kms
        );
    }
    apply_corrections(&mut p);
    apply_coverage(&mut p);
    p.apps.sort_by_key(|a| a.id);
    p.kms.sort_by_key(|k| k.id);
    p.skus.sort_by_key(|s| (s.id, s.seed));
    p.csvlks.sort_by_key(|c| c.id); // stable: duplicates keep XML order
    p.builds.sort_by_key(|b| b.number);
    p
}

fn csvlk_key(c: &CsvlkRow) -> u128 {
    c.id.unwrap_or(0)
}

fn rule_key(text: &str) -> u128 {
    if text == "-" { 0 } else { guid(text) }
}

/// Applies [`CORRECTIONS`] and then fails on any listed KMS ID left undefined.
fn apply_corrections(p: &mut Parsed) {
    for fix in CORRECTIONS {
        let listed = guid(fix.listed);
        if let Some(to) = fix.fixed {
            assert!(
                p.kms.iter().any(|k| k.id == guid(to)),
                "correction of {}: KMS ID {to} does not exist",
                fix.listed
            );
        }
        for id in fix.csvlks {
            let mut found = false;
            for c in p.csvlks.iter_mut().filter(|c| csvlk_key(c) == rule_key(id)) {
                found = true;
                let before = c.listed.len();
                c.listed.retain(|k| *k != listed);
                assert!(
                    c.listed.len() < before,
                    "correction: CSVLK {} no longer lists {}; drop the correction",
                    c.name,
                    fix.listed
                );
                if let Some(to) = fix.fixed
                    && !c.listed.contains(&guid(to))
                {
                    c.listed.push(guid(to));
                }
            }
            assert!(found, "correction names CSVLK {id}, which does not exist");
        }
    }
    for c in &p.csvlks {
        for k in &c.listed {
            assert!(
                p.kms.iter().any(|item| item.id == *k),
                "CSVLK {} activates KMS ID {k:032x}, which does not exist \
                 (add a documented entry to CORRECTIONS if the XML is wrong)",
                c.name
            );
        }
    }
}

/// Fills every CSVLK's coverage from its XML list and its [`COVERAGE`] rule,
/// and checks the rules.
fn apply_coverage(p: &mut Parsed) {
    let kms_exists = |p: &Parsed, k: u128| p.kms.iter().any(|item| item.id == k);
    for rule in COVERAGE {
        for id in rule.csvlks {
            assert!(
                p.csvlks.iter().any(|c| csvlk_key(c) == rule_key(id)),
                "coverage rule {}: CSVLK {id} does not exist",
                rule.family
            );
        }
        for &k in rule.activates.iter().copied().flatten() {
            assert!(
                kms_exists(p, guid(k)),
                "coverage rule {}: KMS ID {k} does not exist",
                rule.family
            );
        }
    }
    // When each KMS ID came out: the earliest release of a key listing it.
    let mut first_release: BTreeMap<u128, (i32, u32, u32)> = BTreeMap::new();
    for c in &p.csvlks {
        let Some(release) = c.release.filter(|_| !c.preview) else {
            continue;
        };
        for k in &c.listed {
            let e = first_release.entry(*k).or_insert(release);
            *e = (*e).min(release);
        }
    }
    let retail: Vec<u128> = p.kms.iter().filter(|k| k.retail).map(|k| k.id).collect();
    for c in &mut p.csvlks {
        let rules: Vec<&Coverage> = COVERAGE
            .iter()
            .filter(|r| r.csvlks.iter().any(|id| rule_key(id) == csvlk_key(c)))
            .collect();
        let [rule] = rules.as_slice() else {
            panic!(
                "CSVLK {} ({:032x}) is in {} coverage rules; give it exactly one",
                c.name,
                csvlk_key(c),
                rules.len()
            );
        };
        let mut all: Vec<u128> = c.listed.clone();
        all.extend(rule.activates.iter().copied().flatten().copied().map(guid));
        all.retain(|k| !retail.contains(k));
        all.sort_unstable();
        all.dedup();
        if let Some(key_release) = c.release {
            for k in &all {
                if let Some(product_release) = first_release.get(k) {
                    assert!(
                        *product_release <= key_release,
                        "CSVLK {} ({key_release:?}) would activate KMS ID {k:032x}, \
                         first activated by a key of {product_release:?}: a key never \
                         activates a newer product",
                        c.name
                    );
                }
            }
        }
        c.activates = all;
        c.server = rule.server;
    }
}

// ---------------------------------------------------------------- rendering

fn uuid_lit(id: u128) -> String {
    let h = format!("{id:032x}");
    format!(
        "Uuid::from_u128(0x{}_{}_{}_{}_{})",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn date_lit((y, m, d): (i32, u32, u32)) -> String {
    format!("ymd({y}, {m}, {d})")
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "None".to_owned(), |x| format!("Some({})", f(x)))
}

/// Renders `src/product/data.rs`.
fn render(p: &Parsed) -> String {
    let mut o = String::new();
    let w = &mut o;
    w.push_str(
        "//! GENERATED FILE: do not edit by hand.\n\
         //!\n\
         //! Generated by `tests/product_data.rs` from `tests/data/reference/KmsDataBase.xml`\n\
         //! (public domain) plus the `SEED_EXTRAS` rows taken from Microsoft's GVLK tables\n\
         //! (`tests/data/reference/gvlk-windows-seed.csv`, `gvlk-windows-current.csv`) and\n\
         //! the `COVERAGE` rules and `CORRECTIONS` written in the generator. To regenerate\n\
         //! after changing an input or the generator, run:\n\
         //!\n\
         //! ```text\n\
         //! KMS_REGENERATE=1 cargo test --test product_data\n\
         //! ```\n\
         //!\n\
         //! Every table is sorted by its lookup key (GUID or build number); `GVLK_INDEX`\n\
         //! is sorted by GVLK and points into `SKUS`.\n\
         #![expect(\n    clippy::unreadable_literal,\n    \
         reason = \"key IDs are written as in the XML\"\n)]\n\n\
         use super::{Application, Csvlk, KeyIdRange, KmsItem, Sku, Source, WinBuild, ymd};\n\
         use uuid::Uuid;\n\n",
    );

    writeln!(w, "/// Applications, sorted by ID.").unwrap();
    writeln!(
        w,
        "pub(super) static APPLICATIONS: [Application; {}] = [",
        p.apps.len()
    )
    .unwrap();
    for a in &p.apps {
        writeln!(
            w,
            "    Application {{\n        id: {},\n        name: {:?},\n        min_active_clients: {},\n        vlmcsd_index: {},\n    }},",
            uuid_lit(a.id),
            a.name,
            a.min_active_clients,
            a.vlmcsd_index
        )
        .unwrap();
    }
    writeln!(w, "];\n").unwrap();

    writeln!(w, "/// KMS items (KMS counted IDs), sorted by ID.").unwrap();
    writeln!(
        w,
        "pub(super) static KMS_ITEMS: [KmsItem; {}] = [",
        p.kms.len()
    )
    .unwrap();
    for k in &p.kms {
        writeln!(
            w,
            "    KmsItem {{\n        id: {},\n        name: {:?},\n        application_id: {},\n        \
             n_count_policy: {},\n        default_protocol_major: {},\n        is_retail: {},\n        \
             is_preview: {},\n        can_map_to_default_csvlk: {},\n    }},",
            uuid_lit(k.id),
            k.name,
            uuid_lit(k.app),
            k.n_count,
            k.protocol_major,
            k.retail,
            k.preview,
            k.can_map
        )
        .unwrap();
    }
    writeln!(w, "];\n").unwrap();

    writeln!(
        w,
        "/// SKUs (activation IDs), sorted by ID; a seed row follows the XML row with its ID."
    )
    .unwrap();
    writeln!(w, "pub(super) static SKUS: [Sku; {}] = [", p.skus.len()).unwrap();
    for s in &p.skus {
        writeln!(
            w,
            "    Sku {{\n        id: {},\n        name: {:?},\n        gvlk: {:?},\n        kms_id: {},\n        \
             is_generated_gvlk: {},\n        source: Source::{},\n    }},",
            uuid_lit(s.id),
            s.name,
            s.gvlk,
            uuid_lit(s.kms),
            s.generated,
            if s.seed { "GvlkSeed" } else { "KmsDatabase" }
        )
        .unwrap();
    }
    writeln!(w, "];\n").unwrap();

    let mut by_gvlk: Vec<(&str, usize)> = p
        .skus
        .iter()
        .enumerate()
        .map(|(i, s)| (s.gvlk.as_str(), i))
        .collect();
    by_gvlk.sort_unstable();
    writeln!(w, "/// `(GVLK, index into SKUS)`, sorted by GVLK.").unwrap();
    writeln!(
        w,
        "pub(super) static GVLK_INDEX: [(&str, u16); {}] = [",
        by_gvlk.len()
    )
    .unwrap();
    for (g, i) in by_gvlk {
        writeln!(w, "    ({g:?}, {i}),").unwrap();
    }
    writeln!(w, "];\n").unwrap();

    writeln!(
        w,
        "/// CSVLKs (host keys), sorted by ID; the entry without an ID comes first."
    )
    .unwrap();
    writeln!(
        w,
        "pub(super) static CSVLKS: [Csvlk; {}] = [",
        p.csvlks.len()
    )
    .unwrap();
    for c in &p.csvlks {
        let list = |ids: &[u128]| match ids {
            [] => "&[]".to_owned(),
            [one] => format!("&[{}]", uuid_lit(*one)),
            many => {
                let lines: Vec<String> = many
                    .iter()
                    .map(|id| format!("            {},\n", uuid_lit(*id)))
                    .collect();
                format!("&[\n{}        ]", lines.concat())
            }
        };
        let (own, activates) = (list(&c.listed), list(&c.activates));
        let invalid: Vec<String> = c.invalid_builds.iter().map(u8::to_string).collect();
        writeln!(
            w,
            "    Csvlk {{\n        id: {},\n        name: {:?},\n        group_id: {},\n        key_ids: {},\n        \
             release_date: {},\n        is_lab: {},\n        is_preview: {},\n        vlmcsd_index: {},\n        \
             epid: {},\n        discouraged_build_indices: &[{}],\n        is_server_key: {},\n        \
             own: {},\n        activates: {},\n    }},",
            opt(c.id, uuid_lit),
            c.name,
            opt(c.group, |g| g.to_string()),
            opt(c.range, |(min, max)| {
                // rustfmt keeps a struct literal on one line up to 18 characters.
                let body = format!("min: {min}, max: {max}");
                if body.len() <= 18 {
                    format!("KeyIdRange {{ {body} }}")
                } else {
                    format!(
                        "KeyIdRange {{\n            min: {min},\n            max: {max},\n        }}"
                    )
                }
            }),
            opt(c.release, date_lit),
            c.lab,
            c.preview,
            opt(c.vlmcsd_index, |i| i.to_string()),
            opt(c.epid.as_deref(), |e| format!("{e:?}")),
            invalid.join(", "),
            c.server,
            own,
            activates
        )
        .unwrap();
    }
    writeln!(w, "];\n").unwrap();

    writeln!(w, "/// Windows builds, sorted by build number.").unwrap();
    writeln!(
        w,
        "pub(super) static BUILDS: [WinBuild; {}] = [",
        p.builds.len()
    )
    .unwrap();
    for b in &p.builds {
        writeln!(
            w,
            "    WinBuild {{\n        build: {},\n        name: {:?},\n        platform_id: {},\n        \
             release_date: {},\n        use_for_epid: {},\n        may_be_server: {},\n        uses_ndr64: {},\n    }},",
            b.number,
            b.name,
            b.platform,
            date_lit(b.release),
            b.use_for_epid,
            b.may_be_server,
            b.ndr64
        )
        .unwrap();
    }
    writeln!(w, "];").unwrap();
    o
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ---------------------------------------------------------------- tests

#[test]
fn xml_counts() {
    let p = parse_xml(&read(XML_PATH));
    assert_eq!(p.skus.len(), 257, "SKUs");
    assert!(
        p.skus.iter().all(|s| !s.gvlk.is_empty()),
        "every SKU has a GVLK"
    );
    assert_eq!(p.kms.len(), 33, "KMS items");
    assert_eq!(p.csvlks.len(), 47, "CSVLKs");
    assert_eq!(p.apps.len(), 3, "applications");
    assert_eq!(p.builds.len(), 30, "builds");
    assert_eq!(parse_seed(&read(SEED_PATH)).len(), 70, "seed GVLKs");
}

#[test]
fn data_rs_is_fresh() {
    let fresh = render(&catalog(
        &read(XML_PATH),
        &read(SEED_PATH),
        &read(CURRENT_PATH),
    ));
    let path = repo_path(OUT_PATH);
    if std::env::var_os("KMS_REGENERATE").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current != fresh {
        let line = current
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .map_or(current.lines().count().min(fresh.lines().count()), |n| n);
        panic!(
            "{OUT_PATH} is stale (first difference at line {}); run \
             `KMS_REGENERATE=1 cargo test --test product_data`",
            line + 1
        );
    }
}

/// The rendered catalog and the library agree on every row (guards the
/// generator's own field mapping, independently of the file comparison).
#[test]
fn library_matches_xml() {
    use kms_activation::{Uuid, product};
    let p = catalog(&read(XML_PATH), &read(SEED_PATH), &read(CURRENT_PATH));
    let skus = product::skus();
    assert_eq!(skus.len(), p.skus.len());
    for (row, sku) in p.skus.iter().zip(skus) {
        assert_eq!(sku.id(), Uuid::from_u128(row.id));
        assert_eq!(sku.gvlk(), row.gvlk);
        assert_eq!(sku.kms_id(), Uuid::from_u128(row.kms));
    }
    let by_id: BTreeMap<u128, &Kms> = p.kms.iter().map(|k| (k.id, k)).collect();
    for k in product::kms_items() {
        let row = by_id[&k.id().as_u128()];
        assert_eq!(k.n_count_policy(), row.n_count);
        assert_eq!(k.is_retail(), row.retail);
    }
    for (row, b) in p.builds.iter().zip(product::builds()) {
        let (y, m, d) = row.release;
        assert_eq!(
            b.release_date(),
            chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap()
        );
    }
    for (row, c) in p.csvlks.iter().zip(product::csvlks()) {
        assert_eq!(c.name(), row.name);
        if let Some((y, m, d)) = row.release {
            assert_eq!(c.release_date(), chrono::NaiveDate::from_ymd_opt(y, m, d));
        }
    }
}

/// The generator refuses a host key that names a KMS ID nobody defines.
#[test]
#[should_panic(expected = "which does not exist")]
fn generator_fails_on_dangling_kms_id() {
    let xml = read(XML_PATH).replacen(
        r#"<Activate KmsItem="8449b1fb-f0ea-497a-99ab-66ca96e9a0f5" />"#,
        r#"<Activate KmsItem="00000000-1111-2222-3333-444444444444" />"#,
        1,
    );
    let _ = catalog(&xml, &read(SEED_PATH), &read(CURRENT_PATH));
}

/// The generator refuses a coverage rule naming a host key that does not
/// exist (here: the XML's Server 2019 key changed its ID).
#[test]
#[should_panic(expected = "coverage rule Windows Server 2019: CSVLK 2e7a9ad1")]
fn generator_fails_on_missing_host_key() {
    let xml = read(XML_PATH).replacen(
        r#"IniFileName="Windows" EPid="06401-00206-566-174993-03-1033-9600.0000-2802018" Id="2e7a9ad1-a849-4b56-babe-17d5a29fe4b4""#,
        r#"IniFileName="Windows" EPid="06401-00206-566-174993-03-1033-9600.0000-2802018" Id="2e7a9ad1-a849-4b56-babe-17d5a29fe4b5""#,
        1,
    );
    let _ = catalog(&xml, &read(SEED_PATH), &read(CURRENT_PATH));
}

/// The generator refuses a key that would activate a newer product.
#[test]
#[should_panic(expected = "a key never activates a newer product")]
fn generator_fails_on_newer_product() {
    // Date the Server 2019 key before the Server 2016 one it covers.
    let xml = read(XML_PATH).replacen(
        r#"DisplayName="Windows Server 2019" ReleaseDate="2018-10-02T00:00:00Z""#,
        r#"DisplayName="Windows Server 2019" ReleaseDate="2015-10-02T00:00:00Z""#,
        1,
    );
    assert_ne!(xml, read(XML_PATH), "the test edits the XML");
    let _ = catalog(&xml, &read(SEED_PATH), &read(CURRENT_PATH));
}
