//! What one attempt's result means: a pure classification of an HTTP response or transport
//! failure into an `Outcome`, and the `Retry-After` parser.

use crate::clock::parse_http_date;

/// Why an attempt produced no HTTP response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportFailure {
    /// The whole attempt exceeded the attempt timeout.
    Timeout,
    /// No connection (refused, unreachable, DNS failure, connect timeout).
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// The destination policy refused every address of the endpoint.
    Refused,
    /// The connection broke mid-exchange.
    Io,
}

/// The meaning of one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Any 2xx.
    Success { status: u16 },
    /// `410 Gone`: the receiver asks never to be called again; the endpoint is disabled.
    Gone,
    /// `429`, `502`, `503`, `504`: the lane pauses; `retry_after_ms` is the receiver's wish.
    Throttled {
        status: u16,
        retry_after_ms: Option<u64>,
    },
    /// Any other status (3xx included: redirects are not followed).
    HttpError { status: u16 },
    /// No HTTP response.
    Failed(TransportFailure),
}

impl Outcome {
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Success { .. })
    }

    /// The status code to record (0 when there was no response, as Svix does).
    pub fn status_code(self) -> u16 {
        match self {
            Outcome::Success { status }
            | Outcome::Throttled { status, .. }
            | Outcome::HttpError { status } => status,
            Outcome::Gone => 410,
            Outcome::Failed(_) => 0,
        }
    }

    /// A short, bounded label for metrics and records.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Success { .. } => "success",
            Outcome::Gone => "gone",
            Outcome::Throttled { .. } => "throttled",
            Outcome::HttpError { .. } => "http_error",
            Outcome::Failed(TransportFailure::Timeout) => "timeout",
            Outcome::Failed(TransportFailure::Connect) => "connect_error",
            Outcome::Failed(TransportFailure::Tls) => "tls_error",
            Outcome::Failed(TransportFailure::Refused) => "refused",
            Outcome::Failed(TransportFailure::Io) => "io_error",
        }
    }
}

/// Classifies a response. `retry_after` is the raw header, `now_ms` the receive time.
pub fn classify(status: u16, retry_after: Option<&str>, now_ms: u64) -> Outcome {
    match status {
        200..=299 => Outcome::Success { status },
        410 => Outcome::Gone,
        429 | 502 | 503 | 504 => Outcome::Throttled {
            status,
            retry_after_ms: retry_after.and_then(|v| parse_retry_after(v, now_ms)),
        },
        _ => Outcome::HttpError { status },
    }
}

/// `Retry-After` as delay-seconds or an HTTP date, in ms from `now_ms`. Unparseable → None.
pub fn parse_retry_after(value: &str, now_ms: u64) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    parse_http_date(value).map(|at_ms| at_ms.saturating_sub(now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let cases = [
            (200, None, Outcome::Success { status: 200 }),
            (204, None, Outcome::Success { status: 204 }),
            (301, None, Outcome::HttpError { status: 301 }),
            (400, None, Outcome::HttpError { status: 400 }),
            (410, None, Outcome::Gone),
            (
                429,
                Some("7"),
                Outcome::Throttled {
                    status: 429,
                    retry_after_ms: Some(7_000),
                },
            ),
            (
                503,
                Some("soon"),
                Outcome::Throttled {
                    status: 503,
                    retry_after_ms: None,
                },
            ),
            (
                502,
                None,
                Outcome::Throttled {
                    status: 502,
                    retry_after_ms: None,
                },
            ),
            (
                504,
                None,
                Outcome::Throttled {
                    status: 504,
                    retry_after_ms: None,
                },
            ),
            (500, Some("5"), Outcome::HttpError { status: 500 }),
        ];
        for (status, retry_after, want) in cases {
            assert_eq!(classify(status, retry_after, 0), want, "{status}");
        }
        assert_eq!(Outcome::Failed(TransportFailure::Timeout).status_code(), 0);
    }

    #[test]
    fn retry_after_forms() {
        // Sun, 06 Nov 1994 08:49:37 GMT = 784111777 s.
        let now = 784_111_777_000 - 30_000;
        assert_eq!(parse_retry_after("120", now), Some(120_000));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(30_000)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now + 60_000),
            Some(0)
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }
}
