//! The command line, as clap parses it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    about = "One fast, dependable door to LLM providers"
)]
pub struct Cli {
    /// Configuration file (YAML). Without one, weir runs on embedded defaults plus environment.
    #[arg(long, short = 'c', global = true, env = "WEIR_CONFIG")]
    pub config: Option<PathBuf>,
    /// More logging (-v info, -vv debug); WEIR_LOG takes a full filter.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log as JSON lines.
    #[arg(long, global = true, env = "WEIR_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (OpenAI and Anthropic compatible HTTP API).
    Serve(ServeArgs),
    /// Send one chat message and print the answer.
    Chat(ChatArgs),
    /// List the configured models and aliases.
    Models(ModelsArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect or clear the response cache's persistent tiers (SQLite, Redis).
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Manage stored gateway keys on a running gateway (its admin API, /admin/keys).
    Keys(KeysArgs),
    /// Spend budgets on a running gateway: status, set, remove (/admin/budgets).
    Budgets(BudgetsArgs),
    /// Usage and cost from a running gateway's ledger (/admin/usage).
    Usage(UsageArgs),
    /// What could be cheaper or cleaner, with the dollars it would save
    /// (/admin/recommendations).
    Recommend(RecommendArgs),
    /// A running gateway at a glance: traffic, deployments and breakers, key pools, cache,
    /// spend and budgets (/admin/dashboard.json).
    Status(StatusArgs),
    /// `weir status`, redrawn every second until q or Ctrl-C.
    Top(TopArgs),
}

/// Where the gateway's admin API is.
#[derive(Debug, Args)]
pub struct AdminTarget {
    /// The gateway's base URL.
    #[arg(
        long,
        env = "WEIR_URL",
        default_value = "http://127.0.0.1:4100",
        global = true
    )]
    pub url: String,
    /// The gateway's admin key (server.admin_key); not needed on loopback when none is set.
    #[arg(long, env = "WEIR_ADMIN_KEY", hide_env_values = true, global = true)]
    pub admin_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct BudgetsArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    #[command(subcommand)]
    pub command: BudgetsCommand,
}

#[derive(Debug, Subcommand)]
pub enum BudgetsCommand {
    /// Every budget: limit, spent, reserved, remaining, percent, reset and forecast (JSON).
    List,
    /// One budget's status (JSON).
    Show { id: String },
    /// Set a budget (kept spend when it exists).
    Set {
        id: String,
        /// `global`, or `key=ID`, `user=NAME`, `team=NAME`, `project=NAME`, `model=NAME`.
        #[arg(long, default_value = "global")]
        scope: String,
        /// Dollars per period.
        #[arg(long)]
        limit: String,
        /// daily, weekly, monthly, or a rolling window such as 7d.
        #[arg(long, default_value = "monthly")]
        period: String,
        /// hard (refuse) or soft (warn).
        #[arg(long, default_value = "hard")]
        mode: String,
        /// IANA time zone of the period's boundaries.
        #[arg(long)]
        time_zone: Option<String>,
    },
    /// Remove a budget.
    Remove { id: String },
}

#[derive(Debug, Args)]
pub struct RecommendArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    /// Days of ledger to read (1 to 90; the gateway's default is 7).
    #[arg(long)]
    pub days: Option<u32>,
    /// Calls a deployment needs before its answers or retries are judged (default 20).
    #[arg(long)]
    pub min_calls: Option<u64>,
    /// Days unused before a gateway key is reported idle (default 30).
    #[arg(long)]
    pub idle_days: Option<u32>,
    /// Print the gateway's JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    /// Print the gateway's JSON (/admin/dashboard.json).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    /// Time between redraws (e.g. 1s, 500ms; at least 100ms).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// Stop after this many redraws (default: until q or Ctrl-C).
    #[arg(long, short = 'n')]
    pub iterations: Option<u64>,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    /// Group by any of key, user, team, project, model, provider, day, hour (comma-separated).
    #[arg(long, short = 'g', default_value = "model")]
    pub group_by: String,
    /// From this time (Unix seconds or RFC 3339; default 30 days ago).
    #[arg(long)]
    pub from: Option<String>,
    /// Up to this time (default now).
    #[arg(long)]
    pub to: Option<String>,
    /// Only calls where DIMENSION=VALUE (repeat), e.g. --where team=search.
    #[arg(long = "where", value_name = "DIMENSION=VALUE")]
    pub filters: Vec<String>,
    /// Print JSON.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV.
    #[arg(long)]
    pub csv: bool,
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    /// The gateway's base URL.
    #[arg(
        long,
        env = "WEIR_URL",
        default_value = "http://127.0.0.1:4100",
        global = true
    )]
    pub url: String,
    /// The gateway's admin key (server.admin_key); not needed on loopback when none is set.
    #[arg(long, env = "WEIR_ADMIN_KEY", hide_env_values = true, global = true)]
    pub admin_key: Option<String>,
    /// Print the admin API's JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (shown this once; only its hash is stored).
    Create(KeyFields),
    /// List every key (revoked ones included), without secrets.
    List,
    /// Show one key.
    Show { id: String },
    /// Change a key's settings.
    Update {
        id: String,
        #[command(flatten)]
        fields: KeyFields,
        /// Let the key use every model again.
        #[arg(long, conflicts_with = "models")]
        all_models: bool,
        /// Remove the key's own rate limits (the configured per-key defaults apply).
        #[arg(long, conflicts_with_all = ["rpm", "tpm"])]
        no_limits: bool,
        /// Remove the key's expiry.
        #[arg(long, conflicts_with = "expires_in")]
        no_expiry: bool,
        /// Enable a disabled key.
        #[arg(long, conflicts_with = "disabled")]
        enable: bool,
    },
    /// Revoke a key: it stops working on every replica within a second.
    Revoke { id: String },
    /// Give a key a new secret (printed once); the old one stops working at once.
    Rotate { id: String },
}

