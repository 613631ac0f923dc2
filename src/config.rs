//! `Config`: the one typed value built from the TOML file (or the embedded default).
//!
//! `Config::parse` is pure. It reads the whole file and reports every problem at once
//! (unknown keys, wrong types, out-of-range values), so an operator fixes a bad file in one
//! pass; `main` turns any problem into exit status 64 before a socket is bound. Every key,
//! its default and its range is listed in `KEYS` and in the README's configuration section.

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
    fn default() -> PortalConfig {
        PortalConfig {
            display_name: "Webhooks".to_owned(),
            primary_color_light: "#2563eb".to_owned(),
            primary_color_dark: "#60a5fa".to_owned(),
            public_url: None,
            refresh_url: None,
            frame_ancestors: Vec::new(),
            login_code_lifetime_seconds: 600,
            session_lifetime_seconds: 604_800,
        }
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

/// Every key the file may contain, with its default, for docs and `check-config`.
pub const KEYS: &[(&str, &str)] = &[
    ("data_dir", "\"./sluice-data\""),
    ("log_level", "\"info\""),
    ("log_format", "\"text\""),
    ("log.level", "\"info\""),
    ("log.format", "\"text\""),
    ("drain_timeout_ms", "30000"),
    ("api.listen", "\"127.0.0.1:8071\""),
    ("api.connections_max", "4096"),
    ("api.header_read_timeout_ms", "10000"),
    ("api.body_read_timeout_ms", "30000"),
    ("api.body_bytes_max", "1048576"),
    ("api.token_rate_per_second", "0"),
    ("api.token_rate_burst", "1000"),
    ("api.tls_cert_file", "(none)"),
    ("api.tls_key_file", "(none)"),
    ("api.source_token_grace_seconds", "86400"),
    ("api.source_rate_per_second", "100"),
    ("storage.map_size_bytes", "17179869184"),
    ("storage.intake_capacity", "65536"),
    ("storage.ingest_guard_percent", "90"),
    ("storage.secrets_key_file", "(none)"),
    ("storage.seal_secrets", "true"),
    ("storage.disk_reserve_bytes", "268435456"),
    ("storage.retention_days", "90"),
    ("delivery.attempt_timeout_ms", "5000"),
    ("delivery.connect_timeout_ms", "2000"),
    (
        "delivery.retry_schedule_ms",
        "[60000, 300000, 1800000, 7200000]",
    ),
    ("delivery.jitter_percent", "20"),
    ("delivery.retry_after_max_ms", "3600000"),
    ("delivery.allow_http", "false"),
    ("delivery.allowed_networks", "[]"),
    ("delivery.shards", "4"),
    ("delivery.endpoint_in_flight_max", "16"),
    ("delivery.disable_after_ms", "432000000"),
    ("delivery.header_style", "\"webhook\""),
    ("delivery.proxy", "(none)"),
    ("delivery.ca_file", "(none)"),
    ("metrics.listen", "(none)"),
    ("metrics.token_file", "(none)"),
    ("portal.display_name", "\"Webhooks\""),
    ("portal.primary_color_light", "\"#2563eb\""),
    ("portal.primary_color_dark", "\"#60a5fa\""),
    (
        "portal.public_url",
        "(none: this listener's scheme and the request's Host)",
    ),
    ("portal.refresh_url", "(none)"),
    ("portal.frame_ancestors", "[] (no framing)"),
    ("portal.login_code_lifetime_seconds", "600"),
    ("portal.session_lifetime_seconds", "604800"),
    ("cluster.nats_urls", "(no [cluster]: embedded mode)"),
    ("cluster.node_id", "(required in [cluster])"),
    ("cluster.stream", "\"SLUICE_OPS\""),
    ("cluster.lease_ttl_ms", "5000"),
    ("cluster.user", "(none)"),
    ("cluster.password", "(none)"),
    ("cluster.nkey_seed_file", "(none)"),
    ("cluster.creds_file", "(none)"),
];

const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

impl Config {
    /// The configuration used when no file is given.
    pub fn embedded_default() -> Config {
        Config {
            data_dir: PathBuf::from("./sluice-data"),
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            drain_timeout_ms: 30_000,
            api: ApiConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8071)),
                connections_max: 4096,
                header_read_timeout_ms: 10_000,
                body_read_timeout_ms: 30_000,
                body_bytes_max: 1 << 20,
                token_rate_per_second: 0,
                token_rate_burst: 1_000,
                tls_cert_file: None,
                tls_key_file: None,
                source_token_grace_seconds: 86_400,
                source_rate_per_second: 100,
            },
            storage: StorageConfig {
                map_size_bytes: 16 << 30,
                intake_capacity: 65_536,
                ingest_guard_percent: 90,
                secrets_key_file: None,
                seal_secrets: true,
                disk_reserve_bytes: 256 << 20,
                retention_days: 90,
            },
            delivery: DeliveryConfig {
                attempt_timeout_ms: 5_000,
                connect_timeout_ms: 2_000,
                retry_schedule_ms: vec![60_000, 300_000, 1_800_000, 7_200_000],
                jitter_percent: 20,
                retry_after_max_ms: 3_600_000,
                allow_http: false,
                allowed_networks: Vec::new(),
                shards: 4,
                endpoint_in_flight_max: 16,
                disable_after_ms: 5 * 86_400_000,
                header_style: HeaderStyle::Webhook,
                proxy: None,
                ca_file: None,
            },
            metrics: MetricsConfig::default(),
            portal: PortalConfig::default(),
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
        let mut reader = Reader {
            problems: Vec::new(),
        };
        let mut config = Config::embedded_default();
        let known_top = [
            "data_dir",
            "log_level",
            "log_format",
            "log",
            "drain_timeout_ms",
            "api",
            "storage",
            "delivery",
            "metrics",
            "portal",
            "cluster",
        ];
        reader.reject_unknown("", &table, &known_top);
        if let Some(v) = reader.string(&table, "", "data_dir") {
            if v.is_empty() {
                reader.problem("data_dir", "must not be empty");
            }
            config.data_dir = PathBuf::from(v);
        }
        read_logging(&mut reader, &table, &mut config);
        reader.int(
            &table,
            "",
            "drain_timeout_ms",
            1_000,
            600_000,
            &mut config.drain_timeout_ms,
        );
        read_sections(&mut reader, &table, &mut config);
        if reader.problems.is_empty() {
            Ok(config)
        } else {
            Err(reader.problems)
        }
    }
}

