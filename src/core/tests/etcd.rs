// Test code: a panic is a test failure, which is what we want here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! The etcd tier as the filter drives it, against a model of etcd's v3 gateway (txn, put,
//! lease grant, lease expiry), with several replicas (separate hosts and guards) sharing it.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use base64::Engine;
use proptest::prelude::*;
use serde_json::{json, Value};
use webhook_guard_core::memhost::MemHost;
use webhook_guard_core::{
    compile, Drive, Guard, Hold, Reason, Rejection, RemoteCall, RemoteReply, RemoteTask,
    RequestInfo, Upstream,
};

const T0: u64 = 1_700_000_000_000;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Key -> (value, lease id).
type Kv = BTreeMap<Vec<u8>, (Vec<u8>, i64)>;

/// etcd as the gateway shows it: keys with values and leases, leases with expiries.
#[derive(Default)]
struct FakeEtcd {
    kv: RefCell<Kv>,
    leases: RefCell<BTreeMap<i64, u64>>,
    next_lease: Cell<i64>,
    revision: Cell<u64>,
    down: Cell<bool>,
    calls: RefCell<Vec<String>>,
}

fn b64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap()).unwrap()
}

fn int(v: &Value) -> i64 {
    v.as_str()
        .map_or_else(|| v.as_i64().unwrap(), |s| s.parse().unwrap())
}

impl FakeEtcd {
    fn expire(&self, now: u64) {
        let dead: Vec<i64> = self
            .leases
            .borrow()
            .iter()
            .filter(|(_, exp)| **exp <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.leases.borrow_mut().remove(&id);
            self.kv.borrow_mut().retain(|_, (_, l)| *l != id);
        }
    }

    fn ok(&self, mut body: Value) -> RemoteReply {
        body["header"] = json!({"revision": self.revision.get().to_string()});
        RemoteReply {
            status: Some(200),
            body: body.to_string().into_bytes(),
        }
    }

    fn lease_missing() -> RemoteReply {
        RemoteReply {
            status: Some(404),
            body: br#"{"error":"etcdserver: requested lease not found","code":5}"#.to_vec(),
        }
    }

    fn put(&self, req: &Value) -> Option<RemoteReply> {
        let lease = req.get("lease").map_or(0, int);
        if lease != 0 && !self.leases.borrow().contains_key(&lease) {
            return Some(Self::lease_missing());
        }
        self.revision.set(self.revision.get() + 1);
        self.kv
            .borrow_mut()
            .insert(b64(&req["key"]), (b64(&req["value"]), lease));
        None
    }

    fn handle(&self, call: &RemoteCall, now: u64) -> RemoteReply {
        self.calls.borrow_mut().push(call.path.to_string());
        if self.down.get() {
            return RemoteReply::default();
        }
        self.expire(now);
        let req: Value = serde_json::from_slice(&call.body).unwrap();
        match call.path {
            "/v3/lease/grant" => {
                let id = self.next_lease.get() + 7;
                self.next_lease.set(id);
                let ttl = u64::try_from(int(&req["TTL"])).unwrap();
                self.leases.borrow_mut().insert(id, now + ttl * 1000);
                self.ok(json!({"ID": id.to_string(), "TTL": ttl.to_string()}))
            }
            "/v3/kv/put" => match self.put(&req) {
                Some(err) => err,
                None => self.ok(json!({})),
            },
            "/v3/kv/txn" => {
                let cmp = &req["compare"][0];
                let key = b64(&cmp["key"]);
                let current = self.kv.borrow().get(&key).cloned();
                let holds = match cmp["target"].as_str().unwrap() {
                    "CREATE" => current.is_none(),
                    "VALUE" => current.as_ref().map(|(v, _)| v.clone()) == Some(b64(&cmp["value"])),
                    other => panic!("unexpected compare {other}"),
                };
                let branch = if holds { "success" } else { "failure" };
                let mut responses = Vec::new();
                for op in req[branch].as_array().cloned().unwrap_or_default() {
                    if let Some(put) = op.get("request_put") {
                        if let Some(err) = self.put(put) {
                            return err;
                        }
                        responses.push(json!({"response_put": {}}));
                    } else if let Some(range) = op.get("request_range") {
                        let kvs: Vec<Value> = self
                            .kv
                            .borrow()
                            .get(&b64(&range["key"]))
                            .map(|(v, _)| json!({"value": B64.encode(v)}))
                            .into_iter()
                            .collect();
                        responses.push(json!({"response_range": {"kvs": kvs}}));
                    } else if let Some(del) = op.get("request_delete_range") {
                        self.revision.set(self.revision.get() + 1);
                        self.kv.borrow_mut().remove(&b64(&del["key"]));
                        responses.push(json!({"response_delete_range": {"deleted": "1"}}));
                    }
                }
                let mut body = json!({"responses": responses});
                if holds {
                    body["succeeded"] = json!(true);
                }
                self.ok(body)
            }
            other => panic!("unexpected path {other}"),
        }
    }
}

