//! `weir chat`: one completion, printed as it arrives.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use futures::StreamExt;
use serde_json::json;
use weir::types::chat::{ChatRequest, Message, StreamOptions};

use crate::cli::ChatArgs;

pub async fn run(config: weir::Config, args: ChatArgs) -> anyhow::Result<ExitCode> {
    let prompt = if args.prompt.is_empty() {
        let mut stdin = std::io::stdin();
        if stdin.is_terminal() {
            return Err(crate::UsageError(
                "no prompt: pass it as an argument (weir chat \"hello\") or on stdin".into(),
            )
            .into());
        }
        let mut text = String::new();
        stdin
            .read_to_string(&mut text)
            .context("cannot read the prompt from stdin")?;
        text
    } else {
        args.prompt.join(" ")
    };
    if prompt.trim().is_empty() {
        return Err(crate::UsageError(
            "the prompt is empty: say something (weir chat \"hello\")".into(),
        )
        .into());
    }
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| config.defaults.model.clone());
    let client = weir::Client::builder(config).build_async().await?;
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(Message::system(s.clone()));
    }
    messages.push(Message::user(prompt));
    let mut req = ChatRequest::new(model, messages);
    req.max_tokens = args.max_tokens;
    req.temperature = args.temperature;

    let context = weir::CallContext {
        cache: weir::client::CacheDirectives {
            no_read: args.no_cache,
            no_store: args.no_cache,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut out = std::io::stdout().lock();
    if args.stream {
        req.stream_options = Some(StreamOptions {
            include_usage: Some(args.json),
            extra: Default::default(),
        });
        let mut stream = client.chat_stream_with(req, context).await?;
        let mut ended_with_newline = true;
        while let Some(item) = stream.next().await {
            let chunk = item?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string(&chunk)?)?;
                continue;
            }
            for choice in &chunk.choices {
                if let Some(text) = &choice.delta.content {
                    out.write_all(text.as_bytes())?;
                    ended_with_newline = text.ends_with('\n');
                }
                for tc in choice.delta.tool_calls.iter().flatten() {
                    if let Some(f) = &tc.function {
                        if let Some(name) = &f.name {
                            write!(out, "[tool call {name}] ")?;
                        }
                        if let Some(a) = &f.arguments {
                            out.write_all(a.as_bytes())?;
                        }
                        ended_with_newline = false;
                    }
                }
            }
            out.flush()?;
        }
        if !args.json && !ended_with_newline {
            writeln!(out)?;
        }
        if args.json
            && let Some(summary) = stream.summary()
        {
            let line = json!({
                "weir": {
                    "provider": stream.meta().provider,
                    "upstream_model": stream.meta().upstream_model,
                    "usage": summary.usage,
                    "cost_usd": summary.cost_usd,
                }
            });
            writeln!(out, "{line}")?;
        }
    } else {
        let done = client.chat_with(req, context).await?;
        if args.json {
            let mut body = serde_json::to_value(&done.response)?;
            if let Some(obj) = body.as_object_mut() {
                obj.insert("weir".into(), serde_json::to_value(&done.meta)?);
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&body)?)?;
        } else {
            let choice = done.response.choices.first();
            let text = choice
                .and_then(|c| c.message.content.clone())
                .unwrap_or_default();
            write!(out, "{text}")?;
            for tc in choice
                .and_then(|c| c.message.tool_calls.clone())
                .unwrap_or_default()
            {
                write!(
                    out,
                    "[tool call {}] {}",
                    tc.function.name, tc.function.arguments
                )?;
            }
            if !text.ends_with('\n') {
                writeln!(out)?;
            }
        }
    }
    out.flush()?;
    // The persistent tier is written behind memory: let it land before the process exits.
    client.flush_cache().await;
    Ok(ExitCode::SUCCESS)
}
