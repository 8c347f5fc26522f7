//! The one place that touches Envoy's C ABI (dynamic modules, Envoy 1.40, ABI "v0.2.0").
//!
//! Everything `unsafe` in this crate is here. Our own minimal declarations of the ABI (written
//! from Envoy's public `abi.h`, every symbol checked against the 1.40 binary by
//! `tests/e2e/test_native.py`), the exported hooks, and small safe handles the rest of the crate
//! uses. Rules every function below keeps:
//! - Every exported hook runs its body inside `catch_unwind`: no panic crosses into Envoy (the
//!   `native` profile unwinds). A request-path hook that panics answers 503 `internal_error`.
//! - Buffers Envoy lends (headers, bodies, secrets, callout replies) are read only inside the
//!   hook that received them: the safe handles hand out slices whose lifetime is the hook's.
//! - Module objects cross as `Box` raw pointers, created in a `*_new` hook and freed exactly once
//!   in the matching `*_destroy` hook.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::module::{self, Config, Filter, RouteConfig};

// ---- ABI types -----------------------------------------------------------------------------

type ConfigEnvoyPtr = *mut c_void;
type FilterEnvoyPtr = *mut c_void;
type SchedulerPtr = *mut c_void;

/// Bytes owned by Envoy (`envoy_dynamic_module_type_envoy_buffer`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    ptr: *const u8,
    len: usize,
}

impl EnvoyBuffer {
    const EMPTY: EnvoyBuffer = EnvoyBuffer {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// SAFETY (caller): Envoy guarantees `ptr..ptr+len` readable for the current hook; the
    /// returned lifetime must not outlive it.
    unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            &[]
        } else {
            // SAFETY: non-null, `len` bytes lent by Envoy for this hook (the caller's contract).
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// Bytes owned by the module (`envoy_dynamic_module_type_module_buffer`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    ptr: *const u8,
    len: usize,
}

impl ModuleBuffer {
    fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }
}

/// A header as Envoy lends it, and as the module passes one in.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawHeader {
    key_ptr: *const u8,
    key_len: usize,
    value_ptr: *const u8,
    value_len: usize,
}

impl RawHeader {
    const EMPTY: RawHeader = RawHeader {
        key_ptr: std::ptr::null(),
        key_len: 0,
        value_ptr: std::ptr::null(),
        value_len: 0,
    };

    fn of(key: &str, value: &[u8]) -> RawHeader {
        RawHeader {
            key_ptr: key.as_ptr(),
            key_len: key.len(),
            value_ptr: value.as_ptr(),
            value_len: value.len(),
        }
    }

    /// SAFETY (caller): as `EnvoyBuffer::bytes`.
    unsafe fn parts<'a>(self) -> (&'a [u8], &'a [u8]) {
        // SAFETY: both halves are buffers Envoy lends for the current hook.
        unsafe {
            (
                EnvoyBuffer {
                    ptr: self.key_ptr,
                    len: self.key_len,
                }
                .bytes(),
                EnvoyBuffer {
                    ptr: self.value_ptr,
                    len: self.value_len,
                }
                .bytes(),
            )
        }
    }
}

// Header map kinds (`envoy_dynamic_module_type_http_header_type`).
const REQUEST_HEADERS: u32 = 0;
const RESPONSE_HEADERS: u32 = 2;
// Body kinds (`envoy_dynamic_module_type_http_body_type`): the whole request body is the
// buffered chunks followed by the chunk just received.
const BODY_RECEIVED_REQUEST: u32 = 0;
const BODY_BUFFERED_REQUEST: u32 = 1;
const CALLOUT_INIT_SUCCESS: u32 = 0;
const CALLOUT_RESULT_SUCCESS: u32 = 0;
const METRICS_SUCCESS: u32 = 0;

