//! Query strings: decoding, typed getters with 422 errors at `["query", name]`, and the
//! list-page shape `{data, iterator, prevIterator, done}` shared by every list.

use serde::Serialize;

use super::{ApiError, FieldError};
use crate::clock::parse_rfc3339;
use crate::limits::{PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX};

/// Decoded `name=value` pairs, in order.
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: &str) -> Result<Query, ApiError> {
        let mut pairs = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let decode = |s: &str| {
                // Copied only when a `+` stands for a space.
                let plus_as_space = if s.contains('+') {
                    std::borrow::Cow::Owned(s.replace('+', " "))
                } else {
                    std::borrow::Cow::Borrowed(s)
                };
                percent_encoding::percent_decode_str(&plus_as_space)
                    .decode_utf8()
                    .map(|c| c.into_owned())
            };
            match (decode(name), decode(value)) {
                (Ok(name), Ok(value)) => pairs.push((name, value)),
                _ => {
                    return Err(ApiError::bad_request(
                        "generic_error",
                        "The query string is not valid UTF-8.",
                    ));
                }
            }
        }
        Ok(Query { pairs })
    }

    /// The last value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of an array parameter, in any of the forms the SDKs send:
    /// `a=x,y`, `a=x&a=y`, `a[]=x`, `a[0]=x`.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(n, _)| {
                n == name
                    || n.strip_prefix(name)
                        .and_then(|r| r.strip_prefix('['))
                        .and_then(|r| r.strip_suffix(']'))
                        .is_some_and(|inner| inner.bytes().all(|b| b.is_ascii_digit()))
            })
            .flat_map(|(_, v)| v.split(','))
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    }

    pub fn bool(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some("true" | "True" | "1") => Ok(true),
            Some("false" | "False" | "0") => Ok(false),
            Some(_) => Err(invalid(name, "must be true or false")),
        }
    }

    /// `limit`: 1–250, default 50.
    pub fn limit(&self) -> Result<usize, ApiError> {
        let Some(raw) = self.get("limit") else {
            return Ok(PAGE_LIMIT_DEFAULT);
        };
        match raw.parse::<u64>() {
            Ok(0) => Err(invalid("limit", "must be at least 1")),
            Ok(n) if n > PAGE_LIMIT_MAX as u64 => Err(invalid(
                "limit",
                format!("Given limit must not exceed {PAGE_LIMIT_MAX}"),
            )),
            Ok(n) => Ok(usize::try_from(n).unwrap_or(PAGE_LIMIT_MAX)),
            Err(_) => Err(invalid("limit", "must be a positive integer")),
        }
    }

    /// An RFC 3339 time parameter, in ms.
    pub fn time(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|raw| {
                parse_rfc3339(raw).ok_or_else(|| invalid(name, "must be an RFC 3339 date-time"))
            })
            .transpose()
    }

    /// The page cursor: `Some((id, backwards))`, where a leading `-` means "toward newer".
    pub fn iterator(&self) -> Option<(&str, bool)> {
        let raw = self.get("iterator").filter(|s| !s.is_empty())?;
        Some(match raw.strip_prefix('-') {
            Some(rest) => (rest, true),
            None => (raw, false),
        })
    }

    /// Sort order for lists that accept `order`; `default_descending` when absent.
    pub fn descending(&self, default_descending: bool) -> Result<bool, ApiError> {
        match self.get("order") {
            None => Ok(default_descending),
            Some("ascending") => Ok(false),
            Some("descending") => Ok(true),
            Some(_) => Err(invalid("order", "must be ascending or descending")),
        }
    }
}

pub(super) fn invalid(name: &str, msg: impl Into<String>) -> ApiError {
    ApiError::Validation(vec![FieldError::value(&["query", name], msg)])
}

/// One page of a list.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Page<T> {
    pub data: Vec<T>,
    pub iterator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_iterator: Option<String>,
    pub done: bool,
}

impl<T> Page<T> {
    /// Builds a page from items in response order. `more` says whether anything lies
    /// beyond the page in the direction of travel.
    pub(super) fn new(items: Vec<T>, more: bool, cursor_of: impl Fn(&T) -> String) -> Page<T> {
        let iterator = items.last().map(&cursor_of);
        let prev_iterator = items.first().map(|first| format!("-{}", cursor_of(first)));
        Page {
            data: items,
            iterator,
            prev_iterator,
            done: !more,
        }
    }
}

/// Collects up to `limit` items while scanning; one more than `limit` means "more".
pub(super) struct Collector<T> {
    pub items: Vec<T>,
    limit: usize,
}

impl<T> Collector<T> {
    pub(super) fn new(limit: usize) -> Collector<T> {
        Collector {
            items: Vec::with_capacity(limit + 1),
            limit,
        }
    }

    /// Adds an item; returns `true` once the page is full and one extra item was seen.
    pub(super) fn push(&mut self, item: T) -> bool {
        self.items.push(item);
        self.items.len() > self.limit
    }

    /// Finishes the page: `capped` is whether the scan stopped at its row cap.
    /// `backwards` pages were collected toward the newer end and are put back in order.
    pub(super) fn into_page(
        mut self,
        capped: bool,
        backwards: bool,
        cursor_of: impl Fn(&T) -> String,
    ) -> Page<T> {
        let more = capped || self.items.len() > self.limit;
        self.items.truncate(self.limit);
        if backwards {
            self.items.reverse();
        }
        Page::new(self.items, more, cursor_of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_parameters_in_every_sdk_form() {
        let q = Query::parse(
            "event_types=a,b&event_types=c&event_types%5B%5D=d&event_types[1]=e&other=x",
        )
        .expect("parses");
        assert_eq!(q.list("event_types"), ["a", "b", "c", "d", "e"]);
        assert!(q.list("missing").is_empty());
    }

    #[test]
    fn limits_and_times() {
        assert_eq!(Query::parse("").expect("parses").limit().expect("ok"), 50);
        assert_eq!(
            Query::parse("limit=250")
                .expect("parses")
                .limit()
                .expect("ok"),
            250
        );
        assert!(Query::parse("limit=251").expect("parses").limit().is_err());
        assert!(Query::parse("limit=-1").expect("parses").limit().is_err());
        let q = Query::parse("before=2021-02-25T15%3A02%3A10%2B00%3A00").expect("parses");
        assert_eq!(q.time("before").expect("ok"), Some(1_614_265_330_000));
        assert!(
            Query::parse("after=yesterday")
                .expect("parses")
                .time("after")
                .is_err()
        );
    }

    #[test]
    fn iterators_and_pages() {
        let q = Query::parse("iterator=-msg_1").expect("parses");
        assert_eq!(q.iterator(), Some(("msg_1", true)));
        let mut c = Collector::new(2);
        assert!(!c.push(1) && !c.push(2) && c.push(3));
        let page = c.into_page(false, false, i32::to_string);
        assert_eq!(
            (page.data.len(), page.done, page.iterator.as_deref()),
            (2, false, Some("2"))
        );
        assert_eq!(page.prev_iterator.as_deref(), Some("-1"));
        let mut c = Collector::new(5);
        c.push(3);
        c.push(2);
        let page = c.into_page(false, true, i32::to_string);
        assert_eq!((page.data, page.done), (vec![2, 3], true));
    }
}
