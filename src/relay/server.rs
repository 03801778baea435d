//! The TURN server core (RFC 8656), sans-IO: Allocate, Refresh,
//! CreatePermission, ChannelBind, Send and Data indications and ChannelData,
//! with REST-style long-term credentials ([`super::creds`]), nonces with an
//! expiry, per-user allocation and bandwidth quotas and a global allocation
//! cap.
//!
//! The core owns no socket. Its driver feeds it what arrives from clients
//! ([`TurnServer::handle_client`], over the main UDP socket or a TCP
//! connection, named by [`ClientAddr`]) and from peers on relay sockets
//! ([`TurnServer::handle_peer`]). When an Allocate is accepted the core emits
//! [`ServerEvent::OpenRelay`]; the driver binds a UDP socket for that
//! allocation and answers with [`TurnServer::relay_opened`] (the address to
//! advertise, or the bind error), and closes it on
//! [`ServerEvent::CloseRelay`]. Every [`ServerTransmit`] names the socket
//! to send from with [`Via`]: back to a client, or out of an allocation's
//! relay socket to a peer.
//!
//! Refusals use RFC 8656's codes: 401 (no or bad credentials, expired
//! REST username), 438 (stale nonce), 437 (allocation mismatch: another
//! user's allocation on that 5-tuple; a new Allocate of the same user
//! replaces its stale one, its client having restarted), 441 (wrong
//! credentials for the allocation), 442 (transport), 486 (the user's
//! allocation quota), 508 (the global cap or no relay port), 403 (a peer
//! no relay may reach: loopback unless allowed, multicast, unspecified). Every refusal
//! and every dropped packet is counted in [`TurnStats`].

use super::creds::{NonceKey, parse_username, rest_password};
use super::framing::{CHANNEL_MAX_ACCEPTED, CHANNEL_MIN};
use super::quota::TokenBucket;
use super::stunmsg::{self, Integrity};
use crate::time::{Millis, UnixSecs};
use crate::wire::IpPrefix;
use crate::wire::stun::{ChannelData, Class, Header, method};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use stun_rs::attributes::stun::{Nonce, Realm, Software, UnknownAttributes, XorMappedAddress};
use stun_rs::attributes::turn::{
    ChannelNumber, EvenPort, LifeTime, RequestedAddressFamily, RequestedTrasport, ReservationToken,
    XorPeerAddress, XorRelayedAddress,
};
use stun_rs::{HMACKey, MessageClass, MessageMethod, StunAttribute, StunMessageBuilder};

/// An allocation's id, chosen by the core.
pub type AllocId = u64;

/// How a client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// The node's main UDP socket.
    Udp,
    /// A TCP connection, by the driver's connection id.
    Tcp(u64),
}

/// A client's transport address: RFC 8656's 5-tuple as seen by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl ClientAddr {
    pub fn udp(addr: SocketAddr) -> Self {
        ClientAddr {
            transport: Transport::Udp,
            addr,
        }
    }
}

/// The socket a transmit leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// To a client, over the transport it used.
    Client(ClientAddr),
    /// Out of allocation `alloc`'s relay socket, to `peer`.
    Relay { alloc: AllocId, peer: SocketAddr },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTransmit {
    pub via: Via,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// Bind a relay socket for `alloc` (an even port if asked), then call
    /// [`TurnServer::relay_opened`].
    OpenRelay {
        alloc: AllocId,
        even_port: bool,
        /// Bind an IPv6 relay socket (else IPv4).
        ipv6: bool,
    },
    /// The allocation is gone: close its relay socket.
    CloseRelay { alloc: AllocId },
    Allocated {
        alloc: AllocId,
        user: String,
        client: ClientAddr,
        relayed: SocketAddr,
    },
    Released {
        alloc: AllocId,
        user: String,
        reason: &'static str,
    },
    Refused {
        client: ClientAddr,
        code: u16,
        reason: &'static str,
    },
}

#[derive(Debug, Clone)]
pub struct TurnServerConfig {
    pub realm: String,
    /// The group's shared secret (coturn's `static-auth-secret`).
    pub secret: Vec<u8>,
    pub nonce_lifetime_ms: u64,
    pub default_lifetime_secs: u32,
    pub max_lifetime_secs: u32,
    /// Allocations on this server, all users together.
    pub max_allocations: usize,
    /// Allocations per user at once.
    pub user_allocations: usize,
    /// Relayed payload bytes per second per user, both directions; 0 for
    /// no limit.
    pub user_bandwidth: u64,
    /// Bytes a user may send at once above the rate.
    pub user_burst: u64,
    /// Permissions and channels per allocation.
    pub max_peers: usize,
    /// Relay to loopback peers. Off on real relays (coturn's default too):
    /// it would let anyone reach services bound to the relay host's
    /// loopback; tests on one machine turn it on.
    pub allow_loopback_peers: bool,
    /// Peers in these ranges are refused (403), as coturn's
    /// `denied-peer-ip`: by default the special-purpose ranges
    /// ([`crate::wire::prefix::SPECIAL_PURPOSE`]: private networks, CGNAT,
    /// link-local cloud metadata, ...), so a relay user cannot reach the
    /// relay host's neighbours.
    pub denied_peers: Vec<IpPrefix>,
    /// Exceptions to `denied_peers` (coturn's `allowed-peer-ip`), e.g. a
    /// relay serving a private network of its own.
    pub allowed_peers: Vec<IpPrefix>,
    /// This host's own addresses: a peer there is refused unless it is
    /// the relayed address of a live allocation (two relayed users of one
    /// relay), so nobody reaches the host's own services through it.
    pub own_addresses: Vec<IpAddr>,
    /// Relayed addresses of each family the driver can bind (RFC 8656
    /// REQUESTED-ADDRESS-FAMILY; IPv4 when the request names none): an
    /// allocation of a family not served is refused with 440.
    pub relay_ipv4: bool,
    pub relay_ipv6: bool,
    pub software: Option<String>,
}

