//! The `sluice` command line: its subcommands and options (clap), and the man pages and
//! shell completions made from them. `main.rs` parses it and runs what it names.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A self-hosted webhook delivery appliance"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon (with no --config, the embedded default).
    Serve {
        /// The config file (default: the embedded default; the secrets key comes from
        /// `storage.secrets_key_file` in it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory (overrides `data_dir` of the config).
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
        /// The config file (default: the embedded default; the secrets key comes from
        /// `storage.secrets_key_file` in it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory (overrides `data_dir` of the config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Copy the log, online and compacted, into a new directory that `serve --data-dir`
    /// opens as it is.
    Backup {
        /// The directory to write (created; must not hold a log already).
        #[arg(long)]
        to: PathBuf,
        /// The config file (default: the embedded default; the secrets key comes from
        /// `storage.secrets_key_file` in it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory (overrides `data_dir` of the config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Cluster mode's tools (the config must have a `[cluster]` section).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print an operator's link into the tenant portal: single use, short-lived, opening
    /// a session that lists every application with its endpoints' health and opens any
    /// application's pages.
    PortalLink {
        /// The config file (default: the embedded default).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory (overrides `data_dir` of the config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Write the man pages and shell completions into a directory (for packaging).
    #[command(hide = true)]
    GenerateAssets {
        /// The directory to write `man/` and `completions/` into.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Print the op stream, every live node (applied sequence, lag, shards) and every
    /// lease, as the NATS cluster holds them.
    Status {
        /// A node's config file (its `[cluster]` section).
        #[arg(long)]
        config: PathBuf,
    },
    /// Ask one running node to write a snapshot (a compacted copy of its log) to the
    /// JetStream object store now; older ones beyond `snapshot_keep` are deleted and the
    /// op stream is purged below the oldest kept one.
    Snapshot {
        /// A node's config file (its `[cluster]` section).
        #[arg(long)]
        config: PathBuf,
    },
    /// With this node stopped: apply the op stream up to its end, then print
    /// `applied_seq` and a SHA-256 of every table. Nodes that print the same lines hold
    /// the same state.
    Verify {
        /// The node's config file.
        #[arg(long)]
        config: PathBuf,
        /// The data directory (overrides `data_dir` of the config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (it is stored hashed and cannot be shown again).
    Create {
        /// Scope the token to one application (id or uid); default: org-wide.
        #[arg(long)]
        app: Option<String>,
        /// A label shown by `token list`.
        #[arg(long, default_value = "")]
        name: String,
        /// When the token stops working (RFC 3339); default: never.
        #[arg(long)]
        expires_at: Option<String>,
        /// The config file (default: the embedded default; the secrets key comes from
        /// `storage.secrets_key_file` in it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory (overrides `data_dir` of the config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// List the tokens: id, name, scope, creation, expiry and last use (never the token).
    List {
        /// The config file (default: the embedded default).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory (overrides `data_dir` of the config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Revoke a token: its id (`tok_…`), a unique prefix of it, or the token itself.
    /// Requests that carry it get 401 from then on.
    Revoke {
        /// The token's id (`tok_…`), a unique prefix of the id, or the token (`sk_…`).
        token: String,
        /// The config file (default: the embedded default).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory (overrides `data_dir` of the config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Man pages (`sluice.1` and one per subcommand) and bash, zsh and fish completions, all
/// from the clap definitions above, so they never drift from the real command line.
pub fn generate_assets(out: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    clap_mangen::generate_to(Cli::command(), &man)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut Cli::command(), "sluice", &completions)?;
    }
    Ok(())
}
