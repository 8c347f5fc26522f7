//! Counter names. All are defined once at configure time (bounded by the policy list),
//! never per request. Envoy shows them as `wasmcustom.<name>`.

use crate::reason::Reason;

pub const PREFIX: &str = "webhook_guard";

pub const UNMATCHED_PASSED: usize = 0;
pub const UNMATCHED_DENIED: usize = 1;
/// The only gauge: entries in the replay store, as counted by the last sweep.
pub const STORE_ENTRIES: usize = 2;
pub const STORE_CAS_RETRIES: usize = 3;
pub const STORE_SWEEPS: usize = 4;
pub const STORE_SWEPT: usize = 5;
pub const STORE_RELEASED: usize = 6;
pub const STORE_COMMIT_FAILED: usize = 7;
/// etcd round trips (each reply or failure to reply).
pub const ETCD_CALLS: usize = 8;
pub const ETCD_ERRORS: usize = 9;
/// `on_error: allow` forwarded a verified delivery without a claim.
pub const ETCD_FAILED_OPEN: usize = 10;
/// A replay answered from this proxy's shared data, without a round trip.
pub const ETCD_CACHE_HITS: usize = 11;
pub const ETCD_LEASES_GRANTED: usize = 12;
/// Forwarded deliveries that got no answer (kept as delivered, or released per the policy).
pub const STORE_UNKNOWN_OUTCOME: usize = 13;
const ETCD_LATENCY_FIRST: usize = 14;
/// Upper bounds of the (non-cumulative) latency buckets; the last one is unbounded.
pub const ETCD_LATENCY_BOUNDS_US: [u64; 5] = [1_000, 5_000, 25_000, 100_000, 500_000];
const ETCD_LATENCY_NAMES: [&str; 6] = [
    "etcd.latency.under_1ms",
    "etcd.latency.under_5ms",
    "etcd.latency.under_25ms",
    "etcd.latency.under_100ms",
    "etcd.latency.under_500ms",
    "etcd.latency.over_500ms",
];

/// The latency bucket counter for a round trip of `us` microseconds.
pub fn etcd_latency_bucket(us: u64) -> usize {
    let i = ETCD_LATENCY_BOUNDS_US
        .iter()
        .position(|b| us < *b)
        .unwrap_or(ETCD_LATENCY_BOUNDS_US.len());
    ETCD_LATENCY_FIRST.saturating_add(i)
}

pub fn global_counters() -> Vec<String> {
    [
        "unmatched.passed",
        "unmatched.denied",
        "store.entries",
        "store.cas_retries",
        "store.sweeps",
        "store.swept",
        "store.released",
        "store.commit_failed",
        "etcd.calls",
        "etcd.errors",
        "etcd.failed_open",
        "etcd.cache_hits",
        "etcd.leases_granted",
        "store.unknown_outcome",
    ]
    .iter()
    .chain(ETCD_LATENCY_NAMES.iter())
    .map(|n| format!("{PREFIX}.{n}"))
    .collect()
}

/// What a metric of `Guard::counter_names()` is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Named `..._us`: values in microseconds (the shipped Envoy configs give them buckets from
    /// 100 µs to 10 s, with the 150 ms receipt-to-validation target as one bound).
    Histogram,
}

pub fn kind(name: &str) -> Kind {
    if name.ends_with("_us") {
        Kind::Histogram
    } else if name.ends_with("store.entries")
        || name.ends_with(".store_entries")
        || name.ends_with(".store_capacity")
    {
        Kind::Gauge
    } else {
        Kind::Counter
    }
}

