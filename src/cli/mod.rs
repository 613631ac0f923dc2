//! The command line's work besides serving: loading and checking the config (with the
//! secrets key from systemd's credentials), and the tools that open the log, do one thing
//! and close it (`backup`, `rekey`, `token create|list|revoke`, `portal-link`).
//!
//! Exit status: 0 on success, 64 (EX_USAGE) for a bad config or command line, 1 for any
//! other failure.

pub mod args;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::clock::Clock;
use crate::clock::format_rfc3339;
use crate::config::Config;
use crate::log::ops::{Envelope, Op, Outcome};
use crate::log::schema::{TokenScope, token_id};
use crate::log::{Log, Upgrade, tables};

/// EX_USAGE: a bad config or command line, reported before any socket is bound.
pub const EXIT_USAGE: u8 = 64;

/// `serve` flags that override the config file (re-applied on every reload).
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<std::net::SocketAddr>,
    pub allow_http: bool,
    pub allow_networks: Vec<ipnet::IpNet>,
}

impl Overrides {
    pub fn apply(&self, config: &mut Config) {
        if let Some(dir) = &self.data_dir {
            config.data_dir.clone_from(dir);
        }
        if let Some(addr) = self.listen {
            config.api.listen = addr;
        }
        config.delivery.allow_http |= self.allow_http;
        config
            .delivery
            .allowed_networks
            .extend(self.allow_networks.iter().copied());
    }
}

/// Reads and validates a config file; `None` is the embedded default.
pub fn read_config(path: Option<&Path>) -> Result<Config, String> {
    let Some(path) = path else {
        let mut config = Config::embedded_default();
        use_secrets_credential(&mut config);
        return Ok(config);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut config = Config::parse(&text).map_err(|problems| {
        let mut report = format!("{} has {} problem(s):", path.display(), problems.len());
        for problem in problems {
            report.push_str(&format!("\n  {problem}"));
        }
        report
    })?;
    use_secrets_credential(&mut config);
    if let Some(problem) = config.cluster_problem() {
        return Err(format!("{}: {problem}", path.display()));
    }
    Ok(config)
}

/// Under systemd, `LoadCredential=secrets-key:…` provides the secrets key, and wins over
/// `storage.secrets_key_file`: the config names the key's file for the CLI in a root
/// shell, and the unit hands the same file to the service, which cannot read it there.
fn use_secrets_credential(config: &mut Config) {
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let credential = Path::new(&dir).join("secrets-key");
        if credential.exists() {
            config.storage.secrets_key_file = Some(credential);
        }
    }
}

/// The config of a command that works on a data directory (`--data-dir` wins).
pub fn load_for_tool(path: Option<&Path>, data_dir: Option<PathBuf>) -> Result<Config, ExitCode> {
    let mut config = load_config(path)?;
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    Ok(config)
}

