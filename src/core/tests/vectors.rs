// Test code: a panic is a test failure, which is what we want here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Known-answer vectors (tests/vectors/providers.json, shared with the e2e suite) run
//! through the same flow the filter uses: route -> begin -> finish.

mod common;

use common::vectors::{all, body_of, guard_for, headers_of, method_of, now_ms, path_of, verdict};
use webhook_guard_core::memhost::MemHost;

#[test]
fn every_vector_gives_its_expected_outcome() {
    let mut failures = Vec::new();
    let all = all();
    assert!(all.len() >= 30, "vector file looks truncated");
    for v in &all {
        let guard = guard_for(v);
        let host = MemHost::new(guard.counter_names(), now_ms(v));
        let got = verdict(
            &guard,
            &host,
            method_of(v),
            path_of(v),
            &headers_of(v),
            &body_of(v),
        );
        let want = v["expect"].as_str().unwrap();
        if got != want {
            failures.push(format!("{}: expected {want}, got {got}", v["name"]));
        }
        // The secret must never reach a log line.
        let secret = v["secret"].as_str().unwrap();
        for (_, line) in host.logs() {
            assert!(
                !line.contains(secret),
                "{}: secret in log line {line}",
                v["name"]
            );
        }
    }
    assert!(
        failures.is_empty(),
        "vector failures:\n{}",
        failures.join("\n")
    );
}
