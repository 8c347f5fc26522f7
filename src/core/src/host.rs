//! What the core needs from the proxy, as a trait: the glue implements it over proxy-wasm
//! hostcalls, tests over in-memory fakes.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

pub trait Host {
    /// Wall clock, milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Increments the counter at `index` of `Guard::counter_names()`.
    fn increment(&self, counter: usize);
    fn log(&self, level: Level, line: &str);
}
