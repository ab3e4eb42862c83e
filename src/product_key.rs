//! Product keys: parsing, formatting, and the checksum of the Windows 8 format.
//!
//! A product key is written as 25 characters in five groups of five,
//! `XXXXX-XXXXX-XXXXX-XXXXX-XXXXX`. This module reads keys of both formats
//! in use by GVLKs ([`KeyFormat`]): the one introduced with Windows 8 /
//! Windows Server 2012 / Office 2013, whose checksum it verifies and whose
//! fields it exposes, and the older one of Windows Vista, Windows 7, Windows
//! Server 2008 (R2) and Office 2010, which it recognises and formats. It
//! never creates keys.
//!
//! # Text form
//!
//! * Input is case-insensitive, with all four dashes in their places or with
//!   none at all.
//! * 24 of the 25 characters are base-24 digits from the alphabet
//!   `BCDFGHJKMPQRTVWXY2346789` (no vowels and none of `0`, `1`, `5`, `L`, `N`,
//!   `S`, `Z`, so that no word and no look-alike pair can appear).
//! * A key of the Windows 8 format ([`KeyFormat::Checksummed`]) has exactly
//!   one `N`. It is not a digit: the place where it stands (0 to 24, counted
//!   over the 25 key characters) is the most significant base-24 digit of
//!   the value, and the other 24 characters follow it in order.
//! * A key without `N` is of the older format ([`KeyFormat::Signed`]): all
//!   25 characters are base-24 digits, most significant first. What they
//!   encode is protected by a digital signature that only Microsoft's key
//!   tables can check, not by a checksum, so nothing about such a key can be
//!   verified offline; [`ProductKey::checksum_ok`] is `None` and the field
//!   accessors return `None`. The catalog still maps such GVLKs to their
//!   products ([`crate::product::sku_by_gvlk`]).
//!
//! # Payload of the Windows 8 format
//!
//! The 25 digits make a number below 2¹¹⁴, read as a little-endian 128-bit
//! integer with these fields (bit 0 is the least significant):
//!
//! | bits    | width | field                                   |
//! |---------|-------|-----------------------------------------|
//! | 0–19    | 20    | group ID (which key configuration)      |
//! | 20–49   | 30    | key ID, also called the serial          |
//! | 50–102  | 53    | security value                          |
//! | 103–112 | 10    | checksum                                |
//! | 113     | 1     | upgrade flag                            |
//!
//! Because the value must fit in 114 bits, the `N` of a valid key always
//! stands among the first 16 characters.
//!
//! # Checksum
//!
//! Write the value as 16 little-endian bytes with the checksum field set to
//! zero, run CRC-32 with the MPEG-2 parameters over them (polynomial
//! `0x04C11DB7`, initial value `0xFFFFFFFF`, bits taken most significant
//! first, no reflection, no final XOR), complement the result and keep its low
//! 10 bits. A key is consistent when that equals the stored checksum. Every
//! GVLK with an `N` in Microsoft's published table passes this check (see the
//! tests). A single mistyped character is caught unless the 10-bit check
//! matches by accident, which a 10-bit check allows about once in a thousand
//! (14 of the 25 392 one-digit substitutions of those GVLKs slip through; the
//! tests list them).
//!
//! # Two entry points
//!
//! [`ProductKey::parse`] (also [`str::parse`]) is strict and rejects a key
//! whose checksum does not match. [`ProductKey::decode`] checks only the
//! syntax, so that a caller can still look at the fields of a key with a bad
//! checksum and ask [`ProductKey::checksum_ok`].
//!
//! ```
//! use kms_activation::product_key::{KeyFormat, ProductKey, ProductKeyError};
//!
//! // The GVLK of Windows 10/11 Pro, typed carelessly.
//! let key: ProductKey = "w269nwfgwxyvc9b4j6c9t83gx".parse()?;
//! assert_eq!(key.to_string(), "W269N-WFGWX-YVC9B-4J6C9-T83GX");
//! assert_eq!(key.partial(), "T83GX");
//! assert_eq!(key.group_id(), Some(3311));
//! assert_eq!(key.checksum_ok(), Some(true));
//!
//! // One character changed: the syntax is fine, the checksum is not.
//! let typo = "W269N-WFGWX-YVC9B-4J6C9-T83GY";
//! assert!(matches!(
//!     ProductKey::parse(typo),
//!     Err(ProductKeyError::ChecksumMismatch { .. })
//! ));
//! assert_eq!(ProductKey::decode(typo)?.checksum_ok(), Some(false));
//!
//! // The Windows 7 Professional GVLK: recognised, nothing to verify.
//! let win7: ProductKey = "FJ82H-XT6CR-J8D7P-XQJJ2-GPDD4".parse()?;
//! assert_eq!(win7.format(), KeyFormat::Signed);
//! assert_eq!(win7.checksum_ok(), None);
//! # Ok::<(), ProductKeyError>(())
//! ```

