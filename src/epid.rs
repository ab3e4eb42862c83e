//! Extended product IDs (ePIDs) of KMS hosts: parse, format, generate and
//! check for consistency with the product tables.
//!
//! An ePID reads `PPPPP-GGGGG-KKK-KKKKKK-CC-LCID-BUILD.0000-DDDYYYY`:
//! platform ID of the host build, group ID and key ID of the host's CSVLK,
//! license channel (always `03`), host language ID, host build number and
//! the day-of-year and year the host was activated.
//!
//! * [`Epid::parse`] (or [`str::parse`]) checks the syntax only and reports
//!   the part that is wrong ([`EpidError`]); [`Epid`]'s [`Display`](core::fmt::Display)
//!   writes the canonical form back.
//! * [`Epid::problems`] / [`Epid::problems_for`] check the meaning against
//!   the catalog and list every inconsistency ([`EpidProblem`]); an empty list
//!   means the ePID looks like one a genuine host would send.
//! * [`generate`] makes a consistent ePID for a chosen CSVLK and host build
//!   from a caller-supplied [`RandomSource`]; the caller passes `now`.
//!
//! ```
//! use kms_activation::epid::Epid;
//! use chrono::{NaiveDate, TimeZone, Utc};
//!
//! let epid: Epid = "05426-00206-565-184251-03-1068-9200.0000-1222025".parse()?;
//! assert_eq!(epid.platform_id(), 5426);
//! assert_eq!(epid.key_id(), 565_184_251);
//! assert_eq!(epid.activation_date(), NaiveDate::from_ymd_opt(2025, 5, 2).unwrap());
//! assert_eq!(epid.to_string(), "05426-00206-565-184251-03-1068-9200.0000-1222025");
//!
//! let now = Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap();
//! assert!(epid.problems(now).is_empty());
//! assert_eq!(epid.likely_csvlk().unwrap().name(), "Windows Server 2019");
//! # Ok::<(), kms_activation::epid::EpidError>(())
//! ```

use core::fmt;
use core::str::FromStr;

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};

use crate::message::MAX_EPID_LEN;
use crate::product::{self, Csvlk, KeyIdRange};
use crate::random::below;
use crate::{RandomSource, Uuid};

/// The license channel every KMS host ePID carries (`03`, volume).
pub const VOLUME_CHANNEL: u8 = 3;

