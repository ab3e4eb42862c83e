//! ePID parsing, formatting, validation and generation.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::too_many_lines,
    reason = "tests: a panic is a failed test"
)]

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use kms_activation::epid::{self, Epid, EpidError, EpidPart, EpidProblem, GenerateError};
use kms_activation::{ScriptedRandom, Uuid, product};
use proptest::prelude::*;

const EXAMPLE: &str = "05426-00206-565-184251-03-1068-9200.0000-1222025";

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn server_2019() -> &'static product::Csvlk {
    product::csvlk(Uuid::from_u128(0x2e7a9ad1_a849_4b56_babe_17d5a29fe4b4)).unwrap()
}

#[test]
fn example_parses_and_validates() {
    let e = Epid::parse(EXAMPLE).unwrap();
    assert_eq!(e.platform_id(), 5426);
    assert_eq!(e.group_id(), 206);
    assert_eq!(e.key_id(), 565_184_251);
    assert_eq!(e.channel(), 3);
    assert_eq!(e.lcid(), 1068);
    assert_eq!(e.build(), 9200);
    assert_eq!(e.activation_date(), date(2025, 5, 2));
    assert_eq!(e.to_string(), EXAMPLE);
    let now = at(2025, 11, 1);
    assert_eq!(e.problems_for(server_2019(), now), vec![]);
    assert_eq!(e.problems(now), vec![]);
    assert_eq!(e.likely_csvlk(), Some(server_2019()));
}

#[test]
fn xml_sample_epids_validate_against_their_csvlk() {
    let now = at(2026, 1, 1);
    let mut seen = 0;
    for c in product::csvlks() {
        if let Some(sample) = c.sample_epid() {
            let e = Epid::parse(sample).unwrap();
            assert_eq!(e.problems_for(c, now), vec![], "{}: {sample}", c.name());
            seen += 1;
        }
    }
    assert_eq!(seen, 7);
}

fn err(text: &str) -> EpidError {
    Epid::parse(text).unwrap_err()
}

