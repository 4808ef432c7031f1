//! The contract between the herd server and its runner processes.
//!
//! Typed messages ([`ServerMessage`] from the server, [`RunnerMessage`] from the runner),
//! carried as JSON in length-delimited frames ([`frame`]). Invariant: this crate does no I/O
//! beyond reading and writing frames on a stream it is handed; it knows nothing of sockets,
//! llama.cpp or HTTP.

pub mod frame;
mod messages;

pub use messages::*;

/// Bumped on any incompatible change to the messages; checked in the handshake.
pub const PROTOCOL_VERSION: u32 = 2;
