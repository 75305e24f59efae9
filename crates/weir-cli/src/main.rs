//! `weir`: the command-line face of weir.
//!
//! A thin binary over the `weir` library and the `weir-server` gateway:
//! - `weir serve`: run the OpenAI- and Anthropic-compatible gateway;
//! - `weir chat`: one chat completion, streamed or not, from arguments or stdin;
//! - `weir models`: the configured models and aliases;
//! - `weir config check`: validate a configuration file and report every problem.
//!
//! Exit codes: 0 success; 1 the request failed (upstream, network, timeout); 2 bad usage,
//! invalid configuration or invalid input; 130 interrupted. Errors go to stderr with their
//! causes; a closed stdout (`weir chat ... | head`) is not an error.

mod admin;
mod chat;
mod cli;
mod keys;
mod report;
mod status;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use cli::{CacheCommand, Cli, Command, ConfigCommand};

/// mimalloc rather than glibc's malloc: a proxied request makes about 160 small
/// allocations, and glibc's free/malloc were a fifth of the gateway's instructions
/// (callgrind, bare proxy). The library leaves the choice to the program that embeds it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // `serve` reads its configuration before logging starts: its `telemetry:` section decides
    // whether the subscriber exports traces.
    let preloaded = match &cli.command {
        Command::Serve(_) => match load_config(cli.config.as_deref()) {
            Ok(config) => Some(config),
            Err(e) => return report(&e),
        },
        _ => None,
    };
    let telemetry = match start_telemetry(&runtime, preloaded.as_ref()) {
        Ok(t) => t,
        Err(e) => return report(&e),
    };
    init_tracing(&cli, telemetry.as_ref());
    let code = match runtime.block_on(run(cli, preloaded)) {
        Ok(code) => code,
        Err(e) => report(&e),
    };
    if let Some(t) = telemetry {
        runtime.block_on(t.shutdown());
    }
    code
}

#[cfg(feature = "otel")]
type Telemetry = weir_server::telemetry::Telemetry;
/// Built without the `otel` feature: nothing to export with.
#[cfg(not(feature = "otel"))]
enum Telemetry {}

#[cfg(not(feature = "otel"))]
impl Telemetry {
    async fn shutdown(self) {}
}

/// Start trace export when the configuration (or an `OTEL_*` variable) names a collector.
fn start_telemetry(
    runtime: &tokio::runtime::Runtime,
    config: Option<&weir::Config>,
) -> anyhow::Result<Option<Telemetry>> {
    let Some(config) = config else {
        return Ok(None);
    };
    #[cfg(feature = "otel")]
    {
        let _enter = runtime.enter();
        Ok(weir_server::telemetry::start(&config.telemetry)?)
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = runtime;
        if config.telemetry.otlp.is_some() {
            return Err(UsageError(
                "this weir was built without trace export (the `otel` feature): remove \
                 telemetry.otlp.endpoint and the OTEL_EXPORTER_OTLP_* variables, or rebuild \
                 with `--features otel`"
                    .to_owned(),
            )
            .into());
        }
        Ok(None)
    }
}

