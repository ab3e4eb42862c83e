//! Decision hooks: an embedder's say in each request a [`KmsHost`](super::KmsHost) decides.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::event::RequestContext;
use super::responder::Answer;
use crate::message::RequestBody;
use crate::{HResult, Uuid};

/// A rule a [`KmsHost`](super::KmsHost) consults for every request that
/// passed the protocol's checks and names a KMS ID the host activates.
///
/// All three methods have defaults that change nothing, so a hook overrides
/// only what it needs:
///
/// 1. [`admit`](Self::admit) refuses a request before it is counted;
/// 2. [`capacity`](Self::capacity) caps the clients counted per application
///    (the store enforces it atomically, so hosts sharing a store agree);
/// 3. [`adjust`](Self::adjust) changes the answer (count, intervals, …).
///
/// ```
/// use kms_activation::host::{DecisionHook, RequestContext};
/// use kms_activation::message::RequestBody;
/// use kms_activation::HResult;
///
/// /// Refuses workstations whose name does not end in ".lab.example".
/// struct LabOnly;
/// impl DecisionHook for LabOnly {
///     fn admit(&self, _: &RequestContext, request: &RequestBody) -> Result<(), HResult> {
///         if request.workstation.ends_with(".lab.example") {
///             Ok(())
///         } else {
///             Err(HResult::ACCESS_DENIED)
///         }
///     }
/// }
/// let _hook: Box<dyn DecisionHook> = Box::new(LabOnly);
/// ```
pub trait DecisionHook: Send + Sync {
    /// Lets the request through (`Ok`) or refuses it with an HRESULT.
    ///
    /// # Errors
    ///
    /// The HRESULT is sent to the client; the request is not counted.
    fn admit(&self, context: &RequestContext, request: &RequestBody) -> Result<(), HResult> {
        let _ = (context, request);
        Ok(())
    }

    /// The most clients to count for `application_id`; a new client beyond
    /// it is refused with [`HResult::CLIENT_TABLE_FULL`]. `None`: no cap.
    fn capacity(&self, application_id: Uuid) -> Option<u64> {
        let _ = application_id;
        None
    }

    /// Changes the answer about to be sent.
    fn adjust(&self, context: &RequestContext, request: &RequestBody, answer: &mut Answer) {
        let _ = (context, request, answer);
    }
}

/// Admits only clients whose address lies in one of the listed networks;
/// others (and requests without a known peer) are refused with
/// [`HResult::ACCESS_DENIED`].
///
/// ```
/// use kms_activation::host::CidrAllowList;
///
/// let list: CidrAllowList = "10.0.0.0/8, 192.168.1.0/24, ::1/128".parse()?;
/// assert!(list.allows("10.1.2.3".parse()?));
/// assert!(!list.allows("192.168.2.1".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CidrAllowList {
    networks: Vec<IpNet>,
}

impl CidrAllowList {
    /// An allow-list of these networks.
    #[must_use]
    pub fn new(networks: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            networks: networks.into_iter().collect(),
        }
    }

    /// Whether `address` lies in a listed network. IPv4-mapped IPv6
    /// addresses (`::ffff:a.b.c.d`) are checked as IPv4.
    #[must_use]
    pub fn allows(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        self.networks.iter().any(|net| net.contains(&address))
    }
}

impl std::str::FromStr for CidrAllowList {
    type Err = ipnet::AddrParseError;

    /// Networks separated by commas or whitespace; a bare address is a
    /// single host.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|part| !part.is_empty())
            .map(|part| {
                part.parse::<IpNet>()
                    .or_else(|e| part.parse::<IpAddr>().map(IpNet::from).map_err(|_| e))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }
}

impl DecisionHook for CidrAllowList {
    fn admit(&self, context: &RequestContext, _: &RequestBody) -> Result<(), HResult> {
        match context.peer {
            Some(peer) if self.allows(peer.ip()) => Ok(()),
            _ => Err(HResult::ACCESS_DENIED),
        }
    }
}

/// Admits only the listed products: a request passes when its SKU ID or
/// its KMS ID is listed; others are refused with
/// [`HResult::KMS_ID_MISMATCH`], as a host without the matching CSVLK would.
///
/// ```
/// use kms_activation::host::ProductAllowList;
/// use kms_activation::Uuid;
///
/// let windows_11_pro = Uuid::from_u128(0x2de67392_b7a7_462a_b1ca_108dd189f588);
/// let list = ProductAllowList::default().with_sku(windows_11_pro);
/// assert!(list.allows(windows_11_pro, Uuid::nil()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProductAllowList {
    skus: HashSet<Uuid>,
    kms_ids: HashSet<Uuid>,
}

impl ProductAllowList {
    /// Also admits the SKU (activation ID) `sku_id`.
    #[must_use]
    pub fn with_sku(mut self, sku_id: Uuid) -> Self {
        self.skus.insert(sku_id);
        self
    }

    /// Also admits every SKU of the KMS ID `kms_id`.
    #[must_use]
    pub fn with_kms_id(mut self, kms_id: Uuid) -> Self {
        self.kms_ids.insert(kms_id);
        self
    }

    /// Whether a request for `sku_id` under `kms_id` is admitted.
    #[must_use]
    pub fn allows(&self, sku_id: Uuid, kms_id: Uuid) -> bool {
        self.skus.contains(&sku_id) || self.kms_ids.contains(&kms_id)
    }
}

impl DecisionHook for ProductAllowList {
    fn admit(&self, _: &RequestContext, request: &RequestBody) -> Result<(), HResult> {
        if self.allows(request.sku_id, request.kms_id) {
            Ok(())
        } else {
            Err(HResult::KMS_ID_MISMATCH)
        }
    }
}

/// Counts at most this many clients per application; a new client beyond
/// that is refused with [`HResult::CLIENT_TABLE_FULL`] while known clients
/// keep renewing.
///
/// ```
/// use kms_activation::host::{DecisionHook, MaxClients};
/// use kms_activation::Uuid;
///
/// assert_eq!(MaxClients(100).capacity(Uuid::nil()), Some(100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxClients(pub u64);

impl DecisionHook for MaxClients {
    fn capacity(&self, _: Uuid) -> Option<u64> {
        Some(self.0)
    }
}
