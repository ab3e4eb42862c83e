//! The crate-wide error type: one variant per layer.

use crate::message;
use crate::wire::DecodeError;

/// Any error this crate reports.
///
/// Each layer has its own error enum with the details; this type gathers them
/// so that callers who do not care about the layer can use `?` throughout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes that do not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A DCE/RPC framing, negotiation or NDR stub error.
    #[error(transparent)]
    Rpc(#[from] crate::rpc::Error),
    /// A KMS message that cannot be encoded, decoded or verified.
    #[error(transparent)]
    Message(#[from] message::Error),
    /// A host connection closed on bad input.
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    /// A client connection failed.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    /// A malformed product key.
    #[error(transparent)]
    ProductKey(#[from] crate::product_key::ProductKeyError),
    /// A malformed ePID.
    #[error(transparent)]
    Epid(#[from] crate::epid::EpidError),
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