#[test]
fn malformed_shapes_each_get_their_error() {
    use EpidPart::*;
    let long = format!("{EXAMPLE}{}", "0".repeat(20));
    // A response carries at most 63 UTF-16 units of ePID (PIDSize <= 128 with the NUL).
    assert_eq!(err(&long), EpidError::TooLong { len: 68, max: 63 });
    assert_eq!(err(""), EpidError::PartCount { found: 1 });
    assert_eq!(
        err("05426-00206-565184251-03-1068-9200.0000-1222025"),
        EpidError::PartCount { found: 7 }
    );
    assert_eq!(
        err("05426-00206-565-184251-03-1068-9200.0000-1222025-"),
        EpidError::PartCount { found: 9 }
    );

    let cases: [(&str, EpidPart, usize, usize, usize); 8] = [
        (
            "5426-00206-565-184251-03-1068-9200.0000-1222025",
            PlatformId,
            4,
            5,
            5,
        ),
        (
            "05426-000206-565-184251-03-1068-9200.0000-1222025",
            GroupId,
            6,
            5,
            5,
        ),
        (
            "05426-00206-56-184251-03-1068-9200.0000-1222025",
            KeyIdHigh,
            2,
            3,
            3,
        ),
        (
            "05426-00206-565-1842510-03-1068-9200.0000-1222025",
            KeyIdLow,
            7,
            6,
            6,
        ),
        (
            "05426-00206-565-184251-3-1068-9200.0000-1222025",
            Channel,
            1,
            2,
            2,
        ),
        (
            "05426-00206-565-184251-03-106-9200.0000-1222025",
            Lcid,
            3,
            4,
            5,
        ),
        (
            "05426-00206-565-184251-03-1068-1234567.0000-1222025",
            Build,
            7,
            1,
            6,
        ),
        (
            "05426-00206-565-184251-03-1068-9200.0000-122202",
            ActivationDate,
            6,
            7,
            7,
        ),
    ];
    for (text, part, found, min, max) in cases {
        assert_eq!(
            err(text),
            EpidError::Length {
                part,
                found,
                min,
                max
            },
            "{text}"
        );
    }

    let cases: [(&str, EpidPart, char); 8] = [
        (
            "0542x-00206-565-184251-03-1068-9200.0000-1222025",
            PlatformId,
            'x',
        ),
        (
            "05426-0020 -565-184251-03-1068-9200.0000-1222025",
            GroupId,
            ' ',
        ),
        (
            "05426-00206-+65-184251-03-1068-9200.0000-1222025",
            KeyIdHigh,
            '+',
        ),
        (
            "05426-00206-565-18425é-03-1068-9200.0000-1222025",
            KeyIdLow,
            'é',
        ),
        (
            "05426-00206-565-184251-0a-1068-9200.0000-1222025",
            Channel,
            'a',
        ),
        (
            "05426-00206-565-184251-03-10_8-9200.0000-1222025",
            Lcid,
            '_',
        ),
        (
            "05426-00206-565-184251-03-1068-92O0.0000-1222025",
            Build,
            'O',
        ),
        (
            "05426-00206-565-184251-03-1068-9200.0000-12220z5",
            ActivationDate,
            'z',
        ),
    ];
    for (text, part, found) in cases {
        assert_eq!(err(text), EpidError::NotDigit { part, found }, "{text}");
    }

    assert_eq!(
        err("05426-00206-565-184251-03-01068-9200.0000-1222025"),
        EpidError::LeadingZero { part: Lcid }
    );
    assert_eq!(
        err("05426-00206-565-184251-03-1068-09200.0000-1222025"),
        EpidError::LeadingZero { part: Build }
    );
    for bad in ["9200", "9200.000", "9200.0001", "9200.", "9200.0000.0000"] {
        let text = format!("05426-00206-565-184251-03-1068-{bad}-1222025");
        assert_eq!(err(&text), EpidError::BuildSuffix, "{text}");
    }

    assert_eq!(
        err("05426-00206-565-184251-03-1068-9200.0000-0002025"),
        EpidError::DayOfYear { day: 0, year: 2025 }
    );
    assert_eq!(
        err("05426-00206-565-184251-03-1068-9200.0000-3672024"),
        EpidError::DayOfYear {
            day: 367,
            year: 2024
        }
    );
    assert_eq!(
        err("05426-00206-565-184251-03-1068-9200.0000-3662023"),
        EpidError::DayOfYear {
            day: 366,
            year: 2023
        }
    );
    let leap = Epid::parse("05426-00206-565-184251-03-1068-9200.0000-3662024").unwrap();
    assert_eq!(leap.activation_date(), date(2024, 12, 31));
}

#[test]
fn errors_display_the_part() {
    let e = err("05426-00206-565-184251-03-1068-92O0.0000-1222025");
    assert_eq!(e.to_string(), "epid build: 'O' is not a digit");
}

#[test]
fn new_rejects_values_that_do_not_format() {
    let d = date(2025, 1, 1);
    assert!(matches!(
        Epid::new(100_000, 206, 1, 3, 1033, 9200, d),
        Err(EpidError::OutOfRange {
            part: EpidPart::PlatformId,
            ..
        })
    ));
    assert!(Epid::new(5426, 206, 1_000_000_000, 3, 1033, 9200, d).is_err());
    assert!(Epid::new(5426, 206, 1, 100, 1033, 9200, d).is_err());
    assert!(Epid::new(5426, 206, 1, 3, 999, 9200, d).is_err());
    assert!(Epid::new(5426, 206, 1, 3, 1033, 0, d).is_err());
    assert!(Epid::new(5426, 206, 1, 3, 1033, 9200, date(10_000, 1, 1)).is_err());
}

