//! `Config`: the one typed value built from the TOML file (or the embedded default).
//!
//! `Config::parse` is pure. It reads the whole file and reports every problem at once
//! (unknown keys, wrong types, out-of-range values), so an operator fixes a bad file in one
//! pass; `main` turns any problem into exit status 64 before a socket is bound. Every key
//! is one row of the settings table (`settings::SETTINGS`): its default, range, meaning and
//! whether SIGHUP applies it; the README's configuration table is rendered from it.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The whole configuration of a Sluice process.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Directory of the LMDB environment. Default `./sluice-data`.
    pub data_dir: PathBuf,
    /// Diagnostic verbosity: `error`, `warn`, `info`, `debug` or `trace`. Default `info`.
    pub log_level: String,
    /// Diagnostic format on stderr: `text` or `json` (under systemd, with `JOURNAL_STREAM`
    /// set, text is sent without timestamps: journald stamps lines). Default `text`.
    pub log_format: LogFormat,
    /// On SIGTERM, how long in-flight requests and attempts may take to finish, ms.
    /// Default 30,000, 1,000–600,000 (keep it under systemd's `TimeoutStopSec`).
    pub drain_timeout_ms: u64,
    pub api: ApiConfig,
    pub storage: StorageConfig,
    pub delivery: DeliveryConfig,
    pub metrics: MetricsConfig,
    pub portal: PortalConfig,
    /// `[cluster]`: several nodes over one replicated op log. `None` (no section): the
    /// embedded mode, one node, nothing of cluster mode runs.
    pub cluster: Option<ClusterConfig>,
}

/// `[portal]`: the tenant portal served at `/portal` (its pages and its access links).
#[derive(Clone, Debug, PartialEq)]
pub struct PortalConfig {
    /// The name in the portal's header. Default `Webhooks`; 1–64 characters.
    pub display_name: String,
    /// A logo for the header: an `https://` URL or a path on this server. Default none.
    pub logo_url: Option<String>,
    /// The accent colour, light and dark scheme (`#rrggbb`). Defaults `#2563eb`, `#60a5fa`.
    pub primary_color_light: String,
    pub primary_color_dark: String,
    /// Where tenants reach Sluice (`https://webhooks.example.com`), for the links of
    /// `app-portal-access`. Default: none (the scheme of this listener and the request's
    /// `Host`).
    pub public_url: Option<String>,
    /// Where the "link expired" page sends tenants for a new link. Default: none.
    pub refresh_url: Option<String>,
    /// Origins that may embed the portal in a frame (CSP `frame-ancestors`). Default none:
    /// no page may frame it.
    pub frame_ancestors: Vec<String>,
    /// How long a link's login code works, s. Default 600, 1–3,600.
    pub login_code_lifetime_seconds: u64,
    /// How long a browser session lasts at most, s (never past its link's expiry).
    /// Default 604,800 (7 days), 1–604,800.
    pub session_lifetime_seconds: u64,
}

impl Default for PortalConfig {
    /// The settings table's defaults.
    fn default() -> PortalConfig {
        Config::embedded_default().portal
    }
}

/// `[metrics]`: where Prometheus scrapes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsConfig {
    /// A listener of its own for `/metrics` (then the API listener does not serve it),
    /// so Prometheus can reach the metrics without reaching the API. Default: none
    /// (`/metrics` on the API listener).
    pub listen: Option<SocketAddr>,
    /// A file holding the bearer token `/metrics` requires. Default: none (no token).
    pub token_file: Option<PathBuf>,
}

