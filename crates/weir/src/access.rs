//! Which models a caller may use: a gateway key's allow-list of model patterns, checked when a
//! call opens, before admission, the cache or any upstream.
//!
//! A pattern is a model name as callers write it (`gpt-4o-mini`, an alias such as `fast`, a
//! group name, `openai/gpt-4o`), or one with `*` wildcards (`openai/*`, `*-mini`, `*`). A call
//! may use a model when a pattern matches the name it asked for, or, for an alias or group,
//! when patterns match every deployment behind it: `openai/*` admits an alias that only
//! points at OpenAI models, and nothing that could reach another provider.

use crate::config::Config;

/// Whether `pattern` matches `name`: `*` matches any run of characters (`/` included), every
/// other character matches itself.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else {
        return pattern == name;
    };
    let Some(mut remaining) = name.strip_prefix(head) else {
        return false;
    };
    let mut pieces = rest.split('*').peekable();
    while let Some(piece) = pieces.next() {
        if pieces.peek().is_none() {
            // The last piece must end the name (an empty one matches whatever is left).
            return remaining.len() >= piece.len() && remaining.ends_with(piece);
        }
        match remaining.find(piece) {
            Some(at) => remaining = &remaining[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// Whether a caller allowed `patterns` may use `model` (see the module docs). An empty list
/// allows nothing; no list at all (`None` on the principal) allows everything.
pub fn may_use(config: &Config, patterns: &[String], model: &str) -> bool {
    let any = |name: &str| patterns.iter().any(|p| pattern_matches(p, name));
    if any(model) {
        return true;
    }
    if let Some(group) = config.groups.get(model) {
        return !group.deployments.is_empty()
            && group
                .deployments
                .iter()
                .all(|d| any(&format!("{}/{}", d.provider, d.upstream_model)));
    }
    // A bare name the default provider serves is that provider's model.
    match &config.defaults.provider {
        Some(provider) if !model.contains('/') => any(&format!("{provider}/{model}")),
        _ => false,
    }
}

/// The refusal for a model the caller's key may not use: a 403 that names the model and what
/// the key allows, never the key.
pub(crate) fn not_allowed(model: &str, patterns: &[String]) -> crate::Error {
    let allowed = if patterns.is_empty() {
        "no models".to_owned()
    } else {
        patterns.join(", ")
    };
    crate::pipeline::rejected(
        403,
        "model_not_allowed",
        format!(
            "this gateway key may not use model `{model}` (it may use: {allowed}); use one of \
             those, or ask the gateway's admin to allow this model for the key"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_names_and_wildcards() {
        assert!(pattern_matches("gpt-4o", "gpt-4o"));
        assert!(!pattern_matches("gpt-4o", "gpt-4o-mini"));
        assert!(pattern_matches("openai/*", "openai/gpt-4o"));
        assert!(pattern_matches("openai/*", "openai/org/model:7b"));
        assert!(!pattern_matches("openai/*", "anthropic/claude"));
        assert!(!pattern_matches("openai/*", "openai"));
        assert!(pattern_matches("*", "anything/at-all"));
        assert!(pattern_matches("*-mini", "openai/gpt-4o-mini"));
        assert!(!pattern_matches("*-mini", "openai/gpt-4o"));
        assert!(pattern_matches("openai/*-mini", "openai/gpt-4o-mini"));
        assert!(pattern_matches("a*b*c", "a-x-b-y-c"));
        assert!(!pattern_matches("a*b*c", "a-x-c-y-b"));
        assert!(!pattern_matches("ab*ba", "aba"));
    }

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml, &|_: &str| None).unwrap()
    }

    #[test]
    fn aliases_and_groups_are_allowed_by_what_they_point_at() {
        let c = config(
            "providers:\n  openai: { api_key: k }\n  anthropic: { api_key: k }\nmodels:\n  fast: openai/gpt-4o-mini\n  mixed:\n    deployments: [openai/gpt-4o, anthropic/claude-sonnet-4]\n",
        );
        let openai = vec!["openai/*".to_owned()];
        assert!(may_use(&c, &openai, "openai/gpt-4o"));
        assert!(may_use(&c, &openai, "fast"));
        assert!(
            !may_use(&c, &openai, "mixed"),
            "one deployment is not openai"
        );
        assert!(!may_use(&c, &openai, "anthropic/claude-sonnet-4"));
        assert!(may_use(&c, &["mixed".to_owned()], "mixed"));
        assert!(!may_use(&c, &[], "fast"), "an empty list allows nothing");
    }

    #[test]
    fn bare_names_count_as_the_default_providers() {
        let c = config("providers:\n  openai: { api_key: k }\ndefaults:\n  provider: openai\n");
        assert!(may_use(&c, &["openai/*".to_owned()], "gpt-4o"));
        assert!(!may_use(&c, &["anthropic/*".to_owned()], "gpt-4o"));
    }
}
