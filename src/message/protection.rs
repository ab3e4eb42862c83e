//! What requests and responses share: how each version protects a message
//! (V4 CBC-MAC, V5/V6 AES-CBC), the request IV state, PKCS#7 padding and
//! the version in clear (see [ciphers and keys](crate::message#ciphers-and-keys)
//! and the V4, V5 and V6 framing sections of [`crate::message`]).

use super::{Error, Version};
use crate::crypto::{BLOCK_LEN, Block, Cbc};
use crate::wire::{DecodeError, DecodeErrorKind};

/// Bytes in clear before a V5/V6 payload: version (4) and IV (16).
pub(super) const CLEAR_LEN: usize = 4 + BLOCK_LEN;

/// How a message of a given version is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protection {
    /// V4: a CBC-MAC trailer.
    Mac,
    /// V5 or V6: CBC encryption.
    Cbc(Cbc),
}

impl Protection {
    /// The protection of a supported version, or `UnsupportedVersion`.
    pub(super) const fn of(version: Version) -> Result<Self, Error> {
        match (version.major, version.minor) {
            (4, 0) => Ok(Self::Mac),
            (5, 0) => Ok(Self::Cbc(Cbc::V5)),
            (6, 0) => Ok(Self::Cbc(Cbc::V6)),
            (major, minor) => Err(Error::UnsupportedVersion { major, minor }),
        }
    }

    /// The protection a sender applies: as [`Protection::of`], plus the V6
    /// cipher for any version above 6.0 and the V5 cipher for 5.x, as the
    /// reference client does, so that hosts can be probed with versions
    /// they must refuse (step 1 of
    /// [what a host checks](crate::message#what-a-host-checks)).
    pub(super) const fn for_sending(version: Version) -> Result<Self, Error> {
        match (version.major, version.minor) {
            (4, 0) => Ok(Self::Mac),
            (5, _) => Ok(Self::Cbc(Cbc::V5)),
            (6.., _) => Ok(Self::Cbc(Cbc::V6)),
            (major, minor) => Err(Error::UnsupportedVersion { major, minor }),
        }
    }
}

/// The IV state of an encrypted request: `IV_c` and `D(IV_c)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RequestIv {
    /// The cipher of the request's version.
    pub(super) cbc: Cbc,
    /// `IV_c`, sent in clear.
    pub(super) iv: Block,
    /// `D(IV_c)`: `IV_c` decrypted with the version's key.
    pub(super) decrypted: Block,
}

impl RequestIv {
    pub(super) fn new(cbc: Cbc, iv: Block) -> Self {
        Self {
            cbc,
            iv,
            decrypted: cbc.decrypt_iv(&iv),
        }
    }
}

/// Reads the plaintext version at the start of a KMS message (request or
/// response, any version), or `None` if it has fewer than 4 bytes.
///
/// ```
/// use kms_activation::{message::request_version, Version};
///
/// assert_eq!(request_version(&[0, 0, 6, 0, 0xff]), Some(Version::V6));
/// assert_eq!(request_version(&[0, 0, 6]), None);
/// ```
#[must_use]
pub fn request_version(msg: &[u8]) -> Option<Version> {
    let bytes: [u8; 4] = msg.get(..4)?.try_into().ok()?;
    Some(Version::from(u32::from_le_bytes(bytes)))
}

/// Appends PKCS#7 padding: 1 to 16 bytes, each the count.
pub(super) fn pad(data: &mut Vec<u8>) {
    let count = BLOCK_LEN - data.len() % BLOCK_LEN;
    // count is 1..=16, so it fits a byte.
    let byte = u8::try_from(count).unwrap_or(16);
    data.resize(data.len() + count, byte);
}

/// Strips PKCS#7 padding, or `None` if it is malformed (last byte 0 or > 16,
/// longer than the data, or unequal pad bytes).
pub(super) fn unpad(data: &[u8]) -> Option<&[u8]> {
    let &last = data.last()?;
    let count = usize::from(last);
    if count == 0 || count > BLOCK_LEN {
        return None;
    }
    let (plain, padding) = data.split_at_checked(data.len().checked_sub(count)?)?;
    padding.iter().all(|&b| b == last).then_some(plain)
}

/// The 16 bytes at `offset`, zeros where `msg` is too short (callers check
/// the length first).
pub(super) fn block_at(msg: &[u8], offset: usize) -> Block {
    let mut out = [0u8; BLOCK_LEN];
    for (dst, src) in out.iter_mut().zip(msg.iter().skip(offset)) {
        *dst = *src;
    }
    out
}

/// A [`DecodeErrorKind::Truncated`] error: `field` at `offset` needs `need`
/// bytes of `have`.
pub(super) fn truncated(offset: usize, field: &'static str, need: usize, have: &[u8]) -> Error {
    Error::Decode(DecodeError::new(
        offset,
        field,
        DecodeErrorKind::Truncated {
            need,
            have: have.len(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padding_cases() -> Vec<(Vec<u8>, Option<usize>)> {
        vec![
            (vec![], None),
            (vec![1, 2, 3, 0], None),
            (vec![17; 32], None),
            (vec![5, 3, 3, 3], Some(1)),
            (vec![5, 2, 3, 3], None),
            (vec![4, 4, 4], None),
            (vec![16; 16], Some(0)),
        ]
    }

    #[test]
    fn unpad_rules() {
        for (data, expected) in padding_cases() {
            assert_eq!(unpad(&data).map(<[u8]>::len), expected, "{data:?}");
        }
        let mut v = vec![0u8; 236];
        pad(&mut v);
        assert_eq!(&v[236..], &[4, 4, 4, 4]);
        let mut v = vec![0u8; 32];
        pad(&mut v);
        assert_eq!(v.len(), 48);
    }
}
