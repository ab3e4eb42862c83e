//! Deciding how to answer a KMS request.

use super::event::RequestContext;
use crate::message::{Hwid, RequestBody};
use crate::{FileTime, HResult};

/// Largest N policy a host accepts; the engine refuses larger values with
/// [`HResult::INVALID_DATA`] before any policy sees the request.
pub const MAX_N_POLICY: u32 = 1000;

/// The largest count a host reports when the largest N policy among the
/// clients it counts is `max_n_policy`: twice that, and at least 1.
///
/// A Microsoft KMS host keeps the most recent contacts up to twice the
/// largest N policy it has seen: 50 once a Windows client (N = 25) has
/// asked, 10 for Office or servers alone (N = 5); mixed clients of one
/// application share the larger cap. Every count this crate reports is
/// capped here ([`capped_count`]), and the not-genuine "twice the N policy"
/// modes use it too.
///
/// ```
/// use kms_activation::host::count_cap;
/// assert_eq!(count_cap(25), 50);
/// assert_eq!(count_cap(5), 10);
/// assert_eq!(count_cap(0), 1);
/// ```
#[must_use]
pub const fn count_cap(max_n_policy: u32) -> u32 {
    let cap = max_n_policy.saturating_mul(2);
    if cap == 0 { 1 } else { cap }
}

/// The count a host reports for `clients` distinct recent clients whose
/// largest N policy is `max_n_policy`: `clients`, capped at
/// [`count_cap`].
///
/// ```
/// use kms_activation::host::capped_count;
/// assert_eq!(capped_count(7, 5), 7);
/// assert_eq!(capped_count(70, 5), 10);
/// assert_eq!(capped_count(70, 25), 50);
/// ```
#[must_use]
pub fn capped_count(clients: u64, max_n_policy: u32) -> u32 {
    let capped = clients.min(u64::from(count_cap(max_n_policy)));
    u32::try_from(capped).unwrap_or(u32::MAX)
}

/// Default activation (retry) interval in minutes: 2 hours.
pub const DEFAULT_ACTIVATION_INTERVAL: u32 = 120;

/// Default renewal interval in minutes: 7 days.
pub const DEFAULT_RENEWAL_INTERVAL: u32 = 10_080;

/// What a host tells a client it activates.
///
/// ```
/// use kms_activation::Hwid;
/// use kms_activation::host::{Answer, DEFAULT_RENEWAL_INTERVAL};
///
/// let mut answer = Answer::new("06401-00206-551-123456-03-1033-9600.0000-1002025", Hwid([0; 8]), 50);
/// answer.activation_interval = 60;
/// assert_eq!(answer.renewal_interval, DEFAULT_RENEWAL_INTERVAL);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Answer {
    /// The host's extended product ID (at most 63 characters).
    pub epid: String,
    /// The host's hardware ID (sent in V6 responses only).
    pub hwid: Hwid,
    /// Current count of active clients for the request's application.
    pub count: u32,
    /// Minutes between retries while a client is not activated.
    pub activation_interval: u32,
    /// Minutes between renewals once a client is activated.
    pub renewal_interval: u32,
}

impl Answer {
    /// An answer with `epid`, `hwid` and `count`, and the default
    /// intervals ([`DEFAULT_ACTIVATION_INTERVAL`], [`DEFAULT_RENEWAL_INTERVAL`]);
    /// the public fields change them.
    #[must_use]
    pub fn new(epid: impl Into<String>, hwid: Hwid, count: u32) -> Self {
        Self {
            epid: epid.into(),
            hwid,
            count,
            activation_interval: DEFAULT_ACTIVATION_INTERVAL,
            renewal_interval: DEFAULT_RENEWAL_INTERVAL,
        }
    }
}

/// A synchronous host policy: answers one request inline.
///
/// The simple way to run a host whose decisions need no I/O: pass it to
/// [`HostConnection::handle_input_with`](super::HostConnection::handle_input_with),
/// which answers every [`RequestEvent`](super::RequestEvent) through it at once. Hosts that wait
/// on a database use the event API of
/// [`HostConnection`](super::HostConnection) instead.
///
/// Only requests that passed the protocol's own checks (decoding, N policy,
/// clock skew) reach a responder.
///
/// ```
/// use kms_activation::host::{Answer, RequestContext, Responder};
/// use kms_activation::message::RequestBody;
/// use kms_activation::{FileTime, HResult};
///
/// /// Refuses everything, as a host without a CSVLK would.
/// struct Refuse;
/// impl Responder for Refuse {
///     fn respond(
///         &mut self,
///         _now: FileTime,
///         _context: &RequestContext,
///         _request: &RequestBody,
///     ) -> Result<Answer, HResult> {
///         Err(HResult::KMS_ID_MISMATCH)
///     }
/// }
/// let _responder: Box<dyn Responder> = Box::new(Refuse);
/// ```
pub trait Responder {
    /// Answers `request`, which arrived as `context` says, at `now`; or
    /// refuses it with an HRESULT.
    ///
    /// # Errors
    ///
    /// The HRESULT returned is sent to the client in place of a response.
    fn respond(
        &mut self,
        now: FileTime,
        context: &RequestContext,
        request: &RequestBody,
    ) -> Result<Answer, HResult>;
}

