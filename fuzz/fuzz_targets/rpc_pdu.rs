//! Any bytes: the PDU decoder never panics, and what decodes re-encodes to
//! something that decodes to the same PDU.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pdu) = kms_activation::rpc::Pdu::decode(data) {
        let mut out = bytes::BytesMut::new();
        pdu.encode(&mut out);
        let again = kms_activation::rpc::Pdu::decode(&out).expect("re-encoded PDU decodes");
        assert_eq!(again, pdu);
    }
});