/// Log levels (`envoy_dynamic_module_type_log_level`).
#[derive(Debug, Clone, Copy)]
pub enum LogLevel {
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

/// Request attributes (`envoy_dynamic_module_type_attribute_id`: positions in the C enum).
#[derive(Debug, Clone, Copy)]
pub enum Attribute {
    ResponseCodeDetails = 16,
    ResponseFlags = 17,
    SourceAddress = 24,
    UpstreamAddress = 41,
    UpstreamLocalAddress = 51,
    UpstreamRequestAttemptCount = 53,
    XdsRouteName = 61,
}

/// What a hook tells Envoy about the headers it saw.
pub mod status {
    pub const HEADERS_CONTINUE: u32 = 0;
    pub const HEADERS_STOP: u32 = 1;
    pub const HEADERS_STOP_ALL_AND_BUFFER: u32 = 3;
    pub const BODY_CONTINUE: u32 = 0;
    pub const BODY_STOP_AND_BUFFER: u32 = 1;
    pub const TRAILERS_CONTINUE: u32 = 0;
    pub const TRAILERS_STOP: u32 = 1;
}

/// The ABI version this module was written against: Envoy 1.40's.
const ABI_VERSION: &[u8] = b"v0.2.0\0";

/// Bench only (`--features floor-probe`, never shipped): a filter whose every stream hook
/// returns at once, so bench.py can measure what Envoy charges any dynamic-module filter (the
/// floor). Its per-stream pointer is a dangling sentinel that no hook dereferences (each one
/// returns before `filter_ref`). Constant, so normal builds compile the checks away.
const FLOOR: bool = cfg!(feature = "floor-probe");
/// With `floor-hold` (implies `floor-probe`): the least any body-verifying filter must do. It
/// reads the request headers, holds the request until Envoy has buffered the body, reads the
/// body once and lets the request go on. These hooks use only the stream pointer Envoy passes,
/// never the sentinel.
const FLOOR_HOLD: bool = cfg!(feature = "floor-hold");

/// The shape of Envoy's `http_filter_config_define_{counter,gauge,histogram}`.
type DefineMetric = unsafe extern "C" fn(
    ConfigEnvoyPtr,
    ModuleBuffer,
    *const ModuleBuffer,
    usize,
    *mut usize,
) -> u32;

extern "C" {
    fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);
    fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool;
    fn envoy_dynamic_module_callback_is_validation_mode() -> bool;

    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_len: usize,
        id_out: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_len: usize,
        id_out: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_len: usize,
        id_out: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_len: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_len: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_set_gauge(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_len: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_len: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_len: usize,
        value: u64,
    ) -> u32;

    fn envoy_dynamic_module_callback_http_filter_config_generic_secret_subscribe(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        sds_config: ModuleBuffer,
    ) -> usize;
    fn envoy_dynamic_module_callback_http_filter_get_generic_secret(
        filter: FilterEnvoyPtr,
        id: usize,
        out: *mut EnvoyBuffer,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_get_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        out: *mut EnvoyBuffer,
        index: usize,
        count_out: *mut usize,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: FilterEnvoyPtr,
        header_type: u32,
    ) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoyPtr,
        header_type: u32,
        out: *mut RawHeader,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        filter: FilterEnvoyPtr,
        body_type: u32,
    ) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: FilterEnvoyPtr,
        body_type: u32,
        out: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_received_buffered_request_body(
        filter: FilterEnvoyPtr,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_drain_body(
        filter: FilterEnvoyPtr,
        body_type: u32,
        bytes: usize,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_append_body(
        filter: FilterEnvoyPtr,
        body_type: u32,
        data: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoyPtr,
        status: u32,
        headers: *const RawHeader,
        headers_len: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: FilterEnvoyPtr);
    fn envoy_dynamic_module_callback_http_filter_continue_encoding(filter: FilterEnvoyPtr);
    fn envoy_dynamic_module_callback_get_most_specific_route_config(
        filter: FilterEnvoyPtr,
    ) -> *const c_void;

    fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: FilterEnvoyPtr,
        callout_id_out: *mut u64,
        cluster: ModuleBuffer,
        headers: *const RawHeader,
        headers_len: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: ConfigEnvoyPtr,
        callout_id_out: *mut u64,
        cluster: ModuleBuffer,
        headers: *const RawHeader,
        headers_len: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> u32;

    fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: FilterEnvoyPtr,
        id: u32,
        out: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        filter: FilterEnvoyPtr,
        id: u32,
        out: *mut u64,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: FilterEnvoyPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config: ConfigEnvoyPtr,
    ) -> SchedulerPtr;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: SchedulerPtr,
        event_id: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: SchedulerPtr);
}

// ---- safe handles --------------------------------------------------------------------------

pub fn log(level: LogLevel, line: &str) {
    // SAFETY: the buffer is valid for the call; Envoy copies the message.
    unsafe { envoy_dynamic_module_callback_log(level as u32, ModuleBuffer::of(line.as_bytes())) }
}

pub fn log_enabled(level: LogLevel) -> bool {
    // SAFETY: no arguments beyond a plain integer.
    unsafe { envoy_dynamic_module_callback_log_enabled(level as u32) }
}

/// An HTTP callout's answer (`None` status: it failed or timed out).
pub struct CalloutReply {
    pub status: Option<u16>,
    pub body: Vec<u8>,
}

/// One stream's Envoy handle, valid for the hook it was made in (`'a`).
#[derive(Clone, Copy)]
pub struct Stream<'a> {
    ptr: FilterEnvoyPtr,
    _hook: PhantomData<&'a ()>,
}

