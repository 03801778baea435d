//! NAT behaviour discovery (RFC 5780) on natter's one UDP socket: the STUN
//! server every supernode runs ([`StunServer`]: Binding with
//! XOR-MAPPED-ADDRESS, and OTHER-ADDRESS, RESPONSE-ORIGIN and
//! CHANGE-REQUEST when the supernode has a second address), and the
//! client's measurement of its own NAT at login ([`NatDetector`]: mapping
//! and filtering in RFC 4787 terms, the public address, blocked UDP).
//!
//! Both are sans-IO: they take `now` (ms), datagrams and the address they
//! arrived on, and return datagrams to send (with the local address to send
//! them from), events and their next deadline. STUN messages are encoded
//! and decoded with the `stun-rs` codec ([`stun`]); transactions,
//! retransmission and sockets are ours.

pub mod detector;
pub mod server;
pub mod stun;

pub use detector::{DetectorConfig, NatDetector, NatEvent};
pub use server::{StunServer, StunServerConfig, StunStats};

use std::net::SocketAddr;

/// One datagram to send: from which local address (a node may own several
/// sockets) to which destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The local socket address to send from; `None`: the main socket.
    pub src: Option<SocketAddr>,
    pub dst: SocketAddr,
    pub bytes: Vec<u8>,
}

/// How a NAT maps an internal endpoint to external ones (RFC 4787 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// No translation: the public address is the local one.
    NoNat,
    EndpointIndependent,
    AddressDependent,
    AddressPortDependent,
    /// Depends on the destination, but whether on its address alone or
    /// also on its port could not be told (no two servers on one address).
    Dependent,
    Unknown,
}

/// Which inbound packets a NAT (or firewall) lets through to a mapping
/// (RFC 4787 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filtering {
    EndpointIndependent,
    AddressDependent,
    AddressPortDependent,
    Unknown,
}

impl Mapping {
    pub fn as_str(self) -> &'static str {
        match self {
            Mapping::NoNat => "none",
            Mapping::EndpointIndependent => "endpoint_independent",
            Mapping::AddressDependent => "address_dependent",
            Mapping::AddressPortDependent => "address_port_dependent",
            Mapping::Dependent => "dependent",
            Mapping::Unknown => "unknown",
        }
    }

    /// The RFC 4787 abbreviation (`EIM`, `ADM`, `APDM`), `none` or `?`.
    pub fn short(self) -> &'static str {
        match self {
            Mapping::NoNat => "none",
            Mapping::EndpointIndependent => "EIM",
            Mapping::AddressDependent => "ADM",
            Mapping::AddressPortDependent => "APDM",
            Mapping::Dependent => "ADM|APDM",
            Mapping::Unknown => "?",
        }
    }
}

impl Filtering {
    pub fn as_str(self) -> &'static str {
        match self {
            Filtering::EndpointIndependent => "endpoint_independent",
            Filtering::AddressDependent => "address_dependent",
            Filtering::AddressPortDependent => "address_port_dependent",
            Filtering::Unknown => "unknown",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Filtering::EndpointIndependent => "EIF",
            Filtering::AddressDependent => "ADF",
            Filtering::AddressPortDependent => "APDF",
            Filtering::Unknown => "?",
        }
    }
}

/// What one NAT detection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatReport {
    /// No STUN server answered and no other UDP arrived, while a
    /// supernode was reachable some other way (TCP).
    pub udp_blocked: bool,
    /// No supernode answered at all, over UDP or TCP: they may be down, so
    /// nothing is claimed about UDP (set by the node, which knows whether
    /// it is attached).
    pub unreachable: bool,
    pub mapping: Mapping,
    pub filtering: Filtering,
    /// Our address as the first server saw it (server-reflexive).
    pub public: Option<SocketAddr>,
    /// Our own address towards that server, when the driver knew it.
    pub local: Option<SocketAddr>,
    /// The server the RFC 5780 tests ran against, and its other address.
    pub server: Option<SocketAddr>,
    pub other: Option<SocketAddr>,
    /// Every (server, mapped address) pair observed.
    pub observations: Vec<(SocketAddr, SocketAddr)>,
    /// When the detection started and how long it took (ms).
    pub started_ms: u64,
    pub duration_ms: u64,
    /// Requests sent (retransmissions included).
    pub requests: u32,
    /// What could not be determined, and why.
    pub notes: Vec<String>,
    /// Why this run happened (`login`, `public address changed`, ...).
    pub reason: String,
}

impl NatReport {
    /// A one-line summary for people.
    pub fn summary(&self) -> String {
        if self.unreachable {
            return format!(
                "supernode unreachable (no answer in {} ms)",
                self.duration_ms
            );
        }
        if self.udp_blocked {
            return format!("UDP blocked (no STUN answer in {} ms)", self.duration_ms);
        }
        format!(
            "mapping {}, filtering {}, public address {} ({} ms)",
            self.mapping.short(),
            self.filtering.short(),
            self.public
                .map(|a| a.to_string())
                .unwrap_or_else(|| "unknown".into()),
            self.duration_ms
        )
    }
}

/// Errors of the STUN codec layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatError {
    #[error("not a STUN message: {0}")]
    NotStun(&'static str),
    #[error("malformed STUN message: {0}")]
    Malformed(String),
    #[error("cannot encode STUN message: {0}")]
    Encode(String),
}
