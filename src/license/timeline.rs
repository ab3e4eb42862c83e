//! The license-state timeline of a KMS client: a pure, event-sourced model.
//!
//! A [`LicenseTimeline`] starts at installation and records, in time order,
//! what happened to the client: successful activations (with the intervals
//! the host sent), failed attempts and rearms. [`LicenseTimeline::state_at`]
//! then answers, for any instant, the [`LicenseStatus`] the client would
//! report, the minutes left in that state (the request's
//! `BindingExpiration`; see [license status](crate::message#license-status-and-bindingexpiration)) and when it should next contact a
//! host. Nothing here reads the clock: every instant is an argument.
//!
//! # Rules and where they come from
//!
//! The numbers are those of the reference guides kept with the project
//! (`reference/docs/`): the KMS troubleshooting guidelines (zh-TW), the
//! volume licensing FAQ (zh-TW), a university's KMS how-to and error-code
//! FAQ (zh-TW), and Microsoft's Office volume activation guide (zh-CN).
//!
//! | rule | value | source |
//! |---|---|---|
//! | initial (out-of-box) grace after installation | 30 days | troubleshooting guide (clients try to activate "within the default 30-day grace period"); licensing FAQ (grace "usually 30 days"); university FAQ, 0xC004F038 answer |
//! | grace over without activation | notification state | licensing FAQ ("if the organisation does not activate within the grace period, the computers enter notification mode") |
//! | retries while not activated | every activation interval, default 120 min | troubleshooting guide (attempts "at two-hour intervals"); Office guide, `slmgr /sai` (default 120 minutes) |
//! | renewals while activated | every renewal interval, default 10 080 min (7 days) | troubleshooting guide ("every seven days"); university FAQ; Office guide, `slmgr /sri` (default 10080 minutes) |
//! | intervals come from the host | the last successful reply's values replace the defaults | Office guide: `/sai` and `/sri` reach the client only once it has contacted the host |
//! | validity of an activation | 180 days from the last success; each renewal restarts it | university FAQ ("valid for 180 days … after a renewal the validity interval starts again"); Office guide, license-state table |
//! | 180 days without renewal | out-of-tolerance grace for 30 days | Office guide ("if no activation happens within 180 days, Office enters the out-of-tolerance state for 30 days") |
//! | out-of-tolerance grace over | notification state | Office guide ("if not activated during the out-of-tolerance state, Office enters unlicensed notification") |
//! | Office shows activation notices | after 25 days of the initial grace | Office guide, rearm article ("a 25-day grace period from installation before users see activation notices") |
//! | notices in out-of-tolerance grace and notification | always | Office guide, license-state table ("users then see notifications asking for activation") |
//! | rearm | resets the grace timer to 30 days (and the licensing state to initial grace) | Office guide, rearm article ("resets the grace-period timer to 30 days") |
//! | Office rearm limit | 5; once used up, a KMS activation grants one more | Office guide, rearm article ("you can rearm five times … if you run out, activating through KMS allows one more rearm") |
//! | Windows rearm limit | 3 | not in the guides: Microsoft's `SkipRearm` reference for Windows Embedded Standard 7 ("typically, a system can be rearmed only three times") and its support article on Sysprep failing with 0xC004D307 ("run more than three times in a single Windows image") |
//! | `BindingExpiration` | grace minutes left; minutes until the activation lapses when licensed; 0 in notification | the request field, see [license status](crate::message#license-status-and-bindingexpiration); captured vlmcs requests send 43 200 (30 days) |
//!
//! # What the model leaves out
//!
//! Non-genuine and extended grace (states 4 and 6), hardware changes (which
//! also lead to out-of-tolerance grace), Office's freezing of the grace timer
//! after a rearm until an Office application first runs, and any jitter a
//! real client adds to its retry times. Minutes are rounded up, so a state
//! with time left never reports 0.
//!
//! ```
//! use chrono::{Duration, TimeZone, Utc};
//! use kms_activation::LicenseStatus;
//! use kms_activation::license::{LicensePolicy, LicenseTimeline};
//!
//! let installed = Utc.with_ymd_and_hms(2025, 1, 1, 8, 0, 0).unwrap();
//! let mut timeline = LicenseTimeline::new(installed, LicensePolicy::windows());
//!
//! // No host yet: initial grace, a retry two hours after the failure.
//! timeline.record_failure(installed + Duration::minutes(5))?;
//! let s = timeline.state_at(installed + Duration::hours(1));
//! assert_eq!(s.status, LicenseStatus::OobGrace);
//! assert_eq!(s.minutes_left, 30 * 24 * 60 - 60);
//! assert_eq!(s.next_contact, installed + Duration::minutes(125));
//!
//! // Activated on day 3: licensed for 180 days, renewal in 7 days.
//! let day3 = installed + Duration::days(3);
//! timeline.record_success(day3, 120, 10_080)?;
//! let s = timeline.state_at(day3);
//! assert_eq!(s.status, LicenseStatus::Licensed);
//! assert_eq!(s.minutes_left, 180 * 24 * 60);
//! assert_eq!(s.next_contact, day3 + Duration::days(7));
//! # Ok::<(), kms_activation::license::OutOfOrderError>(())
//! ```

use chrono::{DateTime, TimeDelta, Utc};

use crate::HResult;
use crate::client::ActivationOutcome;
use crate::host::{DEFAULT_ACTIVATION_INTERVAL, DEFAULT_RENEWAL_INTERVAL};
use crate::message::LicenseStatus;