async fn run(cli: Cli, preloaded: Option<weir::Config>) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keys(args) => keys::run(args).await,
        Command::Budgets(args) => report::budgets(args).await,
        Command::Usage(args) => report::usage(args).await,
        Command::Recommend(args) => report::recommend(args).await,
        Command::Status(args) => status::status(args).await,
        Command::Top(args) => status::top(args).await,
        Command::Serve(args) => {
            let config = match preloaded {
                Some(config) => config,
                None => load_config(cli.config.as_deref())?,
            };
            let mut config = with_data_dir(with_persistent_cache(config));
            if let Some(listen) = args.listen {
                config.server.listen = listen;
            }
            weir_server::serve(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Chat(args) => {
            let mut config = with_persistent_cache(load_config(cli.config.as_deref())?);
            if args.mock {
                config.defaults.force_mock = true;
            }
            chat::run(config, args).await
        }
        Command::Models(args) => {
            let mut config = load_config(cli.config.as_deref())?;
            // Listing is offline and reads no answers: no cache tier (Redis included) is
            // opened for it.
            config.cache.enabled = false;
            let client = weir::Client::new(config)?;
            let models = client.models();
            let mut out = std::io::stdout().lock();
            if args.json {
                let list = weir::types::models::ModelList::new(models);
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else {
                for m in models {
                    writeln!(out, "{}", m.id)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cache(cmd) => {
            let config = with_persistent_cache(load_config(cli.config.as_deref())?);
            let client = weir::Client::builder(config).build_async().await?;
            let mut out = std::io::stdout().lock();
            match cmd {
                CacheCommand::Stats => match client.cache_stats().await {
                    Some(stats) => writeln!(out, "{}", serde_json::to_string_pretty(&stats)?)?,
                    None => writeln!(out, "the cache is disabled (cache.enabled: false)")?,
                },
                CacheCommand::Clear { model } => {
                    let removed = client.clear_cache(model.as_deref()).await;
                    writeln!(
                        out,
                        "removed {removed} entr{}",
                        if removed == 1 { "y" } else { "ies" }
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let path = file.or(cli.config);
            let config = load_config(path.as_deref())?;
            let source = path.map_or_else(
                || "embedded defaults".to_owned(),
                |p| p.display().to_string(),
            );
            let providers: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
            let traces = match &config.telemetry.otlp {
                Some(otlp) => format!(
                    "; traces to {} as {}{}",
                    otlp.endpoint,
                    config.telemetry.service_name,
                    if config.telemetry.capture_content {
                        ", with prompts and answers"
                    } else {
                        ""
                    }
                ),
                None => String::new(),
            };
            println!(
                "{source}: OK ({} provider{}: {}; {} named model{}{traces})",
                providers.len(),
                if providers.len() == 1 { "" } else { "s" },
                providers.join(", "),
                config.groups.len(),
                if config.groups.len() == 1 { "" } else { "s" },
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<weir::Config> {
    Ok(weir::Config::load(path)?)
}

/// The CLI's default second cache tier: SQLite in the user's cache directory, so answers
/// survive restarts and `weir cache stats|clear` see what `weir chat` and `weir serve` stored.
/// Applies when the config names no L2 (`cache.sqlite` or `cache.redis`). The directory is
/// `$WEIR_CACHE_DIR` (empty or `off`: no persistent tier), else `$XDG_CACHE_HOME/weir`, else
/// `~/.cache/weir`.
fn with_persistent_cache(mut config: weir::Config) -> weir::Config {
    let cache = &mut config.cache;
    if !cache.enabled || cache.sqlite.is_some() || cache.redis.is_some() {
        return config;
    }
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let dir = match std::env::var_os("WEIR_CACHE_DIR") {
        Some(v) if v.is_empty() || v == "off" => return config,
        Some(v) => std::path::PathBuf::from(v),
        None => match (env("XDG_CACHE_HOME"), env("HOME")) {
            (Some(xdg), _) => std::path::PathBuf::from(xdg).join("weir"),
            (None, Some(home)) => std::path::PathBuf::from(home).join(".cache").join("weir"),
            (None, None) => return config,
        },
    };
    match std::fs::create_dir_all(&dir) {
        Ok(()) => cache.sqlite = Some((dir.join("cache.sqlite3"), 1024 * 1024 * 1024)),
        Err(e) => tracing::warn!(
            dir = %dir.display(),
            error = %e,
            "cannot create the cache directory: answers are cached in memory only (set WEIR_CACHE_DIR)"
        ),
    }
    config
}

/// The gateway's default store: SQLite in the user's data directory, so keys created with
/// `weir keys` survive restarts. Applies when the config names no store (`store.sqlite` or
/// `store.postgres`). The directory is `$WEIR_DATA_DIR` (empty or `off`: no store, only the
/// configured static keys), else `$XDG_DATA_HOME/weir`, else `~/.local/share/weir`. Kept
/// apart from the cache directory: a cache may be wiped at any time, keys may not.
fn with_data_dir(mut config: weir::Config) -> weir::Config {
    let store = &mut config.store;
    if store.sqlite.is_some() || store.postgres.is_some() {
        return config;
    }
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let dir = match std::env::var_os("WEIR_DATA_DIR") {
        Some(v) if v.is_empty() || v == "off" => return config,
        Some(v) => std::path::PathBuf::from(v),
        None => match (env("XDG_DATA_HOME"), env("HOME")) {
            (Some(xdg), _) => std::path::PathBuf::from(xdg).join("weir"),
            (None, Some(home)) => std::path::PathBuf::from(home)
                .join(".local")
                .join("share")
                .join("weir"),
            (None, None) => return config,
        },
    };
    match std::fs::create_dir_all(&dir) {
        Ok(()) => store.sqlite = Some(dir.join("weir.sqlite3")),
        Err(e) => tracing::warn!(
            dir = %dir.display(),
            error = %e,
            "cannot create the data directory: no stored gateway keys (set WEIR_DATA_DIR)"
        ),
    }
    config
}

/// The command line itself is wrong (exit code 2), as opposed to a failure while running.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Print an error with its causes and pick the exit code.
fn report(e: &anyhow::Error) -> ExitCode {
    if is_broken_pipe(e) {
        return ExitCode::SUCCESS;
    }
    let _ = writeln!(std::io::stderr(), "error: {e:#}");
    let usage_like = e.downcast_ref::<UsageError>().is_some()
        || e.downcast_ref::<weir::ConfigError>().is_some()
        || e.downcast_ref::<weir::Error>().is_some_and(|w| {
            matches!(
                w.kind(),
                weir::ErrorKind::Config
                    | weir::ErrorKind::InvalidRequest
                    | weir::ErrorKind::ModelNotFound
            )
        });
    ExitCode::from(if usage_like { 2 } else { 1 })
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_tracing(cli: &Cli, telemetry: Option<&Telemetry>) {
    use tracing_subscriber::EnvFilter;
    let default = match (&cli.command, cli.verbose) {
        (_, v) if v >= 2 => "debug",
        (_, 1) => "info",
        (Command::Serve(_), _) => "info",
        _ => "warn",
    };
    let filter = EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    #[cfg(feature = "otel")]
    if let Some(t) = telemetry {
        return init_tracing_with_export(cli, t, filter, ansi);
    }
    #[cfg(not(feature = "otel"))]
    let _ = telemetry;
    // Colour only for a terminal: a log file or collector gets plain text (and fewer bytes).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Logging as without export, beside the exporter's layer. The log filter becomes the log
/// layer's own, so `WEIR_LOG` still decides what is logged while the exporter sees weir's
/// debug-level call spans; JSON lines written inside them carry their trace and span ids.
#[cfg(feature = "otel")]
fn init_tracing_with_export(
    cli: &Cli,
    telemetry: &Telemetry,
    filter: tracing_subscriber::EnvFilter,
    ansi: bool,
) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, Registry};
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let log: Box<dyn Layer<Registry> + Send + Sync> = if cli.log_json {
        Box::new(
            fmt.json()
                .event_format(weir_server::telemetry::log::WithTraceIds(
                    tracing_subscriber::fmt::format().json(),
                ))
                .with_filter(filter),
        )
    } else {
        Box::new(fmt.with_filter(filter))
    };
    tracing_subscriber::registry()
        .with(log)
        .with(telemetry.layer())
        .init();
}
