//! Secure links over UDP: a sans-IO endpoint that every control channel in
//! natter (client-supernode, supernode-supernode, peer-peer) runs over.
//!
//! [`LinkEndpoint`] owns the device identity, its certificate and the
//! pinned authority key, and holds one session per remote address. It has
//! no socket, clock or entropy source of its own: the driver passes
//! datagrams, `now_ms` (milliseconds since the Unix epoch) and an RNG in,
//! and takes datagrams ([`Transmit`]), [`LinkEvent`]s and the next deadline
//! out. `node::udp` is the tokio driver.
//!
//! # Protocol
//!
//! Datagrams are [`Frame`](crate::wire::Frame)s of kinds 16 to 21 (see
//! [`packet`] for the byte layout). A session is a Noise XX handshake
//! (prologue `"natter link v1"`) whose second and third messages carry each
//! side's certificate, verified as [`crate::crypto::channel`] does: against
//! the pinned authority key, valid at `now`, and with its x25519 key equal
//! to the static key the handshake proved.
//!
//! ```text
//! initiator                                   responder
//! INIT  [i | e | padding]               ->
//!                                       <-    RESP [r | i | e, ee, s, es, {cert}]
//! FIN   [r | s, se, {cert}]             ->                     (established)
//!                                       <-    DATA [i | 0 | {}]   (ack)
//! (established on the first authenticated DATA)
//! DATA  [r | counter | {payload}]       <->   DATA [i | counter | {payload}]
//! ```
//!
//! - **Indexes**, as in WireGuard: each side picks a random u32 for the
//!   session; INIT carries the initiator's, RESP both, FIN and DATA the
//!   receiver's, so a datagram finds its session without trusting the
//!   source address. Handshake replies are only taken from the address
//!   the handshake is with; INIT is padded to the size of the RESP it
//!   provokes, so a spoofed INIT cannot amplify traffic.
//! - **DATA** is encrypted with Noise's stateless transport, the counter
//!   as nonce; a 2048-packet sliding window rejects duplicates and counters
//!   too old to judge. An empty payload is a keepalive (also the
//!   responder's ack), never delivered as a message.
//! - **Loss**: the initiator re-sends INIT with exponential backoff until
//!   RESP arrives or `handshake_attempts` run out (then `Closed{Timeout}`,
//!   and queued messages are dropped and counted). A duplicate INIT (same
//!   address and initiator index) is answered with the cached RESP. Until
//!   the initiator sees authenticated DATA it is *unconfirmed*: it sends FIN
//!   ahead of its DATA and re-sends it on the backoff timer, so a lost FIN
//!   heals; the responder answers FIN (and a duplicate FIN) with an empty
//!   DATA. Each side reports `Established` once traffic in both directions
//!   is proven: the responder on FIN, the initiator on that first DATA.
//! - **Keepalive and idle**: an empty DATA goes out when nothing was sent
//!   for `keepalive_ms` (keeping NAT mappings open); a session with nothing
//!   authenticated received for `idle_timeout_ms` closes with
//!   `Closed{Idle}`. A session also closes when the peer's certificate
//!   expires, unless the peer renewed it first.
//! - **Renewal**: [`LinkEndpoint::set_certificate`] sends the renewed
//!   certificate over every live session in a RENEW (sealed and numbered
//!   as DATA, so authenticated and replay-protected; re-sent on the
//!   keepalive timer a few times against loss). The peer takes it when it
//!   certifies the same user, role and keys the handshake proved and is
//!   valid now; the session then lives until the new expiry, so links and
//!   calls ride through renewals.
//! - **Simultaneous open** (both sides send INIT, as hole punching does):
//!   the INIT with the larger ephemeral key wins. The side whose own INIT
//!   is smaller abandons it and answers the other; the winner ignores the
//!   loser's INIT. Both sides know both keys once both INITs arrived, so
//!   they agree, and exactly one session results.
//! - **Replacement**: a handshake completed as responder replaces an older
//!   session to the same address (the peer restarted and lost it).
//! - **Roaming**: authenticated DATA with the newest counter from a new
//!   source address moves the session there (NAT rebinding) and emits
//!   `Roamed`.
//! - **Bounds**: sessions, handshakes in flight (ours and theirs apart),
//!   half-open handshakes per source, queued messages per address and
//!   pending transmits/events are all capped; excess is refused and
//!   counted in [`LinkStats`]. Bad input is a counted drop, never a panic.
//! - **Cookies under load**, as WireGuard's cookie reply and QUIC's Retry:
//!   once `cookie_after_half_open` handshakes are half open, an INIT
//!   without a valid cookie is answered with a small COOKIE and no state;
//!   the initiator repeats the INIT with it. A cookie is a keyed MAC of the
//!   INIT's source address, index and ephemeral key and a two-minute time
//!   bucket, so only senders that receive at their address get state.

