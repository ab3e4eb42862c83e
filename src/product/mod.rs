//! Product tables: applications, KMS counted IDs, SKUs, host keys (CSVLKs)
//! and Windows builds.
//!
//! The tables are generated once from `KmsDataBase.xml` (public domain,
//! copied under `tests/data/reference/`) into `src/product/data.rs` as
//! `static` slices sorted by GUID; every lookup is a binary search. Nothing is parsed
//! or allocated at run time (except the `Vec` that [`search_skus`] and its
//! siblings return). The generator is the test `tests/product_data.rs`; run
//! `KMS_REGENERATE=1 cargo test --test product_data` after changing its input.
//!
//! # The four kinds of IDs
//!
//! | ID | what it names | lookup |
//! |---|---|---|
//! | Application ID | Windows, Office 2010, Office 2013+ ([IDs](crate::message#application-ids)) | [`application`] |
//! | KMS ID ("KMS counted ID") | a product group a host counts clients for | [`kms_item`] |
//! | SKU ID (activation ID) | one edition, with its GVLK | [`sku`], [`sku_by_gvlk`] |
//! | CSVLK ID | a host key group, as shown by `slmgr /dlv` on a host | [`csvlk`] |
//!
//! A request names all three of application, KMS ID and SKU ID. A host answers
//! with the ePID of the CSVLK that covers the KMS ID ([`csvlk_for_kms`]) and
//! checks the application against [`application_for_kms`] (see
//! [what a host checks](crate::message#what-a-host-checks)).
//!
//! # Example
//!
//! ```
//! use kms_activation::{product, Uuid};
//!
//! let sku = product::sku_by_gvlk("NPPR9-FWDCX-D2C8J-H872K-2YT43").unwrap();
//! assert_eq!(sku.name(), "Windows 10/11 Enterprise");
//! let kms = sku.kms_item().unwrap();
//! assert_eq!(kms.n_count_policy(), 25);
//! assert_eq!(kms.application().unwrap().name(), "Windows");
//!
//! // Office LTSC 2021 host key, as `slmgr /dlv` shows it.
//! let host_key = product::csvlk(Uuid::from_u128(0x47f3b983_7c53_4d45_abc6_bcd91e2dd90a)).unwrap();
//! assert_eq!(host_key.group_id(), Some(206));
//!
//! // Unknown IDs are an ordinary `None`.
//! assert!(product::sku(Uuid::nil()).is_none());
//! ```
//!
//! # Which keys activate what
//!
//! The XML lists for each CSVLK only the KMS IDs it is the own key of, and
//! a few of those lists are wrong. The generator adds, as explicit data,
//! what Microsoft's activation tables say each host key activates
//! ([`Csvlk::activates`]), and fixes the known errors in a documented
//! correction table:
//!
//! * The three Windows Server 2022 CSVLKs list KMS ID
//!   `10a7e9fb-ca8c-5352-88f5-91b8dbe13b22`, which nothing defines; they are
//!   the keys of the Windows Server 2022 KMS ID `b74263e4-…`.
//! * The Windows 10 and 8.1 and the Vista pre-release CSVLKs list undefined
//!   pre-release KMS IDs (`5f94a0bb-…`, `e4ce4674-…`): dropped.
//! * The Windows 10 LTSB 2016 CSVLKs list Windows 10 LTSC 2019, a newer
//!   product: dropped.
//!
//! The generator fails on any other reference to a KMS ID, SKU or CSVLK
//! that does not exist.
//!
//! # Other gaps in the source data
//!
//! * Two CSVLK entries share the ID `fe27276b-a5a9-4b4d-88e3-14271beb79be`
//!   (Windows Server 2012 / 2012 R2 internal lab); [`csvlk`] returns the first
//!   and [`csvlks_with_id`] both. One CSVLK (Office 2013 pre-release) has no
//!   ID at all ([`Csvlk::id`] is `None`).
//! * The Windows Server version 1709 GVLKs are missing from the XML; they are
//!   added from Microsoft's published GVLK table ([`Source::GvlkSeed`]) under
//!   the SKU IDs the version 1803 editions use (a public key list maps both
//!   versions of each edition to the same activation ID). Two [`Sku`] rows
//!   therefore share each of those SKU IDs; [`sku`] returns the XML row and
//!   [`skus_with_id`] both.
//! * The XML gives Windows Server 2025 Datacenter: Azure Edition another key
//!   than the one Microsoft publishes (`XGN3F-F394H-FD2MY-PP6FD-8MCRC`); the
//!   published key is added as a [`Source::GvlkSeed`] row with the same SKU ID.

