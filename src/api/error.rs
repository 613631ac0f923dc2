//! `ApiError`: every way a request can fail, and the one place errors become HTTP.
//!
//! Two body shapes, as the Svix SDKs expect: 422 is `{"detail":[{loc,msg,type}]}`, every
//! other status is `{"code","detail"}`. No error ever leaves without a JSON body.

use hyper::StatusCode;
use serde::Serialize;

use crate::limits::{
    APPS_MAX, ENDPOINT_HEADERS_MAX, OLD_SECRETS_MAX, POLLER_CONSUMERS_MAX, TASKS_RUNNING_MAX,
    TOKENS_MAX,
};
use crate::log::LogError;
use crate::log::ops::Refusal;

/// One problem with one field of a request (the 422 body lists them all).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub loc: Vec<String>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    /// A `value_error` at `loc` (`["body", "uid"]`, `["query", "limit"]`, …).
    pub fn value(loc: &[&str], msg: impl Into<String>) -> FieldError {
        FieldError {
            loc: loc.iter().map(|s| (*s).to_owned()).collect(),
            msg: msg.into(),
            kind: "value_error".to_owned(),
        }
    }

    /// A body that is not JSON, or JSON of the wrong shape.
    pub fn json_decode(loc: Vec<String>, msg: impl Into<String>) -> FieldError {
        FieldError {
            loc,
            msg: msg.into(),
            kind: "value_error.jsondecode".to_owned(),
        }
    }
}

/// Why a request was not served.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("Incorrect authentication credentials.")]
    Unauthorized,
    #[error("Insufficient access for the given operation.")]
    Forbidden,
    /// An ingest source refused a request's signature (why, for its error log).
    #[error("The request's signature was not accepted: {0}.")]
    BadSignature(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("the method is not allowed on this route")]
    MethodNotAllowed(&'static [hyper::Method]),
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("Request payload is too large.")]
    PayloadTooLarge { limit_bytes: usize },
    #[error("the URI is too long")]
    UriTooLong { limit_bytes: usize },
    #[error("the request took too long to arrive")]
    RequestTimeout,
    #[error("the storage is full")]
    StorageFull,
    #[error("the server is busy")]
    Busy,
    #[error("too many requests for this token")]
    RateLimited { retry_after_secs: u32 },
    #[error("too many failed authentications from this address")]
    AuthThrottled { retry_after_secs: u32 },
    #[error("internal error: {0}")]
    Internal(String),
    /// A route of Svix's API (an SDK calls it) that Sluice does not serve: the feature.
    #[error("{0} is not supported by Sluice.")]
    NotSupported(&'static str),
}

