//! What a real client concludes from one activation attempt.
//!
//! The client engine verifies a response cryptographically; a Windows or
//! Office client then decides what the attempt means, and logs it (events
//! 12288 and 12289 on Windows: the activation flag, the host's current
//! count). [`ActivationOutcome`] makes that decision from what came back:
//!
//! | what came back | outcome | HRESULT shown |
//! |---|---|---|
//! | a response whose count reaches the request's N policy | activated | none (`S_OK`) |
//! | a response whose count is below the N policy | failed | `0xC004F038` ([`HResult::NOT_ENOUGH_COUNT`]) |
//! | the host's refusal | failed | the host's HRESULT |
//! | no host answered | failed | `0xC004F074` ([`HResult::NO_HOST_REACHABLE`]) |
//!
//! Alongside it, a response is reported the way a monitoring probe wants
//! it ([`ResponseReport`]): the host's ePID checked by the ePID validator
//! ([`Epid::problems_for_kms`], including whether its CSVLK activates the
//! requested product, which a real client never checks), the HWID, the
//! count and both intervals.

use chrono::{DateTime, Utc};

use crate::epid::{EpidError, EpidProblem};
use crate::message::{Hwid, RequestBody, ResponseBody};
use crate::{Epid, HResult};

/// The conclusion of one activation attempt, as a real client draws it.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use kms_activation::client::ActivationOutcome;
/// use kms_activation::message::{RequestBody, ResponseBody, Version};
/// use kms_activation::{FileTime, HResult, LicenseStatus, Uuid};
///
/// let now = Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap();
/// let request = RequestBody {
///     version: Version::V6,
///     vm_info: 0,
///     license_status: LicenseStatus::OobGrace,
///     binding_expiration: 43_200,
///     application_id: "55c92734-d682-4d71-983e-d6ec3f16059f".parse().unwrap(),
///     sku_id: "de32eafd-aaee-4662-9444-c1befb41bde2".parse().unwrap(),
///     kms_id: "8449b1fb-f0ea-497a-99ab-66ca96e9a0f5".parse().unwrap(),
///     cmid: Uuid::from_u128(7),
///     previous_cmid: Uuid::nil(),
///     n_policy: 5,
///     client_time: FileTime::try_from(now).unwrap(),
///     workstation: "pc7.example.org".into(),
/// };
/// let mut response = ResponseBody::answering(
///     &request,
///     "05426-00206-565-184251-03-1068-9200.0000-1222025",
///     3,
///     120,
///     10_080,
///     None,
/// );
///
/// // Windows Server 2019 Standard: three clients counted, five needed, so
/// // the client shows 0xC004F038.
/// let outcome = ActivationOutcome::from_response(&request, &response, now);
/// assert!(!outcome.is_activated());
/// assert_eq!(outcome.hresult(), HResult::NOT_ENOUGH_COUNT);
///
/// response.count = 5;
/// let outcome = ActivationOutcome::from_response(&request, &response, now);
/// assert!(outcome.is_activated());
/// let report = outcome.response().unwrap();
/// assert!(report.epid_check.is_valid(), "{:?}", report.epid_check);
///
/// assert_eq!(ActivationOutcome::no_host().hresult(), HResult::NO_HOST_REACHABLE);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationOutcome {
    failure: Option<HResult>,
    response: Option<ResponseReport>,
}

/// A response as a monitoring probe reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResponseReport {
    /// The host's ePID as sent.
    pub epid: String,
    /// What the ePID validator says about it.
    pub epid_check: EpidCheck,
    /// The host's hardware ID (V6 responses only).
    pub hwid: Option<Hwid>,
    /// The host's current count for the requested product.
    pub count: u32,
    /// The N policy the request carried (the count needed).
    pub n_policy: u32,
    /// Minutes until the next attempt while not activated
    /// (`VLActivationInterval`).
    pub activation_interval: u32,
    /// Minutes until the next renewal once activated (`VLRenewalInterval`).
    pub renewal_interval: u32,
}

/// The ePID validator's verdict on a host's ePID.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EpidCheck {
    /// The ePID parses, is consistent with the catalog and belongs to a
    /// CSVLK that activates the requested product.
    Valid(Epid),
    /// The ePID parses but the validator found problems.
    Problems(Epid, Vec<EpidProblem>),
    /// The ePID is not even well formed.
    Malformed(EpidError),
}

