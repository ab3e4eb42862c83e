//! The activation record: what a host logs for every request it decides.

use std::net::SocketAddr;

use crate::message::{RequestBody, Version};
use crate::{FileTime, HResult, LicenseStatus, Uuid};

/// One decided request, with the fields a Windows KMS host writes to its
/// event 12290 ("an activation request has been processed") and the
/// context a network host adds: who asked, over which connection, what was
/// answered.
///
/// [`KmsHost`](super::KmsHost) returns one per request, queues it for the
/// store's activation log and, with the `tracing` feature, emits it as a
/// `tracing` event at target `kms_activation::activation`.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ActivationRecord {
    /// When the host decided (the host's clock).
    pub time: FileTime,
    /// The client's address, when the transport gave it.
    pub peer: Option<SocketAddr>,
    /// The transport's connection number.
    pub connection_id: u64,
    /// Protocol version of the request.
    pub protocol: Version,
    /// Application ID (Windows, Office 2010, Office 2013+).
    pub application_id: Uuid,
    /// SKU ID (activation ID) of the requesting product.
    pub sku_id: Uuid,
    /// KMS counted ID of the request.
    pub kms_id: Uuid,
    /// Client machine ID.
    pub cmid: Uuid,
    /// Previous client machine ID (nil unless it changed).
    pub previous_cmid: Uuid,
    /// Workstation name the client reported.
    pub workstation: String,
    /// The client's N policy (minimum count it needs).
    pub n_policy: u32,
    /// The client's clock.
    pub client_time: FileTime,
    /// The client said it is a virtual machine.
    pub virtual_machine: bool,
    /// The client's license state.
    pub license_status: LicenseStatus,
    /// Minutes left in the client's license state.
    pub minutes_to_expiry: u32,
    /// Count reported to the client, or `None` when the request was refused.
    pub count: Option<u32>,
    /// [`HResult::S_OK`] when answered, the refusal otherwise.
    pub result: HResult,
}

impl ActivationRecord {
    /// A record of `request`, decided at `time` with `result`.
    #[must_use]
    pub fn new(
        time: FileTime,
        peer: Option<SocketAddr>,
        connection_id: u64,
        request: &RequestBody,
        count: Option<u32>,
        result: HResult,
    ) -> Self {
        Self {
            time,
            peer,
            connection_id,
            protocol: request.version,
            application_id: request.application_id,
            sku_id: request.sku_id,
            kms_id: request.kms_id,
            cmid: request.cmid,
            previous_cmid: request.previous_cmid,
            workstation: request.workstation.clone(),
            n_policy: request.n_policy,
            client_time: request.client_time,
            virtual_machine: request.vm_info != 0,
            license_status: request.license_status,
            minutes_to_expiry: request.binding_expiration,
            count,
            result,
        }
    }

    /// The product's name from the catalog, if the SKU ID is known.
    #[must_use]
    pub fn sku_name(&self) -> Option<&'static str> {
        crate::product::sku(self.sku_id).map(crate::product::Sku::name)
    }

    /// Whether the client was answered (not refused).
    #[must_use]
    pub fn is_answered(&self) -> bool {
        self.result == HResult::S_OK
    }

    /// Whether the client activates: it was answered and the count it was
    /// sent reaches the N policy it reported. An answered client below its
    /// threshold stays unactivated and shows 0xC004F038
    /// ([`HResult::NOT_ENOUGH_COUNT`]) until the count grows.
    ///
    /// ```
    /// use kms_activation::host::ActivationRecord;
    /// use kms_activation::message::{RequestBody, Version};
    /// use kms_activation::{FileTime, HResult, LicenseStatus, Uuid};
    ///
    /// let request = RequestBody {
    ///     version: Version::V6,
    ///     vm_info: 0,
    ///     license_status: LicenseStatus::OobGrace,
    ///     binding_expiration: 43_200,
    ///     application_id: Uuid::nil(),
    ///     sku_id: Uuid::nil(),
    ///     kms_id: Uuid::nil(),
    ///     cmid: Uuid::from_u128(7),
    ///     previous_cmid: Uuid::nil(),
    ///     n_policy: 25, // a Windows client needs 25
    ///     client_time: FileTime::from_ticks(0),
    ///     workstation: "pc7".into(),
    /// };
    /// let at = FileTime::from_ticks(0);
    /// let below = ActivationRecord::new(at, None, 0, &request, Some(1), HResult::S_OK);
    /// assert!(below.is_answered() && !below.activates());
    /// let reached = ActivationRecord::new(at, None, 0, &request, Some(25), HResult::S_OK);
    /// assert!(reached.activates());
    /// let refused = ActivationRecord::new(at, None, 0, &request, None, HResult::KMS_ID_MISMATCH);
    /// assert!(!refused.activates());
    /// ```
    #[must_use]
    pub fn activates(&self) -> bool {
        self.is_answered() && self.count.is_some_and(|count| count >= self.n_policy)
    }
}
