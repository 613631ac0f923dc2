//! `GET /api/v1/openapi.json`: an OpenAPI 3.1 document of the routes Sluice serves (no
//! authentication, like `/health`). `SERVED` is the list; a unit test parses every entry
//! with the router and compares the methods, and the route census test calls them.

use serde_json::{Map, Value, json};

/// (path template, methods, what it is). Templates use Svix's parameter names.
pub(super) const SERVED: &[(&str, &[&str], &str)] = &[
    ("/api/v1/health", &["get", "head"], "Health"),
    ("/api/v1/health/ping", &["get", "head"], "Liveness ping"),
    ("/api/v1/openapi.json", &["get"], "This document"),
    ("/api/v1/app", &["get", "post"], "Applications"),
    (
        "/api/v1/app/{app_id}",
        &["get", "put", "patch", "delete"],
        "An application",
    ),
    (
        "/api/v1/app/{app_id}/endpoint",
        &["get", "post"],
        "Endpoints",
    ),
    (
        "/api/v1/app/{app_id}/endpoint/{endpoint_id}",
        &["get", "put", "patch", "delete"],
        "An endpoint",
    ),
    (
        "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret",
        &["get"],
        "Endpoint secret",
    ),
    (
        "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret/rotate",
        &["post"],
        "Rotate the endpoint secret",
    ),
    (
        "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers",
        &["get", "put", "patch"],
        "Endpoint headers",
    ),
    (
        "/api/v1/app/{app_id}/endpoint/{endpoint_id}/msg",
        &["get"],
        "Attempted messages",
    ),
    (
        "/api/v1/app/{app_id}/endpoint/{endpoint_id}/stats",
        &["get"],
        "Endpoint stats",
    ),
    (
        "/api/v1/app/{app_id}/endpoint/{endpoint_id}/send-example",
        &["post"],
        "Send an example",
    ),
    (
        "/api/v1/app/{app_id}/endpoint/{endpoint_id}/recover",
        &["post"],
        "Recover",
    ),
    (
        "/api/v1/app/{app_id}/endpoint/{endpoint_id}/replay-missing",
        &["post"],
        "Replay missing messages",
    ),
    (
        "/api/v1/app/{app_id}/endpoint/{endpoint_id}/bulk-replay",
        &["post"],
        "Bulk replay",
    ),
    ("/api/v1/event-type", &["get", "post"], "Event types"),
    (
        "/api/v1/event-type/{event_type_name}",
        &["get", "put", "patch", "delete"],
        "An event type",
    ),
    ("/api/v1/app/{app_id}/msg", &["get", "post"], "Messages"),
    ("/api/v1/app/{app_id}/msg/{msg_id}", &["get"], "A message"),
    (
        "/api/v1/app/{app_id}/msg/{msg_id}/content",
        &["delete"],
        "Expunge a payload",
    ),
    (
        "/api/v1/app/{app_id}/msg/{msg_id}/endpoint",
        &["get"],
        "Attempted destinations",
    ),
    (
        "/api/v1/app/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend",
        &["post"],
        "Resend",
    ),
    (
        "/api/v1/app/{app_id}/attempt/msg/{msg_id}",
        &["get"],
        "Attempts of a message",
    ),
    (
        "/api/v1/app/{app_id}/attempt/endpoint/{endpoint_id}",
        &["get"],
        "Attempts at an endpoint",
    ),
    (
        "/api/v1/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}",
        &["get"],
        "An attempt",
    ),
    (
        "/api/v1/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}/content",
        &["delete"],
        "Expunge an attempt's response",
    ),
    ("/api/v1/background-task", &["get"], "Background tasks"),
    (
        "/api/v1/background-task/{task_id}",
        &["get"],
        "A background task",
    ),
    (
        "/api/v1/app/{app_id}/poller/{sink_id}",
        &["get"],
        "Poll an endpoint",
    ),
    (
        "/api/v1/app/{app_id}/poller/{sink_id}/consumer/{consumer_id}",
        &["get"],
        "Poll as a consumer",
    ),
    (
        "/api/v1/app/{app_id}/poller/{sink_id}/consumer/{consumer_id}/seek",
        &["post"],
        "Seek a consumer",
    ),
    (
        "/api/v1/auth/app/{app_id}/poller/{sink_id}/token",
        &["get"],
        "Poller token",
    ),
    (
        "/api/v1/auth/app/{app_id}/poller/{sink_id}/token/rotate",
        &["post"],
        "Rotate the poller token",
    ),
    (
        "/api/v1/auth/app-portal-access/{app_id}",
        &["post"],
        "A tenant-portal access link and app-scoped token",
    ),
    (
        "/api/v1/auth/app/{app_id}/expire-all",
        &["post"],
        "End an application's portal links, sessions and tokens",
    ),
    (
        "/api/v1/auth/logout",
        &["post"],
        "End the calling portal token",
    ),
    (
        "/api/v1/auth/token",
        &["get", "post"],
        "API tokens (Sluice)",
    ),
    (
        "/api/v1/auth/token/{token_id}",
        &["delete"],
        "Revoke a token (Sluice)",
    ),
    (
        "/api/v1/operational-webhook/endpoint",
        &["get", "post"],
        "Operational webhook endpoints",
    ),
    (
        "/api/v1/operational-webhook/endpoint/{endpoint_id}",
        &["get", "put", "delete"],
        "An operational webhook endpoint",
    ),
    (
        "/api/v1/operational-webhook/endpoint/{endpoint_id}/secret",
        &["get"],
        "Its secret",
    ),
    (
        "/api/v1/operational-webhook/endpoint/{endpoint_id}/secret/rotate",
        &["post"],
        "Rotate its secret",
    ),
    (
        "/api/v1/operational-webhook/endpoint/{endpoint_id}/headers",
        &["get", "put"],
        "Its headers",
    ),
    ("/ingest/api/v1/source", &["get", "post"], "Ingest sources"),
    (
        "/ingest/api/v1/source/{source_id}",
        &["get", "put", "delete"],
        "An ingest source",
    ),
    (
        "/ingest/api/v1/source/{source_id}/token/rotate",
        &["post"],
        "Rotate the source's URL token",
    ),
    (
        "/ingest/api/v1/source/{source_id}/log",
        &["get"],
        "The source's error log",
    ),
    (
        "/ingest/api/v1/source/{source_id}/endpoint",
        &["get", "post"],
        "Source destinations",
    ),
    (
        "/ingest/api/v1/source/{source_id}/endpoint/{endpoint_id}",
        &["get", "put", "delete"],
        "A source destination",
    ),
    (
        "/ingest/api/v1/source/{source_id}/endpoint/{endpoint_id}/secret",
        &["get"],
        "Its secret",
    ),
    (
        "/ingest/api/v1/source/{source_id}/endpoint/{endpoint_id}/secret/rotate",
        &["post"],
        "Rotate its secret",
    ),
    (
        "/ingest/api/v1/source/{source_id}/endpoint/{endpoint_id}/headers",
        &["get", "put", "patch"],
        "Its headers",
    ),
];