impl EpidCheck {
    /// Checks `epid` as the answer to a request for `kms_id` at `now`.
    #[must_use]
    pub fn of(epid: &str, kms_id: crate::Uuid, now: DateTime<Utc>) -> Self {
        match Epid::parse(epid) {
            Err(e) => Self::Malformed(e),
            Ok(parsed) => {
                let problems = parsed.problems_for_kms(kms_id, now);
                if problems.is_empty() {
                    Self::Valid(parsed)
                } else {
                    Self::Problems(parsed, problems)
                }
            }
        }
    }

    /// True when the validator found nothing wrong.
    #[must_use]
    pub const fn is_valid(&self) -> bool {
        matches!(self, Self::Valid(_))
    }

    /// Every problem, as text (empty when valid).
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        match self {
            Self::Valid(_) => Vec::new(),
            Self::Problems(_, problems) => problems.iter().map(ToString::to_string).collect(),
            Self::Malformed(e) => vec![e.to_string()],
        }
    }
}

impl ActivationOutcome {
    /// The outcome of a verified `response` to `request`, checked at `now`
    /// (the ePID's activation date must not be in the future).
    #[must_use]
    pub fn from_response(
        request: &RequestBody,
        response: &ResponseBody,
        now: DateTime<Utc>,
    ) -> Self {
        let report = ResponseReport {
            epid: response.epid.clone(),
            epid_check: EpidCheck::of(&response.epid, request.kms_id, now),
            hwid: response.hwid,
            count: response.count,
            n_policy: request.n_policy,
            activation_interval: response.activation_interval,
            renewal_interval: response.renewal_interval,
        };
        let failure = (response.count < request.n_policy).then_some(HResult::NOT_ENOUGH_COUNT);
        Self {
            failure,
            response: Some(report),
        }
    }

    /// The host refused the request with `hresult`.
    #[must_use]
    pub const fn refused(hresult: HResult) -> Self {
        Self {
            failure: Some(hresult),
            response: None,
        }
    }

    /// No host answered (none found, none reachable, or none replied).
    #[must_use]
    pub const fn no_host() -> Self {
        Self::refused(HResult::NO_HOST_REACHABLE)
    }

    /// True when the client counts itself activated (event 12289's
    /// activation flag 1).
    #[must_use]
    pub const fn is_activated(&self) -> bool {
        self.failure.is_none()
    }

    /// The code the client shows: [`HResult::S_OK`] when activated.
    #[must_use]
    pub fn hresult(&self) -> HResult {
        self.failure.unwrap_or(HResult::S_OK)
    }

    /// The host's response, when there was one.
    #[must_use]
    pub const fn response(&self) -> Option<&ResponseReport> {
        self.response.as_ref()
    }

