//! Test harness: a recording origin, the real keygate binary, its configs, and a raw HTTP
//! client, one submodule each; everything is re-exported here (`use crate::harness::*`).
//!
//! Everything binds `127.0.0.1:0` (or a port reserved that way), waits for readiness by
//! polling with a deadline ([`eventually`]), and cleans up on drop: gateways and other
//! child processes are killed, origins re-raise their threads' panics.

mod config;
mod gateway;
mod http;
mod origin;
mod pki;
mod process;
mod redis;

pub use config::*;
pub use gateway::*;
pub use http::*;
pub use origin::*;
pub use pki::*;
pub use process::*;
pub use redis::*;