/// The document.
pub(super) fn document() -> Value {
    let mut paths = Map::new();
    for (template, methods, summary) in SERVED {
        let parameters: Vec<Value> = template
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut item = Map::new();
        for method in *methods {
            item.insert(
                (*method).to_owned(),
                json!({
                    "summary": summary,
                    "parameters": parameters,
                    "responses": {"default": {"description": "JSON; errors are {code, detail} or {detail: [..]}"}},
                }),
            );
        }
        paths.insert((*template).to_owned(), Value::Object(item));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Sluice",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The Svix v1 API as Sluice serves it. Routes of Svix's API it does not serve answer 501 not_supported.",
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::SERVED;
    use crate::api::{Route, split_segments};

    /// Every documented path routes, with exactly the documented methods.
    #[test]
    fn every_documented_route_is_served_with_its_methods() {
        for (template, methods, _) in SERVED {
            let concrete = template
                .split('/')
                .map(|s| if s.starts_with('{') { "x1" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let (ingest, rest) = match concrete.strip_prefix("/ingest/api/v1") {
                Some(rest) => (true, rest.to_owned()),
                None => (false, concrete.trim_start_matches("/api/v1").to_owned()),
            };
            let segments = split_segments(&rest).expect("segments");
            let route = if ingest {
                Route::parse_ingest(&segments)
            } else {
                Route::parse(&segments)
            };
            let route = route.unwrap_or_else(|| panic!("{template} is not routed"));
            let mut served: Vec<String> = route
                .methods()
                .iter()
                .map(|m| m.as_str().to_ascii_lowercase())
                .collect();
            served.sort();
            let mut documented: Vec<String> = methods.iter().map(|m| (*m).to_owned()).collect();
            documented.sort();
            assert_eq!(served, documented, "{template}");
        }
    }
}