/// Windows language IDs (LCID, decimal) and their language tags, sorted by
/// LCID: every LCID of four or five decimal digits (the width an ePID
/// allows) in the Windows locale table that `CPython` maintains
/// (`locale.windows_locale`, after Microsoft's LCID reference). Generated
/// ePIDs take their LCID from here, and the validator flags any other as
/// unknown.
pub const KNOWN_LCIDS: &[(u32, &str)] = &[
    (1025, "ar-SA"),
    (1026, "bg-BG"),
    (1027, "ca-ES"),
    (1028, "zh-TW"),
    (1029, "cs-CZ"),
    (1030, "da-DK"),
    (1031, "de-DE"),
    (1032, "el-GR"),
    (1033, "en-US"),
    (1034, "es-ES"),
    (1035, "fi-FI"),
    (1036, "fr-FR"),
    (1037, "he-IL"),
    (1038, "hu-HU"),
    (1039, "is-IS"),
    (1040, "it-IT"),
    (1041, "ja-JP"),
    (1042, "ko-KR"),
    (1043, "nl-NL"),
    (1044, "nb-NO"),
    (1045, "pl-PL"),
    (1046, "pt-BR"),
    (1047, "rm-CH"),
    (1048, "ro-RO"),
    (1049, "ru-RU"),
    (1050, "hr-HR"),
    (1051, "sk-SK"),
    (1052, "sq-AL"),
    (1053, "sv-SE"),
    (1054, "th-TH"),
    (1055, "tr-TR"),
    (1056, "ur-PK"),
    (1057, "id-ID"),
    (1058, "uk-UA"),
    (1059, "be-BY"),
    (1060, "sl-SI"),
    (1061, "et-EE"),
    (1062, "lv-LV"),
    (1063, "lt-LT"),
    (1064, "tg-TJ"),
    (1065, "fa-IR"),
    (1066, "vi-VN"),
    (1067, "hy-AM"),
    (1068, "az-Latn-AZ"),
    (1069, "eu-ES"),
    (1070, "wen-DE"),
    (1071, "mk-MK"),
    (1074, "tn-ZA"),
    (1076, "xh-ZA"),
    (1077, "zu-ZA"),
    (1078, "af-ZA"),
    (1079, "ka-GE"),
    (1080, "fo-FO"),
    (1081, "hi-IN"),
    (1082, "mt-MT"),
    (1083, "se-NO"),
    (1086, "ms-MY"),
    (1087, "kk-KZ"),
    (1088, "ky-KG"),
    (1089, "sw-KE"),
    (1090, "tk-TM"),
    (1091, "uz-UZ"),
    (1092, "tt-RU"),
    (1093, "bn-IN"),
    (1094, "pa-IN"),
    (1095, "gu-IN"),
    (1096, "or-IN"),
    (1097, "ta-IN"),
    (1098, "te-IN"),
    (1099, "kn-IN"),
    (1100, "ml-IN"),
    (1101, "as-IN"),
    (1102, "mr-IN"),
    (1103, "sa-IN"),
    (1104, "mn-MN"),
    (1105, "bo-CN"),
    (1106, "cy-GB"),
    (1107, "kh-KH"),
    (1108, "lo-LA"),
    (1110, "gl-ES"),
    (1111, "kok-IN"),
    (1114, "syr-SY"),
    (1115, "si-LK"),
    (1117, "iu-CA"),
    (1118, "am-ET"),
    (1121, "ne-NP"),
    (1122, "fy-NL"),
    (1123, "ps-AF"),
    (1124, "fil-PH"),
    (1125, "div-MV"),
    (1128, "ha-NG"),
    (1130, "yo-NG"),
    (1131, "quz-BO"),
    (1132, "ns-ZA"),
    (1133, "ba-RU"),
    (1134, "lb-LU"),
    (1135, "kl-GL"),
    (1144, "ii-CN"),
    (1146, "arn-CL"),
    (1148, "moh-CA"),
    (1150, "br-FR"),
    (1152, "ug-CN"),
    (1153, "mi-NZ"),
    (1154, "oc-FR"),
    (1155, "co-FR"),
    (1156, "gsw-FR"),
    (1157, "sah-RU"),
    (1158, "qut-GT"),
    (1159, "rw-RW"),
    (1160, "wo-SN"),
    (1164, "gbz-AF"),
    (2049, "ar-IQ"),
    (2052, "zh-CN"),
    (2055, "de-CH"),
    (2057, "en-GB"),
    (2058, "es-MX"),
    (2060, "fr-BE"),
    (2064, "it-CH"),
    (2067, "nl-BE"),
    (2068, "nn-NO"),
    (2070, "pt-PT"),
    (2074, "sr-Latn-CS"),
    (2077, "sv-FI"),
    (2080, "ur-IN"),
    (2092, "az-AZ"),
    (2094, "dsb-DE"),
    (2107, "se-SE"),
    (2108, "ga-IE"),
    (2110, "ms-BN"),
    (2115, "uz-UZ"),
    (2128, "mn-CN"),
    (2129, "bo-BT"),
    (2141, "iu-CA"),
    (2143, "tmz-DZ"),
    (2155, "quz-EC"),
    (3073, "ar-EG"),
    (3076, "zh-HK"),
    (3079, "de-AT"),
    (3081, "en-AU"),
    (3082, "es-ES"),
    (3084, "fr-CA"),
    (3098, "sr-SP"),
    (3131, "se-FI"),
    (3179, "quz-PE"),
    (4097, "ar-LY"),
    (4100, "zh-SG"),
    (4103, "de-LU"),
    (4105, "en-CA"),
    (4106, "es-GT"),
    (4108, "fr-CH"),
    (4122, "hr-BA"),
    (4155, "smj-NO"),
    (5121, "ar-DZ"),
    (5124, "zh-MO"),
    (5127, "de-LI"),
    (5129, "en-NZ"),
    (5130, "es-CR"),
    (5132, "fr-LU"),
    (5146, "bs-BA"),
    (5179, "smj-SE"),
    (6145, "ar-MA"),
    (6153, "en-IE"),
    (6154, "es-PA"),
    (6156, "fr-MC"),
    (6170, "sr-BA"),
    (6203, "sma-NO"),
    (7169, "ar-TN"),
    (7177, "en-ZA"),
    (7178, "es-DO"),
    (7194, "sr-BA"),
    (7227, "sma-SE"),
    (8193, "ar-OM"),
    (8201, "en-JA"),
    (8202, "es-VE"),
    (8218, "bs-BA"),
    (8251, "sms-FI"),
    (9217, "ar-YE"),
    (9225, "en-CB"),
    (9226, "es-CO"),
    (9242, "sr-Latn-RS"),
    (9275, "smn-FI"),
    (10241, "ar-SY"),
    (10249, "en-BZ"),
    (10250, "es-PE"),
    (10266, "sr-Cyrl-RS"),
    (11265, "ar-JO"),
    (11273, "en-TT"),
    (11274, "es-AR"),
    (12289, "ar-LB"),
    (12297, "en-ZW"),
    (12298, "es-EC"),
    (13313, "ar-KW"),
    (13321, "en-PH"),
    (13322, "es-CL"),
    (14337, "ar-AE"),
    (14346, "es-UR"),
    (15361, "ar-BH"),
    (15370, "es-PY"),
    (16385, "ar-QA"),
    (16393, "en-IN"),
    (16394, "es-BO"),
    (17417, "en-MY"),
    (17418, "es-SV"),
    (18441, "en-IN"),
    (18442, "es-HN"),
    (19466, "es-NI"),
    (20490, "es-PR"),
    (21514, "es-US"),
    (31748, "zh-CHT"),
];