/// `[cluster]`: this node's place in a cluster of Sluice nodes over NATS JetStream.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// NATS servers to connect to (`nats://host:port`, `tls://host:port` or `host:port`);
    /// the client finds the others of the NATS cluster itself. At least one, at most 16.
    pub nats_urls: Vec<String>,
    /// This node's name, unique in the cluster: it stands in the shard leases. 1–64 of
    /// `A-Z a-z 0-9 _ -`.
    pub node_id: String,
    /// The JetStream stream of the op log (the lease bucket is `<stream>_LEASES`).
    /// Default `SLUICE_OPS`; 1–32 of `A-Z a-z 0-9 _ -`.
    pub stream: String,
    /// How long a shard lease lives without renewal, ms (renewed every third of it).
    /// Default 5,000, 1,000–60,000.
    pub lease_ttl_ms: u64,
    /// How this node authenticates to NATS. Default none.
    pub auth: NatsAuth,
    /// A PEM file of the certificates that sign the NATS servers' TLS certificates; with
    /// it, the connection to NATS must be TLS (`tls://` URLs imply TLS as well). Default
    /// none: the system's roots for `tls://` URLs.
    pub tls_ca_file: Option<PathBuf>,
    /// This node's TLS client certificate chain (PEM), for NATS servers that verify
    /// their clients (`verify: true`); with `tls_key_file`. Default none.
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of `tls_cert_file` (PEM). Default none.
    pub tls_key_file: Option<PathBuf>,
    /// How often the holder of the `singleton` lease writes a snapshot to the object
    /// store (only when ops were applied since the newest one), ms; 0: only on
    /// `sluice cluster snapshot`. Default 3,600,000 (1 h); 0 or 1,000–604,800,000.
    pub snapshot_interval_ms: u64,
    /// Snapshots kept in the object store; the op stream is purged below the oldest kept
    /// one. Default 2, 1–100.
    pub snapshot_keep: usize,
}

/// NATS credentials of `[cluster]`: at most one kind.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum NatsAuth {
    #[default]
    None,
    /// `user` and `password`.
    UserPassword { user: String, password: String },
    /// `nkey_seed_file`: a file holding an nkey seed (`SU…`).
    NkeySeedFile(PathBuf),
    /// `creds_file`: a NATS credentials file (JWT and seed).
    CredsFile(PathBuf),
}

/// How diagnostics are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `[api]`: the HTTP listener.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiConfig {
    /// Address of the API listener. Default `127.0.0.1:8071`.
    pub listen: SocketAddr,
    /// Most concurrent connections; more wait in the kernel backlog. Default 4096, 1–1,000,000.
    pub connections_max: usize,
    /// Time allowed to send the request headers, ms. Default 10,000, 100–300,000.
    pub header_read_timeout_ms: u64,
    /// Time allowed to send the request body, ms. Default 30,000, 100–300,000.
    pub body_read_timeout_ms: u64,
    /// Largest request body, bytes. Default 1 MiB, 1 KiB–64 MiB.
    pub body_bytes_max: usize,
    /// Requests per second one token may make (a token bucket; beyond it, 429 with
    /// `Retry-After`). 0 turns the limit off. Default 0, 0–1,000,000.
    pub token_rate_per_second: u32,
    /// Requests a token may make at once above its rate. Default 1,000, 1–1,000,000.
    pub token_rate_burst: u32,
    /// Serve HTTPS with this PEM certificate chain and PEM private key (both or neither;
    /// re-read on SIGHUP). Default none: plain HTTP, meant for loopback.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// How long an ingest source's replaced URL token keeps working after `token/rotate`,
    /// seconds. Default 86,400 (24 h), 0–604,800.
    pub source_token_grace_seconds: u64,
    /// Requests per second one ingest source's receive URL takes, accepted or not (a token
    /// bucket with as much burst; beyond it, 429), and the rate shared by every request
    /// with an unknown token. 0 turns the limit off. Default 100, 0–1,000,000.
    pub source_rate_per_second: u32,
    /// How far ahead a message's `deliverAt` may be, seconds; later is a 422. 0 refuses
    /// every future `deliverAt`. Default 604,800 (7 days), 0–`DELIVER_AT_HORIZON_SECONDS_MAX`.
    pub deliver_at_horizon_seconds: u64,
    /// Most endpoints one application may have. The log holds the value (set at start),
    /// so every node of a cluster refuses the same creates. Default 1,000,
    /// 1–`ENDPOINTS_PER_APP_MAX` (100,000).
    pub endpoints_per_app_max: u32,
}