#[test]
fn validator_lists_every_problem() {
    let now = at(2025, 11, 1);
    // Channel 02 parses, but is flagged.
    let e = Epid::parse("05426-00206-565-184251-02-1068-9200.0000-1222025").unwrap();
    assert_eq!(
        e.problems(now),
        vec![EpidProblem::WrongChannel { channel: 2 }]
    );

    // Everything wrong at once.
    let e = Epid::parse("03612-12345-999-000000-07-1234-9200.0000-0012030").unwrap();
    let p = e.problems(now);
    assert!(p.contains(&EpidProblem::WrongChannel { channel: 7 }));
    assert!(p.contains(&EpidProblem::UnknownLcid { lcid: 1234 }));
    assert!(p.contains(&EpidProblem::PlatformMismatch {
        build: 9200,
        expected: 5426,
        found: 3612
    }));
    assert!(p.contains(&EpidProblem::UnknownGroup { group_id: 12345 }));
    assert!(p.contains(&EpidProblem::InFuture {
        date: date(2030, 1, 1),
        today: date(2025, 11, 1)
    }));
    assert_eq!(p.len(), 5, "{p:?}");

    // Key outside every range of group 206.
    let e = Epid::parse("05426-00206-999-000000-03-1033-9200.0000-1222025").unwrap();
    assert_eq!(
        e.problems(now),
        vec![EpidProblem::KeyIdOutOfRange {
            group_id: 206,
            key_id: 999_000_000
        }]
    );
    assert!(e.likely_csvlk().is_none());

    // Build below every known build; date before the build's release.
    let e = Epid::parse("55041-00206-565-184251-03-1033-500.0000-1222025").unwrap();
    assert_eq!(
        e.problems(now),
        vec![EpidProblem::UnknownBuild { build: 500 }]
    );
    let e = Epid::parse("03612-00206-565-184251-03-1033-26100.0000-1222019").unwrap();
    assert_eq!(
        e.problems(now),
        vec![EpidProblem::BeforeBuildRelease {
            date: date(2019, 5, 2),
            release: date(2024, 11, 1)
        }]
    );

    // Before the CSVLK's release (Server 2019 key, activated in 2017).
    let e = Epid::parse("05426-00206-565-184251-03-1033-9200.0000-1222017").unwrap();
    let before = EpidProblem::BeforeCsvlkRelease {
        date: date(2017, 5, 2),
        release: date(2018, 10, 2),
    };
    assert_eq!(e.problems(now), vec![before]);
    assert_eq!(e.problems_for(server_2019(), now), vec![before]);

    // Against a different CSVLK.
    let office_2010 =
        product::csvlk(Uuid::from_u128(0xbfe7a195_4f8f_4f0b_a622_cf13c7d16864)).unwrap();
    let e = Epid::parse(EXAMPLE).unwrap();
    let p = e.problems_for(office_2010, now);
    assert!(p.contains(&EpidProblem::GroupMismatch {
        expected: 96,
        found: 206
    }));
    assert!(matches!(p[1], EpidProblem::KeyIdOutsideCsvlk { .. }));
    assert_eq!(p.len(), 2);
    for problem in p {
        assert!(!problem.to_string().is_empty());
    }
}

/// Builds used for the generated-ePID checks: every `UseForEpid` build, an
/// unlisted build between two known ones, and a future one.
const BUILDS: [u32; 8] = [6002, 7601, 9200, 9600, 14393, 17763, 20348, 26100];

fn generatable() -> impl Iterator<Item = &'static product::Csvlk> {
    product::csvlks()
        .iter()
        .filter(|c| c.group_id().is_some() && c.key_ids().is_some())
}

