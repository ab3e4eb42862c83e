//! Case-insensitive, token-based name search over the catalog.
//!
//! A name and a query are split into words at every character that is not an
//! ASCII letter or digit (`"Windows 10/11 Pro"` → `windows`, `10`, `11`,
//! `pro`), a few common abbreviations are expanded (`pro` → `professional`,
//! `proplus` → `professional plus`, …) and words are compared ignoring ASCII
//! case. A name matches when it contains more than half of the query's
//! distinct words, so word order does not matter and extra query words are
//! tolerated. Matches are ranked by the number of query words found, then by
//! how few words of the name the query leaves unmatched.

use super::{Csvlk, KmsItem, Sku, csvlks, kms_items, skus};

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

/// `(query words found, name words not in the query)`, or `None` when the
/// name does not match.
fn score(name: &str, query: &str) -> Option<(usize, usize)> {
    let mut distinct = 0usize;
    let mut found = 0usize;
    for (i, word) in Words::new(query).enumerate() {
        if Words::new(query)
            .take(i)
            .any(|earlier| earlier.eq_ignore_ascii_case(word))
        {
            continue;
        }
        distinct += 1;
        if contains_word(name, word) {
            found += 1;
        }
    }
    if found == 0 || found * 2 <= distinct {
        return None;
    }
    let unmatched = Words::new(name)
        .filter(|w| !contains_word(query, w))
        .count();
    Some((found, unmatched))
}

fn ranked<T>(
    items: &'static [T],
    name: impl Fn(&T) -> &'static str,
    query: &str,
) -> Vec<&'static T> {
    let mut hits: Vec<((usize, usize), usize, &'static T)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| score(name(item), query).map(|s| (s, i, item)))
        .collect();
    hits.sort_by(|(a, ai, _), (b, bi, _)| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(ai.cmp(bi)));
    hits.into_iter().map(|(_, _, item)| item).collect()
}

/// SKUs whose display name matches `query`, best match first (see the
/// module docs of [`crate::product`] for the matching rules).
///
/// ```
/// use kms_activation::product;
/// let hits = product::search_skus("windows 11 enterprise");
/// assert_eq!(hits[0].name(), "Windows 10/11 Enterprise");
/// let hits = product::search_skus("Office LTSC 2024 ProPlus");
/// assert_eq!(hits[0].gvlk(), "XJ2XN-FW8RK-P4HMP-DKDBV-GCVGB");
/// assert!(product::search_skus("toaster firmware").is_empty());
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
