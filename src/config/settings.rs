//! The settings table: every key of the config file once, with its default, its range,
//! what it means, whether SIGHUP applies it, how it is read into `Config` and how its
//! running value is compared. Defaults (`Config::embedded_default`), validation
//! (`Config::parse`), the reload diff (`restart_needed`), the README's configuration
//! table and the example config's test all come from this one list.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{ClusterConfig, Config, HeaderStyle, LogFormat, Reader};

/// When a changed value takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// SIGHUP applies it to the running process.
    Applies,
    /// Only a restart applies it; SIGHUP keeps the running value and names the key.
    Restart,
}

/// One key of the config file.
pub struct Setting {
    /// `section.name`, or `name` at the top level.
    pub key: &'static str,
    /// The older top-level spelling still read (one spelling per file).
    pub older_spelling: Option<&'static str>,
    /// The default as TOML text; `None`: unset unless given.
    pub default: Option<&'static str>,
    /// The values allowed, for people.
    pub range: &'static str,
    pub reload: Reload,
    /// What it does, for the README's table.
    pub meaning: &'static str,
    /// Checks a value and writes it into the draft; a bad value is a problem, not a write.
    pub(super) read: fn(&mut Reader, &str, &toml::Value, &mut Draft),
    /// The running value, to compare two configs.
    pub(super) value: fn(&Config) -> String,
}

/// What reading a file builds: the config, and the NATS credentials, which are one
/// choice made from four keys (checked once every key is read).
pub(super) struct Draft {
    pub config: Config,
    pub nats_user: Option<String>,
    pub nats_password: Option<String>,
    pub nats_nkey_seed_file: Option<PathBuf>,
    pub nats_creds_file: Option<PathBuf>,
}

impl Draft {
    /// The `[cluster]` being read (present once the file has the section).
    pub(super) fn cluster(&mut self) -> &mut ClusterConfig {
        self.config.cluster.get_or_insert_with(ClusterConfig::blank)
    }
}

/// Sections whose presence turns a mode on: their defaults apply only when the file has
/// the section.
pub(super) const OPTIONAL_SECTIONS: [&str; 1] = ["cluster"];

const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
const DAY_MS: i64 = 86_400_000;
/// The limit as the integer type TOML reads (90 days in seconds: far below `i64::MAX`).
const DELIVER_AT_HORIZON_SECONDS_MAX: i64 = crate::limits::DELIVER_AT_HORIZON_SECONDS_MAX as i64;

/// An integer setting: `$key`, default, min, max, reload, range text, meaning, and the
/// field (`|c| c.path`) it sets.
macro_rules! int {
    ($key:literal, $default:literal, $min:expr, $max:expr, $reload:ident, $range:literal,
     $meaning:literal, |$c:ident| $field:expr) => {
        Setting {
            key: $key,
            older_spelling: None,
            default: Some($default),
            range: $range,
            reload: Reload::$reload,
            meaning: $meaning,
            read: |r, key, v, d| {
                let $c = &mut d.config;
                r.int(key, v, $min, $max, &mut $field);
            },
            value: |$c| format!("{:?}", $field),
        }
    };
}

/// A `[cluster]` integer setting (the section is optional).
macro_rules! cluster_int {
    ($key:literal, $default:literal, $min:expr, $max:expr, $range:literal, $meaning:literal,
     $field:ident) => {
        Setting {
            key: $key,
            older_spelling: None,
            default: Some($default),
            range: $range,
            reload: Reload::Restart,
            meaning: $meaning,
            read: |r, key, v, d| r.int(key, v, $min, $max, &mut d.cluster().$field),
            value: |c| format!("{:?}", c.cluster.as_ref().map(|k| &k.$field)),
        }
    };
}