/// Windows Server host keys are installed on servers only: no ePID of one
/// names a client build (the XML's builds without "Server" in their name).
#[test]
fn no_server_key_epid_on_a_client_build() {
    let now = at(2026, 1, 1);
    let client_builds: Vec<u32> = product::builds()
        .iter()
        .filter(|b| !b.name().contains("Server") && b.build() >= 10_240)
        .map(product::WinBuild::build)
        .collect();
    assert!(client_builds.contains(&19_044) && client_builds.contains(&22_631));
    let mut servers = 0;
    for c in generatable().filter(|c| c.name().starts_with("Windows Server")) {
        servers += 1;
        for &build in &client_builds {
            let mut rng = ScriptedRandom::new(vec![7; 64]);
            let result = epid::generate(c, build, now, &mut rng);
            assert!(
                matches!(result, Err(epid::GenerateError::BuildNotForCsvlk { .. })),
                "{} on client build {build}: {result:?}",
                c.name()
            );
        }
        // On a server build it works.
        let mut rng = ScriptedRandom::new(vec![7; 64]);
        let e = epid::generate(c, 26_100, now, &mut rng).unwrap();
        // An ePID that claims a client build is flagged.
        let forged = Epid::new(
            3612,
            e.group_id(),
            e.key_id(),
            3,
            1033,
            19_044,
            e.activation_date(),
        )
        .unwrap();
        assert!(
            forged
                .problems_for(c, now)
                .contains(&epid::EpidProblem::ServerKeyOnClientBuild { build: 19_044 }),
            "{}",
            c.name()
        );
    }
    assert!(servers >= 15, "{servers} server keys");
    // The catalog-wide check sees it too: a Server 2019 key range on the
    // Windows 10 21H2 build.
    let forged = Epid::parse("03612-00206-565-184251-03-1068-19044.0000-1222025").unwrap();
    assert_eq!(forged.likely_csvlk().unwrap().name(), "Windows Server 2019");
    assert!(
        forged
            .problems(now)
            .contains(&epid::EpidProblem::ServerKeyOnClientBuild { build: 19_044 })
    );
    // A Windows 10 client key is fine on a client build.
    let windows_10 = product::csvlk(
        "0724cb7d-3437-4cb7-93cb-830375d0079d"
            .parse::<Uuid>()
            .unwrap(),
    )
    .unwrap();
    let mut rng = ScriptedRandom::new(vec![7; 64]);
    assert!(epid::generate(windows_10, 19_044, now, &mut rng).is_ok());
}

/// The XML's `InvalidWinBuild` of the Server 2025 key, `[0,1,2]`, names the
/// first three RTM server builds: 6002, 7601 and 9200.
#[test]
fn discouraged_builds_are_not_generated() {
    let now = at(2026, 1, 1);
    let server_2025 = product::csvlk(
        "84e331f6-4279-48c4-ab10-b75139181351"
            .parse::<Uuid>()
            .unwrap(),
    )
    .unwrap();
    for build in [6002, 7601, 9200] {
        let mut rng = ScriptedRandom::new(vec![7; 64]);
        assert!(
            matches!(
                epid::generate(server_2025, build, now, &mut rng),
                Err(epid::GenerateError::BuildNotForCsvlk { .. })
            ),
            "{build}"
        );
    }
    for build in [9600, 14393, 17763, 20348, 26100] {
        let mut rng = ScriptedRandom::new(vec![7; 64]);
        assert!(
            epid::generate(server_2025, build, now, &mut rng).is_ok(),
            "{build}"
        );
    }
}

#[test]
fn generator_errors() {
    let now = at(2026, 1, 1);
    let mut rng = ScriptedRandom::new([]);
    let lacking: Vec<&str> = product::csvlks()
        .iter()
        .filter(|c| c.group_id().is_none() || c.key_ids().is_none())
        .map(product::Csvlk::name)
        .collect();
    assert_eq!(lacking.len(), 4, "{lacking:?}");
    for c in product::csvlks()
        .iter()
        .filter(|c| c.group_id().is_none() || c.key_ids().is_none())
    {
        assert!(matches!(
            epid::generate(c, 17763, now, &mut rng),
            Err(GenerateError::CsvlkLacksEpidData { .. })
        ));
    }
    assert_eq!(
        epid::generate(server_2019(), 1000, now, &mut rng),
        Err(GenerateError::UnknownBuild { build: 1000 })
    );
    assert_eq!(
        epid::generate(server_2019(), 17763, at(2018, 1, 1), &mut rng),
        Err(GenerateError::NoDate {
            earliest: date(2018, 10, 2),
            today: date(2018, 1, 1)
        })
    );
    // `now` on the release day itself works.
    let e = epid::generate(server_2019(), 17763, at(2018, 10, 2), &mut rng).unwrap();
    assert_eq!(e.activation_date(), date(2018, 10, 2));
    // Builds the catalog does not know are refused, however close to one.
    for build in [1234, 19045, 30000, 1_000_000] {
        assert_eq!(
            epid::generate(server_2019(), build, now, &mut rng),
            Err(GenerateError::UnknownBuild { build })
        );
    }
}