use std::fmt;
use std::str::FromStr;

/// The 24 base-24 digits, in value order.
const ALPHABET: &[u8; 24] = b"BCDFGHJKMPQRTVWXY2346789";
/// The marker character of Windows 8 and later keys.
const N_MARKER: char = 'N';
/// Key characters (dashes not counted).
const KEY_CHARS: usize = 25;
/// Characters per dash-separated group.
const GROUP_LEN: usize = 5;
/// Where the dashes stand in the dashed form (0-based character index).
const DASH_POSITIONS: [usize; 4] = [5, 11, 17, 23];
/// Number of characters of the last group that `slmgr /dlv` shows.
const PARTIAL_LEN: usize = 5;

/// Field layout: (shift, width) in the 114-bit payload.
const GROUP_FIELD: (u32, u32) = (0, 20);
const KEY_ID_FIELD: (u32, u32) = (20, 30);
const SECURITY_FIELD: (u32, u32) = (50, 53);
const CHECKSUM_FIELD: (u32, u32) = (103, 10);
const UPGRADE_FIELD: (u32, u32) = (113, 1);
/// Width of the whole payload in bits.
const PAYLOAD_BITS: u32 = 114;

/// CRC-32/MPEG-2 generator polynomial.
const CRC_POLY: u32 = 0x04C1_1DB7;

/// A product key of either format ([`KeyFormat`]).
///
/// The value is the key's number (for the Windows 8 format, the 114-bit
/// payload) and its format; the text form is derived from them, so two
/// spellings of the same key (case, dashes) compare equal. A value obtained
/// from [`ProductKey::decode`] may have a wrong checksum; one from
/// [`ProductKey::parse`] never has.
///
/// ```
/// use kms_activation::product_key::ProductKey;
///
/// let a: ProductKey = "NPPR9-FWDCX-D2C8J-H872K-2YT43".parse()?;
/// let b: ProductKey = "nppr9fwdcxd2c8jh872k2yt43".parse()?;
/// assert_eq!(a, b);
/// assert_eq!(format!("{a:#}"), "NPPR9FWDCXD2C8JH872K2YT43");
/// # Ok::<(), kms_activation::product_key::ProductKeyError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProductKey {
    payload: u128,
    format: KeyFormat,
}

/// The two encodings of product keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyFormat {
    /// Windows 8, Windows Server 2012, Office 2013 and later: one `N`,
    /// fields and a 10-bit checksum that can be verified offline.
    Checksummed,
    /// Windows Vista, Windows 7, Windows Server 2008 (R2), Office 2010 and
    /// earlier: no `N`; the key carries a digital signature rather than a
    /// checksum, so it cannot be verified offline.
    Signed,
}

/// Why a string is not a product key.
///
/// Positions count characters (not bytes) of the input from 0, dashes
/// included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ProductKeyError {
    /// The input does not hold 25 key characters (dashes not counted).
    #[error("a product key has 25 characters besides dashes, found {found}")]
    WrongLength {
        /// Key characters found.
        found: usize,
    },
    /// A character outside the key alphabet, `N` and `-`.
    #[error("character {character:?} at position {position} cannot appear in a product key")]
    InvalidCharacter {
        /// Where the character stands in the input.
        position: usize,
        /// The character as given.
        character: char,
    },
    /// A dash where a key character belongs.
    #[error("unexpected '-' at position {position}: dashes go after every fifth key character")]
    UnexpectedDash {
        /// Where the dash stands in the input.
        position: usize,
    },
    /// A dashed key lacks one of its four dashes.
    #[error("expected '-' at position {position}")]
    MissingDash {
        /// Where the dash should stand.
        position: usize,
    },
    /// More than one `N`.
    #[error("the key has more than one 'N' (positions {first} and {second})")]
    MultipleN {
        /// Position of the first `N` in the input.
        first: usize,
        /// Position of the second `N` in the input.
        second: usize,
    },
    /// The digits make a number of more than 114 bits, which no key encodes
    /// (for instance when the `N` stands after the 16th character).
    #[error("the key's value does not fit in 114 bits")]
    PayloadOverflow,
    /// Well formed, but the stored checksum differs from the one computed
    /// from the other fields (see [`ProductKey::decode`] to inspect it anyway).
    #[error("checksum mismatch: the key stores {stored:#05x} but its fields give {computed:#05x}")]
    ChecksumMismatch {
        /// The checksum field of the key.
        stored: u16,
        /// The checksum computed from the key's other fields.
        computed: u16,
    },
}

