//! Tests across the roles (a client's request decoded by a host, answered,
//! and verified by the client) and the helpers the per-role tests share.

use bytes::BytesMut;
use proptest::prelude::*;
use uuid::Uuid;

use super::LicenseStatus;
use super::{
    Hwid, ReceivedRequest, RequestBody, ResponseBody, SentRequest, Version, decode_request,
    decode_response_unverified, encode_request, request_version,
};
use crate::random::ScriptedRandom;
use crate::time::FileTime;

fn arb_body() -> impl Strategy<Value = RequestBody> {
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
    proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..63).prop_map(
        |cs| {
            let mut s = String::new();
            for c in cs {
                if s.encode_utf16().count() + c.len_utf16() <= 63 {
                    s.push(c);
                }
            }
            s
        },
    )
}

/// A request encoded with `iv` as `IV_c`, and what the client keeps.
pub(super) fn encode(body: &RequestBody, iv: [u8; 16]) -> (SentRequest, BytesMut) {
    let mut out = BytesMut::new();
    let sent = encode_request(body, &mut ScriptedRandom::new(iv), &mut out).unwrap();
    (sent, out)
}

/// A response to `received` (a hardware ID in V6 only).
pub(super) fn answer(received: &ReceivedRequest, epid: &str) -> ResponseBody {
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

/// A V6 request with small, recognisable IDs.
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
