//! Any bytes as a KMS response: the unverified decoder never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kms_activation::message::decode_response_unverified(data);
});