/// One Envoy replica: its own compiled config and shared data.
struct Replica {
    guard: Guard,
    host: MemHost,
}

fn replica(store: Value, now: &Cell<u64>) -> Replica {
    let policy = json!({
        "name": "gh", "match": {"path_prefix": "/"}, "provider": "github",
        "secrets": [{"inline": "s"}],
        "store": store,
    });
    let guard = compile(
        json!({"policies": [policy]}).to_string().as_bytes(),
        &|_| None,
    )
    .unwrap();
    let host = MemHost::new(guard.counter_names(), now.get());
    guard.init_store(&host);
    Replica { guard, host }
}

fn etcd_store() -> Value {
    json!({"type": "etcd", "cluster": "etcd", "prefix": "wg/test"})
}

/// What a request got once every callout was answered.
#[derive(Debug)]
enum Got {
    Admitted(Hold),
    Rejected(Rejection),
    Unprotected,
}

impl Replica {
    /// Verification up to the remote claim (or a decision without one).
    fn begin(&self, body: &[u8]) -> Result<RemoteTask, Got> {
        let headers = common::github_headers(b"s", body);
        let pending = self
            .guard
            .begin(&self.host, 0, common::post("/hook"), &headers)
            .map_err(Got::Rejected)?;
        match self.guard.finish(&self.host, &pending, body) {
            Err(r) => Err(Got::Rejected(r)),
            Ok(a) => match (a.remote, a.claim) {
                (Some(task), _) => Ok(task),
                (None, Some(hold)) => Err(Got::Admitted(hold)),
                (None, None) => Err(Got::Unprotected),
            },
        }
    }

    /// Runs a task to completion against `etcd`.
    fn run(&self, etcd: &FakeEtcd, mut task: RemoteTask) -> Drive {
        let mut reply = None;
        for _ in 0..10 {
            match self.guard.drive(&self.host, &mut task, reply.as_ref()) {
                Drive::Call(call) => reply = Some(etcd.handle(&call, self.host.now_ms.get())),
                other => return other,
            }
        }
        panic!("task did not finish");
    }

    fn deliver(&self, etcd: &FakeEtcd, body: &[u8]) -> Got {
        match self.begin(body) {
            Err(got) => got,
            Ok(task) => match self.run(etcd, task) {
                Drive::Admit(a) => Got::Admitted(a.claim.unwrap()),
                Drive::Reject(r) => Got::Rejected(r),
                Drive::PassUnprotected => Got::Unprotected,
                other => panic!("unexpected {other:?}"),
            },
        }
    }

    fn settle(&self, etcd: &FakeEtcd, hold: &Hold, outcome: Upstream) {
        let task = self
            .guard
            .settle(&self.host, hold.clone(), outcome)
            .unwrap();
        assert!(matches!(self.run(etcd, task), Drive::Settled));
    }

    fn advance(&self, ms: u64) {
        self.host.advance(ms);
    }
}

fn reason(got: &Got) -> Option<Reason> {
    match got {
        Got::Rejected(r) => Some(r.reason),
        _ => None,
    }
}

fn admitted(got: Got) -> Hold {
    match got {
        Got::Admitted(h) => h,
        other => panic!("expected admission, got {other:?}"),
    }
}

