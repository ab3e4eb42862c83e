//! Fuzz target: see `kms_activation::fuzzing::pcap_capture`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kms_activation::fuzzing::pcap_capture(data);
});
