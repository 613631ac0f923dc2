//! The endpoint index: which endpoints a new message fans out to.
//!
//! Owned by the writer thread (`WriterState`), built from the `endpoints` table at start and
//! updated by the operations that change endpoints, inside the same batch. Matching follows
//! Svix: an endpoint matches when its event-type filter is absent or names the message's
//! type, and its channel filter is absent or shares a channel with the message.

use std::collections::{HashMap, HashSet};

use super::schema::EndpointRecord;

/// The part of an endpoint that decides whether a message is for it.
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
    by_app: HashMap<u64, Vec<EndpointFilter>>,
    /// How many filters are disabled, kept in step by every change (for metrics).
    disabled: u64,
    total: u64,
    /// Endpoints with a failure history (`failing_since_ms`), so that recording a success
    /// elsewhere needs no read of the endpoint.
    failing: HashSet<u64>,
}

impl EndpointIndex {
    /// Adds or replaces the filter of `record`.
    pub fn upsert(&mut self, record: &EndpointRecord) {
        let filter = EndpointFilter {
            endpoint_key: record.key,
            disabled: record.disabled,
            event_types: record.event_types.clone(),
            channels: record.channels.clone(),
            polling_only: record.polling_only,
        };
        self.disabled += u64::from(filter.disabled);
        self.total += 1;
        if record.failing_since_ms.is_some() {
            self.failing.insert(record.key);
        } else {
            self.failing.remove(&record.key);
        }
        let filters = self.by_app.entry(record.app_key).or_default();
        match filters.iter_mut().find(|f| f.endpoint_key == record.key) {
            Some(existing) => {
                self.disabled -= u64::from(existing.disabled);
                self.total -= 1;
                *existing = filter;
            }
            None => filters.push(filter),
        }
    }

    pub fn remove(&mut self, app_key: u64, endpoint_key: u64) {
        self.failing.remove(&endpoint_key);
        if let Some(filters) = self.by_app.get_mut(&app_key) {
            for gone in filters.iter().filter(|f| f.endpoint_key == endpoint_key) {
                self.disabled -= u64::from(gone.disabled);
                self.total -= 1;
            }
            filters.retain(|f| f.endpoint_key != endpoint_key);
        }
    }

    pub fn remove_app(&mut self, app_key: u64) {
        for gone in self.by_app.remove(&app_key).into_iter().flatten() {
            self.failing.remove(&gone.endpoint_key);
            self.disabled -= u64::from(gone.disabled);
            self.total -= 1;
        }
    }

    /// Whether the endpoint has a failure history (`failing_since_ms` is set).
    pub fn is_failing(&self, endpoint_key: u64) -> bool {
        self.failing.contains(&endpoint_key)
    }

    /// The keys of `app_key`'s endpoints.
    pub fn keys_of(&self, app_key: u64) -> Vec<u64> {
        self.by_app.get(&app_key).map_or_else(Vec::new, |filters| {
            filters.iter().map(|f| f.endpoint_key).collect()
        })
    }

    /// How many endpoints `app_key` has.
    pub fn count_for_app(&self, app_key: u64) -> usize {
        self.by_app.get(&app_key).map_or(0, Vec::len)
    }

    /// (enabled, disabled) endpoint counts.
    pub fn counts(&self) -> (u64, u64) {
        (self.total - self.disabled, self.disabled)
    }

    /// The endpoints of `app_key` that a message of `event_type` on `channels` is for.
    pub fn matching<'a>(
        &'a self,
        app_key: u64,
        event_type: &'a str,
        channels: Option<&'a [String]>,
    ) -> impl Iterator<Item = &'a EndpointFilter> + 'a {
        self.by_app
            .get(&app_key)
            .into_iter()
            .flatten()
            .filter(move |f| matches(f, event_type, channels))
    }
}

/// Svix's matching rule, as a pure function.
pub fn matches(filter: &EndpointFilter, event_type: &str, channels: Option<&[String]>) -> bool {
    let type_ok = filter
        .event_types
        .as_ref()
        .is_none_or(|types| types.iter().any(|t| t == event_type));
    let channel_ok = match (&filter.channels, channels) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(wanted), Some(have)) => wanted.iter().any(|w| have.contains(w)),
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

    #[test]
    fn counts_follow_every_change() {
        let record = |key: u64, app_key: u64, disabled: bool| EndpointRecord {
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
            headers: std::collections::BTreeMap::new(),
            metadata: std::collections::BTreeMap::new(),
            created_ms: 0,
            updated_ms: 0,
            fifo: false,
            failing_since_ms: None,
            disabled_reason: None,
            disabled_at_ms: None,
            signing: crate::log::schema::Signing::Hmac,
            sealed: false,
            polling_only: false,
        };
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
