//! The `sluice` command: parse the command line, load the config, run.
//!
//! Exit status: 0 on a clean stop, 64 (EX_USAGE) for a bad config or command line before
//! any socket is bound, 1 for any other failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::time::Duration;

use clap::{Parser, Subcommand};
use mimalloc::MiMalloc;
use sluice::clock::Clock;
use sluice::config::{Config, LogFormat};
use sluice::log::schema::TokenScope;
use sluice::log::{Log, tables};
use sluice::service;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Layer, Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, fmt, reload};

/// See Cargo.toml: measured cheaper than glibc malloc on the hot paths.
#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A self-hosted webhook delivery appliance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (with no --config, the embedded default).
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides `data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Overrides `api.listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Allows `http://` endpoints (sets `delivery.allow_http`), for local use.
        #[arg(long)]
        allow_http: bool,
        /// Allows deliveries to this non-public network too (adds to
        /// `delivery.allowed_networks`); repeatable, e.g. `--allow-network 127.0.0.0/8`.
        #[arg(long = "allow-network", value_name = "CIDR")]
        allow_networks: Vec<ipnet::IpNet>,
    },
    /// Validate a config file and print every problem in it.
    CheckConfig { file: PathBuf },
    /// Re-seal the endpoint secrets with a new key (run while Sluice is stopped; then
    /// point `storage.secrets_key_file` at the new key).
    Rekey {
        /// The file with the new 32-byte key (raw, hex or base64).
        #[arg(long)]
        new_key_file: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Copy the log, online and compacted, into a new directory that `serve --data-dir`
    /// opens as it is.
    Backup {
        /// The directory to write (created; must not hold a log already).
        #[arg(long)]
        to: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (it is stored hashed and cannot be shown again).
    Create {
        /// Scope the token to one application (id or uid); default: org-wide.
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match load_config(Some(&file)) {
            Ok(_) => {
                eprintln!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Serve {
            config,
            data_dir,
            listen,
            allow_http,
            allow_networks,
        } => {
            let overrides = Overrides {
                data_dir,
                listen,
                allow_http,
                allow_networks,
            };
            let mut loaded = match load_config(config.as_deref()) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            overrides.apply(&mut loaded);
            serve(&loaded, config, &overrides)
        }
        Command::Backup {
            to,
            config,
            data_dir,
        } => match load_for_tool(config.as_deref(), data_dir) {
            Ok(loaded) => backup(&loaded, &to),
            Err(code) => code,
        },
        Command::Rekey {
            new_key_file,
            config,
            data_dir,
        } => match load_for_tool(config.as_deref(), data_dir) {
            Ok(loaded) => rekey(&loaded, &new_key_file),
            Err(code) => code,
        },
        Command::Token {
            command:
                TokenCommand::Create {
                    app,
                    config,
                    data_dir,
                },
        } => match load_for_tool(config.as_deref(), data_dir) {
            Ok(loaded) => create_token(&loaded, app.as_deref()),
            Err(code) => code,
        },
    }
}

/// `serve` flags that override the config file (re-applied on every reload).
struct Overrides {
    data_dir: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    allow_http: bool,
    allow_networks: Vec<ipnet::IpNet>,
}

impl Overrides {
    fn apply(&self, config: &mut Config) {
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
fn read_config(path: Option<&Path>) -> Result<Config, String> {
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
    Ok(config)
}

/// Under systemd, `LoadCredential=secrets-key:…` provides the secrets key when the config
/// names no file.
fn use_secrets_credential(config: &mut Config) {
    if config.storage.secrets_key_file.is_some() {
        return;
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let credential = Path::new(&dir).join("secrets-key");
        if credential.exists() {
            config.storage.secrets_key_file = Some(credential);
        }
    }
}

/// The config of a command that works on a data directory (`--data-dir` wins).
fn load_for_tool(path: Option<&Path>, data_dir: Option<PathBuf>) -> Result<Config, ExitCode> {
    let mut config = load_config(path)?;
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    Ok(config)
}

fn load_config(path: Option<&Path>) -> Result<Config, ExitCode> {
    read_config(path).map_err(|report| {
        eprintln!("error: {report}");
        ExitCode::from(EXIT_USAGE)
    })
}

type Filtered = Layered<reload::Layer<LevelFilter, Registry>, Registry>;

/// Changes the log level of the running subscriber.
struct Logging(reload::Handle<LevelFilter, Registry>);

impl Logging {
    fn set_level(&self, level: &str) {
        let level = level.parse().unwrap_or(LevelFilter::INFO);
        if let Err(error) = self.0.modify(|filter| *filter = level) {
            tracing::warn!(%error, "Cannot change the log level.");
        }
    }
}

/// Diagnostics to stderr as text (colour on a terminal) or JSON; to the journal, with
/// structured fields, when systemd connected stderr to it (`JOURNAL_STREAM`).
fn init_tracing(config: &Config) -> Logging {
    let level = config.log_level.parse().unwrap_or(LevelFilter::INFO);
    let (filter, handle) = reload::Layer::new(level);
    let journal =
        std::env::var_os("JOURNAL_STREAM").is_some() && config.log_format == LogFormat::Text;
    let output: Box<dyn Layer<Filtered> + Send + Sync> = match config.log_format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_target(false)
            .boxed(),
        LogFormat::Text => match tracing_journald::layer().ok().filter(|_| journal) {
            Some(layer) => layer.with_syslog_identifier("sluice".to_owned()).boxed(),
            None => fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false)
                .boxed(),
        },
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .init();
    Logging(handle)
}

fn serve(config: &Config, path: Option<PathBuf>, overrides: &Overrides) -> ExitCode {
    let logging = init_tracing(config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let admin_token = std::env::var("SLUICE_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let code = runtime.block_on(async {
        let running = match sluice::app::start(config, admin_token.as_deref(), Clock::System).await
        {
            Ok(running) => running,
            Err(error) => {
                tracing::error!(%error, "Sluice could not start.");
                return ExitCode::FAILURE;
            }
        };
        if let Some(token) = &running.first_admin_token {
            // Shown once: only its hash is stored.
            #[expect(
                clippy::print_stdout,
                reason = "the one-time token is the command's output"
            )]
            {
                println!("Created an admin token (shown only this once): {token}");
                println!("API listening on http://{}", running.addr);
            }
        }
        let status = format!("Serving on {}", running.addr);
        service::ready(&status);
        let watchdog = service::watchdog_interval()
            .map(|interval| tokio::spawn(service::watchdog(interval, running.liveness())));
        let drain = Duration::from_millis(config.drain_timeout_ms);
        run_until_stopped(&running, path.as_deref(), overrides, &logging, &status).await;
        service::stopping();
        tracing::info!("Stopping: finishing requests and attempts in progress.");
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        match tokio::time::timeout(drain, running.stop()).await {
            Ok(()) => {
                tracing::info!("Stopped.");
                ExitCode::SUCCESS
            }
            Err(_) => {
                tracing::error!(
                    drain_ms = drain.as_millis(),
                    "The drain deadline passed; exiting with work in flight (it is retried on the next start)."
                );
                ExitCode::FAILURE
            }
        }
    });
    // Blocking tasks still running after a missed deadline must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// Handles signals until SIGTERM or SIGINT: SIGHUP reloads the config file.
async fn run_until_stopped(
    running: &sluice::app::Running,
    path: Option<&Path>,
    overrides: &Overrides,
    logging: &Logging,
    status: &str,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined2()),
    );
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr2)) = signals else {
        tracing::error!("Cannot install signal handlers; stop with SIGKILL.");
        std::future::pending::<()>().await;
        return;
    };
    let test_hooks = std::env::var("SLUICE_TEST_HOOKS").is_ok_and(|v| v == "1");
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                service::reloading();
                reload(running, path, overrides, logging);
                service::ready(status);
            }
            _ = usr2.recv() => if test_hooks {
                // Test hook: wedge the writer thread, as a deadlock would.
                tracing::warn!("SLUICE_TEST_HOOKS: wedging the writer thread.");
                let _ = running.log().wedge_writer();
            },
        }
    }
}

