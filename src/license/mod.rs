//! License states of a KMS client.
//!
//! [`LicenseStatus`] is the wire value a client reports in every request
//! (see [license status](crate::message#license-status-and-bindingexpiration)); it lives with the message types and is re-exported
//! here. [`LicenseTimeline`] models how a client moves between
//! those states over time (grace periods, activation validity, renewals,
//! rearms) and what it reports at any instant; the rules and their sources
//! are listed in [`timeline`].

pub mod timeline;

/// The license state a client reports; a wire value, defined with the
/// message types as [`message::LicenseStatus`](crate::message::LicenseStatus)
/// and re-exported here.
pub use crate::message::LicenseStatus;
pub use timeline::{
    LicenseEvent, LicensePolicy, LicenseSnapshot, LicenseTimeline, OutOfOrderError, RearmError,
};
