//! Queries over the activation log: the log itself and the clients it
//! names, filtered and paged the same way on every store.
//!
//! # Semantics (identical on every store)
//!
//! * Every record of the activation log has a sequence number
//!   ([`LogEntry::seq`]) that grows with the order the records were stored
//!   in. "Newest first" means by decreasing sequence number.
//! * A *client* is an (application, CMID) pair with at least one record in
//!   the log (refused requests included). Its row is built from its newest
//!   record (product, address, license status, outcome), the time of its
//!   oldest record still in the log and its number of records; its sequence
//!   number is that of its newest record.
//! * The filters ([`LogQuery`]) apply to each record for the log, and to
//!   the newest record of each client for the clients: `application` and
//!   `product` (SKU ID) by equality, `address` by CIDR on the client's IP
//!   (an IPv4 client reached over an IPv6 socket, `::ffff:a.b.c.d`, is the
//!   IPv4 address), `since` on the record's time (at or after).
//! * Paging: at most [`LogQuery::limit`] rows, all with a sequence number
//!   below [`LogQuery::before`] when it is set; [`Page::next`] is the
//!   cursor of the following page (`None` when this one is the last).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

use crate::host::activation::ActivationRecord;
use crate::{FileTime, Uuid};

/// Filters and paging of [`CountStore::activations`](super::CountStore::activations)
/// and [`CountStore::clients`](super::CountStore::clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogQuery {
    /// Only this application.
    pub application: Option<Uuid>,
    /// Only this product (SKU ID).
    pub product: Option<Uuid>,
    /// Only clients whose address is in this network.
    pub address: Option<IpNet>,
    /// Only records at or after this time.
    pub since: Option<FileTime>,
    /// Only rows with a sequence number below this (the cursor of the
    /// previous page).
    pub before: Option<u64>,
    /// At most this many rows.
    pub limit: usize,
}

impl LogQuery {
    /// No filter, the first page of `limit` rows.
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            application: None,
            product: None,
            address: None,
            since: None,
            before: None,
            limit,
        }
    }

    /// Whether `record` passes the filters (the cursor aside).
    #[must_use]
    pub fn matches(&self, record: &ActivationRecord) -> bool {
        self.application.is_none_or(|a| a == record.application_id)
            && self.product.is_none_or(|p| p == record.sku_id)
            && self.since.is_none_or(|t| record.time >= t)
            && self.address.is_none_or(|net| {
                let (low, high) = address_range(net);
                peer_key(record.peer).is_some_and(|key| low <= key && key <= high)
            })
    }

    /// The page of `items`, whose last row's sequence number is the next
    /// cursor when the page is full.
    pub(crate) fn page<T>(&self, items: Vec<T>, seq: impl Fn(&T) -> u64) -> Page<T> {
        let next = if items.len() >= self.limit && self.limit > 0 {
            items.last().map(seq)
        } else {
            None
        };
        Page { items, next }
    }
}

/// One record of the activation log with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogEntry {
    /// The record's place in the log (grows with storage order).
    pub seq: u64,
    /// The record.
    pub record: ActivationRecord,
}

/// One client, as the activation log knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientEntry {
    /// The sequence number of the client's newest record (the cursor).
    pub seq: u64,
    /// The client's newest record: its product, address, license status
    /// and remaining grace, outcome and the count it was told.
    pub last: ActivationRecord,
    /// The time of the client's oldest record still in the log.
    pub first_seen: FileTime,
    /// The client's records in the log.
    pub requests: u64,
}

/// One page of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Page<T> {
    /// The rows, newest first.
    pub items: Vec<T>,
    /// The cursor of the next page ([`LogQuery::before`]), or `None` when
    /// there is none.
    pub next: Option<u64>,
}

