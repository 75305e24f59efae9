#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::join_all;
use futures::stream::{self, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use weir_types::chat::{ChatChunk, Delta};

use super::*;

const KEY: &str = "v1:shared:mock/echo:abc";

fn upstream_error() -> Error {
    Error::Upstream {
        provider: "up".into(),
        status: 503,
        message: "overloaded".into(),
        body_excerpt: String::new(),
        retry_after: None,
    }
}

fn cut() -> Error {
    Error::StreamInterrupted {
        provider: "up".into(),
        message: "connection reset".into(),
    }
}

fn chunk(i: usize) -> ChatChunk {
    ChatChunk::new("chatcmpl-1", 1, "m").with_delta(
        Delta {
            content: Some(format!("w{i} ")),
            ..Delta::default()
        },
        None,
    )
}

fn chunks(range: std::ops::Range<usize>) -> Vec<ChatChunk> {
    range.map(chunk).collect()
}

/// Followers waiting on a complete-answer flight (the leader holds the sender, not a receiver).
fn followers<T>(f: &Flights<T>, key: &str) -> usize {
    lock(&f.map)
        .get(key)
        .map_or(0, watch::Sender::receiver_count)
}

/// Subscribers of a stream flight, the leader included.
fn subscribers(f: &StreamFlights, key: &str) -> usize {
    lock(&f.map)
        .get(key)
        .map_or(0, watch::Sender::receiver_count)
}

/// Lets other tasks run until `done` holds; paused time never advances here, so this proves
/// an ordering of events, not a timing.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition never held");
}

/// The next `n` chunks of `s`. The timeout (on paused time, so instant) turns a missing chunk
/// into a failure instead of a test that waits forever.
async fn take(s: &mut Chunks, n: usize) -> Vec<ChatChunk> {
    let mut out = Vec::new();
    for _ in 0..n {
        let next = tokio::time::timeout(Duration::from_secs(60), s.next()).await;
        out.push(next.expect("a chunk was lost").unwrap().unwrap());
    }
    out
}

/// Waits until the driver has dropped (cancelled) the upstream fed through `up`.
async fn upstream_dropped(up: &mpsc::UnboundedSender<ChunkItem>) {
    let closed = tokio::time::timeout(Duration::from_secs(60), up.closed()).await;
    closed.expect("the upstream was never cancelled");
}

/// An upstream stream the test feeds by hand.
fn controlled() -> (mpsc::UnboundedSender<ChunkItem>, Chunks) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, UnboundedReceiverStream::new(rx).boxed())
}

#[tokio::test(start_paused = true)]
async fn hundred_identical_calls_make_one_upstream_call() {
    let flights = Flights::<String>::new();
    let calls = AtomicUsize::new(0);
    let calls = &calls;
    let runs = (0..100).map(|_| {
        flights.run(KEY.into(), move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok("the answer".to_string())
        })
    });
    let out = join_all(runs).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(out.len(), 100);
    assert!(
        out.iter()
            .all(|(r, _)| r.as_deref().unwrap() == "the answer")
    );
    let followers = out.iter().filter(|(_, r)| *r == Role::Follower).count();
    assert_eq!(followers, 99);
    assert_eq!(flights.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn different_keys_do_not_share() {
    let flights = Flights::<u32>::new();
    let calls = AtomicUsize::new(0);
    let calls = &calls;
    let runs = (0..4u32).map(|i| {
        flights.run(format!("k{i}"), move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(i)
        })
    });
    let out = join_all(runs).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    for (i, (r, role)) in out.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i as u32);
        assert_eq!(role, Role::Leader);
    }
}