impl Default for TurnServerConfig {
    fn default() -> Self {
        TurnServerConfig {
            realm: "natter".into(),
            secret: Vec::new(),
            nonce_lifetime_ms: 600_000,
            default_lifetime_secs: 600,
            max_lifetime_secs: 3600,
            max_allocations: 10_000,
            user_allocations: 10,
            user_bandwidth: 0,
            user_burst: 0,
            max_peers: 256,
            allow_loopback_peers: false,
            denied_peers: crate::wire::prefix::special_purpose(),
            allowed_peers: Vec::new(),
            own_addresses: Vec::new(),
            relay_ipv4: true,
            relay_ipv6: false,
            software: Some(format!("natter {}", env!("CARGO_PKG_VERSION"))),
        }
    }
}

/// Counters; every refusal and every dropped input has one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TurnStats {
    pub malformed: u64,
    pub unexpected: u64,
    /// Requests without MESSAGE-INTEGRITY, answered 401 with a nonce.
    pub unauthenticated: u64,
    /// Wrong password, unknown realm or a username that is not REST-style.
    pub bad_credentials: u64,
    pub expired_credentials: u64,
    pub stale_nonce: u64,
    pub wrong_user: u64,
    pub mismatch: u64,
    pub bad_requests: u64,
    /// Permissions or channels refused for peers no relay may reach.
    pub forbidden_peers: u64,
    pub quota_refused: u64,
    pub capacity_refused: u64,
    pub allocations: u64,
    pub allocations_expired: u64,
    pub allocations_deleted: u64,
    /// Allocations dropped for a new Allocate of the same user from the
    /// same 5-tuple (a restarted client).
    pub allocations_replaced: u64,
    pub relay_failures: u64,
    pub no_allocation: u64,
    pub no_permission: u64,
    pub unknown_channel: u64,
    pub bandwidth_dropped: u64,
    pub bandwidth_dropped_bytes: u64,
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

struct Auth {
    user: String,
    key: HMACKey,
    integrity: Integrity,
}

#[derive(Debug)]
struct Allocation {
    client: ClientAddr,
    user: String,
    /// The Allocate that made it, answered again if retransmitted.
    tid: [u8; 12],
    response: Option<Vec<u8>>,
    key: HMACKey,
    integrity: Integrity,
    lifetime_secs: u32,
    relayed: Option<SocketAddr>,
    /// The relayed address is IPv6 (REQUESTED-ADDRESS-FAMILY): its peers
    /// must be IPv6 too (RFC 8656 443 otherwise).
    ipv6: bool,
    created: Millis,
    expires: Millis,
    permissions: HashMap<IpAddr, Millis>,
    channels: HashMap<u16, (SocketAddr, Millis)>,
    by_peer: HashMap<SocketAddr, u16>,
}

#[derive(Debug)]
struct User {
    allocations: usize,
    bucket: TokenBucket,
}

const PERMISSION_MS: u64 = 300_000;
const CHANNEL_MS: u64 = 600_000;
const SWEEP_MS: u64 = 1_000;
/// A relay socket not opened by then fails the allocation.
const OPEN_TIMEOUT_MS: u64 = 10_000;

pub struct TurnServer {
    cfg: TurnServerConfig,
    nonces: NonceKey,
    allocs: HashMap<AllocId, Allocation>,
    by_client: HashMap<ClientAddr, AllocId>,
    /// Live relayed addresses: the only peers allowed at our own addresses.
    by_relayed: HashMap<SocketAddr, AllocId>,
    users: HashMap<String, User>,
    next_alloc: AllocId,
    next_tid: u64,
    next_sweep: Millis,
    out: VecDeque<ServerTransmit>,
    events: VecDeque<ServerEvent>,
    stats: TurnStats,
    /// The wall clock as the client message being handled was given it:
    /// REST credentials expire on it (timers use `now`).
    unix: UnixSecs,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("realm", &self.cfg.realm)
            .field("allocations", &self.allocs.len())
            .finish_non_exhaustive()
    }
}

