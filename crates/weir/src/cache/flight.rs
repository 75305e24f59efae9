//! Single-flight: identical requests in flight at the same time share one upstream call.
//!
//! Two flavours, both keyed by a `String` (the flat cache key):
//! - [`Flights`] for complete answers: the first caller (the leader) runs the upstream call,
//!   callers arriving while it runs (followers) wait and get a clone of its result;
//! - [`StreamFlights`] for streams: the leader's upstream stream is driven by a spawned task and
//!   every subscriber, however late it joined, gets every chunk from the first one, in order.
//!
//! Failure rules, chosen so that one client can never fail the others:
//! - **Leader error**: followers receive the same error. They asked at the same moment, so one
//!   upstream failure is the answer for all of them; retrying is their decision (and a retry
//!   starts a fresh flight, since a flight leaves the map as soon as it ends).
//! - **Leader cancelled** (its future dropped, e.g. its client disconnected, or it panicked): a
//!   drop guard removes the flight and tells the followers, who race for the map lock; the
//!   winner becomes the new leader and runs its *own* `make`/`start`, the others follow it.
//!   A promoted follower reports [`Role::Leader`], since it did make an upstream call.
//! - **Streams, leader disconnects**: the upstream keeps going while any subscriber listens;
//!   it is cancelled (dropped) when the last subscriber leaves. An upstream error item reaches
//!   every subscriber and ends their streams.
//!
//! Locking: each map is a small `std::sync::Mutex` held only for a lookup or an insert, never
//! across an `.await`. Results and chunks travel through `tokio::sync::watch` channels.
//!
//! Why `watch` rather than `broadcast` for stream fan-out (the conventions suggest broadcast):
//! late joiners need the chunks already sent, so the whole response is buffered anyway; a
//! broadcast ring would be a second copy whose `Lagged` error drops chunks for a slow reader.
//! Keeping the replay buffer inside a `watch` channel and giving each subscriber a cursor into
//! it means nothing is lost or duplicated, and joining (subscribe + start at chunk 0) needs no
//! extra synchronisation. Memory is bounded by one response per flight, freed when the flight
//! ends and its last subscriber has read to the end.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::watch;
use weir_types::chat::ChatChunk;

use crate::error::Error;

/// What a caller of a flight did: made the upstream call, or shared someone else's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Ran the upstream call (including a follower promoted after its leader was cancelled).
    Leader,
    /// Got a copy of the leader's answer; count these as coalesced requests.
    Follower,
}

/// Locks a flight map. Poisoning is recovered from because the critical sections are plain
/// map operations that leave the map consistent even if a panic unwinds through them.
fn lock<M>(m: &Mutex<M>) -> MutexGuard<'_, M> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes `key` from `map` if it still belongs to this flight's channel (a later flight for
/// the same key must never be removed by an earlier one).
fn retire<S>(map: &Mutex<HashMap<String, watch::Sender<S>>>, key: &str, tx: &watch::Sender<S>) {
    let mut map = lock(map);
    if map.get(key).is_some_and(|t| t.same_channel(tx)) {
        map.remove(key);
    }
}

/// The state of one complete-answer flight, as its followers see it.
enum Outcome<T> {
    Running,
    Done(Result<T, Error>),
    /// The leader was cancelled before it had an answer; a follower must take over.
    Abandoned,
}

/// Single-flight for complete answers.
pub struct Flights<T> {
    /// The flights running now. The map holds a sender so followers can `subscribe`.
    map: Mutex<HashMap<String, watch::Sender<Outcome<T>>>>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> fmt::Debug for Flights<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flights")
            .field("in_flight", &lock(&self.map).len())
            .finish()
    }
}

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many distinct keys have a call running now.
    pub fn in_flight(&self) -> usize {
        lock(&self.map).len()
    }

    /// Runs `make` unless an identical call (same `key`) is already running, in which case
    /// waits for that one and returns a clone of its result. See the module docs for what
    /// happens when the leader fails or is cancelled.
    pub async fn run<F, Fut>(&self, key: String, make: F) -> (Result<T, Error>, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        loop {
            let joined = {
                let mut map = lock(&self.map);
                match map.get(&key) {
                    Some(tx) => Err(tx.subscribe()),
                    None => {
                        let (tx, _) = watch::channel(Outcome::Running);
                        map.insert(key.clone(), tx.clone());
                        Ok(tx)
                    }
                }
            };
            match joined {
                Ok(tx) => {
                    let lead = Lead {
                        map: &self.map,
                        key,
                        tx,
                        landed: false,
                    };
                    let result = make().await;
                    lead.land(&result);
                    return (result, Role::Leader);
                }
                Err(mut rx) => {
                    let seen = rx
                        .wait_for(|o| !matches!(o, Outcome::Running))
                        .await
                        .ok()
                        .and_then(|o| match &*o {
                            Outcome::Done(result) => Some(result.clone()),
                            Outcome::Running | Outcome::Abandoned => None,
                        });
                    // No answer means the leader was cancelled (and its flight already left
                    // the map): go round again, to lead a new flight or follow whoever won.
                    if let Some(result) = seen {
                        return (result, Role::Follower);
                    }
                }
            }
        }
    }
}