#[tokio::test(start_paused = true)]
async fn leader_error_reaches_everyone_and_the_next_call_starts_fresh() {
    let flights = Flights::<u32>::new();
    let calls = AtomicUsize::new(0);
    let calls = &calls;
    let runs = (0..10).map(|_| {
        flights.run(KEY.into(), move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(upstream_error())
        })
    });
    let out = join_all(runs).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    for (r, _) in &out {
        let e = r.as_ref().unwrap_err();
        assert_eq!(e.to_string(), upstream_error().to_string());
    }
    assert_eq!(out.iter().filter(|(_, r)| *r == Role::Leader).count(), 1);
    assert_eq!(flights.in_flight(), 0);

    let (again, role) = flights
        .run(KEY.into(), move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(7)
        })
        .await;
    assert_eq!(again.unwrap(), 7);
    assert_eq!(role, Role::Leader);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// Spawns five followers of `KEY` whose own `make` answers 2, once a leader is running.
async fn spawn_followers(
    flights: &Arc<Flights<u32>>,
    calls: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<(Result<u32, Error>, Role)>> {
    let handles = (0..5)
        .map(|_| {
            let (flights, calls) = (Arc::clone(flights), Arc::clone(calls));
            tokio::spawn(async move {
                flights
                    .run(KEY.into(), move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        Ok(2)
                    })
                    .await
            })
        })
        .collect();
    until(|| followers(flights, KEY) == 5).await;
    handles
}

