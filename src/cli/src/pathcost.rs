//! `path-cost`: the core's own CPU time per request on each of the bench's paths, driven as
//! the glue drives it (headers, body, response status, end) against a host whose bookkeeping
//! costs next to nothing (`BenchHost`).
//! Built for wasm32-wasip1 and run by Node it is our code's share of the wasm build's cost
//! in V8, with no proxy around it; natively, the native build's. The bench puts it beside
//! Envoy's floor and the host-call counts so that every microsecond has an owner.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use webhook_guard_core::compile::{compile_with, Build, Options};
use webhook_guard_core::host::{Host, Level, SetError};
use webhook_guard_core::sign::{sign, SignInput};
use webhook_guard_core::stream::{BodyStep, Step, Stream};
use webhook_guard_core::{Guard, RequestInfo, RouteInfo};

/// The config compiled for one build: the native module keeps its store in process memory.
pub fn load(path: &Path, native: bool) -> Result<Guard, String> {
    let json = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let options = Options {
        plugin_name: "webhook_guard",
        build: if native { Build::Native } else { Build::Wasm },
    };
    compile_with(&json, &|var| std::env::var(var).ok(), options).map_err(|e| e.to_string())
}

type Headers = Vec<(String, Vec<u8>)>;

/// A host that costs what a proxy's bookkeeping costs and no more (so the times are the
/// core's): a fixed clock, counters in a vector, logs below `warn` off (the bench runs Envoy at
/// `warn`), shared data in a hash map with Envoy's CAS semantics. Host *transitions* are not
/// modelled: the bench counts and prices those separately.
struct BenchHost {
    now_ms: u64,
    metrics: RefCell<Vec<i64>>,
    shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: Cell<u32>,
}

impl Host for BenchHost {
    fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn add(&self, metric: usize, delta: i64) {
        if let Some(m) = self.metrics.borrow_mut().get_mut(metric) {
            *m = m.saturating_add(delta);
        }
    }

    fn set_gauge(&self, metric: usize, value: u64) {
        if let Some(m) = self.metrics.borrow_mut().get_mut(metric) {
            *m = i64::try_from(value).unwrap_or(i64::MAX);
        }
    }

    fn record(&self, metric: usize, value: u64) {
        self.add(metric, i64::try_from(value).unwrap_or(i64::MAX));
    }

    fn log(&self, _level: Level, _line: &str) {}

    fn log_enabled(&self, level: Level) -> bool {
        level >= Level::Warn
    }

    fn shared_get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, SetError> {
        Ok(self.shared.borrow().get(key).cloned())
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        let mut shared = self.shared.borrow_mut();
        let token = self.next_cas.get().wrapping_add(1);
        match shared.get_mut(key) {
            Some((_, current)) if cas.is_some_and(|c| c != *current) => {
                return Err(SetError::CasMismatch)
            }
            Some(slot) => *slot = (value.to_vec(), token),
            None => {
                shared.insert(key.to_string(), (value.to_vec(), token));
            }
        }
        self.next_cas.set(token);
        Ok(())
    }
}

/// One request through a fresh stream: `None` when it was forwarded (and its 200 settled the
/// claim), else the status of the local reply.
fn drive(
    guard: &Guard,
    host: &BenchHost,
    path: &str,
    headers: &Headers,
    body: &[u8],
) -> Option<u16> {
    let route = RouteInfo {
        route_name: None,
        authority: "bench",
        path,
        route_policy: None,
    };
    let info = RequestInfo {
        route_name: None,
        method: "POST".into(),
        path: path.into(),
    };
    let mut stream = Stream::new();
    let mut step = stream.on_request_headers(guard, host, &route, info, headers, false);
    if matches!(step, Step::Pause) {
        step = match stream.on_request_body(guard, host, body.len(), true) {
            BodyStep::Read => stream.on_request_complete(guard, host, Some(body)),
            BodyStep::Continue => Step::Continue,
            BodyStep::Pause => Step::Pause,
            BodyStep::Reply(reply) => Step::Reply(reply),
        };
    }
    if matches!(step, Step::Continue) && stream.awaits_response() {
        step = stream.on_response_headers(guard, host, Some(200));
    }
    stream.on_end(guard, host);
    match step {
        Step::Continue => None,
        Step::Reply(reply) => Some(reply.status),
        // Nothing here pauses or calls out (local store): a path this tool does not time.
        _ => Some(0),
    }
}