impl<'a> Stream<'a> {
    /// Every request header (pseudo-headers included), copied: two calls whatever their number.
    /// All request headers as slices of Envoy's header map, valid for this hook only. A name
    /// that is not UTF-8 (Envoy's codecs do not produce one) is kept as an empty name, so it
    /// can match nothing but still counts.
    pub fn request_headers(&self) -> Vec<(&'a str, &'a [u8])> {
        // SAFETY: `ptr` is this hook's filter pointer; the size call reads nothing else.
        let n = unsafe {
            envoy_dynamic_module_callback_http_get_headers_size(self.ptr, REQUEST_HEADERS)
        };
        let mut raw = vec![RawHeader::EMPTY; n];
        // SAFETY: `raw` has room for the `n` headers Envoy just counted.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_headers(
                self.ptr,
                REQUEST_HEADERS,
                raw.as_mut_ptr(),
            )
        };
        if !ok {
            return Vec::new();
        }
        raw.into_iter()
            .map(|h| {
                // SAFETY: Envoy filled these with buffers lent for this hook; the slices carry
                // the hook's lifetime and are dropped before it returns.
                let (k, v) = unsafe { h.parts() };
                (std::str::from_utf8(k).unwrap_or(""), v)
            })
            .collect()
    }

    /// The response's `:status`, read in place.
    pub fn response_status(&self) -> Option<u16> {
        let mut out = EnvoyBuffer::EMPTY;
        // SAFETY: `out` is a valid place for one buffer; the count pointer may be null.
        let found = unsafe {
            envoy_dynamic_module_callback_http_get_header(
                self.ptr,
                RESPONSE_HEADERS,
                ModuleBuffer::of(b":status"),
                &mut out,
                0,
                std::ptr::null_mut(),
            )
        };
        // SAFETY: the value is lent for this hook and parsed before it returns.
        let value = found.then(|| unsafe { out.bytes() })?;
        std::str::from_utf8(value).ok()?.parse().ok()
    }

    /// The request body so far: the buffered chunks, then the chunk just received. Slices of
    /// Envoy's own buffers, valid for this hook only.
    pub fn request_body(&self) -> Vec<&'a [u8]> {
        // SAFETY: `ptr` is this hook's filter pointer.
        let resumed =
            unsafe { envoy_dynamic_module_callback_http_received_buffered_request_body(self.ptr) };
        // An earlier filter (e.g. envoy.filters.http.buffer) buffered the body and resumed: what
        // we "received" is that very buffer, so reading both would see the body twice.
        let kinds: &[u32] = if resumed {
            &[BODY_RECEIVED_REQUEST]
        } else {
            &[BODY_BUFFERED_REQUEST, BODY_RECEIVED_REQUEST]
        };
        let mut chunks = Vec::new();
        for &kind in kinds {
            // SAFETY: `ptr` is this hook's filter pointer.
            let n =
                unsafe { envoy_dynamic_module_callback_http_get_body_chunks_size(self.ptr, kind) };
            if n == 0 {
                continue;
            }
            let mut raw = vec![EnvoyBuffer::EMPTY; n];
            // SAFETY: `raw` has room for the `n` chunks Envoy just counted.
            if unsafe {
                envoy_dynamic_module_callback_http_get_body_chunks(self.ptr, kind, raw.as_mut_ptr())
            } {
                // SAFETY: lent for this hook; the returned slices carry the hook's lifetime.
                chunks.extend(raw.into_iter().map(|b| unsafe { b.bytes() }));
            }
        }
        chunks
    }

    /// Replaces the whole request body with `body`: every buffered and received byte is
    /// drained, then `body` is appended where the rest of the chain will read it (the chunk
    /// being delivered, or the buffer when the body was held across a callout). Slices that
    /// `request_body` returned point into the buffers drained here: callers drop them first
    /// (module.rs does, explicitly), and never read one after this call.
    pub fn replace_request_body(&self, body: &[u8]) -> bool {
        for kind in [BODY_BUFFERED_REQUEST, BODY_RECEIVED_REQUEST] {
            // SAFETY: `ptr` is this hook's filter pointer; draining an absent buffer is refused
            // (false), and a count beyond the size drains it all. No slice of these buffers is
            // read after this (see above).
            let _ = unsafe {
                envoy_dynamic_module_callback_http_drain_body(self.ptr, kind, usize::MAX)
            };
        }
        // SAFETY: `body` outlives the call (Envoy copies it); `ptr` is this hook's filter.
        unsafe {
            envoy_dynamic_module_callback_http_append_body(
                self.ptr,
                BODY_RECEIVED_REQUEST,
                ModuleBuffer::of(body),
            ) || envoy_dynamic_module_callback_http_append_body(
                self.ptr,
                BODY_BUFFERED_REQUEST,
                ModuleBuffer::of(body),
            )
        }
    }

    /// Sets request header `name` to `value` (replacing every value it had).
    pub fn set_request_header(&self, name: &str, value: &[u8]) -> bool {
        // SAFETY: both buffers outlive the call (Envoy copies them); `ptr` is this hook's.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.ptr,
                REQUEST_HEADERS,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value),
            )
        }
    }

    pub fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8], details: &str) {
        let raw: Vec<RawHeader> = headers
            .iter()
            .map(|(k, v)| RawHeader::of(k, v.as_bytes()))
            .collect();
        // SAFETY: every buffer outlives the call (Envoy copies them). Envoy may run our
        // local-reply and stream-complete hooks inside this call: callers hold no borrow of the
        // stream's state across it.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.ptr,
                u32::from(status),
                raw.as_ptr(),
                raw.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::of(details.as_bytes()),
            )
        }
    }

    pub fn continue_request(&self) {
        // SAFETY: resumes a stream this filter paused; may run later hooks re-entrantly
        // (callers hold no borrow across it).
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.ptr) }
    }

    pub fn continue_response(&self) {
        // SAFETY: as `continue_request`.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_encoding(self.ptr) }
    }

    /// Our per-route configuration for this request's route, if it has one.
    pub fn route_config(&self) -> Option<&'a RouteConfig> {
        // SAFETY: Envoy returns the pointer `per_route_config_new` gave it (a leaked
        // `Box<RouteConfig>`), or null. The route holds it for at least the stream's life, and
        // it is only freed in `per_route_config_destroy`.
        let ptr = unsafe { envoy_dynamic_module_callback_get_most_specific_route_config(self.ptr) };
        // SAFETY: non-null pointers are ours, as above.
        unsafe { ptr.cast::<RouteConfig>().as_ref() }
    }

    /// Starts an HTTP call to `cluster`; its answer comes to this filter's callout hook with
    /// the returned id. `None`: Envoy refused it (unknown cluster, no healthy host...).
    pub fn callout(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u64> {
        let raw: Vec<RawHeader> = headers
            .iter()
            .map(|(k, v)| RawHeader::of(k, v.as_bytes()))
            .collect();
        let mut id = 0u64;
        // SAFETY: every buffer outlives the call (Envoy copies the request); `id` is writable.
        let result = unsafe {
            envoy_dynamic_module_callback_http_filter_http_callout(
                self.ptr,
                &mut id,
                ModuleBuffer::of(cluster.as_bytes()),
                raw.as_ptr(),
                raw.len(),
                ModuleBuffer::of(body),
                timeout_ms,
            )
        };
        (result == CALLOUT_INIT_SUCCESS).then_some(id)
    }

    pub fn attribute_string(&self, id: Attribute) -> Option<Vec<u8>> {
        let mut out = EnvoyBuffer::EMPTY;
        // SAFETY: `out` is a valid place for one buffer.
        let found = unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.ptr, id as u32, &mut out,
            )
        };
        // SAFETY: lent for this hook and copied here.
        found.then(|| unsafe { out.bytes() }.to_vec())
    }

    pub fn attribute_int(&self, id: Attribute) -> Option<u64> {
        let mut out = 0u64;
        // SAFETY: `out` is a valid place for one integer.
        let found = unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_int(
                self.ptr, id as u32, &mut out,
            )
        };
        found.then_some(out)
    }

    pub fn set_filter_state(&self, key: &str, value: &str) {
        // SAFETY: both buffers outlive the call (Envoy copies them).
        unsafe {
            envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.ptr,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            );
        }
    }

    pub fn increment(&self, id: usize, delta: u64) {
        // SAFETY: an unlabelled counter defined by this filter's config; no label buffers.
        unsafe {
            envoy_dynamic_module_callback_http_filter_increment_counter(
                self.ptr,
                id,
                std::ptr::null(),
                0,
                delta,
            );
        }
    }

    pub fn record(&self, id: usize, value: u64) {
        // SAFETY: an unlabelled histogram defined by this filter's config; no label buffers.
        unsafe {
            envoy_dynamic_module_callback_http_filter_record_histogram_value(
                self.ptr,
                id,
                std::ptr::null(),
                0,
                value,
            );
        }
    }

    pub fn set_gauge(&self, id: usize, value: u64) {
        // SAFETY: an unlabelled gauge defined by this filter's config; no label buffers.
        unsafe {
            envoy_dynamic_module_callback_http_filter_set_gauge(
                self.ptr,
                id,
                std::ptr::null(),
                0,
                value,
            );
        }
    }

    /// The current value of a subscribed generic secret, copied (SDS may replace it between
    /// hooks, freeing the old value).
    pub fn secret(&self, id: usize) -> Option<Vec<u8>> {
        let mut out = EnvoyBuffer::EMPTY;
        // SAFETY: `out` is a valid place for one buffer.
        let found = unsafe {
            envoy_dynamic_module_callback_http_filter_get_generic_secret(self.ptr, id, &mut out)
        };
        // SAFETY: lent for this hook and copied here; empty means not delivered yet.
        found
            .then(|| unsafe { out.bytes() }.to_vec())
            .filter(|v| !v.is_empty())
    }
}

