// Test code: a panic is a test failure, which is what we want here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! The replay store: a model-based property test against a plain map, CAS races forced by
//! interleaving, and the claim -> commit/release flow through the Guard.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use proptest::prelude::*;
use serde_json::{json, Value};
use webhook_guard_core::dedup::shard::State;
use webhook_guard_core::dedup::{Claim, ClaimOutcome, Store};
use webhook_guard_core::memhost::MemHost;
use webhook_guard_core::verify::compute_mac;
use webhook_guard_core::{
    compile, compile_for_plugin, config::Algorithm, stats, Guard, Hold, Level, Reason, Rejection,
    RequestInfo, Upstream,
};

const T0: u64 = 1_700_000_000_000;
const CLAIM_MS: u64 = 10_000;
const DONE_MS: u64 = 30_000;

fn hash(k: u8) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = k;
    h[15] = k.wrapping_mul(7);
    h
}

fn stored_entries(host: &MemHost, store: &Store) -> Vec<(u8, State, u64)> {
    store
        .entries(host)
        .iter()
        .map(|e| (e.hash[0], e.state, e.expiry_ms))
        .collect()
}

/// A store prefix no other test uses: the in-memory backing is process-wide.
fn unique(name: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{name}-{n}")
}

#[derive(Debug, Clone)]
enum Op {
    Claim(u8),
    Settle(u8, bool),
    Advance(u64),
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6).prop_map(Op::Claim),
        3 => ((0u8..6), any::<bool>()).prop_map(|(k, ok)| Op::Settle(k, ok)),
        2 => (0u64..25_000).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
    ]
}

/// The reference: live entries by key, with the same capacity rule (one shard).
#[derive(Default)]
struct Model {
    entries: BTreeMap<u8, (State, u64)>,
}

