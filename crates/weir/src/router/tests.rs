//! Tests for group ordering: each strategy, distributions, concurrency, availability.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use tokio::time::advance;

use super::*;

fn spec(provider: &str) -> DeploymentSpec {
    DeploymentSpec::new(provider, "m")
}

fn weighted(provider: &str, weight: u32) -> DeploymentSpec {
    DeploymentSpec {
        weight,
        ..spec(provider)
    }
}

fn group(strategy: Strategy, specs: Vec<DeploymentSpec>) -> Group {
    Group::new("g", strategy, specs)
}

fn providers(order: &[Arc<Deployment>]) -> Vec<String> {
    order.iter().map(|d| d.spec.provider.clone()).collect()
}

fn all(_: &Deployment) -> bool {
    true
}

/// How often each provider comes first over `draws` calls.
fn first_counts(g: &Group, rng: &mut fastrand::Rng, draws: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..draws {
        let order = g.order(rng, all);
        *counts.entry(order[0].spec.provider.clone()).or_default() += 1;
    }
    counts
}

fn share(counts: &HashMap<String, usize>, provider: &str, draws: usize) -> f64 {
    counts.get(provider).copied().unwrap_or(0) as f64 / draws as f64
}

const STRATEGIES: [Strategy; 6] = [
    Strategy::Weighted,
    Strategy::RoundRobin,
    Strategy::LeastInFlight,
    Strategy::LowestLatency,
    Strategy::LowestCost,
    Strategy::Priority,
];

#[test]
fn ids_are_unique_and_indexes_match_positions() {
    let g = group(
        Strategy::Weighted,
        vec![spec("a"), spec("b"), spec("a"), spec("a")],
    );
    let ids: Vec<&str> = g.deployments().iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["a/m", "b/m", "a/m#2", "a/m#3"]);
    for (i, d) in g.deployments().iter().enumerate() {
        assert_eq!(d.index, i);
    }
    assert_eq!(g.deployment("a/m#2").unwrap().index, 2);
    assert!(g.deployment("c/m").is_none());
}

