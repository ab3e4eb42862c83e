//! Case-insensitive, token-based name search over the catalog.
//!
//! A name and a query are split into words at every character that is not an
//! ASCII letter or digit (`"Windows 10/11 Pro"` → `windows`, `10`, `11`,
//! `pro`), a few common abbreviations are expanded (`pro` → `professional`,
//! `proplus` → `professional plus`, …) and words are compared ignoring ASCII
//! case. A name matches when it contains every word of the query, in any
//! order. Matches are ranked by how few words of the name the query leaves
//! unmatched (an exact name first), then in catalog order.
//!
//! [`find_sku`] resolves what an admin types for a product (a SKU ID, a GVLK
//! or a name) to exactly one SKU, or says why it cannot.

use std::fmt;

use super::{Csvlk, KmsItem, Sku, csvlk, csvlks, kms_items, sku, sku_by_gvlk, skus};
use crate::{ProductKey, Uuid};

/// Abbreviations and their expansions (both sides are expanded the same way).
const SYNONYMS: &[(&str, &[&str])] = &[
    ("pro", &["professional"]),
    ("proplus", &["professional", "plus"]),
    ("ent", &["enterprise"]),
    ("edu", &["education"]),
    ("std", &["standard"]),
    ("dc", &["datacenter"]),
    ("win", &["windows"]),
    ("workstations", &["workstation"]),
];

/// The canonical words of a text.
struct Words<'a> {
    raw: core::str::Split<'a, fn(char) -> bool>,
    pending: &'static [&'static str],
}

fn is_separator(c: char) -> bool {
    !c.is_ascii_alphanumeric()
}

impl<'a> Words<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            raw: text.split(is_separator as fn(char) -> bool),
            pending: &[],
        }
    }
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if let Some((first, rest)) = self.pending.split_first() {
            self.pending = rest;
            return Some(first);
        }
        loop {
            let word = self.raw.next()?;
            if word.is_empty() {
                continue;
            }
            match SYNONYMS
                .iter()
                .find(|(abbr, _)| abbr.eq_ignore_ascii_case(word))
            {
                Some((_, expansion)) => {
                    if let Some((first, rest)) = expansion.split_first() {
                        self.pending = rest;
                        return Some(first);
                    }
                }
                None => return Some(word),
            }
        }
    }
}

fn contains_word(text: &str, word: &str) -> bool {
    Words::new(text).any(|w| w.eq_ignore_ascii_case(word))
}

/// How many words of `name` the query leaves unmatched, or `None` when the
/// name lacks a word of the query (or the query has no word).
fn score(name: &str, query: &str) -> Option<usize> {
    let mut words = Words::new(query).peekable();
    words.peek()?;
    if !words.all(|word| contains_word(name, word)) {
        return None;
    }
    Some(
        Words::new(name)
            .filter(|w| !contains_word(query, w))
            .count(),
    )
}

fn ranked<T>(
    items: &'static [T],
    name: impl Fn(&T) -> &'static str,
    query: &str,
) -> Vec<&'static T> {
    scored(items, name, query)
        .into_iter()
        .map(|(_, item)| item)
        .collect()
}

/// Matches with their score (unmatched name words), best first.
fn scored<T>(
    items: &'static [T],
    name: impl Fn(&T) -> &'static str,
    query: &str,
) -> Vec<(usize, &'static T)> {
    let mut hits: Vec<(usize, usize, &'static T)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| score(name(item), query).map(|s| (s, i, item)))
        .collect();
    hits.sort_by_key(|&(unmatched, i, _)| (unmatched, i));
    hits.into_iter()
        .map(|(unmatched, _, item)| (unmatched, item))
        .collect()
}

/// SKUs whose display name holds every word of `query` (case-insensitive),
/// best match first.
///
/// ```
/// use kms_activation::product;
/// let hits = product::search_skus("windows 11 enterprise");
/// assert_eq!(hits[0].name(), "Windows 10/11 Enterprise");
/// assert!(hits.iter().all(|s| s.name().contains("11") && s.name().contains("Enterprise")));
/// let hits = product::search_skus("Office LTSC 2024 ProPlus");
/// assert_eq!(hits[0].gvlk(), "XJ2XN-FW8RK-P4HMP-DKDBV-GCVGB");
/// assert!(product::search_skus("windows 11 toaster").is_empty());
/// ```
#[must_use]
pub fn search_skus(query: &str) -> Vec<&'static Sku> {
    ranked(skus(), |s| s.name, query)
}

