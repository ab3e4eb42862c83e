//! The host's side of a KMS exchange: decoding a request and encoding the
//! response to it (see [what a host checks](crate::message#what-a-host-checks)
//! and [building a response](crate::message#building-a-response)).

use bytes::BytesMut;

use super::protection::{
    CLEAR_LEN, Protection, RequestIv, block_at, pad, request_version, truncated, unpad,
};
use super::{Error, REQUEST_BASE_LEN, RequestBody, ResponseBody, V4_REQUEST_LEN, Version};
use crate::crypto::{self, BLOCK_LEN, Block, Cbc};
use crate::random::RandomSource;

/// Decodes a KMS request as a host receives it (steps 1 and 2 of
/// [what a host checks](crate::message#what-a-host-checks)).
///
/// Checks, in order: at least 4 bytes; version 4.0, 5.0 or 6.0; at least 252
/// (V4) or 260 (V5/V6) bytes; for V5/V6, decryption and padding, and that the
/// version inside the base equals the version in clear. Bytes after the first
/// 252/260 are ignored (vlmcsd only checks a minimum size); their number is
/// [`ReceivedRequest::extra_len`]. In the workstation field, bytes after the
/// NUL are ignored.
///
/// The V4 MAC is verified but a mismatch is not an error here: vlmcsd does not
/// verify it, while genuine clients always send a correct one. Ask
/// [`ReceivedRequest::mac_ok`] and decide.
///
/// # Errors
///
/// [`Error::UnsupportedVersion`] (HRESULT 0x8007000D on the wire),
/// [`Error::Decode`] when too short, [`Error::Padding`],
/// [`Error::InnerVersionMismatch`].
///
/// # Example
///
/// ```
/// use kms_activation::message::{decode_request, Error};
///
/// // A "7.0" request is refused before anything is decrypted.
/// let mut msg = vec![0u8; 260];
/// msg[..4].copy_from_slice(&[0, 0, 7, 0]);
/// assert_eq!(decode_request(&msg).unwrap_err(), Error::UnsupportedVersion { major: 7, minor: 0 });
/// ```
pub fn decode_request(msg: &[u8]) -> Result<ReceivedRequest, Error> {
    let version = request_version(msg).ok_or_else(|| truncated(0, "request.version", 4, msg))?;
    let protection = Protection::of(version)?;
    let need = version.request_len().unwrap_or(V4_REQUEST_LEN);
    let Some((msg, extra)) = msg.split_at_checked(need) else {
        return Err(truncated(0, "request", need, msg));
    };
    match protection {
        Protection::Mac => {
            let (base, mac) = msg.split_at_checked(REQUEST_BASE_LEN).unwrap_or_default();
            let body = RequestBody::decode_base(base, 0)?;
            Ok(ReceivedRequest {
                mac_ok: crypto::v4_mac(base) == mac,
                body,
                iv: None,
                extra_len: extra.len(),
            })
        }
        Protection::Cbc(cbc) => {
            let iv = block_at(msg, 4);
            let mut payload = msg.get(CLEAR_LEN..).unwrap_or_default().to_vec();
            cbc.decrypt(&iv, &mut payload);
            let plain = unpad(&payload).ok_or(Error::Padding)?;
            let body = RequestBody::decode_base(plain, CLEAR_LEN)?;
            if body.version != version {
                return Err(Error::InnerVersionMismatch {
                    outer: version,
                    inner: body.version,
                });
            }
            Ok(ReceivedRequest {
                body,
                iv: Some(RequestIv::new(cbc, iv)),
                mac_ok: true,
                extra_len: extra.len(),
            })
        }
    }
}

/// A request a host has decoded, ready to be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    body: RequestBody,
    iv: Option<RequestIv>,
    mac_ok: bool,
    extra_len: usize,
}

impl ReceivedRequest {
    /// The decoded request.
    #[must_use]
    pub const fn body(&self) -> &RequestBody {
        &self.body
    }

    /// The request's version.
    #[must_use]
    pub const fn version(&self) -> Version {
        self.body.version
    }

    /// V4: whether the request's MAC is correct. Always `true` for V5 and V6,
    /// whose integrity rests on the padding check alone.
    #[must_use]
    pub const fn mac_ok(&self) -> bool {
        self.mac_ok
    }

    /// How many bytes followed the 252/260 bytes of the request (normally 0).
    #[must_use]
    pub const fn extra_len(&self) -> usize {
        self.extra_len
    }

