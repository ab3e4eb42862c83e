//! The machines a `--load` run activates: `--clients N` client machines
//! drawn from `--seed`, each with its own CMID, workstation name and
//! product from the `--mix`.
//!
//! Everything is a function of the seed and the client's index, so the
//! k-th client is the same machine in every run: a second run is a renewal
//! of the same clients, not a new crowd, and a host that counted them
//! counts them once.

use kms_activation::FileTime;
#[cfg(test)]
use kms_activation::Uuid;
use kms_activation::client::{MachineIdentity, ProductRequest};
use kms_activation::license::{LicenseSnapshot, LicenseTimeline};
use kms_activation::message::RequestBody;
use sha2::{Digest, Sha256};

/// One product of the mix and its share of the clients.
#[derive(Debug, Clone)]
pub(crate) struct MixEntry {
    pub(crate) product: ProductRequest,
    pub(crate) weight: u32,
}

/// Parses `NAME=WEIGHT,NAME=WEIGHT,…` (a weight left out is 1); each name
/// is resolved as `--product` resolves it (`resolve`), so a name, a SKU ID
/// or a GVLK.
pub(crate) fn parse_mix(
    text: &str,
    resolve: impl Fn(&str) -> Result<ProductRequest, String>,
) -> Result<Vec<MixEntry>, String> {
    let mut mix = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = match part.rsplit_once('=') {
            Some((name, weight)) => {
                let weight = weight
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|&w| (1..=1_000_000).contains(&w))
                    .ok_or_else(|| {
                        format!(
                            "--mix {part:?}: the weight is not a whole number from 1 to 1000000"
                        )
                    })?;
                (name.trim(), weight)
            }
            None => (part, 1),
        };
        let product = resolve(name).map_err(|e| format!("--mix {name:?}: {e}"))?;
        mix.push(MixEntry { product, weight });
    }
    if mix.is_empty() {
        return Err("--mix names no product".into());
    }
    Ok(mix)
}

/// The clients of a run and the product each one requests.
#[derive(Debug)]
pub(crate) struct Fleet {
    seed: u64,
    clients: u64,
    mix: Vec<MixEntry>,
    /// Each product's licence state: a fresh installation in its grace
    /// period, as the probe sends.
    licenses: Vec<LicenseSnapshot>,
    total_weight: u64,
}

impl Fleet {
    /// `clients` machines (at least 1) from `seed`, sharing `mix` (not
    /// empty: [`parse_mix`] refuses an empty one) out by weight.
    pub(crate) fn new(
        seed: u64,
        clients: u64,
        mix: Vec<MixEntry>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        let licenses = mix
            .iter()
            .map(|m| LicenseTimeline::new(now, m.product.license_policy()).state_at(now))
            .collect();
        let total_weight = mix.iter().map(|m| u64::from(m.weight)).sum::<u64>().max(1);
        Self {
            seed,
            clients: clients.max(1),
            mix,
            licenses,
            total_weight,
        }
    }

    pub(crate) const fn clients(&self) -> u64 {
        self.clients
    }

    pub(crate) fn mix(&self) -> &[MixEntry] {
        &self.mix
    }

    /// The client that sends the `ticket`-th activation of the run: the
    /// clients in turn, so the first `clients` activations are all
    /// distinct, and the next ones are their renewals.
    pub(crate) const fn client_of(&self, ticket: u64) -> u64 {
        ticket % self.clients
    }

    /// The index in the mix of client `k`'s product: the weighted list laid
    /// out in order (`a=3,b=1` is a a a b), client `k` at position
    /// `k mod 4`.
    pub(crate) fn product_of(&self, k: u64) -> usize {
        let mut position = k % self.total_weight;
        for (index, entry) in self.mix.iter().enumerate() {
            match position.checked_sub(u64::from(entry.weight)) {
                Some(rest) => position = rest,
                None => return index,
            }
        }
        0
    }

    /// How many of the first `activations` go to each product of the mix
    /// (what a run of `--count activations` sends, whatever the order the
    /// workers take them in).
    #[cfg(test)]
    fn split(&self, activations: u64) -> Vec<u64> {
        let mut split = vec![0; self.mix.len()];
        for ticket in 0..activations {
            if let Some(n) = split.get_mut(self.product_of(self.client_of(ticket))) {
                *n += 1;
            }
        }
        split
    }