#[rustfmt::skip]
mod data;
mod search;

use std::sync::OnceLock;

use chrono::NaiveDate;
use uuid::Uuid;

pub use search::{
    CsvlkLookupError, ProductRef, SkuLookupError, find_csvlk, find_product, find_sku,
    search_csvlks, search_kms_items, search_skus,
};

/// Where a catalog row comes from.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Source {
    /// `KmsDataBase.xml`.
    KmsDatabase,
    /// Microsoft's published GVLK tables (`gvlk-windows-seed.csv`,
    /// `gvlk-windows-current.csv`), for a key the XML lacks.
    GvlkSeed,
}

/// An application: Windows, Office 2010 or Office 2013 and later.
///
/// Each KMS ID belongs to one application, and a host keeps one client count
/// per application ([count semantics](crate::message#count-intervals-epid-and-hardware-id)).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Application {
    id: Uuid,
    name: &'static str,
    min_active_clients: u32,
    vlmcsd_index: u8,
}

impl Application {
    /// The application ID sent in every request.
    #[must_use]
    pub const fn id(&self) -> Uuid {
        self.id
    }

    /// Display name from the XML, e.g. `"Windows"`.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// How many clients a host should keep counted for this application
    /// (`MinActiveClients`: 50 for Windows, 10 for Office).
    #[must_use]
    pub const fn min_active_clients(&self) -> u32 {
        self.min_active_clients
    }

    /// vlmcsd's ePID slot for KMS IDs of this application it does not know.
    #[must_use]
    pub const fn vlmcsd_index(&self) -> u8 {
        self.vlmcsd_index
    }

    /// The KMS IDs of this application, in catalog (GUID) order.
    pub fn kms_items(&self) -> impl Iterator<Item = &'static KmsItem> + use<> {
        let id = self.id;
        kms_items().iter().filter(move |k| k.application_id == id)
    }
}

/// A KMS counted ID ("KmsItem"): the product group a host counts and
/// activates as one.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KmsItem {
    id: Uuid,
    name: &'static str,
    application_id: Uuid,
    n_count_policy: u32,
    default_protocol_major: u16,
    is_retail: bool,
    is_preview: bool,
    can_map_to_default_csvlk: bool,
}

impl KmsItem {
    /// The KMS ID sent in requests.
    #[must_use]
    pub const fn id(&self) -> Uuid {
        self.id
    }

    /// Display name from the XML, e.g. `"Windows 10/11 2015 (Volume)"`.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The application this KMS ID belongs to.
    #[must_use]
    pub const fn application_id(&self) -> Uuid {
        self.application_id
    }

    /// The application record this KMS ID belongs to.
    #[must_use]
    pub fn application(&self) -> Option<&'static Application> {
        application(self.application_id)
    }

    /// The N-count policy: how many active clients the host must report
    /// before a client of this group activates (25 for Windows clients,
    /// 5 for servers and Office).
    #[must_use]
    pub const fn n_count_policy(&self) -> u32 {
        self.n_count_policy
    }

    /// Major version of the KMS protocol clients of this group use by
    /// default (4, 5 or 6; the minor version is always 0).
    #[must_use]
    pub const fn default_protocol_major(&self) -> u16 {
        self.default_protocol_major
    }

    /// A retail product group, which a genuine KMS host refuses
    /// (`IsRetail` in the XML).
    #[must_use]
    pub const fn is_retail(&self) -> bool {
        self.is_retail
    }

    /// A pre-release product group, which a genuine KMS host refuses
    /// (`IsPreview` in the XML).
    #[must_use]
    pub const fn is_preview(&self) -> bool {
        self.is_preview
    }

    /// Whether vlmcsd may serve this group from its default Windows slot
    /// (`CanMapToDefaultCsvlk`, default true).
    #[must_use]
    pub const fn can_map_to_default_csvlk(&self) -> bool {
        self.can_map_to_default_csvlk
    }

    /// The SKUs counted under this KMS ID, in catalog order.
    pub fn skus(&self) -> impl Iterator<Item = &'static Sku> + use<> {
        let id = self.id;
        skus().iter().filter(move |s| s.kms_id == id)
    }

    /// Every CSVLK that activates this KMS ID.
    pub fn csvlks(&self) -> impl Iterator<Item = &'static Csvlk> + use<> {
        csvlks_activating(self.id)
    }
}

