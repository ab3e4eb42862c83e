//! HRESULT status codes: what a KMS host returns instead of a response.
//!
//! A host that refuses an activation answers the RPC call successfully with a
//! non-zero HRESULT and no KMS message (see [the error stub](crate::dcerpc#output-stub-on-error)); KMS errors never
//! travel as RPC faults.
//!
//! The module also carries a small catalogue of the codes met around volume
//! activation, in the spirit of `ospp.vbs /ddescr`: each known code has its
//! symbolic name from the Windows SDK header `slerror.h` (or `winerror.h`), a
//! plain-language description and the usual fix. The fixes follow the
//! troubleshooting guides the project keeps as reference (KMS troubleshooting
//! guidelines, the university KMS FAQ with its error-code answers, the Office
//! volume activation guide, and the KMS client setup keys page); where those
//! say nothing the text says what the code means for a KMS client or host.
//!
//! ```
//! use kms_activation::HResult;
//!
//! let code: HResult = "0xC004F038".parse()?;
//! let info = code.info().expect("a catalogued code");
//! assert_eq!(info.name, Some("SL_E_VL_NOT_ENOUGH_COUNT"));
//! assert!(code.to_string().starts_with("0xC004F038: "));
//! assert_eq!(format!("{code:#}"), "0xC004F038");
//! # Ok::<(), kms_activation::hresult::ParseHResultError>(())
//! ```

use std::fmt;
use std::str::FromStr;

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
    /// `SL_E_VL_BINDING_SERVICE_UNAVAILABLE`: no KMS host could be reached
    /// or none answered (reported by the client).
    pub const NO_HOST_REACHABLE: Self = Self(0xC004_F074);
    /// `SL_REMAPPING_SP_STATUS_INVALIDARG`: the host's client table is full.
    pub const CLIENT_TABLE_FULL: Self = Self(0xC004_D104);
    /// `E_ACCESSDENIED`: the caller lacks administrator rights.
    pub const ACCESS_DENIED: Self = Self(0x8007_0005);
    /// `SL_E_VL_NOT_WINDOWS_SLP`: a volume key cannot activate this
    /// installation (it needs a qualifying OEM licence in the BIOS).
    pub const NOT_WINDOWS_SLP: Self = Self(0xC004_F035);
    /// `SL_E_VL_BINDING_SERVICE_NOT_ENABLED`: the KMS could not be used.
    pub const BINDING_SERVICE_NOT_ENABLED: Self = Self(0xC004_F039);
    /// `SL_E_VL_KEY_MANAGEMENT_SERVICE_NOT_ACTIVATED`: the KMS host itself is
    /// not activated.
    pub const KMS_NOT_ACTIVATED: Self = Self(0xC004_F041);
    /// `SL_E_INVALID_PRODUCT_KEY`: the product key is not valid (or the host
    /// does not know this product generation).
    pub const INVALID_PRODUCT_KEY: Self = Self(0xC004_F050);
    /// `SL_E_VL_MACHINE_NOT_BOUND`: the product could not be activated with
    /// KMS.
    pub const MACHINE_NOT_BOUND: Self = Self(0xC004_F056);
    /// `SL_REMAPPING_SP_PUB_TS_MAX_REARM_REACHED`: no rearm left.
    pub const MAX_REARM_REACHED: Self = Self(0xC004_D307);
    /// `HRESULT_FROM_WIN32(DNS_ERROR_RCODE_NAME_ERROR)`: the DNS name of the
    /// `_vlmcs._tcp` SRV lookup does not exist.
    pub const DNS_NAME_DOES_NOT_EXIST: Self = Self(0x8007_232B);
    /// `HRESULT_FROM_WIN32(DNS_INFO_NO_RECORDS)`: the domain has no
    /// `_vlmcs._tcp` SRV record.
    pub const DNS_NO_RECORDS: Self = Self(0x8007_251D);
    /// `HRESULT_FROM_WIN32(RPC_S_SERVER_UNAVAILABLE)`: the KMS host did not
    /// accept the connection.
    pub const RPC_SERVER_UNAVAILABLE: Self = Self(0x8007_06BA);
    /// `HRESULT_FROM_WIN32(ERROR_TIMEOUT)`: the host did not answer in time.
    pub const TIMEOUT: Self = Self(0x8007_05B4);

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

    /// The catalogue entry for this code, if it has one.
    ///
    /// ```
    /// use kms_activation::HResult;
    ///
    /// let info = HResult::KMS_ID_MISMATCH.info().unwrap();
    /// assert_eq!(info.name, Some("SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH"));
    /// assert!(HResult::new(0x1234_5678).info().is_none());
    /// ```
    #[must_use]
    pub fn info(self) -> Option<&'static HResultInfo> {
        CATALOG
            .binary_search_by_key(&self.0, |entry| entry.code.0)
            .ok()
            .and_then(|i| CATALOG.get(i))
    }

    /// The symbolic name (`SL_E_VL_NOT_ENOUGH_COUNT`, …) of a catalogued code
    /// that has one.
    #[must_use]
    pub fn name(self) -> Option<&'static str> {
        self.info().and_then(|entry| entry.name)
    }

    /// Every catalogued code, sorted by code.
    #[must_use]
    pub fn catalog() -> &'static [HResultInfo] {
        CATALOG
    }
}