/// KMS items whose display name matches `query`, best match first.
///
/// ```
/// use kms_activation::product;
/// assert_eq!(product::search_kms_items("office 2021")[0].name(), "Office 2021");
/// ```
#[must_use]
pub fn search_kms_items(query: &str) -> Vec<&'static KmsItem> {
    ranked(kms_items(), |k| k.name, query)
}

/// CSVLKs whose display name matches `query`, best match first.
///
/// ```
/// use kms_activation::product;
/// assert_eq!(product::search_csvlks("server 2019")[0].name(), "Windows Server 2019");
/// ```
#[must_use]
pub fn search_csvlks(query: &str) -> Vec<&'static Csvlk> {
    ranked(csvlks(), |c| c.name, query)
}

/// Why [`find_sku`] found no single SKU.
///
/// Its `Debug` names the candidates of an ambiguous lookup (the first eight,
/// then how many more) rather than printing every SKU whole.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SkuLookupError {
    /// A SKU ID that is not in the catalog.
    #[error("no SKU has the ID {0}")]
    UnknownSkuId(Uuid),
    /// A well-formed product key that is not a GVLK of the catalog.
    #[error("{0} is not the GVLK of any product in the catalog")]
    NotAGvlk(String),
    /// No SKU name holds every word of the text.
    #[error("no product name matches {0:?}")]
    NoMatch(String),
    /// Several SKUs match equally well; the caller must choose.
    #[error("{} products match {query:?} equally well", candidates.len())]
    Ambiguous {
        /// The text given.
        query: String,
        /// The equally good matches, in catalog order, followed by the
        /// weaker ones.
        candidates: Vec<&'static Sku>,
    },
}

/// How many candidates of [`SkuLookupError::Ambiguous`] its `Debug` names.
const DEBUG_CANDIDATES: usize = 8;

impl fmt::Debug for SkuLookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownSkuId(id) => f.debug_tuple("UnknownSkuId").field(id).finish(),
            Self::NotAGvlk(key) => f.debug_tuple("NotAGvlk").field(key).finish(),
            Self::NoMatch(query) => f.debug_tuple("NoMatch").field(query).finish(),
            Self::Ambiguous { query, candidates } => f
                .debug_struct("Ambiguous")
                .field("query", query)
                .field("candidates", &SkuNames(candidates))
                .finish(),
        }
    }
}

/// SKUs listed by name in `Debug`, the first few only.
struct SkuNames<'a>(&'a [&'static Sku]);

impl fmt::Debug for SkuNames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        list.entries(self.0.iter().take(DEBUG_CANDIDATES).map(|sku| sku.name()));
        if let Some(more) = self
            .0
            .len()
            .checked_sub(DEBUG_CANDIDATES)
            .filter(|&n| n > 0)
        {
            list.entry(&format_args!("… {more} more"));
        }
        list.finish()
    }
}