/// Length of the initial grace period and of a rearmed one.
const GRACE: TimeDelta = TimeDelta::days(30);
/// How long one KMS activation lasts without renewal.
const ACTIVATION_VALIDITY: TimeDelta = TimeDelta::days(180);
/// Length of the out-of-tolerance grace after an activation lapses.
const OOT_GRACE: TimeDelta = TimeDelta::days(30);
/// When Office starts showing activation notices during its initial grace.
const OFFICE_NOTICE_AFTER: TimeDelta = TimeDelta::days(25);
/// Rearms Windows allows.
const WINDOWS_REARMS: u32 = 3;
/// Rearms Office 2010 and later allow.
const OFFICE_REARMS: u32 = 5;

/// The durations and limits a [`LicenseTimeline`] applies.
///
/// Start from [`LicensePolicy::windows`] or [`LicensePolicy::office`] and
/// adjust with the `with_*` methods. Negative durations count as zero.
///
/// ```
/// use chrono::Duration;
/// use kms_activation::license::LicensePolicy;
///
/// let office = LicensePolicy::office();
/// assert_eq!(office.rearm_limit(), 5);
/// assert_eq!(office.notice_after(), Some(Duration::days(25)));
///
/// let lab = LicensePolicy::windows().with_oob_grace(Duration::days(10));
/// assert_eq!(lab.oob_grace(), Duration::days(10));
/// assert_eq!(lab.rearm_limit(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LicensePolicy {
    oob_grace: TimeDelta,
    notice_after: Option<TimeDelta>,
    activation_validity: TimeDelta,
    oot_grace: TimeDelta,
    rearm_limit: u32,
    activation_grants_rearm: bool,
    activation_interval: u32,
    renewal_interval: u32,
}

impl LicensePolicy {
    /// Windows: 30-day grace, 180-day activations, 30-day out-of-tolerance
    /// grace, three rearms, no in-grace notice threshold (the guides give
    /// none for Windows).
    #[must_use]
    pub const fn windows() -> Self {
        Self {
            oob_grace: GRACE,
            notice_after: None,
            activation_validity: ACTIVATION_VALIDITY,
            oot_grace: OOT_GRACE,
            rearm_limit: WINDOWS_REARMS,
            activation_grants_rearm: false,
            activation_interval: DEFAULT_ACTIVATION_INTERVAL,
            renewal_interval: DEFAULT_RENEWAL_INTERVAL,
        }
    }

    /// Office 2010 and later: as Windows, but notices start after 25 days of
    /// grace, five rearms, and a KMS activation grants one more rearm once
    /// they are used up.
    #[must_use]
    pub const fn office() -> Self {
        Self {
            notice_after: Some(OFFICE_NOTICE_AFTER),
            rearm_limit: OFFICE_REARMS,
            activation_grants_rearm: true,
            ..Self::windows()
        }
    }

    /// Length of the initial (out-of-box) grace, also the length a rearm
    /// gives back.
    #[must_use]
    pub const fn oob_grace(&self) -> TimeDelta {
        self.oob_grace
    }

    /// Time into the initial grace after which the user sees activation
    /// notices; `None` when the policy has no such threshold.
    #[must_use]
    pub const fn notice_after(&self) -> Option<TimeDelta> {
        self.notice_after
    }

    /// How long an activation stays valid without renewal.
    #[must_use]
    pub const fn activation_validity(&self) -> TimeDelta {
        self.activation_validity
    }

    /// Length of the out-of-tolerance grace after an activation lapses.
    #[must_use]
    pub const fn oot_grace(&self) -> TimeDelta {
        self.oot_grace
    }

    /// How many rearms are allowed.
    #[must_use]
    pub const fn rearm_limit(&self) -> u32 {
        self.rearm_limit
    }

    /// True when a successful activation restores one rearm after all have
    /// been used (Office).
    #[must_use]
    pub const fn activation_grants_rearm(&self) -> bool {
        self.activation_grants_rearm
    }

    /// Retry interval in minutes until a host has sent one.
    #[must_use]
    pub const fn activation_interval(&self) -> u32 {
        self.activation_interval
    }

    /// Renewal interval in minutes until a host has sent one.
    #[must_use]
    pub const fn renewal_interval(&self) -> u32 {
        self.renewal_interval
    }

    /// Sets the initial grace length.
    #[must_use]
    pub fn with_oob_grace(mut self, grace: TimeDelta) -> Self {
        self.oob_grace = non_negative(grace);
        self
    }

    /// Sets (or removes) the in-grace notice threshold.
    #[must_use]
    pub fn with_notice_after(mut self, after: Option<TimeDelta>) -> Self {
        self.notice_after = after.map(non_negative);
        self
    }

    /// Sets how long an activation stays valid.
    #[must_use]
    pub fn with_activation_validity(mut self, validity: TimeDelta) -> Self {
        self.activation_validity = non_negative(validity);
        self
    }

    /// Sets the out-of-tolerance grace length.
    #[must_use]
    pub fn with_oot_grace(mut self, grace: TimeDelta) -> Self {
        self.oot_grace = non_negative(grace);
        self
    }

    /// Sets the number of rearms allowed.
    #[must_use]
    pub const fn with_rearm_limit(mut self, limit: u32) -> Self {
        self.rearm_limit = limit;
        self
    }

    /// Sets whether an activation restores one rearm after all are used.
    #[must_use]
    pub const fn with_activation_grants_rearm(mut self, grants: bool) -> Self {
        self.activation_grants_rearm = grants;
        self
    }