    /// Client `k`: a CMID (version 4) from SHA-256 of the seed and `k`,
    /// and the name `load<k>.seed<seed>.example.org` (at most 61
    /// characters, within the request's 63).
    pub(crate) fn machine(&self, k: u64) -> MachineIdentity {
        let digest = Sha256::new()
            .chain_update(b"kms-client --load")
            .chain_update(self.seed.to_le_bytes())
            .chain_update(k.to_le_bytes())
            .finalize();
        let mut bytes = [0u8; 16];
        for (byte, from) in bytes.iter_mut().zip(digest) {
            *byte = from;
        }
        let cmid = uuid::Builder::from_random_bytes(bytes).into_uuid();
        MachineIdentity::new(cmid, format!("load{k}.seed{}.example.org", self.seed))
    }

    /// The request client `k` sends at `client_time`, with the index of
    /// its product in the mix (`None` only for an empty mix).
    pub(crate) fn request(&self, k: u64, client_time: FileTime) -> Option<(usize, RequestBody)> {
        let index = self.product_of(k);
        let entry = self.mix.get(index)?;
        let license = self.licenses.get(index)?;
        let request = entry.product.build(&self.machine(k), license, client_time);
        Some((index, request))
    }

    /// The CMID of client `k`.
    #[cfg(test)]
    fn cmid(&self, k: u64) -> Uuid {
        self.machine(k).cmid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn resolve(name: &str) -> Result<ProductRequest, String> {
        ProductRequest::for_product(name).map_err(|e| e.to_string())
    }

    fn fleet(seed: u64, clients: u64, mix: &str) -> Fleet {
        let now = chrono::Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        Fleet::new(seed, clients, parse_mix(mix, resolve).unwrap(), now)
    }

    #[test]
    fn the_kth_client_is_the_same_machine_in_every_run() {
        let a = fleet(7, 1000, "windows 10/11 enterprise");
        let b = fleet(7, 1000, "windows 10/11 enterprise");
        let other_seed = fleet(8, 1000, "windows 10/11 enterprise");
        let cmids: std::collections::HashSet<Uuid> = (0..1000).map(|k| a.cmid(k)).collect();
        assert_eq!(cmids.len(), 1000);
        for k in [0, 1, 999] {
            assert_eq!(a.machine(k), b.machine(k));
            assert_ne!(a.cmid(k), other_seed.cmid(k));
            assert_eq!(a.cmid(k).get_version_num(), 4);
        }
        assert_eq!(a.machine(3).workstation, "load3.seed7.example.org");
        let longest = fleet(u64::MAX, u64::MAX, "windows 10/11 enterprise").machine(u64::MAX - 1);
        assert!(longest.workstation.len() <= 63, "{}", longest.workstation);
        // Renewals: ticket 1000 is client 0 again.
        assert_eq!(a.client_of(1000), 0);
        assert_eq!(a.client_of(1001), 1);
    }

    #[test]
    fn the_mix_is_shared_out_by_weight_per_client() {
        let f = fleet(
            0,
            200,
            "windows 10/11 enterprise=3, office ltsc professional plus 2021=1",
        );
        assert_eq!(f.mix().len(), 2);
        assert_eq!(
            (0..8).map(|k| f.product_of(k)).collect::<Vec<_>>(),
            [0, 0, 0, 1, 0, 0, 0, 1]
        );
        assert_eq!(f.split(100), [75, 25]);
        // A client keeps its product across its renewals.
        assert_eq!(f.product_of(f.client_of(3)), f.product_of(f.client_of(203)));
        let (index, request) = f.request(3, FileTime::from_ticks(1)).unwrap();
        assert_eq!(index, 1);
        assert_eq!(request.sku_id, f.mix()[1].product.sku().id());
        assert_eq!(request.cmid, f.cmid(3));
        assert_eq!(request.n_policy, 5);
    }

    #[test]
    fn bad_mixes_are_refused_with_the_part_named() {
        for (mix, expected) in [
            ("", "names no product"),
            ("windows 10/11 enterprise=0", "weight is not a whole number"),
            ("windows 10/11 enterprise=x", "weight is not a whole number"),
            ("no such product=2", "\"no such product\""),
        ] {
            let e = parse_mix(mix, resolve).unwrap_err();
            assert!(e.contains(expected), "{mix}: {e}");
        }
        let default_weight = parse_mix("windows 10/11 enterprise", resolve).unwrap();
        assert_eq!(default_weight[0].weight, 1);
    }
}