fn method_of(m: u16) -> MessageMethod {
    MessageMethod::try_from(m & 0x0FFF).unwrap_or(stun_rs::methods::BINDING)
}

impl TurnServer {
    /// `nonce_key` must be random (it makes nonces unforgeable).
    pub fn new(cfg: TurnServerConfig, nonce_key: [u8; 32], now: Millis) -> Self {
        TurnServer {
            cfg,
            nonces: NonceKey::new(nonce_key),
            allocs: HashMap::new(),
            by_client: HashMap::new(),
            by_relayed: HashMap::new(),
            users: HashMap::new(),
            next_alloc: 1,
            next_tid: 0,
            next_sweep: now + SWEEP_MS,
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: TurnStats::default(),
            unix: UnixSecs::ZERO,
        }
    }

    pub fn config(&self) -> &TurnServerConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &TurnStats {
        &self.stats
    }

    pub fn allocation_count(&self) -> usize {
        self.allocs.len()
    }

    /// Allocations `user` (a natter username) holds.
    pub fn user_allocations(&self, user: &str) -> usize {
        self.users.get(user).map_or(0, |u| u.allocations)
    }

    /// The relayed address of the allocation of `client`, once open.
    pub fn relayed_addr(&self, client: &ClientAddr) -> Option<SocketAddr> {
        self.allocs.get(self.by_client.get(client)?)?.relayed
    }

    pub fn poll_transmit(&mut self) -> Option<ServerTransmit> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When [`TurnServer::handle_timeout`] is next due, if anything waits.
    pub fn poll_timeout(&self) -> Option<Millis> {
        (!self.allocs.is_empty()).then_some(self.next_sweep)
    }

    /// A STUN or ChannelData message from a client.
    /// A datagram or stream message from a client at `now`; its REST
    /// credentials' expiry is judged at `unix` (the wall clock, which the
    /// supernode that issued them dated them by).
    pub fn handle_client(&mut self, now: Millis, unix: UnixSecs, from: ClientAddr, bytes: &[u8]) {
        self.unix = unix;
        match bytes.first() {
            Some(0x40..=0x7F) => self.on_channel_data(now, from, bytes),
            Some(_) => self.on_stun(now, from, bytes),
            None => self.stats.malformed += 1,
        }
    }

    /// A datagram `from` a peer on allocation `alloc`'s relay socket.
    pub fn handle_peer(&mut self, now: Millis, alloc: AllocId, from: SocketAddr, bytes: &[u8]) {
        let Some(a) = self.allocs.get(&alloc) else {
            self.stats.no_allocation += 1;
            return;
        };
        if a.permissions.get(&from.ip()).is_none_or(|&e| e <= now) {
            self.stats.no_permission += 1;
            return;
        }
        let client = a.client;
        let channel = a
            .by_peer
            .get(&from)
            .filter(|c| a.channels.get(c).is_some_and(|&(_, e)| e > now))
            .copied();
        if !self.charge(now, alloc, bytes.len()) {
            return;
        }
        let msg = match channel {
            Some(ch) => ChannelData::encode(ch, bytes, client.transport != Transport::Udp),
            None => {
                let tid = self.indication_tid();
                stunmsg::data_indication(method::DATA, &tid, from, bytes)
            }
        };
        self.stats.to_client_packets += 1;
        self.stats.to_client_bytes += bytes.len() as u64;
        self.out.push_back(ServerTransmit {
            via: Via::Client(client),
            bytes: msg,
        });
    }

    /// The driver's answer to [`ServerEvent::OpenRelay`]: the address to
    /// advertise for the relay socket, or why none could be bound.
    pub fn relay_opened(
        &mut self,
        now: Millis,
        alloc: AllocId,
        result: Result<SocketAddr, String>,
    ) {
        let Some(a) = self.allocs.get_mut(&alloc) else {
            // The allocation went away while the socket was being bound.
            if result.is_ok() {
                self.events.push_back(ServerEvent::CloseRelay { alloc });
            }
            return;
        };
        match result {
            Ok(relayed) => {
                a.relayed = Some(relayed);
                self.by_relayed.insert(relayed, alloc);
                a.expires = now + a.lifetime_secs as u64 * 1000;
                let attrs = vec![
                    XorRelayedAddress::from(relayed).into(),
                    LifeTime::new(a.lifetime_secs).into(),
                    XorMappedAddress::from(a.client.addr).into(),
                ];
                let (client, tid, key, integrity) = (a.client, a.tid, a.key.clone(), a.integrity);
                let Some(bytes) = self.build(
                    method::ALLOCATE,
                    MessageClass::SuccessResponse,
                    tid,
                    attrs,
                    Some((&key, integrity)),
                ) else {
                    self.remove(alloc, "encoding failed");
                    return;
                };
                let a = self
                    .allocs
                    .get_mut(&alloc)
                    .unwrap_or_else(|| unreachable!());
                a.response = Some(bytes.clone());
                let user = a.user.clone();
                self.stats.allocations += 1;
                self.events.push_back(ServerEvent::Allocated {
                    alloc,
                    user,
                    client,
                    relayed,
                });
                self.out.push_back(ServerTransmit {
                    via: Via::Client(client),
                    bytes,
                });
            }
            Err(why) => {
                tracing::warn!(alloc, "no relay socket: {why}");
                self.stats.relay_failures += 1;
                let (client, tid, key, integrity) = (a.client, a.tid, a.key.clone(), a.integrity);
                self.drop_alloc(alloc);
                self.error(
                    client,
                    method::ALLOCATE,
                    tid,
                    508,
                    "Insufficient Capacity",
                    Some((&key, integrity)),
                );
            }
        }
    }