/// A setting read by a function of its own: key, default, range, reload, meaning, the
/// reader and the field compared.
macro_rules! custom {
    ($key:literal, $default:expr, $range:literal, $reload:ident, $meaning:literal, $read:expr,
     |$c:ident| $field:expr) => {
        Setting {
            key: $key,
            older_spelling: None,
            default: $default,
            range: $range,
            reload: Reload::$reload,
            meaning: $meaning,
            read: $read,
            value: |$c| format!("{:?}", $field),
        }
    };
}

/// Every key of the config file, in the order of the README's table.
pub static SETTINGS: &[Setting] = &[
    custom!(
        "data_dir",
        Some("\"./sluice-data\""),
        "path",
        Restart,
        "LMDB environment directory",
        |r, key, v, d| {
            if let Some(dir) = r.string(key, v) {
                if dir.is_empty() {
                    r.problem(key, "must not be empty");
                } else {
                    d.config.data_dir = PathBuf::from(dir);
                }
            }
        },
        |c| c.data_dir
    ),
    Setting {
        older_spelling: Some("log_level"),
        ..custom!(
            "log.level",
            Some("\"info\""),
            "error, warn, info, debug, trace",
            Applies,
            "diagnostic verbosity (stderr); the environment variable `SLUICE_LOG` (a level) wins over it",
            |r, key, v, d| {
                if let Some(level) = r.string(key, v) {
                    if LOG_LEVELS.contains(&level.as_str()) {
                        d.config.log_level = level;
                    } else {
                        r.problem(key, "must be one of error, warn, info, debug, trace");
                    }
                }
            },
            |c| c.log_level
        )
    },
    Setting {
        older_spelling: Some("log_format"),
        ..custom!(
            "log.format",
            Some("\"text\""),
            "text, json",
            Restart,
            "stderr format; under systemd, text goes to the journal with fields",
            |r, key, v, d| match r.string(key, v).as_deref() {
                None => {}
                Some("text") => d.config.log_format = LogFormat::Text,
                Some("json") => d.config.log_format = LogFormat::Json,
                Some(_) => r.problem(key, "must be text or json"),
            },
            |c| c.log_format
        )
    },
    int!(
        "drain_timeout_ms",
        "30000",
        1_000,
        600_000,
        Restart,
        "1,000–600,000",
        "SIGTERM: time for requests and attempts to finish",
        |c| c.drain_timeout_ms
    ),
    custom!(
        "api.listen",
        Some("\"127.0.0.1:8071\""),
        "IP address and port",
        Restart,
        "API address",
        |r, key, v, d| {
            if let Some(addr) = r.address(key, v) {
                d.config.api.listen = addr;
            }
        },
        |c| c.api.listen
    ),
    int!(
        "api.connections_max",
        "4096",
        1,
        1_000_000,
        Restart,
        "1–1,000,000",
        "open connections; more wait in the backlog",
        |c| c.api.connections_max
    ),
    int!(
        "api.header_read_timeout_ms",
        "10000",
        100,
        300_000,
        Applies,
        "100–300,000",
        "time to send request headers",
        |c| c.api.header_read_timeout_ms
    ),
    int!(
        "api.body_read_timeout_ms",
        "30000",
        100,
        300_000,
        Applies,
        "100–300,000",
        "time to send a request body (408 after)",
        |c| c.api.body_read_timeout_ms
    ),
    int!(
        "api.body_bytes_max",
        "1048576",
        1 << 10,
        64 << 20,
        Applies,
        "1 KiB–64 MiB",
        "largest request body (413 above)",
        |c| c.api.body_bytes_max
    ),
    int!(
        "api.token_rate_per_second",
        "0",
        0,
        1_000_000,
        Applies,
        "0 (off)–1,000,000",
        "requests per second per token; beyond, 429 with `Retry-After`",
        |c| c.api.token_rate_per_second
    ),
    int!(
        "api.token_rate_burst",
        "1000",
        1,
        1_000_000,
        Applies,
        "1–1,000,000",
        "requests a token may make at once above its rate",
        |c| c.api.token_rate_burst
    ),
    custom!(
        "api.tls_cert_file",
        None,
        "PEM path; with `api.tls_key_file`",
        Applies,
        "serve HTTPS with this certificate chain (rustls, ring; TLS 1.2/1.3), re-read on SIGHUP. Without it the API is plain HTTP, meant for loopback",
        |r, key, v, d| d.config.api.tls_cert_file = r.path(key, v),
        |c| c.api.tls_cert_file
    ),
    custom!(
        "api.tls_key_file",
        None,
        "PEM path; with `api.tls_cert_file`",
        Applies,
        "the private key of `api.tls_cert_file`",
        |r, key, v, d| d.config.api.tls_key_file = r.path(key, v),
        |c| c.api.tls_key_file
    ),
    int!(
        "api.source_token_grace_seconds",
        "86400",
        0,
        604_800,
        Applies,
        "0–604,800",
        "how long an ingest source's old URL keeps working after `token/rotate`",
        |c| c.api.source_token_grace_seconds
    ),
    int!(
        "api.source_rate_per_second",
        "100",
        0,
        1_000_000,
        Applies,
        "0 (off)–1,000,000",
        "requests per second one ingest source's URL takes (as much burst); all unknown tokens share one such bucket; beyond, 429",
        |c| c.api.source_rate_per_second
    ),
    int!(
        "api.deliver_at_horizon_seconds",
        "604800",
        0,
        DELIVER_AT_HORIZON_SECONDS_MAX,
        Applies,
        "0–7,776,000 (90 days)",
        "how far ahead a message's `deliverAt` may be (later is a 422; 0 refuses every future `deliverAt`); the default is 7 days",
        |c| c.api.deliver_at_horizon_seconds
    ),
    int!(
        "api.endpoints_per_app_max",
        "1000",
        1,
        i64::from(crate::limits::ENDPOINTS_PER_APP_MAX),
        Restart,
        "1–100,000",
        "most endpoints one application may have (more is a 400 `limit_reached`); recorded in the log at start, so in a cluster the node that started last sets it for all; an application already past a lowered value keeps its endpoints",
        |c| c.api.endpoints_per_app_max
    ),
    int!(
        "storage.map_size_bytes",
        "17179869184",
        1 << 20,
        16 << 40,
        Restart,
        "1 MiB–16 TiB",
        "most the log may grow to (sparse file; the default is 16 GiB)",
        |c| c.storage.map_size_bytes
    ),
    int!(
        "storage.intake_capacity",
        "65536",
        16,
        1 << 20,
        Restart,
        "16–1,048,576",
        "writer queue; full answers 503",
        |c| c.storage.intake_capacity
    ),
    int!(
        "storage.ingest_guard_percent",
        "90",
        50,
        99,
        Restart,
        "50–99",
        "message create answers 507 above this share of the map, keeping the rest for delivering what was accepted",
        |c| c.storage.ingest_guard_percent
    ),
    int!(
        "storage.disk_reserve_bytes",
        "268435456",
        0,
        1 << 40,
        Restart,
        "0–1 TiB",
        "message create answers 507 when the data directory's filesystem (free space plus pages the log freed and reuses) has less room than this (the default is 256 MiB), keeping it for recording the deliveries of what was accepted; ingest resumes by itself when room comes back",
        |c| c.storage.disk_reserve_bytes
    ),
    int!(
        "storage.retention_days",
        "90",
        1,
        3_650,
        Restart,
        "1–3,650",
        "messages older than this, with no delivery pending, are deleted with their deliveries and attempts (payloads go at each message's own `payloadRetentionPeriod`, 1–90 days)",
        |c| c.storage.retention_days
    ),
    custom!(
        "storage.secrets_key_file",
        None,
        "path",
        Restart,
        "32-byte key (raw, 64 hex digits or base64) sealing secrets in the log; under systemd the credential `secrets-key` wins. Unset, the first start makes `<data_dir>/secrets.key` (mode 0600)",
        |r, key, v, d| d.config.storage.secrets_key_file = r.path(key, v),
        |c| c.storage.secrets_key_file
    ),
    custom!(
        "storage.seal_secrets",
        Some("true"),
        "true, false",
        Restart,
        "false: no key is made, and a log without a configured key keeps its secrets in clear",
        |r, key, v, d| r.boolean(key, v, &mut d.config.storage.seal_secrets),
        |c| c.storage.seal_secrets
    ),
    int!(
        "delivery.attempt_timeout_ms",
        "5000",
        1_000,
        30_000,
        Applies,
        "1,000–30,000",
        "budget of one attempt, connect to last response byte",
        |c| c.delivery.attempt_timeout_ms
    ),
    int!(
        "delivery.connect_timeout_ms",
        "2000",
        100,
        2_000,
        Restart,
        "100–2,000",
        "connect budget",
        |c| c.delivery.connect_timeout_ms
    ),
    custom!(
        "delivery.retry_schedule_ms",
        Some("[60000, 300000, 1800000, 7200000]"),
        "≤ 20 entries, each ≤ 7 days",
        Applies,
        "delay before each retry (retries already scheduled keep their time)",
        |r, key, v, d| {
            let delays: Option<Vec<u64>> = v.as_array().and_then(|items| {
                items
                    .iter()
                    .map(|i| i.as_integer().filter(|d| (0..=7 * DAY_MS).contains(d)))
                    .map(|d| d.and_then(|d| u64::try_from(d).ok()))
                    .collect()
            });
            match delays {
                Some(delays) if delays.len() <= 20 => d.config.delivery.retry_schedule_ms = delays,
                _ => r.problem(
                    key,
                    "must be a list of at most 20 delays, each 0 to 7 days in ms",
                ),
            }
        },
        |c| c.delivery.retry_schedule_ms
    ),
    int!(
        "delivery.jitter_percent",
        "20",
        0,
        50,
        Applies,
        "0–50",
        "± jitter on each delay",
        |c| c.delivery.jitter_percent
    ),
    int!(
        "delivery.retry_after_max_ms",
        "3600000",
        0,
        DAY_MS,
        Applies,
        "0–1 day",
        "longest `Retry-After` honoured",
        |c| c.delivery.retry_after_max_ms
    ),
    custom!(
        "delivery.allow_http",
        Some("false"),
        "true, false",
        Applies,
        "allow `http://` endpoints",
        |r, key, v, d| r.boolean(key, v, &mut d.config.delivery.allow_http),
        |c| c.delivery.allow_http
    ),
    custom!(
        "delivery.allowed_networks",
        Some("[]"),
        "CIDRs",
        Applies,
        "non-public networks deliveries may reach anyway (such as `127.0.0.0/8` for local receivers)",
        |r, key, v, d| {
            let nets: Option<Vec<ipnet::IpNet>> = v.as_array().and_then(|items| {
                items
                    .iter()
                    .map(|i| i.as_str().and_then(|s| s.parse().ok()))
                    .collect()
            });
            match nets {
                Some(nets) => d.config.delivery.allowed_networks = nets,
                None => r.problem(key, "must be a list of CIDRs such as \"127.0.0.0/8\""),
            }
        },
        |c| c.delivery.allowed_networks
    ),
    int!(
        "delivery.shards",
        "4",
        1,
        64,
        Restart,
        "1–64",
        "delivery shard tasks",
        |c| c.delivery.shards
    ),
    int!(
        "delivery.endpoint_in_flight_max",
        "16",
        1,
        1_024,
        Applies,
        "1–1,024",
        "attempts in flight per endpoint (`fifo` endpoints: 1)",
        |c| c.delivery.endpoint_in_flight_max
    ),
    int!(
        "delivery.disable_after_ms",
        "432000000",
        0,
        30 * DAY_MS,
        Applies,
        "0–30 days",
        "failing time before auto-disable (the default is 5 days; 0: never)",
        |c| c.delivery.disable_after_ms
    ),
    custom!(
        "delivery.header_style",
        Some("\"webhook\""),
        "webhook, svix, both",
        Applies,
        "signature header names",
        |r, key, v, d| match r.string(key, v).as_deref() {
            None => {}
            Some("webhook") => d.config.delivery.header_style = HeaderStyle::Webhook,
            Some("svix") => d.config.delivery.header_style = HeaderStyle::Svix,
            Some("both") => d.config.delivery.header_style = HeaderStyle::Both,
            Some(_) => r.problem(key, "must be webhook, svix or both"),
        },
        |c| c.delivery.header_style
    ),
    custom!(
        "delivery.proxy",
        None,
        "`host:port` or `http://host:port`",
        Restart,
        "an egress HTTP proxy: every delivery goes through its CONNECT tunnel, to the address the destination policy vetted (the proxy never resolves the name), TLS inside the tunnel as without one. The proxy must allow CONNECT to the destinations' ports",
        |r, key, v, d| {
            if let Some(proxy) = r.string(key, v) {
                match super::proxy_address(&proxy) {
                    Some(address) => d.config.delivery.proxy = Some(address),
                    None => r.problem(
                        key,
                        "must be host:port or http://host:port (an HTTP proxy that tunnels with CONNECT)",
                    ),
                }
            }
        },
        |c| c.delivery.proxy
    ),
    custom!(
        "delivery.ca_file",
        None,
        "PEM path",
        Restart,
        "certificates deliveries trust besides the system's store and the bundled Mozilla roots (which stay as a fallback)",
        |r, key, v, d| d.config.delivery.ca_file = r.path(key, v),
        |c| c.delivery.ca_file
    ),
    custom!(
        "metrics.listen",
        None,
        "IP address and port",
        Restart,
        "a listener of its own for `/metrics` (plain HTTP); the API listener then answers 404 there",
        |r, key, v, d| d.config.metrics.listen = r.address(key, v),
        |c| c.metrics.listen
    ),
    custom!(
        "metrics.token_file",
        None,
        "path",
        Restart,
        "a file with the bearer token `/metrics` requires (401 without it)",
        |r, key, v, d| d.config.metrics.token_file = r.path(key, v),
        |c| c.metrics.token_file
    ),
    custom!(
        "portal.display_name",
        Some("\"Webhooks\""),
        "1–64 printable characters",
        Restart,
        "the name in the tenant portal's header",
        |r, key, v, d| {
            if let Some(name) = r.string(key, v) {
                if name.is_empty()
                    || name.chars().count() > 64
                    || name.chars().any(char::is_control)
                {
                    r.problem(key, "must be 1 to 64 printable characters");
                } else {
                    d.config.portal.display_name = name;
                }
            }
        },
        |c| c.portal.display_name
    ),
    custom!(
        "portal.logo_url",
        None,
        "`https://…` URL or `/…` path",
        Restart,
        "a logo shown in the tenant portal's header (its origin is added to the CSP's `img-src`)",
        |r, key, v, d| {
            if let Some(url) = r.string(key, v) {
                if super::image_url_origin(&url).is_some() {
                    d.config.portal.logo_url = Some(url);
                } else {
                    r.problem(key, "must be an https:// URL or a path starting with /");
                }
            }
        },
        |c| c.portal.logo_url
    ),
    custom!(
        "portal.primary_color_light",
        Some("\"#2563eb\""),
        "`#rrggbb`",
        Restart,
        "the portal's accent colour in the light scheme",
        |r, key, v, d| {
            if let Some(colour) = r.colour(key, v) {
                d.config.portal.primary_color_light = colour;
            }
        },
        |c| c.portal.primary_color_light
    ),
    custom!(
        "portal.primary_color_dark",
        Some("\"#60a5fa\""),
        "`#rrggbb`",
        Restart,
        "the portal's accent colour in the dark scheme",
        |r, key, v, d| {
            if let Some(colour) = r.colour(key, v) {
                d.config.portal.primary_color_dark = colour;
            }
        },
        |c| c.portal.primary_color_dark
    ),
    custom!(
        "portal.public_url",
        None,
        "`http(s)://host[:port]`",
        Restart,
        "where tenants reach Sluice, for the links of `app-portal-access` (unset: this listener's scheme and the request's `Host`)",
        |r, key, v, d| {
            if let Some(url) = r.string(key, v) {
                let origin = url.trim_end_matches('/');
                if super::is_web_origin(origin) {
                    d.config.portal.public_url = Some(origin.to_owned());
                } else {
                    r.problem(
                        key,
                        "must be an http:// or https:// origin (scheme, host, optional port)",
                    );
                }
            }
        },
        |c| c.portal.public_url
    ),
    custom!(
        "portal.refresh_url",
        None,
        "`http(s)://…` URL",
        Restart,
        "where the portal's \"link expired\" page sends tenants for a new link",
        |r, key, v, d| {
            if let Some(url) = r.string(key, v) {
                let ok = (url.starts_with("https://") || url.starts_with("http://"))
                    && url.len() <= 2048
                    && !url.chars().any(|c| c.is_whitespace() || c.is_control());
                if ok {
                    d.config.portal.refresh_url = Some(url);
                } else {
                    r.problem(key, "must be an http:// or https:// URL");
                }
            }
        },
        |c| c.portal.refresh_url
    ),
    custom!(
        "portal.frame_ancestors",
        Some("[]"),
        "`'self'` and `http(s)://` origins",
        Restart,
        "origins that may embed the portal in a frame (CSP `frame-ancestors`); none: no page may frame it",
        |r, key, v, d| {
            let origins: Option<Vec<String>> = v.as_array().and_then(|items| {
                items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .filter(|o| super::is_web_origin(o) || *o == "'self'")
                            .map(str::to_owned)
                    })
                    .collect()
            });
            match origins {
                Some(origins) => d.config.portal.frame_ancestors = origins,
                None => r.problem(
                    key,
                    "must be a list, each 'self' or an http:// or https:// origin",
                ),
            }
        },
        |c| c.portal.frame_ancestors
    ),
    int!(
        "portal.login_code_lifetime_seconds",
        "600",
        1,
        3_600,
        Restart,
        "1–3,600",
        "how long an access link's single-use login code works",
        |c| c.portal.login_code_lifetime_seconds
    ),
    int!(
        "portal.session_lifetime_seconds",
        "604800",
        1,
        604_800,
        Restart,
        "1–604,800",
        "how long a portal browser session lasts at most (never past its link's expiry)",
        |c| c.portal.session_lifetime_seconds
    ),
    custom!(
        "cluster.nats_urls",
        None,
        "1–16 `nats://` / `tls://` URLs",
        Restart,
        "cluster mode (no `[cluster]`: the embedded mode); required in `[cluster]`: the NATS servers (see [Running a cluster](#running-a-cluster))",
        |r, key, v, d| {
            let urls: Option<Vec<String>> = v.as_array().and_then(|items| {
                items
                    .iter()
                    .map(|u| {
                        u.as_str()
                            .filter(|u| super::is_nats_url(u))
                            .map(str::to_owned)
                    })
                    .collect()
            });
            match urls {
                Some(urls) if (1..=16).contains(&urls.len()) => d.cluster().nats_urls = urls,
                _ => r.problem(
                    key,
                    "must be a list of 1 to 16 NATS URLs such as \"nats://127.0.0.1:4222\"",
                ),
            }
        },
        |c| c.cluster.as_ref().map(|k| &k.nats_urls)
    ),
    custom!(
        "cluster.node_id",
        None,
        "1–64 of `A-Z a-z 0-9 _ -`",
        Restart,
        "required in `[cluster]`: this node's name, unique in the cluster (it stands in the leases)",
        |r, key, v, d| match r.string(key, v) {
            Some(id) if super::is_token(&id, 64) => d.cluster().node_id = id,
            Some(_) => r.problem(key, "must be 1-64 of A-Z a-z 0-9 _ -"),
            None => {}
        },
        |c| c.cluster.as_ref().map(|k| &k.node_id)
    ),
    custom!(
        "cluster.stream",
        Some("\"SLUICE_OPS\""),
        "1–32 of `A-Z a-z 0-9 _ -`",
        Restart,
        "the op stream; the lease bucket is `<stream>_LEASES`",
        |r, key, v, d| match r.string(key, v) {
            Some(stream) if super::is_token(&stream, 32) => d.cluster().stream = stream,
            Some(_) => r.problem(key, "must be 1-32 of A-Z a-z 0-9 _ -"),
            None => {}
        },
        |c| c.cluster.as_ref().map(|k| &k.stream)
    ),
    cluster_int!(
        "cluster.lease_ttl_ms",
        "5000",
        1_000,
        60_000,
        "1,000–60,000",
        "a shard lease's life without renewal (renewed every third)",
        lease_ttl_ms
    ),
    custom!(
        "cluster.user",
        None,
        "with `cluster.password`",
        Restart,
        "NATS user (one kind of NATS credentials at most: user and password, nkey seed or creds file)",
        |r, key, v, d| d.nats_user = r.string(key, v),
        |c| c.cluster.as_ref().map(|k| &k.auth)
    ),
    custom!(
        "cluster.password",
        None,
        "with `cluster.user`",
        Restart,
        "NATS password",
        |r, key, v, d| d.nats_password = r.string(key, v),
        |c| c.cluster.as_ref().map(|k| &k.auth)
    ),
    custom!(
        "cluster.nkey_seed_file",
        None,
        "path",
        Restart,
        "a file holding the node's NATS nkey seed (`SU…`)",
        |r, key, v, d| d.nats_nkey_seed_file = r.path(key, v),
        |c| c.cluster.as_ref().map(|k| &k.auth)
    ),
    custom!(
        "cluster.creds_file",
        None,
        "path",
        Restart,
        "a NATS credentials file (JWT and seed)",
        |r, key, v, d| d.nats_creds_file = r.path(key, v),
        |c| c.cluster.as_ref().map(|k| &k.auth)
    ),
    custom!(
        "cluster.tls_ca_file",
        None,
        "PEM path",
        Restart,
        "certificates that sign the NATS servers' TLS certificates; with it the connection to NATS must be TLS (`tls://` URLs imply TLS too, trusting the system's roots)",
        |r, key, v, d| d.cluster().tls_ca_file = r.path(key, v),
        |c| c.cluster.as_ref().map(|k| &k.tls_ca_file)
    ),
    custom!(
        "cluster.tls_cert_file",
        None,
        "PEM path; with `cluster.tls_key_file`",
        Restart,
        "this node's TLS client certificate chain, for NATS servers that verify their clients (`verify: true`); the connection to NATS must then be TLS",
        |r, key, v, d| d.cluster().tls_cert_file = r.path(key, v),
        |c| c.cluster.as_ref().map(|k| &k.tls_cert_file)
    ),
    custom!(
        "cluster.tls_key_file",
        None,
        "PEM path; with `cluster.tls_cert_file`",
        Restart,
        "the private key of `cluster.tls_cert_file`",
        |r, key, v, d| d.cluster().tls_key_file = r.path(key, v),
        |c| c.cluster.as_ref().map(|k| &k.tls_key_file)
    ),
    custom!(
        "cluster.snapshot_interval_ms",
        Some("3600000"),
        "0, or 1,000–7 days",
        Restart,
        "how often the `singleton` holder writes a snapshot (only when ops were applied since the newest; the default is 1 h); 0: only on `sluice cluster snapshot`",
        |r, key, v, d| {
            let mut interval = 0u64;
            r.int(key, v, 0, 7 * DAY_MS, &mut interval);
            if (1..1_000).contains(&interval) {
                r.problem(key, "must be 0 (no schedule) or 1000-604800000");
            } else {
                d.cluster().snapshot_interval_ms = interval;
            }
        },
        |c| c.cluster.as_ref().map(|k| k.snapshot_interval_ms)
    ),
    cluster_int!(
        "cluster.snapshot_keep",
        "2",
        1,
        100,
        "1–100",
        "snapshots kept in the object store; the op stream is purged below the oldest kept one",
        snapshot_keep
    ),
];

