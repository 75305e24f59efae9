use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use weir_types::chat::*;

use super::*;
use crate::provider::mock::embed_text;

const DIMS: usize = 256;
const HOUR: Duration = Duration::from_secs(3600);

fn ask(system: &str, question: &str) -> ChatRequest {
    ChatRequest::new(
        "gpt-x",
        vec![Message::system(system), Message::user(question)],
    )
}

fn embed(req: &ChatRequest) -> Vec<f32> {
    embed_text(&prompt_text(req).unwrap(), DIMS)
}

fn key(req: &ChatRequest) -> String {
    partition_key(req, "openai/gpt-x", "tenant-a")
}

#[test]
fn index_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SemanticIndex>();
}

#[test]
fn near_duplicate_prompt_hits_and_unrelated_or_one_word_off_misses() {
    let index = SemanticIndex::new(100, 0.95);
    let stored = ask("be brief", "What is the capital of France?");
    index.insert(&key(&stored), embed(&stored), "k-france".into(), HOUR);

    let near = ask("be brief", "what is the capital of france");
    assert_eq!(key(&near), key(&stored));
    let hit = index.lookup(&key(&near), &embed(&near)).unwrap();
    assert_eq!(hit.cache_key, "k-france");
    assert!(hit.similarity >= 0.95, "{}", hit.similarity);

    let unrelated = ask("be brief", "Give me a recipe for sourdough bread");
    assert_eq!(index.lookup(&key(&unrelated), &embed(&unrelated)), None);

    // Five of six words shared: close by bag of words, but a different question; the threshold
    // is what keeps it apart.
    let spain = ask("be brief", "What is the capital of Spain?");
    let similarity = dot(&embed(&stored), &embed(&spain));
    assert!(similarity < 0.95, "{similarity}");
    assert_eq!(index.lookup(&key(&spain), &embed(&spain)), None);
}

#[test]
fn another_partition_never_hits_even_with_the_same_prompt() {
    let index = SemanticIndex::new(100, 0.5);
    let stored = ask("be brief", "What is the capital of France?");
    index.insert(&key(&stored), embed(&stored), "k".into(), HOUR);

    let other_system = ask("answer in French", "What is the capital of France?");
    let mut hotter = stored.clone();
    hotter.temperature = Some(1.5);
    for req in [&other_system, &hotter] {
        assert_ne!(key(req), key(&stored));
        assert_eq!(index.lookup(&key(req), &embed(req)), None);
    }
    let other_tenant = partition_key(&stored, "openai/gpt-x", "tenant-b");
    let other_model = partition_key(&stored, "anthropic/claude", "tenant-a");
    for partition in [other_tenant, other_model] {
        assert_eq!(index.lookup(&partition, &embed(&stored)), None);
    }
    // Same partition still hits: the misses above are the partition's doing.
    assert!(index.lookup(&key(&stored), &embed(&stored)).is_some());
}

#[test]
fn threshold_is_inclusive_at_the_exact_boundary() {
    // [3, 4] normalises exactly to [0.6, 0.8], so its cosine with [1, 0] is exactly 0.6f32.
    let at = SemanticIndex::new(10, 0.6);
    at.insert("p", vec![3.0, 4.0], "k".into(), HOUR);
    let hit = at.lookup("p", &[1.0, 0.0]).unwrap();
    assert_eq!(hit.similarity, 0.6);

    let above = SemanticIndex::new(10, 0.6f32.next_up());
    above.insert("p", vec![3.0, 4.0], "k".into(), HOUR);
    assert_eq!(above.lookup("p", &[1.0, 0.0]), None);
}

#[test]
fn lookup_returns_the_nearest_and_normalises_both_sides() {
    let index = SemanticIndex::new(10, 0.5);
    index.insert("p", vec![1.0, 1.0, 0.0], "far".into(), HOUR);
    index.insert("p", vec![10.0, 1.0, 0.0], "near".into(), HOUR);
    index.insert("p", vec![0.0, 0.0, 5.0], "orthogonal".into(), HOUR);
    // Neither side is unit length: scale must not matter.
    let hit = index.lookup("p", &[7.0, 0.0, 0.0]).unwrap();
    assert_eq!(hit.cache_key, "near");
    let expected = 10.0 / 101f32.sqrt();
    assert!((hit.similarity - expected).abs() < 1e-6);
    // Identical direction at another scale is similarity 1.
    assert_eq!(index.lookup("p", &[0.0, 0.0, 0.1]).unwrap().similarity, 1.0);
}

