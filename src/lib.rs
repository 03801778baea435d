//! natter: a peer-to-peer softphone for the terminal.
//!
//! Layers, top to bottom (imports point down only):
//! - `ui`: the terminal UI, talking to `node::api` only;
//! - `node`: tokio drivers around the cores;
//! - `authority`: the login server and its protocol;
//! - `metrics`: the Prometheus scrape endpoint of supernodes and the
//!   authority, rendering snapshots of the cores' counters;
//! - `chat`: end-to-end encrypted chat over sealed envelopes (sans-IO
//!   core, SQLite history);
//! - `contacts`: authorization requests, blocking, presence for contacts
//!   (sans-IO core, SQLite list);
//! - `link`: secure links over UDP (sans-IO);
//! - `media`, `call`: voice (audio devices, codec, encrypted media) and
//!   call signalling;
//! - `crypto`, `identity`, `wire` (with the STUN layer that demultiplexes
//!   the one UDP socket), `sqlite`, `config`, `clock`, `histogram`,
//!   `limits` (per-source shares and rate limits), `time` (the `Millis`
//!   and `UnixSecs` types), `socket` (dual-stack
//!   UDP sockets and TCP listeners): the base.

pub mod authority;
pub mod call;
pub mod chat;
pub mod clock;
pub mod conference;
pub mod config;
pub mod contacts;
pub mod crypto;
#[doc(hidden)]
pub mod fuzzing;
pub mod group;
pub mod histogram;
pub mod ice;
pub mod identity;
pub mod limits;
pub mod link;
pub mod media;
pub mod metrics;
pub mod mmsg;
#[cfg(test)]
mod module_graph;
pub mod nat;
pub mod node;
pub mod overlay;
pub mod relay;
pub mod sim;
pub mod socket;
pub mod sqlite;
pub mod tcp_limits;
pub mod time;
pub mod transfer;
pub mod ui;
pub mod wire;