/// The setting `key` names (`section.name`, or a top-level older spelling).
pub fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS
        .iter()
        .find(|s| s.key == key || s.older_spelling == Some(key))
}

/// The keys whose values differ between `old` and `new` and that only a restart applies,
/// in table order, each once.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    SETTINGS
        .iter()
        .filter(|s| s.reload == Reload::Restart && (s.value)(old) != (s.value)(new))
        .map(|s| s.key)
        .collect()
}

/// The README's configuration table, rendered from `SETTINGS`.
pub fn reference_markdown() -> String {
    let mut out =
        String::from("| key | default | range | SIGHUP | meaning |\n|---|---|---|---|---|\n");
    for s in SETTINGS {
        let key = match s.older_spelling {
            Some(older) => format!("`{}` (or `{older}`)", s.key),
            None => format!("`{}`", s.key),
        };
        let default = s
            .default
            .map_or_else(|| "none".to_owned(), |d| format!("`{d}`"));
        let reload = match s.reload {
            Reload::Applies => "applies",
            Reload::Restart => "restart",
        };
        out.push_str(&format!(
            "| {key} | {default} | {} | {reload} | {} |\n",
            s.range, s.meaning
        ));
    }
    out
}

impl Reader {
    pub(super) fn string(&mut self, key: &str, value: &toml::Value) -> Option<String> {
        match value {
            toml::Value::String(s) => Some(s.clone()),
            _ => {
                self.problem(key, "must be a string");
                None
            }
        }
    }