/// What the catalogue knows about one code: `ospp.vbs /ddescr` plus a fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct HResultInfo {
    /// The code.
    pub code: HResult,
    /// Symbolic name from the Windows SDK headers; `None` for codes that
    /// Microsoft documents only by number.
    pub name: Option<&'static str>,
    /// What the code means, in plain language.
    pub description: &'static str,
    /// The usual remedy.
    pub fix: &'static str,
}

/// A string that is not an HRESULT in any of the accepted spellings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ParseHResultError {
    /// Nothing to parse.
    #[error("empty HRESULT")]
    Empty,
    /// A character that is not a digit of the chosen base.
    #[error("invalid digit in HRESULT")]
    InvalidDigit,
    /// A number outside both `u32` and `i32`.
    #[error("HRESULT out of the 32-bit range")]
    OutOfRange,
}

impl FromStr for HResult {
    type Err = ParseHResultError;

    /// Reads the spellings tools use for HRESULTs:
    ///
    /// * `0xC004F038` or `0XC004f038`: hexadecimal with prefix;
    /// * `C004F038`: exactly eight hexadecimal digits without prefix (how
    ///   event logs and some scripts print them);
    /// * `3221549112`: unsigned decimal;
    /// * `-1073418184`: the same bits as a signed 32-bit decimal (as `VBScript`
    ///   and `PowerShell` print them).
    ///
    /// Leading and trailing white space is ignored.
    ///
    /// ```
    /// use kms_activation::HResult;
    ///
    /// for text in ["0xC004F038", "c004f038", "3221549112", "-1073418184"] {
    ///     assert_eq!(text.parse::<HResult>(), Ok(HResult::NOT_ENOUGH_COUNT));
    /// }
    /// assert_eq!("13".parse::<HResult>(), Ok(HResult::new(13)));
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ParseHResultError::Empty);
        }
        let hex = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .or_else(|| (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit())).then_some(s));
        if let Some(digits) = hex {
            return parse_digits(digits, 16).map(Self);
        }
        if let Some(magnitude) = s.strip_prefix('-') {
            // Negative decimal: an i32 printed with its sign.
            let value = i64::from(parse_digits(magnitude, 10)?);
            let signed = i32::try_from(-value).map_err(|_| ParseHResultError::OutOfRange)?;
            return Ok(Self(signed.cast_unsigned()));
        }
        parse_digits(s, 10).map(Self)
    }
}

/// Parses unsigned digits of `radix` into a `u32`, with precise errors.
fn parse_digits(digits: &str, radix: u32) -> Result<u32, ParseHResultError> {
    if digits.is_empty() {
        return Err(ParseHResultError::Empty);
    }
    let mut value: u32 = 0;
    for c in digits.chars() {
        let digit = c.to_digit(radix).ok_or(ParseHResultError::InvalidDigit)?;
        value = value
            .checked_mul(radix)
            .and_then(|v| v.checked_add(digit))
            .ok_or(ParseHResultError::OutOfRange)?;
    }
    Ok(value)
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
    /// `0xC004F042: <description>` for a catalogued code, success
    /// (`S_OK`) included, plain `0x…` otherwise (upper-case hex with a `0x`
    /// prefix, as Windows tools print it). The alternate form `{:#}` always
    /// prints the bare code.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:08X}", self.0)?;
        match self.info() {
            Some(entry) if !f.alternate() => write!(f, ": {}", entry.description),
            _ => Ok(()),
        }
    }
}

