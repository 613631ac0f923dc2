//! The `sluice` command: parse the command line, load the config, run.
//!
//! Exit status: 0 on a clean stop, 64 (EX_USAGE) for a bad config or command line before
//! any socket is bound, 1 for any other failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::clock::Clock;
use sluice::config::Config;
use sluice::log::schema::TokenScope;
use sluice::log::{Log, tables};

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
            let mut config = match load_config(config.as_deref()) {
                Ok(config) => config,
                Err(code) => return code,
            };
            if let Some(dir) = data_dir {
                config.data_dir = dir;
            }
            if let Some(addr) = listen {
                config.api.listen = addr;
            }
            config.delivery.allow_http |= allow_http;
            config.delivery.allowed_networks.extend(allow_networks);
            serve(&config)
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    app,
                    config,
                    data_dir,
                },
        } => {
            let mut config = match load_config(config.as_deref()) {
                Ok(config) => config,
                Err(code) => return code,
            };
            if let Some(dir) = data_dir {
                config.data_dir = dir;
            }
            create_token(&config, app.as_deref())
        }
    }
}

fn load_config(path: Option<&Path>) -> Result<Config, ExitCode> {
    let Some(path) = path else {
        return Ok(Config::embedded_default());
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("error: cannot read {}: {e}", path.display());
        ExitCode::from(EXIT_USAGE)
    })?;
    Config::parse(&text).map_err(|problems| {
        eprintln!(
            "error: {} has {} problem(s):",
            path.display(),
            problems.len()
        );
        for problem in problems {
            eprintln!("  {problem}");
        }
        ExitCode::from(EXIT_USAGE)
    })
}

fn init_tracing(level: &str) {
    let level = level.parse().unwrap_or(tracing::Level::INFO);
    // Colour only on a terminal: journald and pipes get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}

fn serve(config: &Config) -> ExitCode {
    init_tracing(&config.log_level);
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
    runtime.block_on(async {
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
        wait_for_stop_signal().await;
        tracing::info!("Stopping: finishing requests in progress.");
        running.stop().await;
        tracing::info!("Stopped.");
        ExitCode::SUCCESS
    })
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still stops on SIGTERM's default action.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn create_token(config: &Config, app: Option<&str>) -> ExitCode {
    let clock = Clock::System;
    let result = (|| -> Result<String, String> {
        let (log, writer) = Log::open(&config.data_dir, &config.storage, clock.clone(), None)
            .map_err(|e| e.to_string())?;
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