    fn path(&mut self, key: &str, value: &toml::Value) -> Option<PathBuf> {
        self.string(key, value).map(PathBuf::from)
    }

    fn address(&mut self, key: &str, value: &toml::Value) -> Option<SocketAddr> {
        let text = self.string(key, value)?;
        let parsed = text.parse().ok();
        if parsed.is_none() {
            self.problem(key, "must be an IP address and port");
        }
        parsed
    }

    fn colour(&mut self, key: &str, value: &toml::Value) -> Option<String> {
        let text = self.string(key, value)?;
        if super::is_hex_colour(&text) {
            Some(text)
        } else {
            self.problem(key, "must be a colour as #rrggbb");
            None
        }
    }

    fn boolean(&mut self, key: &str, value: &toml::Value, out: &mut bool) {
        match value.as_bool() {
            Some(b) => *out = b,
            None => self.problem(key, "must be true or false"),
        }
    }

    fn int<T: TryFrom<i64> + Copy>(
        &mut self,
        key: &str,
        value: &toml::Value,
        min: i64,
        max: i64,
        out: &mut T,
    ) {
        match value.as_integer() {
            Some(v) if (min..=max).contains(&v) => match T::try_from(v) {
                Ok(v) => *out = v,
                Err(_) => self.problem(key, "is out of range for this machine"),
            },
            Some(_) => self.problem(key, &format!("must be between {min} and {max}")),
            None => self.problem(key, "must be an integer"),
        }
    }
}