    /// Encodes the complete KMS response to this request and appends it to
    /// `out` ([building a response](crate::message#building-a-response)).
    ///
    /// Randomness drawn from `rng`, in order: V4 nothing; V5 the 16-byte salt
    /// R; V6 R (16 bytes), then the response `IV_s` (16 bytes), with
    /// P0 = `D(IV_s)`. Should `IV_s` equal `IV_c` it is drawn once more, and should
    /// it still be equal its bytes are complemented.
    ///
    /// The CMID and client time are written as given: build `response` with
    /// [`ResponseBody::answering`] to copy them from the request.
    ///
    /// # Errors
    ///
    /// [`Error::ResponseVersionMismatch`] if `response.version` is not the
    /// request's; [`Error::HwidMissing`] for V6 without a hardware ID,
    /// [`Error::HwidUnexpected`] for V4/V5 with one; [`Error::EpidTooLong`],
    /// [`Error::EpidNul`]. Nothing is appended to `out` on error.
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use kms_activation::message::{decode_response_unverified, encode_request, decode_request};
    /// use kms_activation::{FileTime, LicenseStatus, RequestBody, ResponseBody, ScriptedRandom, Uuid, Version};
    ///
    /// # let body = RequestBody {
    /// #     version: Version::V5, vm_info: 0, license_status: LicenseStatus::OobGrace,
    /// #     binding_expiration: 43_200, application_id: Uuid::nil(), sku_id: Uuid::nil(),
    /// #     kms_id: Uuid::nil(), cmid: Uuid::from_u128(7), previous_cmid: Uuid::nil(),
    /// #     n_policy: 25, client_time: FileTime::from_ticks(134_397_882_570_000_000),
    /// #     workstation: "pc".into(),
    /// # };
    /// # let mut wire = BytesMut::new();
    /// # encode_request(&body, &mut ScriptedRandom::new([1; 16]), &mut wire)?;
    /// let received = decode_request(&wire)?;
    /// let answer = ResponseBody::answering(received.body(), "05426-00206-565-184251-03-1068-9200.0000-1222025",
    ///     50, 120, 10_080, None);
    /// let mut reply = BytesMut::new();
    /// received.encode_response(&answer, &mut ScriptedRandom::new([2; 16]), &mut reply)?;
    /// assert_eq!(reply.len(), 212);
    /// assert_eq!(decode_response_unverified(&reply)?, answer);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encode_response(
        &self,
        response: &ResponseBody,
        rng: &mut dyn RandomSource,
        out: &mut BytesMut,
    ) -> Result<(), Error> {
        if response.version != self.body.version {
            return Err(Error::ResponseVersionMismatch {
                request: self.body.version,
                response: response.version,
            });
        }
        let protection = Protection::of(response.version)?;
        let hwid = match (protection, response.hwid) {
            (Protection::Cbc(Cbc::V6), Some(hwid)) => Some(hwid),
            (Protection::Cbc(Cbc::V6), None) => return Err(Error::HwidMissing),
            (_, Some(_)) => {
                return Err(Error::HwidUnexpected {
                    major: response.version.major,
                });
            }
            (_, None) => None,
        };
        let mut payload = Vec::with_capacity(super::MAX_RESPONSE_LEN);
        response.encode_base(&mut payload)?;
        let (Protection::Cbc(cbc), Some(req)) = (protection, &self.iv) else {
            // V4 (a V4 request has no IV).
            let mac = crypto::v4_mac(&payload);
            out.reserve(payload.len() + BLOCK_LEN);
            out.extend_from_slice(&payload);
            out.extend_from_slice(&mac);
            return Ok(());
        };
        let mut salt = [0u8; BLOCK_LEN];
        rng.fill_bytes(&mut salt);
        payload.extend_from_slice(&crypto::xor_block(&salt, &req.decrypted));
        payload.extend_from_slice(&crypto::salt_hash(&salt));
        let iv = match hwid {
            None => req.iv,
            Some(hwid) => {
                let iv_s = draw_response_iv(rng, &req.iv);
                payload.extend_from_slice(&hwid.0);
                payload.extend_from_slice(&req.decrypted);
                let mut signed = Vec::with_capacity(BLOCK_LEN + payload.len());
                signed.extend_from_slice(&cbc.decrypt_iv(&iv_s));
                signed.extend_from_slice(&payload);
                payload.extend_from_slice(&crypto::v6_hmac(response.client_time.ticks(), &signed));
                iv_s
            }
        };
        pad(&mut payload);
        cbc.encrypt(&iv, &mut payload);
        out.reserve(CLEAR_LEN + payload.len());
        out.extend_from_slice(&u32::from(response.version).to_le_bytes());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&payload);
        Ok(())
    }
}