/// `[storage]`: the LMDB environment and its writer thread.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageConfig {
    /// LMDB map size (the most the data may grow to; the file is sparse). Default 16 GiB,
    /// 1 MiB–16 TiB.
    pub map_size_bytes: u64,
    /// Capacity of the writer's intake queue; a full queue answers 503. Default 65,536,
    /// 16–1,048,576.
    pub intake_capacity: usize,
    /// Message create answers 507 once the log uses this share of the map, in percent, so
    /// the rest stays free for delivering what was accepted. Default 90, 50–99.
    pub ingest_guard_percent: u8,
    /// File with the 32-byte key (raw, hex or base64) that seals endpoint secrets in the
    /// log. Default none: `<data_dir>/secrets.key`, made on the first start (under
    /// systemd, the credential `secrets-key` is used when present).
    pub secrets_key_file: Option<PathBuf>,
    /// Seal secrets at rest. Default true; false keeps a log without a key in clear (and
    /// only then is no key made).
    pub seal_secrets: bool,
    /// Message create answers 507 once the data directory's filesystem has less than this
    /// free, so that recording the deliveries of what was accepted still fits. Default
    /// 256 MiB, 0–1 TiB.
    pub disk_reserve_bytes: u64,
    /// Messages older than this, with no delivery pending, are deleted with their
    /// deliveries and attempts (payloads go earlier, at each message's own retention).
    /// Default 90 days, 1–3,650.
    pub retention_days: u16,
}

/// Which names the signature headers carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderStyle {
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature` (Standard Webhooks).
    Webhook,
    /// `svix-id`, `svix-timestamp`, `svix-signature`.
    Svix,
    /// Both sets.
    Both,
}

/// `[delivery]`: attempts, retries, lanes and the destination policy.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryConfig {
    /// Budget of one attempt, connect to last response byte, ms. Default 5,000, 1,000–30,000.
    pub attempt_timeout_ms: u64,
    /// Connect budget, ms. Default 2,000, 100–2,000.
    pub connect_timeout_ms: u64,
    /// Delay before each retry, ms. Default 1 min, 5 min, 30 min, 2 h (5 attempts in all);
    /// at most 20 entries, each at most 7 days.
    pub retry_schedule_ms: Vec<u64>,
    /// Each delay moves by up to this many percent either way. Default 20, 0–50.
    pub jitter_percent: u8,
    /// Longest `Retry-After` honoured, ms. Default 3,600,000, 0–86,400,000.
    pub retry_after_max_ms: u64,
    /// Allow `http://` endpoints. Default false.
    pub allow_http: bool,
    /// Non-public networks deliveries may reach anyway (CIDRs). Default none.
    pub allowed_networks: Vec<ipnet::IpNet>,
    /// Delivery shards (tasks owning lanes). Default 4, 1–64.
    pub shards: usize,
    /// Attempts in flight per endpoint. Default 16, 1–1,024 (`fifo` endpoints: 1).
    pub endpoint_in_flight_max: usize,
    /// Disable an endpoint whose deliveries keep exhausting their schedule, with no
    /// success between, for this long, ms. Default 5 days, 0–30 days.
    pub disable_after_ms: u64,
    /// Signature header names: `webhook`, `svix` or `both`. Default `webhook`.
    pub header_style: HeaderStyle,
    /// An HTTP proxy (`host:port`, or `http://host:port`) whose CONNECT tunnels carry
    /// every delivery; the destination policy still judges each destination first.
    /// Default: none (direct).
    pub proxy: Option<String>,
    /// PEM certificates deliveries trust besides the system's and the bundled roots.
    /// Default: none.
    pub ca_file: Option<PathBuf>,
}

/// One problem found in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, or empty for a syntax error.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

mod settings;

use settings::{Draft, OPTIONAL_SECTIONS};
pub use settings::{Reload, SETTINGS, Setting, reference_markdown, restart_needed, setting};

