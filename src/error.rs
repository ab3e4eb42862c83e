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
}
