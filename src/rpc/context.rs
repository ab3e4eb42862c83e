//! The presentation contexts of one association.

use super::Ndr;

/// The presentation contexts accepted on one connection: context id →
/// transfer syntax, bounded.
///
/// A bind and every later `alter_context` add to it; each request is decoded
/// with the transfer syntax of the context it names. The host engine and
/// the capture dissector keep one per connection.
///
/// ```
/// # #[cfg(feature = "fuzzing")]
/// # fn main() {
/// use kms_activation::rpc::{ContextTable, Ndr};
///
/// let mut contexts = ContextTable::new(2);
/// assert!(contexts.insert(0, Ndr::Ndr32));
/// assert!(contexts.insert(1, Ndr::Ndr64));
/// assert!(contexts.insert(1, Ndr::Ndr32)); // an id accepted again is updated
/// assert!(!contexts.insert(2, Ndr::Ndr64)); // full
/// assert_eq!(contexts.get(1), Some(Ndr::Ndr32));
/// assert_eq!(contexts.get(7), None);
/// # }
/// # #[cfg(not(feature = "fuzzing"))]
/// # fn main() {}
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextTable {
    entries: Vec<(u16, Ndr)>,
    limit: usize,
}

impl ContextTable {
    /// An empty table holding at most `limit` contexts.
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            entries: Vec::new(),
            limit,
        }
    }

    /// The transfer syntax of context `id`, if it was accepted.
    #[must_use]
    pub fn get(&self, id: u16) -> Option<Ndr> {
        self.entries
            .iter()
            .find(|(known, _)| *known == id)
            .map(|&(_, ndr)| ndr)
    }

    /// Records that context `id` was accepted with `ndr`. Returns false,
    /// changing nothing, when `id` is new and the table is full.
    pub fn insert(&mut self, id: u16, ndr: Ndr) -> bool {
        if let Some(entry) = self.entries.iter_mut().find(|(known, _)| *known == id) {
            entry.1 = ndr;
            true
        } else if self.entries.len() < self.limit {
            self.entries.push((id, ndr));
            true
        } else {
            false
        }
    }

    /// Forgets context `id`.
    pub fn remove(&mut self, id: u16) {
        self.entries.retain(|(known, _)| *known != id);
    }

    /// How many contexts are held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no context is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