/// The leader's side of a flight. Dropped without [`Lead::land`] (the leader's future was
/// dropped, or `make` panicked), it hands over to the followers instead of stranding them.
struct Lead<'a, T> {
    map: &'a Mutex<HashMap<String, watch::Sender<Outcome<T>>>>,
    key: String,
    tx: watch::Sender<Outcome<T>>,
    landed: bool,
}

impl<T: Clone> Lead<'_, T> {
    fn land(mut self, result: &Result<T, Error>) {
        retire(self.map, &self.key, &self.tx);
        // Out of the map, no one new can subscribe: with no follower left, skip the clone
        // (a response can be large).
        if self.tx.receiver_count() > 0 {
            self.tx.send_replace(Outcome::Done(result.clone()));
        }
        self.landed = true;
    }
}

impl<T> Drop for Lead<'_, T> {
    fn drop(&mut self) {
        if !self.landed {
            // Leave the map first so that the woken followers find no flight and one of them
            // starts the next.
            retire(self.map, &self.key, &self.tx);
            self.tx.send_replace(Outcome::Abandoned);
        }
    }
}

/// One item of a shared stream.
type ChunkItem = Result<ChatChunk, Error>;

/// A shared chunk stream, as the leader's `start` opens it and every subscriber reads it.
type Chunks = BoxStream<'static, ChunkItem>;

/// Where a stream flight stands.
enum Phase {
    /// The leader is still opening the upstream stream.
    Starting,
    /// Chunks are arriving.
    Streaming,
    /// The upstream ended (normally, with an error item, or cancelled): no more chunks.
    Finished,
    /// Opening the upstream failed; every follower gets this error.
    StartFailed(Error),
    /// The leader was cancelled while opening; a follower must take over.
    Abandoned,
}

/// The replay buffer of one stream flight: every chunk so far, and whether more can come.
struct Progress {
    chunks: Vec<ChunkItem>,
    phase: Phase,
}

impl Progress {
    fn is_over(&self) -> bool {
        matches!(
            self.phase,
            Phase::Finished | Phase::StartFailed(_) | Phase::Abandoned
        )
    }
}

type StreamMap = Arc<Mutex<HashMap<String, watch::Sender<Progress>>>>;

/// Single-flight for streams: one upstream stream, fanned out to every identical request.
#[derive(Default)]
pub struct StreamFlights {
    /// Shared with the driver tasks, which remove their flight when it ends.
    map: StreamMap,
}

impl fmt::Debug for StreamFlights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamFlights")
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl StreamFlights {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many distinct keys have a stream running now.
    pub fn in_flight(&self) -> usize {
        lock(&self.map).len()
    }

    /// Subscribes to the stream for `key`, opening it with `start` if none is running.
    ///
    /// The returned stream yields every chunk of the upstream from the first, whenever this
    /// caller joined. `Err` means opening the upstream failed (for the leader, or for the
    /// followers that were waiting on it). Must be called within a tokio runtime: the leader
    /// spawns the task that drives the upstream.
    pub async fn join<Fut>(
        &self,
        key: String,
        start: impl FnOnce() -> Fut,
    ) -> Result<(Chunks, Role), Error>
    where
        Fut: Future<Output = Result<Chunks, Error>>,
    {
        loop {
            let joined = {
                let mut map = lock(&self.map);
                match map.get(&key) {
                    Some(tx) => Err(tx.subscribe()),
                    None => {
                        let (tx, rx) = watch::channel(Progress {
                            chunks: Vec::new(),
                            phase: Phase::Starting,
                        });
                        map.insert(key.clone(), tx.clone());
                        Ok((tx, rx))
                    }
                }
            };
            match joined {
                Ok((tx, rx)) => {
                    let opening = Opening {
                        map: &self.map,
                        key: &key,
                        tx: &tx,
                        done: false,
                    };
                    match start().await {
                        Err(e) => {
                            opening.fail(e.clone());
                            return Err(e);
                        }
                        Ok(upstream) => {
                            opening.opened();
                            let driver = Driver {
                                map: Arc::clone(&self.map),
                                key,
                                tx,
                                ended: false,
                            };
                            tokio::spawn(driver.run(upstream));
                            return Ok((subscriber(rx), Role::Leader));
                        }
                    }
                }
                Err(mut rx) => {
                    let verdict = rx
                        .wait_for(|p| !matches!(p.phase, Phase::Starting))
                        .await
                        .ok()
                        .and_then(|p| match &p.phase {
                            Phase::StartFailed(e) => Some(Err(e.clone())),
                            Phase::Streaming | Phase::Finished => Some(Ok(())),
                            Phase::Starting | Phase::Abandoned => None,
                        });
                    match verdict {
                        Some(Ok(())) => return Ok((subscriber(rx), Role::Follower)),
                        Some(Err(e)) => return Err(e),
                        // The leader was cancelled while opening: go round again.
                        None => {}
                    }
                }
            }
        }
    }
}