    /// A TCP connection closed: allocations made over it go (RFC 8656 §3.1).
    pub fn transport_closed(&mut self, transport: Transport) {
        let gone: Vec<AllocId> = self
            .by_client
            .iter()
            .filter(|(c, _)| c.transport == transport)
            .map(|(_, &id)| id)
            .collect();
        for id in gone {
            self.stats.allocations_deleted += 1;
            self.remove(id, "connection closed");
        }
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_MS;
        let mut expired = Vec::new();
        for (&id, a) in self.allocs.iter_mut() {
            let dead = match a.relayed {
                Some(_) => a.expires <= now,
                None => a.created + OPEN_TIMEOUT_MS <= now,
            };
            if dead {
                expired.push(id);
                continue;
            }
            a.permissions.retain(|_, &mut e| e > now);
            let gone: Vec<u16> = a
                .channels
                .iter()
                .filter(|(_, (_, e))| *e <= now)
                .map(|(&c, _)| c)
                .collect();
            for c in gone {
                if let Some((p, _)) = a.channels.remove(&c) {
                    a.by_peer.remove(&p);
                }
            }
        }
        for id in expired {
            self.stats.allocations_expired += 1;
            self.remove(id, "expired");
        }
    }

    // ---- internals ----

    fn indication_tid(&mut self) -> [u8; 12] {
        self.next_tid = self.next_tid.wrapping_add(1);
        let mut t = [0u8; 12];
        t[4..].copy_from_slice(&self.next_tid.to_be_bytes());
        t
    }

    /// Count `bytes` against the allocation owner's bandwidth.
    fn charge(&mut self, now: Millis, alloc: AllocId, bytes: usize) -> bool {
        let Some(a) = self.allocs.get(&alloc) else {
            return false;
        };
        let ok = self
            .users
            .get_mut(&a.user)
            .is_none_or(|u| u.bucket.take(now, bytes));
        if !ok {
            self.stats.bandwidth_dropped += 1;
            self.stats.bandwidth_dropped_bytes += bytes as u64;
        }
        ok
    }

    fn drop_alloc(&mut self, id: AllocId) -> Option<Allocation> {
        let a = self.allocs.remove(&id)?;
        self.by_client.remove(&a.client);
        if let Some(r) = a.relayed {
            self.by_relayed.remove(&r);
        }
        if let Some(u) = self.users.get_mut(&a.user) {
            u.allocations = u.allocations.saturating_sub(1);
            if u.allocations == 0 {
                self.users.remove(&a.user);
            }
        }
        Some(a)
    }

    fn remove(&mut self, id: AllocId, reason: &'static str) {
        if let Some(a) = self.drop_alloc(id) {
            if a.relayed.is_some() {
                self.events.push_back(ServerEvent::CloseRelay { alloc: id });
            }
            self.events.push_back(ServerEvent::Released {
                alloc: id,
                user: a.user,
                reason,
            });
        }
    }

    fn build(
        &self,
        m: u16,
        class: MessageClass,
        tid: [u8; 12],
        attrs: Vec<StunAttribute>,
        auth: Option<(&HMACKey, Integrity)>,
    ) -> Option<Vec<u8>> {
        let mut b =
            StunMessageBuilder::new(method_of(m), class).with_transaction_id(stunmsg::tid(tid));
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
        if let Some(attr) = auth.and_then(|(k, i)| stunmsg::integrity_attr(i, k)) {
            b = b.with_attribute(attr);
        }
        stunmsg::encode(&b.build(), 0)
    }

    fn send_msg(
        &mut self,
        to: ClientAddr,
        m: u16,
        class: MessageClass,
        tid: [u8; 12],
        attrs: Vec<StunAttribute>,
        auth: Option<(&HMACKey, Integrity)>,
    ) {
        if let Some(bytes) = self.build(m, class, tid, attrs, auth) {
            self.out.push_back(ServerTransmit {
                via: Via::Client(to),
                bytes,
            });
        }
    }

    fn error(
        &mut self,
        to: ClientAddr,
        m: u16,
        tid: [u8; 12],
        code: u16,
        reason: &'static str,
        auth: Option<(&HMACKey, Integrity)>,
    ) {
        self.error_with(to, m, tid, code, reason, Vec::new(), auth);
    }