/// A filter configuration's Envoy handle, valid for the hook it was made in.
#[derive(Clone, Copy)]
pub struct ConfigEnv<'a> {
    ptr: ConfigEnvoyPtr,
    _hook: PhantomData<&'a ()>,
}

impl ConfigEnv<'_> {
    pub fn is_validation_mode(&self) -> bool {
        // SAFETY: called on the main thread (config hooks run there), as the ABI requires.
        unsafe { envoy_dynamic_module_callback_is_validation_mode() }
    }

    /// Defines an unlabelled counter (only while the config is being created).
    pub fn define_counter(&self, name: &str) -> Option<usize> {
        self.define(
            envoy_dynamic_module_callback_http_filter_config_define_counter,
            name,
        )
    }

    pub fn define_histogram(&self, name: &str) -> Option<usize> {
        self.define(
            envoy_dynamic_module_callback_http_filter_config_define_histogram,
            name,
        )
    }

    pub fn define_gauge(&self, name: &str) -> Option<usize> {
        self.define(
            envoy_dynamic_module_callback_http_filter_config_define_gauge,
            name,
        )
    }

    /// One of the three `define_*` callbacks, which share a signature.
    fn define(&self, callback: DefineMetric, name: &str) -> Option<usize> {
        let mut id = 0usize;
        // SAFETY: `callback` is one of Envoy's define callbacks, called with this config's
        // pointer while it is being created; the name outlives the call; no label names; `id`
        // is writable.
        let r = unsafe {
            callback(
                self.ptr,
                ModuleBuffer::of(name.as_bytes()),
                std::ptr::null(),
                0,
                &mut id,
            )
        };
        (r == METRICS_SUCCESS).then_some(id)
    }

    pub fn increment(&self, id: usize, delta: u64) {
        // SAFETY: an unlabelled counter this config defined.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_increment_counter(
                self.ptr,
                id,
                std::ptr::null(),
                0,
                delta,
            );
        }
    }

    pub fn set_gauge(&self, id: usize, value: u64) {
        // SAFETY: an unlabelled gauge this config defined.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_set_gauge(
                self.ptr,
                id,
                std::ptr::null(),
                0,
                value,
            );
        }
    }

    /// Subscribes to a generic secret (only while the config is being created). `source` is
    /// the JSON of an Envoy `ConfigSource`; empty for a static bootstrap secret.
    pub fn subscribe_secret(&self, name: &str, source: &str) -> Option<usize> {
        // SAFETY: both buffers outlive the call (Envoy copies them).
        let id = unsafe {
            envoy_dynamic_module_callback_http_filter_config_generic_secret_subscribe(
                self.ptr,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(source.as_bytes()),
            )
        };
        (id != 0).then_some(id)
    }

    /// An HTTP call from the config (main thread); its answer comes to the config's callout
    /// hook with the returned id.
    pub fn callout(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u64> {
        let raw: Vec<RawHeader> = headers
            .iter()
            .map(|(k, v)| RawHeader::of(k, v.as_bytes()))
            .collect();
        let mut id = 0u64;
        // SAFETY: every buffer outlives the call (Envoy copies the request); `id` is writable.
        let result = unsafe {
            envoy_dynamic_module_callback_http_filter_config_http_callout(
                self.ptr,
                &mut id,
                ModuleBuffer::of(cluster.as_bytes()),
                raw.as_ptr(),
                raw.len(),
                ModuleBuffer::of(body),
                timeout_ms,
            )
        };
        (result == CALLOUT_INIT_SUCCESS).then_some(id)
    }

    /// A scheduler that runs `Config::on_scheduled` on the main thread when committed to.
    pub fn scheduler(&self) -> Option<Scheduler> {
        // SAFETY: made while the config is being created, from its Envoy pointer.
        let ptr =
            unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(self.ptr) };
        (!ptr.is_null()).then_some(Scheduler(ptr))
    }
}

