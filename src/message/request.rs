//! The request base: the 236 bytes every request version carries
//! ([layout](crate::message#request-base)).

use uuid::Uuid;

use super::LicenseStatus;
use super::{Error, MAX_WORKSTATION_LEN, REQUEST_BASE_LEN, Version};
use crate::guid;
use crate::time::FileTime;
use crate::wire::{DecodeError, DecodeErrorKind, Reader};

/// Byte length of the workstation field: 64 UTF-16 code units.
const WORKSTATION_FIELD_LEN: usize = 128;

/// What a KMS client asks for: the [request base](crate::message#request-base),
/// identical in V4, V5 and V6.
///
/// ```
/// use kms_activation::{FileTime, LicenseStatus, RequestBody, Uuid, Version};
///
/// let body = RequestBody {
///     version: Version::V6,
///     vm_info: 0,
///     license_status: LicenseStatus::OobGrace,
///     binding_expiration: 43_200,
///     application_id: "55c92734-d682-4d71-983e-d6ec3f16059f".parse().unwrap(),
///     sku_id: "73111121-5638-40f6-bc11-f1d7b0d64300".parse().unwrap(),
///     kms_id: "58e2134f-8e11-4d17-9cb2-91069c151148".parse().unwrap(),
///     cmid: "11111111-2222-3333-4444-555555555555".parse().unwrap(),
///     previous_cmid: Uuid::nil(),
///     n_policy: 25,
///     client_time: FileTime::from_ticks(134_397_882_570_000_000),
///     workstation: "client01.example.org".into(),
/// };
/// assert!(!body.is_virtual_machine());
/// ```
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBody {
    /// Protocol version (inside the base; equals the version in clear).
    pub version: Version,
    /// `VMInfo`: 0 for a physical machine, 1 for a virtual machine.
    pub vm_info: u32,
    /// The client's license state
    /// ([codes](crate::message#license-status-and-bindingexpiration)).
    pub license_status: LicenseStatus,
    /// `BindingExpiration`: minutes left in the current license state.
    pub binding_expiration: u32,
    /// Application ID: the product family (Windows, Office 2010, Office 2013+).
    pub application_id: Uuid,
    /// SKU ID (activation ID): the exact edition.
    pub sku_id: Uuid,
    /// KMS counted ID: the product group the host decides on.
    pub kms_id: Uuid,
    /// Client machine ID (CMID).
    pub cmid: Uuid,
    /// Previous CMID, nil unless the CMID changed.
    pub previous_cmid: Uuid,
    /// N policy: the minimum client count the client needs to activate.
    pub n_policy: u32,
    /// The client's current time, echoed bit for bit by the host.
    pub client_time: FileTime,
    /// Workstation name: at most 63 UTF-16 code units, no NUL.
    pub workstation: String,
}

impl RequestBody {
    /// Whether the client says it runs in a virtual machine (`vm_info != 0`).
    #[must_use]
    pub const fn is_virtual_machine(&self) -> bool {
        self.vm_info != 0
    }

    /// Writes the 236-byte base.
    ///
    /// # Errors
    ///
    /// [`Error::WorkstationTooLong`] or [`Error::WorkstationNul`].
    pub(crate) fn encode_base(&self) -> Result<[u8; REQUEST_BASE_LEN], Error> {
        let name = workstation_units(&self.workstation)?;
        let mut out = Vec::with_capacity(REQUEST_BASE_LEN);
        out.extend_from_slice(&u32::from(self.version).to_le_bytes());
        out.extend_from_slice(&self.vm_info.to_le_bytes());
        out.extend_from_slice(&u32::from(self.license_status).to_le_bytes());
        out.extend_from_slice(&self.binding_expiration.to_le_bytes());
        for id in [&self.application_id, &self.sku_id, &self.kms_id, &self.cmid] {
            out.extend_from_slice(&guid::to_wire(id));
        }
        out.extend_from_slice(&self.n_policy.to_le_bytes());
        out.extend_from_slice(&self.client_time.ticks().to_le_bytes());
        out.extend_from_slice(&guid::to_wire(&self.previous_cmid));
        for unit in name {
            out.extend_from_slice(&unit.to_le_bytes());
        }
        // NUL terminator and zero fill.
        out.resize(REQUEST_BASE_LEN, 0);
        let mut base = [0u8; REQUEST_BASE_LEN];
        base.copy_from_slice(&out);
        Ok(base)
    }

    /// Reads the base from `base`, which must hold at least 236 bytes; bytes
    /// after it are not looked at. Error offsets are shifted by `offset`, the
    /// position of `base` in the KMS message.
    ///
    /// The workstation name ends at its first NUL; bytes after the NUL are
    /// ignored. A name without a NUL in its 64 units is
    /// refused. Ill-formed UTF-16 (unpaired surrogates) is decoded lossily,
    /// as U+FFFD.
    pub(crate) fn decode_base(base: &[u8], offset: usize) -> Result<Self, DecodeError> {
        Self::decode_inner(base).map_err(|e| e.shifted(offset))
    }

