//! The endpoint index: which endpoints a new message fans out to.
//!
//! Owned by the writer thread (`WriterState`), built from the `endpoints` table at start and
//! updated by the operations that change endpoints, inside the same batch. Matching follows
//! Svix: an endpoint matches when its event-type filter is absent or names the message's
//! type, and its channel filter is absent or shares a channel with the message.
//!
//! An application may have up to `limits::ENDPOINTS_PER_APP_MAX` endpoints, so a message
//! must not cost a look at each of them. Each application's push endpoints are filed
//! twice: by event type (with a file of those that take every type) and by channel (with
//! a file of those that take every channel). A message takes the smaller of the two
//! candidate sets that can hold its endpoints, checks each candidate against the rest of
//! the rule and answers in ascending endpoint key (creation order): the cost is that of
//! the candidates, not of the application, and the answer that of a look at every
//! endpoint in key order. A filed endpoint carries its disabled flag and whether it has a
//! filter of the other kind, so that a candidate without one is decided without looking
//! the endpoint up.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::schema::EndpointRecord;

/// Most answers `matching` reserves room for at once.
const MATCHED_RESERVED_MAX: usize = 1_024;

/// The part of an endpoint that decides whether a message is for it (the pollers' and
/// replay tasks' view of one endpoint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointFilter {
    pub endpoint_key: u64,
    pub disabled: bool,
    pub event_types: Option<Vec<String>>,
    pub channels: Option<Vec<String>>,
    /// Read by poller consumers only: never a delivery.
    pub polling_only: bool,
}

/// Endpoint filters per application key.
#[derive(Default)]
pub struct EndpointIndex {
    by_app: HashMap<u64, AppEndpoints>,
    /// How many endpoints are disabled, kept in step by every change (for metrics).
    disabled: u64,
    total: u64,
    /// Endpoints with a failure history (`failing_since_ms`), so that recording a success
    /// elsewhere needs no read of the endpoint.
    failing: HashSet<u64>,
}

/// One application's endpoints: each by key, and the push endpoints filed by event type
/// and by channel. Names are shared (`Arc<str>`) between an endpoint and the file that
/// holds it, so an endpoint costs a few pointers, not copies of its filter's names.
#[derive(Default)]
struct AppEndpoints {
    entries: BTreeMap<u64, Entry>,
    /// Push endpoints without an event-type filter.
    any_type: File,
    /// Push endpoints by each event type their filter names.
    by_type: HashMap<Arc<str>, File>,
    /// Push endpoints without a channel filter.
    any_channel: File,
    /// Push endpoints by each channel their filter names.
    by_channel: HashMap<Arc<str>, File>,
}

/// Filed endpoints by key, in key order.
type File = BTreeMap<u64, Filed>;

/// What a file holds of an endpoint: enough to decide a candidate without a lookup when
/// the endpoint has no filter of the other kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Filed {
    disabled: bool,
    /// In the type files: the endpoint has a channel filter; in the channel files: an
    /// event-type filter.
    other_filter: bool,
}

/// What the index keeps of one endpoint.
struct Entry {
    disabled: bool,
    polling_only: bool,
    event_types: Option<Box<[Arc<str>]>>,
    channels: Option<Box<[Arc<str>]>>,
}

impl EndpointIndex {
    /// Adds or replaces the filter of `record`.
    pub fn upsert(&mut self, record: &EndpointRecord) {
        if record.failing_since_ms.is_some() {
            self.failing.insert(record.key);
        } else {
            self.failing.remove(&record.key);
        }
        let app = self.by_app.entry(record.app_key).or_default();
        if let Some(old) = app.take(record.key) {
            self.disabled -= u64::from(old.disabled);
            self.total -= 1;
        }
        app.put(record);
        self.disabled += u64::from(record.disabled);
        self.total += 1;
    }

    pub fn remove(&mut self, app_key: u64, endpoint_key: u64) {
        self.failing.remove(&endpoint_key);
        let Some(app) = self.by_app.get_mut(&app_key) else {
            return;
        };
        if let Some(gone) = app.take(endpoint_key) {
            self.disabled -= u64::from(gone.disabled);
            self.total -= 1;
        }
        if app.entries.is_empty() {
            self.by_app.remove(&app_key);
        }
    }

