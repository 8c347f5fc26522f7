//! webhook-guard core: verification, time window and policy selection as plain Rust.
//! No proxy-wasm calls here; the host is reached through `host::Host`.
#![forbid(unsafe_code)]

pub mod codec;
pub mod compile;
pub mod config;
pub mod decrypt;
pub mod dedup;
pub mod etcd;
pub mod form;
pub mod guard;
pub mod host;
pub mod json;
pub mod memhost;
pub mod policy;
pub mod presets;
pub mod reason;
pub mod rfc3339;
pub mod scheme;
pub mod sign;
pub mod stats;
pub mod stream;
pub mod template;
pub mod verify;

pub use compile::{compile, compile_for_plugin, compile_with, Build, ConfigError, Options};
pub use dedup::Claim;
pub use etcd::wire::Reply as RemoteReply;
pub use guard::{
    Accepted, Background, Drive, Guard, Hold, LocalReply, Pending, Plaintext, Rejection,
    RemoteCall, RemoteTask, RequestInfo, Route, Upstream,
};
pub use host::{Host, Level, SetError};
pub use policy::RouteInfo;
pub use reason::Reason;
pub use stream::{BodyStep, Direction, Reply, Step, Stream};