/// A SKU: one edition's activation ID, with its GVLK.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sku {
    id: Uuid,
    name: &'static str,
    gvlk: &'static str,
    kms_id: Uuid,
    is_generated_gvlk: bool,
    source: Source,
}

impl Sku {
    /// The SKU ID (activation ID) sent in requests.
    #[must_use]
    pub const fn id(&self) -> Uuid {
        self.id
    }

    /// Display name, e.g. `"Office LTSC Professional Plus 2024"`.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The generic volume license key (KMS client setup key).
    #[must_use]
    pub const fn gvlk(&self) -> &'static str {
        self.gvlk
    }

    /// Whether the XML marks the GVLK as generated rather than published
    /// (`IsGeneratedGvlk`).
    #[must_use]
    pub const fn is_generated_gvlk(&self) -> bool {
        self.is_generated_gvlk
    }

    /// The KMS ID this SKU counts under.
    #[must_use]
    pub const fn kms_id(&self) -> Uuid {
        self.kms_id
    }

    /// The KMS item this SKU counts under.
    #[must_use]
    pub fn kms_item(&self) -> Option<&'static KmsItem> {
        kms_item(self.kms_id)
    }

    /// The application of this SKU's KMS item.
    #[must_use]
    pub fn application(&self) -> Option<&'static Application> {
        self.kms_item().and_then(KmsItem::application)
    }

    /// Where this row comes from.
    #[must_use]
    pub const fn source(&self) -> Source {
        self.source
    }
}

/// An inclusive range of CSVLK key IDs (the `KKK-KKKKKK` part of an ePID).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyIdRange {
    min: u32,
    max: u32,
}

impl KeyIdRange {
    /// Smallest key ID in the range.
    #[must_use]
    pub const fn min(&self) -> u32 {
        self.min
    }

    /// Largest key ID in the range (inclusive).
    #[must_use]
    pub const fn max(&self) -> u32 {
        self.max
    }

    /// Whether `key_id` lies in the range.
    #[must_use]
    pub const fn contains(&self, key_id: u32) -> bool {
        self.min <= key_id && key_id <= self.max
    }
}

/// A CSVLK: a KMS host key group, with what it activates and how its
/// ePIDs look.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Csvlk {
    id: Option<Uuid>,
    name: &'static str,
    group_id: Option<u32>,
    key_ids: Option<KeyIdRange>,
    release_date: Option<NaiveDate>,
    is_lab: bool,
    is_preview: bool,
    vlmcsd_index: Option<u8>,
    epid: Option<&'static str>,
    discouraged_build_indices: &'static [u8],
    is_server_key: bool,
    own: &'static [Uuid],
    activates: &'static [Uuid],
}

impl Csvlk {
    /// The CSVLK's activation ID (`slmgr /dlv` on the host), `None` for the
    /// one XML entry without an ID (Office 2013 pre-release).
    #[must_use]
    pub const fn id(&self) -> Option<Uuid> {
        self.id
    }

    /// Display name, e.g. `"Windows Server 2019"`.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The ePID group ID (`GGGGG`), if the XML gives one.
    #[must_use]
    pub const fn group_id(&self) -> Option<u32> {
        self.group_id
    }

    /// The key-ID range for ePIDs, if the XML gives one.
    #[must_use]
    pub const fn key_ids(&self) -> Option<KeyIdRange> {
        self.key_ids
    }

    /// The release date, if the XML gives one.
    #[must_use]
    pub const fn release_date(&self) -> Option<NaiveDate> {
        self.release_date
    }

    /// A Microsoft-internal lab key.
    #[must_use]
    pub const fn is_lab(&self) -> bool {
        self.is_lab
    }