#[test]
fn a_delivery_is_admitted_once_across_replicas() {
    let now = Cell::new(T0);
    let etcd = FakeEtcd::default();
    let (a, b) = (replica(etcd_store(), &now), replica(etcd_store(), &now));
    let hold = admitted(a.deliver(&etcd, b"one"));
    // The twin on the other replica while the first is in flight.
    let twin = b.deliver(&etcd, b"one");
    assert_eq!(reason(&twin), Some(Reason::InFlight));
    let Got::Rejected(r) = twin else { panic!() };
    assert_eq!(r.headers, vec![("retry-after", "30".to_string())]);
    a.settle(&etcd, &hold, Upstream::Answered(200));
    // The replay on the other replica asks etcd once, then knows it locally.
    assert_eq!(reason(&b.deliver(&etcd, b"one")), Some(Reason::Replayed));
    let calls = etcd.calls.borrow().len();
    assert_eq!(reason(&b.deliver(&etcd, b"one")), Some(Reason::Replayed));
    assert_eq!(
        etcd.calls.borrow().len(),
        calls,
        "a cached replay costs no call"
    );
    assert_eq!(b.host.count("webhook_guard.etcd.cache_hits"), 1);
    // The replica that committed knows it too.
    assert_eq!(reason(&a.deliver(&etcd, b"one")), Some(Reason::Replayed));
    assert_eq!(a.host.count("webhook_guard.etcd.cache_hits"), 1);
    assert_eq!(a.host.count("webhook_guard.policy.gh.accepted"), 1);
    assert_eq!(b.host.count("webhook_guard.policy.gh.accepted"), 0);
    assert_eq!(b.host.count("webhook_guard.policy.gh.reason.in_flight"), 1);
    assert_eq!(b.host.count("webhook_guard.policy.gh.reason.replayed"), 2);
    // Every reply was counted and put in a latency bucket.
    let a_calls = a.host.count("webhook_guard.etcd.calls");
    assert!(a_calls >= 3, "{a_calls}");
    let buckets: i64 = a
        .host
        .counts()
        .iter()
        .filter(|(k, _)| k.starts_with("webhook_guard.etcd.latency."))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(buckets, a_calls);
}

#[test]
fn a_failed_delivery_is_released_and_its_retry_admitted_on_another_replica() {
    let now = Cell::new(T0);
    let etcd = FakeEtcd::default();
    let (a, b) = (replica(etcd_store(), &now), replica(etcd_store(), &now));
    let hold = admitted(a.deliver(&etcd, b"one"));
    a.settle(&etcd, &hold, Upstream::Answered(500));
    assert_eq!(a.host.count("webhook_guard.store.released"), 1);
    let hold = admitted(b.deliver(&etcd, b"one"));
    // A stream that ended without an answer releases too.
    b.settle(&etcd, &hold, Upstream::NotSent);
    let hold = admitted(a.deliver(&etcd, b"one"));
    a.settle(&etcd, &hold, Upstream::Answered(204));
    assert_eq!(reason(&b.deliver(&etcd, b"one")), Some(Reason::Replayed));
}

#[test]
fn a_release_never_deletes_a_later_claim() {
    let now = Cell::new(T0);
    let etcd = FakeEtcd::default();
    let (a, b) = (replica(etcd_store(), &now), replica(etcd_store(), &now));
    let stale = admitted(a.deliver(&etcd, b"one"));
    // A's claim lapses with its lease; B claims the key.
    a.advance(40_000);
    b.advance(40_000);
    let fresh = admitted(b.deliver(&etcd, b"one"));
    // A's backend finally fails: its release must leave B's claim alone.
    a.settle(&etcd, &stale, Upstream::Answered(502));
    assert_eq!(a.host.count("webhook_guard.store.released"), 0);
    assert_eq!(reason(&a.deliver(&etcd, b"one")), Some(Reason::InFlight));
    b.settle(&etcd, &fresh, Upstream::Answered(200));
    assert_eq!(reason(&a.deliver(&etcd, b"one")), Some(Reason::Replayed));
}

#[test]
fn leases_are_shared_per_bucket_not_granted_per_request() {
    let now = Cell::new(T0);
    let etcd = FakeEtcd::default();
    let a = replica(etcd_store(), &now);
    for i in 0..50 {
        let hold = admitted(a.deliver(&etcd, format!("d{i}").as_bytes()));
        a.settle(&etcd, &hold, Upstream::Answered(200));
    }
    // One lease for the claims' bucket, one for the commits' (24 h retention), maybe one more
    // if T0 sits on a bucket edge.
    let grants = a.host.count("webhook_guard.etcd.leases_granted");
    assert!((2..=3).contains(&grants), "{grants} grants");
    assert_eq!(
        etcd.calls
            .borrow()
            .iter()
            .filter(|p| *p == "/v3/lease/grant")
            .count(),
        usize::try_from(grants).unwrap()
    );
    // Later buckets get their own lease.
    a.advance(10 * 60_000);
    let hold = admitted(a.deliver(&etcd, b"later"));
    a.settle(&etcd, &hold, Upstream::Answered(200));
    assert!(a.host.count("webhook_guard.etcd.leases_granted") > grants);
}