/// Re-reads the config file and applies it; an invalid file changes nothing.
fn reload(
    running: &sluice::app::Running,
    path: Option<&Path>,
    overrides: &Overrides,
    logging: &Logging,
) {
    let Some(path) = path else {
        tracing::warn!(
            "SIGHUP: there is no config file to re-read (the embedded default is in use)."
        );
        return;
    };
    match read_config(Some(path)) {
        Err(report) => {
            tracing::error!(%report, "SIGHUP: the config was not reloaded; the running config stays.")
        }
        Ok(mut config) => {
            overrides.apply(&mut config);
            let restart = match running.reload(&config) {
                Ok(restart) => restart,
                Err(error) => {
                    tracing::error!(%error, "SIGHUP: the config was not reloaded; the running config stays.");
                    return;
                }
            };
            logging.set_level(&config.log_level);
            if !restart.is_empty() {
                tracing::warn!(keys = ?restart, "SIGHUP: these keys change only on restart; they keep their running values.");
            }
            tracing::info!(file = %path.display(), "SIGHUP: config reloaded.");
        }
    }
}

/// Re-seals the endpoint secrets under the key in `new_key_file`.
fn rekey(config: &Config, new_key_file: &Path) -> ExitCode {
    let result = (|| -> Result<usize, String> {
        let new =
            sluice::log::seal::Sealer::from_key_file(new_key_file).map_err(|e| e.to_string())?;
        sluice::log::reseal_secrets(&config.data_dir, &config.storage, &new)
            .map_err(|e| e.to_string())
    })();
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
fn backup(config: &Config, to: &Path) -> ExitCode {
    let result = (|| -> Result<u64, String> {
        let (log, writer) =
            Log::open(&config.data_dir, &config.storage, None, None).map_err(|e| e.to_string())?;
        let copied = log.backup_to(to).map_err(|e| e.to_string());
        drop(log);
        writer.wait();
        copied
    })();
    match result {
        Ok(bytes) => {
            eprintln!("backup: {} ({bytes} bytes)", to.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: backup failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn create_token(config: &Config, app: Option<&str>) -> ExitCode {
    let clock = Clock::System;
    let result = (|| -> Result<String, String> {
        let (log, writer) =
            Log::open(&config.data_dir, &config.storage, None, None).map_err(|e| e.to_string())?;
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
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| e.to_string())?;
        let token = runtime
            .block_on(sluice::app::create_token(&log, &clock, scope))
            .map_err(|e| e.to_string())?;
        drop(log);
        writer.wait();
        Ok(token)
    })();
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
