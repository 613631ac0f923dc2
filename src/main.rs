//! The `sluice` command: parse the command line, load the config, run.
//!
//! Exit status: 0 on a clean stop, 64 (EX_USAGE) for a bad config or command line before
//! any socket is bound, 1 for any other failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mimalloc::MiMalloc;
use sluice::cli::args::{Cli, ClusterCommand, Command, TokenCommand, generate_assets};
use sluice::cli::{
    Overrides, backup, create_token, list_tokens, load_config, load_for_tool, portal_link, rekey,
    revoke_token,
};
use sluice::daemon::serve;

/// See Cargo.toml: measured cheaper than glibc malloc on the hot paths.
#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

/// A tool's runner: config file, data directory, then the work on the loaded config.
type Tool<'a> = &'a dyn Fn(
    Option<PathBuf>,
    Option<PathBuf>,
    &dyn Fn(&sluice::config::Config) -> ExitCode,
) -> ExitCode;

/// The `token` subcommands.
fn token(command: TokenCommand, tool: Tool<'_>) -> ExitCode {
    match command {
        TokenCommand::Create {
            app,
            name,
            expires_at,
            config,
            data_dir,
        } => tool(config, data_dir, &|c| {
            create_token(c, app.as_deref(), &name, expires_at.as_deref())
        }),
        TokenCommand::List { config, data_dir } => tool(config, data_dir, &list_tokens),
        TokenCommand::Revoke {
            token,
            config,
            data_dir,
        } => tool(config, data_dir, &|c| revoke_token(c, &token)),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A tool's config: the file (or the embedded default) with `--data-dir` on top.
    let tool =
        |config: Option<PathBuf>, data_dir, run: &dyn Fn(&sluice::config::Config) -> ExitCode| {
            load_for_tool(config.as_deref(), data_dir).map_or_else(|code| code, |c| run(&c))
        };
    match cli.command {
        Command::CheckConfig { file } => load_config(Some(&file)).map_or_else(
            |code| code,
            |_| {
                eprintln!("{}: ok", file.display());
                ExitCode::SUCCESS
            },
        ),
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
            match load_config(config.as_deref()) {
                Ok(mut loaded) => {
                    overrides.apply(&mut loaded);
                    serve(&loaded, config, &overrides)
                }
                Err(code) => code,
            }
        }
        Command::Backup {
            to,
            config,
            data_dir,
        } => tool(config, data_dir, &|c| backup(c, &to)),
        Command::Rekey {
            new_key_file,
            config,
            data_dir,
        } => tool(config, data_dir, &|c| rekey(c, &new_key_file)),
        Command::Cluster {
            command: ClusterCommand::Verify { config, data_dir },
        } => tool(Some(config), data_dir, &sluice::cli::cluster_verify),
        Command::Cluster {
            command: ClusterCommand::Status { config },
        } => tool(Some(config), None, &sluice::cli::cluster_status),
        Command::Cluster {
            command: ClusterCommand::Snapshot { config },
        } => tool(Some(config), None, &sluice::cli::cluster_snapshot),
        Command::GenerateAssets { out } => match generate_assets(&out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!(
                    "error: cannot write the assets into {}: {error}",
                    out.display()
                );
                ExitCode::FAILURE
            }
        },
        Command::Token { command } => token(command, &tool),
        Command::PortalLink { config, data_dir } => tool(config, data_dir, &portal_link),
    }
}