/// An address as 16 bytes that order like the addresses (IPv4 as
/// `::ffff:a.b.c.d`), so that a network is a range of keys.
pub(crate) fn ip_key(ip: IpAddr) -> [u8; 16] {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The key of a peer's address, if there is one.
pub(crate) fn peer_key(peer: Option<SocketAddr>) -> Option<[u8; 16]> {
    peer.map(|p| ip_key(p.ip()))
}

/// The first and last keys of `net`.
pub(crate) fn address_range(net: IpNet) -> ([u8; 16], [u8; 16]) {
    match net {
        IpNet::V4(v4) => (
            v4.network().to_ipv6_mapped().octets(),
            v4.broadcast().to_ipv6_mapped().octets(),
        ),
        IpNet::V6(v6) => {
            let low: Ipv6Addr = v6.network();
            (low.octets(), v6.broadcast().octets())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_networks_match_mapped_peers() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        let (low, high) = address_range(net);
        let inside: SocketAddr = "[::ffff:10.1.2.3]:5000".parse().unwrap();
        let outside: SocketAddr = "10.2.0.1:5000".parse().unwrap();
        let key = peer_key(Some(inside)).unwrap();
        assert!(low <= key && key <= high);
        let key = peer_key(Some(outside)).unwrap();
        assert!(!(low <= key && key <= high));
    }
}

/// The SQL both database stores run for a [`LogQuery`], with only the
/// filters in use in the `WHERE` clause (so each can use its index).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql {
    use super::{LogQuery, address_range};
    use crate::Uuid;

    /// A bound parameter.
    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Param {
        Int(i64),
        Uuid(Uuid),
        Bytes([u8; 16]),
    }

    /// The activation columns, in the order the stores' row readers take
    /// them, then the sequence number (column 17).
    pub(crate) const COLUMNS: &str = "a.time, a.peer, a.connection_id, a.protocol, \
         a.application_id, a.sku_id, a.kms_id, a.cmid, a.previous_cmid, a.workstation, \
         a.n_policy, a.client_time, a.virtual_machine, a.license_status, \
         a.minutes_to_expiry, a.count, a.result, a.id";

    /// `placeholder(n)` spells the n-th parameter (`?n` or `$n`).
    fn filters(
        query: &LogQuery,
        table: &str,
        placeholder: &dyn Fn(usize) -> String,
    ) -> Result<(Vec<String>, Vec<Param>), crate::host::store::StoreError> {
        let mut clauses = Vec::new();
        let mut params = Vec::new();
        let mut bind = |clause: &str, param: Param, clauses: &mut Vec<String>| {
            params.push(param);
            clauses.push(format!("{clause} {}", placeholder(params.len())));
        };
        if let Some(before) = query.before {
            let before = i64::try_from(before).unwrap_or(i64::MAX);
            bind(&format!("{table}.id <"), Param::Int(before), &mut clauses);
        }
        if let Some(application) = query.application {
            bind(
                &format!("{table}.application_id ="),
                Param::Uuid(application),
                &mut clauses,
            );
        }
        if let Some(product) = query.product {
            bind(
                &format!("{table}.sku_id ="),
                Param::Uuid(product),
                &mut clauses,
            );
        }
        if let Some(since) = query.since {
            bind(
                &format!("{table}.time >="),
                Param::Int(crate::host::store::sql::ticks(since)?),
                &mut clauses,
            );
        }
        if let Some(net) = query.address {
            let (low, high) = address_range(net);
            bind(
                &format!("{table}.peer_ip >="),
                Param::Bytes(low),
                &mut clauses,
            );
            bind(
                &format!("{table}.peer_ip <="),
                Param::Bytes(high),
                &mut clauses,
            );
        }
        Ok((clauses, params))
    }

    fn limit(query: &LogQuery) -> i64 {
        i64::try_from(query.limit).unwrap_or(i64::MAX)
    }

    /// Writes the SQL of a page ([`activations`] or [`clients`]) for a
    /// schema prefix (empty, or `"schema".`) and a placeholder speller.
    pub(crate) type Build = fn(
        &LogQuery,
        &str,
        &dyn Fn(usize) -> String,
    ) -> Result<(String, Vec<Param>), crate::host::store::StoreError>;

    /// A page of the log: the SQL and its parameters.
    pub(crate) fn activations(
        query: &LogQuery,
        schema: &str,
        placeholder: &dyn Fn(usize) -> String,
    ) -> Result<(String, Vec<Param>), crate::host::store::StoreError> {
        let (clauses, mut params) = filters(query, "a", placeholder)?;
        params.push(Param::Int(limit(query)));
        let sql = format!(
            "SELECT {COLUMNS} FROM {schema}activations a {} ORDER BY a.id DESC LIMIT {}",
            where_clause(&clauses),
            placeholder(params.len())
        );
        Ok((sql, params))
    }

    /// A page of clients: the SQL and its parameters; columns 18 and 19
    /// are the time of the client's oldest record and its record count.
    pub(crate) fn clients(
        query: &LogQuery,
        schema: &str,
        placeholder: &dyn Fn(usize) -> String,
    ) -> Result<(String, Vec<Param>), crate::host::store::StoreError> {
        let (mut clauses, mut params) = filters(query, "a", placeholder)?;
        clauses.push(format!(
            "NOT EXISTS (SELECT 1 FROM {schema}activations n
                 WHERE n.application_id = a.application_id AND n.cmid = a.cmid AND n.id > a.id)"
        ));
        params.push(Param::Int(limit(query)));
        let sql = format!(
            "SELECT {COLUMNS},
                 (SELECT f.time FROM {schema}activations f
                     WHERE f.application_id = a.application_id AND f.cmid = a.cmid
                     ORDER BY f.id LIMIT 1),
                 (SELECT count(*) FROM {schema}activations c
                     WHERE c.application_id = a.application_id AND c.cmid = a.cmid)
             FROM {schema}activations a {} ORDER BY a.id DESC LIMIT {}",
            where_clause(&clauses),
            placeholder(params.len())
        );
        Ok((sql, params))
    }

    fn where_clause(clauses: &[String]) -> String {
        if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        }
    }
}
