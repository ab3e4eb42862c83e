//! The [response base](crate::message#response-base) and the V6 hardware ID.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use super::{Error, MAX_EPID_LEN, RequestBody, Version};
use crate::guid;
use crate::time::FileTime;
use crate::wire::Reader;

/// Largest `PIDSize`: 63 UTF-16 code units and the NUL.
const MAX_PID_SIZE: usize = (MAX_EPID_LEN + 1) * 2;

/// Fixed part of the response base: 44 bytes plus `PIDSize`.
pub(crate) const RESPONSE_BASE_FIXED_LEN: usize = 44;

/// A KMS host's hardware ID: 8 opaque bytes, sent only in V6 responses
/// (see [`crate::message`](crate::message#count-intervals-epid-and-hardware-id)).
/// Displayed and parsed as 16 upper-case hex digits in
/// wire order.
///
/// ```
/// use kms_activation::Hwid;
///
/// let id: Hwid = "3A1C049600B60076".parse().unwrap();
/// assert_eq!(id, Hwid([0x3A, 0x1C, 0x04, 0x96, 0x00, 0xB6, 0x00, 0x76]));
/// assert_eq!(id.to_string(), "3A1C049600B60076");
/// assert!("3A1C".parse::<Hwid>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hwid(pub [u8; 8]);

impl fmt::Display for Hwid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

/// A string that is not 16 hex digits, refused by [`Hwid`]'s `FromStr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a hardware ID is 16 hex digits")]
pub struct ParseHwidError;

impl FromStr for Hwid {
    type Err = ParseHwidError;

    /// Parses 16 hex digits (either case) in wire order.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.as_bytes();
        if digits.len() != 16 {
            return Err(ParseHwidError);
        }
        let mut out = [0u8; 8];
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let text = std::str::from_utf8(pair).map_err(|_| ParseHwidError)?;
            if !text.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(ParseHwidError);
            }
            *byte = u8::from_str_radix(text, 16).map_err(|_| ParseHwidError)?;
        }
        Ok(Self(out))
    }
}

/// What a KMS host answers: the [response base](crate::message#response-base)
/// plus the
/// V6 hardware ID.
///
/// ```
/// use kms_activation::{FileTime, Hwid, ResponseBody, Uuid, Version};
///
/// let body = ResponseBody {
///     version: Version::V6,
///     epid: "05426-00206-565-184251-03-1068-9200.0000-1222025".into(),
///     cmid: Uuid::nil(),
///     client_time: FileTime::from_ticks(134_397_882_570_000_000),
///     count: 50,
///     activation_interval: 120,
///     renewal_interval: 10_080,
///     hwid: Some(Hwid([0x3A, 0x1C, 0x04, 0x96, 0x00, 0xB6, 0x00, 0x76])),
/// };
/// assert_eq!(body.message_len(), 260);
/// ```
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseBody {
    /// Protocol version: a copy of the request's.
    pub version: Version,
    /// The host's extended product ID: at most 63 UTF-16 code units, no NUL.
    pub epid: String,
    /// Client machine ID: a copy of the request's.
    pub cmid: Uuid,
    /// Client time: a copy of the request's, bit for bit.
    pub client_time: FileTime,
    /// Current active clients (the "count").
    pub count: u32,
    /// `VLActivationInterval`: minutes between retries while not activated.
    pub activation_interval: u32,
    /// `VLRenewalInterval`: minutes between renewals once activated.
    pub renewal_interval: u32,
    /// The host's hardware ID: `Some` exactly for V6.
    pub hwid: Option<Hwid>,
}

