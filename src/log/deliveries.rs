//! Every delivery's row, and every way Sluice reads or changes one. No other code builds
//! a delivery key or walks these tables, so their layout lives here alone.
//!
//! The layout (schema 2) serves fan-out. A message's rows are keyed (seq, endpoint) in
//! `delivery_rows`, so they are appended side by side at the table's end, and an
//! attempt's update finds its row among the recent ones. Each endpoint's rows in seq
//! order come from `endpoint_deliveries`, which is complete below a watermark seq kept
//! in `meta`. The rows at or past the watermark are the index's buffer: they sit at the
//! end of `delivery_rows` already, and once `DELIVERY_INDEX_BATCH_ROWS` of them exist,
//! the apply that made the last one writes all their index rows, sorted, and moves the
//! watermark. An endpoint's index leaf is then copied once per batch instead of once per
//! commit (BENCHMARKS.md, "Where fan-out's commits go"). Everything here depends only on
//! the tables, so two logs that apply the same ops stay byte-identical, and a restart
//! has nothing to rebuild. Readers take the index below the watermark and scan the
//! (bounded) rows past it. The writer holds the watermark and the count of rows past it
//! (`Unindexed`), which it counts from the tables when it loads, so that an append
//! touches no `meta` row.
//!
//! Reads take any transaction; writes take a `RwTxn` and so run on the writer thread.

use std::ops::Bound;

use heed::{PutFlags, RoTxn, RwTxn};

use super::schema::{
    self, DeliveryRecord, EndpointKey, Seq, db_name, delivery_row_key, endpoint_delivery_key,
    meta_key, u64_key,
};
use super::tables::Walk;
use super::{Dbs, LogError};
use crate::limits::DELIVERY_INDEX_BATCH_ROWS;

/// The part of `delivery_rows` the index does not cover yet: the watermark (kept in
/// `meta` too, where readers find it) and how many rows lie at or past it. The writer
/// holds it in its state, so that a new message's rows do not read and write a `meta`
/// row each; both figures are the tables' to say, so `load` counts them again whenever
/// the writer loads its state (at open, and after a batch that failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::log) struct Unindexed {
    /// The watermark: the lowest seq whose rows may lack their index row.
    from: u64,
    /// How many rows of seqs from `from` on exist.
    rows: u64,
}

impl Unindexed {
    /// Reads the watermark and counts the rows past it (at most a batch and a message's).
    pub(in crate::log) fn load(txn: &RoTxn, dbs: &Dbs) -> Result<Unindexed, LogError> {
        let from = meta_u64(txn, dbs, meta_key::DELIVERIES_UNINDEXED_FROM)?;
        let lower = delivery_row_key(Seq(from), EndpointKey(0));
        let mut rows = 0u64;
        for row in dbs
            .deliveries
            .range(txn, &(Bound::Included(&lower[..]), Bound::Unbounded))?
        {
            row?;
            rows += 1;
        }
        Ok(Unindexed { from, rows })
    }

    /// The watermark and the count, for tests that follow a batch.
    #[cfg(test)]
    pub(in crate::log) fn figures(&self) -> (u64, u64) {
        (self.from, self.rows)
    }
}

/// The delivery of message `seq` to `endpoint`, if it has a row.
pub fn get(
    txn: &RoTxn,
    dbs: &Dbs,
    endpoint: EndpointKey,
    seq: Seq,
) -> Result<Option<DeliveryRecord>, LogError> {
    dbs.deliveries
        .get(txn, &delivery_row_key(seq, endpoint))?
        .map(DeliveryRecord::decode)
        .transpose()
}

/// Replaces the row of a delivery that has one (an attempt's outcome, a skip, a requeue).
pub(in crate::log) fn replace(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    endpoint: EndpointKey,
    seq: Seq,
    row: &DeliveryRecord,
) -> Result<(), LogError> {
    dbs.deliveries
        .put(wtxn, &delivery_row_key(seq, endpoint), &row.encode())?;
    Ok(())
}

/// Creates the row of a delivery that has none (a requeue of a message the endpoint never
/// had, or an attempt whose row went meanwhile): indexed at once below the watermark,
/// else counted towards the next batch.
pub(in crate::log) fn insert(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    unindexed: &mut Unindexed,
    endpoint: EndpointKey,
    seq: Seq,
    row: &DeliveryRecord,
) -> Result<(), LogError> {
    replace(wtxn, dbs, endpoint, seq, row)?;
    if seq.0 < unindexed.from {
        dbs.endpoint_deliveries
            .put(wtxn, &endpoint_delivery_key(endpoint, seq), &[])?;
        Ok(())
    } else {
        count_unindexed(wtxn, dbs, unindexed, 1)
    }
}

