//! webhook-guard as a native Envoy dynamic module (`envoy.filters.http.dynamic_modules`,
//! Envoy 1.40): the same core as the wasm build, driven through Envoy's C ABI.
//!
//! `ffi` is the only module with `unsafe` code (the ABI, the exported hooks, panic barriers);
//! `module` holds the configuration, per-stream and per-route objects; `host` implements the
//! core's `Host` over Envoy's callbacks. Build with the unwinding profile:
//! `cargo build --profile native -p webhook-guard-native` -> `target/native/libwebhook_guard_native.so`.

mod ffi;
mod host;
mod module;
