// Test code: a panic is a test failure, which is what we want here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! docs/configuration.md cannot drift from the config structs: every field and every variant
//! the parser accepts must be documented. The accepted names come from the parser itself (serde
//! lists them when it meets an unknown one), so a new field fails this test until documented.

use serde_json::{json, Value};
use webhook_guard_core::compile;

fn accepted_names(doc: Value) -> Vec<String> {
    let err = compile(doc.to_string().as_bytes(), &|_| None)
        .unwrap_err()
        .to_string();
    // Under `secrets` our own message replaces serde's (it would echo values): the names are
    // the object keys it shows, `{"env": ...}` and `{"inline": ...}`.
    if err.contains("each secret is") {
        return err
            .split("{\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .map(str::to_string)
            .collect();
    }
    let list = err
        .split_once("expected one of ")
        .or_else(|| err.split_once("expected "))
        .unwrap_or_else(|| panic!("no list of names in: {err}"))
        .1;
    list.split(", ")
        .filter_map(|s| s.split('`').nth(1))
        .map(str::to_string)
        .collect()
}

fn policy() -> Value {
    json!({"name": "p", "match": {"path_prefix": "/"}, "provider": "github", "secrets": [{"inline": "s"}]})
}

fn with(mut base: Value, path: &[&str], value: Value) -> Value {
    let mut slot = &mut base;
    for key in path {
        slot = &mut slot[*key];
    }
    *slot = value;
    base
}

#[test]
fn every_config_field_and_variant_is_documented() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/configuration.md"
    ))
    .unwrap();
    let custom = json!({"signature_header": "X", "signed_template": "{body}"});
    let custom_policy = with(
        with(policy(), &["provider"], json!("custom")),
        &["custom"],
        custom.clone(),
    );
    let probes: Vec<(&str, Value)> = vec![
        (
            "top level",
            json!({"policies": [policy()], "zz_unknown": 1}),
        ),
        (
            "store",
            json!({"policies": [policy()], "store": {"zz_unknown": 1}}),
        ),
        (
            "policy",
            json!({"policies": [with(policy(), &["zz_unknown"], json!(1))]}),
        ),
        (
            "match",
            json!({"policies": [with(policy(), &["match", "zz_unknown"], json!(1))]}),
        ),
        (
            "secret",
            json!({"policies": [with(policy(), &["secrets"], json!([{"zz_unknown": "x"}]))]}),
        ),
        (
            "custom",
            json!({"policies": [with(custom_policy.clone(), &["custom", "zz_unknown"], json!(1))]}),
        ),
        (
            "dedup",
            json!({"policies": [with(policy(), &["dedup", "zz_unknown"], json!(1))]}),
        ),
        (
            "dedup key",
            json!({"policies": [with(policy(), &["dedup", "key"], json!({"source": "zz_unknown"}))]}),
        ),
        (
            "policy store type",
            json!({"policies": [with(policy(), &["store"], json!({"type": "zz_unknown"}))]}),
        ),
        (
            "etcd store",
            json!({"policies": [with(policy(), &["store"], json!({"type": "etcd", "cluster": "c", "zz_unknown": 1}))]}),
        ),
        (
            "on_error",
            json!({"policies": [with(policy(), &["store"], json!({"type": "etcd", "cluster": "c", "on_error": "zz_unknown"}))]}),
        ),
        (
            "decrypt",
            json!({"policies": [with(policy(), &["decrypt"], json!({"cipher": "aes-256-gcm", "zz_unknown": 1}))]}),
        ),
        (
            "decrypt cipher",
            json!({"policies": [with(policy(), &["decrypt"], json!({"cipher": "zz_unknown"}))]}),
        ),
        (
            "default",
            json!({"policies": [policy()], "default": "zz_unknown"}),
        ),
        (
            "provider",
            json!({"policies": [with(policy(), &["provider"], json!("zz_unknown"))]}),
        ),
        (
            "on_duplicate",
            json!({"policies": [with(policy(), &["dedup", "on_duplicate"], json!("zz_unknown"))]}),
        ),
        (
            "algorithm",
            json!({"policies": [with(custom_policy.clone(), &["custom", "algorithm"], json!("zz_unknown"))]}),
        ),
        (
            "encoding",
            json!({"policies": [with(custom_policy.clone(), &["custom", "encoding"], json!("zz_unknown"))]}),
        ),
        (
            "timestamp_unit",
            json!({"policies": [with(custom_policy.clone(), &["custom", "timestamp_unit"], json!("zz_unknown"))]}),
        ),
        (
            "secret_encoding",
            json!({"policies": [with(custom_policy, &["custom", "secret_encoding"], json!("zz_unknown"))]}),
        ),
    ];
    let mut missing = Vec::new();
    let mut total = 0;
    for (what, doc) in probes {
        let names = accepted_names(doc);
        assert!(!names.is_empty(), "{what}: no names found");
        for name in names {
            total += 1;
            if !docs.contains(&format!("`{name}`")) && !docs.contains(&format!("`\"{name}\"`")) {
                missing.push(format!("{what}: `{name}`"));
            }
        }
    }
    assert!(total > 40, "only {total} names probed");
    assert!(
        missing.is_empty(),
        "undocumented in docs/configuration.md:\n{}",
        missing.join("\n")
    );
}
