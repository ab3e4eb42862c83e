//! Activation requests built from a product and a machine identity.
//!
//! A real client fills its request from three places: the installed product
//! (application, SKU and KMS IDs, N policy, protocol version), the machine
//! (client machine ID, previous one, workstation name, whether it runs in a
//! virtual machine) and its licence state (status and minutes left, from
//! [`LicenseTimeline`](crate::license::LicenseTimeline)). [`ProductRequest`]
//! holds the first, [`MachineIdentity`] the second, and
//! [`ProductRequest::build`] takes a [`LicenseSnapshot`] for the third.

use crate::license::{LicensePolicy, LicenseSnapshot};
use crate::message::{RequestBody, Version};
use crate::product::{self, KmsItem, Sku, SkuLookupError, WINDOWS_APPLICATION};
use crate::{FileTime, RandomSource, Uuid};

/// Who is asking: the machine fields of a request.
///
/// ```
/// use kms_activation::client::MachineIdentity;
/// use kms_activation::ScriptedRandom;
///
/// let mut rng = ScriptedRandom::new([9u8; 16]);
/// let machine = MachineIdentity::random("pc1.example.org", &mut rng);
/// assert_eq!(machine.cmid.get_version_num(), 4);
/// assert!(machine.previous_cmid.is_nil());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct MachineIdentity {
    /// Client machine ID, the value a host counts distinct clients by.
    pub cmid: Uuid,
    /// The CMID before the last rearm or generalisation (nil if none).
    pub previous_cmid: Uuid,
    /// Workstation name (DNS name of the client).
    pub workstation: String,
    /// True when the client runs in a virtual machine.
    pub is_virtual_machine: bool,
}

impl MachineIdentity {
    /// A physical machine with this CMID and name, no previous CMID.
    #[must_use]
    pub fn new(cmid: Uuid, workstation: impl Into<String>) -> Self {
        Self {
            cmid,
            previous_cmid: Uuid::nil(),
            workstation: workstation.into(),
            is_virtual_machine: false,
        }
    }

    /// A physical machine with a random (version 4) CMID drawn from `rng`.
    pub fn random<R: RandomSource + ?Sized>(workstation: impl Into<String>, rng: &mut R) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        Self::new(
            uuid::Builder::from_random_bytes(bytes).into_uuid(),
            workstation,
        )
    }

    /// Sets the previous CMID.
    #[must_use]
    pub const fn with_previous_cmid(mut self, previous_cmid: Uuid) -> Self {
        self.previous_cmid = previous_cmid;
        self
    }

    /// Marks the machine as virtual (or not).
    #[must_use]
    pub const fn with_virtual_machine(mut self, is_virtual_machine: bool) -> Self {
        self.is_virtual_machine = is_virtual_machine;
        self
    }
}

/// Why a product cannot be requested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProductRequestError {
    /// The text names no single SKU.
    #[error(transparent)]
    Lookup(#[from] SkuLookupError),
    /// The SKU has no KMS item in the catalog, so no KMS ID to request.
    #[error("{0} has no KMS ID in the catalog")]
    NoKmsItem(&'static str),
}

/// The product fields of a request: a catalog SKU, its KMS item and the
/// protocol version to speak (the product's default unless told otherwise).
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use kms_activation::client::{MachineIdentity, ProductRequest};
/// use kms_activation::license::LicenseTimeline;
/// use kms_activation::message::Version;
/// use kms_activation::{FileTime, LicenseStatus, Uuid};
///
/// let windows7 = ProductRequest::for_product("windows 7 enterprise")?;
/// assert_eq!(windows7.version(), Version::V4); // the product's own default
/// let office = ProductRequest::for_product("office ltsc professional plus 2021")?;
/// assert_eq!(office.version(), Version::V6);
///
/// let installed = Utc.with_ymd_and_hms(2025, 1, 1, 8, 0, 0).unwrap();
/// let timeline = LicenseTimeline::new(installed, office.license_policy());
/// let now = installed + chrono::Duration::hours(2);
/// let machine = MachineIdentity::new(Uuid::from_u128(42), "pc42.example.org");
/// let request = office.build(&machine, &timeline.state_at(now), FileTime::try_from(now).unwrap());
/// assert_eq!(request.license_status, LicenseStatus::OobGrace);
/// assert_eq!(request.binding_expiration, 30 * 24 * 60 - 120);
/// assert_eq!(request.n_policy, 5);
/// # Ok::<(), kms_activation::client::ProductRequestError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductRequest {
    sku: &'static Sku,
    kms_item: &'static KmsItem,
    version: Version,
}

impl ProductRequest {
    /// Requests `sku` with its product's default protocol version.
    ///
    /// # Errors
    ///
    /// [`ProductRequestError::NoKmsItem`] when the catalog has no KMS item
    /// for the SKU.
    pub fn new(sku: &'static Sku) -> Result<Self, ProductRequestError> {
        let kms_item = sku
            .kms_item()
            .ok_or(ProductRequestError::NoKmsItem(sku.name()))?;
        Ok(Self {
            sku,
            kms_item,
            version: Version::new(kms_item.default_protocol_major(), 0),
        })
    }