/// The sections of the file, each into its part of `config`.
fn read_sections(reader: &mut Reader, table: &toml::Table, config: &mut Config) {
    if let Some(api) = reader.section(table, "api") {
        read_api(reader, api, &mut config.api);
    }
    if let Some(storage) = reader.section(table, "storage") {
        read_storage(reader, storage, &mut config.storage);
    }
    if let Some(delivery) = reader.section(table, "delivery") {
        read_delivery(reader, delivery, &mut config.delivery);
    }
    if let Some(metrics) = reader.section(table, "metrics") {
        read_metrics(reader, metrics, &mut config.metrics);
    }
    if let Some(portal) = reader.section(table, "portal") {
        read_portal(reader, portal, &mut config.portal);
    }
    if let Some(cluster) = reader.section(table, "cluster") {
        config.cluster = read_cluster(reader, cluster);
    }
}

/// `#rrggbb`.
fn is_hex_colour(text: &str) -> bool {
    text.len() == 7 && text.starts_with('#') && text[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// An `http(s)://host[:port]` origin with nothing after it (no path, query, spaces or
/// characters that would break a CSP or a URL).
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

#[expect(clippy::too_many_lines, reason = "one block per key of the section")]
fn read_portal(reader: &mut Reader, t: &toml::Table, out: &mut PortalConfig) {
    let keys = [
        "display_name",
        "primary_color_light",
        "primary_color_dark",
        "public_url",
        "refresh_url",
        "frame_ancestors",
        "login_code_lifetime_seconds",
        "session_lifetime_seconds",
    ];
    reader.reject_unknown("portal", t, &keys);
    if let Some(v) = reader.string(t, "portal", "display_name") {
        if v.is_empty() || v.chars().count() > 64 || v.chars().any(char::is_control) {
            reader.problem(
                "portal.display_name",
                "must be 1 to 64 printable characters",
            );
        }
        out.display_name = v;
    }
    for (key, field) in [
        ("primary_color_light", &mut out.primary_color_light),
        ("primary_color_dark", &mut out.primary_color_dark),
    ] {
        if let Some(v) = reader.string(t, "portal", key) {
            if !is_hex_colour(&v) {
                reader.problem(&join("portal", key), "must be a colour as #rrggbb");
            }
            *field = v;
        }
    }
    if let Some(v) = reader.string(t, "portal", "public_url") {
        if !is_web_origin(v.trim_end_matches('/')) {
            reader.problem(
                "portal.public_url",
                "must be an http:// or https:// origin (scheme, host, optional port)",
            );
        }
        out.public_url = Some(v.trim_end_matches('/').to_owned());
    }
    if let Some(v) = reader.string(t, "portal", "refresh_url") {
        let ok = (v.starts_with("https://") || v.starts_with("http://"))
            && v.len() <= 2048
            && !v.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            reader.problem("portal.refresh_url", "must be an http:// or https:// URL");
        }
        out.refresh_url = Some(v);
    }
    match t.get("frame_ancestors") {
        None => {}
        Some(toml::Value::Array(items)) => {
            out.frame_ancestors.clear();
            for item in items {
                match item.as_str() {
                    Some(origin) if is_web_origin(origin) || origin == "'self'" => {
                        out.frame_ancestors.push(origin.to_owned());
                    }
                    _ => reader.problem(
                        "portal.frame_ancestors",
                        "each must be 'self' or an http:// or https:// origin",
                    ),
                }
            }
        }
        Some(_) => reader.problem("portal.frame_ancestors", "must be a list of origins"),
    }
    reader.int(
        t,
        "portal",
        "login_code_lifetime_seconds",
        1,
        3_600,
        &mut out.login_code_lifetime_seconds,
    );
    reader.int(
        t,
        "portal",
        "session_lifetime_seconds",
        1,
        604_800,
        &mut out.session_lifetime_seconds,
    );
}

/// The ingest sources' settings of `[api]`.
fn read_api_sources(reader: &mut Reader, api: &toml::Table, out: &mut ApiConfig) {
    reader.int(
        api,
        "api",
        "source_token_grace_seconds",
        0,
        604_800,
        &mut out.source_token_grace_seconds,
    );
    reader.int(
        api,
        "api",
        "source_rate_per_second",
        0,
        1_000_000,
        &mut out.source_rate_per_second,
    );
}

fn read_api(reader: &mut Reader, api: &toml::Table, out: &mut ApiConfig) {
    let keys = [
        "listen",
        "connections_max",
        "header_read_timeout_ms",
        "body_read_timeout_ms",
        "body_bytes_max",
        "token_rate_per_second",
        "token_rate_burst",
        "tls_cert_file",
        "tls_key_file",
        "source_token_grace_seconds",
        "source_rate_per_second",
    ];
    reader.reject_unknown("api", api, &keys);
    read_api_sources(reader, api, out);
    read_api_tls(reader, api, out);
    if let Some(v) = reader.string(api, "api", "listen") {
        match v.parse() {
            Ok(addr) => out.listen = addr,
            Err(_) => reader.problem("api.listen", "must be an IP address and port"),
        }
    }
    reader.int(
        api,
        "api",
        "connections_max",
        1,
        1_000_000,
        &mut out.connections_max,
    );
    reader.int(
        api,
        "api",
        "header_read_timeout_ms",
        100,
        300_000,
        &mut out.header_read_timeout_ms,
    );
    reader.int(
        api,
        "api",
        "body_read_timeout_ms",
        100,
        300_000,
        &mut out.body_read_timeout_ms,
    );
    reader.int(
        api,
        "api",
        "body_bytes_max",
        1 << 10,
        64 << 20,
        &mut out.body_bytes_max,
    );
    reader.int(
        api,
        "api",
        "token_rate_per_second",
        0,
        1_000_000,
        &mut out.token_rate_per_second,
    );
    reader.int(
        api,
        "api",
        "token_rate_burst",
        1,
        1_000_000,
        &mut out.token_rate_burst,
    );
}

fn read_api_tls(reader: &mut Reader, api: &toml::Table, out: &mut ApiConfig) {
    out.tls_cert_file = reader
        .string(api, "api", "tls_cert_file")
        .map(PathBuf::from);
    out.tls_key_file = reader.string(api, "api", "tls_key_file").map(PathBuf::from);
    if out.tls_cert_file.is_some() != out.tls_key_file.is_some() {
        reader.problem(
            "api.tls_cert_file",
            "tls_cert_file and tls_key_file go together",
        );
    }
}

/// The diagnostics keys: `[log] level` and `format`, or their older top-level spellings
/// `log_level` and `log_format` (one spelling per key).
fn read_logging(reader: &mut Reader, table: &toml::Table, config: &mut Config) {
    let section = reader.section(table, "log");
    if let Some(log) = section {
        reader.reject_unknown("log", log, &["level", "format"]);
    }
    for (older, newer) in [("log_level", "level"), ("log_format", "format")] {
        if table.contains_key(older) && section.is_some_and(|log| log.contains_key(newer)) {
            reader.problem(
                older,
                &format!("set either {older} or [log] {newer}, not both"),
            );
        }
    }
    // Problems are reported under the spelling the file used.
    let (level, level_key) = match section {
        Some(log) if log.contains_key("level") => (reader.string(log, "log", "level"), "log.level"),
        _ => (reader.string(table, "", "log_level"), "log_level"),
    };
    if let Some(v) = level {
        if !LOG_LEVELS.contains(&v.as_str()) {
            reader.problem(level_key, "must be one of error, warn, info, debug, trace");
        }
        config.log_level = v;
    }
    let (format, format_key) = match section {
        Some(log) if log.contains_key("format") => {
            (reader.string(log, "log", "format"), "log.format")
        }
        _ => (reader.string(table, "", "log_format"), "log_format"),
    };
    match format.as_deref() {
        None => {}
        Some("text") => config.log_format = LogFormat::Text,
        Some("json") => config.log_format = LogFormat::Json,
        Some(_) => reader.problem(format_key, "must be text or json"),
    }
}

/// `delivery.proxy` and `delivery.ca_file`.
fn read_egress(reader: &mut Reader, t: &toml::Table, out: &mut DeliveryConfig) {
    if let Some(proxy) = reader.string(t, "delivery", "proxy") {
        match proxy_address(&proxy) {
            Some(address) => out.proxy = Some(address),
            None => reader.problem(
                "delivery.proxy",
                "must be host:port or http://host:port (an HTTP proxy that tunnels with CONNECT)",
            ),
        }
    }
    out.ca_file = reader.string(t, "delivery", "ca_file").map(PathBuf::from);
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

fn read_metrics(reader: &mut Reader, metrics: &toml::Table, out: &mut MetricsConfig) {
    reader.reject_unknown("metrics", metrics, &["listen", "token_file"]);
    if let Some(v) = reader.string(metrics, "metrics", "listen") {
        match v.parse() {
            Ok(addr) => out.listen = Some(addr),
            Err(_) => reader.problem("metrics.listen", "must be an IP address and port"),
        }
    }
    out.token_file = reader
        .string(metrics, "metrics", "token_file")
        .map(PathBuf::from);
}

fn read_storage(reader: &mut Reader, storage: &toml::Table, out: &mut StorageConfig) {
    let keys = [
        "map_size_bytes",
        "intake_capacity",
        "ingest_guard_percent",
        "secrets_key_file",
        "seal_secrets",
        "disk_reserve_bytes",
        "retention_days",
    ];
    reader.int(
        storage,
        "storage",
        "retention_days",
        1,
        3_650,
        &mut out.retention_days,
    );
    reader.reject_unknown("storage", storage, &keys);
    out.secrets_key_file = reader
        .string(storage, "storage", "secrets_key_file")
        .map(PathBuf::from);
    if let Some(v) = storage.get("seal_secrets") {
        match v.as_bool() {
            Some(b) => out.seal_secrets = b,
            None => reader.problem("storage.seal_secrets", "must be true or false"),
        }
    }
    reader.int(
        storage,
        "storage",
        "disk_reserve_bytes",
        0,
        1 << 40,
        &mut out.disk_reserve_bytes,
    );
    reader.int(
        storage,
        "storage",
        "ingest_guard_percent",
        50,
        99,
        &mut out.ingest_guard_percent,
    );
    reader.int(
        storage,
        "storage",
        "map_size_bytes",
        1 << 20,
        16 << 40,
        &mut out.map_size_bytes,
    );
    reader.int(
        storage,
        "storage",
        "intake_capacity",
        16,
        1 << 20,
        &mut out.intake_capacity,
    );
}

fn read_delivery(reader: &mut Reader, t: &toml::Table, out: &mut DeliveryConfig) {
    let keys = [
        "attempt_timeout_ms",
        "connect_timeout_ms",
        "retry_schedule_ms",
        "jitter_percent",
        "retry_after_max_ms",
        "allow_http",
        "allowed_networks",
        "shards",
        "endpoint_in_flight_max",
        "disable_after_ms",
        "header_style",
        "proxy",
        "ca_file",
    ];
    const DAY_MS: i64 = 86_400_000;
    reader.reject_unknown("delivery", t, &keys);
    read_egress(reader, t, out);
    reader.int(
        t,
        "delivery",
        "attempt_timeout_ms",
        1_000,
        30_000,
        &mut out.attempt_timeout_ms,
    );
    reader.int(
        t,
        "delivery",
        "connect_timeout_ms",
        100,
        2_000,
        &mut out.connect_timeout_ms,
    );
    reader.int(
        t,
        "delivery",
        "jitter_percent",
        0,
        50,
        &mut out.jitter_percent,
    );
    reader.int(
        t,
        "delivery",
        "retry_after_max_ms",
        0,
        DAY_MS,
        &mut out.retry_after_max_ms,
    );
    reader.int(t, "delivery", "shards", 1, 64, &mut out.shards);
    reader.int(
        t,
        "delivery",
        "endpoint_in_flight_max",
        1,
        1_024,
        &mut out.endpoint_in_flight_max,
    );
    reader.int(
        t,
        "delivery",
        "disable_after_ms",
        0,
        30 * DAY_MS,
        &mut out.disable_after_ms,
    );
    read_lists(reader, t, out);
}

/// The non-integer keys of `[delivery]`.
fn read_lists(reader: &mut Reader, t: &toml::Table, out: &mut DeliveryConfig) {
    const DAY_MS: i64 = 86_400_000;
    if let Some(v) = t.get("allow_http") {
        match v.as_bool() {
            Some(b) => out.allow_http = b,
            None => reader.problem("delivery.allow_http", "must be true or false"),
        }
    }
    if let Some(v) = reader.string(t, "delivery", "header_style") {
        out.header_style = match v.as_str() {
            "webhook" => HeaderStyle::Webhook,
            "svix" => HeaderStyle::Svix,
            "both" => HeaderStyle::Both,
            _ => {
                reader.problem("delivery.header_style", "must be webhook, svix or both");
                out.header_style
            }
        };
    }
    if let Some(v) = t.get("retry_schedule_ms") {
        let delays: Option<Vec<u64>> = v.as_array().and_then(|items| {
            items
                .iter()
                .map(|i| i.as_integer().filter(|d| (0..=7 * DAY_MS).contains(d)))
                .map(|d| d.and_then(|d| u64::try_from(d).ok()))
                .collect()
        });
        match delays {
            Some(delays) if delays.len() <= 20 => out.retry_schedule_ms = delays,
            _ => reader.problem(
                "delivery.retry_schedule_ms",
                "must be a list of at most 20 delays, each 0 to 7 days in ms",
            ),
        }
    }
    if let Some(v) = t.get("allowed_networks") {
        let nets: Option<Vec<ipnet::IpNet>> = v.as_array().and_then(|items| {
            items
                .iter()
                .map(|i| i.as_str().and_then(|s| s.parse().ok()))
                .collect()
        });
        match nets {
            Some(nets) => out.allowed_networks = nets,
            None => reader.problem(
                "delivery.allowed_networks",
                "must be a list of CIDRs such as \"127.0.0.0/8\"",
            ),
        }
    }
}

/// Whether `name` is 1–`max` of `A-Z a-z 0-9 _ -` (safe in NATS subjects and KV keys).
fn is_token(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn read_cluster(reader: &mut Reader, t: &toml::Table) -> Option<ClusterConfig> {
    let keys = [
        "nats_urls",
        "node_id",
        "stream",
        "lease_ttl_ms",
        "user",
        "password",
        "nkey_seed_file",
        "creds_file",
    ];
    reader.reject_unknown("cluster", t, &keys);
    let mut out = ClusterConfig {
        nats_urls: Vec::new(),
        node_id: String::new(),
        stream: "SLUICE_OPS".to_owned(),
        lease_ttl_ms: 5_000,
        auth: NatsAuth::None,
    };
    let urls: Option<Vec<String>> = t.get("nats_urls").and_then(|v| {
        v.as_array()?
            .iter()
            .map(|u| u.as_str().filter(|u| is_nats_url(u)).map(str::to_owned))
            .collect()
    });
    match urls {
        Some(urls) if (1..=16).contains(&urls.len()) => out.nats_urls = urls,
        _ => reader.problem(
            "cluster.nats_urls",
            "must be a list of 1 to 16 NATS URLs such as \"nats://127.0.0.1:4222\"",
        ),
    }
    match reader.string(t, "cluster", "node_id") {
        Some(id) if is_token(&id, 64) => out.node_id = id,
        Some(_) => reader.problem("cluster.node_id", "must be 1-64 of A-Z a-z 0-9 _ -"),
        None => reader.problem("cluster.node_id", "is required"),
    }
    if let Some(stream) = reader.string(t, "cluster", "stream") {
        if is_token(&stream, 32) {
            out.stream = stream;
        } else {
            reader.problem("cluster.stream", "must be 1-32 of A-Z a-z 0-9 _ -");
        }
    }
    reader.int(
        t,
        "cluster",
        "lease_ttl_ms",
        1_000,
        60_000,
        &mut out.lease_ttl_ms,
    );
    out.auth = read_nats_auth(reader, t);
    Some(out)
}

/// `[cluster]`'s NATS credentials: at most one kind.
fn read_nats_auth(reader: &mut Reader, t: &toml::Table) -> NatsAuth {
    let user = reader.string(t, "cluster", "user");
    let password = reader.string(t, "cluster", "password");
    let nkey = reader.string(t, "cluster", "nkey_seed_file");
    let creds = reader.string(t, "cluster", "creds_file");
    let kinds = usize::from(user.is_some() || password.is_some())
        + usize::from(nkey.is_some())
        + usize::from(creds.is_some());
    if kinds > 1 {
        reader.problem(
            "cluster",
            "give one of user and password, nkey_seed_file or creds_file",
        );
    }
    match (user, password, nkey, creds) {
        (Some(user), Some(password), _, _) => NatsAuth::UserPassword { user, password },
        (Some(_), None, _, _) | (None, Some(_), _, _) => {
            reader.problem("cluster", "user and password go together");
            NatsAuth::None
        }
        (None, None, Some(seed), _) => NatsAuth::NkeySeedFile(PathBuf::from(seed)),
        (None, None, None, Some(creds)) => NatsAuth::CredsFile(PathBuf::from(creds)),
        (None, None, None, None) => NatsAuth::None,
    }
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

/// Walks a parsed TOML table and collects problems instead of stopping at the first.
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

    fn reject_unknown(&mut self, section: &str, table: &toml::Table, known: &[&str]) {
        for key in table.keys() {
            if !known.contains(&key.as_str()) {
                self.problem(&join(section, key), "unknown key");
            }
        }
    }

    fn section<'t>(&mut self, table: &'t toml::Table, name: &str) -> Option<&'t toml::Table> {
        match table.get(name)? {
            toml::Value::Table(t) => Some(t),
            _ => {
                self.problem(name, "must be a table");
                None
            }
        }
    }

    fn string(&mut self, table: &toml::Table, section: &str, key: &str) -> Option<String> {
        match table.get(key)? {
            toml::Value::String(s) => Some(s.clone()),
            _ => {
                self.problem(&join(section, key), "must be a string");
                None
            }
        }
    }

    fn int<T: TryFrom<i64> + Copy>(
        &mut self,
        table: &toml::Table,
        section: &str,
        key: &str,
        min: i64,
        max: i64,
        out: &mut T,
    ) {
        let Some(value) = table.get(key) else { return };
        let path = join(section, key);
        match value.as_integer() {
            Some(v) if (min..=max).contains(&v) => match T::try_from(v) {
                Ok(v) => *out = v,
                Err(_) => self.problem(&path, "is out of range for this machine"),
            },
            Some(_) => self.problem(&path, &format!("must be between {min} and {max}")),
            None => self.problem(&path, "must be an integer"),
        }
    }
}

fn join(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_owned()
    } else {
        format!("{section}.{key}")
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
        assert_eq!(KEYS.len(), 55, "KEYS lists every key");
    }

    #[test]
    fn reads_and_checks_the_portal_section() {
        let text = r##"
            [portal]
            display_name = "Acme webhooks"
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
        assert_eq!(config.portal.frame_ancestors.len(), 2);
        assert_eq!(config.portal.login_code_lifetime_seconds, 60);
        let bad = r##"
            [portal]
            display_name = ""
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
                    creds_file = \"c\"\nshard = 1\n";
        let problems = Config::parse(text).expect_err("invalid");
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "cluster.nats_urls",
            "cluster.node_id",
            "cluster.stream",
            "cluster.lease_ttl_ms",
            "cluster.shard",
            "cluster",
        ] {
            assert!(keys.contains(&key), "missing {key} in {problems:?}");
        }
        let missing = Config::parse("[cluster]\nnats_urls = [\"h:1\"]\n").expect_err("no id");
        assert_eq!(missing[0].key, "cluster.node_id");
    }
}
