//! GUIDs on the wire.
//!
//! DCE/RPC and KMS send a GUID in the "mixed-endian" order Windows uses in
//! memory: `Data1` (u32), `Data2` (u16) and `Data3` (u16) little-endian, then
//! the eight bytes of `Data4` as written. `73111121-5638-40f6-bc11-f1d7b0d64300`
//! travels as `21 11 11 73 38 56 f6 40 bc 11 f1 d7 b0 d6 43 00`. In the API
//! every GUID is a [`uuid::Uuid`] in its ordinary (text) order.

use uuid::Uuid;

/// Size of a GUID on the wire.
pub(crate) const GUID_LEN: usize = 16;

/// Decodes the 16 wire bytes of a GUID.
pub(crate) fn from_wire(bytes: &[u8; GUID_LEN]) -> Uuid {
    Uuid::from_bytes_le(*bytes)
}

/// Encodes a GUID into its 16 wire bytes.
pub(crate) fn to_wire(id: &Uuid) -> [u8; GUID_LEN] {
    id.to_bytes_le()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_order_matches_protocol_example() {
        let id: Uuid = "73111121-5638-40f6-bc11-f1d7b0d64300".parse().unwrap();
        let wire = [
            0x21, 0x11, 0x11, 0x73, 0x38, 0x56, 0xf6, 0x40, 0xbc, 0x11, 0xf1, 0xd7, 0xb0, 0xd6,
            0x43, 0x00,
        ];
        assert_eq!(to_wire(&id), wire);
        assert_eq!(from_wire(&wire), id);
    }
}