#[test]
fn generator_is_deterministic() {
    let now = at(2026, 1, 1);
    let a = epid::generate(
        server_2019(),
        17763,
        now,
        &mut ScriptedRandom::new([9u8; 24]),
    )
    .unwrap();
    let b = epid::generate(
        server_2019(),
        17763,
        now,
        &mut ScriptedRandom::new([9u8; 24]),
    )
    .unwrap();
    assert_eq!(a, b);
    assert_eq!(a.platform_id(), 3612);
    assert_eq!(a.group_id(), 206);
}

fn arb_epid() -> impl Strategy<Value = Epid> {
    (
        0u32..=99_999,
        0u32..=99_999,
        0u32..=999_999_999,
        0u8..=99,
        1000u32..=99_999,
        1u32..=999_999,
        0i32..=9999,
        1u32..=366,
    )
        .prop_map(|(p, g, k, c, l, b, y, d)| {
            let date = NaiveDate::from_yo_opt(y, d)
                .or_else(|| NaiveDate::from_yo_opt(y, 365))
                .unwrap();
            Epid::new(p, g, k, c, l, b, date).unwrap()
        })
}

proptest! {
    #[test]
    fn format_parse_round_trip(e in arb_epid()) {
        let text = e.to_string();
        let back = Epid::parse(&text).unwrap();
        prop_assert_eq!(back, e);
        prop_assert_eq!(back.to_string(), text);
    }

    #[test]
    fn parse_never_panics(text in ".{0,80}") {
        let _ = Epid::parse(&text);
    }

    #[test]
    fn parse_of_digit_soup_round_trips(text in "[0-9]{5}-[0-9]{5}-[0-9]{3}-[0-9]{6}-[0-9]{2}-[1-9][0-9]{3,4}-[1-9][0-9]{0,5}\\.0000-(00[1-9]|0[1-9][0-9]|[12][0-9][0-9]|3[0-5][0-9]|36[0-5])(19[0-9]{2}|20[0-9]{2})") {
        // Every part is in range, so every one of these must parse.
        let e = Epid::parse(&text).unwrap();
        prop_assert_eq!(e.to_string(), text);
    }

    #[test]
    fn generated_epids_are_consistent(seed in any::<[u8; 32]>()) {
        let now = at(2026, 1, 1);
        for c in generatable() {
            for build in BUILDS {
                let mut rng = ScriptedRandom::new(seed.to_vec());
                let discouraged = c.discouraged_builds().any(|b| b.build() == build);
                let result = epid::generate(c, build, now, &mut rng);
                if discouraged {
                    let refused = matches!(result, Err(epid::GenerateError::BuildNotForCsvlk { .. }));
                    prop_assert!(refused, "{} on discouraged build {}", c.name(), build);
                    continue;
                }
                let e = result.unwrap();
                prop_assert_eq!(e.problems_for(c, now), vec![], "{} on {}: {}", c.name(), build, e);
                prop_assert_eq!(e.problems(now), vec![], "{} on {}: {}", c.name(), build, e);
                prop_assert_eq!(Epid::parse(&e.to_string()).unwrap(), e);
            }
        }
    }
}
