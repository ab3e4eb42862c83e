//! The client's side of a KMS exchange: encoding a request and verifying
//! the host's response against it (see
//! [what a client verifies](crate::message#what-a-client-verifies)).

use bytes::BytesMut;
use uuid::Uuid;

use super::observed::{Trailer, open_response};
use super::protection::{CLEAR_LEN, Protection, RequestIv, pad, request_version, truncated};
use super::{Error, REQUEST_BASE_LEN, RequestBody, ResponseBody, V4_REQUEST_LEN, Version};
use crate::crypto::{self, BLOCK_LEN, Cbc};
use crate::random::RandomSource;
use crate::time::FileTime;

/// Encodes a complete KMS request and appends it to `out`: 252 bytes for V4,
/// 260 bytes for V5 and V6 ([message sizes](crate::message#message-sizes)).
///
/// V5 and V6 draw the 16-byte `IV_c` from `rng`; V4 draws nothing. The
/// returned [`SentRequest`] remembers what is needed to verify the answer.
///
/// # Errors
///
/// [`Error::UnsupportedVersion`] for a version below 4.0 or a 4.x other than
/// 4.0. Versions above 6.0 are encoded with the V6 cipher (and 5.x with the
/// V5 cipher), as the reference client does, so that a host's refusal
/// ([`HResult::INVALID_DATA`](crate::HResult::INVALID_DATA)) can be probed;
/// [`decode_request`](super::decode_request) accepts only 4.0, 5.0 and 6.0;
/// [`Error::WorkstationTooLong`] or [`Error::WorkstationNul`] for a bad
/// workstation name. Nothing is appended to `out` on error.
///
/// # Example
///
/// ```
/// use bytes::BytesMut;
/// use kms_activation::message::{decode_request, encode_request};
/// use kms_activation::{FileTime, LicenseStatus, RequestBody, ScriptedRandom, Uuid, Version};
///
/// let body = RequestBody {
///     version: Version::V6,
///     vm_info: 0,
///     license_status: LicenseStatus::OobGrace,
///     binding_expiration: 43_200,
///     application_id: "55c92734-d682-4d71-983e-d6ec3f16059f".parse()?,
///     sku_id: "73111121-5638-40f6-bc11-f1d7b0d64300".parse()?,
///     kms_id: "58e2134f-8e11-4d17-9cb2-91069c151148".parse()?,
///     cmid: "11111111-2222-3333-4444-555555555555".parse()?,
///     previous_cmid: Uuid::nil(),
///     n_policy: 25,
///     client_time: FileTime::from_ticks(134_397_882_570_000_000),
///     workstation: "client01.example.org".into(),
/// };
/// let mut rng = ScriptedRandom::new([0x42; 16]); // `IV_c`; use an OS source in real code
/// let mut out = BytesMut::new();
/// let sent = encode_request(&body, &mut rng, &mut out)?;
/// assert_eq!(out.len(), 260);
/// assert_eq!(sent.version(), Version::V6);
/// assert_eq!(decode_request(&out)?.body(), &body);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode_request(
    body: &RequestBody,
    rng: &mut dyn RandomSource,
    out: &mut BytesMut,
) -> Result<SentRequest, Error> {
    let protection = Protection::for_sending(body.version)?;
    let base = body.encode_base()?;
    let iv = match protection {
        Protection::Mac => {
            out.reserve(V4_REQUEST_LEN);
            out.extend_from_slice(&base);
            out.extend_from_slice(&crypto::v4_mac(&base));
            None
        }
        Protection::Cbc(cbc) => {
            let mut iv = [0u8; BLOCK_LEN];
            rng.fill_bytes(&mut iv);
            let mut payload = Vec::with_capacity(REQUEST_BASE_LEN + 4);
            payload.extend_from_slice(&base);
            pad(&mut payload);
            cbc.encrypt(&iv, &mut payload);
            out.reserve(CLEAR_LEN + payload.len());
            out.extend_from_slice(&u32::from(body.version).to_le_bytes());
            out.extend_from_slice(&iv);
            out.extend_from_slice(&payload);
            Some(RequestIv::new(cbc, iv))
        }
    };
    Ok(SentRequest {
        version: body.version,
        iv,
        cmid: body.cmid,
        client_time: body.client_time,
    })
}

/// A request a client has sent: what it needs to check the host's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRequest {
    version: Version,
    iv: Option<RequestIv>,
    cmid: Uuid,
    client_time: FileTime,
}

/// A response that passed every check of [`SentRequest::verify_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedResponse {
    /// The decoded response.
    pub body: ResponseBody,
    /// Oddities that vlmcs reports as warnings, not errors.
    pub warnings: ResponseWarnings,
}

/// Non-fatal oddities of a verified response (see
/// [what a client verifies](crate::message#what-a-client-verifies)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ResponseWarnings {
    /// The message length differs from the length computed from its ePID
    /// size ([message sizes](crate::message#message-sizes)).
    pub size_mismatch: bool,
    /// V6: the response IV equals the request IV, a hint that the host is an
    /// emulator that reuses `IV_c`.
    pub iv_reused: bool,
}

