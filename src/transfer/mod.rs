//! File transfer between users: the sans-IO protocol core and its wire.
//!
//! A sender offers a file (name, size, BLAKE2b-256 of the whole file) in a
//! sealed envelope; the receiver accepts it into a destination of its
//! choice (or declines); the bytes then travel over the peer link session
//! (end-to-end encrypted, direct or relayed as ICE chose), numbered,
//! acknowledged, retransmitted when lost, under delay-based congestion
//! control ([`ledbat`]) that gives way to a call on the same path. The
//! receiver keeps a partial file and a record of the ranges it holds, so
//! either side may be killed and restarted: the transfer resumes where it
//! was. The receiver hashes the whole file at the end; only a match moves
//! it into place.
//!
//! - [`wire`]: the messages (envelope payloads and link messages);
//! - [`ranges`]: range sets (bytes held, packet numbers seen);
//! - [`ledbat`]: the congestion controller;
//! - [`core`]: [`Transfers`], every transfer of one node.
//!
//! The node's files sub-driver (`node::files`) does the I/O.

pub mod core;
pub mod ledbat;
pub mod ranges;
#[cfg(test)]
mod sim;
pub mod wire;

pub use self::core::{
    DataOut, FileEvent, FileFailure, FileInfo, FileProgress, FileState, Output, Standing,
    TransferConfig, TransferStats, Transfers,
};
pub use ranges::RangeSet;
pub use wire::{LinkMsg, Signal, TransferId};

/// The whole-file hash: BLAKE2b with a 256-bit output.
pub type FileHasher = blake2::Blake2b<blake2::digest::consts::U32>;

/// The hash of `bytes` (tests; the driver hashes files in pieces).
pub fn hash_bytes(bytes: &[u8]) -> [u8; 32] {
    use blake2::Digest;
    FileHasher::digest(bytes).into()
}
