//! natter: a peer-to-peer softphone for the terminal.
//!
//! Layers, top to bottom (imports point down only):
//! - `node`: tokio drivers around the cores;
//! - `authority`: the login server and its protocol;
//! - `link`: secure links over UDP (sans-IO);
//! - `crypto`, `identity`, `wire`, `config`, `clock`: the base.

pub mod authority;
pub mod clock;
pub mod config;
pub mod crypto;
#[doc(hidden)]
pub mod fuzzing;
pub mod ice;
pub mod identity;
pub mod link;
pub mod node;
pub mod overlay;
pub mod sim;
pub mod wire;
