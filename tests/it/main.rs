//! Integration tests, built as one binary.
#![allow(
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::missing_panics_doc,
    clippy::panic,
    clippy::doc_markdown,
    clippy::wrong_self_convention,
    clippy::cast_possible_truncation,
    clippy::field_reassign_with_default,
    reason = "test code: failures should panic loudly; options set one per line"
)]

mod admin;
mod catalog_keys;
mod catalog_tool;
mod chunking;
mod corpus;
mod descriptors;
#[cfg(feature = "dns")]
mod discovery;
#[cfg(feature = "pcap")]
mod dissect;
#[cfg(feature = "dns")]
mod dns_publish;
mod engines;
mod fault_store;
mod kms_client;
mod kms_client_load;
#[cfg(feature = "pcap")]
mod kms_dissect;
mod kms_host;
mod kms_host_cli;
mod loopback;
mod metrics_endpoint;
#[cfg(feature = "postgres")]
mod postgres_pause;
#[cfg(feature = "postgres")]
mod postgres_tls;
mod store_queries;
mod stores;
mod support;
mod transport_blocking;
mod transport_support;
mod transport_tokio;
mod vectors;