    /// Sets the default intervals (minutes) used until a host sends its own.
    #[must_use]
    pub const fn with_default_intervals(mut self, activation: u32, renewal: u32) -> Self {
        self.activation_interval = activation;
        self.renewal_interval = renewal;
        self
    }
}

impl Default for LicensePolicy {
    /// [`LicensePolicy::windows`].
    fn default() -> Self {
        Self::windows()
    }
}

/// One recorded event of a [`LicenseTimeline`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LicenseEvent {
    /// A host activated (or renewed) the client.
    Activated {
        /// When.
        at: DateTime<Utc>,
        /// The host's `VLActivationInterval`, minutes.
        activation_interval: u32,
        /// The host's `VLRenewalInterval`, minutes.
        renewal_interval: u32,
    },
    /// An attempt failed (no host, or a host refused).
    Failed {
        /// When.
        at: DateTime<Utc>,
    },
    /// A host answered but did not activate the client (its count was below
    /// the threshold); its intervals replace the defaults all the same.
    AnsweredWithoutActivation {
        /// When.
        at: DateTime<Utc>,
        /// The host's `VLActivationInterval`, minutes.
        activation_interval: u32,
        /// The host's `VLRenewalInterval`, minutes.
        renewal_interval: u32,
    },
    /// The licensing state was rearmed.
    Rearmed {
        /// When.
        at: DateTime<Utc>,
    },
}

impl LicenseEvent {
    /// When the event happened.
    #[must_use]
    pub const fn at(&self) -> DateTime<Utc> {
        match *self {
            Self::Activated { at, .. }
            | Self::Failed { at }
            | Self::AnsweredWithoutActivation { at, .. }
            | Self::Rearmed { at } => at,
        }
    }
}

/// The answer of [`LicenseTimeline::state_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct LicenseSnapshot {
    /// The state the client reports (`LicenseStatus` of the request).
    pub status: LicenseStatus,
    /// Minutes left in this state, rounded up: the request's
    /// `BindingExpiration`. 0 in notification (and before installation).
    pub minutes_left: u32,
    /// When this state ends, `None` when it does not (notification).
    pub state_ends: Option<DateTime<Utc>>,
    /// When the client is due to contact a host. It may be at or before the
    /// queried instant, meaning a contact is due (or overdue) now.
    pub next_contact: DateTime<Utc>,
    /// True when the user sees activation notices.
    pub notifies_user: bool,
    /// Rearms still available.
    pub rearms_left: u32,
}

/// An event recorded before the latest one (or before installation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("event at {at} comes before the latest recorded instant {latest}")]
#[non_exhaustive]
pub struct OutOfOrderError {
    /// The rejected event's instant.
    pub at: DateTime<Utc>,
    /// The latest instant already recorded (installation if no event yet).
    pub latest: DateTime<Utc>,
}

/// Why a rearm was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum RearmError {
    /// The rearm comes before an event already recorded.
    #[error(transparent)]
    OutOfOrder(#[from] OutOfOrderError),
    /// Every allowed rearm has been used.
    #[error("no rearm left (the policy allows {limit})")]
    LimitReached {
        /// The policy's rearm limit.
        limit: u32,
    },
}

impl RearmError {
    /// The code Windows reports for this failure, where there is one
    /// (`SL_REMAPPING_SP_PUB_TS_MAX_REARM_REACHED` for the limit).
    #[must_use]
    pub const fn hresult(&self) -> Option<HResult> {
        match self {
            Self::LimitReached { .. } => Some(HResult::MAX_REARM_REACHED),
            Self::OutOfOrder(_) => None,
        }
    }
}

/// A client's license history, and the states it implies.
///
/// Events must be recorded in time order (equal instants are allowed and
/// keep their recording order). Queries may ask about any instant: only the
/// events up to and including it count.
///
/// ```
/// use chrono::{Duration, TimeZone, Utc};
/// use kms_activation::LicenseStatus;
/// use kms_activation::license::{LicensePolicy, LicenseTimeline, RearmError};
///
/// let t0 = Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap();
/// let mut office = LicenseTimeline::new(t0, LicensePolicy::office());
///
/// // Day 26: still in grace, but Office already shows notices.
/// let s = office.state_at(t0 + Duration::days(26));
/// assert_eq!(s.status, LicenseStatus::OobGrace);
/// assert!(s.notifies_user);
///
/// // A rearm on day 29 gives 30 fresh days.
/// office.rearm(t0 + Duration::days(29))?;
/// let s = office.state_at(t0 + Duration::days(29));
/// assert_eq!(s.minutes_left, 30 * 24 * 60);
/// assert_eq!(s.rearms_left, 4);
/// # Ok::<(), RearmError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseTimeline {
    installed_at: DateTime<Utc>,
    policy: LicensePolicy,
    events: Vec<LicenseEvent>,
}

/// What the events up to an instant add up to.
#[derive(Debug, Clone, Copy)]
struct Replay {
    grace_start: DateTime<Utc>,
    last_success: Option<DateTime<Utc>>,
    last_attempt: Option<DateTime<Utc>>,
    activation_interval: u32,
    renewal_interval: u32,
    rearms_left: u32,
}

impl LicenseTimeline {
    /// A fresh installation at `installed_at`: initial grace, no events.
    #[must_use]
    pub const fn new(installed_at: DateTime<Utc>, policy: LicensePolicy) -> Self {
        Self {
            installed_at,
            policy,
            events: Vec::new(),
        }
    }

    /// When the product was installed.
    #[must_use]
    pub const fn installed_at(&self) -> DateTime<Utc> {
        self.installed_at
    }

