//! KMS messages: the opaque `request` / `response` byte arrays of the
//! `RequestActivation` RPC call (the RPC layer around them is described in
//! [`crate::dcerpc`]).
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
//! The byte-level format is described [below](#the-kms-message-format).
//!
//! # The two sides
//!
//! A **client** calls [`encode_request`], keeps the returned [`SentRequest`]
//! and hands the host's answer to [`SentRequest::verify_response`], which runs
//! every check [a client makes](#what-a-client-verifies) that concerns the
//! KMS message.
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
//!
//! # The KMS message format
//!
//! A KMS request or response is a byte string of at most a few hundred bytes,
//! carried as the byte array of the RPC call. Its first four bytes are always
//! the protocol version, in clear; what follows depends on the version. All
//! integers are little-endian and packed without padding between fields;
//! offsets are decimal and count from the start of the structure a table
//! describes.
//!
//! ## Primitive types
//!
//! * **GUID** (16 bytes) in Microsoft's mixed-endian order: the first group
//!   as a little-endian u32, the second and third as little-endian u16s, the
//!   last eight bytes as written. `73111121-5638-40f6-bc11-f1d7b0d64300` is
//!   sent as `21 11 11 73 38 56 f6 40 bc 11 f1 d7 b0 d6 43 00`. The API uses
//!   [`Uuid`](crate::Uuid) in its usual text order and converts at the edge.
//! * **FILETIME** ([`FileTime`](crate::FileTime)): a u64 count of 100 ns
//!   ticks since 1601-01-01 00:00 UTC. Unix time in seconds is
//!   ticks / 10 000 000 − 11 644 473 600. vlmcs sends whole seconds.
//! * **Version** ([`Version`]): a u32 equal to major · 65536 + minor, so the
//!   bytes are the u16 minor followed by the u16 major: `00 00 06 00` is 6.0.
//! * **Strings** (workstation name, ePID): UTF-16LE ending in a NUL code
//!   unit.
//!
//! ## Request base
//!
//! The 236 bytes ([`REQUEST_BASE_LEN`]) every request carries, in V4 in
//! clear and in V5/V6 encrypted, with the same layout ([`RequestBody`]):
//!
//! | offset | size | field | [`RequestBody`] | meaning |
//! |---|---|---|---|---|
//! | 0 | 2 | minor version | `version` | 0 |
//! | 2 | 2 | major version | `version` | 4, 5 or 6 |
//! | 4 | 4 | `VMInfo` | `vm_info` | 1 if the client runs in a virtual machine, else 0 |
//! | 8 | 4 | `LicenseStatus` | `license_status` | the client's license state, 0–6 ([codes](#license-status-and-bindingexpiration)) |
//! | 12 | 4 | `BindingExpiration` | `binding_expiration` | minutes left in that state ([meaning](#license-status-and-bindingexpiration)) |
//! | 16 | 16 | application ID (GUID) | `application_id` | product family: Windows, Office 2010, Office 2013+ ([IDs](#application-ids)) |
//! | 32 | 16 | SKU ID (GUID) | `sku_id` | the exact edition (activation ID); informational for the host |
//! | 48 | 16 | KMS counted ID (GUID) | `kms_id` | the product group the host decides on |
//! | 64 | 16 | client machine ID (GUID) | `cmid` | random per installation; what a host counts |
//! | 80 | 4 | N policy | `n_policy` | the count the client needs before it activates: 25 for Windows clients, 5 for Windows Server and Office |
//! | 84 | 8 | client time (FILETIME) | `client_time` | the client's clock, UTC |
//! | 92 | 16 | previous CMID (GUID) | `previous_cmid` | zero unless the client's machine ID changed |
//! | 108 | 128 | workstation name | `workstation` | 64 UTF-16 code units with the NUL, so at most 63 characters ([`MAX_WORKSTATION_LEN`]); a DNS or NetBIOS name |
//!
//! The client time sits at offset 84 and is therefore only 4-byte aligned.
//! Senders fill the workstation field after the NUL with zeros, but a
//! receiver must not rely on that and disregards everything past the first
//! NUL (vlmcs, for one, never explicitly zeroes its buffer).
//!
//! ## Response base
//!
//! The core of every response ([`ResponseBody`]), 44 + P bytes where P is the
//! size of the ePID field:
//!
//! | offset | size | field | [`ResponseBody`] | meaning |
//! |---|---|---|---|---|
//! | 0 | 2 | minor version | `version` | the request's |
//! | 2 | 2 | major version | `version` | the request's |
//! | 4 | 4 | `PIDSize` = P | — | bytes of the ePID with its UTF-16 NUL: 2 · (characters + 1); even, at most 128 |
//! | 8 | P | ePID | `epid` | the host's extended product ID, UTF-16LE; its last code unit, and only that one, is 0 |
//! | 8 + P | 16 | client machine ID (GUID) | `cmid` | the request's, echoed |
//! | 24 + P | 8 | client time (FILETIME) | `client_time` | the request's, echoed bit for bit |
//! | 32 + P | 4 | count | `count` | current active clients ([semantics](#count-intervals-epid-and-hardware-id)) |
//! | 36 + P | 4 | `VLActivationInterval` | `activation_interval` | minutes (default 120) |
//! | 40 + P | 4 | `VLRenewalInterval` | `renewal_interval` | minutes (default 10080) |
//!
//! Mind the order of the last two fields: the activation interval comes
//! first. An ePID has at most 63 characters ([`MAX_EPID_LEN`]).
//!
//! ## Ciphers and keys
//!
//! Every version protects its messages with the Rijndael cipher on 16-byte
//! blocks, using the AES round functions and the standard key expansion
//! (FIPS-197; a key of Nk 32-bit words gets Nk + 6 rounds). The keys are
//! fixed, public constants of the protocol: the protection detects
//! corruption and tampering by anything that does not know the protocol, it
//! gives no secrecy.
//!
//! | version | use | key | size, rounds |
//! |---|---|---|---|
//! | V4 | CBC-MAC | `05 3D 83 07 F9 E5 F0 88 EB 5E A6 68 6C F0 37 C7 E4 EF D2 D6` | 160 bits, 11 rounds |
//! | V5 | AES-CBC | `CD 7E 79 6F 2A B2 5D CB 55 FF C8 EF 83 64 C4 70` | 128 bits, 10 rounds |
//! | V6 | AES-CBC, tweaked schedule | `A9 4A 41 95 E2 01 43 2D 9B CB 46 04 05 D8 4A 21` | 128 bits, 10 rounds |
//!
//! **The V6 tweak.** The V6 key is expanded as usual into eleven round keys
//! (176 bytes, round key i starting at byte 16·i). Then three single bytes of
//! that schedule are XORed with constants, without re-running the expansion:
//!
//! | schedule byte | which is | XOR | value before → after |
//! |---|---|---|---|
//! | 64 | the first byte of round key 4 | 0x73 | 0x76 → 0x05 |
//! | 96 | the first byte of round key 6 | 0x09 | 0x6A → 0x63 |
//! | 128 | the first byte of round key 8 | 0xE4 | 0x0B → 0xEF |
//!
//! Encryption and decryption both use the tweaked schedule, written K6′ below.
//! Every major version above 5 selects it (vlmcs sends even a "7.0" probe
//! that way; hosts refuse such a request).
//!
//! **CBC and padding.** V5 and V6 use ordinary CBC: each plaintext block is
//! XORed with the previous ciphertext block (the IV for the first) and then
//! encrypted. The plaintext always ends with PKCS#7 padding of 1 to 16 bytes,
//! each byte holding the pad length; a full block of 16 is added when the
//! data already fill whole blocks. A receiver refuses a last byte of 0 or
//! above 16, and pad bytes that are not all equal.
//!
//! **The decrypted IV, D(IV).** Several V5/V6 fields use the plain block
//! decryption of an IV (the 16 IV bytes taken as one ciphertext block, with
//! no CBC XOR) under the message's cipher: the V5 key or K6′. The same
//! block appears as the first output block when `IV ‖ ciphertext` is
//! CBC-decrypted from a zero IV, the rest of the output being the
//! plaintext.
//!
//! ## V4 framing
//!
//! V4 does not encrypt. Each message ends with a 16-byte CBC-MAC:
//!
//! * request, 252 bytes ([`V4_REQUEST_LEN`]): request base (236) ‖ MAC of the
//!   base;
//! * response, 60 + P bytes: response base (44 + P) ‖ MAC of the base.
//!
//! The MAC is computed with the V4 key: append a byte 0x80 to the data, then
//! zero bytes up to a multiple of 16 (the 0x80 is appended even to data
//! that already fill whole blocks). The running state begins as an all-zero
//! block; every block of the padded data is XORed into it and the result
//! encrypted. Whatever the state holds at the end is the MAC; there are no CMAC-style subkeys. For the 236-byte
//! request base (14 blocks and 12 bytes) the padding is `80 00 00 00`.
//!
//! ## V5 framing
//!
//! Request, 260 bytes ([`V5_REQUEST_LEN`]):
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 4 | version 5.0, in clear |
//! | 4 | 16 | `IV_c`, random, in clear |
//! | 20 | 240 | request base ‖ `04 04 04 04`, encrypted with the V5 key in CBC mode from `IV_c` |
//!
//! Response:
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 4 | version, in clear |
//! | 4 | 16 | the request's `IV_c`, repeated unchanged |
//! | 20 | … | response base ‖ `RandomXoredIVs` (16) ‖ `Hash` (32) ‖ PKCS#7 pad, encrypted with the V5 key in CBC mode from `IV_c` |
//!
//! `RandomXoredIVs` and `Hash` are the [salt hash](#salt-hash). In both
//! directions the version inside the decrypted base must equal the one in
//! clear.
//!
//! ## V6 framing
//!
//! The request has the V5 layout ([`V6_REQUEST_LEN`], 260 bytes), with
//! version 6.0 and the K6′ cipher.
//!
//! The response travels under a fresh IV, `IV_s`, which must differ from
//! `IV_c`. Everything from offset 20 on is encrypted with K6′ in CBC mode
//! from `IV_s`; the table shows the plaintext:
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 4 | version, in clear |
//! | 4 | 16 | `IV_s`, in clear |
//! | 20 | 44 + P | response base |
//! | 64 + P | 16 | `RandomXoredIVs` ([salt hash](#salt-hash)) |
//! | 80 + P | 32 | `Hash` |
//! | 112 + P | 8 | hardware ID of the host ([`Hwid`]) |
//! | 120 + P | 16 | `XoredIVs` = D(`IV_c`) under K6′ |
//! | 136 + P | 16 | HMAC ([below](#v6-hmac)) |
//! | 152 + P | 1–16 | PKCS#7 pad |
//!
//! Despite its name, `XoredIVs` holds just D(`IV_c`): that is what clients
//! check, and what every interoperable host sends. Let P0 = D(`IV_s`) under
//! K6′, the block that decrypts from the response IV. vlmcsd builds its
//! reply by drawing a random P0 and encrypting `P0 ‖ plaintext` from a zero
//! IV, which makes the first ciphertext block the wire `IV_s`; drawing
//! `IV_s` at random and computing P0 from it, as this crate does, gives the
//! same distribution.
//!
//! ### V6 HMAC
//!
//! The HMAC is keyed by a value derived from the client time FT (the
//! FILETIME in the response, which equals the request's):
//!
//! ```text
//! C1 = 0x0000_0022_8168_89BD    (148 199 999 933 ticks, about 4 h 07 min)
//! C2 = 0x0000_0020_8CBA_B5ED
//! C3 = 0x3156_CD5A_C628_477A
//! T    = (FT / C1) · C2 + C3, integer division, wrapping modulo 2^64
//! key  = the last 16 bytes of SHA-256(T as 8 little-endian bytes)
//! data = P0 ‖ response base ‖ RandomXoredIVs ‖ Hash ‖ hardware ID ‖ XoredIVs
//! HMAC = the last 16 bytes of HMAC-SHA256(key, data)
//! ```
//!
//! `data` is plaintext, 16 + (44 + P) + 72 bytes long; neither the pad nor
//! the HMAC field itself is covered. A host computes T from FT as it is.
//! vlmcs, checking a response, also accepts the values for T + C1 and
//! T − C1 (an offset added to T itself, not to the slot number FT / C1);
//! [`SentRequest::verify_response`] accepts the same three. How much skew
//! Windows tolerates here is not known.
//!
//! ## Message sizes
//!
//! | message | bytes |
//! |---|---|
//! | V4 request | 252 |
//! | V5 or V6 request | 260 |
//! | V4 response | 60 + P |
//! | V5 response | 20 + U + pad, with U = 92 + P |
//! | V6 response | 20 + U + pad, with U = 132 + P |
//!
//! U is the plaintext before padding (response base, 48 bytes of salt and
//! hash, and for V6 another 40 bytes), and pad = 16 − (U mod 16), between 1
//! and 16. The usual 48-character ePID (P = 98) gives 158 bytes in V4, 212
//! in V5 and 260 in V6 (as does any ePID of 45 to 52 characters in V6).
//! The longest response, V6 with a 63-character ePID, is
//! [`MAX_RESPONSE_LEN`] = 292 bytes. [`ResponseBody::message_len`] computes
//! the size for a body.
//!
//! ## Salt hash
//!
//! V5 and V6 responses prove that the host could decrypt the request IV. The
//! host draws 16 random bytes R and sends
//!
//! * `Hash` = SHA-256(R), 32 bytes, and
//! * `RandomXoredIVs` = R ⊕ D(`IV_c`), with D under the message's cipher.
//!
//! The client computes R = `RandomXoredIVs` ⊕ D(`IV_c`) itself and checks
//! that SHA-256(R) equals `Hash`.
//!
//! ## What a host checks
//!
//! A host tests a request in this order and answers the first failure with
//! an HRESULT instead of a response ([error stub](crate::dcerpc#output-stub-on-error));
//! the connection stays open:
//!
//! | step | check | on failure |
//! |---|---|---|
//! | 1 | the stub decodes; the message is at least 4 bytes; its version is 4.0, 5.0 or 6.0; it has at least 252 (V4) or 260 (V5, V6) bytes | 0x8007000D |
//! | 2 | V5/V6: it decrypts with `IV_c` and the version's cipher, the padding is sound and the inner version matches; V4: the MAC is right (vlmcsd does not check it; genuine clients always send a correct one) | 0x8007000D |
//! | 3 | the N policy is at most 1000 | 0x8007000D |
//! | 4 | the client time is within 4 hours of the host's clock | 0xC004F06C |
//! | 5 | the KMS ID is one the host's CSVLKs activate, and not a retail or pre-release one | 0xC004F042 |
//! | 6 | the application ID is the application of that KMS ID | 0xC004F042 |
//! | 7 | the host's client table has room for this client | 0xC004D104 |
//!
//! Microsoft hosts apply steps 4 to 6; emulators often skip them. The SKU
//! ID, previous CMID, license status, VM flag and `BindingExpiration` are
//! only informational (a genuine host activates SKUs it does not know, as
//! long as their KMS ID is covered); the CMID's format is not validated.
//! In this crate [`decode_request`] does the message part of steps 1 and 2
//! (a wrong V4 MAC is reported by [`ReceivedRequest::mac_ok`], not refused);
//! [`HostConnection`](crate::host::HostConnection) runs steps 1 to 4 (see
//! [its table](crate::host#the-protocols-own-checks)) and
//! [`KmsHost`](crate::host::KmsHost) steps 5 to 7.
//!
//! ## Building a response
//!
//! A host that accepts a request answers in the request's version:
//!
//! 1. It copies the version, CMID and client time from the request and adds
//!    the ePID of the host key covering the KMS ID, the count and the two
//!    intervals ([`ResponseBody::answering`]).
//! 2. V4: appends the MAC of the base.
//! 3. V5: draws R, appends `RandomXoredIVs` and `Hash`, repeats `IV_c` as
//!    the IV, pads and encrypts from `IV_c`.
//! 4. V6: draws R, appends `RandomXoredIVs`, `Hash`, the hardware ID and
//!    `XoredIVs`; draws `IV_s` ≠ `IV_c`, computes P0 and the HMAC, pads and
//!    encrypts from `IV_s`.
//!
//! [`ReceivedRequest::encode_response`] does steps 2 to 4. The RPC layer
//! wraps the message in an [output stub](crate::dcerpc#output-stub-on-success)
//! of the request's transfer syntax, in a response PDU with the request's
//! call id and context id.
//!
//! ## What a client verifies
//!
//! [`SentRequest::verify_response`] checks, in this order, failing with the
//! [`Error`] variant named:
//!
//! 1. the version in clear is the request's (`ResponseVersionMismatch`);
//! 2. V5: the response IV is `IV_c` (`IvMismatch`);
//! 3. V5/V6: the encrypted part is whole blocks and its padding is sound
//!    after decryption (`CipherTextLength`, `Padding`);
//! 4. the response base parses: `PIDSize` even, non-zero and at most 128,
//!    the ePID's NUL exactly at its end (`EpidSize`, `EpidTerminator`);
//! 5. the version inside equals the version in clear (`InnerVersionMismatch`);
//! 6. V6: `XoredIVs` is D(`IV_c`) (`XoredIvsMismatch`);
//! 7. V4: the MAC of the response base (`V4Mac`); V5/V6: the
//!    [salt hash](#salt-hash) (`SaltHash`);
//! 8. the CMID is echoed (`CmidMismatch`);
//! 9. the client time is echoed bit for bit (`ClientTimeMismatch`);
//! 10. V6: the [HMAC](#v6-hmac) matches for T, T + C1 or T − C1 (`Hmac`).
//!
//! Two oddities are only reported as [`ResponseWarnings`]: a length other
//! than the one computed from `PIDSize` ([message sizes](#message-sizes)),
//! and, in V6, an `IV_s` equal to `IV_c` (a host that reuses the request IV,
//! typically a naive emulator).
//!
//! The RPC-level checks (reply type, data representation, no
//! authentication, single fragment, call id and context id echoed, cancel
//! count 0, stub sizes consistent, HRESULT 0 with a non-NULL pointer, and a
//! `bind_ack` that answers each offered context as offered) are
//! [`crate::client`]'s. Last comes a policy decision no message check makes:
//! a client activates only when the count is at least its N policy, and
//! otherwise fails with 0xC004F038 (not enough clients). A client that
//! reaches no host at all reports 0xC004F074. After success it keeps the
//! ePID, the hardware ID (V6) and the two intervals.
//!
//! ## License status and BindingExpiration
//!
//! `LicenseStatus` ([`LicenseStatus`]) is the state the client's license is
//! in when it asks:
//!
//! | code | [`LicenseStatus`] | state |
//! |---|---|---|
//! | 0 | `Unlicensed` | not licensed |
//! | 1 | `Licensed` | activated; the request is a renewal |
//! | 2 | `OobGrace` | the initial, out-of-box grace period |
//! | 3 | `OotGrace` | out-of-tolerance grace: the hardware changed too much |
//! | 4 | `NonGenuineGrace` | non-genuine grace |
//! | 5 | `Notification` | no grace left: the product nags and may limit features |
//! | 6 | `ExtendedGrace` | extended grace |
//!
//! `BindingExpiration` counts the minutes until that state ends: the grace
//! left in states 2, 3, 4 and 6, the time until the current activation
//! lapses in state 1, and 0 when nothing expires or no time is left (as in
//! state 5). vlmcs sends 43200 (30 days) by default. Hosts log both fields
//! and do not act on them. (Only states 2 and 5 have been seen on the wire;
//! the meaning for the other states follows the field's naming.)
//!
//! ## Count, intervals, ePID and hardware ID
//!
//! * **Count.** A genuine host reports how many distinct client machine IDs
//!   asked it to activate a product of the request's application (Windows,
//!   Office 2010, Office 2013 and later) in the last 30 days, capped at
//!   twice the largest N policy it has seen, so Windows tops out at 50 and
//!   Office or Server-only hosts at 10. Client and server editions of
//!   Windows share one count. The client activates only when the count
//!   reaches its N policy. vlmcsd by default answers max(2 · N, 1) from the
//!   request's own N policy instead. [`KmsHost`](crate::host::KmsHost) counts
//!   genuinely by default ([`CountPolicy`](crate::host::CountPolicy)).
//! * **Intervals.** `VLActivationInterval` is how many minutes a client that
//!   is not (yet) activated waits before retrying, 120 by default;
//!   `VLRenewalInterval` how many minutes an activated client waits before
//!   renewing, 10080 (seven days) by default. Newer clients may ignore both.
//! * **ePID.** The extended product ID of the host's CSVLK that covers the
//!   request's KMS ID, of the form
//!   `PPPPP-GGGGG-KKK-KKKKKK-03-LCID-BUILD.0000-DDDYYYY`, e.g.
//!   `05426-00206-565-184251-03-1068-9200.0000-1222025`. A genuine host's
//!   ePID for a given CSVLK never changes. [`crate::epid`] explains the parts
//!   and checks them against the product tables.
//! * **Hardware ID.** 8 opaque bytes naming the host machine, sent only in
//!   V6 responses, stable for a host, and shown as 16 hex digits in wire
//!   order ([`Hwid`]); vlmcsd's default is `3A1C049600B60076`.
//!
//! ## Application IDs
//!
//! | application | application ID |
//! |---|---|
//! | Windows | `55c92734-d682-4d71-983e-d6ec3f16059f` |
//! | Office 2010 | `59a52881-a989-479d-af46-f275c6370663` |
//! | Office 2013 and later | `0ff1ce15-a989-479d-af46-f275c6370663` |
//!
//! [`crate::product`] maps KMS IDs and SKUs to these applications.

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

/// Length of the [request base](crate::message#request-base), identical in
/// every version.
pub const REQUEST_BASE_LEN: usize = 236;

/// Length of a V4 request: base ‖ MAC ([V4 framing](crate::message#v4-framing)).
pub const V4_REQUEST_LEN: usize = 252;

/// Length of a V5 request: version ‖ IV ‖ 240 encrypted bytes
/// ([V5 framing](crate::message#v5-framing)).
pub const V5_REQUEST_LEN: usize = 260;

/// Length of a V6 request: same layout as V5
/// ([V6 framing](crate::message#v6-framing)).
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
/// `major << 16 | minor` (bytes: minor u16, major u16; see
/// [primitive types](crate::message#primitive-types)).
///
/// ```
/// use kms_activation::Version;
///
/// assert_eq!(Version::from(0x0006_0000), Version::V6);
/// assert_eq!(u32::from(Version::V5), 0x0005_0000);
/// assert_eq!(Version::V4.to_string(), "4.0");
/// ```
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
