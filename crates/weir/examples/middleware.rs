//! Middleware for library users: a request hook that tags every call with the team that
//! made it (and refuses calls without one), and a response hook that reads the tag back and
//! annotates the answer's metadata.
//!
//! Run it with `cargo run -p weir --example middleware`: it needs no network (the mock
//! provider answers) and exits non-zero if the hooks did not do their job.

use std::sync::Arc;

use weir::pipeline::{CallHook, CallRequest, rejected};
use weir::{CallContext, Client, Config, ResponseMeta};
use weir_types::chat::{ChatRequest, Message};

/// Tags calls with `team` from the request's `user` field; a call without one is refused.
#[derive(Debug)]
struct TeamTagger;

impl CallHook for TeamTagger {
    fn on_request(&self, request: CallRequest<'_>, context: &mut CallContext) -> weir::Result<()> {
        let user = match &request {
            CallRequest::Chat(chat) => chat.extra.get("user").and_then(|u| u.as_str()),
            _ => None,
        };
        let Some(team) = user.and_then(|u| u.split_once('@')).map(|(_, team)| team) else {
            return Err(rejected(
                400,
                "missing_team",
                "set `user` to name@team so the call can be attributed",
            ));
        };
        context.tags.insert("team", team);
        Ok(())
    }

    fn on_response(&self, context: &CallContext, meta: &mut ResponseMeta) {
        if let Some(team) = context.tags.get("team") {
            meta.tags.insert("billed_to", format!("team {team}"));
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::builder(Config::from_yaml("", &|_: &str| None)?)
        .hook(Arc::new(TeamTagger))
        .build()?;

    let mut req = ChatRequest::new("mock/echo", vec![Message::user("hello from search")]);
    req.extra.insert("user".into(), "ada@search".into());
    let done = client.chat(req).await?;
    println!("answer: {}", done.response.text());
    println!("tags:   {:?}", done.meta.tags);
    if done.meta.tags.get("team") != Some("search")
        || done.meta.tags.get("billed_to") != Some("team search")
    {
        return Err("the hooks did not tag the call".into());
    }

    let untagged = ChatRequest::new("mock/echo", vec![Message::user("who am I?")]);
    match client.chat(untagged).await {
        Err(e) if e.http_status() == 400 => println!("refused: {e}"),
        other => return Err(format!("an untagged call should be refused, got {other:?}").into()),
    }
    Ok(())
}