    /// The policy in force.
    #[must_use]
    pub const fn policy(&self) -> &LicensePolicy {
        &self.policy
    }

    /// The recorded events, oldest first.
    #[must_use]
    pub fn events(&self) -> &[LicenseEvent] {
        &self.events
    }

    /// Records a successful activation or renewal at `at`, with the host's
    /// intervals in minutes (`VLActivationInterval`, `VLRenewalInterval`;
    /// they are taken as given, 0 included).
    ///
    /// # Errors
    ///
    /// [`OutOfOrderError`] if `at` is before the latest recorded instant.
    pub fn record_success(
        &mut self,
        at: DateTime<Utc>,
        activation_interval: u32,
        renewal_interval: u32,
    ) -> Result<(), OutOfOrderError> {
        self.check_order(at)?;
        self.events.push(LicenseEvent::Activated {
            at,
            activation_interval,
            renewal_interval,
        });
        Ok(())
    }

    /// Records a failed activation or renewal attempt at `at`.
    ///
    /// # Errors
    ///
    /// [`OutOfOrderError`] if `at` is before the latest recorded instant.
    pub fn record_failure(&mut self, at: DateTime<Utc>) -> Result<(), OutOfOrderError> {
        self.check_order(at)?;
        self.events.push(LicenseEvent::Failed { at });
        Ok(())
    }

    /// Records what an activation attempt at `at` came to: an activation
    /// with the host's intervals, an answer without activation (a count
    /// below the threshold; the host's intervals still apply), or a failure
    /// (a refusal, no host). [`state_at`](Self::state_at) then says when to
    /// contact a host next.
    ///
    /// # Errors
    ///
    /// [`OutOfOrderError`] if `at` is before the latest recorded instant.
    ///
    /// ```
    /// use chrono::{Duration, TimeZone, Utc};
    /// use kms_activation::client::ActivationOutcome;
    /// use kms_activation::license::{LicensePolicy, LicenseTimeline};
    ///
    /// let installed = Utc.with_ymd_and_hms(2025, 1, 1, 8, 0, 0).unwrap();
    /// let mut timeline = LicenseTimeline::new(installed, LicensePolicy::windows());
    /// timeline.record_outcome(installed, &ActivationOutcome::no_host())?;
    /// assert_eq!(timeline.state_at(installed).next_contact, installed + Duration::hours(2));
    /// # Ok::<(), kms_activation::license::OutOfOrderError>(())
    /// ```
    pub fn record_outcome(
        &mut self,
        at: DateTime<Utc>,
        outcome: &ActivationOutcome,
    ) -> Result<(), OutOfOrderError> {
        let Some(response) = outcome.response() else {
            return self.record_failure(at);
        };
        if outcome.is_activated() {
            return self.record_success(
                at,
                response.activation_interval,
                response.renewal_interval,
            );
        }
        self.check_order(at)?;
        self.events.push(LicenseEvent::AnsweredWithoutActivation {
            at,
            activation_interval: response.activation_interval,
            renewal_interval: response.renewal_interval,
        });
        Ok(())
    }

    /// Rearms at `at`: the licensing state returns to initial grace with a
    /// full grace period, and any activation is discarded.
    ///
    /// # Errors
    ///
    /// [`RearmError::OutOfOrder`] if `at` is before the latest recorded
    /// instant, [`RearmError::LimitReached`] when no rearm is left.
    pub fn rearm(&mut self, at: DateTime<Utc>) -> Result<(), RearmError> {
        self.check_order(at)?;
        if self.replay(at).rearms_left == 0 {
            return Err(RearmError::LimitReached {
                limit: self.policy.rearm_limit,
            });
        }
        self.events.push(LicenseEvent::Rearmed { at });
        Ok(())
    }

    /// The client's state at instant `t`.
    ///
    /// Before installation the status is [`LicenseStatus::Unlicensed`], with
    /// no time left and the installation as the first contact.
    #[must_use]
    pub fn state_at(&self, t: DateTime<Utc>) -> LicenseSnapshot {
        if t < self.installed_at {
            return LicenseSnapshot {
                status: LicenseStatus::Unlicensed,
                minutes_left: 0,
                state_ends: None,
                next_contact: self.installed_at,
                notifies_user: false,
                rearms_left: self.policy.rearm_limit,
            };
        }
        let r = self.replay(t);
        let policy = &self.policy;
        let (status, state_ends) = if let Some(success) = r.last_success {
            let lapses = plus(success, policy.activation_validity);
            let oot_ends = plus(lapses, policy.oot_grace);
            if t < lapses {
                (LicenseStatus::Licensed, Some(lapses))
            } else if t < oot_ends {
                (LicenseStatus::OotGrace, Some(oot_ends))
            } else {
                (LicenseStatus::Notification, None)
            }
        } else {
            let grace_ends = plus(r.grace_start, policy.oob_grace);
            if t < grace_ends {
                (LicenseStatus::OobGrace, Some(grace_ends))
            } else {
                (LicenseStatus::Notification, None)
            }
        };
        let minutes_left = state_ends.map_or(0, |end| ceil_minutes(end - t));

        let licensed = status == LicenseStatus::Licensed;
        let interval = if licensed {
            r.renewal_interval
        } else {
            r.activation_interval
        };
        let mut next_contact = r.last_attempt.map_or(self.installed_at, |last| {
            plus(last, TimeDelta::minutes(i64::from(interval)))
        });
        if licensed {
            // When the activation lapses the client switches to retrying.
            if let Some(end) = state_ends {
                next_contact = next_contact.min(end);
            }
        }

        let notifies_user = match status {
            LicenseStatus::OobGrace => policy
                .notice_after
                .is_some_and(|after| t >= plus(r.grace_start, after)),
            LicenseStatus::OotGrace | LicenseStatus::Notification => true,
            _ => false,
        };

        LicenseSnapshot {
            status,
            minutes_left,
            state_ends,
            next_contact,
            notifies_user,
            rearms_left: r.rearms_left,
        }
    }