impl ResponseBody {
    /// A response to `request`: version, CMID and client time are copied
    /// from it ([building a response](crate::message#building-a-response)).
    ///
    /// ```
    /// # use kms_activation::{FileTime, LicenseStatus, RequestBody, Uuid, Version};
    /// use kms_activation::{Hwid, ResponseBody};
    /// # let request = RequestBody {
    /// #     version: Version::V6, vm_info: 0, license_status: LicenseStatus::OobGrace,
    /// #     binding_expiration: 0, application_id: Uuid::nil(), sku_id: Uuid::nil(),
    /// #     kms_id: Uuid::nil(), cmid: Uuid::nil(), previous_cmid: Uuid::nil(), n_policy: 25,
    /// #     client_time: FileTime::from_ticks(1), workstation: String::new(),
    /// # };
    /// let answer = ResponseBody::answering(&request, "05426-00206-565-184251-03-1068-9200.0000-1222025",
    ///     50, 120, 10_080, Some(Hwid([0x3A, 0x1C, 0x04, 0x96, 0x00, 0xB6, 0x00, 0x76])));
    /// assert_eq!(answer.client_time, request.client_time);
    /// ```
    #[must_use]
    pub fn answering(
        request: &RequestBody,
        epid: impl Into<String>,
        count: u32,
        activation_interval: u32,
        renewal_interval: u32,
        hwid: Option<Hwid>,
    ) -> Self {
        Self {
            version: request.version,
            epid: epid.into(),
            cmid: request.cmid,
            client_time: request.client_time,
            count,
            activation_interval,
            renewal_interval,
            hwid,
        }
    }

    /// `PIDSize`: bytes of the ePID in UTF-16 with its NUL.
    fn pid_size(&self) -> usize {
        self.epid
            .encode_utf16()
            .count()
            .saturating_add(1)
            .saturating_mul(2)
    }

    /// Length of the `ResponseBase`: 44 + `PIDSize`.
    #[cfg(test)]
    fn base_len(&self) -> usize {
        RESPONSE_BASE_FIXED_LEN.saturating_add(self.pid_size())
    }

    /// Length of the complete KMS response message for this body's version
    /// ([message sizes](crate::message#message-sizes)): V4 60 + P; V5/V6
    /// 20 + U + PKCS#7 pad. Versions
    /// other than 4.x and 5.x are computed as V6.
    #[must_use]
    pub fn message_len(&self) -> usize {
        message_len(self.version, self.pid_size())
    }

    /// Writes the `ResponseBase`.
    ///
    /// # Errors
    ///
    /// [`Error::EpidTooLong`] or [`Error::EpidNul`].
    pub(crate) fn encode_base(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        if self.epid.contains('\0') {
            return Err(Error::EpidNul);
        }
        let len = self.epid.encode_utf16().count();
        if len > MAX_EPID_LEN {
            return Err(Error::EpidTooLong { len });
        }
        let pid_size = u32::try_from(self.pid_size()).map_err(|_| Error::EpidTooLong { len })?;
        out.extend_from_slice(&u32::from(self.version).to_le_bytes());
        out.extend_from_slice(&pid_size.to_le_bytes());
        for unit in self.epid.encode_utf16().chain(std::iter::once(0)) {
            out.extend_from_slice(&unit.to_le_bytes());
        }
        out.extend_from_slice(&guid::to_wire(&self.cmid));
        out.extend_from_slice(&self.client_time.ticks().to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.activation_interval.to_le_bytes());
        out.extend_from_slice(&self.renewal_interval.to_le_bytes());
        Ok(())
    }

    /// Reads a `ResponseBase` from the start of `bytes` (more may follow) and
    /// returns it, with `hwid: None`, and its length. Error offsets are shifted
    /// by `offset`, the position of `bytes` in the KMS message.
    ///
    /// The ePID is decoded lossily (unpaired surrogates become U+FFFD).
    pub(crate) fn decode_base(bytes: &[u8], offset: usize) -> Result<(Self, usize), Error> {
        let shift = |e: crate::wire::DecodeError| Error::Decode(e.shifted(offset));
        let mut r = Reader::new(bytes);
        let version = Version::from(r.u32("response.version").map_err(shift)?);
        let pid_size = r.u32("response.pid_size").map_err(shift)?;
        let size = usize::try_from(pid_size).unwrap_or(usize::MAX);
        if size == 0 || size % 2 != 0 || size > MAX_PID_SIZE {
            return Err(Error::EpidSize { size: pid_size });
        }
        let raw = r.take(size, "response.epid").map_err(shift)?;
        let mut units: Vec<u16> = raw
            .chunks_exact(2)
            .map(|c| <[u8; 2]>::try_from(c).map_or(0, u16::from_le_bytes))
            .collect();
        if units.pop() != Some(0) || units.contains(&0) {
            return Err(Error::EpidTerminator);
        }
        let cmid = r.guid("response.cmid").map_err(shift)?;
        let client_time = FileTime::from_ticks(r.u64("response.client_time").map_err(shift)?);
        let count = r.u32("response.count").map_err(shift)?;
        let activation_interval = r.u32("response.activation_interval").map_err(shift)?;
        let renewal_interval = r.u32("response.renewal_interval").map_err(shift)?;
        let body = Self {
            version,
            epid: String::from_utf16_lossy(&units),
            cmid,
            client_time,
            count,
            activation_interval,
            renewal_interval,
            hwid: None,
        };
        Ok((body, r.offset()))
    }
}

