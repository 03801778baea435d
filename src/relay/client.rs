//! The TURN client core (RFC 8656), sans-IO: one allocation on one TURN
//! server, over UDP or TCP.
//!
//! # API (for the ICE agent and anything else that needs a relay)
//!
//! ```text
//! let mut c = TurnClient::new(TurnClientConfig::udp(server), creds, tid_key, now);
//! c.allocate(now);                         // 401/nonce dance handled inside
//! loop {
//!     // bytes to the server: c.poll_transmit() -> TurnTransmit { dst, bytes }
//!     //   UDP: one datagram to dst (the main socket is fine: demux by source)
//!     //   TCP: write bytes to the stream as they are (already framed)
//!     // bytes from the server: c.handle_input(now, msg) -> bool (true = ours)
//!     //   UDP: each datagram from dst; TCP: each message of a
//!     //   framing::StreamFramer fed with the stream
//!     // timers: c.poll_timeout() -> Option<u64>, then c.handle_timeout(now)
//!     // events: c.poll_event() -> TurnClientEvent
//! }
//! ```
//!
//! - [`TurnClient::allocate`] asks for a relayed address;
//!   [`TurnClientEvent::Allocated`] gives it and the server-reflexive
//!   (mapped) address, [`TurnClientEvent::AllocateFailed`] the error code
//!   (486 quota, 508 capacity, 401 bad or expired credentials, 0 timeout).
//! - [`TurnClient::create_permission`] lets a peer's IP send to us and us to
//!   it; [`TurnClient::bind_channel`] binds a channel to a peer's address
//!   (and installs its permission) so data goes as 4-byte-header
//!   ChannelData. Both may be called before the allocation completes: they
//!   are sent once it does. Both are refreshed before they expire (4 min),
//!   as is the allocation (a minute before its lifetime ends).
//! - [`TurnClient::send_to`] sends to a peer: ChannelData when a channel is
//!   bound, a Send indication otherwise.
//!   [`TurnClientEvent::Data`] carries what peers send to our relayed
//!   address, whether it came as ChannelData or a Data indication.
//! - [`TurnClient::set_credentials`] swaps in fresh credentials (REST
//!   credentials expire: ask the supernode again before then);
//!   [`TurnClient::close`] deletes the allocation (Refresh with lifetime 0).
//!
//! Transaction ids come from a keyed hash of a counter, so they are
//! unpredictable without an RNG inside the core. Responses to authenticated
//! requests must carry a valid MESSAGE-INTEGRITY, or they are dropped.

use super::framing::{CHANNEL_MAX, CHANNEL_MIN};
use super::stunmsg;
use crate::time::Millis;
use crate::wire::stun::{ChannelData, Class, Header, method};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use stun_rs::attributes::stun::{
    MessageIntegrity, Nonce, Realm, Software, UserName, XorMappedAddress,
};
use stun_rs::attributes::turn::{
    ChannelNumber, LifeTime, RequestedTrasport, XorPeerAddress, XorRelayedAddress,
};
use stun_rs::{HMACKey, MessageClass, MessageMethod, StunMessageBuilder};
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnTransport {
    Udp,
    Tcp,
}

#[derive(Debug, Clone)]
pub struct TurnClientConfig {
    pub server: SocketAddr,
    pub transport: TurnTransport,
    /// Lifetime asked for the allocation.
    pub lifetime_secs: u32,
    /// First retransmission timeout over UDP; doubles each time.
    pub rto_ms: u64,
    /// A transaction unanswered this long fails (RFC 8489's 39.5 s).
    pub transaction_timeout_ms: u64,
    pub software: Option<String>,
    /// Ask for an IPv6 relayed address (RFC 8656 REQUESTED-ADDRESS-FAMILY);
    /// peers are then IPv6 too.
    pub ipv6: bool,
}

