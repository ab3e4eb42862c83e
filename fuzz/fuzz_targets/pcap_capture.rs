//! Any bytes as a packet capture: the dissector never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kms_activation::dissect::read_capture(data);
});
