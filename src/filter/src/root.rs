//! Root context: compile the plugin configuration once, define the metrics, pre-create the
//! replay store's keys, and sweep expired entries on a timer.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, MetricType};
use webhook_guard_core::{compile_for_plugin, stats, Guard, Level};

use crate::host::{log, WasmHost};
use crate::http::Http;

/// A compiled configuration and the host bindings its requests use.
pub struct Loaded {
    pub guard: Guard,
    pub host: WasmHost,
}

pub struct Root {
    loaded: Option<Rc<Loaded>>,
    /// Identifies this root context in the sweep lease (every worker has its own VM).
    sweeper_id: u64,
}

impl Default for Root {
    fn default() -> Self {
        Root {
            loaded: None,
            // WASI random_get behind std's hasher seed: distinct per VM without another crate.
            sweeper_id: RandomState::new().hash_one(0u8),
        }
    }
}

impl Context for Root {}

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
            let _ = hostcalls::set_tick_period(Duration::from_millis(guard.sweep_interval_ms()));
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
        if let Some(loaded) = &self.loaded {
            loaded.guard.sweep(&loaded.host, self.sweeper_id);
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
