//! Routes of Svix's API that its SDKs call and Sluice does not serve: each answers 501
//! `{"code":"not_supported","detail":"<feature> is not supported by Sluice."}` rather than
//! a 404 that reads as "no such object". Checked before routing, so a method Sluice does
//! not serve on a path it does (`POST …/msg/bulk-expunge`) is named too. The route census
//! test (`tests/it/parity.rs`) walks every route of the Python SDK against this table and
//! the router.

/// (method, path pattern under the API prefix, feature). In a pattern `*` is one segment
/// and a trailing `**` any number (none included).
type Unsupported = (&'static str, &'static str, &'static str);

/// Under `/api/v1`.
const API: &[Unsupported] = &[
    ("*", "app/*/autoconfig/**", "Endpoint autoconfiguration"),
    (
        "*",
        "app/*/destination/**",
        "Destinations (Svix Stream sinks)",
    ),
    (
        "*",
        "app/*/endpoint/*/attempt-stats",
        "Endpoint attempt statistics",
    ),
    ("*", "app/*/endpoint/*/transformation", "Transformations"),
    ("*", "app/*/integration/**", "Integrations"),
    (
        "POST",
        "app/*/msg/bulk-expunge",
        "Bulk expunge of message content",
    ),
    (
        "POST",
        "app/*/msg/expunge-all-contents",
        "Expunging all message contents",
    ),
    ("POST", "app/*/msg/precheck/active", "Message precheck"),
    ("*", "auth/stream-logout", "Svix Stream"),
    ("*", "auth/stream-portal-access/*", "Svix Stream"),
    ("*", "auth/stream/**", "Svix Stream"),
    ("*", "connector/**", "Connectors"),
    ("*", "environment/**", "Environment import and export"),
    (
        "*",
        "event-type/import/openapi",
        "Importing event types from OpenAPI",
    ),
    ("*", "stats/**", "Usage statistics"),
    ("*", "stream/**", "Svix Stream"),
];

/// Under `/ingest/api/v1`.
const INGEST: &[Unsupported] = &[
    ("*", "source/*/dashboard", "The ingest source dashboard"),
    ("*", "source/*/endpoint/*/transformation", "Transformations"),
];

fn matches(pattern: &str, segments: &[String]) -> bool {
    let parts: Vec<&str> = pattern.split('/').collect();
    if parts.last() == Some(&"**") {
        let fixed = &parts[..parts.len() - 1];
        return segments.len() >= fixed.len()
            && fixed.iter().zip(segments).all(|(p, s)| *p == "*" || p == s);
    }
    parts.len() == segments.len() && parts.iter().zip(segments).all(|(p, s)| *p == "*" || p == s)
}

/// The feature a request names that Sluice does not serve, if it does.
pub(super) fn feature(ingest: bool, method: &str, segments: &[String]) -> Option<&'static str> {
    let table = if ingest { INGEST } else { API };
    table
        .iter()
        .find(|(m, pattern, _)| (*m == "*" || *m == method) && matches(pattern, segments))
        .map(|(_, _, feature)| *feature)
}