/// The one SKU that `text` names: a SKU (activation) ID, a GVLK (either key
/// format, any case, with or without dashes) or words of a product name.
///
/// A name resolves when a single SKU matches best (its name holds every
/// word of `text` and the fewest others); a tie is
/// [`SkuLookupError::Ambiguous`], never a silent pick.
///
/// # Errors
///
/// A [`SkuLookupError`] saying why no single SKU was found.
///
/// ```
/// use kms_activation::product::{self, SkuLookupError};
///
/// let by_name = product::find_sku("windows 10/11 enterprise")?;
/// let by_key = product::find_sku("nppr9-fwdcx-d2c8j-h872k-2yt43")?;
/// let by_id = product::find_sku("73111121-5638-40f6-bc11-f1d7b0d64300")?;
/// assert_eq!(by_name.id(), by_key.id());
/// assert_eq!(by_key.id(), by_id.id());
///
/// // Windows 7 Professional, a key of the older format.
/// assert_eq!(product::find_sku("FJ82H-XT6CR-J8D7P-XQJJ2-GPDD4")?.name(), "Windows 7 Professional");
///
/// let Err(SkuLookupError::Ambiguous { candidates, .. }) = product::find_sku("office 2021") else {
///     panic!("one Office 2021 product picked silently");
/// };
/// assert!(candidates.len() > 1);
/// # Ok::<(), SkuLookupError>(())
/// ```
pub fn find_sku(text: &str) -> Result<&'static Sku, SkuLookupError> {
    let text = text.trim();
    if let Ok(id) = text.parse::<Uuid>() {
        return sku(id).ok_or(SkuLookupError::UnknownSkuId(id));
    }
    if let Ok(key) = ProductKey::decode(text) {
        let canonical = key.to_string();
        return sku_by_gvlk(&canonical).ok_or(SkuLookupError::NotAGvlk(canonical));
    }
    let hits = scored(skus(), |s| s.name, text);
    match hits.as_slice() {
        [] => Err(SkuLookupError::NoMatch(text.to_owned())),
        [(_, only)] => Ok(only),
        [(best, first), (next, _), ..] if best < next => Ok(first),
        _ => Err(SkuLookupError::Ambiguous {
            query: text.to_owned(),
            candidates: hits.into_iter().map(|(_, sku)| sku).collect(),
        }),
    }
}

/// Whether `name` equals `text` word for word (ASCII case and separators
/// ignored, abbreviations expanded).
fn same_name(name: &str, text: &str) -> bool {
    let mut a = Words::new(name);
    let mut b = Words::new(text);
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x.eq_ignore_ascii_case(y) => {}
            _ => return false,
        }
    }
}

/// The names of `items`, for error messages.
fn name_list<T>(items: &[&T], name: impl Fn(&T) -> &'static str) -> String {
    let names: Vec<&str> = items.iter().map(|t| name(t)).collect();
    names.join("; ")
}

/// Why [`find_csvlk`] found no single CSVLK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsvlkLookupError {
    /// A CSVLK ID that is not in the catalog.
    #[error("no CSVLK has the ID {0}")]
    UnknownId(Uuid),
    /// No CSVLK name holds every word of the text.
    #[error("no CSVLK name matches {0:?}")]
    NoMatch(String),
    /// Several CSVLKs match and none exactly; the caller must choose.
    #[error(
        "{} CSVLKs match {query:?}: {}",
        candidates.len(),
        name_list(candidates, |c| c.name)
    )]
    Ambiguous {
        /// The text given.
        query: String,
        /// The matches, best first.
        candidates: Vec<&'static Csvlk>,
    },
}

/// The one CSVLK (host key) that `text` names: its ID, its exact name
/// (ASCII case ignored), or words of exactly one name. An exact name wins
/// over partial matches; several partial matches are
/// [`CsvlkLookupError::Ambiguous`] (a host key is never picked by guess).
///
/// # Errors
///
/// A [`CsvlkLookupError`] saying why no single CSVLK was found.
///
/// ```
/// use kms_activation::product::{self, CsvlkLookupError};
///
/// assert_eq!(product::find_csvlk("windows server 2019")?.name(), "Windows Server 2019");
/// assert_eq!(product::find_csvlk("office ltsc 2021")?.name(), "Office LTSC 2021");
/// assert_eq!(
///     product::find_csvlk("2e7a9ad1-a849-4b56-babe-17d5a29fe4b4")?.name(),
///     "Windows Server 2019"
/// );
/// let Err(CsvlkLookupError::Ambiguous { candidates, .. }) = product::find_csvlk("server 2008 r2") else {
///     panic!("one channel picked silently");
/// };
/// assert_eq!(candidates.len(), 3);
/// # Ok::<(), CsvlkLookupError>(())
/// ```
pub fn find_csvlk(text: &str) -> Result<&'static Csvlk, CsvlkLookupError> {
    let text = text.trim();
    if let Ok(id) = text.parse::<Uuid>() {
        return csvlk(id).ok_or(CsvlkLookupError::UnknownId(id));
    }
    if let Some(exact) = csvlks().iter().find(|c| same_name(c.name, text)) {
        return Ok(exact);
    }
    let hits = ranked(csvlks(), |c| c.name, text);
    match hits.as_slice() {
        [] => Err(CsvlkLookupError::NoMatch(text.to_owned())),
        [only] => Ok(only),
        _ => Err(CsvlkLookupError::Ambiguous {
            query: text.to_owned(),
            candidates: hits,
        }),
    }
}

