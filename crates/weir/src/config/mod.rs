//! Configuration: one YAML file (optional), environment variables, and embedded defaults.
//!
//! Loading has two phases. The file is parsed into [`raw::RawConfig`] (unknown keys refused,
//! `${VAR}` / `${VAR:-default}` interpolated in every string), then validated into [`Config`]:
//! URLs parsed, durations read, secrets wrapped, cross-references checked. Validation collects
//! every problem, each with its key path, so one run of `weir config check` shows them all.
//!
//! With no file, weir still runs: the mock provider is always there, and OpenAI, Anthropic and
//! OpenRouter switch on when `OPENAI_API_KEY`, `ANTHROPIC_API_KEY` or `OPENROUTER_API_KEY` is
//! set (their `*_BASE_URL` variables move them, as the official SDKs do). The same providers
//! are added to a file's configuration unless the file defines a provider of that name.
//!
//! Environment overrides (after the file): `WEIR_LISTEN`, `WEIR_API_KEYS` (comma-separated),
//! `WEIR_DEFAULT_MODEL`, `WEIR_LOG_BODIES`, `WEIR_ADMIN_KEY`, `WEIR_POSTGRES_URL`, `WEIR_REDIS_URL` (the shared `redis.url`), and the
//! tool-neutral `LLM_PROVIDER` (provider for bare model names), `LLM_FORCE_MOCK`,
//! `LLM_MAX_RETRIES`, `LLM_RETRY_BACKOFF_BASE`, and `LLM_DAILY_BUDGET` / `LLM_MONTHLY_BUDGET`
//! (dollars: hard global budgets `global-daily` and `global-monthly`, in UTC).

mod budgets;
mod groups;
mod inbound;
mod ledger;
mod model;
pub mod raw;
mod telemetry;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use ledger::LedgerConfig;
pub use model::*;
pub use telemetry::{OtlpConfig, TelemetryConfig};

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: a key path such as `providers.openai.base_url`, or `env LLM_MAX_RETRIES`.
    pub path: String,
    pub reason: String,
}

/// Why the configuration could not be loaded: every problem found, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.file {
            Some(p) => p.display().to_string(),
            None => "the embedded defaults and environment".to_owned(),
        };
        let n = self.problems.len();
        write!(
            f,
            "invalid configuration in {source} ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {}: {}", p.path, p.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// One problem, not tied to a file: what is found wrong after loading, when a provider or a
    /// cache tier is built from the configuration (a header value, a URL, a store that will not
    /// open).
    pub fn single(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            file: None,
            problems: vec![Problem {
                path: path.into(),
                reason: reason.into(),
            }],
        }
    }

    fn one(file: Option<&Path>, path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            file: file.map(Path::to_path_buf),
            ..Self::single(path, reason)
        }
    }
}

/// Where environment variables come from: the process, or a map in tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

impl Config {
    /// Load from an optional file and the process environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        load(path, &ProcessEnv)
    }

    /// The embedded defaults plus the process environment, no file.
    pub fn from_env() -> Result<Self, ConfigError> {
        load(None, &ProcessEnv)
    }

    /// Parse YAML text (as if read from `path`, which is used only in error messages).
    pub fn from_yaml(text: &str, env: &dyn Env) -> Result<Self, ConfigError> {
        parse_and_validate(text, None, env)
    }

    /// The provider with this name.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }
}

/// Load from an optional file and the given environment.
pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
    match path {
        None => parse_and_validate("", None, env),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                ConfigError::one(Some(p), "(file)", format!("cannot read the file: {e}"))
            })?;
            parse_and_validate(&text, Some(p), env)
        }
    }
}

fn parse_and_validate(
    text: &str,
    file: Option<&Path>,
    env: &dyn Env,
) -> Result<Config, ConfigError> {
    let mut tree: serde_json::Value = if text.trim().is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        serde_saphyr::from_str(text)
            .map_err(|e| ConfigError::one(file, "(yaml)", format!("not valid YAML: {e}")))?
    };
    if tree.is_null() {
        tree = serde_json::Value::Object(Default::default());
    }
    let mut problems = Vec::new();
    interpolate(&mut tree, String::new(), env, &mut problems);
    if !problems.is_empty() {
        return Err(ConfigError {
            file: file.map(Path::to_path_buf),
            problems,
        });
    }
    let raw: raw::RawConfig = serde_path_to_error::deserialize(tree).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::one(
            file,
            if path == "." {
                "(top level)".to_owned()
            } else {
                path
            },
            e.into_inner().to_string(),
        )
    })?;
    validate::validate(raw, env).map_err(|problems| ConfigError {
        file: file.map(Path::to_path_buf),
        problems,
    })
}

/// Replace `${VAR}` and `${VAR:-default}` in every string of the tree; `$$` is a literal `$`.
fn interpolate(
    v: &mut serde_json::Value,
    path: String,
    env: &dyn Env,
    problems: &mut Vec<Problem>,
) {
    match v {
        serde_json::Value::String(s) if s.contains('$') => match expand(s, env) {
            Ok(out) => *s = out,
            Err(reason) => problems.push(Problem { path, reason }),
        },
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, format!("{path}[{i}]"), env, problems);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                interpolate(item, child, env, problems);
            }
        }
        _ => {}
    }
}

fn expand(s: &str, env: &dyn Env) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in {s:?}"))?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("`${{{expr}}}` is not a valid variable reference"));
            }
            match (env.var(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (use `${{{name}:-default}}` to make it optional)"
                    ));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests;
