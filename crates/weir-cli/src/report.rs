//! `weir usage`, `weir budgets` and `weir recommend`: the ledger's totals, the spend budgets
//! and the recommendations of a running gateway, through its admin API.

use std::io::Write;
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::UsageError;
use crate::admin::Admin;
use crate::cli::{BudgetsArgs, BudgetsCommand, RecommendArgs, UsageArgs};

pub async fn usage(args: UsageArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.target.url, args.target.admin_key.as_deref())?;
    let mut query = vec![("group_by".to_owned(), args.group_by.clone())];
    for (name, value) in [("from", &args.from), ("to", &args.to)] {
        if let Some(v) = value {
            query.push((name.to_owned(), v.clone()));
        }
    }
    for filter in &args.filters {
        let Some((k, v)) = filter.split_once('=') else {
            return Err(UsageError(format!("--where `{filter}` is not DIMENSION=VALUE")).into());
        };
        query.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let encoded: Vec<String> = query
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect();
    let answer = admin
        .send(
            reqwest::Method::GET,
            &format!("/admin/usage?{}", encoded.join("&")),
            None,
        )
        .await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let groups: Vec<String> = answer["group_by"]
        .as_array()
        .map(|g| {
            g.iter()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let totals = [
        "requests",
        "errors",
        "cache_hits",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "saved_usd",
        "unpriced_calls",
    ];
    let sep = if args.csv { "," } else { "\t" };
    let header: Vec<&str> = groups.iter().map(String::as_str).chain(totals).collect();
    writeln!(out, "{}", header.join(sep))?;
    for row in answer["data"].as_array().into_iter().flatten() {
        let cells: Vec<String> = header
            .iter()
            .map(|name| match &row[*name] {
                Value::String(s) if args.csv && s.contains([',', '"']) => {
                    format!("\"{}\"", s.replace('"', "\"\""))
                }
                Value::String(s) => s.clone(),
                // A cost no call had a price for is unknown, not zero.
                Value::Null if *name == "cost_usd" && !args.csv => "unpriced".to_owned(),
                Value::Null => String::new(),
                other => other.to_string(),
            })
            .collect();
        writeln!(out, "{}", cells.join(sep))?;
    }
    if let Some(line) = unpriced_footer(&answer) {
        // Kept out of CSV, which a program reads: there it goes to stderr.
        if args.csv {
            eprintln!("{line}");
        } else {
            writeln!(out, "{line}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `unpriced: model-a (3 calls), model-b (1 call); add pricing: entries for them`, when the
/// answer lists models without a price.
fn unpriced_footer(answer: &Value) -> Option<String> {
    let models: Vec<String> = answer["unpriced"]
        .as_array()?
        .iter()
        .filter_map(|m| {
            let calls = m["calls"].as_u64()?;
            let plural = if calls == 1 { "" } else { "s" };
            Some(format!("{} ({calls} call{plural})", m["model"].as_str()?))
        })
        .collect();
    (!models.is_empty()).then(|| {
        format!(
            "unpriced: {}; their cost is unknown: add a `pricing:` entry for each to the gateway's config",
            models.join(", ")
        )
    })
}

/// `global`, or `kind=value`, as the admin API's scope.
fn scope(text: &str) -> anyhow::Result<Value> {
    if text == "global" {
        return Ok(json!("global"));
    }
    match text.split_once('=') {
        Some((kind, value))
            if matches!(kind, "key" | "user" | "team" | "project" | "model") && !value.is_empty() =>
        {
            Ok(json!({ kind: value }))
        }
        _ => Err(UsageError(format!(
            "--scope `{text}`: use global, or key=ID, user=NAME, team=NAME, project=NAME, model=NAME"
        ))
        .into()),
    }
}

/// `daily`, `weekly`, `monthly`, or a rolling window (`7d`).
fn period(text: &str) -> Value {
    match text {
        "daily" | "weekly" | "monthly" => json!(text),
        window => json!({ "rolling": window }),
    }
}

pub async fn budgets(args: BudgetsArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.target.url, args.target.admin_key.as_deref())?;
    let path = |id: &str| {
        format!(
            "/admin/budgets/{}",
            percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
        )
    };
    let answer = match &args.command {
        BudgetsCommand::List => {
            admin
                .send(reqwest::Method::GET, "/admin/budgets", None)
                .await?
        }
        BudgetsCommand::Show { id } => admin.send(reqwest::Method::GET, &path(id), None).await?,
        BudgetsCommand::Remove { id } => {
            admin.send(reqwest::Method::DELETE, &path(id), None).await?
        }
        BudgetsCommand::Set {
            id,
            scope: scope_text,
            limit,
            period: period_text,
            mode,
            time_zone,
        } => {
            let mut body = json!({
                "scope": scope(scope_text)?,
                "limit_usd": limit,
                "period": period(period_text),
                "mode": mode,
            });
            if let Some(zone) = time_zone {
                body["time_zone"] = json!(zone);
            }
            admin
                .send(reqwest::Method::PUT, &path(id), Some(body))
                .await?
        }
    };
    writeln!(
        std::io::stdout().lock(),
        "{}",
        serde_json::to_string_pretty(&answer)?
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `weir recommend`: a table (kind, saving, message) by default, the gateway's JSON with
/// `--json`.
pub async fn recommend(args: RecommendArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.target.url, args.target.admin_key.as_deref())?;
    let query: Vec<String> = [
        ("days", args.days.map(u64::from)),
        ("min_calls", args.min_calls),
        ("idle_days", args.idle_days.map(u64::from)),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| format!("{name}={v}")))
    .collect();
    let path = if query.is_empty() {
        "/admin/recommendations".to_owned()
    } else {
        format!("/admin/recommendations?{}", query.join("&"))
    };
    let answer = admin.send(reqwest::Method::GET, &path, None).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let items = answer["data"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        writeln!(
            out,
            "nothing to recommend from the last {} days ({} calls read)",
            answer["days"], answer["calls_analysed"]
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "kind\tsaving_usd\tmessage")?;
    for item in &items {
        writeln!(
            out,
            "{}\t{}\t{}",
            item["kind"].as_str().unwrap_or(""),
            item["saving_usd"].as_str().unwrap_or("-"),
            item["message"].as_str().unwrap_or("")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_footer_names_each_unpriced_model_with_its_calls() {
        let answer = json!({"data": [], "unpriced": [
            {"model": "local/llama3", "calls": 3},
            {"model": "local/qwen", "calls": 1},
        ]});
        assert_eq!(
            unpriced_footer(&answer).as_deref(),
            Some(
                "unpriced: local/llama3 (3 calls), local/qwen (1 call); their cost is unknown: \
                 add a `pricing:` entry for each to the gateway's config"
            )
        );
        assert_eq!(unpriced_footer(&json!({"data": [], "unpriced": []})), None);
        // An older gateway that does not list them.
        assert_eq!(unpriced_footer(&json!({"data": []})), None);
    }
}