impl ClusterConfig {
    /// A `[cluster]` before its keys are read; the settings table fills it.
    fn blank() -> ClusterConfig {
        ClusterConfig {
            nats_urls: Vec::new(),
            node_id: String::new(),
            stream: String::new(),
            lease_ttl_ms: 0,
            auth: NatsAuth::None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            snapshot_interval_ms: 0,
            snapshot_keep: 0,
        }
    }
}

impl Config {
    /// The configuration used when no file is given: every setting's default.
    pub fn embedded_default() -> Config {
        Config::from_table(&toml::Table::new()).unwrap_or_else(|problems| {
            unreachable!("the settings' defaults are valid: {problems:?}")
        })
    }

    /// The value every setting's default overwrites (never used as it is).
    fn blank() -> Config {
        Config {
            data_dir: PathBuf::new(),
            log_level: String::new(),
            log_format: LogFormat::Text,
            drain_timeout_ms: 0,
            api: ApiConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                connections_max: 0,
                header_read_timeout_ms: 0,
                body_read_timeout_ms: 0,
                body_bytes_max: 0,
                token_rate_per_second: 0,
                token_rate_burst: 0,
                tls_cert_file: None,
                tls_key_file: None,
                source_token_grace_seconds: 0,
                source_rate_per_second: 0,
                deliver_at_horizon_seconds: 0,
                endpoints_per_app_max: 0,
            },
            storage: StorageConfig {
                map_size_bytes: 0,
                intake_capacity: 0,
                ingest_guard_percent: 0,
                secrets_key_file: None,
                seal_secrets: false,
                disk_reserve_bytes: 0,
                retention_days: 0,
            },
            delivery: DeliveryConfig {
                attempt_timeout_ms: 0,
                connect_timeout_ms: 0,
                retry_schedule_ms: Vec::new(),
                jitter_percent: 0,
                retry_after_max_ms: 0,
                allow_http: false,
                allowed_networks: Vec::new(),
                shards: 0,
                endpoint_in_flight_max: 0,
                disable_after_ms: 0,
                header_style: HeaderStyle::Webhook,
                proxy: None,
                ca_file: None,
            },
            metrics: MetricsConfig::default(),
            portal: PortalConfig {
                display_name: String::new(),
                primary_color_light: String::new(),
                primary_color_dark: String::new(),
                public_url: None,
                refresh_url: None,
                logo_url: None,
                frame_ancestors: Vec::new(),
                login_code_lifetime_seconds: 0,
                session_lifetime_seconds: 0,
            },
            cluster: None,
        }
    }

    /// A cluster's ops carry sealed secrets, and every node must open them: cluster mode
    /// needs the (shared) secrets key. Checked after the systemd credential is applied.
    pub fn cluster_problem(&self) -> Option<Problem> {
        (self.cluster.is_some() && self.storage.secrets_key_file.is_none()).then(|| Problem {
            key: "storage.secrets_key_file".to_owned(),
            message: "is required with [cluster]: ops carry sealed secrets, and every node \
                      needs the same key"
                .to_owned(),
        })
    }

    /// Parses and validates a whole file; on failure returns every problem found.
    pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            vec![Problem {
                key: String::new(),
                message: e.to_string().trim().to_owned(),
            }]
        })?;
        Config::from_table(&table)
    }

    /// The defaults, then every key of `table` through its setting, then the checks that
    /// span keys.
    fn from_table(table: &toml::Table) -> Result<Config, Vec<Problem>> {
        let mut reader = Reader {
            problems: Vec::new(),
        };
        let mut draft = Draft {
            config: Config::blank(),
            nats_user: None,
            nats_password: None,
            nats_nkey_seed_file: None,
            nats_creds_file: None,
        };
        apply_defaults(&mut reader, &mut draft, |section| {
            !OPTIONAL_SECTIONS.contains(&section)
        });
        for (name, value) in table {
            if !is_section(name) {
                match setting(name)
                    .filter(|s| !s.key.contains('.') || s.older_spelling == Some(name))
                {
                    Some(s) => (s.read)(&mut reader, name, value, &mut draft),
                    None => reader.problem(name, "unknown key"),
                }
                continue;
            }
            let toml::Value::Table(section) = value else {
                reader.problem(name, "must be a table");
                continue;
            };
            if OPTIONAL_SECTIONS.contains(&name.as_str()) {
                apply_defaults(&mut reader, &mut draft, |s| s == name);
            }
            for (key, value) in section {
                let dotted = format!("{name}.{key}");
                match SETTINGS.iter().find(|s| s.key == dotted) {
                    Some(s) => (s.read)(&mut reader, &dotted, value, &mut draft),
                    None => reader.problem(&dotted, "unknown key"),
                }
            }
        }
        check_spellings(&mut reader, table);
        check_together(&mut reader, &mut draft);
        if reader.problems.is_empty() {
            Ok(draft.config)
        } else {
            Err(reader.problems)
        }
    }
}

