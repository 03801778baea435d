//! ICE-like connectivity between two clients (RFC 8445 in spirit, sans-IO).
//!
//! [`IceAgent`] owns one connection attempt with one peer: our candidates
//! and short-term credentials, the peer's, the check list, nomination,
//! keepalives of the chosen path and the later move from a relayed to a
//! direct path. It has no socket, clock or RNG: the driver passes
//! datagrams (with the way they came in, [`Via`]), `now` (a [`crate::time::Millis`]) and an RNG,
//! and takes [`Transmit`]s, [`IceEvent`]s and the next deadline out.
//!
//! - **Candidates** ([`Candidate`]): host (the main socket's addresses),
//!   server-reflexive (what the supernodes or a STUN server observed),
//!   relayed (a TURN allocation: its sends go through that relay, see
//!   [`Via::Relay`]) and, learnt during checks, peer-reflexive. All direct
//!   candidates share the one main socket, so a pair's local side is a
//!   *base*: the socket itself or one relay allocation.
//! - **Exchange**: [`offer::IceOffer`] carries ufrag, password, NAT hint
//!   and candidates; the node sends it to the peer through the supernodes.
//! - **Checks** are STUN Binding requests ([`check`]) with PRIORITY,
//!   ICE-CONTROLLING/CONTROLLED, USE-CANDIDATE, USERNAME
//!   `remote-ufrag:local-ufrag`, MESSAGE-INTEGRITY (the receiver's
//!   password) and FINGERPRINT. Both sides check at once, which punches
//!   the holes; a request from an unknown address makes a peer-reflexive
//!   candidate and a triggered check back.
//! - **Port prediction**: when the peer's mapping depends on the
//!   destination (its offer says so, or its server-reflexive ports differ),
//!   we also check a bounded window of ports after its last observed port,
//!   stepping by the delta its observations show.
//! - **Bounds**: checks are paced, each retransmits a bounded number of
//!   times, a round sends at most `max_checks_per_round` requests and an
//!   attempt gives up after `connect_timeout_ms`.
//! - **Upgrade**: a session that settled on a relayed pair re-checks the
//!   direct pairs every `reprobe_ms`; when one answers the controlling side
//!   nominates it, and both switch without a gap (the relay keeps carrying
//!   traffic until the new pair is confirmed).

pub mod agent;
pub mod check;
pub mod gather;
pub mod offer;
pub mod sessions;
#[doc(hidden)]
pub use agent::{IceAgent, IceConfig, IceEvent, IceRole, IceStats};
pub use offer::{IceOffer, MappingHint};
pub use sessions::{IceSessions, SessionEvent};

use std::fmt;
use std::net::SocketAddr;
use thiserror::Error;

/// Kinds of candidates, with the RFC 8445 type preferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CandidateKind {
    Host,
    ServerReflexive,
    PeerReflexive,
    Relayed,
    /// A remote port guessed by port prediction (never sent in an offer).
    Predicted,
}

impl CandidateKind {
    pub fn type_preference(self) -> u32 {
        match self {
            CandidateKind::Host => 126,
            CandidateKind::PeerReflexive => 110,
            CandidateKind::ServerReflexive => 100,
            CandidateKind::Predicted => 90,
            CandidateKind::Relayed => 0,
        }
    }

    pub fn code(self) -> u8 {
        match self {
            CandidateKind::Host => 0,
            CandidateKind::ServerReflexive => 1,
            CandidateKind::PeerReflexive => 2,
            CandidateKind::Relayed => 3,
            CandidateKind::Predicted => 4,
        }
    }

    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => CandidateKind::Host,
            1 => CandidateKind::ServerReflexive,
            2 => CandidateKind::PeerReflexive,
            3 => CandidateKind::Relayed,
            4 => CandidateKind::Predicted,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            CandidateKind::Host => "host",
            CandidateKind::ServerReflexive => "srflx",
            CandidateKind::PeerReflexive => "prflx",
            CandidateKind::Relayed => "relay",
            CandidateKind::Predicted => "predicted",
        }
    }
}

/// RFC 8445 5.1.2.1 candidate priority (one component).
pub fn candidate_priority(kind: CandidateKind, local_pref: u16) -> u32 {
    (kind.type_preference() << 24) | ((local_pref as u32) << 8) | 255
}

