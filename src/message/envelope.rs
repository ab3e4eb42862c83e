//! Per-version framing of KMS messages: the V4 MAC trailer; the V5/V6 IV,
//! encrypted payload and padding; the V5/V6 salt hash and the V6 trailer
//! (PROTOCOL.md §4.4–§4.6, §5, §6.3).

use bytes::BytesMut;
use uuid::Uuid;

use super::response::message_len;
use super::{
    Error, REQUEST_BASE_LEN, RESPONSE_LIMIT, RequestBody, ResponseBody, V4_REQUEST_LEN, Version,
};
use crate::crypto::{self, BLOCK_LEN, Block, Cbc};
use crate::random::RandomSource;
use crate::time::FileTime;
use crate::wire::{DecodeError, DecodeErrorKind, Reader};

/// Bytes in clear before a V5/V6 payload: version (4) and IV (16).
const CLEAR_LEN: usize = 4 + BLOCK_LEN;

/// How a message of a given version is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protection {
    /// V4: a CBC-MAC trailer.
    Mac,
    /// V5 or V6: CBC encryption.
    Cbc(Cbc),
}

impl Protection {
    /// The protection of a supported version, or `UnsupportedVersion`.
    const fn of(version: Version) -> Result<Self, Error> {
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
    /// they must refuse (PROTOCOL.md §5.2, §6.1 check 1).
    const fn for_sending(version: Version) -> Result<Self, Error> {
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
struct RequestIv {
    cbc: Cbc,
    iv: Block,
    decrypted: Block,
}

impl RequestIv {
    fn new(cbc: Cbc, iv: Block) -> Self {
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

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

/// Encodes a complete KMS request and appends it to `out`: 252 bytes for V4,
/// 260 bytes for V5 and V6 (PROTOCOL.md §4.4–§4.6).
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
/// [`decode_request`] accepts only 4.0, 5.0 and 6.0;
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

/// Non-fatal oddities of a verified response (PROTOCOL.md §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ResponseWarnings {
    /// The message length differs from the length computed from its ePID
    /// size (PROTOCOL.md §4.7).
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
    /// of PROTOCOL.md §6.3 that concerns the KMS message, in this order:
    /// version in clear, IV (V5), padding, inner version, ePID size and
    /// terminator, `XoredIVs` (V6), V4 MAC or salt hash, CMID echo, client time
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

// ---------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------

/// Decodes a KMS request as a host receives it (PROTOCOL.md §6.1 steps 1–2).
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
    /// `out` (PROTOCOL.md §6.2).
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

// ---------------------------------------------------------------------------
// Response parsing shared by the client and the dissector
// ---------------------------------------------------------------------------

/// Decodes a KMS response without the request it answers, as a
/// packet-capture dissector must: V5/V6 are decrypted and their padding
/// checked, then the fields are parsed. Nothing that needs the request (IV,
/// hash, MAC, HMAC, echoes) is checked; use [`SentRequest::verify_response`]
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
struct Opened {
    body: ResponseBody,
    /// The bytes the V4 MAC or the V6 HMAC covers (empty for V5).
    signed: Vec<u8>,
    trailer: Trailer,
    size_mismatch: bool,
}

enum Trailer {
    Mac { mac: Block },
    Salted { salt: Salt, v6: Option<V6Trailer> },
}

struct Salt {
    random_xored_ivs: Block,
    hash: [u8; 32],
}

struct V6Trailer {
    iv: Block,
    xored_ivs: Block,
    hmac: Block,
}

fn open_response(msg: &[u8]) -> Result<Opened, Error> {
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

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Appends PKCS#7 padding: 1 to 16 bytes, each the count.
fn pad(data: &mut Vec<u8>) {
    let count = BLOCK_LEN - data.len() % BLOCK_LEN;
    // count is 1..=16, so it fits a byte.
    let byte = u8::try_from(count).unwrap_or(16);
    data.resize(data.len() + count, byte);
}

/// Strips PKCS#7 padding, or `None` if it is malformed (last byte 0 or > 16,
/// longer than the data, or unequal pad bytes).
fn unpad(data: &[u8]) -> Option<&[u8]> {
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
fn block_at(msg: &[u8], offset: usize) -> Block {
    let mut out = [0u8; BLOCK_LEN];
    for (dst, src) in out.iter_mut().zip(msg.iter().skip(offset)) {
        *dst = *src;
    }
    out
}

fn truncated(offset: usize, field: &'static str, need: usize, have: &[u8]) -> Error {
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
    use crate::license::LicenseStatus;
    use crate::message::{Hwid, V5_REQUEST_LEN};
    use crate::random::ScriptedRandom;
    use proptest::prelude::*;

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

    pub(super) fn arb_body() -> impl Strategy<Value = RequestBody> {
        (
            prop_oneof![Just(Version::V4), Just(Version::V5), Just(Version::V6)],
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<[u128; 5]>(),
            any::<u32>(),
            any::<u64>(),
            proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..40)
                .prop_map(|cs| {
                    let mut s = String::new();
                    for c in cs {
                        if s.encode_utf16().count() + c.len_utf16() <= 63 {
                            s.push(c);
                        }
                    }
                    s
                }),
        )
            .prop_map(
                |(version, vm, status, grace, ids, n, t, name)| RequestBody {
                    version,
                    vm_info: vm,
                    license_status: LicenseStatus::from(status),
                    binding_expiration: grace,
                    application_id: Uuid::from_u128(ids[0]),
                    sku_id: Uuid::from_u128(ids[1]),
                    kms_id: Uuid::from_u128(ids[2]),
                    cmid: Uuid::from_u128(ids[3]),
                    previous_cmid: Uuid::from_u128(ids[4]),
                    n_policy: n,
                    client_time: FileTime::from_ticks(t),
                    workstation: name,
                },
            )
    }

    fn arb_epid() -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..63)
            .prop_map(|cs| {
                let mut s = String::new();
                for c in cs {
                    if s.encode_utf16().count() + c.len_utf16() <= 63 {
                        s.push(c);
                    }
                }
                s
            })
    }

    fn encode(body: &RequestBody, iv: [u8; 16]) -> (SentRequest, BytesMut) {
        let mut out = BytesMut::new();
        let sent = encode_request(body, &mut ScriptedRandom::new(iv), &mut out).unwrap();
        (sent, out)
    }

    fn answer(received: &ReceivedRequest, epid: &str) -> ResponseBody {
        let hwid = (received.version() == Version::V6).then_some(Hwid([1, 2, 3, 4, 5, 6, 7, 8]));
        ResponseBody::answering(received.body(), epid, 50, 120, 10_080, hwid)
    }

    proptest! {
        #[test]
        fn request_round_trip(body in arb_body(), iv in any::<[u8; 16]>()) {
            let (sent, out) = encode(&body, iv);
            prop_assert_eq!(out.len(), body.version.request_len().unwrap());
            prop_assert_eq!(sent.version(), body.version);
            let received = decode_request(&out).unwrap();
            prop_assert_eq!(received.body(), &body);
            prop_assert!(received.mac_ok());
            prop_assert_eq!(received.extra_len(), 0);
        }

        #[test]
        fn response_round_trip(
            body in arb_body(),
            iv in any::<[u8; 16]>(),
            host_random in any::<[u8; 32]>(),
            epid in arb_epid(),
            count in any::<u32>(),
        ) {
            let (sent, out) = encode(&body, iv);
            let received = decode_request(&out).unwrap();
            let mut response = answer(&received, &epid);
            response.count = count;
            let mut reply = BytesMut::new();
            received
                .encode_response(&response, &mut ScriptedRandom::new(host_random), &mut reply)
                .unwrap();
            prop_assert_eq!(reply.len(), response.message_len());
            let verified = sent.verify_response(&reply).unwrap();
            prop_assert_eq!(&verified.body, &response);
            prop_assert_eq!(verified.warnings.size_mismatch, false);
            prop_assert_eq!(decode_response_unverified(&reply).unwrap(), response);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_request(&bytes);
            let _ = decode_response_unverified(&bytes);
            let _ = request_version(&bytes);
        }

        #[test]
        fn decoders_never_panic_with_a_valid_version(
            major in 4u16..=6,
            rest in proptest::collection::vec(any::<u8>(), 0..400),
            iv in any::<[u8; 16]>(),
        ) {
            let mut bytes = u32::from(Version::new(major, 0)).to_le_bytes().to_vec();
            bytes.extend_from_slice(&rest);
            let _ = decode_request(&bytes);
            let _ = decode_response_unverified(&bytes);
            for version in [Version::V4, Version::V5, Version::V6] {
                let body = RequestBody { version, ..sample_body() };
                let (sent, _) = encode(&body, iv);
                let _ = sent.verify_response(&bytes);
            }
        }
    }

    pub(super) fn sample_body() -> RequestBody {
        RequestBody {
            version: Version::V6,
            vm_info: 0,
            license_status: LicenseStatus::OobGrace,
            binding_expiration: 43_200,
            application_id: Uuid::from_u128(1),
            sku_id: Uuid::from_u128(2),
            kms_id: Uuid::from_u128(3),
            cmid: Uuid::from_u128(4),
            previous_cmid: Uuid::nil(),
            n_policy: 25,
            client_time: FileTime::from_ticks(134_397_882_570_000_000),
            workstation: "pc".into(),
        }
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
    fn encode_errors() {
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