/// The language tag of a known LCID (see [`KNOWN_LCIDS`]).
///
/// ```
/// assert_eq!(kms_activation::epid::lcid_tag(1033), Some("en-US"));
/// assert_eq!(kms_activation::epid::lcid_tag(1234), None);
/// ```
#[must_use]
pub fn lcid_tag(lcid: u32) -> Option<&'static str> {
    let i = KNOWN_LCIDS
        .binary_search_by_key(&lcid, |(id, _)| *id)
        .ok()?;
    KNOWN_LCIDS.get(i).map(|(_, tag)| *tag)
}

/// One dash-separated part of an ePID, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EpidPart {
    /// `PPPPP`: platform ID (5 digits).
    PlatformId,
    /// `GGGGG`: CSVLK group ID (5 digits).
    GroupId,
    /// `KKK`: key ID divided by 10⁶ (3 digits).
    KeyIdHigh,
    /// `KKKKKK`: key ID modulo 10⁶ (6 digits).
    KeyIdLow,
    /// `CC`: license channel (2 digits).
    Channel,
    /// `LCID`: language ID (4–5 digits, no leading zero).
    Lcid,
    /// `BUILD` of `BUILD.0000` (1–6 digits, no leading zero).
    Build,
    /// `DDDYYYY`: activation day of year and year (7 digits).
    ActivationDate,
}

impl fmt::Display for EpidPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PlatformId => "platform id",
            Self::GroupId => "group id",
            Self::KeyIdHigh => "key id (high 3 digits)",
            Self::KeyIdLow => "key id (low 6 digits)",
            Self::Channel => "channel",
            Self::Lcid => "lcid",
            Self::Build => "build",
            Self::ActivationDate => "activation date",
        })
    }
}

/// Why a text is not an ePID, or why values cannot form one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EpidError {
    /// Longer than [`crate::message::MAX_EPID_LEN`] bytes, the
    /// most a response can carry (a real ePID has 44–49 characters).
    #[error("epid is {len} bytes long, at most {max} allowed")]
    TooLong {
        /// Length of the input in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not 8 dash-separated parts.
    #[error("epid has {found} dash-separated parts, expected 8")]
    PartCount {
        /// Parts found.
        found: usize,
    },
    /// A part has the wrong number of characters.
    #[error("epid {part}: {found} characters, expected {min} to {max}")]
    Length {
        /// The part.
        part: EpidPart,
        /// Characters found.
        found: usize,
        /// Fewest allowed.
        min: usize,
        /// Most allowed.
        max: usize,
    },
    /// A part holds something other than ASCII digits.
    #[error("epid {part}: {found:?} is not a digit")]
    NotDigit {
        /// The part.
        part: EpidPart,
        /// The first offending character.
        found: char,
    },
    /// The LCID or build starts with `0`.
    #[error("epid {part}: leading zero")]
    LeadingZero {
        /// The part.
        part: EpidPart,
    },
    /// The build is not followed by `.0000`.
    #[error("epid build: expected BUILD.0000")]
    BuildSuffix,
    /// The day of year is 0, above 366, or 366 in a common year.
    #[error("epid activation date: day {day} does not exist in {year}")]
    DayOfYear {
        /// Day of year found.
        day: u32,
        /// Year found.
        year: i32,
    },
    /// A value too large (or small) for its part of the text form.
    #[error("epid {part}: value {value} does not fit")]
    OutOfRange {
        /// The part.
        part: EpidPart,
        /// The value given.
        value: i64,
    },
}

/// A KMS host's extended product ID.
///
/// Holds only values that format into a parseable ePID; the channel and LCID
/// may still be implausible, which [`Epid::problems`] reports.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epid {
    platform_id: u32,
    group_id: u32,
    key_id: u32,
    channel: u8,
    lcid: u32,
    build: u32,
    activation_date: NaiveDate,
}

fn check_range(part: EpidPart, value: i64, min: i64, max: i64) -> Result<(), EpidError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(EpidError::OutOfRange { part, value })
    }
}

/// Parses a part made only of digits, `min..=max` characters long.
fn digits(part: EpidPart, text: &str, min: usize, max: usize) -> Result<u32, EpidError> {
    if let Some(found) = text.chars().find(|c| !c.is_ascii_digit()) {
        return Err(EpidError::NotDigit { part, found });
    }
    if !(min..=max).contains(&text.len()) {
        return Err(EpidError::Length {
            part,
            found: text.len(),
            min,
            max,
        });
    }
    // At most 9 ASCII digits: always fits in u32.
    let mut value = 0u32;
    for b in text.bytes() {
        value = value.saturating_mul(10).saturating_add(u32::from(b - b'0'));
    }
    Ok(value)
}

