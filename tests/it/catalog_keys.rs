//! Cross-checks between the product catalog and the product-key decoder.

use kms_activation::ProductKey;
use kms_activation::product::{self, Source};
use kms_activation::product_key::KeyFormat;

/// Every GVLK in the catalog parses and maps back to its SKU. Those of the
/// Windows 8 format pass their checksum; the older-format ones (Windows 7 /
/// Server 2008 (R2) era and Office 2010, no `N`) are signed rather than
/// checksummed: recognised, with nothing to verify offline.
#[test]
fn every_gvlk_decodes_and_maps_back_to_its_sku() {
    let mut verified = 0;
    let mut signed = 0;
    for sku in product::skus() {
        let key = ProductKey::parse(sku.gvlk())
            .unwrap_or_else(|e| panic!("{} has a malformed GVLK {}: {e}", sku.name(), sku.gvlk()));
        assert_eq!(key.to_string(), sku.gvlk(), "{}", sku.name());
        let found = product::sku_by_gvlk(&key.to_string()).unwrap();
        assert_eq!(found.gvlk(), sku.gvlk());
        assert!(
            product::skus_with_id(found.id())
                .iter()
                .any(|s| s.gvlk() == sku.gvlk()),
            "{} maps to another product",
            sku.name()
        );
        match key.format() {
            KeyFormat::Checksummed => {
                assert_eq!(key.checksum_ok(), Some(true), "{}", sku.name());
                verified += 1;
            }
            KeyFormat::Signed => {
                assert_eq!(key.checksum_ok(), None, "{}", sku.name());
                signed += 1;
            }
            _ => unreachable!("a third key format"),
        }
    }
    assert_eq!(verified + signed, product::skus().len());
    assert_eq!(product::skus().len(), 260);
    assert_eq!(signed, 48, "GVLKs of the older format");
}

/// The two Windows Server 1709 GVLKs and the Server 2025 Datacenter: Azure
/// Edition GVLK come from Microsoft's tables.
#[test]
fn seed_only_gvlks_are_present() {
    let from_seed: Vec<_> = product::skus()
        .iter()
        .filter(|s| s.source() == Source::GvlkSeed)
        .collect();
    assert_eq!(from_seed.len(), 3);
    for sku in from_seed {
        assert!(
            sku.name().contains("1709") || sku.gvlk() == "XGN3F-F394H-FD2MY-PP6FD-8MCRC",
            "{}",
            sku.name()
        );
        assert_eq!(
            ProductKey::parse(sku.gvlk()).unwrap().checksum_ok(),
            Some(true)
        );
    }
}