#[tokio::test(start_paused = true)]
async fn expired_entries_are_skipped_for_a_live_runner_up() {
    let index = SemanticIndex::new(10, 0.5);
    index.insert("p", vec![1.0, 0.0], "short".into(), Duration::from_secs(60));
    index.insert("p", vec![1.0, 0.2], "long".into(), Duration::from_secs(600));

    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(index.lookup("p", &[1.0, 0.0]).unwrap().cache_key, "short");

    // Expiry is at exactly insert + ttl.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(index.lookup("p", &[1.0, 0.0]).unwrap().cache_key, "long");

    tokio::time::advance(Duration::from_secs(540)).await;
    assert_eq!(index.lookup("p", &[1.0, 0.0]), None);
    // Still held until an insert purges them.
    assert_eq!(index.len(), 2);
    index.insert("q", vec![1.0], "new".into(), HOUR);
    assert_eq!(index.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_ttl_past_the_clock_range_never_expires() {
    let index = SemanticIndex::new(10, 0.5);
    index.insert("p", vec![1.0], "forever".into(), Duration::MAX);
    tokio::time::advance(Duration::from_secs(100 * 365 * 86_400)).await;
    assert_eq!(index.lookup("p", &[1.0]).unwrap().cache_key, "forever");
}

#[tokio::test(start_paused = true)]
async fn eviction_bounds_entries_over_all_partitions_oldest_first() {
    let index = SemanticIndex::new(3, 0.9);
    for i in 0..5u8 {
        let partition = if i % 2 == 0 { "even" } else { "odd" };
        let mut v = vec![0.0; 8];
        v[usize::from(i)] = 1.0;
        index.insert(partition, v, format!("k{i}"), HOUR);
        assert!(index.len() <= 3);
    }
    assert_eq!(index.len(), 3);
    let probe = |partition: &str, i: usize| {
        let mut v = vec![0.0; 8];
        v[i] = 1.0;
        index.lookup(partition, &v).map(|m| m.cache_key)
    };
    assert_eq!(probe("even", 0), None);
    assert_eq!(probe("odd", 1), None);
    assert_eq!(probe("even", 2).as_deref(), Some("k2"));
    assert_eq!(probe("odd", 3).as_deref(), Some("k3"));
    assert_eq!(probe("even", 4).as_deref(), Some("k4"));
}

#[tokio::test(start_paused = true)]
async fn expired_rows_make_room_before_live_ones_are_evicted() {
    let index = SemanticIndex::new(2, 0.9);
    index.insert("p", vec![1.0, 0.0, 0.0], "old-but-live".into(), HOUR);
    index.insert(
        "p",
        vec![0.0, 1.0, 0.0],
        "young-expiring".into(),
        Duration::from_secs(1),
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    index.insert("p", vec![0.0, 0.0, 1.0], "new".into(), HOUR);
    assert_eq!(index.len(), 2);
    assert_eq!(
        index.lookup("p", &[1.0, 0.0, 0.0]).unwrap().cache_key,
        "old-but-live"
    );
    assert_eq!(
        index.lookup("p", &[0.0, 0.0, 1.0]).unwrap().cache_key,
        "new"
    );
}

#[test]
fn zero_capacity_stores_nothing() {
    let index = SemanticIndex::new(0, 0.5);
    index.insert("p", vec![1.0], "k".into(), HOUR);
    assert!(index.is_empty());
    assert_eq!(index.lookup("p", &[1.0]), None);
}

#[test]
fn invalid_vectors_are_rejected_and_leave_the_index_unchanged() {
    let index = SemanticIndex::new(10, 0.5);
    let cases = [
        (vec![], InsertError::Empty),
        (vec![1.0, f32::NAN], InsertError::NotFinite),
        (vec![f32::INFINITY, 0.0], InsertError::NotFinite),
        (vec![0.0, 0.0], InsertError::Zero),
    ];
    for (v, error) in cases {
        assert_eq!(
            index.try_insert("p", v.clone(), "k".into(), HOUR),
            Err(error)
        );
        index.insert("p", v, "k".into(), HOUR);
        assert!(index.is_empty());
    }

    index.insert("p", vec![1.0, 0.0], "two".into(), HOUR);
    assert_eq!(
        index.try_insert("p", vec![1.0, 0.0, 0.0], "three".into(), HOUR),
        Err(InsertError::DimensionMismatch {
            expected: 2,
            got: 3
        })
    );
    assert_eq!(index.len(), 1);
    // Another partition has its own dimension.
    index.insert("q", vec![1.0, 0.0, 0.0], "three".into(), HOUR);
    assert_eq!(index.len(), 2);

    // Bad queries are misses, not matches with NaN similarity.
    for query in [&[f32::NAN, 0.0][..], &[0.0, 0.0], &[], &[1.0, 0.0, 0.0]] {
        assert_eq!(index.lookup("p", query), None);
    }
}

#[test]
fn huge_and_tiny_components_normalise_without_overflow() {
    let index = SemanticIndex::new(10, 0.99);
    index.insert("p", vec![3e30, 4e30], "huge".into(), HOUR);
    index.insert("q", vec![3e-40, 4e-40], "tiny".into(), HOUR);
    assert_eq!(index.len(), 2);
    assert_eq!(index.lookup("p", &[0.6, 0.8]).unwrap().cache_key, "huge");
    assert_eq!(index.lookup("q", &[6e25, 8e25]).unwrap().cache_key, "tiny");
}

#[test]
fn reinserting_a_key_replaces_its_row() {
    let index = SemanticIndex::new(10, 0.9);
    index.insert("p", vec![1.0, 0.0], "k".into(), HOUR);
    index.insert("p", vec![0.0, 1.0], "k".into(), HOUR);
    assert_eq!(index.len(), 1);
    assert_eq!(index.lookup("p", &[1.0, 0.0]), None);
    assert_eq!(index.lookup("p", &[0.0, 1.0]).unwrap().cache_key, "k");
}

#[test]
fn remove_key_keeps_the_other_rows_findable_and_clear_empties() {
    let index = SemanticIndex::new(10, 0.9);
    for i in 0..4 {
        let mut v = vec![0.0; 4];
        v[i] = 1.0;
        index.insert("p", v, format!("k{i}"), HOUR);
    }
    // Removing from the middle moves the last row into the hole.
    index.remove_key("k1");
    index.remove_key("not-there");
    assert_eq!(index.len(), 3);
    for i in [0, 2, 3] {
        let mut v = vec![0.0; 4];
        v[i] = 1.0;
        assert_eq!(index.lookup("p", &v).unwrap().cache_key, format!("k{i}"));
    }
    assert_eq!(index.lookup("p", &[0.0, 1.0, 0.0, 0.0]), None);
    // The moved row can itself be removed: its position was updated.
    index.remove_key("k3");
    assert_eq!(index.lookup("p", &[0.0, 0.0, 0.0, 1.0]), None);
    assert_eq!(
        index.lookup("p", &[0.0, 0.0, 1.0, 0.0]).unwrap().cache_key,
        "k2"
    );

    index.clear();
    assert!(index.is_empty());
    assert_eq!(index.lookup("p", &[1.0, 0.0, 0.0, 0.0]), None);
}

#[test]
fn an_emptied_partition_accepts_a_new_dimension() {
    let index = SemanticIndex::new(10, 0.9);
    index.insert("p", vec![1.0; 4], "old-model".into(), HOUR);
    index.remove_key("old-model");
    assert_eq!(
        index.try_insert("p", vec![1.0; 8], "new-model".into(), HOUR),
        Ok(())
    );
    assert_eq!(index.lookup("p", &[1.0; 8]).unwrap().cache_key, "new-model");
}

#[test]
fn a_poisoned_index_resets_instead_of_serving_half_updated_rows() {
    let index = SemanticIndex::new(10, 0.9);
    index.insert("p", vec![1.0], "k".into(), HOUR);
    let _ = std::thread::scope(|s| {
        s.spawn(|| {
            let _guard = index.inner.write();
            panic!("panic while holding the write lock");
        })
        .join()
    });
    assert_eq!(index.lookup("p", &[1.0]), None);
    index.insert("p", vec![1.0], "fresh".into(), HOUR);
    assert_eq!(index.len(), 1);
    assert_eq!(index.lookup("p", &[1.0]).unwrap().cache_key, "fresh");
}

#[test]
fn concurrent_lookups_and_inserts() {
    let index = Arc::new(SemanticIndex::new(1_000, 0.99));
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let index = &index;
            s.spawn(move || {
                for i in 0..200u32 {
                    let v = vec![t as f32 + 1.0, i as f32, 1.0];
                    index.insert("p", v.clone(), format!("{t}-{i}"), HOUR);
                    let hit = index.lookup("p", &v).unwrap();
                    assert!(hit.similarity >= 0.99);
                }
            });
        }
    });
    assert_eq!(index.len(), 800);
}