fn no_leading_zero(part: EpidPart, text: &str) -> Result<(), EpidError> {
    if text.starts_with('0') {
        Err(EpidError::LeadingZero { part })
    } else {
        Ok(())
    }
}

impl Epid {
    /// An ePID from its values.
    ///
    /// # Errors
    ///
    /// [`EpidError::OutOfRange`] when a value does not fit its part of the
    /// text form: platform and group IDs above 99 999, key ID above
    /// 999 999 999, channel above 99, LCID outside 1000–99 999, build outside
    /// 1–999 999, year outside 0–9999.
    ///
    /// ```
    /// use kms_activation::epid::Epid;
    /// use chrono::NaiveDate;
    /// let date = NaiveDate::from_ymd_opt(2021, 9, 16).unwrap();
    /// let e = Epid::new(3612, 206, 571_000_123, 3, 1033, 17763, date)?;
    /// assert_eq!(e.to_string(), "03612-00206-571-000123-03-1033-17763.0000-2592021");
    /// # Ok::<(), kms_activation::epid::EpidError>(())
    /// ```
    pub fn new(
        platform_id: u32,
        group_id: u32,
        key_id: u32,
        channel: u8,
        lcid: u32,
        build: u32,
        activation_date: NaiveDate,
    ) -> Result<Self, EpidError> {
        check_range(EpidPart::PlatformId, platform_id.into(), 0, 99_999)?;
        check_range(EpidPart::GroupId, group_id.into(), 0, 99_999)?;
        check_range(EpidPart::KeyIdHigh, key_id.into(), 0, 999_999_999)?;
        check_range(EpidPart::Channel, channel.into(), 0, 99)?;
        check_range(EpidPart::Lcid, lcid.into(), 1000, 99_999)?;
        check_range(EpidPart::Build, build.into(), 1, 999_999)?;
        check_range(
            EpidPart::ActivationDate,
            activation_date.year().into(),
            0,
            9999,
        )?;
        Ok(Self {
            platform_id,
            group_id,
            key_id,
            channel,
            lcid,
            build,
            activation_date,
        })
    }

    /// Parses the text form (syntax only; see [`Epid::problems`] for meaning).
    ///
    /// # Errors
    ///
    /// An [`EpidError`] naming the first part that is wrong.
    ///
    /// ```
    /// use kms_activation::epid::{Epid, EpidError, EpidPart};
    /// let err = Epid::parse("05426-00206-565-184251-03-1068-9200.0000-0002025").unwrap_err();
    /// assert_eq!(err, EpidError::DayOfYear { day: 0, year: 2025 });
    /// let err = Epid::parse("5426-00206-565-184251-03-1068-9200.0000-1222025").unwrap_err();
    /// assert!(matches!(err, EpidError::Length { part: EpidPart::PlatformId, .. }));
    /// ```
    pub fn parse(text: &str) -> Result<Self, EpidError> {
        if text.len() > MAX_EPID_LEN {
            return Err(EpidError::TooLong {
                len: text.len(),
                max: MAX_EPID_LEN,
            });
        }
        let mut parts = [""; 8];
        let mut found = 0usize;
        for piece in text.split('-') {
            if let Some(slot) = parts.get_mut(found) {
                *slot = piece;
            }
            found = found.saturating_add(1);
        }
        if found != parts.len() {
            return Err(EpidError::PartCount { found });
        }
        let [platform, group, key_hi, key_lo, channel, lcid, build, date] = parts;

        let platform_id = digits(EpidPart::PlatformId, platform, 5, 5)?;
        let group_id = digits(EpidPart::GroupId, group, 5, 5)?;
        let key_hi = digits(EpidPart::KeyIdHigh, key_hi, 3, 3)?;
        let key_lo = digits(EpidPart::KeyIdLow, key_lo, 6, 6)?;
        let channel = digits(EpidPart::Channel, channel, 2, 2)?;
        let lcid_value = digits(EpidPart::Lcid, lcid, 4, 5)?;
        no_leading_zero(EpidPart::Lcid, lcid)?;
        let (build_text, suffix) = build.split_once('.').ok_or(EpidError::BuildSuffix)?;
        let build_value = digits(EpidPart::Build, build_text, 1, 6)?;
        no_leading_zero(EpidPart::Build, build_text)?;
        if suffix != "0000" {
            return Err(EpidError::BuildSuffix);
        }
        digits(EpidPart::ActivationDate, date, 7, 7)?;
        let (day_text, year_text) = date.split_at_checked(3).ok_or(EpidError::Length {
            part: EpidPart::ActivationDate,
            found: date.len(),
            min: 7,
            max: 7,
        })?;
        let day = digits(EpidPart::ActivationDate, day_text, 3, 3)?;
        let year = digits(EpidPart::ActivationDate, year_text, 4, 4)?;
        let year = i32::try_from(year).map_err(|_| EpidError::OutOfRange {
            part: EpidPart::ActivationDate,
            value: year.into(),
        })?;
        let activation_date =
            NaiveDate::from_yo_opt(year, day).ok_or(EpidError::DayOfYear { day, year })?;

        let key_id = key_hi.saturating_mul(1_000_000).saturating_add(key_lo);
        let channel = u8::try_from(channel).map_err(|_| EpidError::OutOfRange {
            part: EpidPart::Channel,
            value: channel.into(),
        })?;
        Self::new(
            platform_id,
            group_id,
            key_id,
            channel,
            lcid_value,
            build_value,
            activation_date,
        )
    }

