//! Serialization of the small wire values as the text people read: a
//! version as `"6.0"`, a time as RFC 3339, a hardware ID as 16 hex digits,
//! an HRESULT as `"0xC004F038"` (feature `serde`).

use crate::{FileTime, HResult, Hwid, Version};

/// Implements `Serialize` as the value's `Display` text in `format`.
macro_rules! serialize_as_text {
    ($($ty:ty => $format:literal),* $(,)?) => {
        $(
            impl serde::Serialize for $ty {
                fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                    serializer.collect_str(&format_args!($format, self))
                }
            }
        )*
    };
}

serialize_as_text!(
    FileTime => "{}",
    Version => "{}",
    Hwid => "{}",
    HResult => "{:#}",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_serialize_as_text() {
        let json = serde_json::json!({
            "time": FileTime::from_ticks(134_397_882_570_000_000),
            "version": Version::V6,
            "hwid": Hwid([0x3A, 0x1C, 0x04, 0x96, 0x00, 0xB6, 0x00, 0x76]),
            "hresult": HResult::NOT_ENOUGH_COUNT,
        });
        assert_eq!(
            json.to_string(),
            r#"{"time":"2026-11-22T02:30:57Z","version":"6.0","hwid":"3A1C049600B60076","hresult":"0xC004F038"}"#
        );
    }
}
