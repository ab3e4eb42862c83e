//! Any bytes as a KMS request: decoding never panics; a decoded request
//! encodes back and decodes to the same body.
#![no_main]
use kms_activation::ScriptedRandom;
use kms_activation::message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(received) = message::decode_request(data) {
        let mut out = bytes::BytesMut::new();
        let mut rng = ScriptedRandom::new(data.get(4..20).unwrap_or_default().to_vec());
        if message::encode_request(received.body(), &mut rng, &mut out).is_ok() {
            let again = message::decode_request(&out).expect("re-encoded request decodes");
            assert_eq!(again.body(), received.body());
        }
    }
});
