//! Envoy proxy-wasm glue for webhook-guard. It only translates callbacks: every decision is
//! made by `webhook_guard_core`. The glue is compiled for wasm32 only; the wire formats are
//! plain code, built and tested on the host too.

#[cfg(target_arch = "wasm32")]
mod abi;
#[cfg(target_arch = "wasm32")]
mod dispatch;
#[cfg(target_arch = "wasm32")]
mod host;
#[cfg(target_arch = "wasm32")]
mod http;
#[cfg(target_arch = "wasm32")]
mod remote;
#[cfg(target_arch = "wasm32")]
mod root;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod wire;
