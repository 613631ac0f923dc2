//! The endpoint index: which endpoints a new message fans out to.
//!
//! Owned by the writer thread (`WriterState`), built from the `endpoints` table at start and
//! updated by the operations that change endpoints, inside the same batch. Matching follows
//! Svix: an endpoint matches when its event-type filter is absent or names the message's
//! type, and its channel filter is absent or shares a channel with the message.

use std::collections::HashMap;

use super::schema::EndpointRecord;

/// The part of an endpoint that decides whether a message is for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointFilter {
    pub endpoint_key: u64,
    pub disabled: bool,
    pub event_types: Option<Vec<String>>,
    pub channels: Option<Vec<String>>,
}

/// Endpoint filters per application key.
#[derive(Default)]
pub struct EndpointIndex {
    by_app: HashMap<u64, Vec<EndpointFilter>>,
}

impl EndpointIndex {
    /// Adds or replaces the filter of `record`.
    pub fn upsert(&mut self, record: &EndpointRecord) {
        let filter = EndpointFilter {
            endpoint_key: record.key,
            disabled: record.disabled,
            event_types: record.event_types.clone(),
            channels: record.channels.clone(),
        };
        let filters = self.by_app.entry(record.app_key).or_default();
        match filters.iter_mut().find(|f| f.endpoint_key == record.key) {
            Some(existing) => *existing = filter,
            None => filters.push(filter),
        }
    }

    pub fn remove(&mut self, app_key: u64, endpoint_key: u64) {
        if let Some(filters) = self.by_app.get_mut(&app_key) {
            filters.retain(|f| f.endpoint_key != endpoint_key);
        }
    }

    pub fn remove_app(&mut self, app_key: u64) {
        self.by_app.remove(&app_key);
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
}