/// Creates the rows of a new message, the log's newest (`seq` above every row's): appended
/// in key order, counted towards the next batch, which they may complete.
pub(in crate::log) fn insert_new_message(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    unindexed: &mut Unindexed,
    seq: Seq,
    mut rows: Vec<(EndpointKey, DeliveryRecord)>,
) -> Result<(), LogError> {
    if rows.is_empty() {
        return Ok(());
    }
    // MDB_APPEND wants each key above the table's last: the seq is, so the endpoints in
    // order (each once) are too.
    rows.sort_unstable_by_key(|(endpoint, _)| *endpoint);
    rows.dedup_by_key(|(endpoint, _)| *endpoint);
    for (endpoint, row) in &rows {
        dbs.deliveries.put_with_flags(
            wtxn,
            PutFlags::APPEND,
            &delivery_row_key(seq, *endpoint),
            &row.encode(),
        )?;
    }
    count_unindexed(wtxn, dbs, unindexed, rows.len() as u64)
}

/// Deletes the delivery of message `seq` to `endpoint` (nothing if it has no row).
pub(in crate::log) fn delete(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    unindexed: &mut Unindexed,
    endpoint: EndpointKey,
    seq: Seq,
) -> Result<(), LogError> {
    delete_all(wtxn, dbs, unindexed, [(endpoint, seq)])
}

/// Deletes the deliveries `rows` (those that have a row), each with its index row or its
/// place in the count past the watermark.
pub(in crate::log) fn delete_all(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    unindexed: &mut Unindexed,
    rows: impl IntoIterator<Item = (EndpointKey, Seq)>,
) -> Result<(), LogError> {
    for (endpoint, seq) in rows {
        if !dbs
            .deliveries
            .delete(wtxn, &delivery_row_key(seq, endpoint))?
        {
            continue;
        }
        if seq.0 < unindexed.from {
            dbs.endpoint_deliveries
                .delete(wtxn, &endpoint_delivery_key(endpoint, seq))?;
        } else {
            unindexed.rows = unindexed.rows.saturating_sub(1);
        }
    }
    Ok(())
}

/// Counts `added` rows past the watermark; at `DELIVERY_INDEX_BATCH_ROWS`, indexes them.
fn count_unindexed(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    unindexed: &mut Unindexed,
    added: u64,
) -> Result<(), LogError> {
    unindexed.rows = unindexed.rows.saturating_add(added);
    if unindexed.rows >= DELIVERY_INDEX_BATCH_ROWS {
        index_batch(wtxn, dbs, unindexed)
    } else {
        Ok(())
    }
}

/// Writes the index rows of every row past the watermark, in key order, and moves the
/// watermark past them.
pub(in crate::log) fn index_batch(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    unindexed: &mut Unindexed,
) -> Result<(), LogError> {
    let lower = delivery_row_key(Seq(unindexed.from), EndpointKey(0));
    let (mut keys, mut last_seq) = (Vec::new(), None);
    for row in dbs
        .deliveries
        .range(wtxn, &(Bound::Included(&lower[..]), Bound::Unbounded))?
    {
        let (key, _) = row?;
        let (seq, endpoint) = row_key_parts(key)?;
        keys.push(endpoint_delivery_key(endpoint, seq));
        // In key order, so the last row has the highest seq.
        last_seq = Some(seq);
    }
    let Some(last_seq) = last_seq else {
        unindexed.rows = 0;
        return Ok(());
    };
    let next_from = last_seq.0.saturating_add(1);
    keys.sort_unstable();
    for key in &keys {
        dbs.endpoint_deliveries.put(wtxn, key, &[])?;
    }
    set_meta_u64(wtxn, dbs, meta_key::DELIVERIES_UNINDEXED_FROM, next_from)?;
    *unindexed = Unindexed {
        from: next_from,
        rows: 0,
    };
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
    let Some(span) = inclusive(seqs) else {
        return Ok(());
    };
    visit_span(txn, dbs, endpoint, span, false, &mut visit)?;
    Ok(())
}

/// A list page's walk over `endpoint`'s deliveries in seq order (either direction, from
/// the row after `walk.after`): `visit` returns `true` when the page is full; returns
/// whether the walk stopped at `walk.rows_max` rows instead.
pub fn walk_endpoint(
    txn: &RoTxn,
    dbs: &Dbs,
    endpoint: EndpointKey,
    walk: Walk<u64>,
    mut visit: impl FnMut(u64, DeliveryRecord) -> Result<bool, LogError>,
) -> Result<bool, LogError> {
    let seqs = match (walk.after, walk.toward_lower) {
        (Some(after), true) => (Bound::Unbounded, Bound::Excluded(after)),
        (Some(after), false) => (Bound::Excluded(after), Bound::Unbounded),
        (None, _) => (Bound::Unbounded, Bound::Unbounded),
    };
    let Some(span) = inclusive(seqs) else {
        return Ok(false);
    };
    let (mut seen, mut capped) = (0, false);
    visit_span(
        txn,
        dbs,
        endpoint,
        span,
        walk.toward_lower,
        &mut |seq, row| {
            seen += 1;
            if visit(seq.0, row)? {
                return Ok(true);
            }
            capped = seen >= walk.rows_max;
            Ok(capped)
        },
    )?;
    Ok(capped)
}

