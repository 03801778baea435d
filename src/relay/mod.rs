//! Relays that speak TURN (RFC 8656), sans-IO: the server core every
//! supernode runs ([`TurnServer`]), the client core callers use to get a
//! relayed address ([`TurnClient`], API in its module doc), REST-style
//! credentials shared with coturn's `use-auth-secret` ([`creds`]), and the
//! framing of ChannelData and TURN over TCP ([`framing`]). STUN messages
//! are encoded and decoded with the `stun-rs` codec; the two per-packet
//! messages (Send and Data indications) and ChannelData by hand.
//!
//! Sockets live in the node's drivers (`node::turn`): the server asks its
//! driver for a relay socket per allocation and names, on every transmit,
//! the socket it leaves from.

pub mod client;
pub mod creds;
pub mod framing;
pub mod quota;
pub mod server;
pub mod stunmsg;

pub use client::{
    TurnClient, TurnClientConfig, TurnClientError, TurnClientEvent, TurnClientStats,
    TurnCredentials, TurnTransmit, TurnTransport,
};
pub use creds::{RelayGrant, RestCredentials, issue, rest_password, rest_username};
pub use server::{
    AllocId, ClientAddr, ServerEvent, ServerTransmit, Transport, TurnServer, TurnServerConfig,
    TurnStats, Via,
};

#[cfg(test)]
mod tests;
