//! The `LicenseStatus` field of a request (see
//! [license status](crate::message#license-status-and-bindingexpiration)).

use std::fmt;

/// The license state a client reports in its request (`LicenseStatus`, 0–6).
///
/// Unknown values survive a round trip through [`LicenseStatus::Unknown`].
///
/// ```
/// use kms_activation::LicenseStatus;
///
/// assert_eq!(LicenseStatus::from(2), LicenseStatus::OobGrace);
/// assert_eq!(u32::from(LicenseStatus::Notification), 5);
/// assert_eq!(LicenseStatus::from(9), LicenseStatus::Unknown(9));
/// assert_eq!(LicenseStatus::OobGrace.to_string(), "OOB grace");
///
/// // One type, three paths.
/// let status: kms_activation::message::LicenseStatus =
///     kms_activation::license::LicenseStatus::Licensed;
/// assert_eq!(status, LicenseStatus::Licensed);
/// ```
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(into = "u32"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LicenseStatus {
    /// 0: not licensed.
    Unlicensed,
    /// 1: activated; the request is a renewal.
    Licensed,
    /// 2: initial out-of-box grace period.
    OobGrace,
    /// 3: out-of-tolerance grace (hardware changed, or activation lapsed).
    OotGrace,
    /// 4: non-genuine grace.
    NonGenuineGrace,
    /// 5: grace expired; notification (reduced functionality) mode.
    Notification,
    /// 6: extended grace.
    ExtendedGrace,
    /// Any other value, kept as received.
    Unknown(u32),
}

impl From<u32> for LicenseStatus {
    fn from(v: u32) -> Self {
        match v {
            0 => Self::Unlicensed,
            1 => Self::Licensed,
            2 => Self::OobGrace,
            3 => Self::OotGrace,
            4 => Self::NonGenuineGrace,
            5 => Self::Notification,
            6 => Self::ExtendedGrace,
            other => Self::Unknown(other),
        }
    }
}

impl From<LicenseStatus> for u32 {
    fn from(s: LicenseStatus) -> Self {
        match s {
            LicenseStatus::Unlicensed => 0,
            LicenseStatus::Licensed => 1,
            LicenseStatus::OobGrace => 2,
            LicenseStatus::OotGrace => 3,
            LicenseStatus::NonGenuineGrace => 4,
            LicenseStatus::Notification => 5,
            LicenseStatus::ExtendedGrace => 6,
            LicenseStatus::Unknown(v) => v,
        }
    }
}

impl fmt::Display for LicenseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unlicensed => f.write_str("unlicensed"),
            Self::Licensed => f.write_str("licensed"),
            Self::OobGrace => f.write_str("OOB grace"),
            Self::OotGrace => f.write_str("OOT grace"),
            Self::NonGenuineGrace => f.write_str("non-genuine grace"),
            Self::Notification => f.write_str("notification"),
            Self::ExtendedGrace => f.write_str("extended grace"),
            Self::Unknown(v) => write!(f, "unknown ({v})"),
        }
    }
}
