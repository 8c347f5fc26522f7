//! Root context: compile the plugin configuration once, define the metrics, pre-create the
//! replay store's keys, sweep expired entries on a timer, and finish remote-store work that
//! a stream left behind (it outlives every stream).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, MetricType};
use webhook_guard_core::{
    compile_for_plugin, stats, Background, Guard, Host, Level, RemoteReply, RemoteTask,
};

use crate::host::{log, WasmHost};
use crate::http::Http;
use crate::remote;

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

impl Default for Root {
    fn default() -> Self {
        Root {
            loaded: None,
            // WASI random_get behind std's hasher seed: distinct per VM without another crate.
            sweeper_id: RandomState::new().hash_one(0u8),
            last_sweep_ms: 0,
            in_flight: HashMap::new(),
        }
    }
}

impl Root {
    fn run(&mut self, loaded: &Loaded, mut task: RemoteTask, reply: Option<&RemoteReply>) {
        let dispatch = |call: &_| remote::dispatch(call).ok();
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
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let (Some(loaded), Some(task)) = (self.loaded.clone(), self.in_flight.remove(&token))
        else {
            return;
        };
        self.run(&loaded, task, Some(&remote::reply(body_size)));
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(b)) => b,
            _ => {
                log(
                    Level::Error,
                    "invalid webhook-guard configuration: the plugin configuration is empty",
                );
                return false;
            }
        };
        let plugin_name = hostcalls::get_property(vec!["plugin_name"])
            .ok()
            .flatten()
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
            .enumerate()
            .map(|(i, name)| {
                let kind = if stats::is_gauge(i) {
                    MetricType::Gauge
                } else {
                    MetricType::Counter
                };
                hostcalls::define_metric(kind, name).ok()
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
            let _ = hostcalls::set_tick_period(Duration::from_millis(period));
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

    fn on_tick(&mut self) {
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

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Must never be None: the SDK panics on None.
        Some(Box::new(Http::new(self.loaded.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
