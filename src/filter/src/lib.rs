//! Envoy proxy-wasm glue for webhook-guard. It only translates callbacks: every decision is
//! made by `webhook_guard_core`. Compiled for wasm32 only; empty on the host.
#![cfg(target_arch = "wasm32")]

mod host;
mod http;
mod remote;
mod root;

proxy_wasm::main! {{
    // Installs the panic hook that logs at Critical: a bug shows in Envoy's log before the
    // VM dies. Envoy's own `wasm` log level filters what we emit.
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::default())
    });
}}
