//! Recovering the randomness behind a captured exchange, so that a host can
//! reproduce a captured response byte for byte.

use super::{Error, Version, request_version};
use crate::crypto::{BLOCK_LEN, Block, Cbc, xor_block};
use crate::wire::{DecodeError, DecodeErrorKind};

/// Offset of the encrypted payload in a V5/V6 message.
const PAYLOAD_OFFSET: usize = 4 + BLOCK_LEN;
/// Fixed part of the response base before the ePID bytes.
const PID_OFFSET: usize = 8;
/// Fixed part of the response base after the ePID bytes.
const BASE_TAIL: usize = 36;

/// The bytes a host's [`RandomSource`](crate::RandomSource) must yield for
/// [`ReceivedRequest::encode_response`](super::ReceivedRequest::encode_response)
/// to reproduce `response` as the answer to `request`, in draw order: nothing
/// for V4, the salt for V5, the salt then the response IV for V6.
///
/// This is for replaying captured traffic (regression tests, checking that a
/// capture came from a well-behaved host); the salt is recovered by
/// decrypting the response with the public protocol keys.
///
/// ```
/// use bytes::BytesMut;
/// use kms_activation::message::{self, ResponseBody};
/// use kms_activation::{ScriptedRandom, Version};
/// # use kms_activation::{FileTime, LicenseStatus, RequestBody, Uuid, Hwid};
/// # let body = RequestBody { version: Version::V6, vm_info: 0,
/// #     license_status: LicenseStatus::OobGrace, binding_expiration: 0, application_id: Uuid::nil(),
/// #     sku_id: Uuid::nil(), kms_id: Uuid::nil(), cmid: Uuid::nil(), previous_cmid: Uuid::nil(),
/// #     n_policy: 25, client_time: FileTime::from_ticks(1), workstation: "pc".into() };
///
/// let mut request = BytesMut::new();
/// message::encode_request(&body, &mut ScriptedRandom::new([1; 16]), &mut request)?;
/// let received = message::decode_request(&request)?;
/// let answer = ResponseBody::answering(received.body(), "epid", 50, 120, 10080, Some(Hwid([7; 8])));
/// let mut response = BytesMut::new();
/// received.encode_response(&answer, &mut ScriptedRandom::new([9; 32]), &mut response)?;
///
/// let drawn = message::replay_randomness(&request, &response)?;
/// assert_eq!(drawn, [9; 32]);
/// # Ok::<(), message::Error>(())
/// ```
///
/// # Errors
///
/// An unsupported version, or a response too short or not block-aligned.
pub fn replay_randomness(request: &[u8], response: &[u8]) -> Result<Vec<u8>, Error> {
    let version = request_version(request).ok_or(truncated("request.version", 4, request.len()))?;
    let cbc = match (version.major, version.minor) {
        (4, 0) => return Ok(Vec::new()),
        (5, 0) => Cbc::V5,
        (6, 0) => Cbc::V6,
        (major, minor) => return Err(Error::UnsupportedVersion { major, minor }),
    };
    let request_iv = block_at(request, 4, "request.iv")?;
    let response_iv = block_at(response, 4, "response.iv")?;
    let mut plain = response.get(PAYLOAD_OFFSET..).unwrap_or_default().to_vec();
    if plain.is_empty() || plain.len() % BLOCK_LEN != 0 {
        return Err(Error::CipherTextLength { len: plain.len() });
    }
    cbc.decrypt(&response_iv, &mut plain);
    let pid_size = plain
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(truncated("response.pid_size", 8, plain.len()))?;
    let salt_at = PID_OFFSET
        .checked_add(pid_size)
        .and_then(|n| n.checked_add(BASE_TAIL))
        .ok_or(truncated(
            "response.random_xored_ivs",
            usize::MAX,
            plain.len(),
        ))?;
    let xored = block_at(&plain, salt_at, "response.random_xored_ivs")?;
    let salt = xor_block(&xored, &cbc.decrypt_iv(&request_iv));
    let mut drawn = salt.to_vec();
    if version == Version::V6 {
        drawn.extend_from_slice(&response_iv);
    }
    Ok(drawn)
}

fn block_at(bytes: &[u8], at: usize, field: &'static str) -> Result<Block, Error> {
    bytes
        .get(at..at.saturating_add(BLOCK_LEN))
        .and_then(|b| b.try_into().ok())
        .ok_or(truncated(field, at.saturating_add(BLOCK_LEN), bytes.len()))
}

fn truncated(field: &'static str, need: usize, have: usize) -> Error {
    Error::Decode(DecodeError::new(
        0,
        field,
        DecodeErrorKind::Truncated { need, have },
    ))
}
