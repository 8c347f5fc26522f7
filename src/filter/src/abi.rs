//! The proxy-wasm ABI (0.2.1) as Envoy implements it, and the only `unsafe` in this crate.
//!
//! We export just the callbacks the filter uses: Envoy skips a callback a module does not
//! export, and each VM entry costs microseconds (the SDK exports all of them, so every request
//! paid for `proxy_on_done` and the network-filter hooks' lookups). Every host call returns a
//! status instead of panicking: a panic would kill the VM for every request on the worker.
//!
//! Data the host returns is written into memory it obtains from `proxy_on_memory_allocate`
//! (one VM entry per returned buffer); we take ownership of it as a `Vec<u8>`.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ptr::{null, null_mut};

pub const OK: u32 = 0;
pub const NOT_FOUND: u32 = 1;
pub const CAS_MISMATCH: u32 = 8;

/// Header maps (`proxy_get_header_map_*`).
pub const REQUEST_HEADERS: u32 = 0;
pub const RESPONSE_HEADERS: u32 = 2;
pub const CALL_RESPONSE_HEADERS: u32 = 6;
/// Buffers (`proxy_get_buffer_bytes`).
pub const REQUEST_BODY: u32 = 0;
pub const CALL_RESPONSE_BODY: u32 = 4;
pub const PLUGIN_CONFIGURATION: u32 = 7;
/// Streams (`proxy_continue_stream`).
pub const HTTP_REQUEST: u32 = 0;
pub const HTTP_RESPONSE: u32 = 1;
/// Metric kinds.
pub const COUNTER: u32 = 0;
pub const GAUGE: u32 = 1;
pub const HISTOGRAM: u32 = 2;
/// Callback results.
pub const CONTINUE: u32 = 0;
pub const PAUSE: u32 = 1;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_log_level(level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(nanos: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        kind: u32,
        start: usize,
        max: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        kind: u32,
        start: usize,
        length: usize,
        data: *const u8,
        size: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path: *const u8,
        path_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_continue_stream(stream: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_http_call(
        upstream: *const u8,
        upstream_size: usize,
        headers: *const u8,
        headers_size: usize,
        body: *const u8,
        body_size: usize,
        trailers: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        token: *mut u32,
    ) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, delta: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
}

/// Takes ownership of a buffer the host filled through `proxy_on_memory_allocate`.
///
/// SAFETY (caller): `data`/`size` come from a host call that returned OK; the host obtained
/// `data` from `proxy_on_memory_allocate(size)` (a boxed slice of exactly `size` bytes) and wrote
/// all of them, or left `data` null.
unsafe fn owned(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: per the contract above, the allocation is ours, `size` bytes, initialised.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Calls a host function that returns a buffer, and takes the buffer.
fn returning(
    name: &'static str,
    call: impl FnOnce(*mut *mut u8, *mut usize) -> u32,
) -> Result<Option<Vec<u8>>, u32> {
    let (mut data, mut size) = (null_mut::<u8>(), 0usize);
    count::hostcall(name);
    match call(&mut data, &mut size) {
        // SAFETY: the host returned OK for these out-parameters (see `owned`).
        OK => Ok(unsafe { owned(data, size) }),
        NOT_FOUND => Ok(None),
        status => Err(status),
    }
}

pub fn log(level: u32, line: &str) {
    count::hostcall("proxy_log");
    // SAFETY: a valid UTF-8 buffer, read by the host during the call only.
    let _ = unsafe { proxy_log(level, line.as_ptr(), line.len()) };
}

thread_local! {
    /// The host clock, read at most once per callback: the microseconds between two reads in
    /// one callback mean nothing to a window of seconds or to the latency histogram (first
    /// bound 100 µs), and each read is a host call.
    static CLOCK: Cell<Option<u64>> = const { Cell::new(None) };
    /// Envoy's wasm log level, read when a configuration loads and on every tick rather than
    /// per rejection (a host call each): a level changed through the admin port applies from
    /// the next tick.
    static LOG_LEVEL: Cell<Option<u32>> = const { Cell::new(None) };
}

/// A callback starts: forget the previous callback's clock reading.
fn enter(name: &'static str) {
    count::entry(name);
    CLOCK.set(None);
}

/// Envoy's level for wasm logs (trace 0 .. critical 5, off 6). Read as a plain integer: the
/// SDK's enum has no "off", so reading it there was undefined behaviour.
fn read_log_level() -> Option<u32> {
    let mut level = 0u32;
    count::hostcall("proxy_get_log_level");
    // SAFETY: the host writes one u32 through a valid pointer.
    (unsafe { proxy_get_log_level(&mut level) } == OK).then_some(level)
}

pub fn refresh_log_level() {
    LOG_LEVEL.set(read_log_level());
}

/// The level as of the last configuration or tick (read now if never read).
pub fn log_level() -> Option<u32> {
    if LOG_LEVEL.get().is_none() {
        refresh_log_level();
    }
    LOG_LEVEL.get()
}

pub fn now_nanos() -> Option<u64> {
    if let Some(nanos) = CLOCK.get() {
        return Some(nanos);
    }
    let mut nanos = 0u64;
    count::hostcall("proxy_get_current_time_nanoseconds");
    // SAFETY: the host writes one u64 through a valid pointer.
    let read = (unsafe { proxy_get_current_time_nanoseconds(&mut nanos) } == OK).then_some(nanos);
    CLOCK.set(read);
    read
}

pub fn set_tick_period_ms(period: u32) {
    count::hostcall("proxy_set_tick_period_milliseconds");
    // SAFETY: no pointers.
    let _ = unsafe { proxy_set_tick_period_milliseconds(period) };
}

pub fn buffer(kind: u32, start: usize, max: usize) -> Option<Vec<u8>> {
    // SAFETY: valid out-pointers for the call's duration.
    returning("proxy_get_buffer_bytes", |d, s| unsafe {
        proxy_get_buffer_bytes(kind, start, max, d, s)
    })
    .ok()
    .flatten()
}

/// Replaces bytes `start..start + length` of a buffer with `data` (Envoy: `start` 0 drains
/// `length` bytes and prepends `data`).
pub fn set_buffer(kind: u32, start: usize, length: usize, data: &[u8]) -> bool {
    count::hostcall("proxy_set_buffer_bytes");
    // SAFETY: `data` is read during the call.
    (unsafe { proxy_set_buffer_bytes(kind, start, length, data.as_ptr(), data.len()) }) == OK
}

/// Sets header `name` to `value` (added when absent).
pub fn replace_header(map: u32, name: &str, value: &[u8]) -> bool {
    count::hostcall("proxy_replace_header_map_value");
    // SAFETY: both buffers are read during the call.
    (unsafe {
        proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    }) == OK
}

/// All of a header map, serialized (parse with `wire::pairs`).
pub fn header_map(map: u32) -> Option<Vec<u8>> {
    // SAFETY: valid out-pointers for the call's duration.
    returning("proxy_get_header_map_pairs", |d, s| unsafe {
        proxy_get_header_map_pairs(map, d, s)
    })
    .ok()
    .flatten()
}

pub fn header(map: u32, name: &str) -> Option<Vec<u8>> {
    // SAFETY: `name` is read during the call; valid out-pointers.
    returning("proxy_get_header_map_value", |d, s| unsafe {
        proxy_get_header_map_value(map, name.as_ptr(), name.len(), d, s)
    })
    .ok()
    .flatten()
}

/// Answers the request locally; Envoy sends it after the current callback returns.
pub fn send_local_response(status: u32, details: &str, body: &[u8], headers: &[u8]) -> bool {
    count::hostcall("proxy_send_local_response");
    // SAFETY: three buffers read by the host during the call; -1: not a gRPC reply.
    let status = unsafe {
        proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    };
    status == OK
}

/// A shared-data value and its CAS token; `Ok(None)` when the key does not exist.
pub fn shared_get(key: &str) -> Result<Option<(Vec<u8>, u32)>, u32> {
    let mut cas = 0u32;
    // SAFETY: `key` is read during the call; valid out-pointers.
    let value = returning("proxy_get_shared_data", |d, s| unsafe {
        proxy_get_shared_data(key.as_ptr(), key.len(), d, s, &mut cas)
    })?;
    Ok(match (value, cas) {
        (_, 0) => None,
        (value, cas) => Some((value.unwrap_or_default(), cas)),
    })
}

/// Writes `value` if the key's CAS token is still `cas` (0: unconditionally).
pub fn shared_set(key: &str, value: &[u8], cas: u32) -> Result<(), u32> {
    count::hostcall("proxy_set_shared_data");
    // SAFETY: both buffers are read during the call.
    match unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    } {
        OK => Ok(()),
        status => Err(status),
    }
}

/// A property by its serialized path (`wire::path`).
pub fn property(path: &[u8]) -> Option<Vec<u8>> {
    // SAFETY: `path` is read during the call; valid out-pointers.
    returning("proxy_get_property", |d, s| unsafe {
        proxy_get_property(path.as_ptr(), path.len(), d, s)
    })
    .ok()
    .flatten()
}

pub fn set_property(path: &[u8], value: &[u8]) -> bool {
    count::hostcall("proxy_set_property");
    // SAFETY: both buffers are read during the call.
    (unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) }) == OK
}

