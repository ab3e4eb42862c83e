//! Cross-checks between the product catalog and the product-key decoder.

use kms_activation::product::{self, Source};
use kms_activation::{ProductKey, ProductKeyError};

/// Every GVLK in the catalog either decodes with a valid checksum and maps
/// back to its SKU, or is an older-format key (Windows 7 / Server 2008 R2
/// era and Office 2010, no `N`): those are signed rather than checksummed
/// and cannot be verified offline.
#[test]
fn every_gvlk_decodes_and_maps_back_to_its_sku() {
    let mut verified = 0;
    let mut older_format = 0;
    for sku in product::skus() {
        match ProductKey::parse(sku.gvlk()) {
            Ok(key) => {
                assert!(key.checksum_ok(), "{}", sku.name());
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
                verified += 1;
            }
            Err(ProductKeyError::MissingN | ProductKeyError::PayloadOverflow) => older_format += 1,
            Err(e) => panic!("{} has a malformed GVLK {}: {e}", sku.name(), sku.gvlk()),
        }
    }
    eprintln!("{verified} GVLKs verified, {older_format} in the older format");
    assert_eq!(verified + older_format, product::skus().len());
    assert!(verified > 150, "only {verified} GVLKs verified");
    assert!(
        older_format < 60,
        "{older_format} GVLKs in the older format"
    );
}

/// The two Windows Server 1709 GVLKs come from Microsoft's table.
#[test]
fn seed_only_gvlks_are_present() {
    let from_seed: Vec<_> = product::skus()
        .iter()
        .filter(|s| s.source() == Source::GvlkSeed)
        .collect();
    assert_eq!(from_seed.len(), 2);
    for sku in from_seed {
        assert!(sku.name().contains("1709"), "{}", sku.name());
        assert!(ProductKey::parse(sku.gvlk()).unwrap().checksum_ok());
    }
}