    /// `PPPPP`: platform ID of the host's build.
    #[must_use]
    pub const fn platform_id(&self) -> u32 {
        self.platform_id
    }

    /// `GGGGG`: group ID of the host's CSVLK.
    #[must_use]
    pub const fn group_id(&self) -> u32 {
        self.group_id
    }

    /// `KKK-KKKKKK` as one number: key ID of the host's CSVLK.
    #[must_use]
    pub const fn key_id(&self) -> u32 {
        self.key_id
    }

    /// `CC`: license channel (3 for every genuine host).
    #[must_use]
    pub const fn channel(&self) -> u8 {
        self.channel
    }

    /// Host language ID.
    #[must_use]
    pub const fn lcid(&self) -> u32 {
        self.lcid
    }

    /// Host build number.
    #[must_use]
    pub const fn build(&self) -> u32 {
        self.build
    }

    /// Date the host was activated.
    #[must_use]
    pub const fn activation_date(&self) -> NaiveDate {
        self.activation_date
    }

    /// Every CSVLK whose group and key range contain this ePID's. Usually
    /// one; keys that share a group and range (Office 2019 and Office LTSC
    /// 2024) all appear.
    pub fn candidate_csvlks(&self) -> impl Iterator<Item = &'static Csvlk> + use<> {
        let (group_id, key_id) = (self.group_id, self.key_id);
        product::csvlks().iter().filter(move |c| {
            c.group_id() == Some(group_id) && c.key_ids().is_some_and(|r| r.contains(key_id))
        })
    }

    /// Whether a host holding a CSVLK this ePID can belong to activates
    /// `kms_id` (what a client of that KMS ID may expect from its host).
    ///
    /// ```
    /// use kms_activation::{Epid, Uuid};
    /// let server_2019 = Epid::parse("05426-00206-565-184251-03-1068-9200.0000-1222025")?;
    /// let server_2019_kms: Uuid = "8449b1fb-f0ea-497a-99ab-66ca96e9a0f5".parse().unwrap();
    /// let office_2021: Uuid = "86d50b16-4808-41af-b83b-b338274318b2".parse().unwrap();
    /// assert!(server_2019.can_activate(server_2019_kms));
    /// assert!(!server_2019.can_activate(office_2021));
    /// # Ok::<(), kms_activation::epid::EpidError>(())
    /// ```
    ///
    /// Coverage is the catalog's [`Csvlk::activates`], the same data a
    /// [`KmsHost`](crate::host::KmsHost) decides with: a Windows Server key
    /// also activates the older Windows products Microsoft's tables list for
    /// it, and never a newer one.
    #[must_use]
    pub fn can_activate(&self, kms_id: Uuid) -> bool {
        self.candidate_csvlks().any(|c| c.activates(kms_id))
    }

    /// The CSVLK this ePID most likely belongs to: one whose group and key
    /// range contain the ePID's, preferring keys released by the activation
    /// date, then production keys over lab and pre-release ones, then the
    /// most recent release. `None` if no CSVLK matches.
    ///
    /// Two CSVLKs can match equally (Office 2019 and Office LTSC 2024 share
    /// group and range); the one with a known release date wins.
    #[must_use]
    pub fn likely_csvlk(&self) -> Option<&'static Csvlk> {
        product::csvlks()
            .iter()
            .filter(|c| {
                c.group_id() == Some(self.group_id)
                    && c.key_ids().is_some_and(|r| r.contains(self.key_id))
            })
            .max_by_key(|c| {
                (
                    c.release_date()
                        .is_none_or(|release| release <= self.activation_date),
                    !c.is_lab() && !c.is_preview(),
                    c.release_date(),
                )
            })
    }

    /// Every inconsistency of this ePID with the catalog, checked against
    /// the CSVLK it most likely belongs to ([`Epid::likely_csvlk`]). Empty
    /// means consistent.
    ///
    /// Checks: channel is 03; LCID is in [`KNOWN_LCIDS`]; the build is a
    /// Windows build of the catalog ([`product::build`]) and the platform ID
    /// is that build's; the group is known and some range
    /// of the group holds the key ID; a Windows Server key is not on a
    /// client build; the date is not before the build's or
    /// the CSVLK's release and not after `now`.
    #[must_use]
    pub fn problems(&self, now: DateTime<Utc>) -> Vec<EpidProblem> {
        let mut out = self.common_problems(now);
        let in_group: Vec<&Csvlk> = product::csvlks()
            .iter()
            .filter(|c| c.group_id() == Some(self.group_id))
            .collect();
        if in_group.is_empty() {
            out.push(EpidProblem::UnknownGroup {
                group_id: self.group_id,
            });
        } else if !in_group
            .iter()
            .any(|c| c.key_ids().is_some_and(|r| r.contains(self.key_id)))
        {
            out.push(EpidProblem::KeyIdOutOfRange {
                group_id: self.group_id,
                key_id: self.key_id,
            });
        }
        let likely = self.likely_csvlk();
        if likely.is_some_and(Csvlk::is_server_key)
            && product::build(self.build).is_some_and(|b| !b.may_be_server())
        {
            out.push(EpidProblem::ServerKeyOnClientBuild { build: self.build });
        }
        if let Some(release) = likely.and_then(Csvlk::release_date)
            && self.activation_date < release
        {
            out.push(EpidProblem::BeforeCsvlkRelease {
                date: self.activation_date,
                release,
            });
        }
        out
    }

    /// Every inconsistency of this ePID ([`Epid::problems`]) plus, when no
    /// CSVLK its group and key range can belong to activates `kms_id`,
    /// [`EpidProblem::DoesNotActivate`]: what a monitoring probe checks in
    /// the ePID a host answered a request for `kms_id` with. (A Windows or
    /// Office client does not look at the ePID; emulated hosts that answer
    /// every product with one Windows Server ePID are caught here.)
    ///
    /// ```
    /// use kms_activation::{Epid, Uuid};
    /// use kms_activation::epid::EpidProblem;
    /// use chrono::{TimeZone, Utc};
    /// let server_2019 = Epid::parse("05426-00206-565-184251-03-1068-9200.0000-1222025")?;
    /// let office_2021: Uuid = "86d50b16-4808-41af-b83b-b338274318b2".parse().unwrap();
    /// let now = Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap();
    /// assert_eq!(
    ///     server_2019.problems_for_kms(office_2021, now),
    ///     [EpidProblem::DoesNotActivate { kms_id: office_2021 }]
    /// );
    /// # Ok::<(), kms_activation::epid::EpidError>(())
    /// ```
    #[must_use]
    pub fn problems_for_kms(&self, kms_id: Uuid, now: DateTime<Utc>) -> Vec<EpidProblem> {
        let mut out = self.problems(now);
        if !self.can_activate(kms_id) {
            out.push(EpidProblem::DoesNotActivate { kms_id });
        }
        out
    }

    /// Every inconsistency of this ePID with the given CSVLK and the
    /// catalog. Empty means a host holding `csvlk` could send this ePID.
    ///
    /// ```
    /// use kms_activation::{epid::Epid, product, Uuid};
    /// use chrono::{TimeZone, Utc};
    /// let server_2019 = product::csvlk(Uuid::from_u128(0x2e7a9ad1_a849_4b56_babe_17d5a29fe4b4)).unwrap();
    /// let epid = Epid::parse("05426-00206-565-184251-03-1068-9200.0000-1222025")?;
    /// let now = Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap();
    /// assert!(epid.problems_for(server_2019, now).is_empty());
    /// # Ok::<(), kms_activation::epid::EpidError>(())
    /// ```
    #[must_use]
    pub fn problems_for(&self, csvlk: &Csvlk, now: DateTime<Utc>) -> Vec<EpidProblem> {
        let mut out = self.common_problems(now);
        match (csvlk.group_id(), csvlk.key_ids()) {
            (Some(group_id), Some(range)) => {
                if group_id != self.group_id {
                    out.push(EpidProblem::GroupMismatch {
                        expected: group_id,
                        found: self.group_id,
                    });
                }
                if !range.contains(self.key_id) {
                    out.push(EpidProblem::KeyIdOutsideCsvlk {
                        key_id: self.key_id,
                        range,
                    });
                }
            }
            _ => out.push(EpidProblem::CsvlkLacksEpidData),
        }
        if csvlk.is_server_key() && product::build(self.build).is_some_and(|b| !b.may_be_server()) {
            out.push(EpidProblem::ServerKeyOnClientBuild { build: self.build });
        }
        if let Some(release) = csvlk.release_date()
            && self.activation_date < release
        {
            out.push(EpidProblem::BeforeCsvlkRelease {
                date: self.activation_date,
                release,
            });
        }
        out
    }

    fn common_problems(&self, now: DateTime<Utc>) -> Vec<EpidProblem> {
        let mut out = Vec::new();
        if self.channel != VOLUME_CHANNEL {
            out.push(EpidProblem::WrongChannel {
                channel: self.channel,
            });
        }
        if lcid_tag(self.lcid).is_none() {
            out.push(EpidProblem::UnknownLcid { lcid: self.lcid });
        }
        match product::build(self.build) {
            None => out.push(EpidProblem::UnknownBuild { build: self.build }),
            Some(known) => {
                if known.platform_id() != self.platform_id {
                    out.push(EpidProblem::PlatformMismatch {
                        build: self.build,
                        expected: known.platform_id(),
                        found: self.platform_id,
                    });
                }
                if self.activation_date < known.release_date() {
                    out.push(EpidProblem::BeforeBuildRelease {
                        date: self.activation_date,
                        release: known.release_date(),
                    });
                }
            }
        }
        let today = now.date_naive();
        if self.activation_date > today {
            out.push(EpidProblem::InFuture {
                date: self.activation_date,
                today,
            });
        }
        out
    }
}