pub fn continue_stream(stream: u32) -> bool {
    count::hostcall("proxy_continue_stream");
    // SAFETY: no pointers.
    (unsafe { proxy_continue_stream(stream) }) == OK
}

/// Makes later host calls act on `context_id` (a callout's answer may arrive on another one).
pub fn set_effective_context(context_id: u32) -> bool {
    count::hostcall("proxy_set_effective_context");
    // SAFETY: no pointers.
    (unsafe { proxy_set_effective_context(context_id) }) == OK
}

/// Sends a request to an Envoy cluster; the answer comes to `proxy_on_http_call_response` with
/// the returned token.
pub fn http_call(cluster: &str, headers: &[u8], body: &[u8], timeout_ms: u32) -> Option<u32> {
    let mut token = 0u32;
    count::hostcall("proxy_http_call");
    // SAFETY: all buffers are read during the call; no trailers (null, 0).
    let status = unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            body.as_ptr(),
            body.len(),
            null(),
            0,
            timeout_ms,
            &mut token,
        )
    };
    let token = (status == OK).then_some(token)?;
    crate::dispatch::register_callout(token);
    Some(token)
}

pub fn define_metric(kind: u32, name: &str) -> Option<u32> {
    let mut id = 0u32;
    count::hostcall("proxy_define_metric");
    // SAFETY: `name` is read during the call; the host writes one u32.
    (unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) } == OK).then_some(id)
}