    /// Requests the product `text` names: a SKU ID, a GVLK or a name
    /// ([`product::find_sku`]).
    ///
    /// # Errors
    ///
    /// [`ProductRequestError::Lookup`] when `text` names no single SKU (an
    /// ambiguous name lists its candidates), or
    /// [`ProductRequestError::NoKmsItem`].
    pub fn for_product(text: &str) -> Result<Self, ProductRequestError> {
        Self::new(product::find_sku(text)?)
    }

    /// Speaks `version` instead of the product's default.
    #[must_use]
    pub const fn with_version(mut self, version: Version) -> Self {
        self.version = version;
        self
    }

    /// The SKU requested.
    #[must_use]
    pub const fn sku(&self) -> &'static Sku {
        self.sku
    }

    /// The SKU's KMS item.
    #[must_use]
    pub const fn kms_item(&self) -> &'static KmsItem {
        self.kms_item
    }

    /// The protocol version requests use.
    #[must_use]
    pub const fn version(&self) -> Version {
        self.version
    }

    /// The licence rules of the product: Windows or Office.
    #[must_use]
    pub fn license_policy(&self) -> LicensePolicy {
        if self.kms_item.application_id() == WINDOWS_APPLICATION {
            LicensePolicy::windows()
        } else {
            LicensePolicy::office()
        }
    }

    /// The request `machine` sends at `client_time` in licence state
    /// `license` (its status and minutes left).
    #[must_use]
    pub fn build(
        &self,
        machine: &MachineIdentity,
        license: &LicenseSnapshot,
        client_time: FileTime,
    ) -> RequestBody {
        RequestBody {
            version: self.version,
            vm_info: u32::from(machine.is_virtual_machine),
            license_status: license.status,
            binding_expiration: license.minutes_left,
            application_id: self.kms_item.application_id(),
            sku_id: self.sku.id(),
            kms_id: self.kms_item.id(),
            cmid: machine.cmid,
            previous_cmid: machine.previous_cmid,
            n_policy: self.kms_item.n_count_policy(),
            client_time,
            workstation: machine.workstation.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::LicenseTimeline;
    use crate::{LicenseStatus, ScriptedRandom};
    use chrono::{TimeZone, Utc};

    #[test]
    fn every_catalog_sku_with_a_kms_item_builds_with_its_default_version() {
        let installed = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let machine = MachineIdentity::new(Uuid::from_u128(5), "pc5").with_virtual_machine(true);
        let mut built = 0;
        for sku in product::skus() {
            let Some(item) = sku.kms_item() else {
                assert!(matches!(
                    ProductRequest::new(sku),
                    Err(ProductRequestError::NoKmsItem(_))
                ));
                continue;
            };
            let product = ProductRequest::new(sku).unwrap();
            let timeline = LicenseTimeline::new(installed, product.license_policy());
            let body = product.build(
                &machine,
                &timeline.state_at(installed),
                FileTime::from_ticks(1),
            );
            assert_eq!(
                body.version.major,
                item.default_protocol_major(),
                "{}",
                sku.name()
            );
            assert_eq!((body.sku_id, body.kms_id), (sku.id(), item.id()));
            assert_eq!(body.application_id, item.application_id());
            assert_eq!(body.n_policy, item.n_count_policy());
            assert_eq!(body.vm_info, 1);
            assert_eq!(body.license_status, LicenseStatus::OobGrace);
            built += 1;
        }
        assert!(built > 200);
    }

    #[test]
    fn product_lookups() {
        let win7 = ProductRequest::for_product("windows 7 professional").unwrap();
        assert_eq!(win7.version(), Version::V4);
        assert_eq!(win7.license_policy(), LicensePolicy::windows());
        let by_gvlk = ProductRequest::for_product("FJ82H-XT6CR-J8D7P-XQJJ2-GPDD4").unwrap();
        assert_eq!(by_gvlk.sku().id(), win7.sku().id());
        let v6 = win7.with_version(Version::V6);
        assert_eq!(v6.version(), Version::V6);
        assert!(matches!(
            ProductRequest::for_product("office"),
            Err(ProductRequestError::Lookup(
                SkuLookupError::Ambiguous { .. }
            ))
        ));
        let office = ProductRequest::for_product("office ltsc professional plus 2024").unwrap();
        assert_eq!(office.license_policy(), LicensePolicy::office());
    }

    #[test]
    fn machine_identity() {
        let mut rng = ScriptedRandom::new((0u8..16).collect::<Vec<_>>());
        let m = MachineIdentity::random("pc", &mut rng).with_previous_cmid(Uuid::from_u128(3));
        assert_eq!(m.cmid.get_version_num(), 4);
        assert_eq!(m.previous_cmid, Uuid::from_u128(3));
        assert!(!m.is_virtual_machine);
    }
}