/// What [`find_product`] resolved a text to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProductRef {
    /// A KMS ID: every edition counted under it.
    Kms(&'static KmsItem),
    /// One SKU (edition).
    Sku(&'static Sku),
}

impl ProductRef {
    /// The KMS ID or SKU ID.
    #[must_use]
    pub const fn id(&self) -> Uuid {
        match self {
            Self::Kms(k) => k.id,
            Self::Sku(s) => s.id,
        }
    }

    /// The display name.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Kms(k) => k.name,
            Self::Sku(s) => s.name,
        }
    }
}

/// The product group or edition that `text` names: a KMS ID or SKU ID, the
/// exact name of a KMS item (`"Windows Server 2022"`: every edition of it),
/// a GVLK, or words of a SKU name ([`find_sku`]); words that fit no single
/// SKU but one KMS item best name that KMS item.
///
/// # Errors
///
/// The [`SkuLookupError`] of [`find_sku`] when neither a SKU nor a KMS item
/// is found (`UnknownSkuId` for an ID that is neither).
///
/// ```
/// use kms_activation::product::{self, ProductRef};
///
/// let ProductRef::Kms(k) = product::find_product("windows server 2022")? else { panic!() };
/// assert_eq!(k.name(), "Windows Server 2022");
/// let ProductRef::Sku(s) = product::find_product("windows server 2022 datacenter")? else { panic!() };
/// assert_eq!(s.gvlk(), "WX4NM-KYWYW-QJJR4-XV3QB-6VM33");
/// let ProductRef::Kms(k) = product::find_product("office 2021")? else { panic!() };
/// assert_eq!(k.name(), "Office 2021");
/// # Ok::<(), product::SkuLookupError>(())
/// ```
pub fn find_product(text: &str) -> Result<ProductRef, SkuLookupError> {
    let text = text.trim();
    if let Ok(id) = text.parse::<Uuid>() {
        if let Some(k) = super::kms_item(id) {
            return Ok(ProductRef::Kms(k));
        }
        return sku(id)
            .map(ProductRef::Sku)
            .ok_or(SkuLookupError::UnknownSkuId(id));
    }
    if let Some(exact) = kms_items().iter().find(|k| same_name(k.name, text)) {
        return Ok(ProductRef::Kms(exact));
    }
    match find_sku(text) {
        Ok(s) => Ok(ProductRef::Sku(s)),
        Err(error @ (SkuLookupError::Ambiguous { .. } | SkuLookupError::NoMatch(_))) => {
            let hits = scored(kms_items(), |k| k.name, text);
            match hits.as_slice() {
                [(_, only)] => Ok(ProductRef::Kms(only)),
                [(best, first), (next, _), ..] if best < next => Ok(ProductRef::Kms(first)),
                _ => Err(error),
            }
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_debug_names_a_few_candidates() {
        let error = find_sku("office").unwrap_err();
        let SkuLookupError::Ambiguous { candidates, .. } = &error else {
            panic!("not ambiguous: {error}");
        };
        assert!(candidates.len() > DEBUG_CANDIDATES, "{}", candidates.len());
        let debug = format!("{error:?}");
        let first = candidates[0].name();
        assert!(debug.contains(&format!("{first:?}")), "{debug}");
        let more = candidates.len() - DEBUG_CANDIDATES;
        assert!(debug.ends_with(&format!("… {more} more] }}")), "{debug}");
        // The names of the listed candidates and little else.
        let listed: usize = candidates
            .iter()
            .take(DEBUG_CANDIDATES)
            .map(|sku| sku.name().len() + 4)
            .sum();
        assert!(debug.len() < listed + 80, "{debug}");
    }
}