/// Whether `name` is a section of the file (`[api]`, `[log]`, …).
fn is_section(name: &str) -> bool {
    SETTINGS.iter().any(|s| {
        s.key
            .split_once('.')
            .is_some_and(|(section, _)| section == name)
    })
}

/// Writes the default of every setting in the sections `wanted` accepts.
fn apply_defaults(reader: &mut Reader, draft: &mut Draft, wanted: impl Fn(&str) -> bool) {
    for s in SETTINGS {
        let section = s.key.split_once('.').map_or("", |(section, _)| section);
        let Some(default) = s.default.filter(|_| wanted(section)) else {
            continue;
        };
        match format!("v = {default}").parse::<toml::Table>() {
            Ok(parsed) => (s.read)(reader, s.key, &parsed["v"], draft),
            Err(_) => reader.problem(s.key, "has a default that is not TOML"),
        }
    }
}

/// `#rrggbb`.
fn is_hex_colour(text: &str) -> bool {
    text.len() == 7 && text.starts_with('#') && text[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// An `http(s)://host[:port]` origin with nothing after it (no path, query, spaces or
/// characters that would break a CSP or a URL).
/// Where a logo may come from (`[portal] logo_url`, Svix's per-link `icon`): a relative
/// path on this server (`/…`, not `//…`) → `Some(None)`, or an `https://` URL → `Some(Some(
/// origin))` (for the CSP's `img-src`); anything else (other schemes, whitespace, quotes,
/// backslashes, over 2,048 bytes) → `None`.
pub fn image_url_origin(url: &str) -> Option<Option<String>> {
    let clean = url.len() <= 2048
        && !url.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\' | '<' | '>')
        });
    if !clean {
        return None;
    }
    if url.starts_with('/') && !url.starts_with("//") {
        return Some(None);
    }
    let rest = url.strip_prefix("https://")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let origin = format!("https://{host}");
    (!host.is_empty() && !host.contains('@') && is_web_origin(&origin)).then_some(Some(origin))
}