    /// Rearms still available at instant `t`.
    #[must_use]
    pub fn rearms_left_at(&self, t: DateTime<Utc>) -> u32 {
        self.replay(t).rearms_left
    }

    fn latest(&self) -> DateTime<Utc> {
        self.events
            .last()
            .map_or(self.installed_at, LicenseEvent::at)
    }

    fn check_order(&self, at: DateTime<Utc>) -> Result<(), OutOfOrderError> {
        let latest = self.latest();
        if at < latest {
            Err(OutOfOrderError { at, latest })
        } else {
            Ok(())
        }
    }

    /// Folds the events up to and including `t`.
    fn replay(&self, t: DateTime<Utc>) -> Replay {
        let mut r = Replay {
            grace_start: self.installed_at,
            last_success: None,
            last_attempt: None,
            activation_interval: self.policy.activation_interval,
            renewal_interval: self.policy.renewal_interval,
            rearms_left: self.policy.rearm_limit,
        };
        for event in self.events.iter().take_while(|e| e.at() <= t) {
            match *event {
                LicenseEvent::Activated {
                    at,
                    activation_interval,
                    renewal_interval,
                } => {
                    r.last_success = Some(at);
                    r.last_attempt = Some(at);
                    r.activation_interval = activation_interval;
                    r.renewal_interval = renewal_interval;
                    if self.policy.activation_grants_rearm && r.rearms_left == 0 {
                        r.rearms_left = 1;
                    }
                }
                LicenseEvent::Failed { at } => r.last_attempt = Some(at),
                LicenseEvent::AnsweredWithoutActivation {
                    at,
                    activation_interval,
                    renewal_interval,
                } => {
                    r.last_attempt = Some(at);
                    r.activation_interval = activation_interval;
                    r.renewal_interval = renewal_interval;
                }
                LicenseEvent::Rearmed { at } => {
                    r.grace_start = at;
                    r.last_success = None;
                    r.rearms_left = r.rearms_left.saturating_sub(1);
                }
            }
        }
        r
    }
}

