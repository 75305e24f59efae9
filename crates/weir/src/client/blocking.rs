//! A blocking facade over [`Client`] for programs that are not async.
//!
//! It owns a small tokio runtime; each call blocks the calling thread until done. Do not use
//! it from inside an async runtime (tokio refuses nested `block_on`).

use weir_types::chat::{ChatChunk, ChatRequest};
use weir_types::embeddings::EmbeddingsRequest;

use super::{Client, Completion, EmbeddingsOutcome};
use crate::config::Config;
use crate::error::{Error, Result};

/// A blocking [`Client`].
///
/// ```
/// use weir::{BlockingClient, Config};
/// use weir_types::chat::{ChatRequest, Message};
///
/// # fn main() -> Result<(), weir::Error> {
/// let client = BlockingClient::new(Config::from_yaml("", &|_: &str| None)?)?;
/// let done = client.chat(ChatRequest::new("mock/echo", vec![Message::user("hi")]))?;
/// assert_eq!(done.response.text(), "hi");
/// let text: String = client
///     .chat_stream(ChatRequest::new("mock/echo", vec![Message::user("one two")]))?
///     .filter_map(|c| c.ok())
///     .filter_map(|c| c.choices.first().and_then(|ch| ch.delta.content.clone()))
///     .collect();
/// assert_eq!(text, "one two");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct BlockingClient {
    client: Client,
    runtime: tokio::runtime::Runtime,
}

impl BlockingClient {
    pub fn new(config: Config) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Connection {
                provider: "weir".into(),
                message: format!("cannot start the I/O runtime: {e}"),
            })?;
        // Providers build their HTTP clients inside the runtime's context.
        let client = {
            let _guard = runtime.enter();
            Client::new(config)?
        };
        Ok(Self { client, runtime })
    }

    /// The async client underneath.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn chat(&self, req: ChatRequest) -> Result<Completion> {
        self.runtime.block_on(self.client.chat(req))
    }

    /// A streamed completion as an iterator of chunks.
    pub fn chat_stream(
        &self,
        req: ChatRequest,
    ) -> Result<impl Iterator<Item = Result<ChatChunk>> + '_> {
        let mut stream = self.runtime.block_on(self.client.chat_stream(req))?;
        Ok(std::iter::from_fn(move || {
            self.runtime.block_on(futures::StreamExt::next(&mut stream))
        }))
    }

    pub fn batch(
        &self,
        requests: Vec<ChatRequest>,
        max_concurrency: usize,
    ) -> Vec<Result<Completion>> {
        self.runtime
            .block_on(self.client.batch(requests, max_concurrency))
    }

    pub fn embed(&self, req: EmbeddingsRequest) -> Result<EmbeddingsOutcome> {
        self.runtime.block_on(self.client.embed(req))
    }
}