    fn decode_inner(base: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(base);
        let version = Version::from(r.u32("request.version")?);
        let vm_info = r.u32("request.vm_info")?;
        let license_status = LicenseStatus::from(r.u32("request.license_status")?);
        let binding_expiration = r.u32("request.binding_expiration")?;
        let application_id = r.guid("request.application_id")?;
        let sku_id = r.guid("request.sku_id")?;
        let kms_id = r.guid("request.kms_id")?;
        let cmid = r.guid("request.cmid")?;
        let n_policy = r.u32("request.n_policy")?;
        let client_time = FileTime::from_ticks(r.u64("request.client_time")?);
        let previous_cmid = r.guid("request.previous_cmid")?;
        let name_offset = r.offset();
        let raw = r.take(WORKSTATION_FIELD_LEN, "request.workstation")?;
        let units: Vec<u16> = raw
            .chunks_exact(2)
            .map(|c| <[u8; 2]>::try_from(c).map_or(0, u16::from_le_bytes))
            .take_while(|&u| u != 0)
            .collect();
        if units.len() > MAX_WORKSTATION_LEN {
            return Err(DecodeError::new(
                name_offset,
                "request.workstation",
                DecodeErrorKind::TooLarge {
                    len: units.len(),
                    max: MAX_WORKSTATION_LEN,
                },
            ));
        }
        Ok(Self {
            version,
            vm_info,
            license_status,
            binding_expiration,
            application_id,
            sku_id,
            kms_id,
            cmid,
            previous_cmid,
            n_policy,
            client_time,
            workstation: String::from_utf16_lossy(&units),
        })
    }
}

/// The UTF-16 code units of a workstation name, checked.
fn workstation_units(name: &str) -> Result<Vec<u16>, Error> {
    if name.contains('\0') {
        return Err(Error::WorkstationNul);
    }
    let len = name.encode_utf16().count();
    if len > MAX_WORKSTATION_LEN {
        return Err(Error::WorkstationTooLong { len });
    }
    Ok(name.encode_utf16().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RequestBody {
        RequestBody {
            version: Version::V6,
            vm_info: 1,
            license_status: LicenseStatus::OobGrace,
            binding_expiration: 43_200,
            application_id: "55c92734-d682-4d71-983e-d6ec3f16059f".parse().unwrap(),
            sku_id: "73111121-5638-40f6-bc11-f1d7b0d64300".parse().unwrap(),
            kms_id: "58e2134f-8e11-4d17-9cb2-91069c151148".parse().unwrap(),
            cmid: "11111111-2222-3333-4444-555555555555".parse().unwrap(),
            previous_cmid: Uuid::nil(),
            n_policy: 25,
            client_time: FileTime::from_ticks(134_397_882_570_000_000),
            workstation: "client01.example.org".into(),
        }
    }

    #[test]
    fn layout_matches_section_9() {
        let base = sample().encode_base().unwrap();
        assert_eq!(&base[0..4], &[0, 0, 6, 0]);
        assert_eq!(&base[8..16], &[2, 0, 0, 0, 0xc0, 0xa8, 0, 0]);
        assert_eq!(
            hex::encode(&base[48..64]),
            "4f13e258118e174d9cb291069c151148"
        );
        assert_eq!(&base[80..84], &[0x19, 0, 0, 0]);
        assert_eq!(hex::encode(&base[84..92]), "80462681297add01");
        assert_eq!(&base[108..112], &[b'c', 0, b'l', 0]);
        assert!(base[108 + 40..].iter().all(|&b| b == 0));
    }

    #[test]
    fn bytes_after_the_workstation_nul_are_ignored() {
        let mut base = sample().encode_base().unwrap();
        base[200] = 0x55;
        base[235] = 0x41;
        assert_eq!(RequestBody::decode_base(&base, 0).unwrap(), sample());
    }

    #[test]
    fn workstation_limits() {
        let mut b = sample();
        b.workstation = "x".repeat(63);
        let base = b.encode_base().unwrap();
        assert_eq!(RequestBody::decode_base(&base, 0).unwrap(), b);
        b.workstation = "x".repeat(64);
        assert_eq!(b.encode_base(), Err(Error::WorkstationTooLong { len: 64 }));
        b.workstation = "a\0b".into();
        assert_eq!(b.encode_base(), Err(Error::WorkstationNul));
        // 64 units without a NUL on the wire.
        let mut base = sample().encode_base().unwrap();
        base[108..].fill(b'a');
        let err = RequestBody::decode_base(&base, 20).unwrap_err();
        assert_eq!(err.offset(), 128);
        assert_eq!(err.field(), "request.workstation");
    }

    #[test]
    fn truncated_base_reports_field_and_offset() {
        let base = sample().encode_base().unwrap();
        let err = RequestBody::decode_base(&base[..50], 20).unwrap_err();
        assert_eq!(err.field(), "request.kms_id");
        assert_eq!(err.offset(), 68);
    }
}