mod endpoint;
pub mod packet;
mod replay;
#[cfg(test)]
mod tests;

pub use endpoint::LinkEndpoint;
pub use packet::MAX_PAYLOAD;
pub use replay::ReplayWindow;
pub use replay::WINDOW as REPLAY_WINDOW;

use crate::crypto::ChannelError;
use crate::identity::Certificate;
use std::net::SocketAddr;
use thiserror::Error;

/// Noise prologue of link handshakes: a link handshake cannot be spliced
/// into another natter protocol's.
pub const PROLOGUE: &[u8] = b"natter link v1";

/// Timers and limits. The defaults suit the open Internet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// First INIT/FIN retransmission delay; it doubles per attempt, up to
    /// 16 times this.
    pub handshake_retry_ms: u64,
    /// INITs sent (first one included) before the handshake times out; the
    /// unconfirmed initiator re-sends FIN as many times.
    pub handshake_attempts: u32,
    /// Send an empty DATA when nothing was sent for this long.
    pub keepalive_ms: u64,
    /// Close a session when nothing authenticated arrived for this long.
    pub idle_timeout_ms: u64,
    /// Established sessions.
    pub max_sessions: usize,
    /// Established sessions one source (IPv4 address, IPv6 /64) may hold.
    pub max_sessions_per_address: usize,
    /// Established sessions one account (certificate username) may hold;
    /// supernode certificates are exempt (they link to each other).
    pub max_sessions_per_account: usize,
    /// Handshakes in flight, counted apart for ours and theirs: strangers'
    /// INITs cannot starve the handshakes we start.
    pub max_handshakes: usize,
    /// Half-open handshakes (answered, FIN awaited) one source (IPv4
    /// address, IPv6 /64) may hold.
    pub max_half_open_per_address: usize,
    /// Once this many half-open handshakes are held, an INIT must carry a
    /// cookie (proof that its sender receives at its address) before any
    /// state is kept for it; without one it gets a stateless COOKIE reply.
    pub cookie_after_half_open: usize,
    /// Messages held per address while its handshake runs.
    pub max_queued_per_peer: usize,
    /// Datagrams waiting for [`LinkEndpoint::poll_transmit`].
    pub max_pending_transmits: usize,
    /// Events waiting for [`LinkEndpoint::poll_event`].
    pub max_pending_events: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            handshake_retry_ms: 500,
            handshake_attempts: 5,
            keepalive_ms: 15_000,
            idle_timeout_ms: 60_000,
            max_sessions: 1024,
            max_sessions_per_address: 256,
            max_sessions_per_account: 16,
            max_handshakes: 256,
            max_half_open_per_address: 8,
            cookie_after_half_open: 32,
            max_queued_per_peer: 64,
            max_pending_transmits: 4096,
            max_pending_events: 4096,
        }
    }
}