/// Draws `IV_s` ≠ `IV_c`: once, once more if equal, then complements.
fn draw_response_iv(rng: &mut dyn RandomSource, iv_c: &Block) -> Block {
    let mut iv = [0u8; BLOCK_LEN];
    rng.fill_bytes(&mut iv);
    if iv == *iv_c {
        rng.fill_bytes(&mut iv);
    }
    if iv == *iv_c {
        for b in &mut iv {
            *b = !*b;
        }
    }
    iv
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::message::exchange_tests::{answer, encode, sample_body};
    use crate::message::{Hwid, V5_REQUEST_LEN};
    use crate::random::ScriptedRandom;
    use crate::wire::DecodeErrorKind;

    #[test]
    fn response_iv_redraw_rules() {
        let iv_c = [9u8; 16];
        let mut rng = ScriptedRandom::new([[9u8; 16], [3u8; 16]].concat());
        assert_eq!(draw_response_iv(&mut rng, &iv_c), [3; 16]);
        let mut rng = ScriptedRandom::new([9u8; 32]);
        assert_eq!(draw_response_iv(&mut rng, &iv_c), [!9; 16]);
        let mut rng = ScriptedRandom::new([1u8; 16]);
        assert_eq!(draw_response_iv(&mut rng, &iv_c), [1; 16]);
        assert_eq!(rng.remaining(), 0);
    }

    #[test]
    fn request_size_version_and_extra_bytes() {
        assert!(matches!(
            decode_request(&[0, 0, 6]),
            Err(Error::Decode(e)) if e.field() == "request.version"
        ));
        for (major, minor) in [(3, 0), (6, 1), (7, 0)] {
            let mut msg = vec![0u8; 260];
            msg[..4].copy_from_slice(&u32::from(Version::new(major, minor)).to_le_bytes());
            assert_eq!(
                decode_request(&msg).unwrap_err(),
                Error::UnsupportedVersion { major, minor }
            );
        }
        let (_, mut out) = encode(&sample_body(), [5; 16]);
        assert!(matches!(
            decode_request(&out[..259]),
            Err(Error::Decode(e)) if e.kind() == DecodeErrorKind::Truncated { need: 260, have: 259 }
        ));
        out.extend_from_slice(&[0xAA; 7]);
        let received = decode_request(&out).unwrap();
        assert_eq!(received.extra_len(), 7);
        assert_eq!(received.body(), &sample_body());
    }

    #[test]
    fn v4_mac_mismatch_is_reported_not_fatal() {
        let body = RequestBody {
            version: Version::V4,
            ..sample_body()
        };
        let (_, mut out) = encode(&body, [0; 16]);
        assert_eq!(out.len(), V4_REQUEST_LEN);
        out[251] ^= 1;
        let received = decode_request(&out).unwrap();
        assert!(!received.mac_ok());
        assert_eq!(received.body(), &body);
    }

    #[test]
    fn v5_v6_request_padding_and_inner_version() {
        let (_, out) = encode(&sample_body(), [5; 16]);
        assert_eq!(out.len(), V5_REQUEST_LEN);
        // Flip a bit in the last plaintext byte (the padding) via the
        // previous ciphertext block.
        let mut bad = out.to_vec();
        bad[259 - 16] ^= 1;
        assert_eq!(decode_request(&bad).unwrap_err(), Error::Padding);
        // Outer 5.0 on a V5 payload that says 6.0 inside: re-encrypt.
        let body = RequestBody {
            version: Version::V5,
            ..sample_body()
        };
        let mut base = RequestBody {
            version: Version::V6,
            ..body.clone()
        }
        .encode_base()
        .unwrap()
        .to_vec();
        pad(&mut base);
        Cbc::V5.encrypt(&[5; 16], &mut base);
        let mut msg = vec![0, 0, 5, 0];
        msg.extend_from_slice(&[5; 16]);
        msg.extend_from_slice(&base);
        assert_eq!(
            decode_request(&msg).unwrap_err(),
            Error::InnerVersionMismatch {
                outer: Version::V5,
                inner: Version::V6
            }
        );
    }

    #[test]
    fn response_encode_errors() {
        for version in [Version::V4, Version::V5, Version::V6] {
            let (_, wire) = encode(
                &RequestBody {
                    version,
                    ..sample_body()
                },
                [1; 16],
            );
            let received = decode_request(&wire).unwrap();
            let good = answer(&received, "epid");
            let mut wrong_hwid = good.clone();
            wrong_hwid.hwid = if version == Version::V6 {
                None
            } else {
                Some(Hwid::default())
            };
            let expected = if version == Version::V6 {
                Error::HwidMissing
            } else {
                Error::HwidUnexpected {
                    major: version.major,
                }
            };
            let mut reply = BytesMut::new();
            let rng = &mut ScriptedRandom::default();
            assert_eq!(
                received.encode_response(&wrong_hwid, rng, &mut reply),
                Err(expected)
            );
            let other = Version::new(if version == Version::V4 { 5 } else { 4 }, 0);
            let wrong_version = ResponseBody {
                version: other,
                ..good.clone()
            };
            assert_eq!(
                received.encode_response(&wrong_version, rng, &mut reply),
                Err(Error::ResponseVersionMismatch {
                    request: version,
                    response: other
                })
            );
            let long = ResponseBody {
                epid: "x".repeat(64),
                ..good.clone()
            };
            assert_eq!(
                received.encode_response(&long, rng, &mut reply),
                Err(Error::EpidTooLong { len: 64 })
            );
            assert!(reply.is_empty());
        }
    }
}
