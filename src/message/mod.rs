//! KMS messages: the opaque `request` / `response` byte arrays of the
//! `RequestActivation` RPC call (PROTOCOL.md §4–§6).
//!
//! This layer knows nothing about RPC framing, product tables or policy. It
//! turns a [`RequestBody`] into the bytes a client sends and back, and a
//! [`ResponseBody`] into the bytes a host answers with and back, doing the
//! per-version framing and cryptography:
//!
//! | version | request (bytes)                     | response                                               |
//! |---------|-------------------------------------|--------------------------------------------------------|
//! | 4.0     | base ‖ V4-MAC (252)                 | base ‖ V4-MAC                                          |
//! | 5.0     | version ‖ `IV_c` ‖ AES-CBC (260)      | version ‖ `IV_c` ‖ AES-CBC(base ‖ salt ‖ hash ‖ pad)     |
//! | 6.0     | version ‖ `IV_c` ‖ AES-CBC′ (260)     | version ‖ `IV_s` ‖ AES-CBC′(… ‖ `HwId` ‖ `XoredIVs` ‖ HMAC)  |
//!
//! # The two sides
//!
//! A **client** calls [`encode_request`], keeps the returned [`SentRequest`]
//! and hands the host's answer to [`SentRequest::verify_response`], which runs
//! every check of PROTOCOL.md §6.3 that concerns the KMS message.
//!
//! A **host** calls [`decode_request`], looks at
//! [`ReceivedRequest::body`], decides, and answers with
//! [`ReceivedRequest::encode_response`].
//!
//! A dissector without request state can use [`decode_response_unverified`]
//! and [`request_version`].
//!
//! # Randomness
//!
//! Nothing here draws entropy of its own; every random value comes from the
//! caller's [`RandomSource`](crate::RandomSource), in this documented order:
//!
//! * [`encode_request`]: V4 draws nothing; V5 and V6 draw the 16-byte `IV_c`.
//! * [`ReceivedRequest::encode_response`]: V4 draws nothing; V5 draws the
//!   16-byte salt R; V6 draws R (16 bytes), then the response `IV_s` (16 bytes).
//!   Should `IV_s` equal `IV_c`, `IV_s` is drawn once more, and should it still be
//!   equal (a broken source) its bytes are complemented.
//!
//! # No-panic contract
//!
//! No function of this module panics, whatever bytes it is given. Every
//! message has a fixed, small maximum size, so decoding allocates at most a
//! few hundred bytes, independent of the input; encoding appends at most
//! [`MAX_RESPONSE_LEN`] bytes to the caller's buffer.

mod license_status;
mod observed;
mod protection;
mod received;
mod replay;
mod request;
mod response;
mod sent;

#[cfg(test)]
mod exchange_tests;
#[cfg(test)]
mod vector_tests;

use std::fmt;

use crate::wire::DecodeError;

pub use license_status::LicenseStatus;
pub use observed::decode_response_unverified;
pub use protection::request_version;
pub use received::{ReceivedRequest, decode_request};
pub use replay::replay_randomness;
pub use request::RequestBody;
pub use response::{Hwid, ParseHwidError, ResponseBody};
pub use sent::{ResponseWarnings, SentRequest, VerifiedResponse, encode_request};

/// Length of the request base, identical in every version (PROTOCOL.md §4.2).
pub const REQUEST_BASE_LEN: usize = 236;

/// Length of a V4 request: base ‖ MAC (PROTOCOL.md §4.4).
pub const V4_REQUEST_LEN: usize = 252;

/// Length of a V5 request: version ‖ IV ‖ 240 encrypted bytes (PROTOCOL.md §4.5).
pub const V5_REQUEST_LEN: usize = 260;

/// Length of a V6 request: same layout as V5 (PROTOCOL.md §4.6).
pub const V6_REQUEST_LEN: usize = 260;

/// Most UTF-16 code units an ePID may have, without its NUL (`PIDSize` ≤ 128).
pub const MAX_EPID_LEN: usize = 63;

/// Most UTF-16 code units a workstation name may have, without its NUL (the
/// field holds 64 units including the NUL).
pub const MAX_WORKSTATION_LEN: usize = 63;

/// Largest KMS response this module produces: a V6 response with a
/// 63-character ePID (20 + 44 + 128 + 88 + 12 bytes of padding).
pub const MAX_RESPONSE_LEN: usize = 292;

/// Longest KMS response the decoders accept. Longer (than computed) responses
/// are tolerated with a warning, as vlmcs does, up to this limit, which bounds
/// the memory a decoder allocates.
pub const RESPONSE_LIMIT: usize = 1024;

/// A KMS protocol version: `major.minor`, on the wire a u32
/// `major << 16 | minor` (bytes: minor u16, major u16; PROTOCOL.md §4.1).
///
/// ```
/// use kms_activation::Version;
///
/// assert_eq!(Version::from(0x0006_0000), Version::V6);
/// assert_eq!(u32::from(Version::V5), 0x0005_0000);
/// assert_eq!(Version::V4.to_string(), "4.0");
/// ```
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version {
    /// Major version: 4, 5 or 6 for the versions in use.
    pub major: u16,
    /// Minor version: 0 for every version in use.
    pub minor: u16,
}

impl Version {
    /// 4.0: unencrypted, CBC-MAC (Windows Vista / 7 / Server 2008 (R2), Office 2010).
    pub const V4: Self = Self::new(4, 0);
    /// 5.0: AES-128-CBC (Windows 8 / Server 2012).
    pub const V5: Self = Self::new(5, 0);
    /// 6.0: AES-128-CBC with a tweaked key, HMAC (Windows 8.1 and later, Office 2013+).
    pub const V6: Self = Self::new(6, 0);