pub fn is_web_origin(text: &str) -> bool {
    let Some(rest) = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && rest.len() <= 253
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// One spelling per key: a file that gives both the older top-level spelling and the
/// sectioned key is refused (under the older spelling, which it also names).
fn check_spellings(reader: &mut Reader, table: &toml::Table) {
    for s in SETTINGS {
        let Some(older) = s.older_spelling else {
            continue;
        };
        let Some((section, name)) = s.key.split_once('.') else {
            continue;
        };
        let newer_given = table
            .get(section)
            .and_then(toml::Value::as_table)
            .is_some_and(|t| t.contains_key(name));
        if table.contains_key(older) && newer_given {
            reader.problem(
                older,
                &format!("set either {older} or [{section}] {name}, not both"),
            );
        }
    }
}

/// The rules that span keys: TLS files in pairs (the API's and NATS'), `[cluster]`'s
/// required keys and its one kind of NATS credentials.
fn check_together(reader: &mut Reader, draft: &mut Draft) {
    let api = &draft.config.api;
    if api.tls_cert_file.is_some() != api.tls_key_file.is_some() {
        reader.problem(
            "api.tls_cert_file",
            "tls_cert_file and tls_key_file go together",
        );
    }
    let Some(cluster) = draft.config.cluster.as_mut() else {
        return;
    };
    if cluster.tls_cert_file.is_some() != cluster.tls_key_file.is_some() {
        reader.problem(
            "cluster.tls_cert_file",
            "tls_cert_file and tls_key_file go together",
        );
    }
    for (key, missing) in [
        ("cluster.nats_urls", cluster.nats_urls.is_empty()),
        ("cluster.node_id", cluster.node_id.is_empty()),
    ] {
        if missing && !reader.problems.iter().any(|p| p.key == key) {
            reader.problem(key, "is required");
        }
    }
    let (user, password) = (draft.nats_user.take(), draft.nats_password.take());
    let (nkey, creds) = (
        draft.nats_nkey_seed_file.take(),
        draft.nats_creds_file.take(),
    );
    let kinds = usize::from(user.is_some() || password.is_some())
        + usize::from(nkey.is_some())
        + usize::from(creds.is_some());
    if kinds > 1 {
        reader.problem(
            "cluster",
            "give one of user and password, nkey_seed_file or creds_file",
        );
    }
    cluster.auth = match (user, password, nkey, creds) {
        (Some(user), Some(password), _, _) => NatsAuth::UserPassword { user, password },
        (Some(_), None, _, _) | (None, Some(_), _, _) => {
            reader.problem("cluster", "user and password go together");
            NatsAuth::None
        }
        (None, None, Some(seed), _) => NatsAuth::NkeySeedFile(seed),
        (None, None, None, Some(creds)) => NatsAuth::CredsFile(creds),
        (None, None, None, None) => NatsAuth::None,
    };
}

/// `host:port` of a proxy given as `host:port` or `http://host:port[/]`.
fn proxy_address(text: &str) -> Option<String> {
    let address = text
        .strip_prefix("http://")
        .unwrap_or(text)
        .trim_end_matches('/');
    let (host, port) = address.rsplit_once(':')?;
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':');
    (!host.is_empty() && host.chars().all(plain) && port.parse::<u16>().is_ok_and(|p| p > 0))
        .then(|| address.to_owned())
}