pub fn increment_metric(id: u32, delta: i64) {
    count::hostcall("proxy_increment_metric");
    // SAFETY: no pointers.
    let _ = unsafe { proxy_increment_metric(id, delta) };
}

pub fn record_metric(id: u32, value: u64) {
    count::hostcall("proxy_record_metric");
    // SAFETY: no pointers.
    let _ = unsafe { proxy_record_metric(id, value) };
}

// ---- exports: the host's entry points ------------------------------------------------------

/// Bench only (`--features floor-probe`, never shipped): every stream callback returns at once,
/// and with `floor-headers` request headers first read the header map, so bench.py can measure
/// what Envoy and V8 charge a module that does nothing (the host's floor) and what one
/// data-returning host call adds. With `floor-hold` (which implies both) the module also does
/// the least any body-verifying filter must: it holds the request at its headers, lets Envoy
/// buffer the body, reads the whole body once at its end, and lets the request go on (the
/// reference for the accepted, replay and invalid rows). Constant, so normal builds compile
/// the checks away.
const FLOOR: bool = cfg!(feature = "floor-probe");
const FLOOR_HOLD: bool = cfg!(feature = "floor-hold");

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// The host asks for `size` bytes to hand us data in. A boxed slice has exactly that capacity,
/// which `owned` relies on.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    count::entry("memory_allocate");
    // Not zeroed (a 128 KiB body would pay for it): the host writes every byte before we read.
    let mut buffer: Vec<std::mem::MaybeUninit<u8>> = Vec::with_capacity(size);
    // SAFETY: MaybeUninit needs no initialisation; the capacity is `size`.
    unsafe { buffer.set_len(size) };
    Box::into_raw(buffer.into_boxed_slice()).cast::<u8>()
}