    /// `major.minor`.
    #[must_use]
    pub const fn new(major: u16, minor: u16) -> Self {
        Self { major, minor }
    }

    /// Whether this is 4.0, 5.0 or 6.0, the versions this crate speaks.
    #[must_use]
    pub const fn is_supported(self) -> bool {
        self.minor == 0 && matches!(self.major, 4..=6)
    }

    /// The length of a request of this version, or `None` if unsupported.
    ///
    /// ```
    /// use kms_activation::Version;
    ///
    /// assert_eq!(Version::V4.request_len(), Some(252));
    /// assert_eq!(Version::V6.request_len(), Some(260));
    /// assert_eq!(Version::new(7, 0).request_len(), None);
    /// ```
    #[must_use]
    pub const fn request_len(self) -> Option<usize> {
        match (self.major, self.minor) {
            (4, 0) => Some(V4_REQUEST_LEN),
            (5, 0) => Some(V5_REQUEST_LEN),
            (6, 0) => Some(V6_REQUEST_LEN),
            _ => None,
        }
    }
}

impl From<u32> for Version {
    fn from(v: u32) -> Self {
        let [lo0, lo1, hi0, hi1] = v.to_le_bytes();
        Self::new(
            u16::from_le_bytes([hi0, hi1]),
            u16::from_le_bytes([lo0, lo1]),
        )
    }
}

impl From<Version> for u32 {
    fn from(v: Version) -> Self {
        (Self::from(v.major) << 16) | Self::from(v.minor)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Why a KMS message could not be encoded, decoded or verified.
///
/// Syntax problems carry a [`DecodeError`] (field and byte offset, counted
/// from the start of the KMS message, or of the decrypted payload for the
/// fields inside it: offsets within an encrypted V5/V6 payload are reported
/// relative to the message start as well, since plaintext and ciphertext line
/// up). Every integrity or echo check has a variant of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes that do not decode (too short, a length out of range, …).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The message's version is not 4.0, 5.0 or 6.0 (host: HRESULT 0x8007000D).
    #[error("unsupported KMS protocol version {major}.{minor}")]
    UnsupportedVersion {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// The encrypted part is empty or not a whole number of 16-byte blocks.
    #[error("encrypted payload of {len} bytes is not a whole number of blocks")]
    CipherTextLength {
        /// Length of the encrypted part.
        len: usize,
    },
    /// After decryption, the PKCS#7 padding is malformed.
    #[error("bad padding after decryption")]
    Padding,
    /// V5: the response IV differs from the request's `IV_c`.
    #[error("response IV differs from the request IV")]
    IvMismatch,
    /// V6: the response's `XoredIVs` field is not `D(IV_c)`.
    #[error("response XoredIVs field does not match the request IV")]
    XoredIvsMismatch,
    /// `PIDSize` is odd, zero or larger than 128 bytes.
    #[error("invalid ePID size {size}")]
    EpidSize {
        /// The `PIDSize` found.
        size: u32,
    },
    /// The ePID does not end with its NUL, or has a NUL before the end.
    #[error("ePID is not NUL-terminated exactly at its end")]
    EpidTerminator,
    /// V5/V6: `SHA-256(RandomXoredIVs ⊕ D(IV_c))` differs from the Hash field.
    #[error("salt hash mismatch")]
    SaltHash,
    /// V4: the CBC-MAC does not match.
    #[error("V4 MAC mismatch")]
    V4Mac,
    /// V6: the HMAC matches none of the accepted time slots.
    #[error("V6 HMAC mismatch")]
    Hmac,
    /// The response does not echo the request's client machine ID.
    #[error("response does not echo the client machine ID")]
    CmidMismatch,
    /// The response does not echo the request's client time bit for bit.
    #[error("response does not echo the client time")]
    ClientTimeMismatch,
    /// The version in clear differs from the version inside the (decrypted)
    /// message.
    #[error("outer version {outer} differs from inner version {inner}")]
    InnerVersionMismatch {
        /// The version in clear at the start of the message.
        outer: Version,
        /// The version inside the base.
        inner: Version,
    },
    /// The response's version differs from the request's.
    #[error("response version {response} differs from request version {request}")]
    ResponseVersionMismatch {
        /// The version of the request.
        request: Version,
        /// The version of the response.
        response: Version,
    },
    /// Encode: the workstation name has more than 63 UTF-16 code units.
    #[error("workstation name of {len} UTF-16 units exceeds 63")]
    WorkstationTooLong {
        /// Its length in UTF-16 code units.
        len: usize,
    },
    /// Encode: the workstation name contains a NUL character.
    #[error("workstation name contains a NUL character")]
    WorkstationNul,
    /// Encode: the ePID has more than 63 UTF-16 code units.
    #[error("ePID of {len} UTF-16 units exceeds 63")]
    EpidTooLong {
        /// Its length in UTF-16 code units.
        len: usize,
    },
    /// Encode: the ePID contains a NUL character.
    #[error("ePID contains a NUL character")]
    EpidNul,
    /// Encode: a V6 response needs a hardware ID.
    #[error("a V6 response needs a hardware ID")]
    HwidMissing,
    /// Encode: V4 and V5 responses carry no hardware ID.
    #[error("a V{major} response carries no hardware ID")]
    HwidUnexpected {
        /// The response's major version.
        major: u16,
    },
}