/// Signed requests for the guard's first policy, ids `prefix` + n.
fn signed(
    guard: &Guard,
    prefix: &str,
    n: usize,
    ts: u64,
    body: &[u8],
) -> Result<Vec<Headers>, String> {
    let policy = guard.policies().first().ok_or("the config has no policy")?;
    let key = policy.first_key().ok_or("the policy has no secret")?;
    (0..n)
        .map(|i| {
            let id = format!("{prefix}{i:08}");
            let input = SignInput {
                body,
                timestamp: Some(ts),
                id: Some(&id),
                method: "POST",
                path: "/webhook",
                headers: &[],
            };
            let mut headers: Headers = vec![
                (":method".into(), b"POST".to_vec()),
                (":path".into(), b"/webhook".to_vec()),
                (":authority".into(), b"bench".to_vec()),
                ("content-type".into(), b"application/json".to_vec()),
                ("content-length".into(), body.len().to_string().into_bytes()),
            ];
            for (name, value) in sign(&policy.scheme, key, &input)? {
                headers.push((name, value.into_bytes()));
            }
            Ok(headers)
        })
        .collect()
}

/// µs per request over `n` requests (cycling through what `prepare` returns), the best of
/// `rounds` (noise only ever adds time).
fn time_each(
    rounds: usize,
    n: usize,
    mut prepare: impl FnMut(usize) -> Result<Vec<Headers>, String>,
    mut run: impl FnMut(&Headers) -> Option<u16>,
    expect: Option<u16>,
) -> Result<f64, String> {
    let mut best = f64::INFINITY;
    for round in 0..rounds {
        let requests = prepare(round)?;
        let start = Instant::now();
        for h in requests.iter().cycle().take(n) {
            let got = run(h);
            if got != expect {
                return Err(format!(
                    "a request took another path than the one measured (expected {}, got {})",
                    outcome(expect),
                    outcome(got)
                ));
            }
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    Ok(best)
}

fn outcome(status: Option<u16>) -> String {
    status.map_or_else(|| "forwarded".to_string(), |s| format!("a {s} reply"))
}

pub fn run(guard: &Guard, size: usize, requests: usize, rounds: usize) -> Result<String, String> {
    let body: Vec<u8> = {
        let mut b = br#"{"type":"bench","data":""#.to_vec();
        b.resize(size.saturating_sub(2).max(b.len()), b'x');
        b.extend_from_slice(br#""}"#);
        b
    };
    let ts = 1_700_000_000u64;
    let host = BenchHost {
        now_ms: ts * 1000,
        metrics: RefCell::new(vec![0; guard.counter_names().len()]),
        shared: RefCell::new(HashMap::new()),
        next_cas: Cell::new(1),
    };
    let (n, r) = (requests.max(1), rounds.max(1));
    let drive_to = |path: &'static str| {
        let (g, h, b) = (guard, &host, body.as_slice());
        move |headers: &Headers| drive(g, h, path, headers, b)
    };
    let once = |id: &str| signed(guard, id, 1, ts, &body);
    let fixed = once("msg_fixed_")?;
    let unmatched = time_each(r, n, |_| Ok(fixed.clone()), drive_to("/elsewhere"), None)?;
    let accepted = time_each(
        r,
        n,
        |round| signed(guard, &format!("msg_r{round}_"), n, ts, &body),
        drive_to("/webhook"),
        None,
    )?;
    // The fixed delivery, committed once, then replayed.
    let first = fixed.first().ok_or("no request")?;
    if let Some(status) = drive(guard, &host, "/webhook", first, &body) {
        return Err(format!(
            "the first delivery was answered {status}, not accepted"
        ));
    }
    let replay = time_each(r, n, |_| Ok(fixed.clone()), drive_to("/webhook"), Some(409))?;
    let mut forged = fixed.clone();
    for (name, value) in forged.iter_mut().flatten() {
        if name == "webhook-signature" {
            // Same length, another MAC: the compare runs in full.
            if let Some(c) = value.iter_mut().rev().nth(2) {
                *c = if *c == b'A' { b'B' } else { b'A' };
            }
        }
    }
    let invalid = time_each(
        r,
        n,
        |_| Ok(forged.clone()),
        drive_to("/webhook"),
        Some(401),
    )?;
    Ok(format!(
        "{{\"size\":{size},\"requests\":{n},\"unmatched\":{unmatched:.2},\"accepted\":{accepted:.2},\
         \"replay\":{replay:.2},\"invalid\":{invalid:.2}}}"
    ))
}