impl fmt::Display for Epid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:05}-{:05}-{:03}-{:06}-{:02}-{}-{}.0000-{:03}{:04}",
            self.platform_id,
            self.group_id,
            self.key_id / 1_000_000,
            self.key_id % 1_000_000,
            self.channel,
            self.lcid,
            self.build,
            self.activation_date.ordinal(),
            self.activation_date.year(),
        )
    }
}

impl FromStr for Epid {
    type Err = EpidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// One inconsistency of an ePID with the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EpidProblem {
    /// The channel is not `03`.
    WrongChannel {
        /// Channel found.
        channel: u8,
    },
    /// The LCID is not in [`KNOWN_LCIDS`].
    UnknownLcid {
        /// LCID found.
        lcid: u32,
    },
    /// The build is not a Windows build of the catalog.
    UnknownBuild {
        /// Build found.
        build: u32,
    },
    /// The platform ID is not that of the host build.
    PlatformMismatch {
        /// Build found.
        build: u32,
        /// Platform ID of that build.
        expected: u32,
        /// Platform ID found.
        found: u32,
    },
    /// No CSVLK has this group ID.
    UnknownGroup {
        /// Group ID found.
        group_id: u32,
    },
    /// No CSVLK of the group has a key range holding the key ID.
    KeyIdOutOfRange {
        /// Group ID found.
        group_id: u32,
        /// Key ID found.
        key_id: u32,
    },
    /// The group ID is not the given CSVLK's.
    GroupMismatch {
        /// The CSVLK's group ID.
        expected: u32,
        /// Group ID found.
        found: u32,
    },
    /// The key ID is outside the given CSVLK's range.
    KeyIdOutsideCsvlk {
        /// Key ID found.
        key_id: u32,
        /// The CSVLK's range.
        range: KeyIdRange,
    },
    /// The given CSVLK has no group ID or key range to check against.
    CsvlkLacksEpidData,
    /// Activated before the host build was released.
    BeforeBuildRelease {
        /// Activation date found.
        date: NaiveDate,
        /// Release of the host build.
        release: NaiveDate,
    },
    /// Activated before the CSVLK was released.
    BeforeCsvlkRelease {
        /// Activation date found.
        date: NaiveDate,
        /// Release of the CSVLK.
        release: NaiveDate,
    },
    /// A Windows Server key's ePID names a build that is never a server
    /// ([`Epid::problems_for`]).
    ServerKeyOnClientBuild {
        /// Build found.
        build: u32,
    },
    /// Activated after `now`.
    InFuture {
        /// Activation date found.
        date: NaiveDate,
        /// The caller's today.
        today: NaiveDate,
    },
    /// No CSVLK this ePID can belong to activates the product the request
    /// named ([`Epid::problems_for_kms`]).
    DoesNotActivate {
        /// The KMS ID of the request.
        kms_id: Uuid,
    },
}

