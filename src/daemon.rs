//! The serving process around `app::start`: diagnostics (text, JSON or the journal, with
//! a level SIGHUP can change), the runtime, systemd readiness and watchdog, the signal
//! loop (TERM/INT drain, HUP reload) and the bounded drain on the way out.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Layer, Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, fmt, reload};

use crate::cli::{Overrides, read_config};
use crate::clock::Clock;
use crate::config::{Config, LogFormat};
use crate::limits::OPEN_FILES_SOFT_MAX;
use crate::service;

type Filtered = Layered<reload::Layer<LevelFilter, Registry>, Registry>;

/// Changes the log level of the running subscriber.
struct Logging(reload::Handle<LevelFilter, Registry>);

/// The level diagnostics are filtered at: `SLUICE_LOG` (error … trace) when set and
/// valid, which wins over the config for the life of the process; else `[log] level`.
fn effective_level(configured: &str) -> String {
    std::env::var("SLUICE_LOG")
        .ok()
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| ["error", "warn", "info", "debug", "trace"].contains(&v.as_str()))
        .unwrap_or_else(|| configured.to_owned())
}

impl Logging {
    fn set_level(&self, level: &str) {
        let level = effective_level(level).parse().unwrap_or(LevelFilter::INFO);
        if let Err(error) = self.0.modify(|filter| *filter = level) {
            tracing::warn!(%error, "Cannot change the log level.");
        }
    }
}

/// Diagnostics to stderr as text (colour on a terminal) or JSON; to the journal, with
/// structured fields, when systemd connected stderr to it (`JOURNAL_STREAM`).
fn init_tracing(config: &Config) -> Logging {
    let level = effective_level(&config.log_level)
        .parse()
        .unwrap_or(LevelFilter::INFO);
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

pub fn serve(config: &Config, path: Option<PathBuf>, overrides: &Overrides) -> ExitCode {
    let logging = init_tracing(config);
    raise_open_files_limit();
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
        // Installed before anything starts: a SIGTERM or SIGHUP that arrives while Sluice
        // starts must not meet the default action (which ends the process at once, or
        // for HUP ends it instead of reloading).
        let Some(mut signals) = Signals::install() else {
            tracing::error!("Cannot install signal handlers.");
            return ExitCode::FAILURE;
        };
        let started = tokio::select! {
            started = crate::app::start(config, admin_token.as_deref(), Clock::System) => started,
            () = signals.stop() => {
                tracing::info!("Stopped while starting.");
                return ExitCode::SUCCESS;
            }
        };
        let running = match started {
            Ok(running) => running,
            Err(error) => {
                tracing::error!(%error, "Sluice could not start.");
                return match error {
                    crate::app::StartError::AdminTokenTooShort { .. } => {
                        ExitCode::from(crate::cli::EXIT_USAGE)
                    }
                    _ => ExitCode::FAILURE,
                };
            }
        };
        announce_first_token(&running);
        let status = format!("Serving on {}", running.addr);
        service::ready(&status);
        let watchdog = service::watchdog_interval()
            .map(|interval| tokio::spawn(service::watchdog(interval, running.liveness())));
        let drain = Duration::from_millis(config.drain_timeout_ms);
        run_until_stopped(
            &running,
            &mut signals,
            path.as_deref(),
            overrides,
            &logging,
            &status,
        )
        .await;
        service::stopping();
        tracing::info!("Stopping: finishing requests and attempts in progress.");
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        drain_or_exit(running, drain, &mut signals).await
    });
    // Blocking tasks still running after a missed deadline must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// The soft limit on open files to set, given the present (soft, hard) limits (`None`:
/// unlimited): the hard one (at most `OPEN_FILES_SOFT_MAX`), or nothing if the soft one
/// is already there.
fn raised_open_files(soft: Option<u64>, hard: Option<u64>) -> Option<u64> {
    let wanted = hard.map_or(OPEN_FILES_SOFT_MAX, |hard| hard.min(OPEN_FILES_SOFT_MAX));
    match soft {
        Some(soft) if soft < wanted => Some(wanted),
        _ => None,
    }
}

/// Raises the soft limit on open files to the hard one, as a server should: the soft
/// limit a shell gives (1,024 on most Linux systems) is below what the delivery pool
/// (up to `POOL_IDLE_PER_HOST_MAX` idle connections per destination, and every attempt
/// in flight), the API's connections and LMDB need together. Under systemd the unit's
/// `LimitNOFILE` sets both.
fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let present = getrlimit(Resource::Nofile);
    let Some(raised) = raised_open_files(present.current, present.maximum) else {
        return;
    };
    let limit = Rlimit {
        current: Some(raised),
        maximum: present.maximum,
    };
    match setrlimit(Resource::Nofile, limit) {
        Ok(()) => tracing::info!(
            from = present.current,
            to = raised,
            "Raised the soft limit on open files."
        ),
        Err(error) => tracing::warn!(
            %error,
            soft = present.current,
            "Cannot raise the soft limit on open files; busy delivery may run out of them."
        ),
    }
}