/// Whether `name` is 1–`max` of `A-Z a-z 0-9 _ -` (safe in NATS subjects and KV keys).
fn is_token(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `nats://`, `tls://` or no scheme, then `host:port` (a port is required).
fn is_nats_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("nats://")
        .or_else(|| url.strip_prefix("tls://"))
        .unwrap_or(url);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    match rest.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

/// Collects problems instead of stopping at the first (its value readers are beside the
/// settings table).
struct Reader {
    problems: Vec<Problem>,
}

impl Reader {
    fn problem(&mut self, key: &str, message: &str) {
        self.problems.push(Problem {
            key: key.to_owned(),
            message: message.to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_embedded_default() {
        assert_eq!(Config::parse(""), Ok(Config::embedded_default()));
    }

    #[test]
    fn reads_every_key() {
        let text = r#"
            data_dir = "/var/lib/sluice"
            log_level = "debug"
            log_format = "json"
            drain_timeout_ms = 5000
            [api]
            listen = "0.0.0.0:9000"
            connections_max = 10
            header_read_timeout_ms = 1000
            body_read_timeout_ms = 2000
            body_bytes_max = 4096
            [storage]
            map_size_bytes = 1048576
            intake_capacity = 128
        "#;
        let config = Config::parse(text).expect("valid");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/sluice"));
        assert_eq!(config.log_level, "debug");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.drain_timeout_ms, 5_000);
        assert_eq!(config.api.listen, "0.0.0.0:9000".parse().expect("addr"));
        assert_eq!(config.api.connections_max, 10);
        assert_eq!(config.api.body_bytes_max, 4096);
        assert_eq!(config.storage.map_size_bytes, 1 << 20);
        assert_eq!(config.storage.intake_capacity, 128);
    }

    #[test]
    fn reads_and_checks_the_portal_section() {
        let text = r##"
            [portal]
            display_name = "Acme webhooks"
            logo_url = "https://cdn.example.com/acme.svg"
            primary_color_light = "#112233"
            public_url = "https://hooks.example.com/"
            frame_ancestors = ["'self'", "https://app.example.com"]
            login_code_lifetime_seconds = 60
            session_lifetime_seconds = 3600
        "##;
        let config = Config::parse(text).expect("valid");
        assert_eq!(config.portal.display_name, "Acme webhooks");
        assert_eq!(
            config.portal.public_url.as_deref(),
            Some("https://hooks.example.com")
        );
        assert_eq!(
            config.portal.logo_url.as_deref(),
            Some("https://cdn.example.com/acme.svg")
        );
        assert_eq!(config.portal.frame_ancestors.len(), 2);
        assert_eq!(config.portal.login_code_lifetime_seconds, 60);
        let bad = r##"
            [portal]
            display_name = ""
            logo_url = "javascript:alert(1)"
            primary_color_dark = "blue"
            public_url = "ftp://x"
            frame_ancestors = ["https://a.example.com; script-src *"]
            session_lifetime_seconds = 0
            colour = 1
        "##;
        let problems = Config::parse(bad).expect_err("invalid");
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "portal.display_name",
            "portal.logo_url",
            "portal.primary_color_dark",
            "portal.public_url",
            "portal.frame_ancestors",
            "portal.session_lifetime_seconds",
            "portal.colour",
        ] {
            assert!(keys.contains(&key), "{key} in {keys:?}");
        }
    }

    #[test]
    fn logo_urls_are_https_or_a_path_here() {
        use super::image_url_origin as origin;
        assert_eq!(origin("/static/logo.png"), Some(None));
        assert_eq!(
            origin("https://cdn.example.com:8443/a/logo.svg?v=2"),
            Some(Some("https://cdn.example.com:8443".to_owned()))
        );
        for bad in [
            "http://cdn.example.com/logo.png",
            "//cdn.example.com/logo.png",
            "javascript:alert(1)",
            "data:image/png;base64,AAAA",
            "https://",
            "https://user@cdn.example.com/x",
            "https://cdn.example.com/x\"onerror=\"alert(1)",
            "https://cdn.example.com; script-src *",
            "/a b",
        ] {
            assert_eq!(origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn reports_every_problem_at_once() {
        let text = r#"
            colour = "blue"
            log_level = "loud"
            log_format = "xml"
            drain_timeout_ms = 1
            [api]
            listen = "nowhere"
            body_bytes_max = 1
            connections_max = "many"
            [storage]
            spare = 1
        "#;
        let problems = Config::parse(text).expect_err("invalid");
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "colour",
            "log_level",
            "log_format",
            "drain_timeout_ms",
            "api.listen",
            "api.body_bytes_max",
            "api.connections_max",
            "storage.spare",
        ] {
            assert!(keys.contains(&key), "missing {key} in {problems:?}");
        }
        assert_eq!(problems.len(), 8, "{problems:?}");
    }

    #[test]
    fn reads_the_delivery_section() {
        let text = r#"
            [delivery]
            attempt_timeout_ms = 2000
            retry_schedule_ms = [100, 200]
            allow_http = true
            allowed_networks = ["127.0.0.0/8", "::1/128"]
            header_style = "both"
        "#;
        let d = Config::parse(text).expect("valid").delivery;
        assert_eq!(
            (d.attempt_timeout_ms, d.retry_schedule_ms, d.allow_http),
            (2000, vec![100, 200], true)
        );
        assert_eq!(d.allowed_networks.len(), 2);
        assert_eq!(d.header_style, HeaderStyle::Both);
        let bad = "[delivery]\nattempt_timeout_ms = 60000\nallowed_networks = [\"nope\"]\nretry_schedule_ms = [-1]\n";
        assert_eq!(Config::parse(bad).expect_err("invalid").len(), 3);
    }

    #[test]
    fn the_log_section_and_its_older_spellings() {
        let config = Config::parse("[log]\nlevel = \"debug\"\nformat = \"json\"\n").expect("ok");
        assert_eq!(
            (config.log_level.as_str(), config.log_format),
            ("debug", LogFormat::Json)
        );
        let older = Config::parse("log_level = \"warn\"\n").expect("ok");
        assert_eq!(older.log_level, "warn");
        let both = Config::parse("log_level = \"warn\"\n[log]\nlevel = \"debug\"\n")
            .expect_err("one spelling per key");
        assert!(both.iter().any(|p| p.key == "log_level"), "{both:?}");
        let bad = Config::parse("[log]\nlevel = \"loud\"\ncolour = 1\n").expect_err("refused");
        let keys: Vec<&str> = bad.iter().map(|p| p.key.as_str()).collect();
        assert!(
            keys.contains(&"log.level") && keys.contains(&"log.colour"),
            "{keys:?}"
        );
    }

    #[test]
    fn the_readme_shows_the_settings_table() {
        let readme = include_str!("../README.md");
        let table = reference_markdown();
        assert!(
            readme.contains(&table),
            "README.md's configuration table differs from the settings table; it should be:\n{table}"
        );
    }

    #[test]
    fn the_reload_diff_names_the_keys_only_a_restart_applies() {
        let old = Config::embedded_default();
        let new = Config::parse(
            "[api]\nlisten = \"127.0.0.1:9\"\nbody_bytes_max = 2048\n\
             [delivery]\nshards = 8\njitter_percent = 5\n[storage]\nretention_days = 7\n",
        )
        .expect("valid");
        assert_eq!(
            restart_needed(&old, &new),
            ["api.listen", "storage.retention_days", "delivery.shards"]
        );
        assert!(restart_needed(&old, &old).is_empty());
    }

    #[test]
    fn syntax_errors_are_reported() {
        let problems = Config::parse("[api\nlisten=").expect_err("invalid");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].key.is_empty());
    }

    #[test]
    fn reads_the_cluster_section() {
        let text = "[cluster]\nnats_urls = [\"nats://127.0.0.1:4222\", \"10.0.0.2:4222\"]\n\
                    node_id = \"a-1\"\nlease_ttl_ms = 3000\nuser = \"u\"\npassword = \"p\"\n";
        let config = Config::parse(text).expect("valid");
        let cluster = config.cluster.clone().expect("cluster");
        assert_eq!(cluster.nats_urls.len(), 2);
        assert_eq!(cluster.node_id, "a-1");
        assert_eq!(cluster.stream, "SLUICE_OPS");
        assert_eq!(cluster.lease_ttl_ms, 3000);
        assert_eq!(
            cluster.auth,
            NatsAuth::UserPassword {
                user: "u".into(),
                password: "p".into()
            }
        );
        assert!(config.cluster_problem().is_some(), "no secrets key");
        assert!(Config::parse("").expect("valid").cluster.is_none());
    }

    #[test]
    fn reports_every_cluster_problem_at_once() {
        let text = "[cluster]\nnats_urls = [\"http://x\"]\nnode_id = \"a.b\"\n\
                    stream = \"\"\nlease_ttl_ms = 10\nuser = \"u\"\n\
                    creds_file = \"c\"\nshard = 1\nsnapshot_interval_ms = 10\n\
                    snapshot_keep = 0\n";
        let problems = Config::parse(text).expect_err("invalid");
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "cluster.nats_urls",
            "cluster.node_id",
            "cluster.stream",
            "cluster.lease_ttl_ms",
            "cluster.shard",
            "cluster.snapshot_interval_ms",
            "cluster.snapshot_keep",
            "cluster",
        ] {
            assert!(keys.contains(&key), "missing {key} in {problems:?}");
        }
        let missing = Config::parse("[cluster]\nnats_urls = [\"h:1\"]\n").expect_err("no id");
        assert_eq!(missing[0].key, "cluster.node_id");
    }
}
