//! The `deliveries` table: one row per (endpoint, message) pair, and every way Sluice
//! reads or changes it. No other code builds a delivery key or walks the table, so its
//! layout can change here alone. (BENCHMARKS.md, "Where fan-out's commits go", measures
//! the layout the next change is meant to bring: rows keyed by seq, with the
//! per-endpoint order kept by an index written thousands of rows at a time.)
//!
//! Reads take any transaction; writes take a `RwTxn` and so run on the writer thread.

use std::ops::Bound;

use heed::{RoTxn, RwTxn};

use super::schema::{self, DeliveryRecord, EndpointKey, Seq, db_name, delivery_key};
use super::tables::Walk;
use super::{Dbs, LogError};

/// The delivery of message `seq` to `endpoint`, if it has a row.
pub fn get(
    txn: &RoTxn,
    dbs: &Dbs,
    endpoint: EndpointKey,
    seq: Seq,
) -> Result<Option<DeliveryRecord>, LogError> {
    dbs.deliveries
        .get(txn, &delivery_key(endpoint, seq))?
        .map(DeliveryRecord::decode)
        .transpose()
}

/// Writes (creates or replaces) the delivery of message `seq` to `endpoint`.
pub(in crate::log) fn put(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    endpoint: EndpointKey,
    seq: Seq,
    row: &DeliveryRecord,
) -> Result<(), LogError> {
    dbs.deliveries
        .put(wtxn, &delivery_key(endpoint, seq), &row.encode())?;
    Ok(())
}

/// Deletes the delivery of message `seq` to `endpoint` (nothing if it has no row).
pub(in crate::log) fn delete(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    endpoint: EndpointKey,
    seq: Seq,
) -> Result<(), LogError> {
    dbs.deliveries.delete(wtxn, &delivery_key(endpoint, seq))?;
    Ok(())
}

/// Visits `endpoint`'s deliveries whose seqs lie in `seqs`, lowest seq first, until
/// `visit` returns `true` (stop) or the range ends.
pub fn each_of_endpoint(
    txn: &RoTxn,
    dbs: &Dbs,
    endpoint: EndpointKey,
    seqs: (Bound<u64>, Bound<u64>),
    mut visit: impl FnMut(Seq, DeliveryRecord) -> Result<bool, LogError>,
) -> Result<(), LogError> {
    let key_of = |seq| delivery_key(endpoint, Seq(seq));
    let lower = match seqs.0 {
        Bound::Included(seq) => Bound::Included(key_of(seq)),
        Bound::Excluded(seq) => Bound::Excluded(key_of(seq)),
        Bound::Unbounded => Bound::Included(key_of(0)),
    };
    let upper = match seqs.1 {
        Bound::Included(seq) => Bound::Included(key_of(seq)),
        Bound::Excluded(seq) => Bound::Excluded(key_of(seq)),
        Bound::Unbounded => Bound::Included(key_of(u64::MAX)),
    };
    fn as_slice(bound: &Bound<[u8; 16]>) -> Bound<&[u8]> {
        match bound {
            Bound::Included(key) => Bound::Included(key.as_slice()),
            Bound::Excluded(key) => Bound::Excluded(key.as_slice()),
            Bound::Unbounded => Bound::Unbounded,
        }
    }
    for row in dbs
        .deliveries
        .range(txn, &(as_slice(&lower), as_slice(&upper)))?
    {
        let (key, value) = row?;
        let seq = Seq(schema::read_u64(db_name::DELIVERIES, key, 8)?);
        if visit(seq, DeliveryRecord::decode(value)?)? {
            break;
        }
    }
    Ok(())
}

/// A list page's walk over `endpoint`'s deliveries in seq order (either direction, from
/// the row after `walk.after`); returns whether it stopped at `walk.rows_max`.
pub fn walk_endpoint(
    txn: &RoTxn,
    dbs: &Dbs,
    endpoint: EndpointKey,
    walk: Walk<u64>,
    mut visit: impl FnMut(u64, DeliveryRecord) -> Result<bool, LogError>,
) -> Result<bool, LogError> {
    super::tables::scan_children(
        txn,
        &dbs.deliveries,
        db_name::DELIVERIES,
        endpoint.0,
        walk,
        |seq, value| visit(seq, DeliveryRecord::decode(value)?),
    )
}

#[cfg(test)]
mod tests {
    use std::ops::Bound::{Excluded, Included, Unbounded};

    use super::*;
    use crate::log::schema::DeliveryState;