    pub fn remove_app(&mut self, app_key: u64) {
        let Some(app) = self.by_app.remove(&app_key) else {
            return;
        };
        for (key, gone) in app.entries {
            self.failing.remove(&key);
            self.disabled -= u64::from(gone.disabled);
            self.total -= 1;
        }
    }

    /// Whether the endpoint has a failure history (`failing_since_ms` is set).
    pub fn is_failing(&self, endpoint_key: u64) -> bool {
        self.failing.contains(&endpoint_key)
    }

    /// The keys of `app_key`'s endpoints, ascending.
    pub fn keys_of(&self, app_key: u64) -> Vec<u64> {
        self.by_app
            .get(&app_key)
            .map_or_else(Vec::new, |app| app.entries.keys().copied().collect())
    }

    /// How many endpoints `app_key` has.
    pub fn count_for_app(&self, app_key: u64) -> usize {
        self.by_app.get(&app_key).map_or(0, |app| app.entries.len())
    }

    /// (enabled, disabled) endpoint counts.
    pub fn counts(&self) -> (u64, u64) {
        (self.total - self.disabled, self.disabled)
    }

    /// The endpoints of `app_key` a message of `event_type` on `channels` is pushed to
    /// (polling-only endpoints are read by their consumers instead), as (key, disabled),
    /// in ascending key. Costs the smaller candidate set (by type or by channel), not the
    /// application's endpoints.
    pub fn matching(
        &self,
        app_key: u64,
        event_type: &str,
        channels: Option<&[String]>,
    ) -> Vec<(u64, bool)> {
        let Some(app) = self.by_app.get(&app_key) else {
            return Vec::new();
        };
        let typed = app.by_type.get(event_type);
        let channel_files = || {
            channels
                .unwrap_or_default()
                .iter()
                .filter_map(|c| app.by_channel.get(c.as_str()))
        };
        let by_type_len = app.any_type.len() + typed.map_or(0, BTreeMap::len);
        let by_channel_len =
            app.any_channel.len() + channel_files().map(BTreeMap::len).sum::<usize>();
        let filed = |(key, filed): (&u64, &Filed)| (*key, *filed);
        if by_type_len <= by_channel_len {
            let sources = usize::from(!app.any_type.is_empty()) + usize::from(typed.is_some());
            let candidates = app
                .any_type
                .iter()
                .chain(typed.into_iter().flatten())
                .map(filed);
            app.decide(candidates, by_type_len, sources, event_type, channels)
        } else {
            let sources = usize::from(!app.any_channel.is_empty()) + channel_files().count();
            let candidates = app
                .any_channel
                .iter()
                .chain(channel_files().flatten())
                .map(filed);
            app.decide(candidates, by_channel_len, sources, event_type, channels)
        }
    }
}

impl AppEndpoints {
    /// The candidates (`count` of them, from `sources` files, each in key order) that a
    /// message of `event_type` on `channels` is for, in key order, once each.
    fn decide(
        &self,
        candidates: impl Iterator<Item = (u64, Filed)>,
        count: usize,
        sources: usize,
        event_type: &str,
        channels: Option<&[String]>,
    ) -> Vec<(u64, bool)> {
        // The side read already holds for every candidate; without a filter of the other
        // kind the endpoint matches, else the rest of the rule decides.
        let decide = |(key, filed): (u64, Filed)| {
            let matches = !filed.other_filter
                || self.entries.get(&key).is_some_and(|entry| {
                    rule(
                        entry.event_types.as_deref(),
                        entry.channels.as_deref(),
                        event_type,
                        channels,
                    )
                });
            matches.then_some((key, filed.disabled))
        };
        // Room for every candidate up to a bound: most match, and a message to thousands
        // of endpoints grows its list rather than reserving for candidates that fail.
        let mut matched = Vec::with_capacity(count.min(MATCHED_RESERVED_MAX));
        if sources > 1 {
            // Several files are merged into key order, one answer per endpoint (an
            // endpoint on two of the message's channels is in both files).
            let mut merged: Vec<(u64, Filed)> = candidates.collect();
            merged.sort_unstable_by_key(|(key, _)| *key);
            merged.dedup_by_key(|(key, _)| *key);
            matched.extend(merged.into_iter().filter_map(decide));
        } else {
            matched.extend(candidates.filter_map(decide));
        }
        matched
    }

