//! Generator and freshness check for `src/product/data.rs`.
//!
//! Reads `tests/data/reference/KmsDataBase.xml` (public domain) and the rows
//! of [`SEED_EXTRAS`] taken from `tests/data/reference/gvlk-windows-seed.csv`
//! (Microsoft's published GVLK table), renders the Rust tables and compares
//! them with the checked-in file. With `KMS_REGENERATE=1` in the environment
//! it rewrites the file instead:
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
const OUT_PATH: &str = "src/product/data.rs";

/// A SKU the XML lacks, added from the seed CSV.
struct SeedExtra {
    /// The GVLK exactly as in the seed CSV.
    gvlk: &'static str,
    /// Display name given here (the seed's edition name plus its section).
    name: &'static str,
    /// SKU (activation) ID.
    sku_id: &'static str,
    /// KMS ID it counts under.
    kms_id: &'static str,
}

/// GVLKs from the seed CSV that `KmsDataBase.xml` does not contain.
///
/// Windows Server version 1709 (Semi-Annual Channel). The XML has no entry,
/// and no SKU ID, for them. Their SKU IDs are those of the same editions of
/// version 1803 (`ServerDatacenterACor` e49c08e7-…, `ServerStandardACor`
/// 61c5ef22-…), which the XML already lists with the 1803 GVLKs under the
/// Windows Server 2016 KMS ID: a public key list (`KeyListServer2016VL` in a
/// C# key-finder, found with the code search) maps the 1709 and the 1803 GVLK
/// of each edition to the same activation ID, and py-kms' copy of the XML
/// carries the two 1709 rows with a nil ID as placeholders. The KMS ID is
/// therefore the 1803 rows' one, Windows Server 2016 (6e9fc069-…).
const SEED_EXTRAS: &[SeedExtra] = &[
    SeedExtra {
        gvlk: "6Y6KB-N82V8-D8CQV-23MJW-BWTG6",
        name: "Windows Server Datacenter (Semi-Annual Channel v.1709)",
        sku_id: "e49c08e7-da82-42f8-bde2-b570fbcae76c",
        kms_id: "6e9fc069-257d-4bc4-b4a7-750514d32743",
    },
    SeedExtra {
        gvlk: "DPCNP-XQFKJ-BJF7R-FRC8D-GF6G4",
        name: "Windows Server Standard (Semi-Annual Channel v.1709)",
        sku_id: "61c5ef22-f14f-4553-a824-c4b31e84b100",
        kms_id: "6e9fc069-257d-4bc4-b4a7-750514d32743",
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
    activates: Vec<u128>,
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
            activates: children(c, "Activate")
                .map(|a| guid(req(a, "KmsItem")))
                .collect(),
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

/// The XML plus the seed extras, each table sorted for binary search.
fn catalog(xml: &str, seed: &str) -> Parsed {
    let mut p = parse_xml(xml);
    let seed = parse_seed(seed);
    for extra in SEED_EXTRAS {
        assert!(
            seed.iter().any(|(_, _, g)| g == extra.gvlk),
            "seed extra {} is not in the seed CSV",
            extra.gvlk
        );
        assert!(
            p.skus.iter().all(|s| s.gvlk != extra.gvlk),
            "seed extra {} is already in the XML: drop it from SEED_EXTRAS",
            extra.gvlk
        );
        let (sku, kms) = (guid(extra.sku_id), guid(extra.kms_id));
        assert!(p.kms.iter().any(|k| k.id == kms), "seed extra KMS ID");
        p.skus.push(SkuRow {
            id: sku,
            name: extra.name.to_owned(),
            gvlk: extra.gvlk.to_owned(),
            kms,
            generated: false,
            seed: true,
        });
    }
    p.apps.sort_by_key(|a| a.id);
    p.kms.sort_by_key(|k| k.id);
    p.skus.sort_by_key(|s| (s.id, s.seed));
    p.csvlks.sort_by_key(|c| c.id); // stable: duplicates keep XML order
    p.builds.sort_by_key(|b| b.number);
    p
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
         //! (public domain) plus the `SEED_EXTRAS` rows taken from\n\
         //! `tests/data/reference/gvlk-windows-seed.csv`. To regenerate after changing\n\
         //! either input or the generator, run:\n\
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
        let activates = match c.activates.as_slice() {
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
        let invalid: Vec<String> = c.invalid_builds.iter().map(u8::to_string).collect();
        writeln!(
            w,
            "    Csvlk {{\n        id: {},\n        name: {:?},\n        group_id: {},\n        key_ids: {},\n        \
             release_date: {},\n        is_lab: {},\n        is_preview: {},\n        vlmcsd_index: {},\n        \
             epid: {},\n        discouraged_build_indices: &[{}],\n        activates: {},\n    }},",
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
    let fresh = render(&catalog(&read(XML_PATH), &read(SEED_PATH)));
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
    let p = catalog(&read(XML_PATH), &read(SEED_PATH));
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
