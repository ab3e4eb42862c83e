//! # kms-activation
//!
//! A sans-IO implementation of Microsoft's Key Management Service (KMS)
//! volume-activation protocol.
#![forbid(unsafe_code)]
#![deny(rustdoc::broken_intra_doc_links)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod crypto;
pub mod epid;
mod error;
mod guid;
pub mod hresult;
pub mod license;
pub mod product_key;
pub mod message;
pub mod product;
mod random;
pub mod rpc;
mod time;
pub mod wire;

pub use epid::Epid;
pub use error::Error;
pub use hresult::HResult;
pub use license::LicenseStatus;
pub use product_key::{ProductKey, ProductKeyError};
pub use message::{Hwid, RequestBody, ResponseBody, Version};
pub use random::{RandomSource, ScriptedRandom};
pub use time::{FileTime, FileTimeRangeError};
pub use uuid::Uuid;