#[test]
fn prompt_text_is_the_trailing_run_of_user_messages() {
    let mut req = ChatRequest::new(
        "m",
        vec![
            Message::system("sys"),
            Message::user("earlier question"),
            Message::assistant("earlier answer"),
            Message::user("first part"),
            Message::user("  second part  "),
        ],
    );
    assert_eq!(
        prompt_text(&req).as_deref(),
        Some("first part\nsecond part")
    );

    // Text parts are joined with a newline so words at the seams stay apart; images skipped.
    req.messages.push(Message {
        content: Some(MessageContent::Parts(vec![
            ContentPart::Text {
                text: "look".into(),
            },
            ContentPart::ImageUrl {
                image_url: ImageUrl {
                    url: "https://example.com/cat.png".into(),
                    detail: None,
                },
            },
            ContentPart::Text {
                text: "here".into(),
            },
        ])),
        ..Message::user("")
    });
    assert_eq!(
        prompt_text(&req).as_deref(),
        Some("first part\nsecond part\nlook\nhere")
    );

    req.messages.push(Message::assistant("an answer"));
    assert_eq!(prompt_text(&req), None);
    let blank = ChatRequest::new("m", vec![Message::system("s"), Message::user("  \n ")]);
    assert_eq!(prompt_text(&blank), None);
    assert_eq!(prompt_text(&ChatRequest::new("m", vec![])), None);
}