impl<R: Responder + ?Sized> Responder for &mut R {
    fn respond(
        &mut self,
        now: FileTime,
        context: &RequestContext,
        request: &RequestBody,
    ) -> Result<Answer, HResult> {
        (**self).respond(now, context, request)
    }
}

/// A responder with fixed answers: one ePID, one HWID, fixed intervals and
/// either a fixed count or twice the client's N policy.
///
/// **Not a genuine host**: this is the behaviour of a minimal emulator (it
/// keeps no client table, so every client activates at once). For a host
/// that counts clients as Windows does, use [`KmsHost`](super::KmsHost).
///
/// ```
/// use kms_activation::host::{FixedResponder, RequestContext, Responder};
/// use kms_activation::dcerpc::Ndr;
/// # use kms_activation::message::{RequestBody, Version};
/// # use kms_activation::{FileTime, LicenseStatus, Uuid};
/// # let request = RequestBody {
/// #     version: Version::V6, vm_info: 0, license_status: LicenseStatus::OobGrace,
/// #     binding_expiration: 43_200, application_id: Uuid::nil(), sku_id: Uuid::nil(),
/// #     kms_id: Uuid::nil(), cmid: Uuid::nil(), previous_cmid: Uuid::nil(), n_policy: 25,
/// #     client_time: FileTime::from_ticks(0), workstation: "pc".into(),
/// # };
/// let mut context = RequestContext::new(FileTime::from_ticks(0));
/// context.ndr = Ndr::Ndr64;
///
/// let mut responder = FixedResponder::default();
/// let answer = responder.respond(FileTime::from_ticks(0), &context, &request).unwrap();
/// assert_eq!(answer.count, 50); // 2 × N for N = 25
///
/// responder.set_count(Some(7));
/// assert_eq!(responder.respond(FileTime::from_ticks(0), &context, &request).unwrap().count, 7);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedResponder {
    epid: String,
    hwid: Hwid,
    count: Option<u32>,
    activation_interval: u32,
    renewal_interval: u32,
    require_known_kms_id: bool,
}

impl Default for FixedResponder {
    /// A Windows Server 2022 host ePID of our own making (consistent with
    /// the CSVLK's group and key range), a fixed HWID, count 2 × N and the
    /// default intervals.
    fn default() -> Self {
        Self {
            epid: "03612-04573-012-345678-03-1033-20348.0000-2652024".to_owned(),
            hwid: Hwid([0x36, 0x4F, 0x46, 0x3A, 0x88, 0x63, 0xD3, 0x5F]),
            count: None,
            activation_interval: DEFAULT_ACTIVATION_INTERVAL,
            renewal_interval: DEFAULT_RENEWAL_INTERVAL,
            require_known_kms_id: false,
        }
    }
}

impl FixedResponder {
    /// A responder answering with `epid` and `hwid`; count 2 × N and
    /// default intervals.
    #[must_use]
    pub fn new(epid: impl Into<String>, hwid: Hwid) -> Self {
        Self {
            epid: epid.into(),
            hwid,
            ..Self::default()
        }
    }

    /// Reports a fixed count (`Some`) or twice the request's N policy
    /// (`None`, at least 1).
    pub fn set_count(&mut self, count: Option<u32>) -> &mut Self {
        self.count = count;
        self
    }

    /// Sets the activation (retry) and renewal intervals, in minutes.
    pub fn set_intervals(&mut self, activation: u32, renewal: u32) -> &mut Self {
        self.activation_interval = activation;
        self.renewal_interval = renewal;
        self
    }

    /// Sets the ePID.
    pub fn set_epid(&mut self, epid: impl Into<String>) -> &mut Self {
        self.epid = epid.into();
        self
    }

    /// Refuse, as a genuine host does, requests whose KMS ID is not in the
    /// [product catalog](crate::product), is a retail or preview group, or
    /// belongs to another application than the request's `ApplicationID`
    /// ([`product::volume_kms_item`](crate::product::volume_kms_item); all
    /// answered with [`HResult::KMS_ID_MISMATCH`]). Off by default, as in
    /// vlmcsd.
    pub fn set_require_known_kms_id(&mut self, on: bool) -> &mut Self {
        self.require_known_kms_id = on;
        self
    }

    /// Sets the hardware ID.
    pub fn set_hwid(&mut self, hwid: Hwid) -> &mut Self {
        self.hwid = hwid;
        self
    }
}

impl Responder for FixedResponder {
    fn respond(
        &mut self,
        _now: FileTime,
        _context: &RequestContext,
        request: &RequestBody,
    ) -> Result<Answer, HResult> {
        if self.require_known_kms_id
            && crate::product::volume_kms_item(request.kms_id, request.application_id).is_none()
        {
            return Err(HResult::KMS_ID_MISMATCH);
        }
        let count = self.count.unwrap_or_else(|| count_cap(request.n_policy));
        Ok(Answer {
            epid: self.epid.clone(),
            hwid: self.hwid,
            count,
            activation_interval: self.activation_interval,
            renewal_interval: self.renewal_interval,
        })
    }
}