/// The leader's side of a stream flight while `start` runs. Dropped unfinished (the leader's
/// future was dropped, or `start` panicked), it hands over to the followers.
struct Opening<'a> {
    map: &'a Mutex<HashMap<String, watch::Sender<Progress>>>,
    key: &'a str,
    tx: &'a watch::Sender<Progress>,
    done: bool,
}

impl Opening<'_> {
    fn fail(mut self, e: Error) {
        retire(self.map, self.key, self.tx);
        self.tx.send_modify(|p| p.phase = Phase::StartFailed(e));
        self.done = true;
    }

    fn opened(mut self) {
        // The flight stays in the map: the driver removes it when the stream ends.
        self.tx.send_modify(|p| p.phase = Phase::Streaming);
        self.done = true;
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        if !self.done {
            retire(self.map, self.key, self.tx);
            self.tx.send_modify(|p| p.phase = Phase::Abandoned);
        }
    }
}

/// Drives one upstream stream into the replay buffer. Its `Drop` ends the flight, so the map
/// is cleaned up and subscribers are released even if the task panics or the runtime shuts
/// down under it.
struct Driver {
    map: StreamMap,
    key: String,
    tx: watch::Sender<Progress>,
    /// Whether the stream reached a proper end (finished, failed, or cancelled on purpose).
    ended: bool,
}

impl Driver {
    async fn run(mut self, mut upstream: Chunks) {
        loop {
            tokio::select! {
                item = upstream.next() => match item {
                    Some(item) => {
                        let failed = item.is_err();
                        self.tx.send_modify(|p| p.chunks.push(item));
                        // An error item is the last word of a stream, as from any upstream.
                        if failed {
                            break;
                        }
                    }
                    None => break,
                },
                () = self.tx.closed() => {
                    if self.unwatched() {
                        break;
                    }
                }
            }
        }
        self.ended = true;
        // Dropping `self` ends the flight; the upstream is dropped (cancelled) with this frame.
    }

    /// Whether no one listens any more, in which case the flight leaves the map. Checked under
    /// the map lock because joiners subscribe under it: a request arriving just as the last
    /// subscriber left either joins this flight (and keeps it alive) or starts a new one.
    fn unwatched(&self) -> bool {
        let mut map = lock(&self.map);
        if self.tx.receiver_count() > 0 {
            return false;
        }
        if map.get(&self.key).is_some_and(|t| t.same_channel(&self.tx)) {
            map.remove(&self.key);
        }
        true
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        retire(&self.map, &self.key, &self.tx);
        let ended = self.ended;
        self.tx.send_modify(|p| {
            if !ended {
                // Without this, subscribers would take a cut-off stream for a complete one.
                p.chunks.push(Err(Error::StreamInterrupted {
                    provider: "single-flight".into(),
                    message: "the task driving the shared upstream stream stopped early".into(),
                }));
            }
            p.phase = Phase::Finished;
        });
    }
}

/// One subscriber's view of a stream flight: a cursor into the replay buffer, from chunk 0.
fn subscriber(rx: watch::Receiver<Progress>) -> Chunks {
    futures::stream::unfold((rx, 0usize), |(mut rx, pos)| async move {
        let next = rx
            .wait_for(|p| p.chunks.len() > pos || p.is_over())
            .await
            .ok()
            .map(|p| p.chunks.get(pos).cloned());
        let item = match next {
            Some(item) => item,
            // Every sender is gone; the buffer still holds whatever was sent.
            None => rx.borrow().chunks.get(pos).cloned(),
        };
        item.map(|item| (item, (rx, pos + 1)))
    })
    .boxed()
}

#[cfg(test)]
mod tests;
