//! HRESULT status codes: what a KMS host returns instead of a response.
//!
//! A host that refuses an activation answers the RPC call successfully with a
//! non-zero HRESULT and no KMS message (PROTOCOL.md §3.3); KMS errors never
//! travel as RPC faults.

use std::fmt;

/// A Windows `HRESULT` as carried in the `RequestActivation` reply.
///
/// ```
/// use kms_activation::HResult;
///
/// let code = HResult::from(0xC004_F042);
/// assert_eq!(code, HResult::KMS_ID_MISMATCH);
/// assert!(code.is_error());
/// assert_eq!(format!("{code:#}"), "0xC004F042");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HResult(u32);

impl HResult {
    /// `S_OK`: the call succeeded.
    pub const S_OK: Self = Self(0);
    /// `HRESULT_FROM_WIN32(ERROR_INVALID_DATA)`: the request could not be
    /// decoded (bad version, size or N policy). vlmcsd check 1 and 3.
    pub const INVALID_DATA: Self = Self(0x8007_000D);
    /// `SL_E_VL_NOT_ENOUGH_COUNT`: the host's count is below the client's
    /// N policy (decided by the client).
    pub const NOT_ENOUGH_COUNT: Self = Self(0xC004_F038);
    /// `SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH`: the host does not
    /// activate this KMS ID, or it belongs to another application.
    pub const KMS_ID_MISMATCH: Self = Self(0xC004_F042);
    /// `SL_E_VL_INVALID_TIMESTAMP`: client and host clocks differ by more
    /// than four hours.
    pub const INVALID_TIMESTAMP: Self = Self(0xC004_F06C);
    /// `SL_E_VL_KEY_MANAGEMENT_SERVICE_NOT_ACTIVATED` and friends: no KMS
    /// host could be reached or none answered.
    pub const NO_HOST_REACHABLE: Self = Self(0xC004_F074);
    /// `SL_REMAPPING_SP_STATUS_INVALIDARG`: the host's client table is full.
    pub const CLIENT_TABLE_FULL: Self = Self(0xC004_D104);

    /// Wraps a raw code.
    #[must_use]
    pub const fn new(code: u32) -> Self {
        Self(code)
    }

    /// The raw 32-bit code.
    #[must_use]
    pub const fn code(self) -> u32 {
        self.0
    }

    /// True for failure codes (severity bit set).
    #[must_use]
    pub const fn is_error(self) -> bool {
        self.0 & 0x8000_0000 != 0
    }
}

impl From<u32> for HResult {
    fn from(code: u32) -> Self {
        Self(code)
    }
}

impl From<HResult> for u32 {
    fn from(h: HResult) -> Self {
        h.0
    }
}

impl fmt::Display for HResult {
    /// `0xC004F042`: upper-case hex with a `0x` prefix, as Windows tools print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:08X}", self.0)
    }
}