    /// Takes endpoint `key` out, with its filing.
    fn take(&mut self, key: u64) -> Option<Entry> {
        let old = self.entries.remove(&key)?;
        if !old.polling_only {
            unfile(
                &mut self.any_type,
                &mut self.by_type,
                old.event_types.as_deref(),
                key,
            );
            unfile(
                &mut self.any_channel,
                &mut self.by_channel,
                old.channels.as_deref(),
                key,
            );
        }
        Some(old)
    }

    /// Puts `record` in (its key not present), filing it unless it is polling-only.
    fn put(&mut self, record: &EndpointRecord) {
        let entry = Entry {
            disabled: record.disabled,
            polling_only: record.polling_only,
            event_types: record
                .event_types
                .as_deref()
                .map(|n| shared(&self.by_type, n)),
            channels: record
                .channels
                .as_deref()
                .map(|n| shared(&self.by_channel, n)),
        };
        if !entry.polling_only {
            let (types, channels) = (entry.event_types.as_deref(), entry.channels.as_deref());
            let by_type = Filed {
                disabled: entry.disabled,
                other_filter: channels.is_some(),
            };
            file(
                &mut self.any_type,
                &mut self.by_type,
                types,
                record.key,
                by_type,
            );
            let by_channel = Filed {
                disabled: entry.disabled,
                other_filter: types.is_some(),
            };
            file(
                &mut self.any_channel,
                &mut self.by_channel,
                channels,
                record.key,
                by_channel,
            );
        }
        self.entries.insert(record.key, entry);
    }
}

/// `names` as shared names, reusing a file's name where there is one.
fn shared(files: &HashMap<Arc<str>, File>, names: &[String]) -> Box<[Arc<str>]> {
    names
        .iter()
        .map(|name| {
            files.get_key_value(name.as_str()).map_or_else(
                || Arc::from(name.as_str()),
                |(shared, _)| Arc::clone(shared),
            )
        })
        .collect()
}

/// Files `key` under each of `names`, or under `any` without a filter.
fn file(
    any: &mut File,
    files: &mut HashMap<Arc<str>, File>,
    names: Option<&[Arc<str>]>,
    key: u64,
    filed: Filed,
) {
    match names {
        None => {
            any.insert(key, filed);
        }
        Some(names) => {
            for name in names {
                files
                    .entry(Arc::clone(name))
                    .or_default()
                    .insert(key, filed);
            }
        }
    }
}

/// Undoes `file`; a name's file goes with its last endpoint.
fn unfile(
    any: &mut File,
    files: &mut HashMap<Arc<str>, File>,
    names: Option<&[Arc<str>]>,
    key: u64,
) {
    match names {
        None => {
            any.remove(&key);
        }
        Some(names) => {
            for name in names {
                if let Some(set) = files.get_mut(name) {
                    set.remove(&key);
                    if set.is_empty() {
                        files.remove(name);
                    }
                }
            }
        }
    }
}

/// Svix's matching rule, as a pure function.
pub fn matches(filter: &EndpointFilter, event_type: &str, channels: Option<&[String]>) -> bool {
    rule(
        filter.event_types.as_deref(),
        filter.channels.as_deref(),
        event_type,
        channels,
    )
}