impl fmt::Display for EpidProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongChannel { channel } => write!(f, "channel {channel:02}, expected 03"),
            Self::UnknownLcid { lcid } => write!(f, "unknown lcid {lcid}"),
            Self::UnknownBuild { build } => write!(f, "unknown build {build}"),
            Self::PlatformMismatch {
                build,
                expected,
                found,
            } => write!(
                f,
                "platform id {found} does not match build {build} (expected {expected})"
            ),
            Self::UnknownGroup { group_id } => write!(f, "unknown group id {group_id}"),
            Self::KeyIdOutOfRange { group_id, key_id } => {
                write!(f, "key id {key_id} outside every range of group {group_id}")
            }
            Self::GroupMismatch { expected, found } => {
                write!(f, "group id {found}, the csvlk has {expected}")
            }
            Self::KeyIdOutsideCsvlk { key_id, range } => write!(
                f,
                "key id {key_id} outside the csvlk's range {}-{}",
                range.min(),
                range.max()
            ),
            Self::CsvlkLacksEpidData => f.write_str("the csvlk has no group id or key range"),
            Self::BeforeBuildRelease { date, release } => {
                write!(f, "activated {date}, before the build's release {release}")
            }
            Self::BeforeCsvlkRelease { date, release } => {
                write!(f, "activated {date}, before the csvlk's release {release}")
            }
            Self::InFuture { date, today } => write!(f, "activated {date}, after today {today}"),
            Self::ServerKeyOnClientBuild { build } => {
                write!(f, "a windows server csvlk on client build {build}")
            }
            Self::DoesNotActivate { kms_id } => {
                write!(
                    f,
                    "its csvlk does not activate the requested kms id {kms_id}"
                )
            }
        }
    }
}