async fn assert_handed_over(
    followers: Vec<tokio::task::JoinHandle<(Result<u32, Error>, Role)>>,
    flights: &Flights<u32>,
    calls: &AtomicUsize,
) {
    let out: Vec<_> = join_all(followers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(out.iter().all(|(r, _)| *r.as_ref().unwrap() == 2));
    // Exactly one follower was promoted and ran its own `make`; the rest shared its answer.
    assert_eq!(out.iter().filter(|(_, r)| *r == Role::Leader).count(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(flights.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancelled_leader_hands_over_to_one_follower() {
    let flights = Arc::new(Flights::<u32>::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let leader = {
        let (flights, calls) = (Arc::clone(&flights), Arc::clone(&calls));
        tokio::spawn(async move {
            flights
                .run(KEY.into(), move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(1)
                })
                .await
        })
    };
    until(|| flights.in_flight() == 1).await;
    let followers = spawn_followers(&flights, &calls).await;

    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    assert_handed_over(followers, &flights, &calls).await;
}

#[tokio::test(start_paused = true)]
async fn panicking_leader_hands_over_to_one_follower() {
    let flights = Arc::new(Flights::<u32>::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let leader = {
        let (flights, calls, gate) = (Arc::clone(&flights), Arc::clone(&calls), gate.clone());
        tokio::spawn(async move {
            flights
                .run(KEY.into(), move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    panic!("upstream client bug");
                })
                .await
        })
    };
    until(|| flights.in_flight() == 1).await;
    let followers = spawn_followers(&flights, &calls).await;

    gate.notify_one();
    assert!(leader.await.unwrap_err().is_panic());
    assert_handed_over(followers, &flights, &calls).await;
}

#[tokio::test(start_paused = true)]
async fn a_follower_leaving_does_not_disturb_the_flight() {
    let flights = Arc::new(Flights::<u32>::new());
    let leader = {
        let flights = Arc::clone(&flights);
        tokio::spawn(async move {
            flights
                .run(KEY.into(), || async {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Ok(1)
                })
                .await
        })
    };
    until(|| flights.in_flight() == 1).await;
    let quitter = {
        let flights = Arc::clone(&flights);
        tokio::spawn(async move { flights.run(KEY.into(), || async { Ok(9) }).await })
    };
    until(|| followers(&flights, KEY) == 1).await;
    quitter.abort();
    assert!(quitter.await.unwrap_err().is_cancelled());
    assert_eq!(followers(&flights, KEY), 0);
    let (r, role) = leader.await.unwrap();
    assert_eq!((r.unwrap(), role), (1, Role::Leader));
    assert_eq!(flights.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn late_joiners_get_every_chunk_in_order() {
    let flights = StreamFlights::new();
    let starts = AtomicUsize::new(0);
    let (up, upstream) = controlled();
    let start = || async {
        starts.fetch_add(1, Ordering::SeqCst);
        Ok(upstream)
    };
    let (mut leader, role) = flights.join(KEY.into(), start).await.unwrap();
    assert_eq!(role, Role::Leader);
    let never = || async { Err::<Chunks, _>(upstream_error()) };

    for c in chunks(0..3) {
        up.send(Ok(c)).unwrap();
    }
    let mut seen_by_leader = take(&mut leader, 3).await;
    let (mut b, role) = flights.join(KEY.into(), never).await.unwrap();
    assert_eq!(role, Role::Follower);

    for c in chunks(3..6) {
        up.send(Ok(c)).unwrap();
    }
    seen_by_leader.extend(take(&mut leader, 3).await);
    // B reads part of the replay, then waits for live chunks, interleaved with C's join.
    let mut seen_by_b = take(&mut b, 4).await;
    let (c, role) = flights.join(KEY.into(), never).await.unwrap();
    assert_eq!(role, Role::Follower);

    for c in chunks(6..8) {
        up.send(Ok(c)).unwrap();
    }
    drop(up);
    let rest = |s: Chunks| s.map(Result::unwrap).collect::<Vec<_>>();
    seen_by_leader.extend(rest(leader).await);
    seen_by_b.extend(rest(b).await);
    let seen_by_c = rest(c).await;

    assert_eq!(seen_by_leader, chunks(0..8));
    assert_eq!(seen_by_b, chunks(0..8));
    assert_eq!(seen_by_c, chunks(0..8));
    assert_eq!(starts.load(Ordering::SeqCst), 1);
    assert_eq!(flights.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn concurrent_joins_open_one_upstream() {
    let flights = StreamFlights::new();
    let starts = AtomicUsize::new(0);
    let starts = &starts;
    let joins = (0..20).map(|_| {
        flights.join(KEY.into(), move || async move {
            starts.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(stream::iter(chunks(0..5).into_iter().map(Ok)).boxed())
        })
    });
    let joined = join_all(joins).await;
    assert_eq!(starts.load(Ordering::SeqCst), 1);
    let roles: Vec<Role> = joined.iter().map(|j| j.as_ref().unwrap().1).collect();
    assert_eq!(roles.iter().filter(|r| **r == Role::Follower).count(), 19);
    let all = join_all(
        joined
            .into_iter()
            .map(|j| j.unwrap().0.map(Result::unwrap).collect::<Vec<_>>()),
    )
    .await;
    assert!(all.iter().all(|s| *s == chunks(0..5)));
    assert_eq!(flights.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn upstream_error_reaches_every_subscriber_and_ends_their_streams() {
    let flights = StreamFlights::new();
    let (up, upstream) = controlled();
    let (leader, _) = flights
        .join(KEY.into(), || async { Ok(upstream) })
        .await
        .unwrap();
    let mut followers = Vec::new();
    for _ in 0..2 {
        let (s, role) = flights
            .join(KEY.into(), || async { Err(upstream_error()) })
            .await
            .unwrap();
        assert_eq!(role, Role::Follower);
        followers.push(s);
    }
    for c in chunks(0..2) {
        up.send(Ok(c)).unwrap();
    }
    up.send(Err(cut())).unwrap();
    // The upstream sender stays open: streams must end because of the error item.
    for s in std::iter::once(leader).chain(followers) {
        let items: Vec<ChunkItem> = s.collect().await;
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].as_ref().unwrap(), &chunk(0));
        assert_eq!(items[1].as_ref().unwrap(), &chunk(1));
        let e = items[2].as_ref().unwrap_err();
        assert_eq!(e.to_string(), cut().to_string());
    }
    assert_eq!(flights.in_flight(), 0);
    // The driver dropped the upstream after the error.
    upstream_dropped(&up).await;
}

#[tokio::test(start_paused = true)]
async fn leader_disconnect_keeps_the_upstream_until_the_last_subscriber_leaves() {
    let flights = StreamFlights::new();
    let (up, upstream) = controlled();
    let (leader, _) = flights
        .join(KEY.into(), || async { Ok(upstream) })
        .await
        .unwrap();
    let (mut follower, _) = flights
        .join(KEY.into(), || async { Err(upstream_error()) })
        .await
        .unwrap();
    drop(leader);
    assert_eq!(subscribers(&flights, KEY), 1);

    for c in chunks(0..4) {
        up.send(Ok(c)).unwrap();
    }
    assert_eq!(take(&mut follower, 4).await, chunks(0..4));
    assert!(
        !up.is_closed(),
        "a follower still listens: the upstream must go on"
    );
    assert_eq!(flights.in_flight(), 1);

    drop(follower);
    // No one listens any more: the driver cancels the upstream and the flight leaves the map.
    upstream_dropped(&up).await;
    until(|| flights.in_flight() == 0).await;

    let (again, role) = flights
        .join(KEY.into(), || async {
            Ok(stream::iter(chunks(0..1).into_iter().map(Ok)).boxed())
        })
        .await
        .unwrap();
    assert_eq!(role, Role::Leader);
    assert_eq!(
        again.map(Result::unwrap).collect::<Vec<_>>().await,
        chunks(0..1)
    );
}

#[tokio::test(start_paused = true)]
async fn start_failure_reaches_the_waiting_followers() {
    let flights = StreamFlights::new();
    let starts = AtomicUsize::new(0);
    let starts = &starts;
    let joins = (0..5).map(|_| {
        flights.join(KEY.into(), move || async move {
            let n = starts.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if n == 0 {
                Err(upstream_error())
            } else {
                Ok(stream::empty().boxed())
            }
        })
    });
    let joined = join_all(joins).await;
    assert_eq!(starts.load(Ordering::SeqCst), 1);
    for j in joined {
        let e = j.err().unwrap();
        assert_eq!(e.to_string(), upstream_error().to_string());
    }
    assert_eq!(flights.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancelled_opening_hands_over_to_a_follower() {
    let flights = Arc::new(StreamFlights::new());
    let leader = {
        let flights = Arc::clone(&flights);
        tokio::spawn(async move {
            let opened = flights
                .join(KEY.into(), || async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(stream::empty().boxed())
                })
                .await;
            opened.map(|(_, role)| role)
        })
    };
    until(|| flights.in_flight() == 1).await;
    let follower = {
        let flights = Arc::clone(&flights);
        tokio::spawn(async move {
            let (s, role) = flights
                .join(KEY.into(), || async {
                    Ok(stream::iter(chunks(0..3).into_iter().map(Ok)).boxed())
                })
                .await
                .unwrap();
            (s.map(Result::unwrap).collect::<Vec<_>>().await, role)
        })
    };
    // The leader's own receiver plus the waiting follower.
    until(|| subscribers(&flights, KEY) == 2).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    let (seen, role) = follower.await.unwrap();
    assert_eq!(role, Role::Leader);
    assert_eq!(seen, chunks(0..3));
    assert_eq!(flights.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_dying_driver_ends_streams_with_an_error_not_silently() {
    let flights = StreamFlights::new();
    let mut sent = false;
    let upstream = stream::poll_fn(move |_| {
        if sent {
            panic!("upstream parser bug");
        }
        sent = true;
        std::task::Poll::Ready(Some(Ok(chunk(0))))
    })
    .boxed();
    let (s, _) = flights
        .join(KEY.into(), || async { Ok(upstream) })
        .await
        .unwrap();
    let items: Vec<ChunkItem> = s.collect().await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].as_ref().unwrap(), &chunk(0));
    assert!(matches!(items[1], Err(Error::StreamInterrupted { .. })));
    assert_eq!(flights.in_flight(), 0);
}