impl LinkConfig {
    /// Zero timers would make the driver spin; zero attempts could never
    /// connect.
    fn sanitized(mut self) -> Self {
        self.handshake_retry_ms = self.handshake_retry_ms.max(1);
        self.handshake_attempts = self.handshake_attempts.max(1);
        self.keepalive_ms = self.keepalive_ms.max(1);
        self.idle_timeout_ms = self.idle_timeout_ms.max(1);
        self
    }

    /// Wait after the `attempt`-th send (0-based) before the next one.
    pub fn retry_delay_ms(&self, attempt: u32) -> u64 {
        self.handshake_retry_ms.saturating_mul(1 << attempt.min(4))
    }

    /// How long a handshake may take, all retransmissions included.
    pub fn handshake_timeout_ms(&self) -> u64 {
        (0..self.handshake_attempts.max(1))
            .map(|a| self.retry_delay_ms(a))
            .fold(0u64, u64::saturating_add)
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Who sent a message: from the peer's verified certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerId {
    pub username: String,
    pub ed25519: [u8; 32],
}

impl PeerId {
    pub fn of(cert: &Certificate) -> Self {
        PeerId {
            username: cert.username.clone(),
            ed25519: cert.ed25519,
        }
    }
}

/// Why a peer certificate was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertRejection {
    /// Outside its validity window (expired or not yet valid).
    Expired,
    UnknownIssuer,
    BadSignature,
    /// Valid certificate, but for another device key (stolen).
    KeyMismatch,
    /// Undecodable, or names an invalid username.
    Malformed,
}

impl CertRejection {
    /// `None` for failures that are not about the certificate.
    pub fn of(e: &ChannelError) -> Option<Self> {
        use crate::identity::CertError as C;
        match e {
            ChannelError::KeyMismatch | ChannelError::Certificate(C::KeyMismatch) => {
                Some(CertRejection::KeyMismatch)
            }
            ChannelError::Certificate(C::Expired { .. } | C::NotYetValid { .. }) => {
                Some(CertRejection::Expired)
            }
            ChannelError::Certificate(C::UnknownIssuer { .. }) => {
                Some(CertRejection::UnknownIssuer)
            }
            ChannelError::Certificate(C::BadSignature) => Some(CertRejection::BadSignature),
            ChannelError::Certificate(C::Malformed(_) | C::BadUsername) => {
                Some(CertRejection::Malformed)
            }
            ChannelError::Noise(_) | ChannelError::OutOfOrder => None,
        }
    }
}

/// Why a session (or an attempt at one) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The handshake got no (or no confirmed) answer in time.
    Timeout,
    /// Nothing authenticated arrived for `idle_timeout_ms`.
    Idle,
    /// [`LinkEndpoint::close`] was called.
    Local,
    /// A new session with another peer took this address over.
    Replaced,
    /// The peer's certificate was refused.
    CertificateRejected(CertRejection),
    /// The peer's certificate expired during the session.
    PeerCertificateExpired,
    /// The session limit (in all, per address or per account) was reached
    /// when the handshake completed.
    TooManySessions,
    /// The send counter ran out (after 2^60 messages).
    Exhausted,
}

/// What happened, for the layer above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A session is up in both directions. Emitted again if the peer
    /// re-handshakes (e.g. after a restart).
    Established { addr: SocketAddr, peer: Certificate },
    /// A message from an established session's verified peer.
    Message {
        addr: SocketAddr,
        peer: PeerId,
        payload: Vec<u8>,
    },
    /// The peer's address changed (NAT rebinding); the session now lives
    /// at `to`.
    Roamed {
        from: SocketAddr,
        to: SocketAddr,
        peer: PeerId,
    },
    /// A session or a connection attempt ended; queued messages are gone.
    Closed {
        addr: SocketAddr,
        reason: CloseReason,
    },
    /// `addr` has no room for our session (a `Closed` follows) and named
    /// `others` to try instead.
    Busy {
        addr: SocketAddr,
        others: Vec<SocketAddr>,
    },
}

