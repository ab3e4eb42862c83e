//! The crate-wide error type: one variant per error type of the core.

use crate::message;
use crate::wire::DecodeError;

/// Any error of this crate's core (the API without features), gathered so
/// that callers who do not care about the layer can use `?` throughout.
///
/// Every error type the core returns converts into it with `From`, and its
/// `Display` is that of the wrapped error. Each variant holds the layer's own
/// error enum with the details.
///
/// The I/O errors of the optional features are not gathered here, as they
/// carry a [`std::io::Error`] (which is neither `Clone` nor `Eq`): use
/// `Box<dyn std::error::Error>` or your own type when you mix them in. They
/// are `transport::Error` (features `tokio`, `blocking`),
/// `client::discovery::DiscoveryError` (feature `dns`), and
/// `dissect::CaptureError` and `dissect::ReadError` (feature `pcap`).
///
/// ```
/// use kms_activation::{Epid, Error, HResult};
///
/// fn parse(epid: &str, code: &str) -> Result<(Epid, HResult), Error> {
///     Ok((epid.parse()?, code.parse()?))
/// }
/// assert!(matches!(parse("x", "0"), Err(Error::Epid(_))));
/// assert!(matches!(
///     parse("06401-00206-551-123456-03-1033-9600.0000-1002025", "nope"),
///     Err(Error::ParseHResult(_))
/// ));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes that do not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A DCE/RPC framing, negotiation or NDR stub error.
    #[error(transparent)]
    Rpc(#[from] crate::dcerpc::Error),
    /// A KMS message that cannot be encoded, decoded or verified.
    #[error(transparent)]
    Message(#[from] message::Error),
    /// A hardware ID that does not parse.
    #[error(transparent)]
    ParseHwid(#[from] message::ParseHwidError),
    /// A host connection closed on bad input.
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    /// An answer or refusal the host connection could not send.
    #[error(transparent)]
    Answer(#[from] crate::host::AnswerError),
    /// A [`KmsHost`](crate::host::KmsHost) that cannot start.
    #[error(transparent)]
    KmsHost(#[from] crate::host::KmsHostError),
    /// A count store operation that failed.
    #[error(transparent)]
    Store(#[from] crate::host::store::StoreError),
    /// A client connection failed.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    /// A product request that cannot be built.
    #[error(transparent)]
    ProductRequest(#[from] crate::client::ProductRequestError),
    /// A product name or GUID that names no SKU, or several.
    #[error(transparent)]
    SkuLookup(#[from] crate::product::SkuLookupError),
    /// A malformed product key.
    #[error(transparent)]
    ProductKey(#[from] crate::product_key::ProductKeyError),
    /// A malformed ePID.
    #[error(transparent)]
    Epid(#[from] crate::epid::EpidError),
    /// An ePID that cannot be generated.
    #[error(transparent)]
    GenerateEpid(#[from] crate::epid::GenerateError),
    /// A text that is not an HRESULT.
    #[error(transparent)]
    ParseHResult(#[from] crate::hresult::ParseHResultError),
    /// A time outside the range of a `FILETIME`.
    #[error(transparent)]
    Time(#[from] crate::FileTimeRangeError),
    /// License-state events out of time order.
    #[error(transparent)]
    Timeline(#[from] crate::license::OutOfOrderError),
    /// A rearm the license timeline does not allow.
    #[error(transparent)]
    Rearm(#[from] crate::license::RearmError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layer_converts_and_keeps_its_message() {
        let decode = crate::wire::DecodeError::new(
            4,
            "request.version",
            crate::wire::DecodeErrorKind::Truncated { need: 4, have: 0 },
        );
        let all: Vec<Error> = vec![
            decode.into(),
            crate::rpc::Error::UnknownPduType(99).into(),
            message::Error::Padding.into(),
            crate::host::HostError::Closed.into(),
            crate::client::ClientError::Closed.into(),
            "x".parse::<crate::ProductKey>().unwrap_err().into(),
            "x".parse::<crate::Epid>().unwrap_err().into(),
            crate::host::store::StoreError::Closed.into(),
            crate::host::KmsHostError::NoCsvlk.into(),
            crate::product::SkuLookupError::UnknownSkuId(crate::Uuid::nil()).into(),
            "x".parse::<crate::HResult>().unwrap_err().into(),
            "x".parse::<message::Hwid>().unwrap_err().into(),
            crate::license::RearmError::LimitReached { limit: 5 }.into(),
        ];
        for e in &all {
            assert!(!e.to_string().is_empty());
        }
        assert_eq!(
            all[0].to_string(),
            "request.version at byte 0x4: truncated (need 4, have 0)"
        );
    }
}