    #[allow(clippy::too_many_arguments)]
    fn error_with(
        &mut self,
        to: ClientAddr,
        m: u16,
        tid: [u8; 12],
        code: u16,
        reason: &'static str,
        mut attrs: Vec<StunAttribute>,
        auth: Option<(&HMACKey, Integrity)>,
    ) {
        self.events.push_back(ServerEvent::Refused {
            client: to,
            code,
            reason,
        });
        if let Some(e) = stunmsg::error_code(code, reason) {
            attrs.insert(0, e.into());
        }
        self.send_msg(to, m, MessageClass::ErrorResponse, tid, attrs, auth);
    }

    /// 401 or 438: the error carries REALM and a fresh NONCE.
    fn challenge(
        &mut self,
        now: Millis,
        to: ClientAddr,
        h: &Header,
        code: u16,
        reason: &'static str,
    ) {
        let nonce = self.nonces.make(now + self.cfg.nonce_lifetime_ms, to.addr);
        let mut attrs: Vec<StunAttribute> = Vec::new();
        if let Ok(r) = Realm::new(&self.cfg.realm) {
            attrs.push(r.into());
        }
        if let Ok(n) = Nonce::new(nonce) {
            attrs.push(n.into());
        }
        self.error_with(to, h.method, h.transaction, code, reason, attrs, None);
    }

