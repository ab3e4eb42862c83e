//! Responses read without the request they answer, as a packet-capture
//! dissector sees them; the client's verification starts from the same
//! parse (see [message sizes](crate::message#message-sizes) and
//! [ciphers and keys](crate::message#ciphers-and-keys)).

use super::protection::{CLEAR_LEN, Protection, request_version, truncated, unpad};
use super::response::message_len;
use super::{Error, RESPONSE_LIMIT, ResponseBody};
use crate::crypto::{BLOCK_LEN, Block, Cbc};
use crate::wire::{DecodeError, DecodeErrorKind, Reader};

/// Decodes a KMS response without the request it answers, as a
/// packet-capture dissector must: V5/V6 are decrypted and their padding
/// checked, then the fields are parsed. Nothing that needs the request (IV,
/// hash, MAC, HMAC, echoes) is checked; use [`SentRequest::verify_response`](super::SentRequest::verify_response)
/// for that.
///
/// # Errors
///
/// [`Error::UnsupportedVersion`], [`Error::Decode`],
/// [`Error::CipherTextLength`], [`Error::Padding`],
/// [`Error::InnerVersionMismatch`], [`Error::EpidSize`],
/// [`Error::EpidTerminator`].
///
/// # Example
///
/// ```
/// use kms_activation::message::{decode_response_unverified, Error};
///
/// // A V5 response whose encrypted part is not a whole number of blocks.
/// let msg = [0, 0, 5, 0].iter().chain(&[0u8; 16 + 17]).copied().collect::<Vec<u8>>();
/// assert_eq!(decode_response_unverified(&msg), Err(Error::CipherTextLength { len: 17 }));
/// ```
pub fn decode_response_unverified(msg: &[u8]) -> Result<ResponseBody, Error> {
    open_response(msg).map(|opened| opened.body)
}

/// A parsed response and what its checks need.
pub(super) struct Opened {
    /// The decoded fields.
    pub(super) body: ResponseBody,
    /// The bytes the V4 MAC or the V6 HMAC covers (empty for V5).
    pub(super) signed: Vec<u8>,
    /// The integrity fields after the base.
    pub(super) trailer: Trailer,
    /// The length differs from the one computed from the ePID size.
    pub(super) size_mismatch: bool,
}

/// The integrity fields of a response, by version.
pub(super) enum Trailer {
    /// V4: the CBC-MAC over the base.
    Mac {
        /// The MAC as sent.
        mac: Block,
    },
    /// V5 and V6: the salt and its hash, and the V6 fields.
    Salted {
        /// `RandomXoredIVs` and `Hash`.
        salt: Salt,
        /// V6 only.
        v6: Option<V6Trailer>,
    },
}

/// The salt fields of a V5/V6 response.
pub(super) struct Salt {
    /// `R ⊕ D(IV_c)`.
    pub(super) random_xored_ivs: Block,
    /// `SHA-256(R)`.
    pub(super) hash: [u8; 32],
}

/// The fields only a V6 response has.
pub(super) struct V6Trailer {
    /// `IV_s`, the response IV in clear.
    pub(super) iv: Block,
    /// `XoredIVs`: must equal `D(IV_c)`.
    pub(super) xored_ivs: Block,
    /// The HMAC over `D(IV_s)` and the payload.
    pub(super) hmac: Block,
}

/// Parses a response (decrypting V5/V6 and checking the padding) and keeps
/// what the request-dependent checks of [`SentRequest::verify_response`]
/// need.
///
/// [`SentRequest::verify_response`]: super::SentRequest::verify_response
pub(super) fn open_response(msg: &[u8]) -> Result<Opened, Error> {
    if msg.len() > RESPONSE_LIMIT {
        return Err(Error::Decode(DecodeError::new(
            0,
            "response",
            DecodeErrorKind::TooLarge {
                len: msg.len(),
                max: RESPONSE_LIMIT,
            },
        )));
    }
    let outer = request_version(msg).ok_or_else(|| truncated(0, "response.version", 4, msg))?;
    let protection = Protection::of(outer)?;
    let Protection::Cbc(cbc) = protection else {
        let (body, base_len) = ResponseBody::decode_base(msg, 0)?;
        let mut r = Reader::new(msg);
        r.skip(base_len, "response")?;
        let mac = r.array::<BLOCK_LEN>("response.mac")?;
        return Ok(Opened {
            size_mismatch: msg.len() != message_len(outer, base_len.saturating_sub(44)),
            signed: msg.get(..base_len).unwrap_or_default().to_vec(),
            body,
            trailer: Trailer::Mac { mac },
        });
    };
    let mut r = Reader::new(msg);
    r.skip(4, "response.version")?;
    let iv = r.array::<BLOCK_LEN>("response.iv")?;
    let mut payload = r.take_rest().to_vec();
    if payload.is_empty() || !payload.len().is_multiple_of(BLOCK_LEN) {
        return Err(Error::CipherTextLength { len: payload.len() });
    }
    cbc.decrypt(&iv, &mut payload);
    let plain = unpad(&payload).ok_or(Error::Padding)?;
    let (mut body, base_len) = ResponseBody::decode_base(plain, CLEAR_LEN)?;
    if body.version != outer {
        return Err(Error::InnerVersionMismatch {
            outer,
            inner: body.version,
        });
    }
    let shift = |e: DecodeError| Error::Decode(e.shifted(CLEAR_LEN));
    let mut r = Reader::new(plain);
    r.skip(base_len, "response").map_err(shift)?;
    let salt = Salt {
        random_xored_ivs: r.array("response.random_xored_ivs").map_err(shift)?,
        hash: r.array("response.hash").map_err(shift)?,
    };
    let (v6, signed) = if cbc == Cbc::V6 {
        let hwid = r.array::<8>("response.hwid").map_err(shift)?;
        let xored_ivs = r.array("response.xored_ivs").map_err(shift)?;
        let signed_len = r.offset();
        let hmac = r.array("response.hmac").map_err(shift)?;
        body.hwid = Some(super::Hwid(hwid));
        let mut signed = Vec::with_capacity(BLOCK_LEN + signed_len);
        signed.extend_from_slice(&cbc.decrypt_iv(&iv));
        signed.extend_from_slice(plain.get(..signed_len).unwrap_or_default());
        (
            Some(V6Trailer {
                iv,
                xored_ivs,
                hmac,
            }),
            signed,
        )
    } else {
        (None, Vec::new())
    };
    Ok(Opened {
        size_mismatch: msg.len() != message_len(outer, base_len.saturating_sub(44)),
        body,
        signed,
        trailer: Trailer::Salted { salt, v6 },
    })
}