// Offsets inside a policy's block of counters.
pub const ACCEPTED: usize = 0;
pub const ACCEPTED_SECONDARY_SECRET: usize = 1;
pub const REJECTED: usize = 2;
pub const CHALLENGES: usize = 3;
/// Histogram: from the filter seeing the request's headers to its verdict (accepted, rejected,
/// or a handshake answered), µs.
pub const VERDICT_LATENCY_US: usize = 4;
/// Histogram: each round trip to the policy's remote store (etcd), µs. Local-store claims do
/// not wait (they are inside the verdict latency).
pub const STORE_LATENCY_US: usize = 5;
/// Gauge: the policy's live entries in the local store, as counted by the last sweep.
pub const STORE_ENTRIES_OF_POLICY: usize = 6;
/// Gauge: the policy's share of the local store (its `dedup.capacity`), set at configure time.
pub const STORE_CAPACITY_OF_POLICY: usize = 7;
/// Payloads opened with a decryption key other than the first listed (rotation under way).
pub const DECRYPTED_SECONDARY_KEY: usize = 8;
const FIRST_REASON: usize = 9;

/// Reasons a policy can produce (`no_matching_policy` has no policy).
pub fn policy_reasons() -> impl Iterator<Item = Reason> {
    Reason::ALL
        .into_iter()
        .filter(|r| *r != Reason::NoMatchingPolicy)
}

pub fn reason_offset(reason: Reason) -> usize {
    FIRST_REASON.saturating_add(reason.index())
}

pub fn policy_counters(policy: &str) -> Vec<String> {
    let base = format!("{PREFIX}.policy.{policy}");
    let mut names = vec![
        format!("{base}.accepted"),
        format!("{base}.accepted_secondary_secret"),
        format!("{base}.rejected"),
        format!("{base}.challenges_answered"),
        format!("{base}.verdict_latency_us"),
        format!("{base}.store_latency_us"),
        format!("{base}.store_entries"),
        format!("{base}.store_capacity"),
        format!("{base}.decrypted_secondary_key"),
    ];
    // One slot per reason index keeps offsets trivial; the `no_matching_policy` slot is the
    // last one and is simply never defined.
    names.extend(policy_reasons().map(|r| format!("{base}.reason.{}", r.code())));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_offsets_line_up_with_names() {
        let names = policy_counters("p");
        for r in policy_reasons() {
            assert_eq!(
                names[reason_offset(r)],
                format!("webhook_guard.policy.p.reason.{}", r.code())
            );
        }
        assert_eq!(names[ACCEPTED], "webhook_guard.policy.p.accepted");
        assert_eq!(names[REJECTED], "webhook_guard.policy.p.rejected");
        assert_eq!(
            names[VERDICT_LATENCY_US],
            "webhook_guard.policy.p.verdict_latency_us"
        );
        assert_eq!(
            names[STORE_LATENCY_US],
            "webhook_guard.policy.p.store_latency_us"
        );
        let of = |k: Kind| names.iter().filter(|n| kind(n) == k).count();
        assert_eq!((of(Kind::Histogram), of(Kind::Gauge)), (2, 2));
        assert_eq!(
            names[STORE_ENTRIES_OF_POLICY],
            "webhook_guard.policy.p.store_entries"
        );
        assert_eq!(kind(&names[STORE_CAPACITY_OF_POLICY]), Kind::Gauge);
        let global = global_counters();
        assert!(global
            .iter()
            .enumerate()
            .all(|(i, n)| (kind(n) == Kind::Gauge) == (i == STORE_ENTRIES)));
        let global = global_counters();
        assert_eq!(global[STORE_ENTRIES], "webhook_guard.store.entries");
        assert_eq!(global[STORE_RELEASED], "webhook_guard.store.released");
        assert_eq!(
            global[ETCD_LEASES_GRANTED],
            "webhook_guard.etcd.leases_granted"
        );
        assert_eq!(
            global[etcd_latency_bucket(0)],
            "webhook_guard.etcd.latency.under_1ms"
        );
        assert_eq!(
            global[etcd_latency_bucket(999_999)],
            "webhook_guard.etcd.latency.over_500ms"
        );
        assert_eq!(global.len(), etcd_latency_bucket(u64::MAX) + 1);
    }
}