    /// A pre-release key.
    #[must_use]
    pub const fn is_preview(&self) -> bool {
        self.is_preview
    }

    /// A key Microsoft uses only in Azure (its name says so, e.g.
    /// `"Windows Server 2022 (Azure-only)"`); a host prefers the general key
    /// of the same product.
    #[must_use]
    pub fn is_azure_only(&self) -> bool {
        let name = self.name.to_ascii_lowercase();
        name.contains("azure-only") || name.contains("azure only")
    }

    /// vlmcsd's ePID slot for this key, if it exports one.
    #[must_use]
    pub const fn vlmcsd_index(&self) -> Option<u8> {
        self.vlmcsd_index
    }

    /// The sample ePID the XML gives for this key, if any.
    #[must_use]
    pub const fn sample_epid(&self) -> Option<&'static str> {
        self.epid
    }

    /// The KMS IDs this key is the own host key of: the XML's list, with
    /// its known errors corrected (see the module docs). A host holding
    /// several keys answers these KMS IDs with this key's ePID.
    #[must_use]
    pub const fn own_kms_ids(&self) -> &'static [Uuid] {
        self.own
    }

    /// Every KMS ID a host holding this key activates, sorted: its own, and
    /// what Microsoft's activation tables say it covers besides (older
    /// servers and the client editions listed for its group; see
    /// [`Csvlk::activates`]). Never a retail KMS ID.
    #[must_use]
    pub const fn activated_kms_ids(&self) -> &'static [Uuid] {
        self.activates
    }

    /// Whether a host holding this key activates `kms_id`, as Microsoft's
    /// activation tables say (generated data, not a guess):
    ///
    /// * a Windows Server key activates every older Windows Server and the
    ///   client editions listed for its group (the Server 2022 key: Windows
    ///   11/10, LTSC 2019/2021, LTSB 2016/2015, 8.1 and 7);
    /// * the Server 2008 R2 / 2008 channels A < B < C activate their own
    ///   channel and every lower one, and Windows 7 / Vista;
    /// * a client key activates client editions only;
    /// * no key activates a product newer than itself, or a retail group.
    ///
    /// A host also refuses pre-release groups and KMS IDs sent with another
    /// application's ID ([`volume_kms_item`]).
    ///
    /// ```
    /// use kms_activation::{product, Uuid};
    ///
    /// let server_2022 = product::csvlk(Uuid::from_u128(0x661f7658_7035_4b4c_9f35_010682943ec2)).unwrap();
    /// let windows_10_11 = Uuid::from_u128(0x58e2134f_8e11_4d17_9cb2_91069c151148);
    /// let server_2025 = Uuid::from_u128(0x4b83307d_7788_50ff_8d1f_1861915bdb9d);
    /// assert!(server_2022.activates(windows_10_11));
    /// assert!(!server_2022.activates(server_2025));
    /// ```
    #[must_use]
    pub fn activates(&self, kms_id: Uuid) -> bool {
        self.activates.binary_search(&kms_id).is_ok()
    }

    /// Whether this is the own host key of `kms_id` ([`Csvlk::own_kms_ids`]).
    #[must_use]
    pub fn is_own_key_of(&self, kms_id: Uuid) -> bool {
        self.own.contains(&kms_id)
    }

    /// A Windows Server host key: it can only be installed on a Windows
    /// Server, so its ePIDs never name a client-only build
    /// ([`WinBuild::may_be_server`]).
    #[must_use]
    pub const fn is_server_key(&self) -> bool {
        self.is_server_key
    }

    /// The defined KMS items this key activates.
    pub fn kms_items(&self) -> impl Iterator<Item = &'static KmsItem> + use<> {
        self.activates.iter().filter_map(|id| kms_item(*id))
    }

    /// Whether ePIDs of this key may name host build `build`: a build the
    /// XML does not discourage for the key ([`Csvlk::discouraged_builds`]),
    /// and for a Windows Server key a build that can be a server.
    #[must_use]
    pub fn allows_host_build(&self, build: &WinBuild) -> bool {
        (!self.is_server_key || build.may_be_server)
            && !self.discouraged_builds().any(|b| b.build == build.build)
    }

    /// Host builds the XML discourages for ePIDs of this key
    /// (`InvalidWinBuild`, indexes into the builds usable for ePIDs).
    /// [`crate::epid::generate`] never uses them; the validator in
    /// [`crate::epid`] reports only a server key on a client build.
    pub fn discouraged_builds(&self) -> impl Iterator<Item = &'static WinBuild> + use<> {
        self.discouraged_build_indices.iter().filter_map(|i| {
            builds()
                .iter()
                .filter(|b| b.use_for_epid)
                .nth(usize::from(*i))
        })
    }
}