    /// A one-line explanation: the count against the threshold when
    /// activated, the catalog's description of the HRESULT otherwise.
    #[must_use]
    pub fn description(&self) -> String {
        match (self.failure, &self.response) {
            (None, Some(r)) => format!(
                "activated: the host counts {} clients, {} needed",
                r.count, r.n_policy
            ),
            (None, None) => "activated".to_owned(),
            (Some(h), _) => h.info().map_or_else(
                || format!("{h:#}: not an activation code the catalog knows"),
                |info| info.description.to_owned(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Version;
    use crate::{FileTime, LicenseStatus, Uuid};
    use chrono::TimeZone;

    const SERVER_2019_EPID: &str = "05426-00206-565-184251-03-1068-9200.0000-1222025";
    /// Windows Server 2019, which the Server 2019 ePID activates.
    const WINDOWS_CLIENT_KMS: &str = "8449b1fb-f0ea-497a-99ab-66ca96e9a0f5";
    const OFFICE_2021_KMS: &str = "86d50b16-4808-41af-b83b-b338274318b2";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap()
    }

    fn request(kms_id: &str, n_policy: u32) -> RequestBody {
        RequestBody {
            version: Version::V6,
            vm_info: 0,
            license_status: LicenseStatus::OobGrace,
            binding_expiration: 43_200,
            application_id: "55c92734-d682-4d71-983e-d6ec3f16059f".parse().unwrap(),
            sku_id: "73111121-5638-40f6-bc11-f1d7b0d64300".parse().unwrap(),
            kms_id: kms_id.parse().unwrap(),
            cmid: Uuid::from_u128(1),
            previous_cmid: Uuid::nil(),
            n_policy,
            client_time: FileTime::try_from(now()).unwrap(),
            workstation: "pc1".into(),
        }
    }

    fn response(request: &RequestBody, epid: &str, count: u32) -> ResponseBody {
        ResponseBody::answering(request, epid, count, 120, 10_080, Some(Hwid([1; 8])))
    }

    #[test]
    fn count_below_n_is_not_enough_count() {
        let req = request(WINDOWS_CLIENT_KMS, 25);
        for (count, activated) in [(0, false), (1, false), (24, false), (25, true), (50, true)] {
            let outcome = ActivationOutcome::from_response(
                &req,
                &response(&req, SERVER_2019_EPID, count),
                now(),
            );
            assert_eq!(outcome.is_activated(), activated, "count {count}");
            let expected = if activated {
                HResult::S_OK
            } else {
                HResult::NOT_ENOUGH_COUNT
            };
            assert_eq!(outcome.hresult(), expected);
            let report = outcome.response().unwrap();
            assert_eq!((report.count, report.n_policy), (count, 25));
            assert_eq!(
                (report.activation_interval, report.renewal_interval),
                (120, 10_080)
            );
            assert_eq!(report.hwid, Some(Hwid([1; 8])));
        }
        // Server and Office policies: 5.
        let req = request(WINDOWS_CLIENT_KMS, 5);
        assert!(
            ActivationOutcome::from_response(&req, &response(&req, SERVER_2019_EPID, 5), now())
                .is_activated()
        );
    }

    #[test]
    fn refusals_and_silence_keep_the_code() {
        for code in [
            HResult::KMS_ID_MISMATCH,
            HResult::INVALID_TIMESTAMP,
            HResult::new(0x8007_000D),
        ] {
            let outcome = ActivationOutcome::refused(code);
            assert!(!outcome.is_activated());
            assert_eq!(outcome.hresult(), code);
            assert!(outcome.response().is_none());
            assert_eq!(outcome.description(), code.info().unwrap().description);
        }
        let silent = ActivationOutcome::no_host();
        assert_eq!(silent.hresult(), HResult::new(0xC004_F074));
        assert!(!silent.is_activated());
    }

    #[test]
    fn epid_checks() {
        // A Windows ePID for a Windows request: valid.
        let req = request(WINDOWS_CLIENT_KMS, 25);
        let outcome =
            ActivationOutcome::from_response(&req, &response(&req, SERVER_2019_EPID, 30), now());
        assert!(outcome.response().unwrap().epid_check.is_valid());
        assert!(outcome.description().contains("30"));

        // The same ePID answering Office: the client is activated, the probe
        // reports that the ePID's CSVLK does not activate Office.
        let office = request(OFFICE_2021_KMS, 5);
        let outcome = ActivationOutcome::from_response(
            &office,
            &response(&office, SERVER_2019_EPID, 30),
            now(),
        );
        assert!(outcome.is_activated());
        let check = &outcome.response().unwrap().epid_check;
        assert_eq!(
            check,
            &EpidCheck::Problems(
                Epid::parse(SERVER_2019_EPID).unwrap(),
                vec![EpidProblem::DoesNotActivate {
                    kms_id: office.kms_id
                }]
            )
        );
        assert_eq!(check.problems().len(), 1);

        // Garbage ePID: malformed, still activated.
        let outcome =
            ActivationOutcome::from_response(&req, &response(&req, "not an epid", 30), now());
        assert!(outcome.is_activated());
        assert!(matches!(
            outcome.response().unwrap().epid_check,
            EpidCheck::Malformed(_)
        ));

        // A Windows Server 2022 host (whose CSVLK the catalog lists for its
        // own server KMS ID only) activating Windows 10/11 clients is fine;
        // the same ePID answering Office is not.
        let server_2022 = "03612-04573-012-345678-03-1033-20348.0000-2652024";
        let win11 = request("58e2134f-8e11-4d17-9cb2-91069c151148", 25);
        let outcome =
            ActivationOutcome::from_response(&win11, &response(&win11, server_2022, 30), now());
        assert!(outcome.response().unwrap().epid_check.is_valid());
        let outcome =
            ActivationOutcome::from_response(&office, &response(&office, server_2022, 30), now());
        assert!(!outcome.response().unwrap().epid_check.is_valid());

        // An unknown LCID or build is a problem.
        let odd = "05426-00206-565-184251-03-1068-9300.0000-1222025";
        let outcome = ActivationOutcome::from_response(&req, &response(&req, odd, 30), now());
        assert!(!outcome.response().unwrap().epid_check.is_valid());
    }
}