impl ResponseWarnings {
    /// Whether there is nothing to warn about.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        !self.size_mismatch && !self.iv_reused
    }
}

impl SentRequest {
    /// The version the request was sent with.
    #[must_use]
    pub const fn version(&self) -> Version {
        self.version
    }

    /// Decodes the host's KMS response to this request and runs every check
    /// a client makes on the KMS message
    /// ([list](crate::message#what-a-client-verifies)), in this order:
    /// version in clear, IV (V5), padding, ePID size and terminator, inner
    /// version, `XoredIVs` (V6), V4 MAC or salt hash, CMID echo, client time
    /// echo, HMAC (V6; the time-slot values T, T + C1 and T − C1 are
    /// accepted, as vlmcs does). A length that differs from the computed one
    /// and, in V6, a response IV equal to the request IV are only warnings.
    ///
    /// It does not compare the count with the N policy: that is the caller's
    /// decision (0xC004F038).
    ///
    /// # Errors
    ///
    /// A distinct [`Error`] variant for each failed check; [`Error::Decode`]
    /// for a message too short for its fields.
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use kms_activation::message::{decode_request, encode_request};
    /// use kms_activation::{FileTime, Hwid, LicenseStatus, RequestBody, ResponseBody, ScriptedRandom, Uuid, Version};
    ///
    /// # let body = RequestBody {
    /// #     version: Version::V6, vm_info: 0, license_status: LicenseStatus::OobGrace,
    /// #     binding_expiration: 43_200, application_id: Uuid::nil(), sku_id: Uuid::nil(),
    /// #     kms_id: Uuid::nil(), cmid: Uuid::from_u128(7), previous_cmid: Uuid::nil(),
    /// #     n_policy: 25, client_time: FileTime::from_ticks(134_397_882_570_000_000),
    /// #     workstation: "pc".into(),
    /// # };
    /// // Client
    /// let mut wire = BytesMut::new();
    /// let sent = encode_request(&body, &mut ScriptedRandom::new([1; 16]), &mut wire)?;
    /// // Host
    /// let received = decode_request(&wire)?;
    /// let answer = ResponseBody::answering(received.body(), "05426-00206-565-184251-03-1068-9200.0000-1222025",
    ///     50, 120, 10_080, Some(Hwid([0x3A, 0x1C, 0x04, 0x96, 0x00, 0xB6, 0x00, 0x76])));
    /// let mut reply = BytesMut::new();
    /// received.encode_response(&answer, &mut ScriptedRandom::new([2; 32]), &mut reply)?;
    /// // Client again
    /// let verified = sent.verify_response(&reply)?;
    /// assert_eq!(verified.body, answer);
    /// assert!(verified.warnings.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn verify_response(&self, msg: &[u8]) -> Result<VerifiedResponse, Error> {
        let outer = request_version(msg).ok_or_else(|| truncated(0, "response.version", 4, msg))?;
        if outer != self.version {
            return Err(Error::ResponseVersionMismatch {
                request: self.version,
                response: outer,
            });
        }
        if let (Some(req), Protection::Cbc(Cbc::V5)) = (&self.iv, Protection::of(outer)?) {
            let iv = msg.get(4..CLEAR_LEN).unwrap_or_default();
            if iv.len() == BLOCK_LEN && iv != req.iv {
                return Err(Error::IvMismatch);
            }
        }
        let opened = open_response(msg)?;
        let mut warnings = ResponseWarnings {
            size_mismatch: opened.size_mismatch,
            iv_reused: false,
        };
        match (&opened.trailer, &self.iv) {
            (Trailer::Mac { mac }, _) => {
                if crypto::v4_mac(&opened.signed) != *mac {
                    return Err(Error::V4Mac);
                }
            }
            (Trailer::Salted { salt, v6 }, Some(req)) => {
                if let Some(v6) = v6 {
                    if v6.xored_ivs != req.decrypted {
                        return Err(Error::XoredIvsMismatch);
                    }
                    warnings.iv_reused = v6.iv == req.iv;
                }
                let r = crypto::xor_block(&salt.random_xored_ivs, &req.decrypted);
                if crypto::salt_hash(&r) != salt.hash {
                    return Err(Error::SaltHash);
                }
            }
            // A V4 request has no IV, and a V4 response has a MAC trailer:
            // unreachable once the versions agree, refused all the same.
            (Trailer::Salted { .. }, None) => {
                return Err(Error::ResponseVersionMismatch {
                    request: self.version,
                    response: outer,
                });
            }
        }
        if opened.body.cmid != self.cmid {
            return Err(Error::CmidMismatch);
        }
        if opened.body.client_time != self.client_time {
            return Err(Error::ClientTimeMismatch);
        }
        if let Trailer::Salted { v6: Some(v6), .. } = &opened.trailer
            && !crypto::v6_hmac_verify(self.client_time.ticks(), &opened.signed, &v6.hmac)
        {
            return Err(Error::Hmac);
        }
        Ok(VerifiedResponse {
            body: opened.body,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use uuid::Uuid;

    use super::*;
    use crate::crypto::Block;
    use crate::message::decode_request;
    use crate::message::exchange_tests::{answer, encode, sample_body};
    use crate::random::ScriptedRandom;

    #[test]
    fn request_encode_errors() {
        let mut out = BytesMut::new();
        let body = RequestBody {
            version: Version::new(3, 0),
            ..sample_body()
        };
        assert_eq!(
            encode_request(&body, &mut ScriptedRandom::default(), &mut out).unwrap_err(),
            Error::UnsupportedVersion { major: 3, minor: 0 }
        );
        // Versions hosts must refuse can still be sent (V6 cipher), but not decoded.
        for (major, minor) in [(6, 1), (7, 0)] {
            let body = RequestBody {
                version: Version::new(major, minor),
                ..sample_body()
            };
            let mut probe = BytesMut::new();
            encode_request(&body, &mut ScriptedRandom::default(), &mut probe).unwrap();
            assert_eq!(probe.len(), 260);
            assert_eq!(
                decode_request(&probe).unwrap_err(),
                Error::UnsupportedVersion { major, minor }
            );
        }
        let body = RequestBody {
            workstation: "é".repeat(64),
            ..sample_body()
        };
        assert_eq!(
            encode_request(&body, &mut ScriptedRandom::default(), &mut out).unwrap_err(),
            Error::WorkstationTooLong { len: 64 }
        );
        assert!(out.is_empty());
    }

    #[test]
    fn client_detects_bad_echoes_and_versions() {
        for version in [Version::V4, Version::V5, Version::V6] {
            let (sent, wire) = encode(
                &RequestBody {
                    version,
                    ..sample_body()
                },
                [1; 16],
            );
            let received = decode_request(&wire).unwrap();
            let good = answer(&received, "epid");
            let reply = |body: &ResponseBody| {
                let mut out = BytesMut::new();
                received
                    .encode_response(body, &mut ScriptedRandom::new([7; 32]), &mut out)
                    .unwrap();
                out
            };
            let bad_cmid = ResponseBody {
                cmid: Uuid::from_u128(99),
                ..good.clone()
            };
            assert_eq!(
                sent.verify_response(&reply(&bad_cmid)),
                Err(Error::CmidMismatch)
            );
            let bad_time = ResponseBody {
                client_time: FileTime::from_ticks(good.client_time.ticks() + 1),
                ..good.clone()
            };
            assert_eq!(
                sent.verify_response(&reply(&bad_time)),
                Err(Error::ClientTimeMismatch)
            );
            // Another request's response: version mismatch.
            let other = if version == Version::V6 {
                Version::V5
            } else {
                Version::V6
            };
            let (other_sent, _) = encode(
                &RequestBody {
                    version: other,
                    ..sample_body()
                },
                [1; 16],
            );
            assert_eq!(
                other_sent.verify_response(&reply(&good)),
                Err(Error::ResponseVersionMismatch {
                    request: other,
                    response: version
                })
            );
            assert!(
                sent.verify_response(&reply(&good))
                    .unwrap()
                    .warnings
                    .is_empty()
            );
            // Extra bytes after a V4 MAC: accepted with a size warning.
            if version == Version::V4 {
                let mut long = reply(&good);
                long.extend_from_slice(&[0; 3]);
                assert!(sent.verify_response(&long).unwrap().warnings.size_mismatch);
            }
        }
    }

    #[test]
    fn v6_iv_reuse_is_a_warning() {
        let (sent, wire) = encode(&sample_body(), [1; 16]);
        let received = decode_request(&wire).unwrap();
        // Bypass the redraw rule: build a reply whose IV_s equals IV_c by
        // encrypting the plaintext of a normal reply again under IV_c.
        let mut reply = BytesMut::new();
        received
            .encode_response(
                &answer(&received, "e"),
                &mut ScriptedRandom::new([7; 32]),
                &mut reply,
            )
            .unwrap();
        let iv_s: Block = reply[4..20].try_into().unwrap();
        let mut payload = reply[20..].to_vec();
        Cbc::V6.decrypt(&iv_s, &mut payload);
        // The HMAC covers P0 = D(IV_s); recompute it for the new IV.
        let signed_len = payload.len() - 16 - usize::from(*payload.last().unwrap());
        let mut signed = Cbc::V6.decrypt_iv(&[1; 16]).to_vec();
        signed.extend_from_slice(&payload[..signed_len]);
        let hmac = crypto::v6_hmac(sample_body().client_time.ticks(), &signed);
        payload[signed_len..signed_len + 16].copy_from_slice(&hmac);
        Cbc::V6.encrypt(&[1; 16], &mut payload);
        let mut forged = reply[..4].to_vec();
        forged.extend_from_slice(&[1; 16]);
        forged.extend_from_slice(&payload);
        let verified = sent.verify_response(&forged).unwrap();
        assert!(verified.warnings.iv_reused);
        assert!(!verified.warnings.size_mismatch);
    }
}