#[test]
fn config_shapes_deserialize() {
    let s: Strategy = serde_json::from_str("\"least_in_flight\"").unwrap();
    assert_eq!(s, Strategy::LeastInFlight);
    assert_eq!(
        serde_json::to_string(&Strategy::LowestLatency).unwrap(),
        "\"lowest_latency\""
    );
    assert_eq!(Strategy::default(), Strategy::Weighted);

    let d: DeploymentSpec =
        serde_json::from_str(r#"{"provider":"p","upstream_model":"m"}"#).unwrap();
    assert_eq!(d, DeploymentSpec::new("p", "m"));
    assert_eq!((d.weight, d.priority, d.cost_per_million), (1, 0, None));
    let d: DeploymentSpec = serde_json::from_str(
        r#"{"provider":"p","upstream_model":"m","weight":0,"priority":2,"cost_per_million":"1.25"}"#,
    )
    .unwrap();
    assert_eq!(d.cost_per_million, Some(Decimal::new(125, 2)));
    assert!(
        serde_json::from_str::<DeploymentSpec>(
            r#"{"provider":"p","upstream_model":"m","wieght":2}"#
        )
        .is_err()
    );
}

#[test]
fn every_order_holds_each_deployment_exactly_once() {
    let mut rng = fastrand::Rng::with_seed(1);
    for strategy in STRATEGIES {
        for n in [0usize, 1, 2, 5, 40] {
            let specs = (0..n)
                .map(|i| DeploymentSpec {
                    weight: rng.u32(0..4),
                    priority: rng.u32(0..3),
                    cost_per_million: rng.bool().then(|| Decimal::from(rng.u32(1..5))),
                    ..spec(&format!("p{i}"))
                })
                .collect();
            let g = group(strategy, specs);
            let guards: Vec<_> = g
                .deployments()
                .iter()
                .filter(|_| rng.bool())
                .map(|d| d.begin())
                .collect();
            for _ in 0..50 {
                let mask: Vec<bool> = (0..n).map(|_| rng.bool()).collect();
                let order = g.order(&mut rng, |d| mask[d.index]);
                let mut seen: Vec<usize> = order.iter().map(|d| d.index).collect();
                seen.sort_unstable();
                assert_eq!(seen, (0..n).collect::<Vec<_>>(), "{strategy:?}");
            }
            drop(guards);
        }
    }
}

#[test]
fn unavailable_deployments_go_last_in_their_own_strategy_order() {
    let mut rng = fastrand::Rng::with_seed(2);
    let specs: Vec<DeploymentSpec> = (0..6)
        .map(|i| DeploymentSpec {
            priority: i,
            cost_per_million: Some(Decimal::from(10 - i)),
            ..spec(&format!("p{i}"))
        })
        .collect();
    for strategy in STRATEGIES {
        let g = group(strategy, specs.clone());
        for _ in 0..100 {
            let order = g.order(&mut rng, |d| d.index % 2 == 0);
            let (on, off) = order.split_at(3);
            assert!(on.iter().all(|d| d.index % 2 == 0), "{strategy:?}");
            assert!(off.iter().all(|d| d.index % 2 == 1), "{strategy:?}");
        }
    }
    let by_priority = group(Strategy::Priority, specs.clone()).order(&mut rng, |d| d.index < 3);
    assert_eq!(
        providers(&by_priority),
        ["p0", "p1", "p2", "p3", "p4", "p5"]
    );
    let by_priority = group(Strategy::Priority, specs.clone()).order(&mut rng, |d| d.index >= 3);
    assert_eq!(
        providers(&by_priority),
        ["p3", "p4", "p5", "p0", "p1", "p2"]
    );
    let by_cost = group(Strategy::LowestCost, specs).order(&mut rng, |d| d.index % 2 == 0);
    assert_eq!(providers(&by_cost), ["p4", "p2", "p0", "p5", "p3", "p1"]);
}

#[test]
fn nothing_available_still_orders_everything_by_strategy() {
    let mut rng = fastrand::Rng::with_seed(3);
    let specs = (0..3)
        .map(|i| DeploymentSpec {
            priority: 2 - i,
            ..spec(&format!("p{i}"))
        })
        .collect();
    let order = group(Strategy::Priority, specs).order(&mut rng, |_| false);
    assert_eq!(providers(&order), ["p2", "p1", "p0"]);
}

#[test]
fn weighted_first_choice_follows_the_weights_over_10k_draws() {
    let mut rng = fastrand::Rng::with_seed(4);
    let g = group(
        Strategy::Weighted,
        vec![
            weighted("a", 1),
            weighted("b", 2),
            weighted("c", 7),
            weighted("z", 0),
        ],
    );
    let draws = 10_000;
    let mut firsts = HashMap::<String, usize>::new();
    let mut seconds = HashMap::<String, usize>::new();
    for _ in 0..draws {
        let mut order = providers(&g.order(&mut rng, all)).into_iter();
        *firsts.entry(order.next().unwrap()).or_default() += 1;
        *seconds.entry(order.next().unwrap()).or_default() += 1;
        assert_eq!(
            order.nth(1).unwrap(),
            "z",
            "weight 0 only after everything else"
        );
    }
    // Standard deviation at 10k draws is under 0.5 percentage points; allow four of them.
    for (k, expected) in [("a", 0.1), ("b", 0.2), ("c", 0.7)] {
        assert!(
            (share(&firsts, k, draws) - expected).abs() < 0.02,
            "{k}: {firsts:?}"
        );
    }
    // Without replacement: a is second when b or c came first and a wins among the rest:
    // 0.2 * 1/8 + 0.7 * 1/3.
    let expected = 0.2 / 8.0 + 0.7 / 3.0;
    assert!(
        (share(&seconds, "a", draws) - expected).abs() < 0.02,
        "{seconds:?}"
    );
}

#[test]
fn weight_zero_comes_first_only_when_nothing_else_is_available() {
    let mut rng = fastrand::Rng::with_seed(5);
    let g = group(
        Strategy::Weighted,
        vec![weighted("a", 1), weighted("z", 0), weighted("y", 0)],
    );
    for _ in 0..200 {
        assert_eq!(g.order(&mut rng, all)[0].spec.provider, "a");
        let order = g.order(&mut rng, |d| d.spec.provider != "a");
        assert_ne!(order[0].spec.provider, "a");
        assert_eq!(order[2].spec.provider, "a");
    }
    // Weight 0 among themselves: random, both get to go first.
    let counts = first_counts(
        &group(Strategy::Weighted, vec![weighted("z", 0), weighted("y", 0)]),
        &mut rng,
        1000,
    );
    assert!(share(&counts, "z", 1000) > 0.4 && share(&counts, "y", 1000) > 0.4);
}

#[test]
fn round_robin_rotates_the_start_every_call() {
    let mut rng = fastrand::Rng::with_seed(6);
    let g = group(Strategy::RoundRobin, vec![spec("a"), spec("b"), spec("c")]);
    let orders: Vec<Vec<String>> = (0..4).map(|_| providers(&g.order(&mut rng, all))).collect();
    assert_eq!(
        orders,
        [
            ["a", "b", "c"],
            ["b", "c", "a"],
            ["c", "a", "b"],
            ["a", "b", "c"]
        ]
    );
}

#[test]
fn round_robin_shares_turns_among_available_deployments_only() {
    let mut rng = fastrand::Rng::with_seed(7);
    let g = group(
        Strategy::RoundRobin,
        vec![spec("a"), spec("b"), spec("c"), spec("d")],
    );
    let mut counts = HashMap::<String, usize>::new();
    for _ in 0..300 {
        let order = g.order(&mut rng, |d| d.spec.provider != "b");
        assert_eq!(order[3].spec.provider, "b");
        *counts.entry(order[0].spec.provider.clone()).or_default() += 1;
    }
    // Exactly even: the down deployment's turns are not handed to its neighbour.
    assert_eq!(counts.len(), 3);
    assert!(counts.values().all(|&c| c == 100), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_is_exactly_fair_under_concurrency() {
    let g = Arc::new(group(
        Strategy::RoundRobin,
        vec![spec("a"), spec("b"), spec("c")],
    ));
    let tasks: Vec<_> = (0..64u64)
        .map(|seed| {
            let g = Arc::clone(&g);
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(seed);
                let mut counts = [0usize; 3];
                for i in 0..300 {
                    counts[g.order(&mut rng, all)[0].index] += 1;
                    if i % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                counts
            })
        })
        .collect();
    let mut totals = [0usize; 3];
    for task in tasks {
        for (total, c) in totals.iter_mut().zip(task.await.unwrap()) {
            *total += c;
        }
    }
    // 19,200 calls: each takes its own counter value, so every start gets exactly a third.
    assert_eq!(totals, [6400, 6400, 6400]);
}

#[test]
fn least_in_flight_prefers_idle_deployments() {
    let mut rng = fastrand::Rng::with_seed(8);
    let g = group(
        Strategy::LeastInFlight,
        vec![spec("a"), spec("b"), spec("c")],
    );
    let [a, b, c] = [0, 1, 2].map(|i| Arc::clone(&g.deployments()[i]));
    let busy = vec![a.begin(), a.begin(), c.begin()];
    assert_eq!((a.in_flight(), b.in_flight(), c.in_flight()), (2, 0, 1));
    for _ in 0..50 {
        assert_eq!(providers(&g.order(&mut rng, all)), ["b", "c", "a"]);
    }
    drop(busy);
    assert_eq!(a.in_flight(), 0);

    // All idle: ties are broken at random, not by config order.
    let counts = first_counts(&g, &mut rng, 3000);
    for p in ["a", "b", "c"] {
        assert!(
            (share(&counts, p, 3000) - 1.0 / 3.0).abs() < 0.05,
            "{counts:?}"
        );
    }
}

#[test]
fn in_flight_guards_count_across_threads() {
    let g = group(Strategy::LeastInFlight, vec![spec("a")]);
    let d = Arc::clone(&g.deployments()[0]);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..1000 {
                    let guard = d.begin();
                    assert!(guard.deployment().in_flight() >= 1);
                }
            });
        }
    });
    assert_eq!(d.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn lowest_latency_puts_the_cheaper_of_two_first_counting_load() {
    let mut rng = fastrand::Rng::with_seed(9);
    let g = group(Strategy::LowestLatency, vec![spec("fast"), spec("slow")]);
    let [fast, slow] = [0, 1].map(|i| Arc::clone(&g.deployments()[i]));
    fast.observe_latency(Duration::from_millis(100));
    slow.observe_latency(Duration::from_secs(1));
    for _ in 0..50 {
        assert_eq!(providers(&g.order(&mut rng, all)), ["fast", "slow"]);
    }
    // 100 ms behind 20 requests costs 2.1 s: the idle slow one is now the better bet.
    let queue: Vec<_> = (0..20).map(|_| fast.begin()).collect();
    assert!((fast.load() - 2.1).abs() < 0.01, "{}", fast.load());
    assert_eq!(providers(&g.order(&mut rng, all)), ["slow", "fast"]);
    drop(queue);
}

#[tokio::test(start_paused = true)]
async fn lowest_latency_orders_the_rest_by_load() {
    let mut rng = fastrand::Rng::with_seed(10);
    let specs = (0..5).map(|i| spec(&format!("p{i}"))).collect();
    let g = group(Strategy::LowestLatency, specs);
    for (i, d) in g.deployments().iter().enumerate() {
        d.observe_latency(Duration::from_millis(100 * (i as u64 + 1)));
    }
    for _ in 0..200 {
        let order = g.order(&mut rng, all);
        let rest: Vec<f64> = order[1..].iter().map(|d| d.load()).collect();
        assert!(rest.windows(2).all(|w| w[0] <= w[1]), "{rest:?}");
        // The winner beat at least one other, so it is never the slowest.
        assert_ne!(order[0].spec.provider, "p4");
    }
}

/// Simulate sequential traffic: each request goes to the first deployment in the order,
/// takes its latency on the paused clock, and reports it.
async fn serve(
    g: &Group,
    rng: &mut fastrand::Rng,
    latency: &[Duration],
    requests: usize,
) -> Vec<usize> {
    let mut counts = vec![0; g.deployments().len()];
    for _ in 0..requests {
        let first = Arc::clone(&g.order(rng, all)[0]);
        counts[first.index] += 1;
        let guard = first.begin();
        advance(latency[first.index]).await;
        first.observe_latency(guard.elapsed());
    }
    counts
}

#[tokio::test(start_paused = true)]
async fn p2c_avoids_a_slow_deployment_but_still_probes_it_and_sees_it_recover() {
    let mut rng = fastrand::Rng::with_seed(11);
    let g = group(
        Strategy::LowestLatency,
        vec![spec("fast1"), spec("fast2"), spec("slow")],
    );
    let ms = Duration::from_millis;
    let mut latency = [ms(100), ms(120), ms(2000)];
    let requests = 3000;
    let counts = serve(&g, &mut rng, &latency, requests).await;
    let slow_share = counts[2] as f64 / requests as f64;
    // Avoided almost always, yet tried again whenever its idle estimate has decayed below
    // the others' (about every 30 s here), which is how a recovery would be noticed.
    assert!(counts[2] >= 3, "never probed: {counts:?}");
    assert!(slow_share < 0.02, "not avoided: {counts:?}");
    assert!(counts[0] > 1000 && counts[1] > 1000, "{counts:?}");

    // It recovers and becomes the fastest: the next probe shows it, and it takes over.
    latency[2] = ms(50);
    serve(&g, &mut rng, &latency, 1000).await;
    let counts = serve(&g, &mut rng, &latency, requests).await;
    assert!(counts[2] as f64 / requests as f64 > 0.5, "{counts:?}");
}

#[test]
fn lowest_cost_orders_by_price_with_unknown_last_and_ties_by_weight() {
    let mut rng = fastrand::Rng::with_seed(12);
    let priced = |p: &str, price: Option<Decimal>, weight| DeploymentSpec {
        cost_per_million: price,
        weight,
        ..spec(p)
    };
    let g = group(
        Strategy::LowestCost,
        vec![
            priced("unknown", None, 100),
            priced("dear", Some(Decimal::new(300, 2)), 1),
            priced("cheap3", Some(Decimal::new(15, 1)), 3),
            priced("cheap1", Some(Decimal::new(150, 2)), 1),
        ],
    );
    let draws = 10_000;
    let mut cheap3_first = 0;
    for _ in 0..draws {
        let order = providers(&g.order(&mut rng, all));
        assert_eq!(&order[2..], ["dear", "unknown"]);
        cheap3_first += usize::from(order[0] == "cheap3");
    }
    // 1.5 and 1.50 tie; weight 3 against 1 wins three times in four.
    assert!((cheap3_first as f64 / draws as f64 - 0.75).abs() < 0.02);
}

#[test]
fn priority_orders_ascending_with_weighted_ties() {
    let mut rng = fastrand::Rng::with_seed(13);
    let ranked = |p: &str, priority, weight| DeploymentSpec {
        priority,
        weight,
        ..spec(p)
    };
    let g = group(
        Strategy::Priority,
        vec![
            ranked("backup", 5, 10),
            ranked("main-small", 1, 1),
            ranked("main-big", 1, 4),
            ranked("main-off", 1, 0),
            ranked("first", 0, 1),
        ],
    );
    let draws = 10_000;
    let mut big_second = 0;
    for _ in 0..draws {
        let order = providers(&g.order(&mut rng, all));
        assert_eq!(order[0], "first");
        assert_eq!(&order[3..], ["main-off", "backup"]);
        big_second += usize::from(order[1] == "main-big");
    }
    assert!((big_second as f64 / draws as f64 - 0.8).abs() < 0.02);
}

#[tokio::test(start_paused = true)]
async fn snapshots_report_live_state() {
    let g = Group::with_latency(
        "g",
        Strategy::LowestLatency,
        vec![weighted("a", 3), spec("b")],
        LatencyConfig {
            default_latency: Duration::from_millis(250),
            ..LatencyConfig::default()
        },
    );
    let a = Arc::clone(&g.deployments()[0]);
    let guard = a.begin();
    a.observe_latency(Duration::from_millis(40));
    let snapshot = g.snapshot();
    assert_eq!(snapshot[0].in_flight, 1);
    assert!((snapshot[0].latency_ms - 40.0).abs() < 0.01);
    assert!((snapshot[1].latency_ms - 250.0).abs() < 0.01);
    assert!(!g.deployments()[1].has_latency_samples());
    assert_eq!(
        g.deployments()[1].latency_estimate(),
        Duration::from_millis(250)
    );
    let json = serde_json::to_value(&snapshot[1]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"id": "b/m", "in_flight": 0, "latency_ms": 250.0, "weight": 1, "priority": 0})
    );
    drop(guard);
    assert_eq!(a.in_flight(), 0);
}