/// Svix's matching rule over an endpoint's filters, whatever holds their names.
fn rule<T: AsRef<str>, C: AsRef<str>>(
    event_types: Option<&[T]>,
    wanted_channels: Option<&[C]>,
    event_type: &str,
    channels: Option<&[String]>,
) -> bool {
    let type_ok = event_types.is_none_or(|types| types.iter().any(|t| t.as_ref() == event_type));
    let channel_ok = match (wanted_channels, channels) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(wanted), Some(have)) => wanted.iter().any(|w| have.iter().any(|h| h == w.as_ref())),
    };
    type_ok && channel_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(types: Option<&[&str]>, channels: Option<&[&str]>) -> EndpointFilter {
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        EndpointFilter {
            endpoint_key: 1,
            disabled: false,
            event_types: types.map(owned),
            channels: channels.map(owned),
            polling_only: false,
        }
    }

    #[test]
    fn svix_matching_table() {
        let ch = |v: &[&str]| -> Vec<String> { v.iter().map(|s| (*s).to_owned()).collect() };
        let cases: [(EndpointFilter, &str, Option<Vec<String>>, bool); 8] = [
            (filter(None, None), "a", None, true),
            (filter(None, None), "a", Some(ch(&["x"])), true),
            (filter(Some(&["a", "b"]), None), "b", None, true),
            (filter(Some(&["a"]), None), "c", None, false),
            (filter(None, Some(&["x"])), "a", None, false),
            (filter(None, Some(&["x", "y"])), "a", Some(ch(&["y"])), true),
            (filter(None, Some(&["x"])), "a", Some(ch(&["z"])), false),
            (
                filter(Some(&["a"]), Some(&["x"])),
                "b",
                Some(ch(&["x"])),
                false,
            ),
        ];
        for (i, (f, event_type, channels, want)) in cases.iter().enumerate() {
            assert_eq!(
                matches(f, event_type, channels.as_deref()),
                *want,
                "case {i}"
            );
        }
    }

    /// A small seeded generator (splitmix64): the same mix on every run.
    struct Draw(u64);

    impl Draw {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// No filter, an empty one (matches nothing), or one to three names (repeats
        /// possible) of `pool`.
        fn names(&mut self, pool: &[&str]) -> Option<Vec<String>> {
            match self.below(10) {
                0..=3 => None,
                4 => Some(Vec::new()),
                _ => {
                    let n = 1 + self.below(3);
                    Some(
                        (0..n)
                            .map(|_| pool[self.below(pool.len() as u64) as usize].to_owned())
                            .collect(),
                    )
                }
            }
        }
    }

    const TYPES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
    const CHANNELS: [&str; 5] = ["x", "y", "z", "w", "v"];

    /// What the index must answer: every endpoint of the application, in key order,
    /// through the matching rule, polling-only ones left out.
    fn linear(
        records: &BTreeMap<u64, EndpointRecord>,
        app_key: u64,
        event_type: &str,
        channels: Option<&[String]>,
    ) -> Vec<(u64, bool)> {
        records
            .values()
            .filter(|r| r.app_key == app_key && !r.polling_only)
            .filter(|r| {
                let filter = EndpointFilter {
                    endpoint_key: r.key,
                    disabled: r.disabled,
                    event_types: r.event_types.clone(),
                    channels: r.channels.clone(),
                    polling_only: r.polling_only,
                };
                matches(&filter, event_type, channels)
            })
            .map(|r| (r.key, r.disabled))
            .collect()
    }

    /// Every message shape worth asking about: each type (and one no endpoint names),
    /// with no channels, none, one, two (with a repeat) and one no endpoint names.
    fn messages() -> Vec<(String, Option<Vec<String>>)> {
        let owned = |v: &[&str]| Some(v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        let channel_sets = [
            None,
            owned(&[]),
            owned(&["x"]),
            owned(&["y", "z"]),
            owned(&["x", "x", "w"]),
            owned(&["nowhere"]),
        ];
        TYPES
            .iter()
            .chain(["unnamed"].iter())
            .flat_map(|t| channel_sets.iter().map(|c| ((*t).to_owned(), c.clone())))
            .collect()
    }

    fn check(index: &EndpointIndex, records: &BTreeMap<u64, EndpointRecord>, step: usize) {
        for app_key in 0..6u64 {
            let keys: Vec<u64> = records
                .values()
                .filter(|r| r.app_key == app_key)
                .map(|r| r.key)
                .collect();
            assert_eq!(index.keys_of(app_key), keys, "step {step}, app {app_key}");
            assert_eq!(index.count_for_app(app_key), keys.len(), "step {step}");
            for (event_type, channels) in messages() {
                assert_eq!(
                    index.matching(app_key, &event_type, channels.as_deref()),
                    linear(records, app_key, &event_type, channels.as_deref()),
                    "step {step}, app {app_key}, {event_type} on {channels:?}"
                );
            }
        }
        let disabled = records.values().filter(|r| r.disabled).count() as u64;
        assert_eq!(
            index.counts(),
            (records.len() as u64 - disabled, disabled),
            "step {step}"
        );
        for r in records.values() {
            assert_eq!(index.is_failing(r.key), r.failing_since_ms.is_some());
        }
    }

    #[test]
    fn the_index_answers_as_a_look_at_every_endpoint() {
        for seed in [1u64, 2, 3, 0x5EED] {
            let mut draw = Draw(seed);
            let mut index = EndpointIndex::default();
            let mut records: BTreeMap<u64, EndpointRecord> = BTreeMap::new();
            let mut next_key = 1u64;
            for step in 0..1_500 {
                let existing: Vec<u64> = records.keys().copied().collect();
                let pick = |draw: &mut Draw| existing[draw.below(existing.len() as u64) as usize];
                match draw.below(20) {
                    // Updates: new filters, disabled, polling-only, a failure history.
                    0..=5 if !existing.is_empty() => {
                        let key = pick(&mut draw);
                        let mut next = records[&key].clone();
                        match draw.below(4) {
                            0 => next.event_types = draw.names(&TYPES),
                            1 => next.channels = draw.names(&CHANNELS),
                            2 => next.disabled = !next.disabled,
                            _ => {
                                next.polling_only = draw.below(4) == 0;
                                next.failing_since_ms = (draw.below(2) == 0).then_some(5);
                            }
                        }
                        index.upsert(&next);
                        records.insert(key, next);
                    }
                    // An update that changes nothing the index keeps (as a restart's
                    // load, or an attempt's record, does).
                    6 if !existing.is_empty() => {
                        let key = pick(&mut draw);
                        index.upsert(&records[&key]);
                    }
                    7..=8 if !existing.is_empty() => {
                        let key = pick(&mut draw);
                        let gone = records.remove(&key).expect("present");
                        index.remove(gone.app_key, key);
                    }
                    9 if draw.below(10) == 0 => {
                        let app_key = draw.below(6);
                        records.retain(|_, r| r.app_key != app_key);
                        index.remove_app(app_key);
                    }
                    _ => {
                        let key = next_key;
                        next_key += 1;
                        let mut created = record(key, draw.below(6), draw.below(8) == 0);
                        created.event_types = draw.names(&TYPES);
                        created.channels = draw.names(&CHANNELS);
                        created.polling_only = draw.below(10) == 0;
                        index.upsert(&created);
                        records.insert(key, created);
                    }
                }
                if step % 25 == 0 {
                    check(&index, &records, step);
                }
            }
            check(&index, &records, usize::MAX);
            // Rebuilt from the records (a restart's load), it answers the same.
            let mut reloaded = EndpointIndex::default();
            for r in records.values() {
                reloaded.upsert(r);
            }
            check(&reloaded, &records, usize::MAX);
        }
    }

    fn record(key: u64, app_key: u64, disabled: bool) -> EndpointRecord {
        EndpointRecord {
            key,
            app_key,
            id: format!("ep_{key}"),
            uid: None,
            url: "https://example.com".to_owned(),
            description: String::new(),
            version: 1,
            disabled,
            throttle_rate: None,
            event_types: None,
            channels: None,
            secret: vec![0; 24],
            old_secrets: Vec::new(),
            headers: BTreeMap::new(),
            metadata: BTreeMap::new(),
            created_ms: 0,
            updated_ms: 0,
            fifo: false,
            failing_since_ms: None,
            disabled_reason: None,
            disabled_at_ms: None,
            signing: crate::log::schema::Signing::Hmac,
            sealed: false,
            polling_only: false,
        }
    }

    #[test]
    fn counts_follow_every_change() {
        let mut index = EndpointIndex::default();
        index.upsert(&record(1, 10, false));
        index.upsert(&record(2, 10, false));
        index.upsert(&record(3, 20, true));
        assert_eq!(index.counts(), (2, 1));
        index.upsert(&record(2, 10, true));
        assert_eq!(index.counts(), (1, 2));
        index.remove(10, 1);
        assert_eq!(index.counts(), (0, 2));
        index.remove_app(20);
        assert_eq!(index.counts(), (0, 1));

        // The failure history follows every change too.
        let failing = |key: u64, app_key: u64, since: Option<u64>| EndpointRecord {
            failing_since_ms: since,
            ..record(key, app_key, false)
        };
        index.upsert(&failing(4, 30, Some(5)));
        index.upsert(&failing(5, 30, Some(5)));
        index.upsert(&failing(6, 40, Some(5)));
        assert!(index.is_failing(4) && index.is_failing(5) && index.is_failing(6));
        index.upsert(&failing(4, 30, None));
        assert!(!index.is_failing(4), "a success cleared it");
        index.remove(30, 5);
        assert!(!index.is_failing(5), "deleted");
        index.remove_app(40);
        assert!(!index.is_failing(6), "its application deleted");
    }
}
