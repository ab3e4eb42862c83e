//! Windows `FILETIME`: 100-nanosecond ticks since 1601-01-01 00:00:00 UTC.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};

/// Ticks between 1601-01-01 and the Unix epoch (1970-01-01).
const UNIX_EPOCH_TICKS: u64 = 116_444_736_000_000_000;
/// FILETIME ticks per second.
const TICKS_PER_SECOND: u64 = 10_000_000;

/// A Windows `FILETIME` as it travels in KMS messages.
///
/// The raw tick count is kept as received, so a host echoes a client's time
/// bit for bit (clients check that). Converting to and from
/// [`chrono::DateTime<Utc>`] is checked both ways.
///
/// ```
/// use kms_activation::FileTime;
/// use chrono::{TimeZone, Utc};
///
/// let t = Utc.with_ymd_and_hms(2026, 11, 22, 2, 30, 57).unwrap();
/// let ft = FileTime::try_from(t).unwrap();
/// assert_eq!(ft.ticks(), 134_397_882_570_000_000);
/// assert_eq!(ft.to_datetime(), Some(t));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FileTime(u64);

/// A date outside the range a `FILETIME` can hold (before 1601 or after 60056).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("date {0} cannot be represented as a FILETIME")]
pub struct FileTimeRangeError(pub DateTime<Utc>);

impl FileTime {
    /// Wraps a raw tick count.
    #[must_use]
    pub const fn from_ticks(ticks: u64) -> Self {
        Self(ticks)
    }

    /// The raw tick count.
    #[must_use]
    pub const fn ticks(self) -> u64 {
        self.0
    }

    /// The instant this time names, or `None` if chrono cannot represent it.
    #[must_use]
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        let since_unix = i128::from(self.0) - i128::from(UNIX_EPOCH_TICKS);
        let secs = i64::try_from(since_unix.div_euclid(i128::from(TICKS_PER_SECOND))).ok()?;
        let sub_ticks = u32::try_from(since_unix.rem_euclid(i128::from(TICKS_PER_SECOND))).ok()?;
        DateTime::from_timestamp(secs, sub_ticks * 100)
    }

    /// This time truncated to whole seconds (clients such as vlmcs send whole
    /// seconds).
    #[must_use]
    pub const fn truncated_to_seconds(self) -> Self {
        Self(self.0 - self.0 % TICKS_PER_SECOND)
    }

    /// The signed distance `self - other`, saturating.
    #[must_use]
    pub fn signed_duration_since(self, other: Self) -> TimeDelta {
        let ticks = i128::from(self.0) - i128::from(other.0);
        let micros =
            i64::try_from(ticks / 10).unwrap_or(if ticks < 0 { i64::MIN } else { i64::MAX });
        TimeDelta::microseconds(micros)
    }
}

impl TryFrom<DateTime<Utc>> for FileTime {
    type Error = FileTimeRangeError;

    fn try_from(t: DateTime<Utc>) -> Result<Self, Self::Error> {
        let ticks = i128::from(t.timestamp()) * i128::from(TICKS_PER_SECOND)
            + i128::from(t.timestamp_subsec_nanos() / 100)
            + i128::from(UNIX_EPOCH_TICKS);
        u64::try_from(ticks)
            .map(Self)
            .map_err(|_| FileTimeRangeError(t))
    }
}

impl TryFrom<std::time::SystemTime> for FileTime {
    type Error = FileTimeRangeError;

    /// The FILETIME of a `SystemTime`, e.g. `SystemTime::now()` in the I/O
    /// loop that drives an engine (the core itself never reads the clock).
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use kms_activation::FileTime;
    ///
    /// let t = UNIX_EPOCH + Duration::from_secs(1_779_417_057);
    /// assert_eq!(FileTime::try_from(t)?.to_string(), "2026-05-22T02:30:57Z");
    /// # Ok::<(), kms_activation::FileTimeRangeError>(())
    /// ```
    fn try_from(t: std::time::SystemTime) -> Result<Self, Self::Error> {
        Self::try_from(DateTime::<Utc>::from(t))
    }
}

impl fmt::Display for FileTime {
    /// RFC 3339 in UTC to the second, or the raw ticks when out of range.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            Some(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%SZ")),
            None => write!(f, "FILETIME({})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn protocol_example_and_epochs() {
        assert_eq!(
            FileTime::from_ticks(134_397_882_570_000_000).to_string(),
            "2026-11-22T02:30:57Z"
        );
        assert_eq!(FileTime::from_ticks(0).to_string(), "1601-01-01T00:00:00Z");
        let before_1601 = DateTime::from_timestamp(-11_644_473_601, 0).unwrap();
        assert!(FileTime::try_from(before_1601).is_err());
        assert!(FileTime::from_ticks(u64::MAX).to_datetime().is_some());
    }

    proptest! {
        #[test]
        fn ticks_round_trip_through_chrono(ticks in any::<u64>()) {
            let ft = FileTime::from_ticks(ticks);
            let t = ft.to_datetime().unwrap();
            prop_assert_eq!(FileTime::try_from(t).unwrap(), ft);
        }
    }
}
