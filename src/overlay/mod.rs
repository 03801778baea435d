//! The supernode overlay: membership among supernodes, the one-hop user
//! directory spread over them, and clients' attachment to them. All of it
//! is sans-IO: [`SupernodeCore`] and [`ClientCore`] take `now` (a
//! [`Millis`](crate::time::Millis) on the node's timeline, for every
//! timer) and the wall clock beside it (a
//! [`UnixMillis`](crate::time::UnixMillis), at which records and envelopes
//! are signed and judged), the sender's verified certificate and message
//! bytes, and return messages to send, events and their next deadline.
//! The node drivers run them over encrypted UDP links; the simulator in
//! [`crate::sim`] runs thousands of them in virtual time.
//!
//! The directory is a one-hop DHT: every supernode knows every other
//! (membership), a user's record lives on the [`SupernodeConfig::replicas`]
//! supernodes that follow `user_key(username)` on the ring of
//! `node_id(ed25519)` values, and a lookup goes client -> its supernode ->
//! an owner.

pub mod addr;
pub mod client;
pub mod envelope;
pub mod membership;
pub mod msg;
pub mod record;
pub mod supernode;

pub use client::{ClientConfig, ClientCore, ClientEvent, Devices, LookupOutcome};
pub use envelope::EnvelopeId;
pub use membership::{Membership, MembershipConfig};
pub use msg::{EnvResult, Msg};
pub use record::{PresenceRecord, RecordContent, RecordError, Status};
pub use supernode::{SupernodeConfig, SupernodeCore, SupernodeEvent, SupernodeStats};

use blake2::{Blake2s256, Digest};

fn h64(domain: &[u8], data: &[u8]) -> u64 {
    let mut h = Blake2s256::new();
    h.update(domain);
    h.update(data);
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// A supernode's position on the ring, from its certified ed25519 key.
pub fn node_id(ed25519: &[u8; 32]) -> u64 {
    h64(b"natter node\0", ed25519)
}

/// A user's position on the ring.
pub fn user_key(username: &str) -> u64 {
    h64(b"natter user\0", username.as_bytes())
}

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dst: std::net::SocketAddr,
    pub bytes: Vec<u8>,
}