impl Model {
    fn prune(&mut self, now: u64) {
        self.entries.retain(|_, (_, exp)| *exp > now);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn store_matches_a_simple_model(ops in prop::collection::vec(op(), 1..60), capacity in 1usize..6, in_memory in any::<bool>()) {
        // The same model for both backings: Envoy shared data (wasm) and process memory
        // (native).
        let names = stats::global_counters();
        let host = MemHost::new(&names, T0);
        let store = Store::new(&unique("model"), 1, capacity);
        let store = if in_memory { store.in_memory() } else { store };
        store.init(&host);
        let mut model = Model::default();
        let mut held: BTreeMap<u8, Vec<Claim>> = BTreeMap::new();
        for op in ops {
            let now = host.now_ms.get();
            let op_done = Some(op.clone());
            match op {
                Op::Claim(k) => {
                    let got = store.claim(&host, now, 0, hash(k), CLAIM_MS, now + DONE_MS);
                    model.prune(now);
                    let want = match model.entries.get(&k) {
                        Some((State::Done, _)) => "done",
                        Some((State::InFlight, _)) => "in_flight",
                        None if model.entries.len() >= capacity => "full",
                        None => {
                            model.entries.insert(k, (State::InFlight, now + CLAIM_MS));
                            "claimed"
                        }
                    };
                    let got_kind = match &got {
                        ClaimOutcome::Claimed(c) => { held.entry(k).or_default().push(c.clone()); "claimed" }
                        ClaimOutcome::Done => "done",
                        ClaimOutcome::InFlight { retry_after_s } => {
                            let (_, exp) = model.entries[&k];
                            prop_assert_eq!(*retry_after_s, (exp - now).div_ceil(1000).max(1));
                            "in_flight"
                        }
                        ClaimOutcome::Full => "full",
                        ClaimOutcome::Unavailable => "unavailable",
                    };
                    prop_assert_eq!(got_kind, want);
                }
                Op::Settle(k, success) => {
                    let Some(claim) = held.get_mut(&k).and_then(|v| v.pop()) else { continue };
                    let claim_expiry = claim.claim_expiry_ms();
                    let done_expiry = claim.done_expiry_ms();
                    prop_assert_eq!(done_expiry, claim_expiry - CLAIM_MS + DONE_MS);
                    model.prune(now);
                    if success {
                        prop_assert!(store.commit(&host, &claim));
                        // Always recorded (even over capacity); a later expiry already set wins.
                        let expiry = match model.entries.get(&k) {
                            Some((State::Done, e)) => (*e).max(done_expiry),
                            _ => done_expiry,
                        };
                        model.entries.insert(k, (State::Done, expiry));
                    } else {
                        let removed = store.release(&host, &claim);
                        if model.entries.get(&k) == Some(&(State::InFlight, claim_expiry)) {
                            prop_assert!(removed, "a live claim of ours must be released");
                            model.entries.remove(&k);
                        }
                    }
                }
                Op::Advance(ms) => host.advance(ms),
                Op::Sweep => {
                    prop_assert!(store.sweep(&host, 1, 20_000).is_some());
                    model.prune(now);
                }
            }
            model.prune(host.now_ms.get());
            let stored = stored_entries(&host, &store);
            let now = host.now_ms.get();
            let live: BTreeMap<u8, (State, u64)> =
                stored.iter().filter(|(_, _, exp)| *exp > now).map(|(k, s, e)| (*k, (*s, *e))).collect();
            prop_assert_eq!(&live, &model.entries);
            // A sweep publishes the number of stored entries as the gauge.
            if matches!(op_done, Some(Op::Sweep)) {
                prop_assert_eq!(host.count("webhook_guard.store.entries"), stored.len() as i64);
            }
        }
    }
}

#[test]
fn concurrent_claims_of_one_key_admit_exactly_one() {
    // Twenty "workers": each one's CAS write is pre-empted by the next worker's whole claim,
    // the worst interleaving Envoy's shared-data mutex allows.
    let names = stats::global_counters();
    let host = Rc::new(MemHost::new(&names, T0));
    let store = Store::new("race", 4, 100);
    store.init(&*host);
    let outcomes = Rc::new(RefCell::new(Vec::new()));

    fn claim_chain(
        host: Rc<MemHost>,
        store: Store,
        outcomes: Rc<RefCell<Vec<ClaimOutcome>>>,
        left: usize,
    ) {
        if left > 1 {
            let (h, s, o) = (host.clone(), store.clone(), outcomes.clone());
            host.before_next_set(move || claim_chain(h, s, o, left - 1));
        }
        let got = store.claim(&*host, T0, 0, hash(9), CLAIM_MS, T0 + DONE_MS);
        outcomes.borrow_mut().push(got);
    }
    claim_chain(host.clone(), store.clone(), outcomes.clone(), 20);

    let outcomes = outcomes.borrow();
    assert_eq!(outcomes.len(), 20);
    let claimed = outcomes
        .iter()
        .filter(|o| matches!(o, ClaimOutcome::Claimed(_)))
        .count();
    let in_flight = outcomes
        .iter()
        .filter(|o| matches!(o, ClaimOutcome::InFlight { .. }))
        .count();
    assert_eq!((claimed, in_flight), (1, 19));
    assert!(host.count("webhook_guard.store.cas_retries") >= 1);
    assert_eq!(store.sweep(&*host, 1, 1_000), Some(0));
    assert_eq!(host.count("webhook_guard.store.entries"), 1);
}

#[test]
fn the_memory_store_admits_each_key_once_across_threads() {
    // The native build's store under real concurrency: 8 threads race to claim the same 400
    // keys; every key is claimed exactly once, and commits and releases land where they must.
    let store = std::sync::Arc::new(Store::new(&unique("threads"), 8, 10_000).in_memory());
    let claimed = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<u16, usize>::new()));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (store, claimed) = (store.clone(), claimed.clone());
            std::thread::spawn(move || {
                let host = MemHost::new(&stats::global_counters(), T0);
                for k in 0..400u16 {
                    let mut h = [0u8; 16];
                    h[..2].copy_from_slice(&k.to_le_bytes());
                    h[2] = 0x5a;
                    if let ClaimOutcome::Claimed(c) =
                        store.claim(&host, T0, 0, h, CLAIM_MS, T0 + DONE_MS)
                    {
                        *claimed.lock().unwrap().entry(k).or_default() += 1;
                        // Half are committed, half released (then claimable again, once).
                        if k % 2 == 0 {
                            assert!(store.commit(&host, &c));
                        } else {
                            assert!(store.release(&host, &c));
                        }
                    }
                    let _ = t;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let claimed = claimed.lock().unwrap();
    for k in 0..400u16 {
        let n = claimed.get(&k).copied().unwrap_or(0);
        if k % 2 == 0 {
            assert_eq!(n, 1, "committed key {k} claimed {n} times");
        } else {
            assert!(n >= 1, "released key {k} never claimed");
        }
    }
    let host = MemHost::new(&stats::global_counters(), T0);
    let done = store
        .entries(&host)
        .iter()
        .filter(|e| e.state == State::Done)
        .count();
    assert_eq!(done, 200);
}

#[test]
fn the_memory_store_survives_a_reload_that_keeps_its_keys() {
    // Like shared data under one vm_id: a new configuration with the same keys sees the old
    // entries; another prefix does not.
    let prefix = unique("reload");
    let host = MemHost::new(&stats::global_counters(), T0);
    let first = Store::new(&prefix, 2, 10).in_memory();
    let ClaimOutcome::Claimed(c) = first.claim(&host, T0, 0, hash(1), CLAIM_MS, T0 + DONE_MS)
    else {
        panic!()
    };
    assert!(first.commit(&host, &c));
    let reloaded = Store::new(&prefix, 2, 10).in_memory();
    assert_eq!(
        reloaded.claim(&host, T0, 0, hash(1), CLAIM_MS, T0 + DONE_MS),
        ClaimOutcome::Done
    );
    let other = Store::new(&unique("reload"), 2, 10).in_memory();
    assert!(matches!(
        other.claim(&host, T0, 0, hash(1), CLAIM_MS, T0 + DONE_MS),
        ClaimOutcome::Claimed(_)
    ));
}

#[test]
fn cas_exhaustion_and_host_failure_fail_closed() {
    let names = stats::global_counters();
    let host = MemHost::new(&names, T0);
    let store = Store::new("x", 1, 10);
    store.init(&host);
    host.cas_failures.set(10_000);
    assert_eq!(
        store.claim(&host, T0, 0, hash(1), CLAIM_MS, T0 + DONE_MS),
        ClaimOutcome::Unavailable
    );
    host.cas_failures.set(3);
    assert!(matches!(
        store.claim(&host, T0, 0, hash(1), CLAIM_MS, T0 + DONE_MS),
        ClaimOutcome::Claimed(_)
    ));
    host.broken.set(true);
    assert_eq!(
        store.claim(&host, T0, 0, hash(2), CLAIM_MS, T0 + DONE_MS),
        ClaimOutcome::Unavailable
    );
}

#[test]
fn only_the_lease_holder_sweeps_until_the_lease_expires() {
    let names = stats::global_counters();
    let host = MemHost::new(&names, T0);
    let store = Store::new("x", 2, 10);
    store.init(&host);
    for k in 0..4 {
        let ClaimOutcome::Claimed(c) = store.claim(&host, T0, 0, hash(k), CLAIM_MS, T0 + 1_000)
        else {
            panic!()
        };
        assert!(store.commit(&host, &c));
    }
    host.advance(2_000);
    assert_eq!(store.sweep(&host, 1, 5_000), Some(4));
    assert_eq!(
        store.sweep(&host, 2, 5_000),
        None,
        "another root holds the lease"
    );
    assert_eq!(store.sweep(&host, 1, 5_000), Some(0), "the holder renews");
    host.advance(6_000);
    assert_eq!(
        store.sweep(&host, 2, 5_000),
        Some(0),
        "an expired lease is taken over"
    );
    assert_eq!(host.count("webhook_guard.store.swept"), 4);
    assert_eq!(host.count("webhook_guard.store.entries"), 0);
}

#[test]
fn init_keeps_existing_entries_across_a_reload() {
    let names = stats::global_counters();
    let host = MemHost::new(&names, T0);
    let store = Store::new("x", 1, 10);
    store.init(&host);
    let ClaimOutcome::Claimed(c) = store.claim(&host, T0, 0, hash(1), CLAIM_MS, T0 + DONE_MS)
    else {
        panic!()
    };
    store.commit(&host, &c);
    let reloaded = Store::new("x", 1, 10);
    reloaded.init(&host);
    assert_eq!(
        reloaded.claim(&host, T0, 0, hash(1), CLAIM_MS, T0 + DONE_MS),
        ClaimOutcome::Done
    );
}

#[test]
fn a_new_shard_count_carries_every_live_entry_over_in_both_backings() {
    // A reload that changes a policy's capacity (hence its shard count) must not forget the
    // deliveries it has seen: a replay inside the window would be admitted.
    for in_memory in [false, true] {
        let prefix = unique("layout");
        let host = MemHost::new(&stats::global_counters(), T0);
        let open = |shards: usize, capacity: usize| {
            let store = Store::new(&prefix, shards, capacity);
            if in_memory {
                store.in_memory()
            } else {
                store
            }
        };
        let before = open(3, 60);
        assert!(
            before.init(&host).is_empty(),
            "a first layout moves nothing"
        );
        for k in 0..20u8 {
            let ClaimOutcome::Claimed(c) =
                before.claim(&host, T0, 0, hash(k), CLAIM_MS, T0 + DONE_MS)
            else {
                panic!("claim {k}")
            };
            assert!(before.commit(&host, &c));
        }
        // One claimed but not settled, one already expired.
        let ClaimOutcome::Claimed(_) = before.claim(&host, T0, 0, hash(20), CLAIM_MS, T0 + DONE_MS)
        else {
            panic!()
        };
        let ClaimOutcome::Claimed(_) = before.claim(&host, T0, 0, hash(21), 1, T0 + 1) else {
            panic!()
        };
        host.advance(5);
        let now = T0 + 5;

        let after = open(7, 200);
        let lines = after.init(&host);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("from 3 to 7 shards; 21 live entries moved"),
            "{}",
            lines[0]
        );
        for k in 0..20u8 {
            assert_eq!(
                after.claim(&host, now, 0, hash(k), CLAIM_MS, now + DONE_MS),
                ClaimOutcome::Done,
                "key {k}"
            );
        }
        assert!(matches!(
            after.claim(&host, now, 0, hash(20), CLAIM_MS, now + DONE_MS),
            ClaimOutcome::InFlight { .. }
        ));
        assert!(matches!(
            after.claim(&host, now, 0, hash(21), CLAIM_MS, now + DONE_MS),
            ClaimOutcome::Claimed(_)
        ));
        // Moved once: the old shards are empty and a second configuration moves nothing.
        assert!(open(7, 200).init(&host).is_empty());
        assert_eq!(
            before
                .entries(&host)
                .iter()
                .filter(|e| e.expiry_ms > now)
                .count(),
            0
        );

        // Back to 3 shards: everything follows again (the old layout's shards were emptied,
        // so nothing stale comes back).
        let back = open(3, 60);
        assert_eq!(back.init(&host).len(), 1);
        for k in 0..20u8 {
            assert_eq!(
                back.claim(&host, now, 0, hash(k), CLAIM_MS, now + DONE_MS),
                ClaimOutcome::Done,
                "key {k} back"
            );
        }
    }
}

#[test]
fn a_moved_entry_never_downgrades_one_already_in_the_new_layout() {
    let prefix = unique("merge");
    let host = MemHost::new(&stats::global_counters(), T0);
    let old = Store::new(&prefix, 1, 10);
    old.init(&host);
    let ClaimOutcome::Claimed(c) = old.claim(&host, T0, 0, hash(1), CLAIM_MS, T0 + DONE_MS) else {
        panic!()
    };
    assert!(old.commit(&host, &c));
    // Another worker already runs the new layout (its record says 2) and claimed key 1 anew
    // there, and key 2 is in flight in the old layout only.
    let new = Store::new(&prefix, 2, 10);
    use webhook_guard_core::Host;
    for key in new.keys() {
        if let Ok(None) = host.shared_get(key) {
            let _ = host.shared_set(key, &[webhook_guard_core::dedup::shard::VERSION], None);
        }
    }
    let ClaimOutcome::Claimed(_) = new.claim(&host, T0, 0, hash(1), CLAIM_MS, T0 + DONE_MS) else {
        panic!()
    };
    assert_eq!(new.init(&host).len(), 1);
    assert_eq!(
        new.claim(&host, T0, 0, hash(1), CLAIM_MS, T0 + DONE_MS),
        ClaimOutcome::Done,
        "done beats in flight"
    );
}

// ---- through the Guard, as the filter drives it ----

fn github_guard(extra: Value, store: Value) -> Guard {
    let mut p = json!({"name": "gh", "match": {"path_prefix": "/"}, "provider": "github", "secrets": [{"inline": "s"}]});
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    compile(
        json!({"policies": [p], "store": store})
            .to_string()
            .as_bytes(),
        &|_| None,
    )
    .unwrap()
}

fn gh(g: &Guard, host: &MemHost, body: &[u8]) -> Result<Option<Hold>, Rejection> {
    let headers = common::github_headers(b"s", body);
    let pending = g.begin(host, 0, common::post("/"), &headers)?;
    g.finish(host, &pending, body).map(|a| a.claim)
}

#[test]
fn per_policy_store_gauges_capacity_at_configure_entries_at_each_sweep() {
    let g = github_guard(
        json!({"dedup": {"capacity": 500}}),
        json!({"capacity": 1000}),
    );
    let host = MemHost::new(g.counter_names(), T0);
    g.init_store(&host);
    assert_eq!(host.count("webhook_guard.policy.gh.store_capacity"), 500);
    for body in [&b"one"[..], b"two", b"three"] {
        let claim = gh(&g, &host, body).unwrap().unwrap();
        g.settle(&host, claim, Upstream::Answered(200));
    }
    assert!(g.sweep(&host, 1).is_some());
    assert_eq!(host.count("webhook_guard.policy.gh.store_entries"), 3);
    assert_eq!(host.count("webhook_guard.store.entries"), 3);
    host.advance(25 * 3600 * 1000);
    assert!(g.sweep(&host, 1).is_some());
    assert_eq!(host.count("webhook_guard.policy.gh.store_entries"), 0);
}

#[test]
fn replay_after_success_is_409_and_a_failed_delivery_can_be_retried() {
    let g = github_guard(json!({}), json!({}));
    let host = MemHost::new(g.counter_names(), T0);
    g.init_store(&host);
    // Backend 500: released, the retry is admitted.
    let claim = gh(&g, &host, b"one").unwrap().unwrap();
    g.settle(&host, claim.clone(), Upstream::Answered(500));
    let claim = gh(&g, &host, b"one").unwrap().unwrap();
    // While in flight, a twin gets 409 in_flight with Retry-After.
    let r = gh(&g, &host, b"one").unwrap_err();
    assert_eq!((r.status, r.reason), (409, Reason::InFlight));
    assert_eq!(r.headers, vec![("retry-after", "30".to_string())]);
    g.settle(&host, claim.clone(), Upstream::Answered(204));
    let r = gh(&g, &host, b"one").unwrap_err();
    assert_eq!((r.status, r.reason), (409, Reason::Replayed));
    assert_eq!(r.body, r#"{"error":"replayed","policy":"gh"}"#);
    assert_eq!(host.count("webhook_guard.store.released"), 1);
    assert_eq!(host.count("webhook_guard.policy.gh.reason.replayed"), 1);
    assert_eq!(host.count("webhook_guard.policy.gh.reason.in_flight"), 1);
    // A request that never reached the upstream releases too.
    let claim = gh(&g, &host, b"two").unwrap().unwrap();
    g.settle(&host, claim.clone(), Upstream::NotSent);
    assert!(gh(&g, &host, b"two").is_ok());
}

#[test]
fn an_unknown_outcome_is_kept_as_delivered_counted_and_logged() {
    // Sent upstream, then the client reset the stream: the backend may have processed it.
    // Releasing would hand whoever resets unlimited replays.
    let g = github_guard(json!({}), json!({}));
    let host = MemHost::new(g.counter_names(), T0);
    g.init_store(&host);
    let mut headers = common::github_headers(b"s", b"one");
    headers.push(("x-github-delivery".into(), b"d-1".to_vec()));
    let pending = g.begin(&host, 0, common::post("/"), &headers).unwrap();
    let claim = g.finish(&host, &pending, b"one").unwrap().claim.unwrap();
    assert!(g.settle(&host, claim, Upstream::Unknown).is_none());
    let r = gh(&g, &host, b"one").unwrap_err();
    assert_eq!((r.status, r.reason), (409, Reason::Replayed));
    host.advance(25 * 3600 * 1000);
    assert!(
        gh(&g, &host, b"one").is_ok(),
        "kept for the retention, not forever"
    );
    assert_eq!(host.count("webhook_guard.store.unknown_outcome"), 1);
    assert_eq!(host.count("webhook_guard.store.released"), 0);
    let line = host
        .logs()
        .into_iter()
        .find(|(_, l)| l.contains("webhook_unknown_outcome"))
        .unwrap();
    assert_eq!(line.0, Level::Warn);
    let v: Value = serde_json::from_str(&line.1).unwrap();
    assert_eq!(v["policy"], "gh");
    assert_eq!(v["action"], "kept");
    assert_eq!(v["delivery_id"], "d-1");
}

#[test]
fn an_unknown_outcome_can_be_released_by_policy() {
    let g = github_guard(
        json!({"dedup": {"on_unknown_outcome": "release"}}),
        json!({}),
    );
    let host = MemHost::new(g.counter_names(), T0);
    g.init_store(&host);
    let claim = gh(&g, &host, b"one").unwrap().unwrap();
    g.settle(&host, claim, Upstream::Unknown);
    assert!(gh(&g, &host, b"one").is_ok(), "the next copy is admitted");
    assert_eq!(host.count("webhook_guard.store.unknown_outcome"), 1);
    assert_eq!(host.count("webhook_guard.store.released"), 1);
    assert!(host
        .logs()
        .iter()
        .any(|(_, l)| l.contains(r#""action":"released""#)));
}

#[test]
fn retention_defaults_to_24h_without_a_signed_timestamp_and_can_be_set() {
    let g = github_guard(json!({}), json!({}));
    let host = MemHost::new(g.counter_names(), T0);
    let c = gh(&g, &host, b"x").unwrap().unwrap();
    g.settle(&host, c.clone(), Upstream::Answered(200));
    host.advance(24 * 3600 * 1000 - 1);
    assert_eq!(gh(&g, &host, b"x").unwrap_err().reason, Reason::Replayed);
    host.advance(1);
    assert!(gh(&g, &host, b"x").is_ok());

    let g = github_guard(json!({"dedup": {"retention_seconds": 5}}), json!({}));
    let host = MemHost::new(g.counter_names(), T0);
    let c = gh(&g, &host, b"x").unwrap().unwrap();
    g.settle(&host, c.clone(), Upstream::Answered(200));
    host.advance(5_000);
    assert!(gh(&g, &host, b"x").is_ok());
}

#[test]
fn stuck_claims_expire_after_the_claim_timeout() {
    let g = github_guard(json!({"dedup": {"claim_timeout_seconds": 2}}), json!({}));
    let host = MemHost::new(g.counter_names(), T0);
    let stuck = gh(&g, &host, b"x").unwrap().unwrap();
    host.advance(1_500);
    let r = gh(&g, &host, b"x").unwrap_err();
    assert_eq!((r.reason, r.headers[0].1.as_str()), (Reason::InFlight, "1"));
    host.advance(500);
    assert!(gh(&g, &host, b"x").unwrap().is_some());
    // The lapsed claim settling late neither removes the new claim nor counts as a release.
    g.settle(&host, stuck.clone(), Upstream::Answered(500));
    assert_eq!(host.count("webhook_guard.store.released"), 0);
    assert_eq!(gh(&g, &host, b"x").unwrap_err().reason, Reason::InFlight);
}

#[test]
fn acknowledge_answers_duplicates_with_200_and_commit_statuses_extend_success() {
    let g = github_guard(
        json!({"dedup": {"on_duplicate": "acknowledge", "commit_statuses": [409]}}),
        json!({}),
    );
    let host = MemHost::new(g.counter_names(), T0);
    let c = gh(&g, &host, b"x").unwrap().unwrap();
    g.settle(&host, c.clone(), Upstream::Answered(409));
    let r = gh(&g, &host, b"x").unwrap_err();
    assert_eq!((r.status, r.reason), (200, Reason::Replayed));
    assert_eq!(r.body, r#"{"status":"duplicate","policy":"gh"}"#);
}

#[test]
fn a_full_store_fails_closed_with_503() {
    let g = github_guard(json!({}), json!({"shards": 1, "capacity": 2}));
    let host = MemHost::new(g.counter_names(), T0);
    g.init_store(&host);
    assert!(gh(&g, &host, b"1").is_ok());
    assert!(gh(&g, &host, b"2").is_ok());
    let r = gh(&g, &host, b"3").unwrap_err();
    assert_eq!((r.status, r.reason), (503, Reason::StoreFull));
    assert_eq!(host.count("webhook_guard.policy.gh.reason.store_full"), 1);
    // A store that cannot be written (CAS never wins) also fails closed.
    let g = github_guard(json!({}), json!({}));
    let host = MemHost::new(g.counter_names(), T0);
    host.cas_failures.set(1000);
    let r = gh(&g, &host, b"4").unwrap_err();
    assert_eq!((r.status, r.reason), (503, Reason::StoreUnavailable));
}

#[test]
fn dedup_can_be_disabled() {
    let g = github_guard(json!({"dedup": {"enabled": false}}), json!({}));
    let host = MemHost::new(g.counter_names(), T0);
    assert_eq!(gh(&g, &host, b"x"), Ok(None));
    assert_eq!(gh(&g, &host, b"x"), Ok(None));
    assert!(!g.uses_store());
}

fn stripe_request(
    g: &Guard,
    host: &MemHost,
    t: u64,
    body: &str,
) -> Result<Option<Hold>, Rejection> {
    let mac = compute_mac(
        Algorithm::HmacSha256,
        b"whsec_x",
        &[format!("{t}.").as_bytes(), body.as_bytes()],
    )
    .unwrap();
    let headers = vec![(
        "stripe-signature".to_string(),
        format!("t={t},v1={}", hex::encode(mac)).into_bytes(),
    )];
    let info = RequestInfo {
        route_name: None,
        method: "POST".into(),
        path: "/".into(),
    };
    let pending = g.begin(host, 0, info, &headers)?;
    g.finish(host, &pending, body.as_bytes()).map(|a| a.claim)
}

#[test]
fn stripe_retry_resigned_with_a_new_timestamp_is_a_duplicate_by_event_id() {
    let doc = json!({"policies": [{"name": "st", "match": {"path_prefix": "/"}, "provider": "stripe", "secrets": [{"inline": "whsec_x"}]}]});
    let g = compile(doc.to_string().as_bytes(), &|_| None).unwrap();
    let host = MemHost::new(g.counter_names(), T0);
    let t = T0 / 1000;
    let c = stripe_request(&g, &host, t, r#"{"id":"evt_1","attempt":1}"#)
        .unwrap()
        .unwrap();
    g.settle(&host, c.clone(), Upstream::Answered(200));
    host.advance(60_000);
    let r = stripe_request(&g, &host, t + 60, r#"{"id":"evt_1","attempt":2}"#).unwrap_err();
    assert_eq!(r.reason, Reason::Replayed);
    // A different event is admitted; a body without an id falls back to the signature.
    assert!(stripe_request(&g, &host, t + 60, r#"{"id":"evt_2"}"#).is_ok());
    let c = stripe_request(&g, &host, t + 60, r#"{"no_id":1}"#)
        .unwrap()
        .unwrap();
    g.settle(&host, c.clone(), Upstream::Answered(200));
    assert_eq!(
        stripe_request(&g, &host, t + 60, r#"{"no_id":1}"#)
            .unwrap_err()
            .reason,
        Reason::Replayed
    );
    // Timestamped schemes keep "done" until the timestamp leaves the window, plus the margin.
    host.advance((300 + 60) * 1000);
    assert!(
        stripe_request(&g, &host, t + 60, r#"{"no_id":1}"#)
            .unwrap_err()
            .reason
            == Reason::TimestampOutOfWindow
    );
}

#[test]
fn store_keys_are_prefixed_by_plugin_and_config_checks_dedup_fields() {
    let doc = json!({"policies": [{"name": "gh", "match": {"path_prefix": "/"}, "provider": "github", "secrets": [{"inline": "s"}]}]});
    let g = compile_for_plugin(doc.to_string().as_bytes(), &|_| None, "hooks").unwrap();
    // Unset `store.shards`: one shard per 32 entries of the policy's share (100 000).
    assert!(g
        .store()
        .keys()
        .all(|k| k.starts_with("webhook_guard/hooks/v3/")));
    assert!(g
        .store()
        .keys()
        .any(|k| k == "webhook_guard/hooks/v3/gh/3125/shard/3124"));
    assert_eq!(
        g.store().keys().count(),
        3126,
        "3125 shards + the sweep lease"
    );
    // Capacity is split with headroom for uneven hashing; one shard gets exactly its share.
    assert_eq!(
        webhook_guard_core::dedup::per_shard_capacity(100_000, 1024),
        98 + 40
    );
    assert_eq!(webhook_guard_core::dedup::per_shard_capacity(3, 1), 3);
    assert_eq!(webhook_guard_core::dedup::per_shard_capacity(10, 4), 3 + 7);

    let bad = |dedup: Value| {
        let doc = json!({"policies": [{"name": "c", "match": {"path_prefix": "/"}, "provider": "custom",
            "custom": {"signature_header": "X-Sig", "signed_template": "{header:X-Id}.{body}"},
            "secrets": [{"inline": "s"}], "dedup": dedup}]});
        compile(doc.to_string().as_bytes(), &|_| None)
            .err()
            .map(|e| e.to_string())
    };
    assert_eq!(
        bad(json!({"key": {"source": "header", "name": "X-Id"}})),
        None
    );
    assert!(
        bad(json!({"key": {"source": "header", "name": "X-Delivery"}}))
            .unwrap()
            .contains("policies[0].dedup.key.name")
    );
    assert!(
        bad(json!({"key": {"source": "json_pointer", "pointer": "id"}}))
            .unwrap()
            .contains("policies[0].dedup.key.pointer")
    );
    assert!(bad(json!({"key": {"source": "body"}}))
        .unwrap()
        .contains("policies[0].dedup.key"));
    assert!(bad(json!({"retention_seconds": 0}))
        .unwrap()
        .contains("retention_seconds"));
    assert!(bad(json!({"claim_timeout_seconds": 0}))
        .unwrap()
        .contains("claim_timeout_seconds"));
    assert!(bad(json!({"on_duplicate": "ignore"}))
        .unwrap()
        .contains("on_duplicate"));
    let store_err = |store: Value| {
        compile(
            json!({"policies": [{"name": "g", "match": {"path_prefix": "/"}, "provider": "github",
            "secrets": [{"inline": "s"}]}], "store": store})
            .to_string()
            .as_bytes(),
            &|_| None,
        )
        .unwrap_err()
        .to_string()
    };
    assert!(store_err(json!({"shards": 0})).contains("store.shards"));
    assert!(store_err(json!({"shards": 8, "capacity": 4})).contains("store.capacity"));
    assert!(store_err(json!({"key_prefix": ""})).contains("store.key_prefix"));
}

#[test]
fn a_legacy_sha1_copy_of_a_delivery_is_still_a_replay() {
    let g = github_guard(json!({"accept_legacy_sha1": true}), json!({}));
    let host = MemHost::new(g.counter_names(), T0);
    let body = b"payload";
    let c = gh(&g, &host, body).unwrap().unwrap();
    g.settle(&host, c.clone(), Upstream::Answered(200));
    // The same body, signed by the same secret but sent with only the SHA-1 header.
    let sha1 = format!(
        "sha1={}",
        hex::encode(compute_mac(Algorithm::HmacSha1, b"s", &[body]).unwrap())
    );
    let headers = vec![("x-hub-signature".to_string(), sha1.into_bytes())];
    let info = RequestInfo {
        route_name: None,
        method: "POST".into(),
        path: "/".into(),
    };
    let pending = g.begin(&host, 0, info, &headers).unwrap();
    assert_eq!(
        g.finish(&host, &pending, body).unwrap_err().reason,
        Reason::Replayed
    );
}

#[test]
fn a_failed_commit_is_counted_and_logged() {
    let g = github_guard(json!({}), json!({}));
    let host = MemHost::new(g.counter_names(), T0);
    let c = gh(&g, &host, b"x").unwrap().unwrap();
    host.cas_failures.set(10_000);
    g.settle(&host, c.clone(), Upstream::Answered(200));
    assert_eq!(host.count("webhook_guard.store.commit_failed"), 1);
    assert!(host
        .logs()
        .iter()
        .any(|(_, l)| l.contains("could not commit")));
}

#[test]
fn a_retention_shorter_than_the_window_is_flagged() {
    let doc = json!({"policies": [{"name": "s", "match": {"path_prefix": "/"}, "provider": "slack",
        "secrets": [{"inline": "k"}], "dedup": {"retention_seconds": 60}}]});
    let g = compile(doc.to_string().as_bytes(), &|_| None).unwrap();
    assert!(g
        .notices()
        .iter()
        .any(|(_, m)| m.contains("retention_seconds is shorter")));
}

#[test]
fn envoys_record_of_a_failed_request_classifies_its_outcome() {
    // Flags and attempt counts as Envoy 1.40 reported them (measured; see
    // docs/replay-protection.md#outcomes).
    const UH: u64 = 1 << 1;
    const UT: u64 = 1 << 2;
    const UR: u64 = 1 << 4;
    const UF: u64 = 1 << 5;
    const UC: u64 = 1 << 6;
    const UO: u64 = 1 << 7;
    const NR: u64 = 1 << 8;
    const DC: u64 = 1 << 14;
    const URX: u64 = 1 << 15;
    const NC: u64 = 1 << 24;
    const DR: u64 = 1 << 28;
    // Never left: connection refused or timed out, no healthy host, overflow, no route.
    for flags in [UF, UH, UO, NR, NC, 0] {
        assert_eq!(
            Upstream::after_local_reply(flags, 1),
            Upstream::NotSent,
            "{flags:#x}"
        );
    }
    // Sent, no answer: route timeout, upstream reset or closed mid-request.
    for flags in [UT, UC, UR, UT | UC] {
        assert_eq!(
            Upstream::after_local_reply(flags, 1),
            Upstream::Unknown,
            "{flags:#x}"
        );
    }
    // With retries, the first attempt may have reached the backend before the last refused.
    assert_eq!(Upstream::after_local_reply(UF | URX, 2), Upstream::Unknown);
    assert_eq!(Upstream::after_local_reply(UF, 3), Upstream::Unknown);
    // Client reset (DC, or an HTTP/2 RST_STREAM: DR) after the upstream connection was ready:
    // the request was written; before it (connect pending): it never left.
    let _ = (DC, DR);
    assert_eq!(Upstream::after_stream_end(true, 1), Upstream::Unknown);
    assert_eq!(Upstream::after_stream_end(false, 1), Upstream::NotSent);
    assert_eq!(Upstream::after_stream_end(false, 2), Upstream::Unknown);
    assert_eq!(Upstream::after_stream_end(false, 0), Upstream::NotSent);
}
