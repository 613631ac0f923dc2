//! Remembered idempotent replies: where each one is in the `replies` table.
//!
//! `replies` is filed by time (created_ms, key hash), so remembering a reply appends near
//! the end of the table and expiring replies deletes from its front: a batch of remembered
//! replies touches a few pages, where a table keyed by the hash alone touched one random
//! leaf per reply (the Svix SDKs send an idempotency key with every POST, so that was one
//! random page write per message). A lookup by hash finds the reply's time here first:
//! `ReplyIndex` maps the hash's first 8 bytes to the time of the newest reply filed under
//! them. It is derived state: built from the table when the log opens, changed only by
//! the writer, with the changes of a batch applied once the batch is durable (`Pending`).
//!
//! Two keys whose hashes share 8 bytes (about one pair in 10^10 among `REPLIES_MAX`
//! keys): the index keeps the newer; a lookup of the older then finds no row under the
//! newer's time (the row's key holds the whole hash) and answers as if it had expired.

use std::collections::HashMap;
use std::sync::RwLock;

/// The first 8 bytes of a key hash, the index's key.
pub(in crate::log) fn prefix(key: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&key[..8]);
    u64::from_be_bytes(first)
}

/// Hash prefix → the created_ms of the newest reply filed under it (committed state).
#[derive(Default)]
pub struct ReplyIndex {
    by_prefix: RwLock<HashMap<u64, u64>>,
}

impl ReplyIndex {
    /// The time the reply under `key` was filed at, if one is.
    pub(in crate::log) fn created_ms(&self, key: &[u8; 32]) -> Option<u64> {
        self.read().get(&prefix(key)).copied()
    }

    /// How many replies it locates.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces the whole index (the log was opened, or a failed batch reloaded it) with
    /// `by_prefix`, read from the table (`tables::reply_index_map`).
    pub(in crate::log) fn rebuild(&self, by_prefix: HashMap<u64, u64>) {
        *self.write() = by_prefix;
    }

    /// Applies a committed batch's changes.
    pub(in crate::log) fn apply(&self, pending: &mut Pending) {
        if pending.changes.is_empty() {
            return;
        }
        let mut by_prefix = self.write();
        for (prefix, change) in pending.changes.drain() {
            match change {
                Some(created_ms) => by_prefix.insert(prefix, created_ms),
                None => by_prefix.remove(&prefix),
            };
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, u64>> {
        // A panic while holding the lock aborts the process (panic = "abort"), so a
        // poisoned lock holds a whole map.
        self.by_prefix
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, u64>> {
        self.by_prefix
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The index changes of the batch being applied: per prefix, its latest state
/// (`None`: no reply filed under it).
#[derive(Default)]
pub(in crate::log) struct Pending {
    changes: HashMap<u64, Option<u64>>,
}

impl Pending {
    /// Where the reply under `key` is filed, as this batch leaves it so far.
    pub(in crate::log) fn created_ms(&self, index: &ReplyIndex, key: &[u8; 32]) -> Option<u64> {
        match self.changes.get(&prefix(key)) {
            Some(change) => *change,
            None => index.created_ms(key),
        }
    }

    pub(in crate::log) fn filed(&mut self, key: &[u8; 32], created_ms: u64) {
        self.changes.insert(prefix(key), Some(created_ms));
    }

    /// The row (`created_ms`, `key`) left the table: its prefix no longer locates a
    /// reply, unless it locates a newer one (under a key of the same prefix).
    pub(in crate::log) fn removed(&mut self, index: &ReplyIndex, key: &[u8; 32], created_ms: u64) {
        if self.created_ms(index, key) == Some(created_ms) {
            self.changes.insert(prefix(key), None);
        }
    }

    /// A failed batch's changes are dropped with it.
    pub(in crate::log) fn clear(&mut self) {
        self.changes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key whose prefix (first 8 bytes) is all `prefix_byte` and the rest `rest`.
    fn key(prefix_byte: u8, rest: u8) -> [u8; 32] {
        let mut key = [rest; 32];
        key[..8].fill(prefix_byte);
        key
    }

    #[test]
    fn a_batch_sees_its_own_changes_and_the_index_gets_them_once_applied() {
        let index = ReplyIndex::default();
        index.rebuild(HashMap::from([(prefix(&key(1, 0)), 10)]));
        let mut pending = Pending::default();
        pending.filed(&key(2, 0), 20);
        assert_eq!(pending.created_ms(&index, &key(2, 0)), Some(20));
        assert_eq!(index.created_ms(&key(2, 0)), None, "not before the commit");
        pending.removed(&index, &key(1, 0), 10);
        assert_eq!(pending.created_ms(&index, &key(1, 0)), None);
        index.apply(&mut pending);
        assert_eq!(index.created_ms(&key(1, 0)), None);
        assert_eq!(index.created_ms(&key(2, 0)), Some(20));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn removing_an_older_row_keeps_a_newer_reply_of_the_same_prefix() {
        let index = ReplyIndex::default();
        let (older, newer) = (key(7, 1), key(7, 2));
        assert_eq!(prefix(&older), prefix(&newer));
        let mut pending = Pending::default();
        pending.filed(&older, 10);
        pending.filed(&newer, 30);
        pending.removed(&index, &older, 10);
        index.apply(&mut pending);
        assert_eq!(index.created_ms(&newer), Some(30));
    }

    #[test]
    fn a_failed_batch_leaves_the_index_as_it_was() {
        let index = ReplyIndex::default();
        let mut pending = Pending::default();
        pending.filed(&key(3, 0), 30);
        pending.clear();
        index.apply(&mut pending);
        assert!(index.is_empty());
    }
}