/// `t + d`, saturating at the end of chrono's range.
fn plus(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn non_negative(d: TimeDelta) -> TimeDelta {
    d.max(TimeDelta::zero())
}

/// Whole minutes in `d`, rounded up; 0 for zero or negative durations.
fn ceil_minutes(d: TimeDelta) -> u32 {
    if d <= TimeDelta::zero() {
        return 0;
    }
    let seconds = d
        .num_seconds()
        .saturating_add(i64::from(d.subsec_nanos() > 0));
    let minutes = (seconds / 60).saturating_add(i64::from(seconds % 60 != 0));
    u32::try_from(minutes).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const DAY: i64 = 24 * 60;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
    }

    fn min(m: i64) -> TimeDelta {
        TimeDelta::minutes(m)
    }

    fn windows() -> LicenseTimeline {
        LicenseTimeline::new(t0(), LicensePolicy::windows())
    }

    #[test]
    fn oob_grace_ends_after_30_days() {
        let tl = windows();
        let s = tl.state_at(t0());
        assert_eq!(s.status, LicenseStatus::OobGrace);
        assert_eq!(s.minutes_left, 43_200);
        assert_eq!(s.state_ends, Some(t0() + min(30 * DAY)));

        let before = tl.state_at(t0() + min(30 * DAY - 1));
        assert_eq!(before.status, LicenseStatus::OobGrace);
        assert_eq!(before.minutes_left, 1);
        assert!(!before.notifies_user);

        let at = tl.state_at(t0() + min(30 * DAY));
        assert_eq!(at.status, LicenseStatus::Notification);
        assert_eq!(at.minutes_left, 0);
        assert_eq!(at.state_ends, None);
        assert!(at.notifies_user);

        let after = tl.state_at(t0() + min(30 * DAY + 1));
        assert_eq!(after.status, LicenseStatus::Notification);
        assert_eq!(after.minutes_left, 0);
    }

    #[test]
    fn minutes_are_rounded_up() {
        let tl = windows();
        let s = tl.state_at(t0() + min(30 * DAY) - TimeDelta::seconds(1));
        assert_eq!(s.status, LicenseStatus::OobGrace);
        assert_eq!(s.minutes_left, 1);
        let s = tl.state_at(t0() + TimeDelta::seconds(59));
        assert_eq!(s.minutes_left, 43_200);
        let s = tl.state_at(t0() + TimeDelta::seconds(60));
        assert_eq!(s.minutes_left, 43_199);
    }

    #[test]
    fn before_installation() {
        let s = windows().state_at(t0() - min(1));
        assert_eq!(s.status, LicenseStatus::Unlicensed);
        assert_eq!(s.minutes_left, 0);
        assert_eq!(s.next_contact, t0());
    }

    #[test]
    fn licensed_for_180_days_then_oot_then_notification() {
        let mut tl = windows();
        let success = t0() + min(DAY);
        tl.record_success(success, 120, 10_080).unwrap();

        let s = tl.state_at(success);
        assert_eq!(s.status, LicenseStatus::Licensed);
        assert_eq!(s.minutes_left, 180 * 1440);
        assert!(!s.notifies_user);

        let s = tl.state_at(success + min(180 * DAY - 1));
        assert_eq!(s.status, LicenseStatus::Licensed);
        assert_eq!(s.minutes_left, 1);

        let s = tl.state_at(success + min(180 * DAY));
        assert_eq!(s.status, LicenseStatus::OotGrace);
        assert_eq!(s.minutes_left, 30 * 1440);
        assert!(s.notifies_user);

        let s = tl.state_at(success + min(210 * DAY - 1));
        assert_eq!(s.status, LicenseStatus::OotGrace);
        assert_eq!(s.minutes_left, 1);

        let s = tl.state_at(success + min(210 * DAY));
        assert_eq!(s.status, LicenseStatus::Notification);
        assert_eq!(s.minutes_left, 0);
        assert_eq!(s.state_ends, None);
    }

    #[test]
    fn renewal_restarts_the_180_day_window() {
        let mut tl = windows();
        let first = t0() + min(60);
        tl.record_success(first, 120, 10_080).unwrap();
        let renewal = first + min(7 * DAY);
        tl.record_success(renewal, 120, 10_080).unwrap();

        // Past the first activation's 180 days, still licensed.
        let s = tl.state_at(first + min(180 * DAY));
        assert_eq!(s.status, LicenseStatus::Licensed);
        assert_eq!(s.minutes_left, 7 * 1440);
        // The window now ends 180 days after the renewal.
        assert_eq!(s.state_ends, Some(renewal + min(180 * DAY)));
        assert_eq!(
            tl.state_at(renewal + min(180 * DAY)).status,
            LicenseStatus::OotGrace
        );
        // Before the renewal happened, the first window was in force.
        assert_eq!(
            tl.state_at(first + min(DAY)).state_ends,
            Some(first + min(180 * DAY))
        );
    }

    #[test]
    fn activation_in_oot_grace_returns_to_licensed() {
        let mut tl = windows();
        tl.record_success(t0(), 120, 10_080).unwrap();
        let late = t0() + min(200 * DAY);
        assert_eq!(tl.state_at(late).status, LicenseStatus::OotGrace);
        tl.record_success(late, 120, 10_080).unwrap();
        let s = tl.state_at(late);
        assert_eq!(s.status, LicenseStatus::Licensed);
        assert_eq!(s.minutes_left, 180 * 1440);
    }

    #[test]
    fn retries_every_activation_interval_while_not_activated() {
        let mut tl = windows();
        // Due at installation when nothing has been tried.
        assert_eq!(tl.state_at(t0() + min(10)).next_contact, t0());
        let mut at = t0();
        for _ in 0..5 {
            tl.record_failure(at).unwrap();
            assert_eq!(tl.state_at(at).next_contact, at + min(120));
            assert_eq!(tl.state_at(at + min(119)).next_contact, at + min(120));
            at += min(120);
        }
        // Still retrying every two hours in notification.
        let late = t0() + min(31 * DAY);
        tl.record_failure(late).unwrap();
        let s = tl.state_at(late);
        assert_eq!(s.status, LicenseStatus::Notification);
        assert_eq!(s.next_contact, late + min(120));
    }

    #[test]
    fn renews_every_renewal_interval_while_licensed() {
        let mut tl = windows();
        let mut at = t0();
        tl.record_success(at, 120, 10_080).unwrap();
        for _ in 0..4 {
            assert_eq!(tl.state_at(at).next_contact, at + min(10_080));
            at += min(10_080);
            tl.record_success(at, 120, 10_080).unwrap();
        }
        // A failed renewal keeps the renewal rhythm while still licensed.
        let failed = at + min(10_080);
        tl.record_failure(failed).unwrap();
        let s = tl.state_at(failed);
        assert_eq!(s.status, LicenseStatus::Licensed);
        assert_eq!(s.next_contact, failed + min(10_080));
    }

    #[test]
    fn host_intervals_replace_the_defaults() {
        let mut tl = windows();
        tl.record_success(t0(), 30, 1440).unwrap();
        assert_eq!(tl.state_at(t0()).next_contact, t0() + min(1440));
        // After the activation lapses, retries use the host's 30 minutes.
        let lapse = t0() + min(180 * DAY);
        tl.record_failure(lapse).unwrap();
        let s = tl.state_at(lapse);
        assert_eq!(s.status, LicenseStatus::OotGrace);
        assert_eq!(s.next_contact, lapse + min(30));
    }

    #[test]
    fn renewal_due_is_capped_at_the_lapse() {
        let mut tl = windows();
        tl.record_success(t0(), 120, 10_080).unwrap();
        let failed = t0() + min(179 * DAY);
        tl.record_failure(failed).unwrap();
        let s = tl.state_at(failed);
        assert_eq!(s.status, LicenseStatus::Licensed);
        assert_eq!(s.next_contact, t0() + min(180 * DAY));
    }

    #[test]
    fn rearm_resets_grace_and_limit_is_enforced() {
        let mut tl = windows();
        let mut at = t0();
        for used in 1..=3 {
            at += min(29 * DAY);
            tl.rearm(at).unwrap();
            let s = tl.state_at(at);
            assert_eq!(s.status, LicenseStatus::OobGrace);
            assert_eq!(s.minutes_left, 43_200);
            assert_eq!(s.rearms_left, 3 - used);
            assert_eq!(
                tl.state_at(at + min(30 * DAY - 1)).status,
                LicenseStatus::OobGrace
            );
            assert_eq!(
                tl.state_at(at + min(30 * DAY)).status,
                LicenseStatus::Notification
            );
        }
        let refused = tl.rearm(at + min(DAY)).unwrap_err();
        assert_eq!(refused, RearmError::LimitReached { limit: 3 });
        assert_eq!(refused.hresult(), Some(HResult::MAX_REARM_REACHED));
        assert_eq!(tl.events().len(), 3);
        // Rearm from notification works while rearms are left.
        let mut tl = windows();
        let late = t0() + min(40 * DAY);
        assert_eq!(tl.state_at(late).status, LicenseStatus::Notification);
        tl.rearm(late).unwrap();
        assert_eq!(tl.state_at(late).status, LicenseStatus::OobGrace);
    }

    #[test]
    fn rearm_discards_an_activation() {
        let mut tl = windows();
        tl.record_success(t0(), 120, 10_080).unwrap();
        let at = t0() + min(DAY);
        tl.rearm(at).unwrap();
        let s = tl.state_at(at);
        assert_eq!(s.status, LicenseStatus::OobGrace);
        assert_eq!(s.minutes_left, 43_200);
    }

    #[test]
    fn office_rearms_five_times_and_activation_grants_one_more() {
        let mut tl = LicenseTimeline::new(t0(), LicensePolicy::office());
        for i in 1..=5 {
            tl.rearm(t0() + min(i)).unwrap();
        }
        assert_eq!(tl.rearms_left_at(t0() + min(5)), 0);
        assert_eq!(
            tl.rearm(t0() + min(6)),
            Err(RearmError::LimitReached { limit: 5 })
        );
        tl.record_success(t0() + min(DAY), 120, 10_080).unwrap();
        assert_eq!(tl.rearms_left_at(t0() + min(DAY)), 1);
        tl.rearm(t0() + min(2 * DAY)).unwrap();
        assert_eq!(
            tl.rearm(t0() + min(3 * DAY)),
            Err(RearmError::LimitReached { limit: 5 })
        );
        // Windows grants nothing on activation.
        let mut win = LicenseTimeline::new(t0(), LicensePolicy::windows().with_rearm_limit(0));
        win.record_success(t0(), 120, 10_080).unwrap();
        assert_eq!(win.rearms_left_at(t0()), 0);
    }

    #[test]
    fn office_notices_after_25_days() {
        let tl = LicenseTimeline::new(t0(), LicensePolicy::office());
        let s = tl.state_at(t0() + min(25 * DAY - 1));
        assert_eq!(s.status, LicenseStatus::OobGrace);
        assert!(!s.notifies_user);
        let s = tl.state_at(t0() + min(25 * DAY));
        assert_eq!(s.status, LicenseStatus::OobGrace);
        assert!(s.notifies_user);
        assert_eq!(s.minutes_left, 5 * 1440);
        // Windows has no such threshold.
        assert!(!windows().state_at(t0() + min(25 * DAY)).notifies_user);
        // A rearm restarts the count.
        let mut tl = tl;
        let r = t0() + min(26 * DAY);
        tl.rearm(r).unwrap();
        assert!(!tl.state_at(r).notifies_user);
        assert!(tl.state_at(r + min(25 * DAY)).notifies_user);
    }

    #[test]
    fn binding_expiration_values() {
        let mut tl = windows();
        // 2 hours after install: 43 200 − 120.
        assert_eq!(tl.state_at(t0() + min(120)).minutes_left, 43_080);
        // Activated on day 10 at noon; queried 3 days later.
        let success = t0() + min(10 * DAY + 720);
        tl.record_success(success, 120, 10_080).unwrap();
        assert_eq!(
            tl.state_at(success + min(3 * DAY)).minutes_left,
            259_200 - 3 * 1440
        );
        // 5 days into OOT grace: 25 days left.
        assert_eq!(
            tl.state_at(success + min(185 * DAY)).minutes_left,
            25 * 1440
        );
        assert_eq!(tl.state_at(success + min(400 * DAY)).minutes_left, 0);
    }

    #[test]
    fn events_must_be_in_time_order() {
        let mut tl = windows();
        let e = tl.record_failure(t0() - min(1)).unwrap_err();
        assert_eq!(
            e,
            OutOfOrderError {
                at: t0() - min(1),
                latest: t0()
            }
        );
        tl.record_failure(t0() + min(10)).unwrap();
        tl.record_failure(t0() + min(10)).unwrap(); // equal instants are fine
        assert!(tl.record_success(t0() + min(9), 120, 10_080).is_err());
        assert_eq!(
            tl.rearm(t0() + min(5)),
            Err(RearmError::OutOfOrder(OutOfOrderError {
                at: t0() + min(5),
                latest: t0() + min(10)
            }))
        );
        assert_eq!(tl.events().len(), 2);
    }

    #[test]
    fn far_future_saturates() {
        let mut tl = windows();
        tl.record_success(DateTime::<Utc>::MAX_UTC - min(10), u32::MAX, u32::MAX)
            .unwrap();
        let s = tl.state_at(DateTime::<Utc>::MAX_UTC - min(10));
        assert_eq!(s.status, LicenseStatus::Licensed);
        assert_eq!(s.next_contact, DateTime::<Utc>::MAX_UTC);
    }

    /// A client driven by outcomes on a stepped clock: it asks whenever its
    /// next contact is due, and a scripted host answers.
    #[test]
    fn timeline_fed_outcomes_on_a_stepped_clock() {
        use crate::message::{RequestBody, ResponseBody, Version};
        use crate::{FileTime, Uuid};

        let request = RequestBody {
            version: Version::V6,
            vm_info: 0,
            license_status: LicenseStatus::OobGrace,
            binding_expiration: 0,
            application_id: Uuid::nil(),
            sku_id: Uuid::nil(),
            kms_id: Uuid::nil(),
            cmid: Uuid::nil(),
            previous_cmid: Uuid::nil(),
            n_policy: 25,
            client_time: FileTime::from_ticks(1),
            workstation: String::new(),
        };
        let answer = |count: u32| {
            let response = ResponseBody::answering(&request, "x", count, 60, 1440, None);
            ActivationOutcome::from_response(&request, &response, t0())
        };
        let mut tl = windows();
        // Contacts made while stepping the clock minute by minute.
        let mut contacts = Vec::new();
        let mut t = t0();
        let end = t0() + min(400 * DAY);
        while t < end {
            let state = tl.state_at(t);
            if state.next_contact <= t {
                let day = (t - t0()).num_days();
                let outcome = match day {
                    // Days 0-1: no host; days 1-2: the count is too low.
                    0 => ActivationOutcome::no_host(),
                    1 => answer(3),
                    // Activated and renewed for 30 days, then the host is gone.
                    2..=31 => answer(30),
                    _ => ActivationOutcome::refused(HResult::NO_HOST_REACHABLE),
                };
                tl.record_outcome(t, &outcome).unwrap();
                contacts.push((t, state.status, outcome.is_activated()));
            }
            // Step in whole minutes; jump ahead to the next due contact.
            t = tl.state_at(t).next_contact.max(t + min(1));
        }
        // Unlicensed: a retry every activation interval (the default 120
        // minutes until a host sent its own 60).
        let day0: Vec<_> = contacts.iter().filter(|c| c.0 < t0() + min(DAY)).collect();
        assert_eq!(day0.len(), 12);
        assert!(day0.windows(2).all(|w| w[1].0 - w[0].0 == min(120)));
        let day1: Vec<_> = contacts
            .iter()
            .filter(|c| c.0 >= t0() + min(DAY) && c.0 < t0() + min(2 * DAY))
            .collect();
        assert!(
            day1.windows(2).all(|w| w[1].0 - w[0].0 == min(60)),
            "the host's interval"
        );
        // Activated on day 2, then renewals every renewal interval (1440).
        let first_success = contacts.iter().find(|c| c.2).unwrap().0;
        assert_eq!(first_success, t0() + min(2 * DAY));
        let successes: Vec<_> = contacts.iter().filter(|c| c.2).collect();
        assert!(successes.windows(2).all(|w| w[1].0 - w[0].0 == min(1440)));
        let last_success = successes.last().unwrap().0;
        // Licensed until 180 days after the last success, while failures are
        // retried on the renewal rhythm; then out-of-tolerance grace.
        assert_eq!(
            tl.state_at(last_success + min(180 * DAY) - min(1)).status,
            LicenseStatus::Licensed
        );
        assert_eq!(
            tl.state_at(last_success + min(180 * DAY)).status,
            LicenseStatus::OotGrace
        );
        let oot: Vec<_> = contacts
            .iter()
            .filter(|c| c.1 == LicenseStatus::OotGrace)
            .collect();
        assert!(!oot.is_empty());
        assert!(
            oot.windows(2).all(|w| w[1].0 - w[0].0 == min(60)),
            "retries every activation interval"
        );
        assert_eq!(
            tl.state_at(last_success + min(210 * DAY)).status,
            LicenseStatus::Notification
        );
    }

    proptest::proptest! {
        /// Random histories: queries never panic, `BindingExpiration` matches
        /// the state's end, and the snapshot only depends on events up to
        /// the queried instant.
        #[test]
        fn random_histories_are_consistent(
            steps in proptest::collection::vec((0i64..100_000, 0u8..3, 0u32..20_000), 0..40),
            query in 0i64..4_000_000,
        ) {
            let mut tl = LicenseTimeline::new(t0(), LicensePolicy::office());
            let mut at = t0();
            for (gap, kind, interval) in steps {
                at += min(gap);
                match kind {
                    0 => tl.record_success(at, interval, interval.saturating_mul(7)).unwrap(),
                    1 => tl.record_failure(at).unwrap(),
                    _ => { let _ = tl.rearm(at); }
                }
            }
            let q = t0() + min(query);
            let s = tl.state_at(q);
            if let Some(end) = s.state_ends {
                proptest::prop_assert!(end > q);
                proptest::prop_assert_eq!(i64::from(s.minutes_left), (end - q).num_minutes());
            } else {
                proptest::prop_assert_eq!(s.status, LicenseStatus::Notification);
                proptest::prop_assert_eq!(s.minutes_left, 0);
            }
            proptest::prop_assert!(s.rearms_left <= 5);
            // Replaying only the events up to q gives the same answer.
            let mut prefix = LicenseTimeline::new(t0(), LicensePolicy::office());
            for e in tl.events().iter().take_while(|e| e.at() <= q) {
                match *e {
                    LicenseEvent::Activated { at, activation_interval, renewal_interval } =>
                        prefix.record_success(at, activation_interval, renewal_interval).unwrap(),
                    LicenseEvent::Failed { at } => prefix.record_failure(at).unwrap(),
                    LicenseEvent::AnsweredWithoutActivation { .. } => unreachable!("not generated"),
                    LicenseEvent::Rearmed { at } => prefix.rearm(at).unwrap(),
                }
            }
            proptest::prop_assert_eq!(prefix.state_at(q), s);
        }
    }
}