/// Envoy's config scheduler: `commit` from any thread makes Envoy call the config's scheduled
/// hook on the main thread. Deleted when dropped.
pub struct Scheduler(SchedulerPtr);

// SAFETY: the ABI documents `*_config_scheduler_commit` as callable from any thread; the
// pointer is only deleted on drop, which `module::Ticker` does after joining its thread.
unsafe impl Send for Scheduler {}
// SAFETY: as above: commit takes the pointer by value and Envoy synchronises internally.
unsafe impl Sync for Scheduler {}

impl Scheduler {
    pub fn commit(&self, event: u64) {
        // SAFETY: a live scheduler (not yet dropped); callable from any thread.
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_commit(self.0, event) }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: the module owns the scheduler and deletes it exactly once, here.
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.0) }
    }
}

// ---- panic barriers ------------------------------------------------------------------------

/// Runs a hook body; a panic is logged and `fallback` returned instead of unwinding into Envoy.
fn barrier<R>(hook: &str, fallback: R, body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(_) => {
            log(
                LogLevel::Critical,
                &format!("webhook-guard: panic caught in {hook} (a bug): failing closed"),
            );
            fallback
        }
    }
}

/// As `barrier`, for request hooks: a panic answers 503 `internal_error`, nothing passes.
fn request_barrier(
    hook: &str,
    stream: Stream<'_>,
    fallback: u32,
    body: impl FnOnce() -> u32,
) -> u32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(_) => {
            log(
                LogLevel::Critical,
                &format!("webhook-guard: panic caught in {hook} (a bug): answering 503"),
            );
            let reply = module::internal_error();
            let _ = catch_unwind(AssertUnwindSafe(|| module::send(stream, &reply)));
            fallback
        }
    }
}