#[test]
fn upkeep_grants_leases_ahead_so_requests_never_wait_for_one() {
    let now = Cell::new(T0 + 1_234);
    let etcd = FakeEtcd::default();
    let a = replica(etcd_store(), &now);
    for second in 0..10u64 {
        // The root's tick: grants for the coming claims and commits.
        for task in a.guard.remote_upkeep(&a.host) {
            assert!(matches!(a.run(&etcd, task), Drive::Settled));
        }
        let before = etcd.calls.borrow().len();
        for i in 0..5 {
            let hold = admitted(a.deliver(&etcd, format!("s{second}-{i}").as_bytes()));
            a.settle(&etcd, &hold, Upstream::Answered(200));
        }
        let calls: Vec<String> = etcd.calls.borrow()[before..].to_vec();
        assert_eq!(calls.len(), 10, "{calls:?}");
        assert!(!calls.iter().any(|p| p == "/v3/lease/grant"), "{calls:?}");
        a.advance(1_000);
    }
    // One claim bucket per 2 s, one commit bucket per minute: a handful, not one per request.
    let grants = a.host.count("webhook_guard.etcd.leases_granted");
    assert!((5..=12).contains(&grants), "{grants}");
    // A tick with nothing new to grant calls nothing.
    let tasks = a.guard.remote_upkeep(&a.host);
    assert!(tasks.len() <= 2, "{}", tasks.len());
}

#[test]
fn policies_on_one_cluster_share_their_leases() {
    let policy = |name: &str, cluster: &str| {
        json!({
            "name": name, "match": {"path_prefix": format!("/{name}")}, "provider": "github",
            "secrets": [{"inline": "s"}], "store": {"type": "etcd", "cluster": cluster},
        })
    };
    let upkeep_calls = |policies: Value| {
        let guard = compile(
            json!({ "policies": policies }).to_string().as_bytes(),
            &|_| None,
        )
        .unwrap();
        let host = MemHost::new(guard.counter_names(), T0);
        guard.remote_upkeep(&host).len()
    };
    let one = upkeep_calls(json!([policy("a", "etcd")]));
    assert!(one > 0);
    assert_eq!(
        upkeep_calls(json!([policy("a", "etcd"), policy("b", "etcd")])),
        one
    );
    assert_eq!(
        upkeep_calls(json!([policy("a", "etcd"), policy("b", "other")])),
        2 * one
    );
}

#[test]
fn keys_expire_with_their_leases() {
    let now = Cell::new(T0);
    let etcd = FakeEtcd::default();
    let store = json!({"type": "etcd", "cluster": "etcd"});
    let a = replica(store.clone(), &now);
    let b = replica(store, &now);
    // A claim whose requester vanished lapses with its lease (30 s, plus at most a bucket).
    let _lost = admitted(a.deliver(&etcd, b"one"));
    b.advance(29_000);
    assert_eq!(reason(&b.deliver(&etcd, b"one")), Some(Reason::InFlight));
    b.advance(5_000);
    let hold = admitted(b.deliver(&etcd, b"one"));
    b.settle(&etcd, &hold, Upstream::Answered(200));
    // Without a signed timestamp, done lasts 24 h (plus at most a minute of bucket).
    let c = replica(
        json!({"type": "etcd", "cluster": "etcd"}),
        &Cell::new(b.host.now_ms.get()),
    );
    c.advance(24 * 3600 * 1000 - 1_000);
    assert_eq!(reason(&c.deliver(&etcd, b"one")), Some(Reason::Replayed));
    c.advance(62_000);
    let c2 = replica(
        json!({"type": "etcd", "cluster": "etcd"}),
        &Cell::new(c.host.now_ms.get()),
    );
    assert!(matches!(c2.deliver(&etcd, b"one"), Got::Admitted(_)));
}