/// A known Windows build a KMS host may run.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WinBuild {
    build: u32,
    name: &'static str,
    platform_id: u32,
    release_date: NaiveDate,
    use_for_epid: bool,
    may_be_server: bool,
    uses_ndr64: bool,
}

impl WinBuild {
    /// The build number, e.g. 17763.
    #[must_use]
    pub const fn build(&self) -> u32 {
        self.build
    }

    /// Display name, e.g. `"Windows 10 1809 / Server 2019"`.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The ePID platform ID (`PPPPP`) of hosts on this build.
    #[must_use]
    pub const fn platform_id(&self) -> u32 {
        self.platform_id
    }

    /// General-availability date.
    #[must_use]
    pub const fn release_date(&self) -> NaiveDate {
        self.release_date
    }

    /// An RTM server build suited to generated ePIDs (`UseForEpid`).
    #[must_use]
    pub const fn is_usable_for_epid(&self) -> bool {
        self.use_for_epid
    }

    /// A build that can be a Windows Server (`MayBeServer`).
    #[must_use]
    pub const fn may_be_server(&self) -> bool {
        self.may_be_server
    }

    /// Whether genuine hosts on this build offer NDR64 (`UsesNDR64`).
    #[must_use]
    pub const fn uses_ndr64(&self) -> bool {
        self.uses_ndr64
    }
}

/// `NaiveDate` from a date the generator has already checked; never fails in
/// practice (the integrity tests compare every date with the XML).
const fn ymd(year: i32, month: u32, day: u32) -> NaiveDate {
    match NaiveDate::from_ymd_opt(year, month, day) {
        Some(d) => d,
        None => NaiveDate::MIN,
    }
}

/// Every application, sorted by ID.
#[must_use]
pub fn applications() -> &'static [Application] {
    &data::APPLICATIONS
}

/// Every KMS item, sorted by ID.
#[must_use]
pub fn kms_items() -> &'static [KmsItem] {
    &data::KMS_ITEMS
}

/// Every SKU, sorted by ID (rows sharing an ID: XML first).
#[must_use]
pub fn skus() -> &'static [Sku] {
    &data::SKUS
}

/// Every CSVLK, sorted by ID (the one without an ID first).
#[must_use]
pub fn csvlks() -> &'static [Csvlk] {
    &data::CSVLKS
}

/// Every known Windows build, sorted by build number.
#[must_use]
pub fn builds() -> &'static [WinBuild] {
    &data::BUILDS
}

/// The rows of `slice` whose key equals `key` (the slice is sorted by key).
fn equal_range<'a, T, K: Ord>(slice: &'a [T], key: &K, key_of: impl Fn(&T) -> K) -> &'a [T] {
    let start = slice.partition_point(|t| key_of(t) < *key);
    let rest = slice.get(start..).unwrap_or_default();
    let len = rest.partition_point(|t| key_of(t) == *key);
    rest.get(..len).unwrap_or_default()
}

/// The application with this ID.
///
/// ```
/// use kms_activation::{product, Uuid};
/// let office = product::application(Uuid::from_u128(0x0ff1ce15_a989_479d_af46_f275c6370663)).unwrap();
/// assert_eq!(office.min_active_clients(), 10);
/// ```
#[must_use]
pub fn application(id: Uuid) -> Option<&'static Application> {
    equal_range(applications(), &id.as_u128(), |a| a.id.as_u128()).first()
}

