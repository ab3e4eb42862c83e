//! # kms-activation
//!
//! A sans-IO implementation of Microsoft's Key Management Service (KMS)
//! volume-activation protocol.
#![forbid(unsafe_code)]
#![deny(rustdoc::broken_intra_doc_links)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "pcap")]
#[cfg_attr(docsrs, doc(cfg(feature = "pcap")))]
pub mod dissect;
mod error;
mod guid;
pub mod hresult;
pub mod license;
mod random;
mod time;
pub mod wire;

pub use error::Error;
pub use hresult::HResult;
pub use license::LicenseStatus;
pub use random::{RandomSource, ScriptedRandom};
pub use time::{FileTime, FileTimeRangeError};
pub use uuid::Uuid;