/// Length of a response message of `version` whose `PIDSize` is `pid_size`.
pub(crate) fn message_len(version: Version, pid_size: usize) -> usize {
    let base = RESPONSE_BASE_FIXED_LEN.saturating_add(pid_size);
    match version.major {
        0..=4 => base.saturating_add(16),
        major => {
            let extra = if major == 5 { 48 } else { 88 };
            let u = base.saturating_add(extra);
            20_usize.saturating_add(u).saturating_add(16 - u % 16)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ResponseBody {
        ResponseBody {
            version: Version::V5,
            epid: "05426-00206-565-184251-03-1068-9200.0000-1222025".into(),
            cmid: "44444444-2222-3333-4444-555555555555".parse().unwrap(),
            client_time: FileTime::from_ticks(134_397_882_590_000_000),
            count: 50,
            activation_interval: 120,
            renewal_interval: 10_080,
            hwid: None,
        }
    }

    #[test]
    fn sizes_of_section_4_7() {
        let mut b = sample();
        assert_eq!(b.base_len(), 142);
        assert_eq!(b.message_len(), 212);
        b.version = Version::V4;
        assert_eq!(b.message_len(), 158);
        b.version = Version::V6;
        assert_eq!(b.message_len(), 260);
        b.epid = "x".repeat(63);
        assert_eq!(b.message_len(), super::super::MAX_RESPONSE_LEN);
    }

    #[test]
    fn base_round_trip_and_pid_checks() {
        let mut out = Vec::new();
        sample().encode_base(&mut out).unwrap();
        assert_eq!(out.len(), 142);
        assert_eq!(&out[4..8], &[98, 0, 0, 0]);
        let (body, len) = ResponseBody::decode_base(&out, 20).unwrap();
        assert_eq!((body, len), (sample(), 142));

        let mut odd = out.clone();
        odd[4] = 97;
        assert_eq!(
            ResponseBody::decode_base(&odd, 0),
            Err(Error::EpidSize { size: 97 })
        );
        let mut big = out.clone();
        big[4..8].copy_from_slice(&130u32.to_le_bytes());
        assert_eq!(
            ResponseBody::decode_base(&big, 0),
            Err(Error::EpidSize { size: 130 })
        );
        let mut no_nul = out.clone();
        no_nul[8 + 96] = b'x';
        assert_eq!(
            ResponseBody::decode_base(&no_nul, 0),
            Err(Error::EpidTerminator)
        );
        let mut early_nul = out.clone();
        early_nul[8] = 0;
        assert_eq!(
            ResponseBody::decode_base(&early_nul, 0),
            Err(Error::EpidTerminator)
        );
        let err = ResponseBody::decode_base(&out[..120], 20).unwrap_err();
        let Error::Decode(e) = err else {
            panic!("{err:?}")
        };
        assert_eq!((e.field(), e.offset()), ("response.cmid", 126));
    }

    #[test]
    fn epid_limits() {
        let mut b = sample();
        b.epid = "x".repeat(64);
        assert_eq!(
            b.encode_base(&mut Vec::new()),
            Err(Error::EpidTooLong { len: 64 })
        );
        b.epid = "a\0".into();
        assert_eq!(b.encode_base(&mut Vec::new()), Err(Error::EpidNul));
    }

    #[test]
    fn hwid_text() {
        assert!("3a1c049600b60076".parse::<Hwid>().is_ok());
        assert!("+A1C049600B60076".parse::<Hwid>().is_err());
        assert!("3A1C049600B6007".parse::<Hwid>().is_err());
        assert!("3A1C049600B600éé".parse::<Hwid>().is_err());
    }
}
