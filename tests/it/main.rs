//! Integration tests: one binary.
#[cfg(feature = "pcap")]
mod dissect;