#[test]
fn partition_key_ignores_the_last_user_turn_but_not_the_history() {
    let base = ChatRequest::new(
        "alias",
        vec![
            Message::system("be brief"),
            Message::user("hi"),
            Message::assistant("hello"),
            Message::user("What is the capital of France?"),
        ],
    );
    let k = key(&base);
    assert_eq!(k.len(), 64);
    assert_eq!(key(&base), k, "stable");

    let same = |f: &dyn Fn(&mut ChatRequest)| {
        let mut r = base.clone();
        f(&mut r);
        assert_eq!(key(&r), k);
    };
    let differs = |what: &str, f: &dyn Fn(&mut ChatRequest)| {
        let mut r = base.clone();
        f(&mut r);
        assert_ne!(key(&r), k, "{what} must change the partition");
    };

    same(&|r| r.messages[3] = Message::user("Capital of Spain, please"));
    same(&|r| r.messages.push(Message::user("and a second user message")));
    same(&|r| r.model = "another-alias".into());
    same(&|r| r.stream = Some(true));
    same(&|r| r.user = Some("end-user-42".into()));
    same(&|r| r.max_completion_tokens = None);

    differs("system prompt", &|r| {
        r.messages[0] = Message::system("be verbose")
    });
    differs("an earlier user turn", &|r| {
        r.messages[1] = Message::user("hey")
    });
    differs("an assistant turn", &|r| {
        r.messages[2] = Message::assistant("hi!")
    });
    differs("dropping history", &|r| {
        r.messages.drain(1..3);
    });
    differs("temperature", &|r| r.temperature = Some(0.2));
    differs("top_p", &|r| r.top_p = Some(0.9));
    differs("max_tokens", &|r| r.max_tokens = Some(10));
    differs("stop", &|r| r.stop = Some(Stop::One("\n".into())));
    differs("seed", &|r| r.seed = Some(7));
    differs("n", &|r| r.n = Some(2));
    differs("response_format", &|r| {
        r.response_format = Some(ResponseFormat::JsonObject)
    });
    differs("tools", &|r| {
        r.tools = Some(vec![Tool::function("f", "d", json!({"type": "object"}))])
    });
    differs("unmodelled params", &|r| {
        r.extra.insert("presence_penalty".into(), json!(1.0));
    });
    differs("an image in the last turn", &|r| {
        r.messages[3].content = Some(MessageContent::Parts(vec![
            ContentPart::Text {
                text: "What is the capital of France?".into(),
            },
            ContentPart::ImageUrl {
                image_url: ImageUrl {
                    url: "https://example.com/map.png".into(),
                    detail: None,
                },
            },
        ]))
    });

    assert_ne!(partition_key(&base, "openai/gpt-y", "tenant-a"), k);
    assert_ne!(partition_key(&base, "openai/gpt-x", "tenant-b"), k);
    // The field tags keep namespace and model from running into each other.
    assert_ne!(
        partition_key(&base, "b", "a"),
        partition_key(&base, "", "ab")
    );
}