/// RFC 8421 section 4 local preferences for candidates of one type, in
/// the order given: IPv6 preferred, the families intermixed (the first
/// IPv6 address, then the first IPv4, then the second IPv6...), so that
/// the pairs of both families are checked side by side and a broken
/// IPv6 path costs one pacing interval, not the whole check list (the
/// Happy Eyeballs race of RFC 8305, as ICE runs it).
pub fn local_preferences(addrs: &[SocketAddr]) -> Vec<u16> {
    // One family: its order, as RFC 8445 has it.
    if addrs.iter().all(|a| a.is_ipv4()) || addrs.iter().all(|a| a.is_ipv6()) {
        return (0..addrs.len()).map(|i| 65535 - i as u16).collect();
    }
    let (mut v6, mut v4) = (0u16, 0u16);
    addrs
        .iter()
        .map(|a| {
            // Rank 2k for the k-th IPv6 address, 2k+1 for the k-th IPv4
            // one: the pairs alternate however many of each there are.
            let rank = if a.is_ipv6() {
                v6 += 1;
                2 * (v6 - 1)
            } else {
                v4 += 1;
                2 * (v4 - 1) + 1
            };
            65535 - rank
        })
        .collect()
}

/// One transport address a peer may be reached at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Candidate {
    pub kind: CandidateKind,
    pub addr: SocketAddr,
    pub priority: u32,
}

impl Candidate {
    pub fn new(kind: CandidateKind, addr: SocketAddr, local_pref: u16) -> Self {
        Candidate {
            kind,
            addr,
            priority: candidate_priority(kind, local_pref),
        }
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.name(), self.addr)
    }
}

/// How a datagram leaves or arrived: on the main socket, or through our
/// TURN allocation on the relay server at this address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Via {
    Direct,
    Relay(SocketAddr),
}

/// A datagram for the driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub via: Via,
    pub dst: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Direct, or through which relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    Direct,
    /// `relay` is our relay server, or the peer's relayed address when the
    /// relay is on their side.
    Relayed {
        relay: SocketAddr,
    },
}

/// The pair in use: send to `remote` via `via`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Path {
    pub via: Via,
    /// Our side as the peer sees it (from the check's XOR-MAPPED-ADDRESS).
    pub local: SocketAddr,
    pub local_kind: CandidateKind,
    pub remote: SocketAddr,
    pub remote_kind: CandidateKind,
}

impl Path {
    pub fn kind(&self) -> PathKind {
        match self.via {
            Via::Relay(server) => PathKind::Relayed { relay: server },
            Via::Direct if self.remote_kind == CandidateKind::Relayed => {
                PathKind::Relayed { relay: self.remote }
            }
            Via::Direct => PathKind::Direct,
        }
    }

    pub fn is_direct(&self) -> bool {
        self.kind() == PathKind::Direct
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            PathKind::Direct => write!(f, "direct")?,
            PathKind::Relayed { relay } => write!(f, "relayed via {relay}")?,
        }
        write!(
            f,
            " ({} {} -> {} {})",
            self.local_kind.name(),
            self.local,
            self.remote_kind.name(),
            self.remote
        )
    }
}

/// Why an ICE message or offer was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IceError {
    #[error("not a STUN message: {0}")]
    Stun(String),
    #[error("STUN message without {0}")]
    Missing(&'static str),
    #[error("MESSAGE-INTEGRITY or FINGERPRINT check failed")]
    Integrity,
    #[error("bad ICE offer: {0}")]
    Offer(#[from] crate::wire::WireError),
    #[error("invalid ICE credentials")]
    Credentials,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8421_prefers_ipv6_and_intermixes_the_families() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let addrs = [
            a("10.0.0.2:5000"),
            a("192.168.1.2:5000"),
            a("[2001:db8::2]:5000"),
            a("[2001:db8::3]:5000"),
        ];
        let p = local_preferences(&addrs);
        // v6 #1 > v4 #1 > v6 #2 > v4 #2.
        assert_eq!(p, vec![65534, 65532, 65535, 65533]);
        let prio = |i: usize| candidate_priority(CandidateKind::Host, p[i]);
        assert!(prio(2) > prio(0) && prio(0) > prio(3) && prio(3) > prio(1));
        // One family alone keeps its order.
        assert_eq!(local_preferences(&addrs[..2]), vec![65535, 65534]);
    }
}