/// The KMS item with this KMS ID.
///
/// ```
/// use kms_activation::{product, Uuid};
/// // Windows 8.1 (Retail): known, but a genuine host refuses it.
/// let k = product::kms_item(Uuid::from_u128(0x6d646890_3606_461a_86ab_598bb84ace82)).unwrap();
/// assert!(k.is_retail());
/// ```
#[must_use]
pub fn kms_item(id: Uuid) -> Option<&'static KmsItem> {
    equal_range(kms_items(), &id.as_u128(), |k| k.id.as_u128()).first()
}

/// The SKU with this SKU ID (activation ID). Where a seed row shares the ID
/// of an XML row, the XML row.
///
/// ```
/// use kms_activation::{product, Uuid};
/// let s = product::sku(Uuid::from_u128(0x73111121_5638_40f6_bc11_f1d7b0d64300)).unwrap();
/// assert_eq!(s.gvlk(), "NPPR9-FWDCX-D2C8J-H872K-2YT43");
/// ```
#[must_use]
pub fn sku(id: Uuid) -> Option<&'static Sku> {
    skus_with_id(id).first()
}

/// Every SKU row with this SKU ID (more than one only for IDs that also have
/// a [`Source::GvlkSeed`] row).
#[must_use]
pub fn skus_with_id(id: Uuid) -> &'static [Sku] {
    equal_range(skus(), &id.as_u128(), |s| s.id.as_u128())
}

/// The SKU whose GVLK is `gvlk` (ASCII case-insensitive, dashes required).
///
/// ```
/// use kms_activation::product;
/// let s = product::sku_by_gvlk("xj2xn-fw8rk-p4hmp-dkdbv-gcvgb").unwrap();
/// assert_eq!(s.name(), "Office LTSC Professional Plus 2024");
/// assert!(product::sku_by_gvlk("AAAAA-AAAAA-AAAAA-AAAAA-AAAAA").is_none());
/// ```
#[must_use]
pub fn sku_by_gvlk(gvlk: &str) -> Option<&'static Sku> {
    let mut key = [0u8; 29];
    if gvlk.len() != key.len() {
        return None;
    }
    for (dst, src) in key.iter_mut().zip(gvlk.bytes()) {
        *dst = src.to_ascii_uppercase();
    }
    let i = data::GVLK_INDEX
        .binary_search_by(|(g, _)| g.as_bytes().cmp(&key[..]))
        .ok()?;
    let (_, row) = data::GVLK_INDEX.get(i)?;
    skus().get(usize::from(*row))
}

/// The CSVLK with this ID (the first, for the one duplicated ID).
///
/// ```
/// use kms_activation::{product, Uuid};
/// let c = product::csvlk(Uuid::from_u128(0x2e7a9ad1_a849_4b56_babe_17d5a29fe4b4)).unwrap();
/// assert_eq!(c.name(), "Windows Server 2019");
/// assert!(c.key_ids().unwrap().contains(565_184_251));
/// ```
#[must_use]
pub fn csvlk(id: Uuid) -> Option<&'static Csvlk> {
    csvlks_with_id(id).first()
}

/// Every CSVLK entry with this ID.
#[must_use]
pub fn csvlks_with_id(id: Uuid) -> &'static [Csvlk] {
    equal_range(csvlks(), &Some(id.as_u128()), |c| c.id.map(|u| u.as_u128()))
}

/// Every CSVLK that activates `kms_id`, in catalog order.
pub fn csvlks_activating(kms_id: Uuid) -> impl Iterator<Item = &'static Csvlk> + use<> {
    csvlks().iter().filter(move |c| c.activates(kms_id))
}