/// Counters of what the endpoint did and refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub datagrams_out: u64,
    pub bytes_out: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub keepalives_in: u64,
    pub keepalives_out: u64,
    pub handshakes_initiated: u64,
    pub handshakes_completed: u64,
    pub handshake_timeouts: u64,
    /// Handshake messages that failed Noise processing.
    pub handshake_failed: u64,
    /// Duplicate INIT/RESP/FIN answered from cache or ignored.
    pub duplicate_handshakes: u64,
    /// INITs that crossed one of ours (simultaneous open).
    pub simultaneous_open: u64,
    /// Handshakes we answered whose FIN never came.
    pub half_open_expired: u64,
    pub sessions_replaced: u64,
    pub roamed: u64,
    pub malformed: u64,
    pub unknown_session: u64,
    pub decrypt_failed: u64,
    pub replayed: u64,
    pub cert_rejected_expired: u64,
    pub cert_rejected_unknown_issuer: u64,
    pub cert_rejected_bad_signature: u64,
    pub cert_rejected_key_mismatch: u64,
    pub cert_rejected_malformed: u64,
    /// `send` refused: the address's queue was full.
    pub queue_full: u64,
    /// Queued messages dropped because their handshake failed.
    pub queue_dropped: u64,
    pub too_many_sessions: u64,
    pub too_many_handshakes: u64,
    /// Handshakes refused at completion: the source already holds its
    /// share of sessions.
    pub sessions_per_address: u64,
    /// Handshakes refused at completion: the account already holds its
    /// share of sessions.
    pub sessions_per_account: u64,
    /// INITs refused: their source already holds its half-open share.
    pub half_open_per_address: u64,
    /// BUSY replies sent (no room for a peer's session).
    pub busy_sent: u64,
    /// BUSY replies that ended a handshake of ours.
    pub busy_received: u64,
    /// COOKIE replies sent to INITs that came without a valid cookie
    /// while under load (no state kept).
    pub cookies_sent: u64,
    /// INITs whose cookie did not verify (forged, stale or for another
    /// address).
    pub cookies_invalid: u64,
    /// COOKIE replies we got and answered with a repeated INIT.
    pub cookies_received: u64,
    pub transmits_dropped: u64,
    pub events_dropped: u64,
    /// Renewed peer certificates taken over a live session.
    pub certs_renewed: u64,
    /// RENEWs refused: another user, role or key, invalid, or no newer.
    pub renew_rejected: u64,
}

impl LinkStats {
    fn reject(&mut self, r: CertRejection) {
        match r {
            CertRejection::Expired => self.cert_rejected_expired += 1,
            CertRejection::UnknownIssuer => self.cert_rejected_unknown_issuer += 1,
            CertRejection::BadSignature => self.cert_rejected_bad_signature += 1,
            CertRejection::KeyMismatch => self.cert_rejected_key_mismatch += 1,
            CertRejection::Malformed => self.cert_rejected_malformed += 1,
        }
    }

    /// All certificate rejections.
    pub fn cert_rejected(&self) -> u64 {
        self.cert_rejected_expired
            + self.cert_rejected_unknown_issuer
            + self.cert_rejected_bad_signature
            + self.cert_rejected_key_mismatch
            + self.cert_rejected_malformed
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LinkError {
    #[error("message of {len} bytes exceeds the {max}-byte link limit")]
    TooLarge { len: usize, max: usize },
    #[error("empty messages cannot be sent: an empty payload is a keepalive")]
    Empty,
    #[error("{limit} messages are already queued for {addr} while its handshake runs")]
    QueueFull { addr: SocketAddr, limit: usize },
    #[error("session limit reached ({limit} sessions)")]
    TooManySessions { limit: usize },
    #[error("handshake limit reached ({limit} handshakes in flight)")]
    TooManyHandshakes { limit: usize },
    #[error("the certificate is for another device: its x25519 key is not this device's")]
    NotOurCertificate,
    #[error(transparent)]
    Channel(#[from] ChannelError),
}