    fn open() -> (tempfile::TempDir, heed::Env<heed::WithoutTls>, Dbs) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut storage = crate::config::Config::embedded_default().storage;
        storage.map_size_bytes = 16 << 20;
        let (env, dbs) = crate::log::open_env(dir.path(), &storage).expect("open");
        (dir, env, dbs)
    }

    fn row(state: DeliveryState, next_due_ms: u64) -> DeliveryRecord {
        DeliveryRecord {
            state,
            manual: false,
            attempts: 0,
            next_due_ms,
            updated_ms: 1,
        }
    }

    /// The seqs of `endpoint` that `each_of_endpoint` visits over `seqs`, stopping after `stop`.
    fn visited(
        env: &heed::Env<heed::WithoutTls>,
        dbs: &Dbs,
        endpoint: u64,
        seqs: (Bound<u64>, Bound<u64>),
        stop: usize,
    ) -> Vec<u64> {
        let rtxn = env.read_txn().expect("rtxn");
        let mut seen = Vec::new();
        each_of_endpoint(&rtxn, dbs, EndpointKey(endpoint), seqs, |seq, row| {
            assert_eq!(
                row.next_due_ms,
                seq.0.wrapping_mul(10),
                "each seq's own row"
            );
            seen.push(seq.0);
            Ok(seen.len() >= stop)
        })
        .expect("walk");
        seen
    }

    #[test]
    fn an_endpoints_rows_come_in_seq_order_within_the_bounds_and_no_other_endpoints() {
        let (_dir, env, dbs) = open();
        let mut wtxn = env.write_txn().expect("wtxn");
        for (endpoint, seq) in [(6, 2), (7, 1), (7, 3), (7, 5), (7, u64::MAX), (8, 4)] {
            let pending = row(DeliveryState::Pending, seq.wrapping_mul(10));
            put(&mut wtxn, &dbs, EndpointKey(endpoint), Seq(seq), &pending).expect("put");
        }
        for seq in [1, 2] {
            let edge = row(DeliveryState::Pending, seq * 10);
            put(&mut wtxn, &dbs, EndpointKey(u64::MAX), Seq(seq), &edge).expect("put");
        }
        wtxn.commit().expect("commit");

        let all = (Unbounded, Unbounded);
        let max = u64::MAX;
        assert_eq!(visited(&env, &dbs, 7, all, 99), [1, 3, 5, max]);
        assert_eq!(
            visited(&env, &dbs, 7, (Included(3), Excluded(max)), 99),
            [3, 5]
        );
        assert_eq!(
            visited(&env, &dbs, 7, (Excluded(3), Included(max)), 99),
            [5, max]
        );
        assert_eq!(
            visited(&env, &dbs, 7, (Included(2), Included(2)), 99),
            Vec::<u64>::new()
        );
        assert_eq!(
            visited(&env, &dbs, 7, all, 2),
            [1, 3],
            "visit stops the walk"
        );
        assert_eq!(
            visited(&env, &dbs, u64::MAX, all, 99),
            [1, 2],
            "the last endpoint"
        );
        assert_eq!(visited(&env, &dbs, 9, all, 99), Vec::<u64>::new());
    }

    #[test]
    fn a_row_is_read_replaced_and_deleted_by_its_endpoint_and_seq() {
        let (_dir, env, dbs) = open();
        let (endpoint, seq) = (EndpointKey(3), Seq(11));
        let mut wtxn = env.write_txn().expect("wtxn");
        put(
            &mut wtxn,
            &dbs,
            endpoint,
            seq,
            &row(DeliveryState::Pending, 5),
        )
        .expect("put");
        put(
            &mut wtxn,
            &dbs,
            EndpointKey(4),
            seq,
            &row(DeliveryState::Failed, 6),
        )
        .expect("put");
        put(
            &mut wtxn,
            &dbs,
            endpoint,
            seq,
            &row(DeliveryState::Succeeded, 7),
        )
        .expect("put");
        assert_eq!(
            get(&wtxn, &dbs, endpoint, seq).expect("get"),
            Some(row(DeliveryState::Succeeded, 7)),
            "the later put replaced the row"
        );
        delete(&mut wtxn, &dbs, endpoint, seq).expect("delete");
        delete(&mut wtxn, &dbs, endpoint, Seq(12)).expect("deleting no row is no error");
        assert_eq!(get(&wtxn, &dbs, endpoint, seq).expect("get"), None);
        assert_eq!(
            get(&wtxn, &dbs, EndpointKey(4), seq).expect("get"),
            Some(row(DeliveryState::Failed, 6)),
            "another endpoint's row of the same message stays"
        );
    }
}
