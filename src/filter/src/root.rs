//! Root context: compile the plugin configuration once, define the metrics, pre-create the
//! replay store's keys, sweep expired entries on a timer, and finish remote-store work that
//! a stream left behind (it outlives every stream).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::rc::Rc;

use webhook_guard_core::{
    compile_for_plugin, stats, Background, Guard, Host, Level, RemoteReply, RemoteTask,
};

use crate::abi;
use crate::host::{log, WasmHost};
use crate::remote;
use crate::wire;

/// How often leftover remote-store work is picked up.
const REMOTE_TICK_MS: u64 = 1_000;

/// A compiled configuration and the host bindings its requests use.
pub struct Loaded {
    pub guard: Guard,
    pub host: WasmHost,
}

pub struct Root {
    loaded: Option<Rc<Loaded>>,
    /// Identifies this root context in the sweep lease (every worker has its own VM).
    sweeper_id: u64,
    last_sweep_ms: u64,
    /// Deferred tasks waiting on a callout, by token.
    in_flight: HashMap<u32, RemoteTask>,
}

impl Root {
    pub fn new(context_id: u32) -> Root {
        Root {
            loaded: None,
            // WASI random_get behind std's hasher seed: distinct per VM without another crate.
            sweeper_id: RandomState::new().hash_one(context_id),
            last_sweep_ms: 0,
            in_flight: HashMap::new(),
        }
    }

    pub fn loaded(&self) -> Option<Rc<Loaded>> {
        self.loaded.clone()
    }

    fn run(&mut self, loaded: &Loaded, mut task: RemoteTask, reply: Option<&RemoteReply>) {
        let dispatch = |call: &_| remote::dispatch(call);
        match loaded
            .guard
            .run_background(&loaded.host, &mut task, reply, dispatch)
        {
            Background::Waiting(token) => {
                self.in_flight.insert(token, task);
            }
            // A release etcd could not take yet: again on the next tick.
            Background::RetryLater => loaded.host.defer(task),
            Background::Done => {}
        }
    }

    pub fn call_response(&mut self, token: u32, body_size: usize) {
        let (Some(loaded), Some(task)) = (self.loaded.clone(), self.in_flight.remove(&token))
        else {
            return;
        };
        self.run(&loaded, task, Some(&remote::reply(body_size)));
    }

    pub fn configure(&mut self, _size: usize) -> bool {
        let Some(bytes) = abi::buffer(abi::PLUGIN_CONFIGURATION, 0, usize::MAX) else {
            log(
                Level::Error,
                "invalid webhook-guard configuration: the plugin configuration is empty",
            );
            return false;
        };
        let plugin_name = abi::property(&wire::path(&["plugin_name"]))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let guard = match compile_for_plugin(&bytes, &|name| std::env::var(name).ok(), &plugin_name)
        {
            Ok(g) => g,
            Err(e) => {
                // Returning false makes Envoy refuse the filter config; this line says why.
                log(Level::Error, &e.to_string());
                return false;
            }
        };
        for (level, notice) in guard.notices() {
            log(*level, &format!("webhook-guard: {notice}"));
        }
        let metrics = guard
            .counter_names()
            .iter()
            .map(|name| {
                let kind = match stats::kind(name) {
                    stats::Kind::Gauge => abi::GAUGE,
                    stats::Kind::Histogram => abi::HISTOGRAM,
                    stats::Kind::Counter => abi::COUNTER,
                };
                abi::define_metric(kind, name)
            })
            .collect();
        let host = WasmHost::new(metrics);
        guard.init_store(&host);
        if guard.uses_store() {
            let period = if guard.uses_remote_store() {
                REMOTE_TICK_MS.min(guard.sweep_interval_ms())
            } else {
                guard.sweep_interval_ms()
            };
            abi::set_tick_period_ms(u32::try_from(period).unwrap_or(u32::MAX));
        }
        log(
            Level::Info,
            &format!(
                "webhook-guard configured with {} policies",
                guard.policies().len()
            ),
        );
        self.loaded = Some(Rc::new(Loaded { guard, host }));
        true
    }

    pub fn tick(&mut self) {
        let Some(loaded) = self.loaded.clone() else {
            return;
        };
        let now = loaded.host.now_ms();
        if now.saturating_sub(self.last_sweep_ms) >= loaded.guard.sweep_interval_ms() {
            self.last_sweep_ms = now;
            loaded.guard.sweep(&loaded.host, self.sweeper_id);
        }
        for task in loaded
            .host
            .take_deferred()
            .into_iter()
            .chain(loaded.guard.remote_upkeep(&loaded.host))
        {
            self.run(&loaded, task, None);
        }
    }
}
