//! Routes of Svix's API that its SDKs call and Sluice does not serve: each answers 501
//! `{"code":"not_supported","detail":"<feature> is not supported by Sluice."}` rather than
//! a 404 that reads as "no such object". Checked before routing, so a method Sluice does
//! not serve on a path it does (`POST …/msg/bulk-expunge`) is named too. The route census
//! test (`tests/it/parity.rs`) walks every route of the Python SDK against this table and
//! the router.

/// (method, path pattern under the API prefix by segment, feature). In a pattern `*` is
/// one segment and a trailing `**` any number (none included). The patterns are split
/// here rather than at each request: the check runs on every request.
type Unsupported = (&'static str, &'static [&'static str], &'static str);

/// Under `/api/v1`.
const API: &[Unsupported] = &[
    (
        "*",
        &["app", "*", "autoconfig", "**"],
        "Endpoint autoconfiguration",
    ),
    (
        "*",
        &["app", "*", "destination", "**"],
        "Destinations (Svix Stream sinks)",
    ),
    (
        "*",
        &["app", "*", "endpoint", "*", "attempt-stats"],
        "Endpoint attempt statistics",
    ),
    (
        "*",
        &["app", "*", "endpoint", "*", "transformation"],
        "Transformations",
    ),
    ("*", &["app", "*", "integration", "**"], "Integrations"),
    (
        "POST",
        &["app", "*", "msg", "bulk-expunge"],
        "Bulk expunge of message content",
    ),
    (
        "POST",
        &["app", "*", "msg", "expunge-all-contents"],
        "Expunging all message contents",
    ),
    (
        "POST",
        &["app", "*", "msg", "precheck", "active"],
        "Message precheck",
    ),
    ("*", &["auth", "stream-logout"], "Svix Stream"),
    ("*", &["auth", "stream-portal-access", "*"], "Svix Stream"),
    ("*", &["auth", "stream", "**"], "Svix Stream"),
    ("*", &["connector", "**"], "Connectors"),
    ("*", &["environment", "**"], "Environment import and export"),
    (
        "*",
        &["event-type", "import", "openapi"],
        "Importing event types from OpenAPI",
    ),
    ("*", &["stats", "**"], "Usage statistics"),
    ("*", &["stream", "**"], "Svix Stream"),
];

/// Under `/ingest/api/v1`.
const INGEST: &[Unsupported] = &[
    (
        "*",
        &["source", "*", "dashboard"],
        "The ingest source dashboard",
    ),
    (
        "*",
        &["source", "*", "endpoint", "*", "transformation"],
        "Transformations",
    ),
];

/// Whether `segments` fit `pattern`, walked segment by segment (checked on every
/// request, so it allocates nothing).
fn matches(pattern: &[&str], segments: &[String]) -> bool {
    let mut segments = segments.iter();
    for &part in pattern {
        if part == "**" {
            return true;
        }
        match segments.next() {
            Some(segment) if part == "*" || part == segment => {}
            _ => return false,
        }
    }
    segments.next().is_none()
}

/// The feature a request names that Sluice does not serve, if it does.
pub(super) fn feature(ingest: bool, method: &str, segments: &[String]) -> Option<&'static str> {
    let table = if ingest { INGEST } else { API };
    table
        .iter()
        .find(|(m, pattern, _)| (*m == "*" || *m == method) && matches(pattern, segments))
        .map(|(_, _, feature)| *feature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(path: &str) -> Vec<String> {
        path.split('/').map(str::to_owned).collect()
    }

    #[test]
    fn a_pattern_fits_by_segment_with_one_and_any_wildcards() {
        let cases = [
            ("app/*/msg/bulk-expunge", "app/a1/msg/bulk-expunge", true),
            ("app/*/msg/bulk-expunge", "app/a1/msg", false),
            ("app/*/msg/bulk-expunge", "app/a1/msg/bulk-expunge/x", false),
            ("app/*/msg/bulk-expunge", "app/a1/msg/other", false),
            ("app/*/integration/**", "app/a1/integration", true),
            ("app/*/integration/**", "app/a1/integration/i1/key", true),
            ("app/*/integration/**", "app/a1", false),
            ("stats/**", "statistics", false),
        ];
        for (pattern, path, fits) in cases {
            let parts: Vec<&str> = pattern.split('/').collect();
            assert_eq!(matches(&parts, &segments(path)), fits, "{pattern} {path}");
        }
    }

    #[test]
    fn the_feature_is_named_for_its_method_only() {
        let expunge = segments("app/a1/msg/bulk-expunge");
        assert_eq!(
            feature(false, "POST", &expunge),
            Some("Bulk expunge of message content")
        );
        assert_eq!(feature(false, "GET", &expunge), None);
        assert_eq!(feature(false, "POST", &segments("app/a1/msg")), None);
        assert_eq!(
            feature(true, "GET", &segments("source/s1/dashboard")),
            Some("The ingest source dashboard")
        );
    }
}