impl ApiError {
    pub fn field(loc: &[&str], msg: impl Into<String>) -> ApiError {
        ApiError::Validation(vec![FieldError::value(loc, msg)])
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::BadSignature(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RateLimited { .. } | ApiError::AuthThrottled { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NotSupported(_) => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// A short, bounded label for metrics (`sluice_messages_rejected_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "validation",
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::BadSignature(_) => "bad_signature",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict { .. } => "conflict",
            ApiError::PayloadTooLarge { .. } => "too_large",
            ApiError::UriTooLong { .. } => "uri_too_long",
            ApiError::RequestTimeout => "timeout",
            ApiError::StorageFull => "storage_full",
            ApiError::Busy => "busy",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::AuthThrottled { .. } => "auth_throttled",
            ApiError::Internal(_) => "internal",
            ApiError::NotSupported(_) => "not_supported",
        }
    }

    /// Seconds a client should wait before retrying, for the statuses that invite it.
    /// The methods the route allows, for the `Allow` header of a 405 (RFC 9110 §15.5.6).
    pub fn allow(&self) -> Option<String> {
        match self {
            ApiError::MethodNotAllowed(methods) => Some(
                methods
                    .iter()
                    .map(hyper::Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            _ => None,
        }
    }

    pub fn retry_after_secs(&self) -> Option<u32> {
        match self {
            ApiError::Busy => Some(1),
            ApiError::RateLimited { retry_after_secs }
            | ApiError::AuthThrottled { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Coded<'a> {
            code: &'a str,
            detail: &'a str,
        }
        #[derive(Serialize)]
        struct Detailed<'a> {
            detail: &'a [FieldError],
        }
        let text = self.to_string();
        let coded = |code: &str, detail: &str| {
            serde_json::to_vec(&Coded { code, detail }).unwrap_or_else(|_| b"{}".to_vec())
        };
        match self {
            ApiError::Validation(errors) => {
                serde_json::to_vec(&Detailed { detail: errors }).unwrap_or_else(|_| b"{}".to_vec())
            }
            ApiError::BadRequest { code, detail } | ApiError::Conflict { code, detail } => {
                coded(code, detail)
            }
            ApiError::Unauthorized => coded("authentication_failed", &text),
            ApiError::Forbidden => coded("insufficient access", &text),
            ApiError::BadSignature(_) => coded("invalid_signature", &text),
            ApiError::NotFound(detail) => coded("not_found", detail),
            ApiError::NotSupported(_) => coded("not_supported", &text),
            ApiError::MethodNotAllowed(_) => {
                coded("method_not_allowed", "Method not allowed on this route.")
            }
            ApiError::PayloadTooLarge { limit_bytes } => coded(
                "payload_too_large",
                &format!("Request payload is too large (the limit is {limit_bytes} bytes)."),
            ),
            ApiError::UriTooLong { limit_bytes } => coded(
                "uri_too_long",
                &format!("The URI is longer than {limit_bytes} bytes."),
            ),
            ApiError::RequestTimeout => coded(
                "request_timeout",
                "The request body did not arrive in time.",
            ),
            ApiError::StorageFull => coded(
                "storage_full",
                "The storage is (nearly) full: the data directory's filesystem has less room than storage.disk_reserve_bytes, or the log uses storage.ingest_guard_percent of storage.map_size_bytes. The request was not stored; what was accepted is still delivered.",
            ),
            ApiError::Busy => coded("busy", "The server is busy; retry shortly."),
            ApiError::RateLimited { retry_after_secs } => coded(
                "rate_limited",
                &format!(
                    "This token made too many requests (api.token_rate_per_second); retry in {retry_after_secs} s."
                ),
            ),
            ApiError::AuthThrottled { retry_after_secs } => coded(
                "auth_throttled",
                &format!(
                    "Too many failed authentications from this address; retry in {retry_after_secs} s."
                ),
            ),
            // Internal details go to tracing, not to the client.
            ApiError::Internal(_) => coded("server_error", "Internal Server Error"),
        }
    }
}

impl From<LogError> for ApiError {
    fn from(error: LogError) -> ApiError {
        match error {
            LogError::MapFull | LogError::DiskFull => ApiError::StorageFull,
            // A cluster that cannot replicate now (a NATS election, a lagging applier)
            // is busy, not broken: the client retries.
            LogError::Busy | LogError::Cluster(_) => ApiError::Busy,
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<Refusal> for ApiError {
    /// The one mapping of the log's refusals to HTTP.
    #[expect(
        clippy::too_many_lines,
        reason = "one arm per refusal: the one mapping reads as the list of them"
    )]
    fn from(refusal: Refusal) -> ApiError {
        let conflict = |code, detail: &str| ApiError::Conflict {
            code,
            detail: detail.to_owned(),
        };
        match refusal {
            Refusal::AppNotFound => ApiError::NotFound("Application not found."),
            Refusal::EndpointNotFound => ApiError::NotFound("Endpoint not found."),
            Refusal::MessageNotFound => ApiError::NotFound("Message not found."),
            Refusal::EventTypeNotFound => ApiError::NotFound("Event type not found."),
            Refusal::AppUidTaken => conflict(
                "conflict",
                "An application with that id or uid already exists",
            ),
            Refusal::EndpointUidTaken => {
                conflict("conflict", "An endpoint with that uid already exists")
            }
            Refusal::EventIdTaken => {
                conflict("conflict", "A message with this eventId already exists")
            }
            Refusal::EventTypeExists => conflict(
                "event_type_exists",
                "An event_type with this name already exists",
            ),
            Refusal::AppsLimit => ApiError::bad_request(
                "limit_reached",
                format!("Sluice holds the most applications it allows ({APPS_MAX})."),
            ),
            Refusal::EndpointsLimit { max } => ApiError::bad_request(
                "limit_reached",
                format!("The application has the most endpoints allowed ({max})."),
            ),
            Refusal::UnknownEventTypes(names) => ApiError::field(
                &["body", "eventTypes"],
                format!(
                    "The following event types don't exist: {}",
                    names.join(", ")
                ),
            ),
            Refusal::OldSecretsLimit => ApiError::bad_request(
                "limit_reached",
                format!(
                    "You can only rotate a key {OLD_SECRETS_MAX} times within the grace period."
                ),
            ),
            Refusal::HeadersLimit => ApiError::field(
                &["body", "headers"],
                format!("at most {ENDPOINT_HEADERS_MAX} headers"),
            ),
            Refusal::TasksLimit => ApiError::Conflict {
                code: "too_many_tasks",
                detail: format!(
                    "{TASKS_RUNNING_MAX} background tasks are running; try again when one ends."
                ),
            },
            Refusal::EndpointDisabled => conflict(
                "endpoint_disabled",
                "The endpoint is disabled; enable it first.",
            ),
            Refusal::EndpointPollingOnly => conflict(
                "endpoint_polling_only",
                "The endpoint is polling-only: its consumers read messages through the \
                 poller, and nothing is pushed to it.",
            ),
            Refusal::TokensLimit => ApiError::bad_request(
                "limit_reached",
                format!("Sluice holds the most tokens it allows ({TOKENS_MAX}); revoke one."),
            ),
            Refusal::TokenNotFound => ApiError::NotFound("Token not found."),
            Refusal::LoginCodeInvalid => ApiError::Unauthorized,
            Refusal::PayloadGone => ApiError::bad_request(
                "missing_payload",
                "The message's payload has expired or was expunged.",
            ),
            Refusal::NoExample => ApiError::bad_request(
                "invalid_scheme",
                "The event type has no example at that index in its schema.",
            ),
            Refusal::SourceNotFound => ApiError::NotFound("Source not found."),
            Refusal::AttemptNotFound => ApiError::NotFound("Attempt not found."),
            Refusal::SourceUidTaken => {
                conflict("conflict", "A source with that uid already exists")
            }
            Refusal::ConsumersLimit => ApiError::bad_request(
                "limit_reached",
                format!(
                    "The endpoint has the most poller consumers allowed ({POLLER_CONSUMERS_MAX})."
                ),
            ),
        }
    }
}