/// The admin token made on a first start: where it is (and it, on a terminal).
fn announce_first_token(running: &crate::app::Running) {
    if let Some((token, file)) = &running.first_admin_token {
        // Only its hash is in the log; the token itself is in a 0600 file, and on the
        // terminal when there is one (never in a journal or a log collector).
        let shown = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            format!("{token} (also in {})", file.display())
        } else {
            format!("written to {} (mode 0600)", file.display())
        };
        #[expect(
            clippy::print_stdout,
            reason = "where the one-time token is, is the command's output"
        )]
        {
            println!("Created an admin token: {shown}");
            println!("API listening on http://{}", running.addr);
        }
    }
}

/// Stops `running` within `drain`. A second SIGTERM or SIGINT during the drain means
/// "now": an operator pressing Ctrl-C twice, or a supervisor that will not wait. What is
/// in flight is made again on the next start (at-least-once).
async fn drain_or_exit(
    running: crate::app::Running,
    drain: Duration,
    signals: &mut Signals,
) -> ExitCode {
    tokio::select! {
        drained = tokio::time::timeout(drain, running.stop()) => match drained {
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
        },
        () = signals.stop() => {
            tracing::warn!("A second stop signal: exiting now, with work in flight (it is retried on the next start).");
            ExitCode::FAILURE
        }
    }
}

/// The signals the serving process handles, installed once, before it starts.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    /// `None` if the handlers cannot be installed.
    fn install() -> Option<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Some(Signals {
            term: signal(SignalKind::terminate()).ok()?,
            int: signal(SignalKind::interrupt()).ok()?,
            hup: signal(SignalKind::hangup()).ok()?,
            usr2: signal(SignalKind::user_defined2()).ok()?,
        })
    }

    /// Resolves on the next SIGTERM or SIGINT.
    async fn stop(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Handles signals until SIGTERM or SIGINT: SIGHUP reloads the config file.
async fn run_until_stopped(
    running: &crate::app::Running,
    signals: &mut Signals,
    path: Option<&Path>,
    overrides: &Overrides,
    logging: &Logging,
    status: &str,
) {
    let test_hooks = std::env::var("SLUICE_TEST_HOOKS").is_ok_and(|v| v == "1");
    loop {
        tokio::select! {
            _ = signals.term.recv() => return,
            _ = signals.int.recv() => return,
            _ = signals.hup.recv() => {
                service::reloading();
                reload(running, path, overrides, logging);
                service::ready(status);
            }
            _ = signals.usr2.recv() => if test_hooks {
                wedge_writer(running);
            },
        }
    }
}

/// Test hook (`SLUICE_TEST_HOOKS=1`, SIGUSR2): wedges the writer thread, as a deadlock
/// would, so the watchdog test can watch the pings stop. Compiled into debug builds only:
/// a release binary has no way to wedge itself.
#[cfg(debug_assertions)]
fn wedge_writer(running: &crate::app::Running) {
    tracing::warn!("SLUICE_TEST_HOOKS: wedging the writer thread.");
    let _ = running.log().wedge_writer();
}

#[cfg(not(debug_assertions))]
fn wedge_writer(_: &crate::app::Running) {
    tracing::warn!("SLUICE_TEST_HOOKS: a release build has no test hooks; SIGUSR2 ignored.");
}

/// Re-reads the config file and applies it; an invalid file changes nothing.
fn reload(
    running: &crate::app::Running,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_files_limit_rises_to_the_hard_one_and_never_falls() {
        assert_eq!(raised_open_files(Some(1_024), Some(524_288)), Some(524_288));
        // An unlimited hard limit: Linux's own ceiling.
        assert_eq!(
            raised_open_files(Some(1_024), None),
            Some(OPEN_FILES_SOFT_MAX)
        );
        // A hard limit above the ceiling: the ceiling.
        assert_eq!(
            raised_open_files(Some(1_024), Some(OPEN_FILES_SOFT_MAX * 4)),
            Some(OPEN_FILES_SOFT_MAX)
        );
        // Already there, or above what Sluice would choose (an operator's choice): kept.
        assert_eq!(raised_open_files(Some(65_536), Some(65_536)), None);
        assert_eq!(raised_open_files(None, None), None);
        assert_eq!(
            raised_open_files(Some(OPEN_FILES_SOFT_MAX * 2), Some(OPEN_FILES_SOFT_MAX * 4)),
            None
        );
    }
}
