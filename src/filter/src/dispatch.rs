//! Routes the host's callbacks to the root contexts (one per plugin configuration) and to the
//! per-request streams. The VM is single-threaded: state is thread-local, and no borrow of it is
//! held while our code runs (a stream or root is taken out, called, and put back), so a host
//! call that re-enters the VM can never find it borrowed.

use std::cell::RefCell;
use std::collections::HashMap;

use webhook_guard_core::stream::internal_error;
use webhook_guard_core::Level;

use crate::abi;
use crate::host;
use crate::http::{send, Http};
use crate::root::Root;

#[derive(Default)]
struct State {
    roots: HashMap<u32, Root>,
    /// Per request, from context creation to its log hook.
    streams: HashMap<u32, Stream>,
    /// Callout token -> the context that made the call (its answer is delivered by token).
    callouts: HashMap<u32, u32>,
    /// The context Envoy is calling now.
    active: u32,
}

enum Stream {
    /// Created under a root that has a configuration.
    Ready(Http),
    /// Created under a root without one (it failed to configure, or is unknown): fail closed.
    Unconfigured,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn with<T>(f: impl FnOnce(&mut State) -> T) -> T {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

/// A callout the active context just made.
pub fn register_callout(token: u32) {
    with(|s| {
        let active = s.active;
        s.callouts.insert(token, active);
    });
}

/// Takes context `id` out of the state as the active one.
fn take_stream(id: u32) -> Option<Stream> {
    with(|s| {
        s.active = id;
        s.streams.remove(&id)
    })
}

/// A stream is over: its callouts' answers will never come (Envoy cancels them).
fn forget_callouts(s: &mut State, id: u32) {
    s.callouts.retain(|_, owner| *owner != id);
}

pub fn init() {
    // A panic aborts the VM (every request on this worker then fails): say why first.
    std::panic::set_hook(Box::new(|info| {
        host::log(Level::Error, &format!("webhook-guard: panic: {info}"));
    }));
}

pub fn context_create(id: u32, parent: u32) {
    with(|s| {
        if parent == 0 {
            s.roots.insert(id, Root::new(id));
            return;
        }
        let stream = match s.roots.get(&parent).and_then(Root::loaded) {
            Some(loaded) => Stream::Ready(Http::new(loaded)),
            None => Stream::Unconfigured,
        };
        s.streams.insert(id, stream);
    });
}

/// Runs `f` on root `id` taken out of the state (put back afterwards).
fn on_root<T>(id: u32, f: impl FnOnce(&mut Root) -> T) -> Option<T> {
    let mut root = with(|s| {
        s.active = id;
        s.roots.remove(&id)
    })?;
    let out = f(&mut root);
    with(|s| s.roots.insert(id, root));
    Some(out)
}

/// Puts a stream back after a callback, unless it is decided: every later callback of a
/// decided stream passes through, which is what an unknown stream gets (`unknown` below), so
/// most requests (pass-throughs, rejections) skip the bookkeeping of their remaining
/// callbacks. The counting build keeps them to report at the log hook.
fn put_back(id: u32, http: Http) {
    if !http.is_decided() || cfg!(feature = "count-transitions") {
        with(|s| s.streams.insert(id, Stream::Ready(http)));
    }
}

/// Runs `f` on stream `id` taken out of the state (put back afterwards unless it is decided).
fn on_stream(id: u32, unknown: u32, f: impl FnOnce(&mut Http) -> u32) -> u32 {
    match take_stream(id) {
        Some(Stream::Ready(mut http)) => {
            let out = f(&mut http);
            put_back(id, http);
            out
        }
        Some(Stream::Unconfigured) => {
            with(|s| s.streams.insert(id, Stream::Unconfigured));
            unknown
        }
        None => unknown,
    }
}

pub fn configure(root_id: u32, size: usize) -> bool {
    on_root(root_id, |root| root.configure(size)).unwrap_or(false)
}

pub fn tick(root_id: u32) {
    on_root(root_id, Root::tick);
}

/// A callout's answer, delivered to the context that made the call.
pub fn call_response(context_id: u32, token: u32, body_size: usize) {
    let Some(owner) = with(|s| s.callouts.remove(&token)) else {
        return;
    };
    if owner != context_id {
        let _ = abi::set_effective_context(owner);
    }
    if on_root(owner, |root| root.call_response(token, body_size)).is_some() {
        return;
    }
    on_stream(owner, abi::CONTINUE, |http| {
        http.call_response(token, body_size);
        abi::CONTINUE
    });
}

pub fn request_headers(id: u32, end_of_stream: bool) -> u32 {
    let unconfigured = || send(&internal_error());
    match take_stream(id) {
        Some(Stream::Ready(mut http)) => {
            let out = http.request_headers(end_of_stream);
            put_back(id, http);
            out
        }
        // No configuration: nothing can be verified, so nothing passes.
        Some(Stream::Unconfigured) => {
            with(|s| s.streams.insert(id, Stream::Unconfigured));
            unconfigured()
        }
        None => unconfigured(),
    }
}

pub fn request_body(id: u32, size: usize, end_of_stream: bool) -> u32 {
    on_stream(id, abi::CONTINUE, |http| {
        http.request_body(size, end_of_stream)
    })
}

pub fn request_trailers(id: u32) -> u32 {
    on_stream(id, abi::CONTINUE, Http::request_trailers)
}

pub fn response_headers(id: u32) -> u32 {
    on_stream(id, abi::CONTINUE, Http::response_headers)
}

pub fn response_data(id: u32) -> u32 {
    on_stream(id, abi::CONTINUE, |http| http.response_data())
}

/// The request is over (Envoy's access-log hook): settle what it holds, then forget it.
pub fn log(id: u32) {
    if let Some(Stream::Ready(mut http)) = take_stream(id) {
        http.end();
        host::report_transitions();
    }
    with(|s| forget_callouts(s, id));
}

/// A context is gone. Streams were already forgotten at their log hook (this is the fallback
/// if Envoy never ran it); a root's configuration is dropped with it.
pub fn delete(id: u32) {
    with(|s| {
        if s.streams.remove(&id).is_none() {
            s.roots.remove(&id);
        }
        forget_callouts(s, id);
    });
}