extern "C" {
    fn __wasm_call_ctors();
}

/// WASI reactor initialisation, run once when the VM starts.
#[no_mangle]
pub extern "C" fn _initialize() {
    // SAFETY: the static constructors the toolchain generated; run once, before anything else.
    unsafe { __wasm_call_ctors() };
    crate::dispatch::init();
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, parent_id: u32) {
    enter("context_create");
    if FLOOR && parent_id != 0 {
        return;
    }
    crate::dispatch::context_create(context_id, parent_id);
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(root_id: u32, size: usize) -> u32 {
    enter("configure");
    refresh_log_level();
    u32::from(crate::dispatch::configure(root_id, size))
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(root_id: u32) {
    enter("tick");
    refresh_log_level();
    crate::dispatch::tick(root_id);
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    context_id: u32,
    token: u32,
    _headers: usize,
    body_size: usize,
    _trailers: usize,
) {
    enter("http_call_response");
    crate::dispatch::call_response(context_id, token, body_size);
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context_id: u32, _headers: usize, eos: u32) -> u32 {
    enter("request_headers");
    if FLOOR {
        if cfg!(feature = "floor-headers") {
            let _ = header_map(REQUEST_HEADERS);
        }
        return if FLOOR_HOLD && eos == 0 {
            PAUSE
        } else {
            CONTINUE
        };
    }
    crate::dispatch::request_headers(context_id, eos != 0)
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(context_id: u32, size: usize, eos: u32) -> u32 {
    enter("request_body");
    if FLOOR {
        if FLOOR_HOLD {
            if eos == 0 {
                return PAUSE;
            }
            let _ = buffer(REQUEST_BODY, 0, size);
        }
        return CONTINUE;
    }
    crate::dispatch::request_body(context_id, size, eos != 0)
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(context_id: u32, _trailers: usize) -> u32 {
    enter("request_trailers");
    if FLOOR {
        return CONTINUE;
    }
    crate::dispatch::request_trailers(context_id)
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(context_id: u32, _headers: usize, _eos: u32) -> u32 {
    enter("response_headers");
    if FLOOR {
        return CONTINUE;
    }
    crate::dispatch::response_headers(context_id)
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(context_id: u32, _size: usize, _eos: u32) -> u32 {
    enter("response_body");
    if FLOOR {
        return CONTINUE;
    }
    crate::dispatch::response_data(context_id)
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(context_id: u32, _trailers: usize) -> u32 {
    enter("response_trailers");
    if FLOOR {
        return CONTINUE;
    }
    crate::dispatch::response_data(context_id)
}

#[no_mangle]
pub extern "C" fn proxy_on_log(context_id: u32) {
    enter("log");
    if FLOOR {
        return;
    }
    crate::dispatch::log(context_id);
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    if FLOOR {
        return;
    }
    crate::dispatch::delete(context_id);
}

/// Transition counting (`--features count-transitions`, for docs/benchmarks.md's table): the VM
/// entries and host calls of each request, in order, written as one log line when the request's
/// log hook runs. Without the feature every function here is empty.
pub mod count {
    #[cfg(feature = "count-transitions")]
    mod imp {
        use std::cell::RefCell;

        thread_local! {
            static EVENTS: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
        }

        fn push(event: &'static str) {
            EVENTS.with(|e| e.borrow_mut().push(event));
        }

        pub fn entry(name: &'static str) {
            push(name);
        }

        /// Host calls are told from entries by their `proxy_` prefix.
        pub fn hostcall(name: &'static str) {
            push(name);
        }

        pub fn take() -> Vec<&'static str> {
            EVENTS.with(|e| std::mem::take(&mut *e.borrow_mut()))
        }
    }

    #[cfg(not(feature = "count-transitions"))]
    mod imp {
        #[inline(always)]
        pub fn entry(_name: &'static str) {}
        #[inline(always)]
        pub fn hostcall(_name: &'static str) {}
        pub fn take() -> Vec<&'static str> {
            Vec::new()
        }
    }

    pub use imp::{entry, hostcall, take};
}
