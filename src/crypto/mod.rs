//! Noise channels (the `snow` crate) and the certificate exchange that
//! makes them identity-bearing.
//!
//! [`noise`] wraps snow's handshake and transport states with typed errors.
//! [`channel`] runs an XX handshake whose payloads carry each side's
//! [`Certificate`](crate::identity::Certificate), verified against the pinned
//! authority key and bound to the Noise static key, so every control
//! channel knows who is at the other end from a verified certificate, never
//! from a claim in a message.

pub mod channel;
pub mod noise;

pub use channel::{ChannelError, ChannelHandshake, Established};
pub use noise::{Handshake, NoiseError, Transport};