/// The CSVLK a host would answer with for `kms_id`: among the keys that
/// activate it, its own key ([`Csvlk::is_own_key_of`]) before a key that
/// covers it, then a production key (not lab, not pre-release) with an ePID
/// group and key range, a general key before an Azure-only one, the most
/// recently released one.
///
/// `None` when no CSVLK in the catalog activates the KMS ID (unknown IDs and
/// the gaps listed in the module docs); a host then uses its default key.
///
/// ```
/// use kms_activation::{product, Uuid};
/// // Office LTSC 2021 KMS ID -> the Office LTSC 2021 host key.
/// let c = product::csvlk_for_kms(Uuid::from_u128(0x86d50b16_4808_41af_b83b_b338274318b2)).unwrap();
/// assert_eq!(c.id(), Some(Uuid::from_u128(0x47f3b983_7c53_4d45_abc6_bcd91e2dd90a)));
/// ```
#[must_use]
pub fn csvlk_for_kms(kms_id: Uuid) -> Option<&'static Csvlk> {
    // The choice depends on the catalog alone: made once per KMS item, then
    // looked up by the item's position (the KMS items are sorted by ID).
    static PREFERRED: OnceLock<Vec<Option<&'static Csvlk>>> = OnceLock::new();
    let preferred = PREFERRED.get_or_init(|| {
        kms_items()
            .iter()
            .map(|item| preferred_csvlk(item.id))
            .collect()
    });
    let index = kms_items().partition_point(|k| k.id.as_u128() < kms_id.as_u128());
    kms_items()
        .get(index)
        .filter(|item| item.id == kms_id)
        .and_then(|_| preferred.get(index).copied().flatten())
}

/// The ranking of [`csvlk_for_kms`], over every CSVLK of the catalog.
fn preferred_csvlk(kms_id: Uuid) -> Option<&'static Csvlk> {
    csvlks_activating(kms_id).max_by_key(|c| {
        (
            c.is_own_key_of(kms_id),
            !c.is_lab && !c.is_preview,
            c.group_id.is_some() && c.key_ids.is_some(),
            !c.is_azure_only(),
            c.release_date,
        )
    })
}

/// The application a KMS ID belongs to; a host compares it with the
/// request's application ID (step 6 of
/// [what a host checks](crate::message#what-a-host-checks)).
#[must_use]
pub fn application_for_kms(kms_id: Uuid) -> Option<&'static Application> {
    kms_item(kms_id).and_then(KmsItem::application)
}

/// The KMS item a genuine host accepts for a request naming `kms_id` and
/// `application_id`: a KMS ID of the catalog, of that application, neither
/// retail nor pre-release. `None` means the host refuses with
/// [`HResult::KMS_ID_MISMATCH`](crate::HResult::KMS_ID_MISMATCH) whatever
/// keys it holds; otherwise it answers when a held key
/// [activates](Csvlk::activates) the KMS ID.
///
/// ```
/// use kms_activation::{product, Uuid};
/// let windows: Uuid = "55c92734-d682-4d71-983e-d6ec3f16059f".parse().unwrap();
/// let windows_10_11: Uuid = "58e2134f-8e11-4d17-9cb2-91069c151148".parse().unwrap();
/// let windows_10_retail: Uuid = "e1c51358-fe3e-4203-a4a2-3b6b20c9734e".parse().unwrap();
/// assert!(product::volume_kms_item(windows_10_11, windows).is_some());
/// assert!(product::volume_kms_item(windows_10_retail, windows).is_none());
/// assert!(product::volume_kms_item(windows_10_11, Uuid::nil()).is_none());
/// ```
#[must_use]
pub fn volume_kms_item(kms_id: Uuid, application_id: Uuid) -> Option<&'static KmsItem> {
    kms_item(kms_id)
        .filter(|item| !item.is_retail && !item.is_preview && item.application_id == application_id)
}

/// The application ID of Windows; every other application is an Office.
pub(crate) const WINDOWS_APPLICATION: Uuid =
    Uuid::from_u128(0x55c9_2734_d682_4d71_983e_d6ec_3f16_059f);

/// The build record with exactly this build number.
#[must_use]
pub fn build(number: u32) -> Option<&'static WinBuild> {
    let i = builds().binary_search_by_key(&number, |b| b.build).ok()?;
    builds().get(i)
}

/// The largest known build not above `number`: the one whose platform ID
/// and release date an ePID for a host on build `number` uses.
///
/// ```
/// use kms_activation::product;
/// assert_eq!(product::build_at_or_below(9200).unwrap().platform_id(), 5426);
/// assert_eq!(product::build_at_or_below(26200).unwrap().platform_id(), 3612);
/// assert!(product::build_at_or_below(1000).is_none());
/// ```
#[must_use]
pub fn build_at_or_below(number: u32) -> Option<&'static WinBuild> {
    let n = builds().partition_point(|b| b.build <= number);
    builds().get(n.checked_sub(1)?)
}