#[test]
fn an_expired_cached_lease_is_granted_again_once() {
    let now = Cell::new(T0);
    let etcd = FakeEtcd::default();
    let a = replica(etcd_store(), &now);
    let hold = admitted(a.deliver(&etcd, b"one"));
    a.settle(&etcd, &hold, Upstream::Answered(200));
    // etcd lost its leases (restored from an old snapshot, or revoked by an operator).
    etcd.leases.borrow_mut().clear();
    let hold = admitted(a.deliver(&etcd, b"two"));
    a.settle(&etcd, &hold, Upstream::Answered(200));
    assert_eq!(a.host.count("webhook_guard.etcd.errors"), 0);
    assert_eq!(reason(&a.deliver(&etcd, b"two")), Some(Reason::Replayed));
}

#[test]
fn an_unreachable_store_denies_by_default_and_recovers() {
    let now = Cell::new(T0);
    let etcd = FakeEtcd::default();
    let a = replica(etcd_store(), &now);
    etcd.down.set(true);
    let got = a.deliver(&etcd, b"one");
    let Got::Rejected(r) = got else {
        panic!("{got:?}")
    };
    assert_eq!((r.status, r.reason), (503, Reason::StoreUnavailable));
    assert_eq!(r.body, r#"{"error":"store_unavailable","policy":"gh"}"#);
    assert_eq!(a.host.count("webhook_guard.etcd.errors"), 1);
    assert_eq!(a.host.count("webhook_guard.policy.gh.accepted"), 0);
    let logs = a.host.logs();
    assert!(
        logs.iter()
            .any(|(_, l)| l.contains(r#""event":"webhook_store_error""#)
                && l.contains(r#""error":"unreachable""#)),
        "{logs:?}"
    );
    etcd.down.set(false);
    let hold = admitted(a.deliver(&etcd, b"one"));
    a.settle(&etcd, &hold, Upstream::Answered(200));
}

#[test]
fn on_error_allow_forwards_unprotected_and_counts_it() {
    let now = Cell::new(T0);
    let etcd = FakeEtcd::default();
    let a = replica(
        json!({"type": "etcd", "cluster": "etcd", "on_error": "allow"}),
        &now,
    );
    etcd.down.set(true);
    assert!(matches!(a.deliver(&etcd, b"one"), Got::Unprotected));
    assert_eq!(a.host.count("webhook_guard.etcd.failed_open"), 1);
    assert_eq!(a.host.count("webhook_guard.policy.gh.accepted"), 1);
    // Forged deliveries are still rejected: only the store's verdict is skipped.
    let r = a.guard.begin(
        &a.host,
        0,
        RequestInfo {
            method: "POST".into(),
            ..RequestInfo::default()
        },
        &[(
            "x-hub-signature-256".to_string(),
            format!("sha256={}", "0".repeat(64)).into_bytes(),
        )],
    );
    let pending = r.unwrap();
    assert_eq!(
        a.guard.finish(&a.host, &pending, b"x").unwrap_err().reason,
        Reason::InvalidSignature
    );
}

#[test]
fn a_claim_applied_after_its_call_failed_is_released_for_the_retry() {
    let now = Cell::new(T0);
    let etcd = FakeEtcd::default();
    let (a, b) = (replica(etcd_store(), &now), replica(etcd_store(), &now));
    // The claim reaches etcd, but its answer is lost (Envoy timed the call out first).
    let mut task = a.begin(b"one").unwrap();
    let mut reply = None;
    let rejected = loop {
        match a.guard.drive(&a.host, &mut task, reply.as_ref()) {
            Drive::Call(call) => {
                let answer = etcd.handle(&call, T0);
                reply = Some(if call.path == "/v3/kv/txn" {
                    RemoteReply::default()
                } else {
                    answer
                });
            }
            Drive::Reject(r) => break r,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(rejected.reason, Reason::StoreUnavailable);
    // Without a release, the provider's retry would meet our orphan claim for 30 s.
    assert_eq!(reason(&b.deliver(&etcd, b"one")), Some(Reason::InFlight));
    let release = a.guard.orphaned_claim(task).unwrap();
    assert!(matches!(a.run(&etcd, release), Drive::Settled));
    assert!(matches!(b.deliver(&etcd, b"one"), Got::Admitted(_)));
    // A claim that succeeded leaves nothing to clean up.
    let mut task = a.begin(b"two").unwrap();
    let mut reply = None;
    loop {
        match a.guard.drive(&a.host, &mut task, reply.as_ref()) {
            Drive::Call(call) => reply = Some(etcd.handle(&call, T0)),
            Drive::Admit(_) => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(a.guard.orphaned_claim(task).is_none());
}

#[test]
fn a_failed_release_is_retried_until_its_claim_would_lapse() {
    let now = Cell::new(T0);
    let etcd = FakeEtcd::default();
    let (a, b) = (replica(etcd_store(), &now), replica(etcd_store(), &now));
    let hold = admitted(a.deliver(&etcd, b"one"));
    etcd.down.set(true);
    let mut task = a
        .guard
        .settle(&a.host, hold.clone(), Upstream::Answered(503))
        .unwrap();
    let attempt = |task: &mut RemoteTask| {
        let mut reply = None;
        loop {
            match a.guard.drive(&a.host, task, reply.as_ref()) {
                Drive::Call(call) => reply = Some(etcd.handle(&call, a.host.now_ms.get())),
                other => return other,
            }
        }
    };
    assert!(matches!(attempt(&mut task), Drive::RetryLater));
    a.advance(1_000);
    assert!(matches!(attempt(&mut task), Drive::RetryLater));
    // One log line for the outage, not one per retry; every failure is counted.
    let logged = a
        .host
        .logs()
        .iter()
        .filter(|(_, l)| l.contains(r#""operation":"release""#))
        .count();
    assert_eq!(logged, 1);
    assert_eq!(a.host.count("webhook_guard.etcd.errors"), 2);
    etcd.down.set(false);
    assert!(matches!(attempt(&mut task), Drive::Settled));
    assert_eq!(a.host.count("webhook_guard.store.released"), 1);
    assert!(matches!(b.deliver(&etcd, b"one"), Got::Admitted(_)));
    // Past the claim's own expiry a failed release is dropped: the lease takes over.
    let hold = admitted(a.deliver(&etcd, b"two"));
    etcd.down.set(true);
    let mut task = a
        .guard
        .settle(&a.host, hold.clone(), Upstream::NotSent)
        .unwrap();
    a.advance(31_000);
    assert!(matches!(attempt(&mut task), Drive::Settled));
}

#[test]
fn a_failed_commit_is_counted() {
    let now = Cell::new(T0);
    let etcd = FakeEtcd::default();
    let a = replica(etcd_store(), &now);
    let hold = admitted(a.deliver(&etcd, b"one"));
    etcd.down.set(true);
    a.settle(&etcd, &hold, Upstream::Answered(200));
    assert_eq!(a.host.count("webhook_guard.store.commit_failed"), 1);
    assert_eq!(a.host.count("webhook_guard.etcd.errors"), 1);
}

#[test]
fn an_abandoned_claim_is_released() {
    let now = Cell::new(T0);
    let etcd = FakeEtcd::default();
    let (a, b) = (replica(etcd_store(), &now), replica(etcd_store(), &now));
    // The claim txn reached etcd, but the client left before the answer came back.
    let mut task = a.begin(b"one").unwrap();
    let Drive::Call(grant) = a.guard.drive(&a.host, &mut task, None) else {
        panic!()
    };
    let reply = etcd.handle(&grant, T0);
    let Drive::Call(txn) = a.guard.drive(&a.host, &mut task, Some(&reply)) else {
        panic!()
    };
    etcd.handle(&txn, T0);
    assert_eq!(reason(&b.deliver(&etcd, b"one")), Some(Reason::InFlight));
    let release = a.guard.abandon(task).unwrap();
    assert!(matches!(a.run(&etcd, release), Drive::Settled));
    assert!(matches!(b.deliver(&etcd, b"one"), Got::Admitted(_)));
}

#[test]
fn config_is_checked() {
    let bad = |store: Value, needle: &str| {
        let policy = json!({
            "name": "gh", "match": {"path_prefix": "/"}, "provider": "github",
            "secrets": [{"inline": "s"}], "store": store,
        });
        let e = compile(
            json!({"policies": [policy]}).to_string().as_bytes(),
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(needle), "{e}");
    };
    bad(json!({"type": "etcd"}), "missing field `cluster`");
    bad(
        json!({"type": "etcd", "cluster": ""}),
        "policies[0].store.cluster",
    );
    bad(
        json!({"type": "etcd", "cluster": "e", "timeout_ms": 0}),
        "policies[0].store.timeout_ms",
    );
    bad(
        json!({"type": "etcd", "cluster": "e", "prefix": "/"}),
        "policies[0].store.prefix",
    );
    bad(json!({"type": "redis"}), "unknown variant `redis`");
    // A store without replay protection is a mistake, not a no-op.
    let policy = json!({
        "name": "gh", "match": {"path_prefix": "/"}, "provider": "github",
        "secrets": [{"inline": "s"}], "dedup": {"enabled": false},
        "store": {"type": "etcd", "cluster": "e"},
    });
    let e = compile(
        json!({"policies": [policy]}).to_string().as_bytes(),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("policies[0].store"), "{e}");
    let g = compile(
        json!({"policies": [{
            "name": "gh", "match": {"path_prefix": "/"}, "provider": "github",
            "secrets": [{"inline": "s"}], "store": {"type": "local"},
        }]})
        .to_string()
        .as_bytes(),
        &|_| None,
    )
    .unwrap();
    assert!(!g.uses_remote_store());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any interleaving of several replicas' claim steps, settles and clock moves keeps
    /// exactly-once admission: never two holders of one delivery, and a committed delivery is
    /// never admitted again while it is retained.
    #[test]
    fn interleaved_replicas_admit_each_delivery_once(
        script in proptest::collection::vec((0usize..3, 0u8..3, 0u8..6), 1..80)
    ) {
        let now = Cell::new(T0);
        let etcd = FakeEtcd::default();
        let replicas: Vec<Replica> = (0..3).map(|_| replica(etcd_store(), &now)).collect();
        // Per replica: tasks waiting on a reply, and admitted holds.
        let mut waiting: Vec<Vec<(u8, RemoteTask, Option<RemoteCall>)>> = vec![Vec::new(), Vec::new(), Vec::new()];
        let mut holders: BTreeMap<u8, usize> = BTreeMap::new();
        let mut held: Vec<(usize, u8, Hold)> = Vec::new();
        let mut committed: BTreeMap<u8, u64> = BTreeMap::new();
        for (r, delivery, action) in script {
            let rep = &replicas[r];
            match action {
                // A new copy of `delivery` arrives.
                0 | 1 => {
                    let body = format!("delivery-{delivery}");
                    match rep.begin(body.as_bytes()) {
                        Ok(task) => waiting[r].push((delivery, task, None)),
                        Err(Got::Rejected(rej)) => {
                            prop_assert!(matches!(rej.reason, Reason::Replayed | Reason::InFlight));
                        }
                        Err(other) => prop_assert!(false, "unexpected {:?}", other),
                    }
                }
                // Advance the oldest waiting task by one call.
                2 | 3 => {
                    if waiting[r].is_empty() { continue; }
                    let (delivery, mut task, call) = waiting[r].remove(0);
                    let reply = call.map(|c| etcd.handle(&c, now.get()));
                    match rep.guard.drive(&rep.host, &mut task, reply.as_ref()) {
                        Drive::Call(c) => waiting[r].push((delivery, task, Some(c))),
                        Drive::Admit(a) => {
                            prop_assert!(!holders.contains_key(&delivery), "two holders of {}", delivery);
                            if let Some(exp) = committed.get(&delivery) {
                                prop_assert!(now.get() >= *exp, "committed {} admitted again", delivery);
                            }
                            holders.insert(delivery, r);
                            held.push((r, delivery, a.claim.unwrap()));
                        }
                        Drive::Reject(rej) => {
                            prop_assert!(matches!(rej.reason, Reason::Replayed | Reason::InFlight));
                        }
                        other => prop_assert!(false, "unexpected {:?}", other),
                    }
                }
                // The oldest holder's backend answers: 200 or 500.
                4 => {
                    if held.is_empty() { continue; }
                    let (hr, delivery, hold) = held.remove(0);
                    let ok = delivery % 2 == 0;
                    replicas[hr].settle(&etcd, &hold, Upstream::Answered(if ok { 200 } else { 500 }));
                    holders.remove(&delivery);
                    if ok {
                        // 24 h retention (no signed timestamp): within this script, forever.
                        committed.insert(delivery, u64::MAX);
                    }
                }
                // Time passes (80 steps stay well inside a claim's 30 s lifetime).
                _ => {
                    now.set(now.get() + 300);
                    for rep in &replicas { rep.advance(300); }
                }
            }
        }
    }
}