fn stream_of<'a>(ptr: FilterEnvoyPtr) -> Stream<'a> {
    Stream {
        ptr,
        _hook: PhantomData,
    }
}

fn config_env_of<'a>(ptr: ConfigEnvoyPtr) -> ConfigEnv<'a> {
    ConfigEnv {
        ptr,
        _hook: PhantomData,
    }
}

/// SAFETY (caller): `ptr` came from `on_http_filter_config_new` (a leaked `Box<Arc<Config>>`)
/// and its destroy hook has not run; Envoy guarantees that for every hook it passes it to.
unsafe fn config_ref<'a>(ptr: *const c_void) -> Option<&'a Arc<Config>> {
    // SAFETY: per the caller's contract, null or our live box.
    unsafe { ptr.cast::<Arc<Config>>().as_ref() }
}

/// SAFETY (caller): `ptr` came from `on_http_filter_new` (a leaked `Box<Filter>`) and the
/// filter's destroy hook has not run; hooks of one stream run on one thread, one at a time
/// (re-entrantly at most), so a shared reference is all they get.
unsafe fn filter_ref<'a>(ptr: *const c_void) -> Option<&'a Filter> {
    // SAFETY: per the caller's contract, null or our live box.
    unsafe { ptr.cast::<Filter>().as_ref() }
}