/// Visits every delivery of the messages of seqs `low..=high`, in (seq, endpoint) order,
/// until `visit` returns `true`: one range of the table, whatever the endpoints.
pub fn each_of_messages(
    txn: &RoTxn,
    dbs: &Dbs,
    (low, high): (Seq, Seq),
    mut visit: impl FnMut(Seq, EndpointKey, DeliveryRecord) -> Result<bool, LogError>,
) -> Result<(), LogError> {
    let (lower, upper) = (
        delivery_row_key(low, EndpointKey(0)),
        delivery_row_key(high, EndpointKey(u64::MAX)),
    );
    for row in dbs.deliveries.range(
        txn,
        &(Bound::Included(&lower[..]), Bound::Included(&upper[..])),
    )? {
        let (key, value) = row?;
        let (seq, endpoint) = row_key_parts(key)?;
        if visit(seq, endpoint, DeliveryRecord::decode(value)?)? {
            break;
        }
    }
    Ok(())
}

/// Up to `rows_max` deliveries of any of `endpoints` (each endpoint's in seq order): the
/// indexed ones endpoint by endpoint, then the rows past the watermark in one scan for
/// all of them, so that many endpoints with no rows cost one scan, not one each.
pub fn first_of_endpoints(
    txn: &RoTxn,
    dbs: &Dbs,
    endpoints: &[EndpointKey],
    rows_max: usize,
) -> Result<Vec<(EndpointKey, Seq, DeliveryRecord)>, LogError> {
    let mut found = Vec::new();
    if rows_max == 0 {
        return Ok(found);
    }
    let from = meta_u64(txn, dbs, meta_key::DELIVERIES_UNINDEXED_FROM)?;
    if from > 0 {
        for &endpoint in endpoints {
            visit_indexed(txn, dbs, endpoint, (0, from - 1), false, &mut |seq, row| {
                found.push((endpoint, seq, row));
                Ok(found.len() >= rows_max)
            })?;
            if found.len() >= rows_max {
                return Ok(found);
            }
        }
    }
    let wanted: std::collections::HashSet<EndpointKey> = endpoints.iter().copied().collect();
    each_of_messages(
        txn,
        dbs,
        (Seq(from), Seq(u64::MAX)),
        |seq, endpoint, row| {
            if wanted.contains(&endpoint) {
                found.push((endpoint, seq, row));
            }
            Ok(found.len() >= rows_max)
        },
    )?;
    Ok(found)
}

/// Visits the deliveries of each of `endpoints` whose seqs lie in `seqs`, at most
/// `rows_max_each` of each: the indexed ones endpoint by endpoint, then the rows past the
/// watermark in one scan for all of them, so that a page of endpoints costs one scan of
/// that part, not one each. `visit` gets the endpoint's place in `endpoints` and returns
/// `true` to end the walk. Returns, for each endpoint, whether all its rows were visited
/// (once `visit` ends the walk, only the rows seen so far count).
pub fn each_of_endpoints(
    txn: &RoTxn,
    dbs: &Dbs,
    endpoints: &[EndpointKey],
    seqs: (Bound<u64>, Bound<u64>),
    rows_max_each: usize,
    mut visit: impl FnMut(usize, Seq, DeliveryRecord) -> Result<bool, LogError>,
) -> Result<Vec<bool>, LogError> {
    let mut complete = vec![true; endpoints.len()];
    let Some((low, high)) = inclusive(seqs) else {
        return Ok(complete);
    };
    let mut visited = vec![0usize; endpoints.len()];
    let ended = std::cell::Cell::new(false);
    // One endpoint's row: counted against its cap, then visited; `true` when the
    // endpoint is capped or the walk ended.
    let mut take = |place: usize, seq: Seq, row: DeliveryRecord| -> Result<bool, LogError> {
        if visited[place] >= rows_max_each {
            complete[place] = false;
            return Ok(true);
        }
        visited[place] += 1;
        ended.set(visit(place, seq, row)?);
        Ok(ended.get())
    };
    let from = meta_u64(txn, dbs, meta_key::DELIVERIES_UNINDEXED_FROM)?;
    if low < from {
        for (place, &endpoint) in endpoints.iter().enumerate() {
            visit_indexed(
                txn,
                dbs,
                endpoint,
                (low, high.min(from - 1)),
                false,
                &mut |seq, row| take(place, seq, row),
            )?;
            if ended.get() {
                break;
            }
        }
    }
    if high >= from && !ended.get() {
        let mut places = std::collections::HashMap::with_capacity(endpoints.len());
        for (place, &endpoint) in endpoints.iter().enumerate() {
            places.entry(endpoint).or_insert(place);
        }
        each_of_messages(
            txn,
            dbs,
            (Seq(low.max(from)), Seq(high)),
            |seq, endpoint, row| {
                match places.get(&endpoint) {
                    // A capped endpoint's row says only that it has more.
                    Some(&place) => Ok(take(place, seq, row)? && ended.get()),
                    None => Ok(false),
                }
            },
        )?;
    }
    Ok(complete)
}

