//! Layer 1, I/O: one module per AWS service or wire protocol, each with its own error. It knows
//! the domain and nothing above it.

pub mod delivery;
pub mod objects;
pub mod push;
pub mod queue;
pub mod sdk_http;
pub mod store;