impl ProductKey {
    /// Parses a key and verifies its checksum (a key of the
    /// [`KeyFormat::Signed`] format has none to verify and is accepted when
    /// well formed).
    ///
    /// Accepts upper or lower case, with all four dashes or none.
    ///
    /// # Errors
    ///
    /// Every syntax error of [`ProductKey::decode`], plus
    /// [`ProductKeyError::ChecksumMismatch`].
    ///
    /// ```
    /// use kms_activation::product_key::{ProductKey, ProductKeyError};
    ///
    /// let key = ProductKey::parse("M7XTQ-FN8P6-TTKYV-9D4CC-J462D")?;
    /// assert_eq!(key.partial(), "J462D");
    /// assert_eq!(
    ///     ProductKey::parse("M7XTQ-FN8P6-TTKYV-9D4CC-J462"),
    ///     Err(ProductKeyError::WrongLength { found: 24 })
    /// );
    /// # Ok::<(), ProductKeyError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self, ProductKeyError> {
        let key = Self::decode(text)?;
        match (key.checksum(), key.computed_checksum()) {
            (Some(stored), Some(computed)) if stored != computed => {
                Err(ProductKeyError::ChecksumMismatch { stored, computed })
            }
            _ => Ok(key),
        }
    }

    /// Decodes a key's syntax without judging its checksum.
    ///
    /// Use [`ProductKey::checksum_ok`] on the result, or [`ProductKey::parse`]
    /// to have a mismatch reported as an error.
    ///
    /// # Errors
    ///
    /// [`WrongLength`](ProductKeyError::WrongLength),
    /// [`InvalidCharacter`](ProductKeyError::InvalidCharacter),
    /// [`UnexpectedDash`](ProductKeyError::UnexpectedDash),
    /// [`MissingDash`](ProductKeyError::MissingDash),
    /// [`MultipleN`](ProductKeyError::MultipleN) or
    /// [`PayloadOverflow`](ProductKeyError::PayloadOverflow), checked in
    /// that order.
    ///
    /// ```
    /// use kms_activation::product_key::ProductKey;
    ///
    /// // The last character of the Windows 10/11 Pro GVLK changed from X to Y:
    /// // the value grows by one, so the group ID does too (3311 → 3312),
    /// // while the stored checksum no longer matches.
    /// let key = ProductKey::decode("W269N-WFGWX-YVC9B-4J6C9-T83GY")?;
    /// assert_eq!(key.group_id(), Some(3312));
    /// assert_eq!(key.checksum(), Some(0x25e));
    /// assert_eq!(key.checksum_ok(), Some(false));
    /// # Ok::<(), kms_activation::product_key::ProductKeyError>(())
    /// ```
    pub fn decode(text: &str) -> Result<Self, ProductKeyError> {
        let (format, digits) = scan(text)?;
        let mut value: u128 = 0;
        for digit in digits {
            value = value
                .checked_mul(24)
                .and_then(|v| v.checked_add(u128::from(digit)))
                .ok_or(ProductKeyError::PayloadOverflow)?;
        }
        if format == KeyFormat::Checksummed && value >> PAYLOAD_BITS != 0 {
            return Err(ProductKeyError::PayloadOverflow);
        }
        Ok(Self {
            payload: value,
            format,
        })
    }

    /// Which of the two key formats this key has.
    #[must_use]
    pub const fn format(self) -> KeyFormat {
        self.format
    }

    /// The group ID (20 bits): which key configuration in Microsoft's
    /// `pkeyconfig` tables the key belongs to. `None` for a
    /// [`KeyFormat::Signed`] key, whose fields are not readable offline.
    #[must_use]
    pub fn group_id(self) -> Option<u32> {
        self.field(GROUP_FIELD).map(narrow_u32)
    }

    /// The key ID or serial (30 bits), unique within the group; `None` for
    /// a [`KeyFormat::Signed`] key.
    #[must_use]
    pub fn key_id(self) -> Option<u32> {
        self.field(KEY_ID_FIELD).map(narrow_u32)
    }

    /// The security value (53 bits); `None` for a [`KeyFormat::Signed`] key.
    #[must_use]
    pub fn security_value(self) -> Option<u64> {
        self.field(SECURITY_FIELD)
    }

    /// The checksum stored in the key (10 bits); `None` for a
    /// [`KeyFormat::Signed`] key, which has none.
    #[must_use]
    pub fn checksum(self) -> Option<u16> {
        self.field(CHECKSUM_FIELD).map(narrow_u16)
    }

    /// The checksum the other fields call for (10 bits); `None` for a
    /// [`KeyFormat::Signed`] key.
    #[must_use]
    pub fn computed_checksum(self) -> Option<u16> {
        if self.format != KeyFormat::Checksummed {
            return None;
        }
        let (shift, width) = CHECKSUM_FIELD;
        let zeroed = self.payload & !(mask(width) << shift);
        let crc = crc32_mpeg2(&zeroed.to_le_bytes());
        Some(narrow_u16(u64::from(!crc) & mask_u64(width)))
    }

    /// Whether the stored checksum matches the computed one; `None` for a
    /// [`KeyFormat::Signed`] key, which carries a signature instead.
    #[must_use]
    pub fn checksum_ok(self) -> Option<bool> {
        Some(self.checksum()? == self.computed_checksum()?)
    }

    /// The upgrade flag (bit 113); `None` for a [`KeyFormat::Signed`] key.
    #[must_use]
    pub fn is_upgrade(self) -> Option<bool> {
        self.field(UPGRADE_FIELD).map(|bit| bit != 0)
    }

    /// The key's number: the 114-bit payload of a
    /// [`KeyFormat::Checksummed`] key, the plain base-24 value of the 25
    /// characters of a [`KeyFormat::Signed`] one.
    #[must_use]
    pub const fn payload(self) -> u128 {
        self.payload
    }

    /// The payload as 16 little-endian bytes (the checksum's input, but with
    /// the checksum field in place).
    #[must_use]
    pub const fn to_bytes(self) -> [u8; 16] {
        self.payload.to_le_bytes()
    }

    /// The last five characters, as `slmgr /dlv` ("Partial Product Key") and
    /// `ospp.vbs /dstatus` ("Last 5 characters of installed product key")
    /// show them.
    ///
    /// ```
    /// use kms_activation::product_key::ProductKey;
    ///
    /// let key: ProductKey = "VDYBN-27WPP-V4HQT-9VMD4-VMK7H".parse()?;
    /// assert_eq!(key.partial(), "VMK7H");
    /// # Ok::<(), kms_activation::product_key::ProductKeyError>(())
    /// ```
    #[must_use]
    pub fn partial(self) -> String {
        let chars = self.chars();
        chars
            .get(KEY_CHARS - PARTIAL_LEN..)
            .unwrap_or_default()
            .iter()
            .collect()
    }

    /// The 25 key characters, most significant first, `N` included.
    fn chars(self) -> [char; KEY_CHARS] {
        if self.format == KeyFormat::Signed {
            return self.plain_chars();
        }
        // Base-24 digits, most significant first.
        let mut digits = [0u8; KEY_CHARS];
        let mut rest = self.payload;
        for slot in digits.iter_mut().rev() {
            *slot = u8::try_from(rest % 24).unwrap_or(0);
            rest /= 24;
        }
        // The first digit is the place of the N (below 16, as the payload has
        // 114 bits); the other 24 fill the remaining places in order.
        let (first, others) = digits.split_first().unwrap_or((&0, &[]));
        let n_at = usize::from(*first);
        let mut out = [N_MARKER; KEY_CHARS];
        let mut next = others.iter();
        for (place, slot) in out.iter_mut().enumerate() {
            if place != n_at {
                let digit = next.next().copied().unwrap_or(0);
                *slot = ALPHABET
                    .get(usize::from(digit))
                    .map_or('?', |&b| char::from(b));
            }
        }
        out
    }

    /// The 25 characters of a key without `N`: base-24 digits, most
    /// significant first.
    fn plain_chars(self) -> [char; KEY_CHARS] {
        let mut out = ['?'; KEY_CHARS];
        let mut rest = self.payload;
        for slot in out.iter_mut().rev() {
            let digit = usize::try_from(rest % 24).unwrap_or(0);
            *slot = ALPHABET.get(digit).map_or('?', |&b| char::from(b));
            rest /= 24;
        }
        out
    }

    /// A field of the Windows 8 layout; `None` for a signed key.
    fn field(self, (shift, width): (u32, u32)) -> Option<u64> {
        if self.format != KeyFormat::Checksummed {
            return None;
        }
        let bits = (self.payload >> shift) & mask(width);
        Some(u64::try_from(bits).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for ProductKey {
    /// `XXXXX-XXXXX-XXXXX-XXXXX-XXXXX`; the alternate form `{:#}` leaves out
    /// the dashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dashes = !f.alternate();
        for (i, c) in self.chars().iter().enumerate() {
            if dashes && i != 0 && i % GROUP_LEN == 0 {
                f.write_str("-")?;
            }
            fmt::Write::write_char(f, *c)?;
        }
        Ok(())
    }
}

impl FromStr for ProductKey {
    type Err = ProductKeyError;

    /// Same as [`ProductKey::parse`]: strict, checksum included.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Checks the text and returns its format and 25 base-24 digits, most
/// significant first (for the Windows 8 format, the first one is the place of
/// the `N`).
fn scan(text: &str) -> Result<(KeyFormat, [u8; KEY_CHARS]), ProductKeyError> {
    // Pass 1: the characters themselves.
    let mut key_chars = 0usize;
    let mut has_dash = false;
    for (position, character) in text.chars().enumerate() {
        if character == '-' {
            has_dash = true;
        } else if digit_of(character).is_some() || character.eq_ignore_ascii_case(&N_MARKER) {
            key_chars = key_chars.saturating_add(1);
        } else {
            return Err(ProductKeyError::InvalidCharacter {
                position,
                character,
            });
        }
    }
    if key_chars != KEY_CHARS {
        return Err(ProductKeyError::WrongLength { found: key_chars });
    }
    // Pass 2: dash placement, all four or none.
    if has_dash {
        for (position, character) in text.chars().enumerate() {
            let dash_place = DASH_POSITIONS.contains(&position);
            if character == '-' && !dash_place {
                return Err(ProductKeyError::UnexpectedDash { position });
            }
            if character != '-' && dash_place {
                return Err(ProductKeyError::MissingDash { position });
            }
        }
    }
    // Pass 3: at most one N, and the digits.
    let has_n = text.chars().any(|c| c.eq_ignore_ascii_case(&N_MARKER));
    let mut digits = [0u8; KEY_CHARS];
    if !has_n {
        let key_digits = text.chars().filter(|&c| c != '-').filter_map(digit_of);
        for (slot, digit) in digits.iter_mut().zip(key_digits) {
            *slot = digit;
        }
        return Ok((KeyFormat::Signed, digits));
    }
    let mut n_seen: Option<(usize, usize)> = None; // (input position, key place)
    let mut fill = digits.iter_mut().skip(1);
    for (place, (position, character)) in text
        .chars()
        .enumerate()
        .filter(|&(_, c)| c != '-')
        .enumerate()
    {
        if character.eq_ignore_ascii_case(&N_MARKER) {
            if let Some((first, _)) = n_seen {
                return Err(ProductKeyError::MultipleN {
                    first,
                    second: position,
                });
            }
            n_seen = Some((position, place));
        } else if let Some(slot) = fill.next() {
            *slot = digit_of(character).unwrap_or(0);
        }
    }
    let n_place = n_seen.map_or(0, |(_, place)| place);
    if let Some(first) = digits.first_mut() {
        *first = u8::try_from(n_place).unwrap_or(u8::MAX);
    }
    Ok((KeyFormat::Checksummed, digits))
}

/// The base-24 value of a key character (case-insensitive), `None` for `N`
/// and anything outside the alphabet.
fn digit_of(character: char) -> Option<u8> {
    let upper = u8::try_from(character.to_ascii_uppercase()).ok()?;
    let index = ALPHABET.iter().position(|&b| b == upper)?;
    u8::try_from(index).ok()
}

/// CRC-32 with the MPEG-2 parameters (MSB first, init all ones, no final XOR).
fn crc32_mpeg2(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in bytes {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ CRC_POLY
            };
        }
    }
    crc
}