impl TurnClientConfig {
    pub fn udp(server: SocketAddr) -> Self {
        TurnClientConfig {
            server,
            transport: TurnTransport::Udp,
            lifetime_secs: 600,
            rto_ms: 500,
            transaction_timeout_ms: 39_500,
            software: None,
            ipv6: false,
        }
    }

    pub fn tcp(server: SocketAddr) -> Self {
        TurnClientConfig {
            transport: TurnTransport::Tcp,
            ..Self::udp(server)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnClientEvent {
    Allocated {
        relayed: SocketAddr,
        mapped: SocketAddr,
        lifetime_secs: u32,
    },
    /// `code` 0: no answer.
    AllocateFailed {
        code: u16,
        reason: String,
    },
    Refreshed {
        lifetime_secs: u32,
    },
    /// The allocation is gone (refresh refused or unanswered).
    Lost {
        code: u16,
        reason: String,
    },
    PermissionCreated {
        peer: IpAddr,
    },
    PermissionFailed {
        peer: IpAddr,
        code: u16,
        reason: String,
    },
    ChannelBound {
        peer: SocketAddr,
        channel: u16,
    },
    ChannelBindFailed {
        peer: SocketAddr,
        code: u16,
        reason: String,
    },
    Data {
        peer: SocketAddr,
        data: Vec<u8>,
    },
    /// [`TurnClient::close`] finished.
    Closed,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TurnClientError {
    #[error("no allocation")]
    NotAllocated,
    #[error("all channel numbers are in use")]
    NoChannel,
    /// The peer's family is not the relayed address's (RFC 8656 443).
    #[error("{0} is not of the relayed address's family")]
    NotIpv4(IpAddr),
}

/// Bytes for the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnTransmit {
    pub dst: SocketAddr,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TurnClientStats {
    pub malformed: u64,
    pub bad_integrity: u64,
    pub unknown_transaction: u64,
    pub retransmits: u64,
    pub unknown_channel: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Idle,
    Allocating,
    Allocated {
        relayed: SocketAddr,
        mapped: SocketAddr,
        refresh_at: Millis,
    },
    Closing,
    Done,
}

#[derive(Debug, Clone)]
enum Kind {
    Allocate,
    Refresh { lifetime: u32 },
    Permission { peer: IpAddr },
    Channel { channel: u16, peer: SocketAddr },
}

#[derive(Debug)]
struct Tx {
    kind: Kind,
    bytes: Vec<u8>,
    next_send: Millis,
    rto: u64,
    deadline: Millis,
    /// Retries after 401/438, bounded so a confused server cannot loop us.
    auth_retries: u8,
    authenticated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    /// Waiting for the allocation.
    Queued,
    Pending,
    Installed {
        refresh_at: Millis,
    },
}

const PERMISSION_REFRESH_MS: u64 = 240_000;

pub struct TurnClient {
    cfg: TurnClientConfig,
    creds: TurnCredentials,
    tid_key: [u8; 32],
    tid_counter: u64,
    realm: Option<String>,
    nonce: Option<String>,
    key: Option<HMACKey>,
    state: State,
    txs: HashMap<[u8; 12], Tx>,
    permissions: HashMap<IpAddr, Wanted>,
    channels: HashMap<u16, (SocketAddr, Wanted)>,
    by_peer: HashMap<SocketAddr, u16>,
    next_channel: u16,
    out: VecDeque<TurnTransmit>,
    events: VecDeque<TurnClientEvent>,
    stats: TurnClientStats,
}

impl std::fmt::Debug for TurnClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnClient")
            .field("server", &self.cfg.server)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl TurnClient {
    /// `tid_key` must be random: transaction ids derive from it.
    pub fn new(
        cfg: TurnClientConfig,
        creds: TurnCredentials,
        tid_key: [u8; 32],
        _now: Millis,
    ) -> Self {
        TurnClient {
            cfg,
            creds,
            tid_key,
            tid_counter: 0,
            realm: None,
            nonce: None,
            key: None,
            state: State::Idle,
            txs: HashMap::new(),
            permissions: HashMap::new(),
            channels: HashMap::new(),
            by_peer: HashMap::new(),
            next_channel: CHANNEL_MIN,
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: TurnClientStats::default(),
        }
    }

    pub fn server(&self) -> SocketAddr {
        self.cfg.server
    }

    pub fn transport(&self) -> TurnTransport {
        self.cfg.transport
    }

    pub fn stats(&self) -> &TurnClientStats {
        &self.stats
    }

    pub fn relayed_addr(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { relayed, .. } => Some(relayed),
            _ => None,
        }
    }

    pub fn mapped_addr(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { mapped, .. } => Some(mapped),
            _ => None,
        }
    }

    pub fn is_allocated(&self) -> bool {
        matches!(self.state, State::Allocated { .. })
    }

    /// The channel bound (and confirmed) for `peer`.
    pub fn channel_of(&self, peer: SocketAddr) -> Option<u16> {
        let c = *self.by_peer.get(&peer)?;
        matches!(self.channels.get(&c), Some((_, Wanted::Installed { .. }))).then_some(c)
    }

    /// Fresh credentials, used from the next request on.
    pub fn set_credentials(&mut self, creds: TurnCredentials) {
        self.creds = creds;
        self.key = self
            .realm
            .as_deref()
            .and_then(|r| stunmsg::long_term_key(&self.creds.username, r, &self.creds.password));
    }

    pub fn poll_transmit(&mut self) -> Option<TurnTransmit> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TurnClientEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut t = self.txs.values().map(|x| x.next_send.min(x.deadline)).min();
        let mut at = |v: Millis| t = Some(t.map_or(v, |x| x.min(v)));
        if let State::Allocated { refresh_at, .. } = self.state {
            at(refresh_at);
            for w in self.permissions.values() {
                if let Wanted::Installed { refresh_at } = w {
                    at(*refresh_at);
                }
            }
            for (_, w) in self.channels.values() {
                if let Wanted::Installed { refresh_at } = w {
                    at(*refresh_at);
                }
            }
        }
        t
    }

    /// Ask for an allocation.
    pub fn allocate(&mut self, now: Millis) {
        if self.state != State::Idle {
            return;
        }
        self.state = State::Allocating;
        self.start(now, Kind::Allocate);
    }

    /// Delete the allocation.
    pub fn close(&mut self, now: Millis) {
        match self.state {
            State::Allocated { .. } => {
                self.txs
                    .retain(|_, t| !matches!(t.kind, Kind::Refresh { .. }));
                self.state = State::Closing;
                self.start(now, Kind::Refresh { lifetime: 0 });
            }
            State::Idle | State::Allocating => {
                self.txs.clear();
                self.state = State::Done;
                self.events.push_back(TurnClientEvent::Closed);
            }
            State::Closing | State::Done => {}
        }
    }

    /// Whether the relayed address is (to be) IPv6.
    pub fn relayed_family_ipv6(&self) -> bool {
        self.cfg.ipv6
    }

    /// Let `peer` (its IP, any port) exchange data with our relayed address.
    pub fn create_permission(&mut self, now: Millis, peer: IpAddr) -> Result<(), TurnClientError> {
        if peer.is_ipv6() != self.cfg.ipv6 {
            return Err(TurnClientError::NotIpv4(peer));
        }
        if self.permissions.contains_key(&peer) {
            return Ok(());
        }
        if self.is_allocated() {
            self.permissions.insert(peer, Wanted::Pending);
            self.start(now, Kind::Permission { peer });
        } else {
            self.permissions.insert(peer, Wanted::Queued);
        }
        Ok(())
    }

    /// Bind a channel to `peer`; returns its number.
    pub fn bind_channel(&mut self, now: Millis, peer: SocketAddr) -> Result<u16, TurnClientError> {
        if peer.is_ipv6() != self.cfg.ipv6 {
            return Err(TurnClientError::NotIpv4(peer.ip()));
        }
        if let Some(&c) = self.by_peer.get(&peer) {
            return Ok(c);
        }
        let free = (0..=(CHANNEL_MAX - CHANNEL_MIN))
            .map(|i| {
                CHANNEL_MIN
                    + (self.next_channel - CHANNEL_MIN + i) % (CHANNEL_MAX - CHANNEL_MIN + 1)
            })
            .find(|c| !self.channels.contains_key(c))
            .ok_or(TurnClientError::NoChannel)?;
        self.next_channel = if free == CHANNEL_MAX {
            CHANNEL_MIN
        } else {
            free + 1
        };
        self.by_peer.insert(peer, free);
        if self.is_allocated() {
            self.channels.insert(free, (peer, Wanted::Pending));
            self.start(
                now,
                Kind::Channel {
                    channel: free,
                    peer,
                },
            );
        } else {
            self.channels.insert(free, (peer, Wanted::Queued));
        }
        Ok(free)
    }

    /// Relay `data` to `peer`.
    pub fn send_to(
        &mut self,
        _now: Millis,
        peer: SocketAddr,
        data: &[u8],
    ) -> Result<(), TurnClientError> {
        if !self.is_allocated() {
            return Err(TurnClientError::NotAllocated);
        }
        let bytes = match self.channel_of(peer) {
            Some(c) => ChannelData::encode(c, data, self.cfg.transport == TurnTransport::Tcp),
            None => {
                let tid = self.next_tid();
                stunmsg::data_indication(method::SEND, &tid, peer, data)
            }
        };
        self.out.push_back(TurnTransmit {
            dst: self.cfg.server,
            bytes,
        });
        Ok(())
    }

    /// One message from the server (a datagram, or one message cut from the
    /// TCP stream). Returns false when it is not for this client, so the
    /// caller can offer it to others on the same socket.
    pub fn handle_input(&mut self, now: Millis, bytes: &[u8]) -> bool {
        match bytes.first() {
            Some(0x40..=0x7F) => {
                let Ok(cd) = ChannelData::decode(bytes) else {
                    return false;
                };
                match self.channels.get(&cd.channel) {
                    Some(&(peer, _)) => {
                        self.events.push_back(TurnClientEvent::Data {
                            peer,
                            data: cd.data.to_vec(),
                        });
                    }
                    None => self.stats.unknown_channel += 1,
                }
                true
            }
            Some(_) => {
                let Ok(h) = Header::read(bytes) else {
                    return false;
                };
                match h.class {
                    Class::Indication if h.method == method::DATA => {
                        match stunmsg::parse_data_indication(bytes) {
                            Some((peer, data)) => self.events.push_back(TurnClientEvent::Data {
                                peer,
                                data: data.to_vec(),
                            }),
                            None => self.stats.malformed += 1,
                        }
                        true
                    }
                    Class::Success | Class::Error => {
                        if !self.txs.contains_key(&h.transaction) {
                            return false;
                        }
                        self.on_response(now, &h, bytes);
                        true
                    }
                    _ => false,
                }
            }
            None => false,
        }
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        let mut failed = Vec::new();
        let udp = self.cfg.transport == TurnTransport::Udp;
        for (tid, t) in self.txs.iter_mut() {
            if t.deadline <= now {
                failed.push(*tid);
            } else if udp && t.next_send <= now {
                t.rto *= 2;
                t.next_send = now + t.rto;
                self.stats.retransmits += 1;
                self.out.push_back(TurnTransmit {
                    dst: self.cfg.server,
                    bytes: t.bytes.clone(),
                });
            } else if !udp {
                t.next_send = Millis::MAX;
            }
        }
        for tid in failed {
            if let Some(t) = self.txs.remove(&tid) {
                self.failed(now, t.kind, 0, "no answer".into());
            }
        }
        if let State::Allocated { refresh_at, .. } = self.state
            && refresh_at <= now
        {
            if let State::Allocated { refresh_at, .. } = &mut self.state {
                *refresh_at = Millis::MAX;
            }
            let lifetime = self.cfg.lifetime_secs;
            self.start(now, Kind::Refresh { lifetime });
        }
        if self.is_allocated() {
            let due: Vec<IpAddr> = self
                .permissions
                .iter()
                .filter(
                    |(_, w)| matches!(w, Wanted::Installed { refresh_at } if *refresh_at <= now),
                )
                .map(|(p, _)| *p)
                .collect();
            for peer in due {
                self.permissions.insert(peer, Wanted::Pending);
                self.start(now, Kind::Permission { peer });
            }
            let due: Vec<(u16, SocketAddr)> = self
                .channels
                .iter()
                .filter(|(_, (_, w))| matches!(w, Wanted::Installed { refresh_at } if *refresh_at <= now))
                .map(|(c, (p, _))| (*c, *p))
                .collect();
            for (channel, peer) in due {
                // Keep using the channel while the refresh is in flight: the
                // server's binding outlives our refresh time by minutes.
                if let Some((_, w)) = self.channels.get_mut(&channel) {
                    *w = Wanted::Installed {
                        refresh_at: Millis::MAX,
                    };
                }
                self.start(now, Kind::Channel { channel, peer });
            }
        }
    }

    // ---- internals ----

    fn next_tid(&mut self) -> [u8; 12] {
        self.tid_counter += 1;
        let h = hmac_sha1::hmac_sha1(&self.tid_key, &self.tid_counter.to_be_bytes());
        let mut t = [0u8; 12];
        t.copy_from_slice(&h[..12]);
        t
    }

    fn encode(&self, kind: &Kind, tid: [u8; 12]) -> Option<(Vec<u8>, bool)> {
        let (m, attrs): (MessageMethod, Vec<stun_rs::StunAttribute>) = match kind {
            Kind::Allocate => {
                let mut attrs = vec![
                    RequestedTrasport::new(stun_rs::protocols::UDP).into(),
                    LifeTime::new(self.cfg.lifetime_secs).into(),
                ];
                if self.cfg.ipv6 {
                    attrs.push(
                        stun_rs::attributes::turn::RequestedAddressFamily::new(
                            stun_rs::AddressFamily::IPv6,
                        )
                        .into(),
                    );
                }
                (stun_rs::methods::ALLOCATE, attrs)
            }
            Kind::Refresh { lifetime } => (
                stun_rs::methods::REFRESH,
                vec![LifeTime::new(*lifetime).into()],
            ),
            Kind::Permission { peer } => (
                stun_rs::methods::CREATE_PERMMISSION,
                vec![XorPeerAddress::from(SocketAddr::new(*peer, 0)).into()],
            ),
            Kind::Channel { channel, peer } => (
                stun_rs::methods::CHANNEL_BIND,
                vec![
                    ChannelNumber::new(*channel).into(),
                    XorPeerAddress::from(*peer).into(),
                ],
            ),
        };
        let mut b = StunMessageBuilder::new(m, MessageClass::Request)
            .with_transaction_id(stunmsg::tid(tid));
        for a in attrs {
            b = b.with_attribute(a);
        }
        if let Some(s) = self
            .cfg
            .software
            .as_deref()
            .and_then(|s| Software::new(s).ok())
        {
            b = b.with_attribute(s);
        }
        let mut authenticated = false;
        if let (Some(realm), Some(nonce), Some(key)) = (&self.realm, &self.nonce, &self.key) {
            let (Ok(u), Ok(r), Ok(n)) = (
                UserName::new(&self.creds.username),
                Realm::new(realm),
                Nonce::new(nonce),
            ) else {
                return None;
            };
            b = b
                .with_attribute(u)
                .with_attribute(r)
                .with_attribute(n)
                .with_attribute(MessageIntegrity::new(key.clone()));
            authenticated = true;
        }
        Some((stunmsg::encode(&b.build(), 0)?, authenticated))
    }

    fn start(&mut self, now: Millis, kind: Kind) {
        self.start_with(now, kind, 0);
    }

    fn start_with(&mut self, now: Millis, kind: Kind, auth_retries: u8) {
        let tid = self.next_tid();
        let Some((bytes, authenticated)) = self.encode(&kind, tid) else {
            self.failed(
                now,
                kind,
                0,
                "cannot encode the request (bad credentials?)".into(),
            );
            return;
        };
        self.out.push_back(TurnTransmit {
            dst: self.cfg.server,
            bytes: bytes.clone(),
        });
        let udp = self.cfg.transport == TurnTransport::Udp;
        self.txs.insert(
            tid,
            Tx {
                kind,
                bytes,
                next_send: if udp {
                    now + self.cfg.rto_ms
                } else {
                    Millis::MAX
                },
                rto: self.cfg.rto_ms,
                deadline: now + self.cfg.transaction_timeout_ms,
                auth_retries,
                authenticated,
            },
        );
    }

    fn on_response(&mut self, now: Millis, h: &Header, bytes: &[u8]) {
        let Some(msg) = stunmsg::decode(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        let signed = stunmsg::integrity_of(&msg) != stunmsg::Integrity::None;
        let authenticated = self
            .txs
            .get(&h.transaction)
            .is_some_and(|t| t.authenticated);
        let verified = match &self.key {
            Some(k) if signed => stunmsg::decode_verified(bytes, k).is_some(),
            _ => false,
        };
        let (code, reason) = if h.class == Class::Error {
            stunmsg::error_of(&msg)
        } else {
            (0, String::new())
        };
        // 401 and 438 carry no integrity; everything else answering an
        // authenticated request must.
        if (signed && !verified) || (authenticated && !signed && !matches!(code, 401 | 438)) {
            self.stats.bad_integrity += 1;
            return;
        }
        let Some(tx) = self.txs.remove(&h.transaction) else {
            return;
        };
        if h.class == Class::Error {
            if matches!(code, 401 | 438) && tx.auth_retries < 3 {
                let first = tx.auth_retries == 0 && !tx.authenticated;
                // A 401 to an authenticated request means the credentials
                // are wrong (or expired): retrying would not help.
                if code == 438 || first {
                    if let Some(r) = stunmsg::realm_of(&msg) {
                        self.realm = Some(r.to_owned());
                    }
                    if let Some(n) = stunmsg::nonce_of(&msg) {
                        self.nonce = Some(n.to_owned());
                    }
                    self.key = self.realm.as_deref().and_then(|r| {
                        stunmsg::long_term_key(&self.creds.username, r, &self.creds.password)
                    });
                    if self.realm.is_some() && self.nonce.is_some() && self.key.is_some() {
                        self.start_with(now, tx.kind, tx.auth_retries + 1);
                        return;
                    }
                }
            }
            self.failed(now, tx.kind, code, reason);
            return;
        }
        match tx.kind {
            Kind::Allocate => {
                let relayed = msg
                    .get::<XorRelayedAddress>()
                    .and_then(|a| a.as_xor_relayed_address().ok())
                    .map(|a| *a.socket_address());
                let mapped = msg
                    .get::<XorMappedAddress>()
                    .and_then(|a| a.as_xor_mapped_address().ok())
                    .map(|a| *a.socket_address());
                let lifetime = lifetime_of(&msg).unwrap_or(self.cfg.lifetime_secs);
                let Some(relayed) = relayed else {
                    self.failed(now, Kind::Allocate, 0, "no XOR-RELAYED-ADDRESS".into());
                    return;
                };
                let mapped = mapped.unwrap_or(relayed);
                self.state = State::Allocated {
                    relayed,
                    mapped,
                    refresh_at: now + refresh_after(lifetime),
                };
                self.events.push_back(TurnClientEvent::Allocated {
                    relayed,
                    mapped,
                    lifetime_secs: lifetime,
                });
                let queued: Vec<IpAddr> = self
                    .permissions
                    .iter()
                    .filter(|(_, w)| **w == Wanted::Queued)
                    .map(|(p, _)| *p)
                    .collect();
                for peer in queued {
                    self.permissions.insert(peer, Wanted::Pending);
                    self.start(now, Kind::Permission { peer });
                }
                let queued: Vec<(u16, SocketAddr)> = self
                    .channels
                    .iter()
                    .filter(|(_, (_, w))| *w == Wanted::Queued)
                    .map(|(c, (p, _))| (*c, *p))
                    .collect();
                for (channel, peer) in queued {
                    self.channels.insert(channel, (peer, Wanted::Pending));
                    self.start(now, Kind::Channel { channel, peer });
                }
            }
            Kind::Refresh { lifetime: 0 } => {
                self.state = State::Done;
                self.events.push_back(TurnClientEvent::Closed);
            }
            Kind::Refresh { .. } => {
                let lifetime = lifetime_of(&msg).unwrap_or(self.cfg.lifetime_secs);
                if let State::Allocated { refresh_at, .. } = &mut self.state {
                    *refresh_at = now + refresh_after(lifetime);
                }
                self.events.push_back(TurnClientEvent::Refreshed {
                    lifetime_secs: lifetime,
                });
            }
            Kind::Permission { peer } => {
                let first = self.permissions.get(&peer) == Some(&Wanted::Pending);
                self.permissions.insert(
                    peer,
                    Wanted::Installed {
                        refresh_at: now + PERMISSION_REFRESH_MS,
                    },
                );
                if first {
                    self.events
                        .push_back(TurnClientEvent::PermissionCreated { peer });
                }
            }
            Kind::Channel { channel, peer } => {
                if let Some((_, w)) = self.channels.get_mut(&channel) {
                    let first = *w == Wanted::Pending;
                    *w = Wanted::Installed {
                        refresh_at: now + PERMISSION_REFRESH_MS,
                    };
                    if first {
                        self.events
                            .push_back(TurnClientEvent::ChannelBound { peer, channel });
                    }
                }
            }
        }
    }

    fn failed(&mut self, _now: Millis, kind: Kind, code: u16, reason: String) {
        match kind {
            Kind::Allocate => {
                self.state = State::Done;
                self.events
                    .push_back(TurnClientEvent::AllocateFailed { code, reason });
            }
            Kind::Refresh { lifetime: 0 } => {
                self.state = State::Done;
                self.events.push_back(TurnClientEvent::Closed);
            }
            Kind::Refresh { .. } => {
                if self.is_allocated() {
                    self.state = State::Done;
                    self.txs.clear();
                    self.events
                        .push_back(TurnClientEvent::Lost { code, reason });
                }
            }
            Kind::Permission { peer } => {
                self.permissions.remove(&peer);
                self.events
                    .push_back(TurnClientEvent::PermissionFailed { peer, code, reason });
            }
            Kind::Channel { channel, peer } => {
                self.channels.remove(&channel);
                self.by_peer.remove(&peer);
                self.events
                    .push_back(TurnClientEvent::ChannelBindFailed { peer, code, reason });
            }
        }
    }
}

fn lifetime_of(m: &stun_rs::StunMessage) -> Option<u32> {
    m.get::<LifeTime>()
        .and_then(|a| a.as_life_time().ok())
        .map(|l| l.as_u32())
}

/// Refresh a minute before expiry, or halfway for short lifetimes.
fn refresh_after(lifetime_secs: u32) -> u64 {
    let ms = lifetime_secs as u64 * 1000;
    ms.saturating_sub(60_000).max(ms / 2)
}