#[test]
fn max_tokens_and_max_completion_tokens_share_a_partition() {
    let mut a = ask("s", "q");
    a.max_tokens = Some(100);
    let mut b = ask("s", "q");
    b.max_completion_tokens = Some(100);
    assert_eq!(key(&a), key(&b));
}

#[test]
fn ten_thousand_by_256_lookup_finds_the_planted_near_duplicate() {
    const N: usize = 10_000;
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut gaussianish = || (0..4).map(|_| rng.f32() - 0.5).sum::<f32>();
    let rows: Vec<Vec<f32>> = (0..N)
        .map(|_| (0..DIMS).map(|_| gaussianish()).collect())
        .collect();
    let index = SemanticIndex::new(N, 0.9);
    for (i, v) in rows.iter().enumerate() {
        index.insert("p", v.clone(), format!("k{i}"), HOUR);
    }
    assert_eq!(index.len(), N);

    let planted = 7_331;
    let query: Vec<f32> = rows[planted]
        .iter()
        .map(|x| x + 0.05 * gaussianish())
        .collect();
    let hit = index.lookup("p", &query).unwrap();
    assert_eq!(hit.cache_key, format!("k{planted}"));

    // Check against a plain f64 reference over all rows: same argmax, same similarity.
    let unit = |v: &[f32]| {
        let n = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        v.iter().map(|&x| f64::from(x) / n).collect::<Vec<f64>>()
    };
    let q = unit(&query);
    let (best, best_sim) = rows
        .iter()
        .map(|r| unit(r).iter().zip(&q).map(|(a, b)| a * b).sum::<f64>())
        .enumerate()
        .fold(
            (0, f64::MIN),
            |acc, (i, s)| if s > acc.1 { (i, s) } else { acc },
        );
    assert_eq!(best, planted);
    assert!((f64::from(hit.similarity) - best_sim).abs() < 1e-5);
    assert!(best_sim > 0.9);

    // A fresh random query is near nothing: random 256-d directions are almost orthogonal.
    let stranger: Vec<f32> = (0..DIMS).map(|_| gaussianish()).collect();
    assert_eq!(index.lookup("p", &stranger), None);
}

#[test]
fn dot_handles_lengths_that_are_not_a_multiple_of_eight() {
    for n in [1usize, 7, 8, 9, 17, 256, 1536] {
        let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.25).collect();
        let expected: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        let got = f64::from(dot(&a, &b));
        assert!(
            (got - expected).abs() <= expected.abs() * 1e-5 + 1e-5,
            "{n}"
        );
    }
}