/// The low `width` bits set (width ≤ 64 in this module).
fn mask(width: u32) -> u128 {
    (1u128 << width) - 1
}

fn mask_u64(width: u32) -> u64 {
    u64::try_from(mask(width)).unwrap_or(u64::MAX)
}

/// Narrows a field already masked to at most 30 bits.
fn narrow_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Narrows a field already masked to at most 10 bits.
fn narrow_u16(v: u64) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEED: &str = include_str!("../tests/data/reference/gvlk-windows-seed.csv");

    /// (section, edition, key) rows of the seed table.
    fn seed() -> Vec<(String, String, String)> {
        SEED.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                // Quoted fields hold commas; the key is the last field.
                let (head, key) = l.rsplit_once(',').unwrap();
                let (section, edition) = head.rsplit_once("\",\"").unwrap();
                (
                    section.trim_matches('"').to_owned(),
                    edition.trim_matches('"').to_owned(),
                    key.trim().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn seed_table_has_70_keys() {
        assert_eq!(seed().len(), 70);
    }

    #[test]
    fn every_windows_8_and_later_gvlk_parses_and_round_trips() {
        let mut modern = 0;
        for (section, edition, text) in seed() {
            if !text.contains('N') {
                continue;
            }
            modern += 1;
            let key = ProductKey::parse(&text)
                .unwrap_or_else(|e| panic!("{section} / {edition}: {text}: {e}"));
            assert_eq!(key.checksum_ok(), Some(true), "{text}");
            assert_eq!(key.format(), KeyFormat::Checksummed);
            assert_eq!(key.to_string(), text);
            assert_eq!(format!("{key:#}"), text.replace('-', ""));
            assert_eq!(key.partial(), text[24..]);
            assert_eq!(key.is_upgrade(), Some(false), "{text}");
            assert_eq!(ProductKey::parse(&text.to_lowercase()), Ok(key));
            assert_eq!(ProductKey::parse(&text.replace('-', "")), Ok(key));
        }
        assert_eq!(modern, 49);
    }

    /// The 21 GVLKs of Windows 7 / Server 2008 / 2008 R2 use the older,
    /// signature-protected encoding without an N.
    #[test]
    fn pre_windows_8_gvlks_are_recognised_as_signed() {
        let legacy: Vec<_> = seed()
            .into_iter()
            .filter(|(_, _, k)| !k.contains('N'))
            .collect();
        assert_eq!(legacy.len(), 21);
        for (section, _, text) in legacy {
            assert!(
                section.starts_with("Windows 7") || section.starts_with("Windows Server 2008"),
                "{section}"
            );
            let key = ProductKey::parse(&text).unwrap();
            assert_eq!(key.format(), KeyFormat::Signed);
            assert_eq!(key.checksum_ok(), None);
            assert_eq!(key.group_id(), None);
            assert_eq!(key.to_string(), text);
            assert_eq!(
                ProductKey::parse(&text.to_lowercase().replace('-', "")),
                Ok(key)
            );
            assert_eq!(key.partial(), text[24..]);
        }
    }

    /// Expected values computed independently with Python's arbitrary
    /// precision integers (a separate script written for this test: base-24
    /// fold with the N place prepended, shifts and masks, and a bit-by-bit
    /// CRC-32/MPEG-2), not with this module.
    #[test]
    fn fields_of_windows_10_pro_gvlk() {
        let key = ProductKey::parse("W269N-WFGWX-YVC9B-4J6C9-T83GX").unwrap();
        assert_eq!(key.payload(), 0x0001_2f6e_bd4e_39c5_3d34_0000_0010_0cef);
        assert_eq!(key.group_id(), Some(3311));
        assert_eq!(key.key_id(), Some(1));
        assert_eq!(key.security_value(), Some(0x001b_af53_8e71_4f4d));
        assert_eq!(key.checksum(), Some(0x25e));
        assert_eq!(key.computed_checksum(), Some(0x25e));
        assert_eq!(key.is_upgrade(), Some(false));
        assert_eq!(key.partial(), "T83GX");
    }

    #[test]
    fn crc_matches_the_mpeg2_check_value() {
        // The catalogue check value of CRC-32/MPEG-2 over "123456789".
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
    }

    #[test]
    fn malformed_shapes() {
        use ProductKeyError as E;
        let good = "W269N-WFGWX-YVC9B-4J6C9-T83GX";
        assert_eq!(ProductKey::parse(""), Err(E::WrongLength { found: 0 }));
        assert_eq!(
            ProductKey::parse(&good[..28]),
            Err(E::WrongLength { found: 24 })
        );
        assert_eq!(
            ProductKey::parse(&format!("{good}B")),
            Err(E::WrongLength { found: 26 })
        );
        assert_eq!(
            ProductKey::parse("W269N-WFGWX-YVC9B-4J6C9-T83G0"),
            Err(E::InvalidCharacter {
                position: 28,
                character: '0'
            })
        );
        assert_eq!(
            ProductKey::parse("W269N-WFGWX-YVCéB-4J6C9-T83GX"),
            Err(E::InvalidCharacter {
                position: 15,
                character: 'é'
            })
        );
        assert_eq!(
            ProductKey::parse(" W269N-WFGWX-YVC9B-4J6C9-T83GX"),
            Err(E::InvalidCharacter {
                position: 0,
                character: ' '
            })
        );
        assert_eq!(
            ProductKey::parse("W269-NWFGWX-YVC9B-4J6C9-T83GX"),
            Err(E::UnexpectedDash { position: 4 })
        );
        assert_eq!(
            ProductKey::parse("W269NWFGWX-YVC9B-4J6C9-T83GX"),
            Err(E::MissingDash { position: 5 })
        );
        assert_eq!(
            ProductKey::parse("W269N-WFGWX-YVC9B-4J6C9-T83GX-"),
            Err(E::UnexpectedDash { position: 29 })
        );
        assert_eq!(
            ProductKey::parse("W269N--WFGWXYVC9B-4J6C9-T83GX"),
            Err(E::UnexpectedDash { position: 6 })
        );
        assert_eq!(
            ProductKey::parse("W269N-WFGWX-YVC9B-4J6C9-T83NX"),
            Err(E::MultipleN {
                first: 4,
                second: 27
            })
        );
        assert_eq!(
            ProductKey::parse("FJ82H-XT6CR-J8D7P-XQJJ2-GPDD4").map(ProductKey::format),
            Ok(KeyFormat::Signed)
        );
        // N in the last place: first digit 24, far above 2^114.
        assert_eq!(
            ProductKey::parse("W269W-FGWXY-VC9B4-J6C9T-83GXN"),
            Err(E::PayloadOverflow)
        );
        // N in place 16: the smallest place that always overflows.
        assert_eq!(
            ProductKey::parse("BBBBB-BBBBB-BBBBB-BNBBB-BBBBB"),
            Err(E::PayloadOverflow)
        );
        assert_eq!(
            ProductKey::parse("W269N-WFGWX-YVC9B-4J6C9-T83GY"),
            Err(E::ChecksumMismatch {
                stored: 0x25e,
                computed: ProductKey::decode("W269N-WFGWX-YVC9B-4J6C9-T83GY")
                    .unwrap()
                    .computed_checksum()
                    .unwrap()
            })
        );
    }

    #[test]
    fn largest_place_of_n_that_fits() {
        // 2^114 / 24^24 is about 15.6: with the N in place 15 the key fits
        // when the other digits are small, and overflows when they are large.
        let key = ProductKey::decode("BBBBB-BBBBB-BBBBB-NBBBB-BBBBB").unwrap();
        assert_eq!(key.payload(), 15 * 24u128.pow(24));
        assert_eq!(key.to_string(), "BBBBB-BBBBB-BBBBB-NBBBB-BBBBB");
        assert_eq!(
            ProductKey::decode("99999-99999-99999-N9999-99999"),
            Err(ProductKeyError::PayloadOverflow)
        );
    }

    /// Every substitution of one character of every modern seed key by any
    /// other character of the key alphabet (N included). The outcome of each
    /// of the 49 × 25 × 24 = 29 400 cases is fixed, so the counts are exact.
    #[test]
    fn single_character_substitutions_are_detected() {
        let mut checksum = 0;
        let mut missing_n = 0;
        let mut multiple_n = 0;
        let mut overflow = 0;
        let mut undetected = Vec::new();
        let alphabet: Vec<char> = "BCDFGHJKMNPQRTVWXY2346789".chars().collect();
        for (_, _, text) in seed().into_iter().filter(|(_, _, k)| k.contains('N')) {
            let compact: Vec<char> = text.chars().filter(|&c| c != '-').collect();
            for place in 0..KEY_CHARS {
                for &replacement in &alphabet {
                    if replacement == compact[place] {
                        continue;
                    }
                    let mut changed = compact.clone();
                    changed[place] = replacement;
                    let changed: String = changed.into_iter().collect();
                    match ProductKey::parse(&changed) {
                        Ok(key) if key.format() == KeyFormat::Signed => missing_n += 1,
                        Ok(_) => undetected.push(changed),
                        Err(ProductKeyError::ChecksumMismatch { .. }) => checksum += 1,
                        Err(ProductKeyError::MultipleN { .. }) => multiple_n += 1,
                        Err(ProductKeyError::PayloadOverflow) => overflow += 1,
                        Err(e) => panic!("{changed}: unexpected {e}"),
                    }
                }
            }
        }
        // Replacing the N by a digit: 49 keys × 24 digits.
        assert_eq!(missing_n, 49 * 24);
        // Replacing a digit by N: 49 keys × 24 places.
        assert_eq!(multiple_n, 49 * 24);
        let digit_changes = 49 * 24 * 23;
        assert_eq!(checksum + overflow + undetected.len(), digit_changes);
        assert_eq!(
            overflow, 0,
            "a digit change never pushes the N-first value past 2^114 here"
        );
        assert_eq!(undetected, UNDETECTED_SUBSTITUTIONS);
    }

    /// The single-character substitutions of seed GVLKs that happen to
    /// produce another key with a valid checksum (14 of 25 392 digit
    /// changes, in line with the 1 in 1024 a 10-bit check lets through).
    /// Each was checked with the independent Python script mentioned above.
    const UNDETECTED_SUBSTITUTIONS: &[&str] = &[
        "CB7KFBWN84R7R2Y793K28DDDG",
        "MH37XN47XKV7XM9C7227GCQG9",
        "NRG2BVKK3QCXVCJ9G2XF6Q84J",
        "6TP4RGNHTDKYYHQ7B7DPJ447Y",
        "NPPR9CWDCXD2C8JH872K2YT43",
        "NPPR9FWDCXD2C8JH87BK2YT43",
        "YYVX9NTFWVRMDM39PT4T4M68B",
        "M7CTQFN8P6TTKYV9D4CCJ462D",
        "M74TQFN8P6TTKYV9D4CCJ462D",
        "92NFX8DJQXP6BBQTHF9C7CG2H",
        "D2N9P3P6T92R39C7RTCDMDVJX",
        "4K36PJN4VQGDC6VKDT89DYFKP",
        "XNH6W2V9GXRPJ4KY8X6FQGJ2G",
        "HMCNVVVKFX7HMBHCTY9BB4FXY",
    ];

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = ProductKey::parse(&s);
            let _ = ProductKey::decode(&s);
        }

        #[test]
        fn parse_never_panics_on_key_like_input(s in "[BCDFGHJKMNPQRTVWXY2346789bcdn-]{20,32}") {
            if let Ok(key) = ProductKey::decode(&s) {
                // Whatever decodes formats back to the same key.
                let again = ProductKey::decode(&key.to_string()).unwrap();
                prop_assert_eq!(again, key);
                prop_assert_eq!(key.to_string().to_uppercase().replace('-', ""),
                    s.to_uppercase().replace('-', ""));
            }
        }

        #[test]
        fn signed_keys_round_trip(payload in 0u128..24u128.pow(25)) {
            let key = ProductKey { payload, format: KeyFormat::Signed };
            let text = key.to_string();
            prop_assert!(!text.contains('N'));
            prop_assert_eq!(ProductKey::parse(&text), Ok(key));
        }

        #[test]
        fn payload_fields_round_trip(payload in 0u128..(1u128 << 114)) {
            let key = ProductKey { payload, format: KeyFormat::Checksummed };
            let back = ProductKey::decode(&key.to_string()).unwrap();
            prop_assert_eq!(back, key);
            let rebuilt = u128::from(back.group_id().unwrap())
                | u128::from(back.key_id().unwrap()) << 20
                | u128::from(back.security_value().unwrap()) << 50
                | u128::from(back.checksum().unwrap()) << 103
                | u128::from(back.is_upgrade().unwrap()) << 113;
            prop_assert_eq!(rebuilt, payload);
        }
    }
}
