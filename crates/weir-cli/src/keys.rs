//! `weir keys ...`: stored gateway keys, managed through a running gateway's admin API
//! (`/admin/keys`), so every replica sees a change at once and the CLI needs no access to
//! the store itself.

use std::io::Write;
use std::process::ExitCode;

use serde_json::{Map, Value, json};

use crate::UsageError;
use crate::admin::Admin;
use crate::cli::{KeyFields, KeysArgs, KeysCommand};

pub async fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.url, args.admin_key.as_deref())?;
    let (method, path, body) = match &args.command {
        KeysCommand::Create(fields) => {
            let Some(name) = fields.name.as_deref() else {
                return Err(UsageError("weir keys create needs --name NAME".into()).into());
            };
            let mut body = fields_json(fields)?;
            body.insert("name".into(), json!(name));
            body.insert("enabled".into(), json!(!fields.disabled));
            if let Some(within) = &fields.expires_in {
                body.insert("expires_in".into(), json!(within));
            }
            (reqwest::Method::POST, "/admin/keys".to_owned(), Some(body))
        }
        KeysCommand::List => (reqwest::Method::GET, "/admin/keys".to_owned(), None),
        KeysCommand::Show { id } => (reqwest::Method::GET, key_path(id), None),
        KeysCommand::Update {
            id,
            fields,
            all_models,
            no_limits,
            no_expiry,
            enable,
        } => {
            let mut body = fields_json(fields)?;
            if let Some(name) = &fields.name {
                body.insert("name".into(), json!(name));
            }
            if *all_models {
                body.insert("models".into(), json!([]));
            }
            if *no_limits {
                body.insert("limits".into(), json!({ "rpm": null, "tpm": null }));
            }
            if *no_expiry {
                body.insert("expires_at".into(), Value::Null);
            }
            if let Some(within) = &fields.expires_in {
                let d = humantime::parse_duration(within).map_err(|_| {
                    UsageError(format!(
                        "--expires-in `{within}` is not a duration: write e.g. 30d or 12h"
                    ))
                })?;
                let at = std::time::SystemTime::now() + d;
                let secs = at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                body.insert("expires_at".into(), json!(secs));
            }
            if *enable {
                body.insert("enabled".into(), json!(true));
            } else if fields.disabled {
                body.insert("enabled".into(), json!(false));
            }
            if body.is_empty() {
                return Err(UsageError(
                    "nothing to update: give at least one setting (see weir keys update --help)"
                        .into(),
                )
                .into());
            }
            (reqwest::Method::PATCH, key_path(id), Some(body))
        }
        KeysCommand::Revoke { id } => (
            reqwest::Method::POST,
            format!("{}/revoke", key_path(id)),
            None,
        ),
        KeysCommand::Rotate { id } => (
            reqwest::Method::POST,
            format!("{}/rotate", key_path(id)),
            None,
        ),
    };
    let answer = admin.send(method, &path, body.map(Value::Object)).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    match &args.command {
        KeysCommand::List => {
            let keys = answer["data"].as_array().cloned().unwrap_or_default();
            if keys.is_empty() {
                writeln!(out, "no keys yet: weir keys create --name NAME")?;
            }
            for key in &keys {
                writeln!(out, "{}", summary(key))?;
            }
        }
        KeysCommand::Create(_) | KeysCommand::Rotate { .. } => {
            writeln!(out, "{}", summary(&answer))?;
            writeln!(out, "key: {}", answer["key"].as_str().unwrap_or_default())?;
            writeln!(
                out,
                "(shown this once: weir stores only its hash; keep it somewhere safe)"
            )?;
        }
        _ => writeln!(out, "{}", summary(&answer))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn key_path(id: &str) -> String {
    format!(
        "/admin/keys/{}",
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
    )
}

/// One line per key: id, status, name, hint, attribution and limits.
fn summary(key: &Value) -> String {
    let text = |field: &str| key[field].as_str().unwrap_or("").to_owned();
    let mut line = format!(
        "{}  {:<8} {}  {}",
        text("id"),
        text("status"),
        text("name"),
        text("hint")
    );
    for field in ["user", "team", "project"] {
        if let Some(v) = key[field].as_str() {
            line.push_str(&format!("  {field}={v}"));
        }
    }
    if let Some(models) = key["models"].as_array().filter(|m| !m.is_empty()) {
        let names: Vec<&str> = models.iter().filter_map(Value::as_str).collect();
        line.push_str(&format!("  models={}", names.join(",")));
    }
    for limit in ["rpm", "tpm"] {
        if let Some(v) = key["limits"][limit].as_u64() {
            line.push_str(&format!("  {limit}={v}"));
        }
    }
    line
}

/// The settings a command line gives, as the admin API's JSON.
fn fields_json(fields: &KeyFields) -> anyhow::Result<Map<String, Value>> {
    let mut body = Map::new();
    for (name, value) in [
        ("user", &fields.user),
        ("team", &fields.team),
        ("project", &fields.project),
    ] {
        if let Some(v) = value {
            body.insert(name.into(), json!(v));
        }
    }
    if !fields.models.is_empty() {
        body.insert("models".into(), json!(fields.models));
    }
    if fields.rpm.is_some() || fields.tpm.is_some() {
        body.insert(
            "limits".into(),
            json!({ "rpm": fields.rpm, "tpm": fields.tpm }),
        );
    }
    if fields.allow_user_override {
        body.insert("allow_user_override".into(), json!(true));
    }
    if !fields.metadata.is_empty() {
        let mut meta = Map::new();
        for pair in &fields.metadata {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(UsageError(format!("--meta `{pair}` is not KEY=VALUE")).into());
            };
            meta.insert(k.trim().to_owned(), json!(v));
        }
        body.insert("metadata".into(), Value::Object(meta));
    }
    Ok(body)
}
