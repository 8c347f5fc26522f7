//! Root context: parse and compile the plugin configuration once, define the counters.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, MetricType};
use webhook_guard_core::{compile, Guard, Level};

use crate::host::{log, WasmHost};
use crate::http::Http;

/// A compiled configuration and the host bindings its requests use.
pub struct Loaded {
    pub guard: Guard,
    pub host: WasmHost,
}

#[derive(Default)]
pub struct Root {
    loaded: Option<Rc<Loaded>>,
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
        let guard = match compile(&bytes, &|name| std::env::var(name).ok()) {
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
            .map(|name| hostcalls::define_metric(MetricType::Counter, name).ok())
            .collect();
        log(
            Level::Info,
            &format!(
                "webhook-guard configured with {} policies",
                guard.policies().len()
            ),
        );
        self.loaded = Some(Rc::new(Loaded {
            guard,
            host: WasmHost { metrics },
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Must never be None: the SDK panics on None.
        Some(Box::new(Http::new(self.loaded.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