pub fn load_config(path: Option<&Path>) -> Result<Config, ExitCode> {
    read_config(path).map_err(|report| {
        eprintln!("error: {report}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// Opens the log of `config` (no delivery, no API), runs `work` with a small runtime, then
/// closes the log and waits for the writer to commit: the frame of every CLI tool.
fn with_log<T>(
    config: &Config,
    work: impl FnOnce(&Log, &tokio::runtime::Runtime) -> Result<T, String>,
) -> Result<T, String> {
    let (log, writer) = Log::open(
        &config.data_dir,
        &config.storage,
        None,
        None,
        Upgrade::Refuse,
    )
    .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string());
    let result = runtime.and_then(|runtime| work(&log, &runtime));
    drop(log);
    writer.wait();
    result
}

/// A cluster node's log changes only by the op stream: a local change would make it
/// differ from the others for good.
fn refuse_in_cluster(config: &Config, tool: &str) -> Option<ExitCode> {
    config.cluster.as_ref()?;
    eprintln!(
        "error: {tool} changes one node's log only; in cluster mode every change goes \
         through the op stream (use the API: any node)"
    );
    Some(ExitCode::from(EXIT_USAGE))
}

/// Prints the cluster's state as NATS holds it (`sluice cluster status`).
pub fn cluster_status(config: &Config) -> ExitCode {
    let Some(cluster) = &config.cluster else {
        eprintln!("error: cluster status needs a config with a [cluster] section");
        return ExitCode::from(EXIT_USAGE);
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime
                .block_on(crate::cluster::status(cluster))
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(lines) => {
            #[expect(clippy::print_stdout, reason = "the status is the command's output")]
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: cluster status failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// With the node stopped: applies the op stream to the end, then prints `applied_seq`
/// and every table's SHA-256 (hex), one per line.
pub fn cluster_verify(config: &Config) -> ExitCode {
    let Some(cluster) = &config.cluster else {
        eprintln!("error: cluster verify needs a config with a [cluster] section");
        return ExitCode::from(EXIT_USAGE);
    };
    let opened = Log::open(
        &config.data_dir,
        &config.storage,
        Some(crate::api::render_reply),
        None,
        Upgrade::Refuse,
    );
    let (log, writer) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime
                .block_on(crate::cluster::catch_up(cluster, &log))
                .map_err(|e| e.to_string())
        })
        .and_then(|applied| {
            let digests = log.table_digests().map_err(|e| e.to_string())?;
            Ok((applied, digests))
        });
    drop(log);
    writer.wait();
    match result {
        Ok((applied, digests)) => {
            #[expect(clippy::print_stdout, reason = "the digests are the command's output")]
            {
                println!("applied_seq {applied}");
                for (table, digest) in digests {
                    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                    println!("{table} {hex}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: cluster verify failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Asks one running node of the cluster to write a snapshot now, and prints it.
pub fn cluster_snapshot(config: &Config) -> ExitCode {
    let Some(cluster) = &config.cluster else {
        eprintln!("error: cluster snapshot needs a config with a [cluster] section");
        return ExitCode::from(EXIT_USAGE);
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime
                .block_on(crate::cluster::snapshot::request(cluster))
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(taken) => {
            #[expect(clippy::print_stdout, reason = "the snapshot is the command's output")]
            {
                println!(
                    "snapshot {}: applied_seq {}, {} bytes, written by node {}",
                    taken.name, taken.applied_seq, taken.bytes, taken.node_id
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: cluster snapshot failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Re-seals the endpoint secrets under the key in `new_key_file` (Sluice stopped).
pub fn rekey(config: &Config, new_key_file: &Path) -> ExitCode {
    if let Some(refused) = refuse_in_cluster(config, "rekey") {
        return refused;
    }
    let result = crate::log::seal::Sealer::from_key_file(new_key_file)
        .and_then(|new| crate::log::reseal_secrets(&config.data_dir, &config.storage, &new));
    match result {
        Ok(count) => {
            eprintln!(
                "rekey: {count} endpoint(s) re-sealed; set storage.secrets_key_file to {}",
                new_key_file.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: rekey failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Takes an online, compacted copy of the log into `to` (a new or empty directory).
pub fn backup(config: &Config, to: &Path) -> ExitCode {
    match with_log(config, |log, _| {
        let bytes = log.backup_to(to).map_err(|e| e.to_string())?;
        Ok((bytes, log.secrets_key_file().map(Path::to_path_buf)))
    }) {
        Ok((bytes, key)) => {
            eprintln!("backup: {} ({bytes} bytes)", to.display());
            if let Some(key) = key {
                eprintln!(
                    "backup: the secrets in it are sealed with the key in {}, which the backup \
                     does not contain; keep a copy of that key to restore it (put it in the \
                     restored data directory as {}, or name it in storage.secrets_key_file)",
                    key.display(),
                    crate::log::DEFAULT_SECRETS_KEY_FILE
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: backup failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Creates a token (org-wide, or scoped to the application `app`) and prints it once.
pub fn create_token(
    config: &Config,
    app: Option<&str>,
    name: &str,
    expires_at: Option<&str>,
) -> ExitCode {
    if let Some(refused) = refuse_in_cluster(config, "token create") {
        return refused;
    }
    let expires_ms = match expires_at.map(|at| (at, crate::clock::parse_rfc3339(at))) {
        None => None,
        Some((_, Some(ms))) => Some(ms),
        Some((at, None)) => {
            eprintln!("error: --expires-at {at:?} is not an RFC 3339 time");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = with_log(config, |log, runtime| {
        let scope = match app {
            None => TokenScope::Org,
            Some(reference) => {
                let found = log
                    .read(|rtxn, dbs| tables::app_by_ref(rtxn, dbs, reference))
                    .map_err(|e| e.to_string())?;
                TokenScope::App(
                    found
                        .ok_or_else(|| format!("no application {reference}"))?
                        .key,
                )
            }
        };
        runtime
            .block_on(crate::app::create_token_with(
                log,
                &Clock::System,
                scope,
                name.to_owned(),
                expires_ms,
            ))
            .map_err(|e| e.to_string())?
            .map_err(|refusal| format!("the log refused the token: {refusal:?}"))
    });
    match result {
        Ok(token) => {
            #[expect(clippy::print_stdout, reason = "the token is the command's output")]
            {
                println!("{token}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints every token: id, name, scope, creation, expiry and last use.
pub fn list_tokens(config: &Config) -> ExitCode {
    let result = with_log(config, |log, _| {
        log.read(|rtxn, dbs| {
            let mut rows = Vec::new();
            for (hash, record) in tables::tokens(rtxn, dbs)? {
                let scope = match record.scope {
                    TokenScope::Org => "org".to_owned(),
                    TokenScope::Poller { .. } => "poller".to_owned(),
                    TokenScope::App(key) => tables::app_by_key(rtxn, dbs, key)?
                        .map_or_else(|| "deleted-app".to_owned(), |app| app.id),
                };
                let time = |ms: Option<u64>| ms.map_or_else(|| "-".to_owned(), format_rfc3339);
                rows.push(format!(
                    "{}\t{}\t{scope}\t{}\t{}\t{}",
                    token_id(&hash),
                    if record.name.is_empty() {
                        "-"
                    } else {
                        &record.name
                    },
                    format_rfc3339(record.created_ms),
                    time(record.expires_ms),
                    time(record.last_used_ms),
                ));
            }
            Ok(rows)
        })
        .map_err(|e| e.to_string())
    });
    match result {
        Ok(rows) => {
            #[expect(clippy::print_stdout, reason = "the list is the command's output")]
            {
                println!("ID\tNAME\tSCOPE\tCREATED\tEXPIRES\tLAST USED");
                for row in rows {
                    println!("{row}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Revokes the token named by `which`: its id, a unique prefix of its id, or the token.
pub fn revoke_token(config: &Config, which: &str) -> ExitCode {
    let result = with_log(config, |log, runtime| {
        let hash = if which.starts_with("sk_") {
            crate::api::hash_token(which)
        } else {
            let found = log
                .read(|rtxn, dbs| tables::tokens_by_id_prefix(rtxn, dbs, which))
                .map_err(|e| e.to_string())?;
            match found.as_slice() {
                [(hash, _)] => *hash,
                [] => return Err(format!("no token {which}")),
                _ => {
                    return Err(format!(
                        "{which} names {} tokens; give more of the id",
                        found.len()
                    ));
                }
            }
        };
        let op = Op::RevokeApiToken { hash };
        match runtime
            .block_on(log.submit(Envelope::new(op, Clock::System.now_ms())))
            .map_err(|e| e.to_string())?
        {
            Outcome::Refused(_) => Err(format!("no token {which}")),
            _ => Ok(token_id(&hash)),
        }
    });
    match result {
        Ok(id) => {
            eprintln!("revoked {id}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints an operator's link into the portal (`sluice portal-link`): single use, alive
/// `portal.login_code_lifetime_seconds`, opening a session that sees every application.
/// The link is on `portal.public_url`, else on `api.listen` (`https` with `api.tls_*`).
pub fn portal_link(config: &Config) -> ExitCode {
    if let Some(refused) = refuse_in_cluster(config, "portal-link") {
        return refused;
    }
    let result = with_log(config, |log, runtime| {
        let now_ms = Clock::System.now_ms();
        let (code, op) = crate::api::portal_access::operator_access(
            now_ms,
            config.portal.login_code_lifetime_seconds,
            None,
        );
        match runtime
            .block_on(log.submit(Envelope::new(op, now_ms)))
            .map_err(|e| e.to_string())?
        {
            Outcome::Refused(refusal) => Err(format!("the log refused the link: {refusal:?}")),
            _ => Ok(code),
        }
    });
    let base = config.portal.public_url.clone().unwrap_or_else(|| {
        let scheme = if config.api.tls_cert_file.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", config.api.listen)
    });
    match result {
        Ok(code) => {
            #[expect(clippy::print_stdout, reason = "the link is the command's output")]
            {
                println!("{}", crate::api::portal_access::operator_link(&base, &code));
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