/// Why [`generate`] cannot make an ePID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// The CSVLK has no group ID or no key-ID range in the catalog.
    #[error("csvlk {name:?} has no group id or key range")]
    CsvlkLacksEpidData {
        /// The CSVLK's display name.
        name: &'static str,
    },
    /// The host build is not a Windows build of the catalog.
    #[error("unknown host build {build}: not a Windows build of the catalog")]
    UnknownBuild {
        /// The build asked for.
        build: u32,
    },
    /// The CSVLK is not installed on this build: a Windows Server key on a
    /// client-only build, or a build the catalog discourages for the key
    /// ([`Csvlk::allows_host_build`]).
    #[error("csvlk {name:?} is not used on host build {build} ({build_name})")]
    BuildNotForCsvlk {
        /// The CSVLK's display name.
        name: &'static str,
        /// The build asked for.
        build: u32,
        /// The build's display name.
        build_name: &'static str,
    },
    /// `now` is before the CSVLK's or the build's release.
    #[error("no activation date possible: earliest {earliest}, today {today}")]
    NoDate {
        /// Later of the two release dates.
        earliest: NaiveDate,
        /// The caller's today.
        today: NaiveDate,
    },
    /// The values do not fit the text form (a build above 999 999 or a year
    /// above 9999).
    #[error(transparent)]
    Epid(#[from] EpidError),
}

/// Makes an ePID a host holding `csvlk` and running build `host_build`
/// could send: the platform ID of `host_build` (a Windows build of the
/// catalog the key may be installed on, see [`Csvlk::allows_host_build`]:
/// no Windows Server key on a client build, no build the catalog discourages
/// for the key; any other is refused), the CSVLK's group and a key ID in its range, a random LCID
/// from [`KNOWN_LCIDS`], channel 03, and an activation date between the
/// later of the CSVLK's and the build's release date and `now` (both
/// inclusive). All randomness comes from `rng`.
///
/// # Errors
///
/// [`GenerateError`] when the CSVLK lacks ePID data, the build is unknown or
/// not one the key is used on, or `now` is before the release dates.
///
/// ```
/// use kms_activation::{epid, product, ScriptedRandom, Uuid};
/// use chrono::{TimeZone, Utc};
///
/// let office_2021 = product::csvlk(Uuid::from_u128(0x47f3b983_7c53_4d45_abc6_bcd91e2dd90a)).unwrap();
/// let now = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
/// let mut rng = ScriptedRandom::new([7u8; 64]);
/// let e = epid::generate(office_2021, 20348, now, &mut rng)?;
/// assert_eq!(e.platform_id(), 3612);
/// assert!(e.problems_for(office_2021, now).is_empty());
/// # Ok::<(), epid::GenerateError>(())
/// ```
pub fn generate<R: RandomSource + ?Sized>(
    csvlk: &Csvlk,
    host_build: u32,
    now: DateTime<Utc>,
    rng: &mut R,
) -> Result<Epid, GenerateError> {
    let (Some(group_id), Some(range)) = (csvlk.group_id(), csvlk.key_ids()) else {
        return Err(GenerateError::CsvlkLacksEpidData { name: csvlk.name() });
    };
    let known =
        product::build(host_build).ok_or(GenerateError::UnknownBuild { build: host_build })?;
    if !csvlk.allows_host_build(known) {
        return Err(GenerateError::BuildNotForCsvlk {
            name: csvlk.name(),
            build: host_build,
            build_name: known.name(),
        });
    }
    let earliest = csvlk
        .release_date()
        .map_or(known.release_date(), |r| r.max(known.release_date()));
    let today = now.date_naive();
    let span = u64::try_from((today - earliest).num_days())
        .map_err(|_| GenerateError::NoDate { earliest, today })?;

    let key_span = u64::from(range.max().saturating_sub(range.min())).saturating_add(1);
    let key_offset = u32::try_from(below(rng, key_span)).unwrap_or(0);
    let key_id = range.min().saturating_add(key_offset);

    let lcid_count = u64::try_from(KNOWN_LCIDS.len()).unwrap_or(1);
    let lcid_index = usize::try_from(below(rng, lcid_count)).unwrap_or(0);
    let lcid = KNOWN_LCIDS.get(lcid_index).map_or(1033, |(id, _)| *id);

    let offset = below(rng, span.saturating_add(1));
    let date = earliest
        .checked_add_days(Days::new(offset))
        .ok_or(GenerateError::NoDate { earliest, today })?;

    Ok(Epid::new(
        known.platform_id(),
        group_id,
        key_id,
        VOLUME_CHANNEL,
        lcid,
        host_build,
        date,
    )?)
}