// ---- exported hooks ------------------------------------------------------------------------

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const u8 {
    barrier("program_init", std::ptr::null(), || {
        module::init();
        ABI_VERSION.as_ptr()
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: ConfigEnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    barrier("http_filter_config_new", std::ptr::null(), || {
        // SAFETY: both buffers are lent for this hook; `Config::new` copies what it keeps.
        let (name, json) = unsafe { (name.bytes(), config.bytes()) };
        match Config::new(
            config_env_of(config_envoy),
            &String::from_utf8_lossy(name),
            json,
        ) {
            Some(config) => Box::into_raw(Box::new(config))
                .cast::<c_void>()
                .cast_const(),
            None => std::ptr::null(),
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    barrier("http_filter_config_destroy", (), || {
        if !config.is_null() {
            // SAFETY: the box `config_new` leaked, freed exactly once here (Envoy calls destroy
            // once, after the last use).
            let config = unsafe { Box::from_raw(config.cast::<Arc<Config>>().cast_mut()) };
            config.shutdown();
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    config_envoy: ConfigEnvoyPtr,
    config: *const c_void,
    _event: u64,
) {
    barrier("http_filter_config_scheduled", (), || {
        // SAFETY: our live config pointer, passed back by Envoy.
        if let Some(config) = unsafe { config_ref(config) } {
            config.on_scheduled(config_env_of(config_envoy));
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    config_envoy: ConfigEnvoyPtr,
    config: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const RawHeader,
    headers_len: usize,
    body: *const EnvoyBuffer,
    body_len: usize,
) {
    barrier("http_filter_config_http_callout_done", (), || {
        // SAFETY: the reply's buffers are lent for this hook and copied by `callout_reply`.
        let reply = unsafe { callout_reply(result, headers, headers_len, body, body_len) };
        // SAFETY: our live config pointer, passed back by Envoy.
        if let Some(config) = unsafe { config_ref(config) } {
            config.on_callout_done(config_env_of(config_envoy), callout_id, reply);
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    barrier("http_filter_per_route_config_new", std::ptr::null(), || {
        // SAFETY: lent for this hook; `RouteConfig::parse` copies what it keeps.
        let json = unsafe { config.bytes() };
        match RouteConfig::parse(json) {
            Some(route) => Box::into_raw(Box::new(route)).cast::<c_void>().cast_const(),
            None => std::ptr::null(),
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    config: *const c_void,
) {
    barrier("http_filter_per_route_config_destroy", (), || {
        if !config.is_null() {
            // SAFETY: the box `per_route_config_new` leaked, freed exactly once here.
            drop(unsafe { Box::from_raw(config.cast::<RouteConfig>().cast_mut()) });
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _filter_envoy: FilterEnvoyPtr,
) -> *const c_void {
    if FLOOR {
        return std::ptr::NonNull::<c_void>::dangling()
            .as_ptr()
            .cast_const();
    }
    barrier("http_filter_new", std::ptr::null(), || {
        // SAFETY: our live config pointer, passed back by Envoy.
        match unsafe { config_ref(config) } {
            Some(config) => Box::into_raw(Box::new(Filter::new(Arc::clone(config))))
                .cast::<c_void>()
                .cast_const(),
            None => std::ptr::null(),
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: *const c_void) {
    if FLOOR {
        return;
    }
    barrier("http_filter_destroy", (), || {
        if !filter.is_null() {
            // SAFETY: the box `filter_new` leaked; Envoy calls destroy once, after every other
            // hook of the stream has returned.
            drop(unsafe { Box::from_raw(filter.cast::<Filter>().cast_mut()) });
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    env: FilterEnvoyPtr,
    filter: *const c_void,
    end_of_stream: bool,
) -> u32 {
    if FLOOR {
        if FLOOR_HOLD {
            std::hint::black_box(stream_of(env).request_headers().len());
            if !end_of_stream {
                return status::HEADERS_STOP;
            }
        }
        return status::HEADERS_CONTINUE;
    }
    let stream = stream_of(env);
    request_barrier("request_headers", stream, status::HEADERS_STOP, || {
        // SAFETY: our live filter, passed back by Envoy for its own stream.
        match unsafe { filter_ref(filter) } {
            Some(f) => f.on_request_headers(stream, end_of_stream),
            None => status::HEADERS_CONTINUE,
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    env: FilterEnvoyPtr,
    filter: *const c_void,
    end_of_stream: bool,
) -> u32 {
    if FLOOR {
        if FLOOR_HOLD {
            if !end_of_stream {
                return status::BODY_STOP_AND_BUFFER;
            }
            let body = stream_of(env).request_body();
            std::hint::black_box(body.iter().map(|c| c.len()).sum::<usize>());
        }
        return status::BODY_CONTINUE;
    }
    let stream = stream_of(env);
    request_barrier("request_body", stream, status::BODY_STOP_AND_BUFFER, || {
        // SAFETY: as in `request_headers`.
        match unsafe { filter_ref(filter) } {
            Some(f) => f.on_request_body(stream, end_of_stream),
            None => status::BODY_CONTINUE,
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    env: FilterEnvoyPtr,
    filter: *const c_void,
) -> u32 {
    if FLOOR {
        return status::TRAILERS_CONTINUE;
    }
    let stream = stream_of(env);
    request_barrier("request_trailers", stream, status::TRAILERS_STOP, || {
        // SAFETY: as in `request_headers`.
        match unsafe { filter_ref(filter) } {
            Some(f) => f.on_request_trailers(stream),
            None => status::TRAILERS_CONTINUE,
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    env: FilterEnvoyPtr,
    filter: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    if FLOOR {
        return status::HEADERS_CONTINUE;
    }
    barrier("response_headers", status::HEADERS_CONTINUE, || {
        // SAFETY: as in `request_headers`.
        match unsafe { filter_ref(filter) } {
            Some(f) => f.on_response_headers(stream_of(env)),
            None => status::HEADERS_CONTINUE,
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _env: FilterEnvoyPtr,
    filter: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    if FLOOR {
        return status::BODY_CONTINUE;
    }
    barrier("response_body", status::BODY_CONTINUE, || {
        // SAFETY: as in `request_headers`.
        match unsafe { filter_ref(filter) } {
            Some(f) if f.holds_response() => status::BODY_STOP_AND_BUFFER,
            _ => status::BODY_CONTINUE,
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _env: FilterEnvoyPtr,
    filter: *const c_void,
) -> u32 {
    if FLOOR {
        return status::TRAILERS_CONTINUE;
    }
    barrier("response_trailers", status::TRAILERS_CONTINUE, || {
        // SAFETY: as in `request_headers`.
        match unsafe { filter_ref(filter) } {
            Some(f) if f.holds_response() => status::TRAILERS_STOP,
            _ => status::TRAILERS_CONTINUE,
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    env: FilterEnvoyPtr,
    filter: *const c_void,
) {
    if FLOOR {
        return;
    }
    barrier("stream_complete", (), || {
        // SAFETY: as in `request_headers`.
        if let Some(f) = unsafe { filter_ref(filter) } {
            f.on_stream_complete(stream_of(env));
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    env: FilterEnvoyPtr,
    filter: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const RawHeader,
    headers_len: usize,
    body: *const EnvoyBuffer,
    body_len: usize,
) {
    if FLOOR {
        return;
    }
    let stream = stream_of(env);
    request_barrier("http_callout_done", stream, 0, || {
        // SAFETY: the reply's buffers are lent for this hook and copied by `callout_reply`.
        let reply = unsafe { callout_reply(result, headers, headers_len, body, body_len) };
        // SAFETY: as in `request_headers`.
        if let Some(f) = unsafe { filter_ref(filter) } {
            f.on_callout_done(stream, callout_id, reply);
        }
        0
    });
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _env: FilterEnvoyPtr,
    _filter: *const c_void,
    _status: u32,
    _details: EnvoyBuffer,
    _reset_imminent: bool,
) -> u32 {
    0 // Continue: let Envoy send the reply (ours or its own) as it is.
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _env: FilterEnvoyPtr,
    _filter: *const c_void,
    _event: u64,
) {
}

// Hooks for features the module does not use (streaming callouts, write-buffer watermarks):
// Envoy looks every hook up when it loads the module.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _env: FilterEnvoyPtr,
    _filter: *const c_void,
    _stream: u64,
    _headers: *const RawHeader,
    _headers_len: usize,
    _end_of_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _env: FilterEnvoyPtr,
    _filter: *const c_void,
    _stream: u64,
    _data: *const EnvoyBuffer,
    _data_len: usize,
    _end_of_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _env: FilterEnvoyPtr,
    _filter: *const c_void,
    _stream: u64,
    _trailers: *const RawHeader,
    _trailers_len: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _env: FilterEnvoyPtr,
    _filter: *const c_void,
    _stream: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _env: FilterEnvoyPtr,
    _filter: *const c_void,
    _stream: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    _env: ConfigEnvoyPtr,
    _config: *const c_void,
    _stream: u64,
    _headers: *const RawHeader,
    _headers_len: usize,
    _end_of_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    _env: ConfigEnvoyPtr,
    _config: *const c_void,
    _stream: u64,
    _data: *const EnvoyBuffer,
    _data_len: usize,
    _end_of_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    _env: ConfigEnvoyPtr,
    _config: *const c_void,
    _stream: u64,
    _trailers: *const RawHeader,
    _trailers_len: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(
    _env: ConfigEnvoyPtr,
    _config: *const c_void,
    _stream: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    _env: ConfigEnvoyPtr,
    _config: *const c_void,
    _stream: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _env: FilterEnvoyPtr,
    _filter: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _env: FilterEnvoyPtr,
    _filter: *const c_void,
) {
}

/// A callout's answer, copied out of Envoy's buffers (valid only for the hook).
///
/// SAFETY (caller): `headers`/`body` point to `headers_len`/`body_len` elements Envoy lends for
/// the current hook (or are null, on failure).
unsafe fn callout_reply(
    result: u32,
    headers: *const RawHeader,
    headers_len: usize,
    body: *const EnvoyBuffer,
    body_len: usize,
) -> CalloutReply {
    if result != CALLOUT_RESULT_SUCCESS || headers.is_null() {
        return CalloutReply {
            status: None,
            body: Vec::new(),
        };
    }
    // SAFETY: non-null, `headers_len` headers lent for this hook (the caller's contract).
    let headers = unsafe { std::slice::from_raw_parts(headers, headers_len) };
    let status = headers.iter().find_map(|h| {
        // SAFETY: lent for this hook.
        let (k, v) = unsafe { h.parts() };
        (k == b":status")
            .then(|| std::str::from_utf8(v).ok()?.parse::<u16>().ok())
            .flatten()
    });
    let mut bytes = Vec::new();
    if !body.is_null() {
        // SAFETY: non-null, `body_len` buffers lent for this hook.
        for chunk in unsafe { std::slice::from_raw_parts(body, body_len) } {
            // SAFETY: lent for this hook and copied here.
            bytes.extend_from_slice(unsafe { chunk.bytes() });
        }
    }
    CalloutReply {
        status,
        body: bytes,
    }
}