    fn on_stun(&mut self, now: Millis, from: ClientAddr, bytes: &[u8]) {
        let Ok(h) = Header::read(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        match (h.class, h.method) {
            (Class::Indication, method::SEND) => self.on_send(now, from, bytes),
            (Class::Request, _) => self.on_request(now, from, &h, bytes),
            _ => self.stats.unexpected += 1,
        }
    }

    fn on_send(&mut self, now: Millis, from: ClientAddr, bytes: &[u8]) {
        let Some((peer, data)) = stunmsg::parse_data_indication(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        let Some(&id) = self.by_client.get(&from) else {
            self.stats.no_allocation += 1;
            return;
        };
        self.relay_out(now, id, peer, data);
    }

    fn relay_out(&mut self, now: Millis, id: AllocId, peer: SocketAddr, data: &[u8]) {
        let Some(a) = self.allocs.get(&id) else {
            return;
        };
        if a.relayed.is_none() {
            self.stats.no_allocation += 1;
            return;
        }
        if a.permissions.get(&peer.ip()).is_none_or(|&e| e <= now) {
            self.stats.no_permission += 1;
            return;
        }
        if !self.peer_port_allowed(peer) {
            self.stats.forbidden_peers += 1;
            return;
        }
        if !self.charge(now, id, data.len()) {
            return;
        }
        self.stats.to_peer_packets += 1;
        self.stats.to_peer_bytes += data.len() as u64;
        self.out.push_back(ServerTransmit {
            via: Via::Relay { alloc: id, peer },
            bytes: data.to_vec(),
        });
    }

    fn on_channel_data(&mut self, now: Millis, from: ClientAddr, bytes: &[u8]) {
        let Ok(cd) = ChannelData::decode(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        let Some(&id) = self.by_client.get(&from) else {
            self.stats.no_allocation += 1;
            return;
        };
        let Some(&(peer, exp)) = self
            .allocs
            .get(&id)
            .and_then(|a| a.channels.get(&cd.channel))
        else {
            self.stats.unknown_channel += 1;
            return;
        };
        if exp <= now {
            self.stats.unknown_channel += 1;
            return;
        }
        self.relay_out(now, id, peer, cd.data);
    }

    fn on_request(&mut self, now: Millis, from: ClientAddr, h: &Header, bytes: &[u8]) {
        let Some(msg) = stunmsg::decode(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        if h.method == method::BINDING {
            // Binding over UDP belongs to the node's STUN server; over TCP
            // a TURN client may still ask.
            self.send_msg(
                from,
                h.method,
                MessageClass::SuccessResponse,
                h.transaction,
                vec![XorMappedAddress::from(from.addr).into()],
                None,
            );
            return;
        }
        if !matches!(
            h.method,
            method::ALLOCATE | method::REFRESH | method::CREATE_PERMISSION | method::CHANNEL_BIND
        ) {
            self.stats.bad_requests += 1;
            self.error(from, h.method, h.transaction, 400, "Bad Request", None);
            return;
        }
        let unknown: Vec<u16> = msg
            .attributes()
            .iter()
            .filter_map(|a| a.as_unknown().ok())
            .map(|u| u.attribute_type().as_u16())
            .filter(|&t| t < 0x8000)
            .collect();
        if !unknown.is_empty() {
            self.stats.bad_requests += 1;
            let ua = UnknownAttributes::from(&unknown[..]);
            self.error_with(
                from,
                h.method,
                h.transaction,
                420,
                "Unknown Attribute",
                vec![ua.into()],
                None,
            );
            return;
        }
        let Some(auth) = self.authenticate(now, from, h, &msg, bytes) else {
            return;
        };
        match h.method {
            method::ALLOCATE => self.on_allocate(now, from, h, &msg, auth),
            method::REFRESH => self.on_refresh(now, from, h, &msg, auth),
            method::CREATE_PERMISSION => self.on_create_permission(now, from, h, &msg, auth),
            _ => self.on_channel_bind(now, from, h, &msg, auth),
        }
    }

    fn authenticate(
        &mut self,
        now: Millis,
        from: ClientAddr,
        h: &Header,
        msg: &stun_rs::StunMessage,
        bytes: &[u8],
    ) -> Option<Auth> {
        let integrity = stunmsg::integrity_of(msg);
        if integrity == Integrity::None {
            self.stats.unauthenticated += 1;
            self.challenge(now, from, h, 401, "Unauthorized");
            return None;
        }
        let (Some(username), Some(realm), Some(nonce)) = (
            stunmsg::username_of(msg),
            stunmsg::realm_of(msg),
            stunmsg::nonce_of(msg),
        ) else {
            self.stats.bad_requests += 1;
            self.error(from, h.method, h.transaction, 400, "Bad Request", None);
            return None;
        };
        if realm != self.cfg.realm {
            self.stats.bad_credentials += 1;
            self.challenge(now, from, h, 401, "Unauthorized");
            return None;
        }
        if !self.nonces.check(nonce, now, from.addr) {
            self.stats.stale_nonce += 1;
            self.challenge(now, from, h, 438, "Stale Nonce");
            return None;
        }
        let Some((expires, user)) = parse_username(username) else {
            self.stats.bad_credentials += 1;
            self.challenge(now, from, h, 401, "Unauthorized");
            return None;
        };
        if expires <= self.unix.get() {
            self.stats.expired_credentials += 1;
            self.challenge(now, from, h, 401, "Unauthorized");
            return None;
        }
        let password = rest_password(&self.cfg.secret, username);
        let key = stunmsg::long_term_key(username, realm, &password);
        let Some(key) = key.filter(|k| stunmsg::decode_verified(bytes, k).is_some()) else {
            self.stats.bad_credentials += 1;
            self.challenge(now, from, h, 401, "Unauthorized");
            return None;
        };
        Some(Auth {
            user: user.to_owned(),
            key,
            integrity,
        })
    }

    /// The caller's allocation, answering 437 or 441 when there is none or
    /// it belongs to another user.
    fn own_alloc(&mut self, from: ClientAddr, h: &Header, auth: &Auth) -> Option<AllocId> {
        let a = self
            .by_client
            .get(&from)
            .and_then(|id| self.allocs.get(id).map(|a| (*id, a)))
            .filter(|(_, a)| a.relayed.is_some());
        match a {
            None => {
                self.stats.mismatch += 1;
                let k = auth.key.clone();
                self.error(
                    from,
                    h.method,
                    h.transaction,
                    437,
                    "Allocation Mismatch",
                    Some((&k, auth.integrity)),
                );
                None
            }
            Some((_, a)) if a.user != auth.user => {
                self.stats.wrong_user += 1;
                let k = auth.key.clone();
                self.error(
                    from,
                    h.method,
                    h.transaction,
                    441,
                    "Wrong Credentials",
                    Some((&k, auth.integrity)),
                );
                None
            }
            Some((id, _)) => Some(id),
        }
    }

    fn ok(&mut self, to: ClientAddr, h: &Header, attrs: Vec<StunAttribute>, auth: &Auth) {
        let k = auth.key.clone();
        self.send_msg(
            to,
            h.method,
            MessageClass::SuccessResponse,
            h.transaction,
            attrs,
            Some((&k, auth.integrity)),
        );
    }

    fn fail(&mut self, to: ClientAddr, h: &Header, code: u16, reason: &'static str, auth: &Auth) {
        let k = auth.key.clone();
        self.error(
            to,
            h.method,
            h.transaction,
            code,
            reason,
            Some((&k, auth.integrity)),
        );
    }

    fn lifetime(&self, msg: &stun_rs::StunMessage) -> u32 {
        let asked = msg
            .get::<LifeTime>()
            .and_then(|a| a.as_life_time().ok())
            .map(|l| l.as_u32());
        // RFC 8656 §7.2: min(asked, maximum), but never below the default.
        match asked {
            Some(0) => 0,
            Some(s) => s
                .min(self.cfg.max_lifetime_secs)
                .max(self.cfg.default_lifetime_secs),
            None => self.cfg.default_lifetime_secs,
        }
    }

    fn on_allocate(
        &mut self,
        now: Millis,
        from: ClientAddr,
        h: &Header,
        msg: &stun_rs::StunMessage,
        auth: Auth,
    ) {
        if let Some(&id) = self.by_client.get(&from) {
            let a = &self.allocs[&id];
            if a.tid == h.transaction {
                // A retransmission: answer again, or wait for the socket.
                if let Some(r) = a.response.clone() {
                    self.out.push_back(ServerTransmit {
                        via: Via::Client(from),
                        bytes: r,
                    });
                }
                return;
            }
            if a.user != auth.user {
                self.stats.mismatch += 1;
                self.fail(from, h, 437, "Allocation Mismatch", &auth);
                return;
            }
            // The same user allocates anew from the same 5-tuple: its
            // client lost the allocation it holds (a process restarted
            // on the same port behind a NAT that kept its mapping). RFC
            // 8656 answers 437 until the stale one expires, which left
            // the new process without a relayed candidate for up to its
            // lifetime; the stale one goes instead.
            self.stats.allocations_replaced += 1;
            self.remove(id, "replaced by a new allocation of its client");
        }
        let transport = msg
            .get::<RequestedTrasport>()
            .and_then(|a| a.as_requested_trasport().ok())
            .map(|t| t.protocol().as_u8());
        match transport {
            None => {
                self.stats.bad_requests += 1;
                return self.fail(from, h, 400, "Bad Request", &auth);
            }
            Some(17) => {}
            Some(_) => {
                self.stats.bad_requests += 1;
                return self.fail(from, h, 442, "Unsupported Transport Protocol", &auth);
            }
        }
        let family = msg
            .get::<RequestedAddressFamily>()
            .and_then(|a| a.as_requested_address_family().ok())
            .map(|f| f.family());
        let ipv6 = family == Some(stun_rs::AddressFamily::IPv6);
        if (ipv6 && !self.cfg.relay_ipv6) || (!ipv6 && !self.cfg.relay_ipv4) {
            self.stats.bad_requests += 1;
            return self.fail(from, h, 440, "Address Family not Supported", &auth);
        }
        if msg.get::<ReservationToken>().is_some() {
            // No ports are reserved, so no token can be honoured.
            self.stats.capacity_refused += 1;
            return self.fail(from, h, 508, "Insufficient Capacity", &auth);
        }
        if self.allocs.len() >= self.cfg.max_allocations {
            self.stats.capacity_refused += 1;
            return self.fail(from, h, 508, "Insufficient Capacity", &auth);
        }
        if self.user_allocations(&auth.user) >= self.cfg.user_allocations {
            self.stats.quota_refused += 1;
            return self.fail(from, h, 486, "Allocation Quota Reached", &auth);
        }
        let lifetime = match self.lifetime(msg) {
            0 => self.cfg.default_lifetime_secs,
            l => l,
        };
        let id = self.next_alloc;
        self.next_alloc += 1;
        let (rate, burst) = (
            self.cfg.user_bandwidth,
            self.cfg.user_burst.max(self.cfg.user_bandwidth),
        );
        self.users
            .entry(auth.user.clone())
            .or_insert_with(|| User {
                allocations: 0,
                bucket: TokenBucket::new(rate, burst, now),
            })
            .allocations += 1;
        self.allocs.insert(
            id,
            Allocation {
                client: from,
                user: auth.user,
                tid: h.transaction,
                response: None,
                key: auth.key,
                integrity: auth.integrity,
                lifetime_secs: lifetime,
                relayed: None,
                ipv6,
                created: now,
                expires: now + OPEN_TIMEOUT_MS,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                by_peer: HashMap::new(),
            },
        );
        self.by_client.insert(from, id);
        if now + SWEEP_MS < self.next_sweep || self.allocs.len() == 1 {
            self.next_sweep = now + SWEEP_MS;
        }
        self.events.push_back(ServerEvent::OpenRelay {
            alloc: id,
            even_port: msg.get::<EvenPort>().is_some(),
            ipv6,
        });
    }

    fn on_refresh(
        &mut self,
        now: Millis,
        from: ClientAddr,
        h: &Header,
        msg: &stun_rs::StunMessage,
        auth: Auth,
    ) {
        let Some(id) = self.own_alloc(from, h, &auth) else {
            return;
        };
        let lifetime = self.lifetime(msg);
        if lifetime == 0 {
            self.stats.allocations_deleted += 1;
            self.remove(id, "deleted by the client");
        } else if let Some(a) = self.allocs.get_mut(&id) {
            a.lifetime_secs = lifetime;
            a.expires = now + lifetime as u64 * 1000;
        }
        self.ok(from, h, vec![LifeTime::new(lifetime).into()], &auth);
    }

    /// Unspecified, broadcast and multicast addresses are never peers;
    /// loopback only when configured; the denied ranges unless allowed.
    /// Our own addresses pass here (a permission is per IP) and are
    /// checked per port by [`Self::peer_port_allowed`].
    fn peer_allowed(&self, ip: IpAddr) -> bool {
        let v4 = match ip {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(v6) => {
                if v6.is_unspecified() || v6.is_multicast() {
                    return false;
                }
                if v6.is_loopback() {
                    return self.cfg.allow_loopback_peers;
                }
                // An IPv4 address carried inside (mapped, NAT64, 6to4)
                // reaches that IPv4 host: it must pass as one too.
                if let Some(inner) = crate::wire::prefix::embedded_ipv4(v6)
                    && !self.peer_allowed(IpAddr::V4(inner))
                {
                    return false;
                }
                return self.cfg.allowed_peers.iter().any(|p| p.contains(ip))
                    || !self.cfg.denied_peers.iter().any(|p| p.contains(ip));
            }
        };
        if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() {
            return false;
        }
        if v4.is_loopback() {
            return self.cfg.allow_loopback_peers;
        }
        self.cfg.allowed_peers.iter().any(|p| p.contains(ip))
            || !self.cfg.denied_peers.iter().any(|p| p.contains(ip))
    }

    /// A peer at one of our own (non-loopback) addresses must be the
    /// relayed address of a live allocation, never another service of
    /// this host.
    fn peer_port_allowed(&self, peer: SocketAddr) -> bool {
        peer.ip().is_loopback()
            || !self.cfg.own_addresses.contains(&peer.ip())
            || self.by_relayed.contains_key(&peer)
    }

    fn peers_of(msg: &stun_rs::StunMessage) -> Vec<SocketAddr> {
        msg.attributes()
            .iter()
            .filter_map(|a| a.as_xor_peer_address().ok())
            .map(|p| *p.socket_address())
            .collect()
    }

    fn on_create_permission(
        &mut self,
        now: Millis,
        from: ClientAddr,
        h: &Header,
        msg: &stun_rs::StunMessage,
        auth: Auth,
    ) {
        let Some(id) = self.own_alloc(from, h, &auth) else {
            return;
        };
        let peers = Self::peers_of(msg);
        if peers.is_empty() {
            self.stats.bad_requests += 1;
            return self.fail(from, h, 400, "Bad Request", &auth);
        }
        let ipv6 = self.allocs.get(&id).is_some_and(|a| a.ipv6);
        if peers.iter().any(|p| p.is_ipv6() != ipv6) {
            self.stats.bad_requests += 1;
            return self.fail(from, h, 443, "Peer Address Family Mismatch", &auth);
        }
        if peers.iter().any(|p| !self.peer_allowed(p.ip())) {
            self.stats.forbidden_peers += 1;
            return self.fail(from, h, 403, "Forbidden", &auth);
        }
        let max = self.cfg.max_peers;
        let a = self.allocs.get_mut(&id).unwrap_or_else(|| unreachable!());
        let new = peers
            .iter()
            .filter(|p| !a.permissions.contains_key(&p.ip()))
            .count();
        if a.permissions.len() + new > max {
            self.stats.capacity_refused += 1;
            return self.fail(from, h, 508, "Insufficient Capacity", &auth);
        }
        for p in peers {
            a.permissions.insert(p.ip(), now + PERMISSION_MS);
        }
        self.ok(from, h, Vec::new(), &auth);
    }

    fn on_channel_bind(
        &mut self,
        now: Millis,
        from: ClientAddr,
        h: &Header,
        msg: &stun_rs::StunMessage,
        auth: Auth,
    ) {
        let Some(id) = self.own_alloc(from, h, &auth) else {
            return;
        };
        let channel = msg
            .get::<ChannelNumber>()
            .and_then(|a| a.as_channel_number().ok())
            .map(|c| c.number());
        let peer = msg
            .get::<XorPeerAddress>()
            .and_then(|a| a.as_xor_peer_address().ok())
            .map(|p| *p.socket_address());
        let (Some(channel), Some(peer)) = (channel, peer) else {
            self.stats.bad_requests += 1;
            return self.fail(from, h, 400, "Bad Request", &auth);
        };
        if !(CHANNEL_MIN..=CHANNEL_MAX_ACCEPTED).contains(&channel) {
            self.stats.bad_requests += 1;
            return self.fail(from, h, 400, "Bad Request", &auth);
        }
        let ipv6 = self.allocs.get(&id).is_some_and(|a| a.ipv6);
        if peer.is_ipv6() != ipv6 {
            self.stats.bad_requests += 1;
            return self.fail(from, h, 443, "Peer Address Family Mismatch", &auth);
        }
        if !self.peer_allowed(peer.ip()) || !self.peer_port_allowed(peer) {
            self.stats.forbidden_peers += 1;
            return self.fail(from, h, 403, "Forbidden", &auth);
        }
        let max = self.cfg.max_peers;
        let a = self.allocs.get_mut(&id).unwrap_or_else(|| unreachable!());
        let clash = a.channels.get(&channel).is_some_and(|&(p, _)| p != peer)
            || a.by_peer.get(&peer).is_some_and(|&c| c != channel);
        if clash {
            self.stats.bad_requests += 1;
            return self.fail(from, h, 400, "Bad Request", &auth);
        }
        let new_perm = !a.permissions.contains_key(&peer.ip());
        if (!a.channels.contains_key(&channel) && a.channels.len() >= max)
            || (new_perm && a.permissions.len() >= max)
        {
            self.stats.capacity_refused += 1;
            return self.fail(from, h, 508, "Insufficient Capacity", &auth);
        }
        a.channels.insert(channel, (peer, now + CHANNEL_MS));
        a.by_peer.insert(peer, channel);
        a.permissions.insert(peer.ip(), now + PERMISSION_MS);
        self.ok(from, h, Vec::new(), &auth);
    }
}
