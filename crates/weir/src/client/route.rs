//! Model resolution: from the name a caller gives to (provider, upstream model).
//!
//! Names are `provider/model` (`openai/gpt-4o-mini`; everything after the first `/` is the
//! upstream's name, so `openrouter/openai/gpt-4o` works), or aliases from config, or bare
//! names when a default provider is set (`defaults.provider`, env `LLM_PROVIDER`).

use crate::config::Config;
use crate::error::{Error, Result};

/// Where a request goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    pub provider: String,
    pub upstream_model: String,
}

impl Route {
    /// `provider/upstream_model`.
    pub fn qualified(&self) -> String {
        join_qualified(&self.provider, &self.upstream_model)
    }
}

/// `provider/model`, without `format!`'s machinery: this runs several times per request.
pub(crate) fn join_qualified(provider: &str, model: &str) -> String {
    let mut s = String::with_capacity(provider.len() + 1 + model.len());
    s.push_str(provider);
    s.push('/');
    s.push_str(model);
    s
}

/// What a model name names: a configured group (or alias), or one `provider/model`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Group(String),
    Direct(Route),
}

/// Resolve a model name to a group or a direct route.
pub fn resolve_target(config: &Config, model: &str) -> Result<Target> {
    let model = model.trim();
    if !config.defaults.force_mock && config.groups.contains_key(model) {
        return Ok(Target::Group(model.to_owned()));
    }
    resolve(config, model).map(Target::Direct)
}

/// Resolve a model name to one route: a direct name, or a group's first deployment.
pub fn resolve(config: &Config, model: &str) -> Result<Route> {
    let model = model.trim();
    if model.is_empty() {
        return Err(Error::invalid_param("model", "`model` must not be empty"));
    }
    let primary = config
        .groups
        .get(model)
        .and_then(|g| g.primary())
        .map(|d| format!("{}/{}", d.provider, d.upstream_model));
    let target = primary.as_deref().unwrap_or(model);
    if config.defaults.force_mock {
        // Keep mock model names; send everything else to the echo model.
        let upstream = match target.split_once('/') {
            Some(("mock", m)) if m == "echo" || m == "lorem" => m,
            _ => "echo",
        };
        return Ok(Route {
            provider: "mock".into(),
            upstream_model: upstream.into(),
        });
    }
    if let Some((provider, upstream)) = target.split_once('/')
        && !upstream.is_empty()
        && config.provider(provider).is_some()
    {
        return Ok(Route {
            provider: provider.to_owned(),
            upstream_model: upstream.to_owned(),
        });
    }
    if let Some(provider) = &config.defaults.provider {
        return Ok(Route {
            provider: provider.clone(),
            upstream_model: target.to_owned(),
        });
    }
    let providers: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
    let hint = match target.split_once('/') {
        Some((p, _)) => format!(
            "no provider named `{p}` is configured (configured: {}); set its API key or add it to the config file",
            providers.join(", ")
        ),
        None => format!(
            "name models as `provider/model` (configured providers: {}), use an alias from the config, or set defaults.provider",
            providers.join(", ")
        ),
    };
    Err(Error::ModelNotFound {
        model: model.to_owned(),
        hint,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml, &|_: &str| None).unwrap()
    }

    #[test]
    fn resolves_prefixed_aliased_and_default_names() {
        let c = config(
            "providers:\n  local:\n    kind: openai\n    base_url: http://localhost:1/v1\nmodels:\n  fast: local/llama3\n",
        );
        assert_eq!(resolve(&c, "mock/echo").unwrap().qualified(), "mock/echo");
        assert_eq!(resolve(&c, "fast").unwrap().qualified(), "local/llama3");
        assert_eq!(
            resolve(&c, "local/org/model:7b").unwrap().upstream_model,
            "org/model:7b"
        );
        let err = resolve(&c, "gpt-4o").unwrap_err();
        assert_eq!(err.http_status(), 404);
        let err = resolve(&c, "openai/gpt-4o").unwrap_err();
        assert!(
            err.to_string().contains("no provider named `openai`"),
            "{err}"
        );
        assert_eq!(resolve(&c, " ").unwrap_err().http_status(), 400);

        let c = config(
            "defaults:\n  provider: local\nproviders:\n  local:\n    kind: openai\n    base_url: http://localhost:1/v1\n",
        );
        assert_eq!(resolve(&c, "gpt-4o").unwrap().qualified(), "local/gpt-4o");
    }

    #[test]
    fn force_mock_sends_everything_to_the_mock() {
        let c = config("defaults:\n  force_mock: true\n");
        assert_eq!(
            resolve(&c, "openai/gpt-4o").unwrap().qualified(),
            "mock/echo"
        );
        assert_eq!(resolve(&c, "mock/lorem").unwrap().qualified(), "mock/lorem");
    }
}
