//! Field rules shared by the resource handlers: uids, names, free text, metadata, and
//! PATCH's three states (absent, `null`, value).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use super::{ApiError, FieldError};
use crate::ids::{self, IdKind};
use crate::limits::{METADATA_BYTES_MAX, NAME_LEN_MAX, TEXT_LEN_MAX};

/// A PATCH field: absent (leave as is), `null` (clear) or a value (set).
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) enum Patch<T> {
    #[default]
    Absent,
    Null,
    Value(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            None => Patch::Null,
            Some(v) => Patch::Value(v),
        })
    }
}

impl<T> Patch<T> {
    /// The log's form of this change.
    pub(super) fn into_change(self) -> crate::log::ops::Change<T> {
        match self {
            Patch::Absent => crate::log::ops::Change::Keep,
            Patch::Null => crate::log::ops::Change::Clear,
            Patch::Value(v) => crate::log::ops::Change::Set(v),
        }
    }

    pub(super) fn as_value(&self) -> Option<&T> {
        match self {
            Patch::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// Collects field problems so a request hears about all of them at once.
#[derive(Default)]
pub(super) struct Problems(Vec<FieldError>);

impl Problems {
    pub(super) fn add(&mut self, loc: &[&str], msg: impl Into<String>) {
        self.0.push(FieldError::value(loc, msg));
    }

    pub(super) fn uid(&mut self, kind: IdKind, field: &str, uid: Option<&str>) {
        if let Some(uid) = uid
            && let Err(problem) = ids::check_uid(Some(kind), uid)
        {
            self.add(&["body", field], problem.message());
        }
    }

    pub(super) fn name(&mut self, loc: &[&str], name: &str) {
        if let Err(problem) = ids::check_name(name, NAME_LEN_MAX) {
            self.add(loc, problem.message());
        }
    }

    pub(super) fn text(&mut self, field: &str, text: &str, required: bool) {
        if required && text.is_empty() {
            self.add(&["body", field], "must not be empty");
        }
        if text.len() > TEXT_LEN_MAX {
            self.add(
                &["body", field],
                format!("must be at most {TEXT_LEN_MAX} bytes"),
            );
        }
        if text.bytes().any(|b| b < 0x09) {
            self.add(&["body", field], "must not contain control characters");
        }
    }

    pub(super) fn metadata(&mut self, metadata: Option<&BTreeMap<String, String>>) {
        let size = metadata.map_or(0, |m| serde_json::to_vec(m).map_or(usize::MAX, |v| v.len()));
        if size > METADATA_BYTES_MAX {
            self.add(
                &["body", "metadata"],
                format!("must serialise to at most {METADATA_BYTES_MAX} bytes"),
            );
        }
    }

    pub(super) fn throttle_rate(&mut self, rate: Option<u16>) {
        if rate == Some(0) {
            self.add(&["body", "throttleRate"], "must be at least 1");
        }
    }

    pub(super) fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}