/// A key's settings, for create and update.
#[derive(Debug, Args, Default)]
pub struct KeyFields {
    /// A name to tell the key by (required to create).
    #[arg(long)]
    pub name: Option<String>,
    /// The user its calls are attributed to.
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub team: Option<String>,
    #[arg(long)]
    pub project: Option<String>,
    /// A model pattern the key may use (repeat; `openai/*` wildcards). None: every model.
    #[arg(long = "model", value_name = "PATTERN")]
    pub models: Vec<String>,
    /// Requests per minute.
    #[arg(long)]
    pub rpm: Option<u64>,
    /// Tokens per minute.
    #[arg(long)]
    pub tpm: Option<u64>,
    /// Let requests name their end user (OpenAI's `user` field, or x-weir-user).
    #[arg(long)]
    pub allow_user_override: bool,
    /// Expire after this long: `30d`, `12h`.
    #[arg(long)]
    pub expires_in: Option<String>,
    /// Create or set the key disabled.
    #[arg(long)]
    pub disabled: bool,
    /// Metadata as key=value (repeat).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Hits, misses, entries, bytes and savings (persistent tiers; a running gateway's
    /// memory tier is at GET /cache/stats).
    Stats,
    /// Remove every entry, or one model's.
    Clear {
        /// Only this model's entries (a named model or provider/model).
        #[arg(long, short = 'm')]
        model: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, `host:port` (default 127.0.0.1:4100; env WEIR_LISTEN). A host
    /// name such as `localhost` is resolved, and its first address used.
    #[arg(long, value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Model as provider/model or an alias (default: defaults.model, `mock/echo`).
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// System prompt.
    #[arg(long, short = 's')]
    pub system: Option<String>,
    /// Print tokens as they arrive.
    #[arg(long)]
    pub stream: bool,
    /// Print the full response as JSON, with usage and cost (with --stream: one chunk per line).
    #[arg(long)]
    pub json: bool,
    /// Answer from the offline mock provider, whatever the model.
    #[arg(long)]
    pub mock: bool,
    /// Neither read nor write the response cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Cap on output tokens.
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[arg(long, short = 't')]
    pub temperature: Option<f64>,
    /// The prompt; read from stdin when absent.
    pub prompt: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Print as OpenAI's model list JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file (or --config, or the embedded defaults).
    Check {
        /// The file to check.
        file: Option<PathBuf>,
    },
}

/// `host:port`, an IP address or a name to resolve (`localhost:4100`).
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .map_err(|e| {
            format!("`{text}` is not host:port ({e}); e.g. 127.0.0.1:4100 or localhost:4100")
        })?
        .next()
        .ok_or_else(|| format!("`{text}` resolves to no address; e.g. 127.0.0.1:4100"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::parse_listen;

    #[test]
    fn listen_takes_addresses_and_host_names() {
        assert_eq!(parse_listen("127.0.0.1:4100").unwrap().port(), 4100);
        let local = parse_listen("localhost:4101").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 4101, "{local}");
        assert!(parse_listen("localhost").unwrap_err().contains("host:port"));
        assert!(parse_listen("nowhere.invalid:1").is_err());
    }
}