/// `seqs` as an inclusive (lowest, highest), `None` when it holds no seq.
fn inclusive(seqs: (Bound<u64>, Bound<u64>)) -> Option<(u64, u64)> {
    let low = match seqs.0 {
        Bound::Included(seq) => seq,
        Bound::Excluded(seq) => seq.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let high = match seqs.1 {
        Bound::Included(seq) => seq,
        Bound::Excluded(seq) => seq.checked_sub(1)?,
        Bound::Unbounded => u64::MAX,
    };
    (low <= high).then_some((low, high))
}

/// Visits `endpoint`'s rows of seqs in `(low, high)` (inclusive) in seq order, or in
/// reverse: the indexed part through the index, the part past the watermark by scanning
/// it. Returns whether `visit` stopped the walk.
fn visit_span(
    txn: &RoTxn,
    dbs: &Dbs,
    endpoint: EndpointKey,
    (low, high): (u64, u64),
    toward_lower: bool,
    visit: &mut dyn FnMut(Seq, DeliveryRecord) -> Result<bool, LogError>,
) -> Result<bool, LogError> {
    let from = meta_u64(txn, dbs, meta_key::DELIVERIES_UNINDEXED_FROM)?;
    let indexed = (low < from).then(|| (low, high.min(from - 1)));
    let unindexed = (high >= from).then(|| (low.max(from), high));
    let mut parts = [
        indexed.map(|span| (span, true)),
        unindexed.map(|span| (span, false)),
    ];
    if toward_lower {
        parts.reverse();
    }
    for ((low, high), through_index) in parts.into_iter().flatten() {
        let stopped = if through_index {
            visit_indexed(txn, dbs, endpoint, (low, high), toward_lower, visit)?
        } else {
            visit_unindexed(txn, dbs, endpoint, (low, high), toward_lower, visit)?
        };
        if stopped {
            return Ok(true);
        }
    }
    Ok(false)
}

fn visit_indexed(
    txn: &RoTxn,
    dbs: &Dbs,
    endpoint: EndpointKey,
    (low, high): (u64, u64),
    toward_lower: bool,
    visit: &mut dyn FnMut(Seq, DeliveryRecord) -> Result<bool, LogError>,
) -> Result<bool, LogError> {
    let (lower, upper) = (
        endpoint_delivery_key(endpoint, Seq(low)),
        endpoint_delivery_key(endpoint, Seq(high)),
    );
    let bounds = (Bound::Included(&lower[..]), Bound::Included(&upper[..]));
    let step = |key: &[u8], _: &[u8]| -> Result<bool, LogError> {
        let seq = Seq(schema::read_u64(db_name::ENDPOINT_DELIVERIES, key, 8)?);
        let row = get(txn, dbs, endpoint, seq)?.ok_or_else(|| {
            LogError::corrupt(
                db_name::ENDPOINT_DELIVERIES,
                "index row of a missing delivery",
            )
        })?;
        visit(seq, row)
    };
    walk_rows(txn, &dbs.endpoint_deliveries, bounds, toward_lower, step)
}

fn visit_unindexed(
    txn: &RoTxn,
    dbs: &Dbs,
    endpoint: EndpointKey,
    (low, high): (u64, u64),
    toward_lower: bool,
    visit: &mut dyn FnMut(Seq, DeliveryRecord) -> Result<bool, LogError>,
) -> Result<bool, LogError> {
    let (lower, upper) = (
        delivery_row_key(Seq(low), EndpointKey(0)),
        delivery_row_key(Seq(high), EndpointKey(u64::MAX)),
    );
    let bounds = (Bound::Included(&lower[..]), Bound::Included(&upper[..]));
    let step = |key: &[u8], value: &[u8]| -> Result<bool, LogError> {
        let (seq, of) = row_key_parts(key)?;
        if of != endpoint {
            return Ok(false);
        }
        visit(seq, DeliveryRecord::decode(value)?)
    };
    walk_rows(txn, &dbs.deliveries, bounds, toward_lower, step)
}

/// Steps through `table`'s rows within `bounds`, in key order or in reverse, until `step`
/// returns `true` (then `true`) or the rows end (`false`).
fn walk_rows(
    txn: &RoTxn,
    table: &super::Table,
    bounds: (Bound<&[u8]>, Bound<&[u8]>),
    toward_lower: bool,
    mut step: impl FnMut(&[u8], &[u8]) -> Result<bool, LogError>,
) -> Result<bool, LogError> {
    if toward_lower {
        for row in table.rev_range(txn, &bounds)? {
            let (key, value) = row?;
            if step(key, value)? {
                return Ok(true);
            }
        }
    } else {
        for row in table.range(txn, &bounds)? {
            let (key, value) = row?;
            if step(key, value)? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn row_key_parts(key: &[u8]) -> Result<(Seq, EndpointKey), LogError> {
    Ok((
        Seq(schema::read_u64(db_name::DELIVERY_ROWS, key, 0)?),
        EndpointKey(schema::read_u64(db_name::DELIVERY_ROWS, key, 8)?),
    ))
}

fn meta_u64(txn: &RoTxn, dbs: &Dbs, key: &[u8]) -> Result<u64, LogError> {
    Ok(dbs
        .meta
        .get(txn, key)?
        .map(|value| schema::read_u64(db_name::META, value, 0))
        .transpose()?
        .unwrap_or(0))
}

fn set_meta_u64(wtxn: &mut RwTxn, dbs: &Dbs, key: &[u8], value: u64) -> Result<(), LogError> {
    dbs.meta.put(wtxn, key, &u64_key(value))?;
    Ok(())
}

/// Schema 1 to 2: every row of schema 1's `deliveries` (keyed (endpoint, seq)) moves to
/// `delivery_rows`, with its index row, all below the watermark; `deliveries` is left
/// empty. In the caller's transaction (the open's, before any writer). Returns how many
/// rows moved.
pub(in crate::log) fn migrate_from_schema_1(
    wtxn: &mut RwTxn,
    dbs: &Dbs,
    schema_1: &super::Table,
) -> Result<u64, LogError> {
    /// Rows read before they are written (a cursor cannot stay open across the writes).
    const CHUNK_ROWS: usize = 8_192;
    let (mut moved, mut last_seq, mut after) = (0u64, None::<u64>, None::<[u8; 16]>);
    loop {
        let lower = match &after {
            Some(key) => Bound::Excluded(&key[..]),
            None => Bound::Unbounded,
        };
        let mut chunk = Vec::with_capacity(CHUNK_ROWS);
        for row in schema_1.range(wtxn, &(lower, Bound::Unbounded))? {
            let (key, value) = row?;
            let endpoint = EndpointKey(schema::read_u64(db_name::SCHEMA_1_DELIVERIES, key, 0)?);
            let seq = Seq(schema::read_u64(db_name::SCHEMA_1_DELIVERIES, key, 8)?);
            chunk.push((endpoint, seq, DeliveryRecord::decode(value)?));
            if chunk.len() >= CHUNK_ROWS {
                break;
            }
        }
        let Some(&(endpoint, seq, _)) = chunk.last() else {
            break;
        };
        after = Some(endpoint_delivery_key(endpoint, seq));
        for (endpoint, seq, row) in &chunk {
            dbs.deliveries
                .put(wtxn, &delivery_row_key(*seq, *endpoint), &row.encode())?;
            // Read in (endpoint, seq) order: the index is written in its own key order.
            dbs.endpoint_deliveries.put_with_flags(
                wtxn,
                PutFlags::APPEND,
                &endpoint_delivery_key(*endpoint, *seq),
                &[],
            )?;
            last_seq = Some(last_seq.map_or(seq.0, |last| last.max(seq.0)));
        }
        moved += chunk.len() as u64;
    }
    if let Some(last_seq) = last_seq {
        set_meta_u64(
            wtxn,
            dbs,
            meta_key::DELIVERIES_UNINDEXED_FROM,
            last_seq.saturating_add(1),
        )?;
    }
    schema_1.clear(wtxn)?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use std::ops::Bound::{Excluded, Included, Unbounded};

    use super::*;
    use crate::log::schema::DeliveryState;

    type Env = heed::Env<heed::WithoutTls>;

    fn open() -> (tempfile::TempDir, Env, Dbs) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut storage = crate::config::Config::embedded_default().storage;
        storage.map_size_bytes = 64 << 20;
        let (env, dbs) =
            crate::log::open_env(dir.path(), &storage, crate::log::Upgrade::Refuse).expect("open");
        (dir, env, dbs)
    }

    /// A row that names its own seq (in `next_due_ms`), so a reader's row is checked to be
    /// its seq's.
    fn row(state: DeliveryState, seq: u64) -> DeliveryRecord {
        DeliveryRecord {
            state,
            manual: false,
            attempts: 0,
            next_due_ms: seq,
            updated_ms: 1,
        }
    }

    fn seqs_of(
        env: &Env,
        dbs: &Dbs,
        endpoint: u64,
        seqs: (Bound<u64>, Bound<u64>),
        stop: usize,
    ) -> Vec<u64> {
        let rtxn = env.read_txn().expect("rtxn");
        let mut seen = Vec::new();
        each_of_endpoint(&rtxn, dbs, EndpointKey(endpoint), seqs, |seq, row| {
            assert_eq!(row.next_due_ms, seq.0, "each seq's own row");
            seen.push(seq.0);
            Ok(seen.len() >= stop)
        })
        .expect("walk");
        seen
    }

    /// A list page: (the seqs visited, whether the walk stopped at its row cap); the page
    /// is full at `page` rows.
    fn page_of(
        env: &Env,
        dbs: &Dbs,
        endpoint: u64,
        walk: Walk<u64>,
        page: usize,
    ) -> (Vec<u64>, bool) {
        let rtxn = env.read_txn().expect("rtxn");
        let mut seen = Vec::new();
        let capped = walk_endpoint(&rtxn, dbs, EndpointKey(endpoint), walk, |seq, _| {
            seen.push(seq);
            Ok(seen.len() >= page)
        })
        .expect("walk");
        (seen, capped)
    }

    /// The watermark and the count of rows past it, as a writer loading its state finds
    /// them; the count `held` (the writer's, kept up as it wrote) must agree.
    fn figures(env: &Env, dbs: &Dbs, held: Unindexed) -> (u64, u64) {
        let rtxn = env.read_txn().expect("rtxn");
        let loaded = Unindexed::load(&rtxn, dbs).expect("load");
        assert_eq!(loaded, held, "the held figures are the tables'");
        loaded.figures()
    }

    const ROWS: [(u64, u64); 8] = [
        (7, 1),
        (6, 2),
        (7, 3),
        (8, 4),
        (7, 5),
        (u64::MAX, 5),
        (u64::MAX, 6),
        (7, 9),
    ];

    /// The figures a writer beginning `wtxn` would hold.
    fn held(wtxn: &RwTxn, dbs: &Dbs) -> Unindexed {
        Unindexed::load(wtxn, dbs).expect("load")
    }

    fn insert_row(
        wtxn: &mut RwTxn,
        dbs: &Dbs,
        unindexed: &mut Unindexed,
        (endpoint, seq): (u64, u64),
        state: DeliveryState,
    ) {
        let row = row(state, seq);
        insert(wtxn, dbs, unindexed, EndpointKey(endpoint), Seq(seq), &row).expect("insert");
    }

    /// `ROWS`, indexed through seq `indexed_through` (0: none), and the figures held.
    fn filled(indexed_through: u64) -> (tempfile::TempDir, Env, Dbs, Unindexed) {
        let (dir, env, dbs) = open();
        let mut wtxn = env.write_txn().expect("wtxn");
        let mut unindexed = held(&wtxn, &dbs);
        let (early, late): (Vec<_>, Vec<_>) = ROWS
            .into_iter()
            .partition(|(_, seq)| *seq <= indexed_through);
        for row in early {
            insert_row(&mut wtxn, &dbs, &mut unindexed, row, DeliveryState::Pending);
        }
        if indexed_through > 0 {
            index_batch(&mut wtxn, &dbs, &mut unindexed).expect("index");
        }
        for row in late {
            insert_row(&mut wtxn, &dbs, &mut unindexed, row, DeliveryState::Pending);
        }
        wtxn.commit().expect("commit");
        (dir, env, dbs, unindexed)
    }

    /// The same rows, with the watermark nowhere, in the middle (after seq 3's rows), and
    /// past them all: a range reads alike.
    #[test]
    fn an_endpoints_range_reads_alike_whatever_part_is_indexed() {
        for indexed_through in [0, 3, 9] {
            let (_dir, env, dbs, held) = filled(indexed_through);
            let case = format!("indexed through seq {indexed_through}");
            let unindexed = ROWS
                .iter()
                .filter(|(_, seq)| *seq > indexed_through)
                .count() as u64;
            let from = if indexed_through > 0 {
                indexed_through + 1
            } else {
                0
            };
            assert_eq!(
                figures(&env, &dbs, held),
                (from, unindexed),
                "{case}: the watermark"
            );
            let all = (Unbounded, Unbounded);
            assert_eq!(seqs_of(&env, &dbs, 7, all, 99), [1, 3, 5, 9], "{case}");
            assert_eq!(
                seqs_of(&env, &dbs, 7, (Included(3), Excluded(9)), 99),
                [3, 5],
                "{case}"
            );
            assert_eq!(
                seqs_of(&env, &dbs, 7, (Excluded(3), Included(9)), 99),
                [5, 9],
                "{case}"
            );
            assert_eq!(
                seqs_of(&env, &dbs, 7, (Included(2), Included(2)), 99),
                Vec::<u64>::new(),
                "{case}"
            );
            assert_eq!(
                seqs_of(&env, &dbs, 7, all, 2),
                [1, 3],
                "{case}: visit stops the walk"
            );
            assert_eq!(
                seqs_of(&env, &dbs, u64::MAX, all, 99),
                [5, 6],
                "{case}: the last endpoint"
            );
            assert_eq!(seqs_of(&env, &dbs, 9, all, 99), Vec::<u64>::new(), "{case}");
        }
    }

    /// The same three states: a list page reads alike, both ways.
    #[test]
    fn an_endpoints_list_pages_read_alike_whatever_part_is_indexed() {
        for indexed_through in [0, 3, 9] {
            let (_dir, env, dbs, _) = filled(indexed_through);
            let case = format!("indexed through seq {indexed_through}");
            let walk = |after, toward_lower, rows_max| Walk {
                after,
                toward_lower,
                rows_max,
            };
            let page = |walk, page| page_of(&env, &dbs, 7, walk, page);
            assert_eq!(
                page(walk(None, false, 10), 10),
                (vec![1, 3, 5, 9], false),
                "{case}"
            );
            assert_eq!(
                page(walk(None, true, 10), 10),
                (vec![9, 5, 3, 1], false),
                "{case}: newest first"
            );
            assert_eq!(
                page(walk(Some(3), false, 10), 10),
                (vec![5, 9], false),
                "{case}: after a cursor"
            );
            assert_eq!(
                page(walk(Some(5), true, 10), 10),
                (vec![3, 1], false),
                "{case}: before a cursor"
            );
            assert_eq!(
                page(walk(None, true, 10), 2),
                (vec![9, 5], false),
                "{case}: the page fills"
            );
            assert_eq!(
                page(walk(None, false, 3), 10),
                (vec![1, 3, 5], true),
                "{case}: the row cap"
            );
            assert_eq!(
                page(walk(Some(0), true, 10), 10),
                (vec![], false),
                "{case}: nothing before 0"
            );
        }
    }

    /// A message's rows, and the rows of many endpoints at once, read alike too.
    #[test]
    fn a_messages_rows_and_several_endpoints_rows_read_alike_whatever_part_is_indexed() {
        for indexed_through in [0, 3, 9] {
            let (_dir, env, dbs, _) = filled(indexed_through);
            let case = format!("indexed through seq {indexed_through}");
            let rtxn = env.read_txn().expect("rtxn");
            let mut of_5 = Vec::new();
            each_of_messages(&rtxn, &dbs, (Seq(4), Seq(5)), |seq, endpoint, row| {
                assert_eq!(row.next_due_ms, seq.0);
                of_5.push((seq.0, endpoint.0));
                Ok(false)
            })
            .expect("message rows");
            assert_eq!(of_5, [(4, 8), (5, 7), (5, u64::MAX)], "{case}");
            let first = |endpoints: &[u64], rows_max| {
                let endpoints: Vec<_> = endpoints.iter().copied().map(EndpointKey).collect();
                first_of_endpoints(&rtxn, &dbs, &endpoints, rows_max)
                    .expect("first rows")
                    .into_iter()
                    .map(|(endpoint, seq, _)| (endpoint.0, seq.0))
                    .collect::<Vec<_>>()
            };
            let mut both = first(&[8, 6, 1], 10);
            both.sort_unstable();
            assert_eq!(both, [(6, 2), (8, 4)], "{case}");
            assert_eq!(first(&[7], 2), [(7, 1), (7, 3)], "{case}: at most rows_max");
            assert_eq!(first(&[1, 2], 10), [], "{case}: endpoints with none");
            assert_eq!(first(&[7], 0), [], "{case}");
        }
    }

    /// Several endpoints' rows in one walk, each capped: alike whatever part is indexed.
    #[test]
    fn several_endpoints_rows_are_visited_within_each_cap_whatever_part_is_indexed() {
        for indexed_through in [0, 3, 9] {
            let (_dir, env, dbs, _) = filled(indexed_through);
            let case = format!("indexed through seq {indexed_through}");
            let rtxn = env.read_txn().expect("rtxn");
            let endpoints = [7, 9, 6, u64::MAX].map(EndpointKey);
            let walk = |seqs, cap, stop_after: usize| {
                let mut seen = vec![Vec::new(); endpoints.len()];
                let mut visits = 0;
                let complete =
                    each_of_endpoints(&rtxn, &dbs, &endpoints, seqs, cap, |place, seq, row| {
                        assert_eq!(row.next_due_ms, seq.0);
                        seen[place].push(seq.0);
                        visits += 1;
                        Ok(visits >= stop_after)
                    })
                    .expect("walk");
                (seen, complete)
            };
            let (seen, complete) = walk((Unbounded, Unbounded), 2, usize::MAX);
            assert_eq!(seen, [vec![1, 3], vec![], vec![2], vec![5, 6]], "{case}");
            assert_eq!(
                complete,
                [false, true, true, true],
                "{case}: seq 7 has more"
            );
            let (seen, complete) = walk((Included(3), Excluded(9)), 99, usize::MAX);
            assert_eq!(seen, [vec![3, 5], vec![], vec![], vec![5, 6]], "{case}");
            assert_eq!(complete, [true; 4], "{case}");
            let (seen, _) = walk((Unbounded, Unbounded), 99, 3);
            assert_eq!(
                seen.iter().map(Vec::len).sum::<usize>(),
                3,
                "{case}: visit ends the walk"
            );
            let (seen, complete) = walk((Included(4), Included(3)), 99, usize::MAX);
            assert_eq!(
                (seen, complete),
                (vec![Vec::new(); 4], vec![true; 4]),
                "{case}: no seq"
            );
        }
    }

    #[test]
    fn a_row_is_read_replaced_and_deleted_and_its_index_row_or_count_follows() {
        let (_dir, env, dbs) = open();
        let mut wtxn = env.write_txn().expect("wtxn");
        let mut unindexed = held(&wtxn, &dbs);
        let u = &mut unindexed;
        insert_row(&mut wtxn, &dbs, u, (3, 11), DeliveryState::Pending);
        index_batch(&mut wtxn, &dbs, u).expect("index");
        insert_row(&mut wtxn, &dbs, u, (3, 12), DeliveryState::Pending);
        insert_row(&mut wtxn, &dbs, u, (4, 12), DeliveryState::Failed);
        // A requeue of an old message for an endpoint that never had it: below the
        // watermark, so indexed at once.
        insert_row(&mut wtxn, &dbs, u, (4, 5), DeliveryState::Pending);
        let succeeded = row(DeliveryState::Succeeded, 12);
        replace(&mut wtxn, &dbs, EndpointKey(3), Seq(12), &succeeded).expect("replace");
        let read = |wtxn: &RwTxn, endpoint, seq| {
            get(wtxn, &dbs, EndpointKey(endpoint), Seq(seq)).expect("get")
        };
        assert_eq!(read(&wtxn, 3, 12), Some(succeeded), "the replacement");
        let index_rows = |wtxn: &RwTxn| dbs.endpoint_deliveries.len(wtxn).expect("len");
        assert_eq!(index_rows(&wtxn), 2, "seqs 11 and 5 indexed");
        wtxn.commit().expect("commit");
        assert_eq!(
            figures(&env, &dbs, unindexed),
            (12, 2),
            "two rows past the watermark"
        );

        let mut wtxn = env.write_txn().expect("wtxn");
        let u = &mut unindexed;
        delete(&mut wtxn, &dbs, u, EndpointKey(3), Seq(12)).expect("delete");
        delete(&mut wtxn, &dbs, u, EndpointKey(3), Seq(12)).expect("deleting no row is no error");
        delete(&mut wtxn, &dbs, u, EndpointKey(4), Seq(5)).expect("delete");
        assert_eq!(read(&wtxn, 3, 12), None);
        assert_eq!(index_rows(&wtxn), 1, "seq 5's index row went with it");
        wtxn.commit().expect("commit");
        assert_eq!(
            figures(&env, &dbs, unindexed),
            (12, 1),
            "one row past the watermark left"
        );
        assert_eq!(seqs_of(&env, &dbs, 4, (Unbounded, Unbounded), 99), [12]);
        assert_eq!(seqs_of(&env, &dbs, 3, (Unbounded, Unbounded), 99), [11]);
    }

    #[test]
    fn new_messages_rows_are_indexed_a_batch_at_a_time() {
        let (_dir, env, dbs) = open();
        let fanout = 10u64;
        let messages = DELIVERY_INDEX_BATCH_ROWS / fanout + 1;
        let mut wtxn = env.write_txn().expect("wtxn");
        let mut unindexed = held(&wtxn, &dbs);
        for seq in 1..=messages {
            // Endpoints in no particular order, one twice: each gets one row.
            let mut rows: Vec<_> = (0..fanout)
                .rev()
                .map(|endpoint| (EndpointKey(endpoint * 3), row(DeliveryState::Pending, seq)))
                .collect();
            rows.push(rows[0]);
            insert_new_message(&mut wtxn, &dbs, &mut unindexed, Seq(seq), rows).expect("append");
            let rows_so_far = seq * fanout;
            let indexed = dbs.endpoint_deliveries.len(&wtxn).expect("len");
            if rows_so_far < DELIVERY_INDEX_BATCH_ROWS {
                assert_eq!(indexed, 0, "message {seq}: not a batch yet");
            } else {
                assert_eq!(indexed, rows_so_far, "message {seq}: the batch is indexed");
                break;
            }
        }
        wtxn.commit().expect("commit");
        let (from, rows_past) = figures(&env, &dbs, unindexed);
        assert_eq!(rows_past, 0);
        assert_eq!(
            seqs_of(&env, &dbs, 6, (Excluded(from - 3), Unbounded), 99),
            [from - 2, from - 1]
        );
        assert_eq!(
            seqs_of(&env, &dbs, 6, (Unbounded, Unbounded), usize::MAX).len() as u64,
            from - 1
        );
    }

    #[test]
    fn a_schema_1_table_moves_whole_below_the_watermark() {
        let (_dir, env, dbs) = open();
        let wtxn = env.write_txn().expect("wtxn");
        let schema_1: crate::log::Table = env
            .create_databases_and_commit(wtxn, |opener, wtxn| {
                let table = opener.create_database(wtxn, Some(db_name::SCHEMA_1_DELIVERIES))?;
                Ok::<_, heed::Error>(heed::CommitOrAbort::<_, ()>::Commit(table))
            })
            .expect("create")
            .unwrap_commit();
        let mut wtxn = env.write_txn().expect("wtxn");
        let rows = 20_000u64;
        for n in 0..rows {
            let (endpoint, seq) = (EndpointKey(n % 7), Seq(n / 7 * 3 + 1));
            let key = endpoint_delivery_key(endpoint, seq);
            schema_1
                .put(&mut wtxn, &key, &row(DeliveryState::Failed, seq.0).encode())
                .expect("put");
        }
        let moved = migrate_from_schema_1(&mut wtxn, &dbs, &schema_1).expect("migrate");
        assert_eq!(moved, rows);
        assert!(
            schema_1.is_empty(&wtxn).expect("empty"),
            "schema 1's table is left empty"
        );
        wtxn.commit().expect("commit");
        let last_seq = (rows - 1) / 7 * 3 + 1;
        let rtxn = env.read_txn().expect("rtxn");
        assert_eq!(
            Unindexed::load(&rtxn, &dbs).expect("load").figures(),
            (last_seq + 1, 0),
            "every row is indexed"
        );
        drop(rtxn);
        let of_0 = seqs_of(&env, &dbs, 0, (Unbounded, Unbounded), usize::MAX);
        assert_eq!(of_0.len(), rows.div_ceil(7) as usize);
        assert!(of_0.windows(2).all(|w| w[1] == w[0] + 3), "in seq order");
        let rtxn = env.read_txn().expect("rtxn");
        assert_eq!(dbs.deliveries.len(&rtxn).expect("len"), rows);
        assert_eq!(dbs.endpoint_deliveries.len(&rtxn).expect("len"), rows);
    }
}