/// Builds a catalogue entry.
const fn entry(
    code: u32,
    name: Option<&'static str>,
    description: &'static str,
    fix: &'static str,
) -> HResultInfo {
    HResultInfo {
        code: HResult(code),
        name,
        description,
        fix,
    }
}

/// The catalogue, sorted by code (a test keeps it so). Names and codes come
/// from the Windows SDK's `slerror.h` and `winerror.h`; the prose is ours.
static CATALOG: &[HResultInfo] = &[
    entry(
        0x0000_0000,
        Some("S_OK"),
        "The operation succeeded: the client is activated, or the host answered.",
        "Nothing to repair.",
    ),
    entry(
        0x4004_F040,
        Some("SL_E_VL_INFO_PRODUCT_USER_RIGHT"),
        "The product was activated, but its owner should check that the product use rights cover this installation (informational, not a failure).",
        "Nothing to repair; review the use rights of the volume licence agreement for this product.",
    ),
    entry(
        0x8004_FE33,
        None,
        "Activation or validation could not reach Microsoft's activation servers, usually because the Internet connection goes through a proxy that requires authentication.",
        "Activate by telephone, or let the activation addresses through the proxy without authentication (Microsoft KB 921471). This concerns MAK and retail activation, not KMS.",
    ),
    entry(
        0x8007_0005,
        Some("E_ACCESSDENIED"),
        "Access denied: the licensing operation needs higher privileges.",
        "Run slmgr.vbs or ospp.vbs from an elevated command prompt (Run as administrator).",
    ),
    entry(
        0x8007_000D,
        Some("HRESULT_FROM_WIN32(ERROR_INVALID_DATA)"),
        "The data is invalid. A KMS host returns this when it cannot decode a request: unsupported protocol version, wrong size, or an N policy above 1000.",
        "Use a client that speaks a protocol version the host supports (4, 5 or 6) and check that nothing on the path alters the traffic.",
    ),
    entry(
        0x8007_007B,
        Some("HRESULT_FROM_WIN32(ERROR_INVALID_NAME)"),
        "The file name, directory name or volume label syntax is incorrect. slmgr shows it when the KMS host name it was given or discovered is not a valid name, or when no KMS host was named and none could be discovered.",
        "Name the host correctly with slmgr /skms host:port (ospp.vbs /sethst), or publish the _vlmcs._tcp SRV record in the client's DNS domain; a product activated with a MAK needs its GVLK installed again first (slmgr /ipk).",
    ),
    entry(
        0x8007_0422,
        Some("HRESULT_FROM_WIN32(ERROR_SERVICE_DISABLED)"),
        "The licensing service cannot start because it is disabled (Software Protection, sppsvc, or the Office Software Protection Platform service).",
        "Set the service back to its default start type in services.msc (or sc config sppsvc start= delayed-auto), start it, then activate again.",
    ),
    entry(
        0x8007_0426,
        Some("HRESULT_FROM_WIN32(ERROR_SERVICE_NOT_ACTIVE)"),
        "The service has not been started: the Software Protection service (sppsvc), or the Office Software Protection Platform service for Office 2010, is not running.",
        "Start the service (net start sppsvc) and check that its start type is not Disabled, then activate again.",
    ),
    entry(
        0x8007_05B4,
        Some("HRESULT_FROM_WIN32(ERROR_TIMEOUT)"),
        "The operation timed out: the KMS host accepted the connection but did not answer in time.",
        "Check the load and health of the host (its event log, the Software Protection service) and anything on the path that holds TCP 1688 connections open, then try again or use another host.",
    ),
    entry(
        0x8007_06BA,
        Some("HRESULT_FROM_WIN32(RPC_S_SERVER_UNAVAILABLE)"),
        "The RPC server is unavailable: the named or discovered KMS host did not accept the connection (host down, wrong name or port, or TCP 1688 blocked).",
        "Check that the host runs its KMS service and listens on TCP 1688 (or the port set with slmgr /sprt), that firewalls on both sides let the port through, and that the host name resolves to the right address.",
    ),
    entry(
        0x8007_06BE,
        Some("HRESULT_FROM_WIN32(RPC_S_CALL_FAILED)"),
        "The remote procedure call failed: the connection to the KMS host broke during the activation call.",
        "Look for network devices or security software that reset TCP 1688 connections, and at the host's event log; then activate again.",
    ),
    entry(
        0x8007_232A,
        Some("HRESULT_FROM_WIN32(DNS_ERROR_RCODE_SERVER_FAILURE)"),
        "The DNS server failed while the client looked up the _vlmcs._tcp SRV records of its domain.",
        "Check that the client's DNS server is reachable and healthy, or name the KMS host directly with slmgr /skms.",
    ),
    entry(
        0x8007_232B,
        Some("HRESULT_FROM_WIN32(DNS_ERROR_RCODE_NAME_ERROR)"),
        "The DNS name does not exist: the client found no _vlmcs._tcp SRV record in its DNS domain, so it could not discover a KMS host.",
        "Publish the SRV record (a KMS host does so itself when it may update the zone; its event 12293 reports a failure), make the client search the domain that holds it (primary DNS suffix, or slmgr /skms-domain), or name the host with slmgr /skms.",
    ),
    entry(
        0x8007_251D,
        Some("HRESULT_FROM_WIN32(DNS_INFO_NO_RECORDS)"),
        "No records were found for the DNS query: the client's domain exists but holds no _vlmcs._tcp SRV record.",
        "Publish the _vlmcs._tcp SRV record of the KMS host in the domain the clients search, or point them at a host with slmgr /skms (ospp.vbs /sethst).",
    ),
    entry(
        0x8007_267C,
        Some("HRESULT_FROM_WIN32(DNS_ERROR_NO_DNS_SERVERS)"),
        "No DNS server is configured on the client, so it cannot look up a KMS host.",
        "Configure a DNS server in the network settings (or through DHCP), or name the KMS host by address with slmgr /skms.",
    ),
    entry(
        0x8007_274C,
        Some("HRESULT_FROM_WIN32(WSAETIMEDOUT)"),
        "The connection to the KMS host timed out: nothing answered on TCP 1688 at that address.",
        "Check the address the host name resolves to and that a firewall does not silently drop TCP 1688 on the path or on the host.",
    ),
    entry(
        0x8007_274D,
        Some("HRESULT_FROM_WIN32(WSAECONNREFUSED)"),
        "The KMS host's address actively refused the connection: nothing listens on the KMS port there.",
        "Start the KMS service on the host, or correct the port (slmgr /skms host:port on the client, slmgr /sprt on the host).",
    ),
    entry(
        0x8007_2AF9,
        Some("HRESULT_FROM_WIN32(WSAHOST_NOT_FOUND)"),
        "No such host is known: the KMS host name (set with slmgr /skms or taken from the SRV record) does not resolve to an address.",
        "Correct the host name, or add its A/AAAA record to DNS (an SRV record must point at a name that resolves).",
    ),
    entry(
        0xC004_C003,
        Some("SL_E_CHPA_PRODUCT_KEY_BLOCKED"),
        "Microsoft's activation server reports that the product key has been blocked.",
        "Install a different, legitimately obtained key (for volume licensing, from the Volume Licensing Service Center).",
    ),
    entry(
        0xC004_C008,
        Some("SL_E_CHPA_MAXIMUM_UNLOCK_EXCEEDED"),
        "The activation server reports that the key has reached its activation limit (seen with MAK and KMS host keys; a KMS host key sets up a limited number of hosts).",
        "Use another key, or ask the Microsoft Activation Center to raise the key's limit.",
    ),
    entry(
        0xC004_C020,
        Some("SL_E_CHPA_DMAK_LIMIT_EXCEEDED"),
        "The Multiple Activation Key has no activations left.",
        "Check the remaining count in the Volume Licensing Service Center or VAMT and ask the Microsoft Activation Center for more, or activate through KMS instead.",
    ),
    entry(
        0xC004_D104,
        Some("SL_REMAPPING_SP_STATUS_INVALIDARG"),
        "The security processor reported invalid data. Emulated KMS hosts (vlmcsd) return it when their table of client machine IDs is full.",
        "On such a host, enlarge the client table or let old entries expire; on Windows, check the licensing store for corruption.",
    ),
    entry(
        0xC004_D302,
        Some("SL_REMAPPING_SP_PUB_TS_REARMED"),
        "The licensing store has been rearmed; the rearm takes effect after a restart.",
        "Restart the computer, then look at the state with slmgr /dlv or slmgr /xpr.",
    ),
    entry(
        0xC004_D307,
        Some("SL_REMAPPING_SP_PUB_TS_MAX_REARM_REACHED"),
        "No rearm is left: the licensing state of this installation has already been reset as many times as allowed.",
        "Activate the installation (for Office, a KMS activation grants one more rearm) or rebuild the image; while generalising an image repeatedly, set SkipRearm so that only the last run rearms.",
    ),
    entry(
        0xC004_E003,
        Some("SL_E_EVALUATION_FAILED"),
        "The Software Licensing Service reported that licence evaluation failed, usually because licence files or system files the licensing relies on were changed or damaged.",
        "Undo the change (System Restore, or remove the software that altered the files), run sfc /scannow, reinstall the licence files with slmgr /rilc, then activate again.",
    ),
    entry(
        0xC004_F009,
        Some("SL_E_GRACE_TIME_EXPIRED"),
        "The grace period has expired; the product is in notification mode.",
        "Activate it: make a KMS host reachable (DNS _vlmcs._tcp record or slmgr /skms, TCP port 1688) and run slmgr /ato or ospp.vbs /act.",
    ),
    entry(
        0xC004_F00F,
        Some("SL_E_OUT_OF_TOLERANCE"),
        "The hardware has changed beyond what the licence tolerates (out-of-tolerance state).",
        "Activate again; a KMS client does so by itself at its next contact with a host.",
    ),
    entry(
        0xC004_F012,
        Some("SL_E_VALUE_NOT_FOUND"),
        "The Software Licensing Service could not find a value it looked up; the licensing store is often damaged.",
        "Rebuild the licensing store: stop the Software Protection service, rename its tokens.dat, restart the service, reinstall the licence files (slmgr /rilc) and the GVLK (slmgr /ipk), then activate.",
    ),
    entry(
        0xC004_F014,
        Some("SL_E_PKEY_NOT_INSTALLED"),
        "No product key is installed.",
        "Install the KMS client setup key (GVLK) with slmgr /ipk or ospp.vbs /inpkey, then activate.",
    ),
    entry(
        0xC004_F025,
        Some("SL_E_LUA_ACCESSDENIED"),
        "The action requires administrator rights.",
        "Run the command from an elevated command prompt.",
    ),
    entry(
        0xC004_F035,
        Some("SL_E_VL_NOT_WINDOWS_SLP"),
        "The computer cannot be activated with a volume licence key: volume-licensed Windows must upgrade a qualifying operating system, and the firmware shows none.",
        "Usual on machines whose BIOS carries no OEM Windows licence marker (or one for another version): have the vendor update the BIOS, or use a retail or OEM key instead.",
    ),
    entry(
        0xC004_F038,
        Some("SL_E_VL_NOT_ENOUGH_COUNT"),
        "The KMS host answered, but its count of distinct clients is below the product's activation threshold (25 for Windows client editions, 5 for Windows Server and for Office).",
        "Wait until enough clients have contacted the host; the product keeps working during its 30-day grace period. If the count stays low, look for duplicate client machine IDs from images that were not generalised with sysprep /generalize.",
    ),
    entry(
        0xC004_F039,
        Some("SL_E_VL_BINDING_SERVICE_NOT_ENABLED"),
        "The product could not be activated: the Key Management Service could not be used.",
        "Make sure TCP port 1688 (the default) is open between client and host and is not blocked by a firewall or filtered by security software.",
    ),
    entry(
        0xC004_F041,
        Some("SL_E_VL_KEY_MANAGEMENT_SERVICE_NOT_ACTIVATED"),
        "The KMS host is not activated itself.",
        "On the host, activate its KMS host key (slmgr /ato online, or by telephone with /dti and /atp) and check that slmgr /dlv reports it as licensed.",
    ),
    entry(
        0xC004_F042,
        Some("SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH"),
        "The KMS host cannot be used for this product: its host key does not cover the client's product or version.",
        "Install on the host a KMS host key for this product generation (with any update an older host needs to activate newer clients), or point the client at a host that has one (slmgr /skms, ospp.vbs /sethst).",
    ),
    entry(
        0xC004_F050,
        Some("SL_E_INVALID_PRODUCT_KEY"),
        "The product key is invalid.",
        "Check the key. If a KMS host running Windows 8, 8.1, Server 2012 or Server 2012 R2 returns it for newer clients, install the July 2016 update rollup (KB 3172614) on the host.",
    ),
    entry(
        0xC004_F051,
        Some("SL_E_BLOCKED_PRODUCT_KEY"),
        "The product key is blocked.",
        "Install a different key.",
    ),
    entry(
        0xC004_F056,
        Some("SL_E_VL_MACHINE_NOT_BOUND"),
        "The product could not be activated with the Key Management Service.",
        "Compare the client's events 12288/12289 with the host's event 12290 to see whether the request reached the host and what it answered.",
    ),
    entry(
        0xC004_F069,
        Some("SL_E_MISMATCHED_PRODUCT_SKU"),
        "The product SKU was not found: the key or activation ID does not match an installed product.",
        "Use the activation ID of an installed product (listed by slmgr /dlv all) or install the matching key.",
    ),
    entry(
        0xC004_F06B,
        Some("SL_E_VL_KEY_MANAGEMENT_SERVICE_VM_NOT_SUPPORTED"),
        "The licensing service runs in a virtual machine, where the Key Management Service is not supported in this mode.",
        "Host KMS on a version that supports virtual machines (Windows Vista SP1, Windows Server 2008 and later) or on a physical machine.",
    ),
    entry(
        0xC004_F06C,
        Some("SL_E_VL_INVALID_TIMESTAMP"),
        "The KMS host rejected the request's timestamp: the client's clock differs from the host's by more than four hours.",
        "Correct the date, time and time zone of the client (and of the host), then activate again.",
    ),
    entry(
        0xC004_F074,
        Some("SL_E_VL_BINDING_SERVICE_UNAVAILABLE"),
        "No Key Management Service host could be contacted.",
        "Check the DNS _vlmcs._tcp SRV record (or name a host with slmgr /skms), that TCP port 1688 is open, and the client's clock and time zone; the host logs event 12290 only for requests that reach it.",
    ),
    entry(
        0xC004_F081,
        Some("SL_E_VL_AD_AO_NOT_FOUND"),
        "The Active Directory activation object could not be found or is invalid.",
        "Create or repair the activation object with the Volume Activation Tools; meanwhile clients fall back to a KMS host they can discover.",
    ),
    entry(
        0xC004_F082,
        Some("SL_E_VL_AD_AO_NAME_TOO_LONG"),
        "The name given to the Active Directory activation object is too long.",
        "Choose a shorter display name when creating the object.",
    ),
    entry(
        0xC004_F083,
        Some("SL_E_VL_AD_SCHEMA_VERSION_NOT_SUPPORTED"),
        "The Active Directory schema does not support Active Directory-based activation.",
        "Extend the forest schema to the Windows Server 2012 level or later, or activate through KMS.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_sorted_and_unique() {
        for pair in CATALOG.windows(2) {
            assert!(
                pair[0].code < pair[1].code,
                "{:#} before {:#}",
                pair[0].code,
                pair[1].code
            );
        }
    }

    #[test]
    fn catalog_entries_are_filled_in() {
        for info in HResult::catalog() {
            assert_eq!(info.code.info(), Some(info));
            assert!(
                !info.description.is_empty() && !info.fix.is_empty(),
                "{:#}",
                info.code
            );
            assert!(
                info.description.ends_with('.') && info.fix.ends_with('.'),
                "{:#}",
                info.code
            );
            if let Some(name) = info.name {
                assert!(
                    name.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || "_()".contains(c)),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn required_codes_are_present_with_their_names() {
        let expected = [
            (0xC004_F038, Some("SL_E_VL_NOT_ENOUGH_COUNT")),
            (0xC004_F039, Some("SL_E_VL_BINDING_SERVICE_NOT_ENABLED")),
            (
                0xC004_F041,
                Some("SL_E_VL_KEY_MANAGEMENT_SERVICE_NOT_ACTIVATED"),
            ),
            (
                0xC004_F042,
                Some("SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH"),
            ),
            (0xC004_F050, Some("SL_E_INVALID_PRODUCT_KEY")),
            (0xC004_F06C, Some("SL_E_VL_INVALID_TIMESTAMP")),
            (0xC004_F074, Some("SL_E_VL_BINDING_SERVICE_UNAVAILABLE")),
            (0xC004_F035, Some("SL_E_VL_NOT_WINDOWS_SLP")),
            (0x8007_000D, Some("HRESULT_FROM_WIN32(ERROR_INVALID_DATA)")),
            (0x8007_0005, Some("E_ACCESSDENIED")),
            (0x8004_FE33, None),
            (0xC004_C003, Some("SL_E_CHPA_PRODUCT_KEY_BLOCKED")),
            // The rest of the SL_E_VL_* family in slerror.h.
            (0x4004_F040, Some("SL_E_VL_INFO_PRODUCT_USER_RIGHT")),
            (0xC004_F056, Some("SL_E_VL_MACHINE_NOT_BOUND")),
            (
                0xC004_F06B,
                Some("SL_E_VL_KEY_MANAGEMENT_SERVICE_VM_NOT_SUPPORTED"),
            ),
            (0xC004_F081, Some("SL_E_VL_AD_AO_NOT_FOUND")),
            (0xC004_F082, Some("SL_E_VL_AD_AO_NAME_TOO_LONG")),
            (0xC004_F083, Some("SL_E_VL_AD_SCHEMA_VERSION_NOT_SUPPORTED")),
            // Codes admins meet while clients look for and reach a host.
            (
                0x8007_232B,
                Some("HRESULT_FROM_WIN32(DNS_ERROR_RCODE_NAME_ERROR)"),
            ),
            (0x8007_251D, Some("HRESULT_FROM_WIN32(DNS_INFO_NO_RECORDS)")),
            (
                0x8007_06BA,
                Some("HRESULT_FROM_WIN32(RPC_S_SERVER_UNAVAILABLE)"),
            ),
            (0x8007_007B, Some("HRESULT_FROM_WIN32(ERROR_INVALID_NAME)")),
            (
                0x8007_0426,
                Some("HRESULT_FROM_WIN32(ERROR_SERVICE_NOT_ACTIVE)"),
            ),
            (0xC004_E003, Some("SL_E_EVALUATION_FAILED")),
            // Codes the crate's own constants name.
            (0xC004_D104, Some("SL_REMAPPING_SP_STATUS_INVALIDARG")),
            (
                0xC004_D307,
                Some("SL_REMAPPING_SP_PUB_TS_MAX_REARM_REACHED"),
            ),
        ];
        for (code, name) in expected {
            let info = HResult::new(code)
                .info()
                .unwrap_or_else(|| panic!("{code:#010X} missing"));
            assert_eq!(info.name, name, "{code:#010X}");
            assert_eq!(HResult::new(code).name(), name);
        }
        for constant in [
            HResult::INVALID_DATA,
            HResult::NOT_ENOUGH_COUNT,
            HResult::KMS_ID_MISMATCH,
            HResult::INVALID_TIMESTAMP,
            HResult::NO_HOST_REACHABLE,
            HResult::CLIENT_TABLE_FULL,
            HResult::ACCESS_DENIED,
            HResult::NOT_WINDOWS_SLP,
            HResult::BINDING_SERVICE_NOT_ENABLED,
            HResult::KMS_NOT_ACTIVATED,
            HResult::INVALID_PRODUCT_KEY,
            HResult::MACHINE_NOT_BOUND,
            HResult::MAX_REARM_REACHED,
            HResult::DNS_NAME_DOES_NOT_EXIST,
            HResult::DNS_NO_RECORDS,
            HResult::RPC_SERVER_UNAVAILABLE,
            HResult::TIMEOUT,
        ] {
            assert!(constant.info().is_some(), "{constant:#}");
        }
        // Success is catalogued like the failures, so it displays alike.
        assert_eq!(HResult::S_OK.name(), Some("S_OK"));
    }

    #[test]
    fn display_forms() {
        assert_eq!(
            HResult::NOT_ENOUGH_COUNT.to_string(),
            format!(
                "0xC004F038: {}",
                HResult::NOT_ENOUGH_COUNT.info().unwrap().description
            )
        );
        assert_eq!(format!("{:#}", HResult::NOT_ENOUGH_COUNT), "0xC004F038");
        assert_eq!(HResult::new(0xC004_F0FF).to_string(), "0xC004F0FF");
        assert_eq!(format!("{:#}", HResult::new(0xC004_F0FF)), "0xC004F0FF");
        assert_eq!(
            HResult::S_OK.to_string(),
            "0x00000000: The operation succeeded: the client is activated, or the host answered."
        );
        assert_eq!(format!("{:#}", HResult::S_OK), "0x00000000");
        assert_eq!(
            HResult::new(0x4004_F040).to_string().get(..12),
            Some("0x4004F040: ")
        );
    }

    #[test]
    fn from_str_forms() {
        let ok = |s: &str| s.parse::<HResult>();
        let want = Ok(HResult::new(0xC004_F038));
        assert_eq!(ok("0xC004F038"), want);
        assert_eq!(ok("0XC004F038"), want);
        assert_eq!(ok("0xc004f038"), want);
        assert_eq!(ok("C004F038"), want);
        assert_eq!(ok("c004f038"), want);
        assert_eq!(ok("3221549112"), want);
        assert_eq!(ok("-1073418184"), want);
        assert_eq!(ok("  0xC004F038\n"), want);
        // Bare eight digits are hex, shorter or longer digit runs decimal.
        assert_eq!(ok("80070005"), Ok(HResult::ACCESS_DENIED));
        assert_eq!(ok("13"), Ok(HResult::new(13)));
        assert_eq!(ok("0"), Ok(HResult::S_OK));
        assert_eq!(ok("0x0"), Ok(HResult::S_OK));
        assert_eq!(ok("4294967295"), Ok(HResult::new(u32::MAX)));
        assert_eq!(ok("-2147483648"), Ok(HResult::new(0x8000_0000)));
        assert_eq!(ok("-1"), Ok(HResult::new(u32::MAX)));

        assert_eq!(ok(""), Err(ParseHResultError::Empty));
        assert_eq!(ok("   "), Err(ParseHResultError::Empty));
        assert_eq!(ok("0x"), Err(ParseHResultError::Empty));
        assert_eq!(ok("-"), Err(ParseHResultError::Empty));
        assert_eq!(ok("0xC004F03G"), Err(ParseHResultError::InvalidDigit));
        assert_eq!(ok("C004F03"), Err(ParseHResultError::InvalidDigit));
        assert_eq!(ok("+5"), Err(ParseHResultError::InvalidDigit));
        assert_eq!(ok("--5"), Err(ParseHResultError::InvalidDigit));
        assert_eq!(ok("0x1C004F038"), Err(ParseHResultError::OutOfRange));
        assert_eq!(ok("4294967296"), Err(ParseHResultError::OutOfRange));
        assert_eq!(ok("-2147483649"), Err(ParseHResultError::OutOfRange));
        assert_eq!(
            ok("-99999999999999999999"),
            Err(ParseHResultError::OutOfRange)
        );
    }

    #[test]
    fn display_and_parse_round_trip() {
        for info in HResult::catalog() {
            assert_eq!(format!("{:#}", info.code).parse::<HResult>(), Ok(info.code));
        }
    }
}
