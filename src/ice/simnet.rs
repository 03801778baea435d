//! An in-process packet network with NAT boxes, for the ICE tests: virtual
//! time, seeded jitter, loss and port allocation. RFC 4787 behaviours:
//! mapping (endpoint-independent, address-dependent, address-and-port-
//! dependent), filtering (likewise), port allocation (preserve the
//! internal port, sequential, random) and a UDP-blocking firewall that
//! lets only TCP to the relay through. Two "supernodes" answer with the
//! address they observed (server-reflexive candidates) and one relay
//! forwards as a TURN server does (allocation per client 5-tuple,
//! permissions per peer IP, Send and Data). The relay framing here is the
//! simulator's own, standing in for the TURN client and server cores.
//!
//! [`run_pair`] runs two [`IceAgent`]s across this network (A calls B) and
//! reports how they connected.

use super::agent::{IceAgent, IceConfig, IceEvent, IceRole};
use super::offer::MappingHint;
use super::{Candidate, CandidateKind, Path, PathKind, Via};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Behaviour {
    EndpointIndependent,
    AddressDependent,
    AddressPortDependent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortAlloc {
    /// Keep the internal port when free (Linux masquerade).
    Preserve,
    /// The next port for each new mapping.
    Sequential,
    /// A random free port (Linux `masquerade fully-random`).
    Random,
}

/// The six client environments of the matrix, plus a symmetric NAT with
/// predictable (sequential) ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Env {
    Public,
    FullCone,
    RestrictedCone,
    PortRestricted,
    Symmetric,
    UdpBlocked,
    SymmetricSequential,
}

impl Env {
    pub const MATRIX: [Env; 6] = [
        Env::Public,
        Env::FullCone,
        Env::RestrictedCone,
        Env::PortRestricted,
        Env::Symmetric,
        Env::UdpBlocked,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Env::Public => "public",
            Env::FullCone => "full-cone",
            Env::RestrictedCone => "restricted",
            Env::PortRestricted => "port-restr",
            Env::Symmetric => "symmetric",
            Env::UdpBlocked => "udp-blocked",
            Env::SymmetricSequential => "sym-seq",
        }
    }

    pub fn nat(self) -> Option<NatSpec> {
        use Behaviour::*;
        let (mapping, filtering, alloc) = match self {
            Env::Public => return None,
            Env::FullCone => (
                EndpointIndependent,
                EndpointIndependent,
                PortAlloc::Preserve,
            ),
            Env::RestrictedCone => (EndpointIndependent, AddressDependent, PortAlloc::Preserve),
            Env::PortRestricted => (
                EndpointIndependent,
                AddressPortDependent,
                PortAlloc::Preserve,
            ),
            Env::Symmetric => (
                AddressPortDependent,
                AddressPortDependent,
                PortAlloc::Random,
            ),
            Env::SymmetricSequential => (
                AddressPortDependent,
                AddressPortDependent,
                PortAlloc::Sequential,
            ),
            Env::UdpBlocked => {
                return Some(NatSpec {
                    mapping: EndpointIndependent,
                    filtering: AddressPortDependent,
                    alloc: PortAlloc::Preserve,
                    udp_blocked: true,
                });
            }
        };
        Some(NatSpec {
            mapping,
            filtering,
            alloc,
            udp_blocked: false,
        })
    }

    /// The expected path when `self` calls `other`, with unpredictable
    /// symmetric ports.
    pub fn expect_direct(self, other: Env) -> bool {
        let hard = |a: Env, b: Env| {
            a == Env::UdpBlocked
                || (a == Env::Symmetric && matches!(b, Env::PortRestricted | Env::Symmetric))
        };
        !hard(self, other) && !hard(other, self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatSpec {
    pub mapping: Behaviour,
    pub filtering: Behaviour,
    pub alloc: PortAlloc,
    pub udp_blocked: bool,
}

#[derive(Debug)]
struct MappingEntry {
    internal: SocketAddr,
    contacted: HashSet<SocketAddr>,
}

#[derive(Debug)]
struct Nat {
    spec: NatSpec,
    public: Ipv4Addr,
    by_key: HashMap<(SocketAddr, Option<SocketAddr>), u16>,
    by_port: HashMap<u16, MappingEntry>,
    next_port: u16,
}

impl Nat {
    fn key(&self, internal: SocketAddr, dst: SocketAddr) -> (SocketAddr, Option<SocketAddr>) {
        match self.spec.mapping {
            Behaviour::EndpointIndependent => (internal, None),
            Behaviour::AddressDependent => (internal, Some(SocketAddr::new(dst.ip(), 0))),
            Behaviour::AddressPortDependent => (internal, Some(dst)),
        }
    }

    fn outbound(&mut self, internal: SocketAddr, dst: SocketAddr, rng: &mut StdRng) -> SocketAddr {
        let key = self.key(internal, dst);
        let port = match self.by_key.get(&key) {
            Some(p) => *p,
            None => {
                let port = self.allocate(internal.port(), rng);
                self.by_key.insert(key, port);
                self.by_port.insert(
                    port,
                    MappingEntry {
                        internal,
                        contacted: HashSet::new(),
                    },
                );
                port
            }
        };
        if let Some(m) = self.by_port.get_mut(&port) {
            m.contacted.insert(dst);
        }
        SocketAddr::new(IpAddr::V4(self.public), port)
    }

    fn allocate(&mut self, wanted: u16, rng: &mut StdRng) -> u16 {
        let free = |n: &Nat, p: u16| p >= 1024 && !n.by_port.contains_key(&p);
        match self.spec.alloc {
            PortAlloc::Preserve if free(self, wanted) => wanted,
            PortAlloc::Random => loop {
                let p = rng.gen_range(1024..=65535u16);
                if free(self, p) {
                    return p;
                }
            },
            _ => loop {
                let p = self.next_port;
                self.next_port = if p == 65535 { 1024 } else { p + 1 };
                if free(self, p) {
                    return p;
                }
            },
        }
    }

    fn inbound(&self, port: u16, src: SocketAddr) -> Option<SocketAddr> {
        let m = self.by_port.get(&port)?;
        let ok = match self.spec.filtering {
            Behaviour::EndpointIndependent => true,
            Behaviour::AddressDependent => m.contacted.iter().any(|c| c.ip() == src.ip()),
            Behaviour::AddressPortDependent => m.contacted.contains(&src),
        };
        ok.then_some(m.internal)
    }
}

/// A datagram in flight, as it appears on the wire at its destination.
#[derive(Debug, Clone)]
struct Packet {
    src: SocketAddr,
    dst: SocketAddr,
    bytes: Vec<u8>,
    /// Carried over TCP (only to and from the relay).
    tcp: bool,
}

/// Relay framing of the simulator (stands in for TURN).
const R_ALLOCATE: u8 = 1;
const R_SEND: u8 = 2;
const R_ALLOCATED: u8 = 0x81;
const R_DATA: u8 = 0x82;
/// Supernode observation request/answer.
const WHO: u8 = 0x55;
/// Application data standing in for link frames.
const APP: u8 = 0xAA;

fn put_addr(v: &mut Vec<u8>, a: SocketAddr) {
    if let SocketAddr::V4(a) = a {
        v.extend_from_slice(&a.ip().octets());
        v.extend_from_slice(&a.port().to_be_bytes());
    }
}

fn get_addr(b: &[u8]) -> Option<SocketAddr> {
    if b.len() < 6 {
        return None;
    }
    Some(SocketAddr::from((
        [b[0], b[1], b[2], b[3]],
        u16::from_be_bytes([b[4], b[5]]),
    )))
}

#[derive(Debug)]
struct Relay {
    addr: SocketAddr,
    /// client 5-tuple -> (relayed port, permissions, over tcp)
    allocations: HashMap<SocketAddr, (u16, HashSet<IpAddr>, bool)>,
    by_port: HashMap<u16, SocketAddr>,
    next_port: u16,
    forwarded: u64,
}

/// Where a host lives.
#[derive(Debug)]
struct Host {
    internal: SocketAddr,
    nat: Option<usize>,
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub seed: u64,
    /// One-way delay across the simulated Internet.
    pub delay_ms: u64,
    pub jitter_ms: u64,
    pub loss: f64,
    /// Delay of the candidate exchange through the supernodes.
    pub signalling_ms: u64,
    pub ice: IceConfig,
    /// Drop direct UDP between the two clients' public addresses until
    /// this time (relay traffic still flows): the upgrade scenario.
    pub block_direct_until: Option<u64>,
    /// Drop direct UDP between the two clients' public addresses from
    /// this time on (ms after the call starts): the fallback scenario.
    pub block_direct_from: Option<u64>,
    /// Application datagrams over the selected path every this many ms.
    pub app_interval_ms: Option<u64>,
    /// Stop this long after both sides are connected (or at the limit).
    pub run_after_connect_ms: u64,
    pub limit_ms: u64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            seed: 1,
            delay_ms: 20,
            jitter_ms: 5,
            loss: 0.0,
            signalling_ms: 60,
            ice: IceConfig::default(),
            block_direct_until: None,
            block_direct_from: None,
            app_interval_ms: None,
            run_after_connect_ms: 500,
            limit_ms: 15_000,
        }
    }
}

/// How a run ended, seen from each side (index 0: the caller A).
#[derive(Debug, Clone, Default)]
pub struct PairOutcome {
    /// First path each side selected, and when (ms since its start).
    pub connected: [Option<(Path, u64)>; 2],
    /// Path each side ended on.
    pub final_path: [Option<Path>; 2],
    pub path_changes: [Vec<(u64, Path)>; 2],
    pub failed: [Option<String>; 2],
    /// Connectivity checks and responses each side sent.
    pub checks_sent: [u64; 2],
    pub predicted: [u64; 2],
    /// Application datagrams sent and the sequence numbers received.
    pub app_sent: [u64; 2],
    pub app_received: [Vec<u64>; 2],
    pub relay_forwarded: u64,
    /// When each side first had a path (simulated ms since the call).
    pub connected_at: [Option<u64>; 2],
}

impl PairOutcome {
    pub fn both_connected(&self) -> bool {
        self.final_path.iter().all(|p| p.is_some()) && self.failed.iter().all(|f| f.is_none())
    }

    /// Both sides on a direct path at the end.
    pub fn direct(&self) -> bool {
        self.final_path
            .iter()
            .all(|p| p.is_some_and(|p| p.kind() == PathKind::Direct))
    }

    /// Setup time: from the call until both sides had a path.
    pub fn setup_ms(&self) -> Option<u64> {
        Some(self.connected_at[0]?.max(self.connected_at[1]?))
    }
}

struct Side {
    host: usize,
    env: Env,
    agent: Option<IceAgent>,
    srflx: Vec<SocketAddr>,
    relayed: Option<SocketAddr>,
    tcp_to_relay: bool,
    app_seq: u64,
}

/// The simulated network.
pub struct SimNet {
    now: u64,
    rng: StdRng,
    opts: SimOptions,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    packets: BTreeMap<u64, Packet>,
    seq: u64,
    nats: Vec<Nat>,
    hosts: Vec<Host>,
    relay: Relay,
    supernodes: Vec<SocketAddr>,
    blocked: Option<(IpAddr, IpAddr)>,
}

enum Dest {
    Host(usize),
    Relay,
    Supernode,
    Nowhere,
}

impl SimNet {
    pub fn new(opts: SimOptions) -> Self {
        SimNet {
            now: 0,
            rng: StdRng::seed_from_u64(opts.seed),
            opts,
            queue: BinaryHeap::new(),
            packets: BTreeMap::new(),
            seq: 0,
            nats: Vec::new(),
            hosts: Vec::new(),
            relay: Relay {
                addr: "192.0.2.1:3478".parse().unwrap_or_else(|_| unreachable!()),
                next_port: 49152,
                allocations: HashMap::new(),
                by_port: HashMap::new(),
                forwarded: 0,
            },
            supernodes: vec![
                "192.0.2.10:7710".parse().unwrap_or_else(|_| unreachable!()),
                "192.0.2.11:7710".parse().unwrap_or_else(|_| unreachable!()),
            ],
            blocked: None,
        }
    }

    pub fn relay_addr(&self) -> SocketAddr {
        self.relay.addr
    }

    /// A host in environment `env`; `n` numbers the host (addresses).
    fn add_host(&mut self, env: Env, n: u8) -> usize {
        let nat = env.nat().map(|spec| {
            let start = 20_000 + self.rng.gen_range(0..10_000u16);
            self.nats.push(Nat {
                spec,
                public: Ipv4Addr::new(203, 0, 113, n),
                by_key: HashMap::new(),
                by_port: HashMap::new(),
                next_port: start,
            });
            self.nats.len() - 1
        });
        let internal = match nat {
            Some(_) => SocketAddr::from(([10, n, 0, 2], 5000)),
            None => SocketAddr::from(([198, 51, 100, n], 5000)),
        };
        self.hosts.push(Host { internal, nat });
        self.hosts.len() - 1
    }

    fn public_ip(&self, h: usize) -> IpAddr {
        match self.hosts[h].nat {
            Some(n) => IpAddr::V4(self.nats[n].public),
            None => self.hosts[h].internal.ip(),
        }
    }

    /// A host sends a datagram from its socket.
    fn send_from_host(&mut self, h: usize, dst: SocketAddr, bytes: Vec<u8>, tcp: bool) {
        let internal = self.hosts[h].internal;
        let src = match self.hosts[h].nat {
            Some(n) => {
                if self.nats[n].spec.udp_blocked && !tcp {
                    return;
                }
                self.nats[n].outbound(internal, dst, &mut self.rng)
            }
            None => internal,
        };
        self.send(src, dst, bytes, tcp);
    }

    fn send(&mut self, src: SocketAddr, dst: SocketAddr, bytes: Vec<u8>, tcp: bool) {
        if !tcp
            && let Some((a, b)) = self.blocked
            && ((src.ip() == a && dst.ip() == b) || (src.ip() == b && dst.ip() == a))
        {
            return;
        }
        if self.opts.loss > 0.0 && self.rng.gen_bool(self.opts.loss.clamp(0.0, 1.0)) {
            return;
        }
        let jitter = if self.opts.jitter_ms > 0 {
            self.rng.gen_range(0..=self.opts.jitter_ms)
        } else {
            0
        };
        let at = self.now + self.opts.delay_ms + jitter;
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.packets.insert(
            self.seq,
            Packet {
                src,
                dst,
                bytes,
                tcp,
            },
        );
    }

    /// Where a packet to `dst` ends, after inbound NAT translation.
    fn route(&self, p: &Packet) -> Dest {
        if p.dst == self.relay.addr
            || self.relay.by_port.contains_key(&p.dst.port()) && p.dst.ip() == self.relay.addr.ip()
        {
            return Dest::Relay;
        }
        if self.supernodes.contains(&p.dst) {
            return Dest::Supernode;
        }
        for (h, host) in self.hosts.iter().enumerate() {
            match host.nat {
                None if host.internal == p.dst => return Dest::Host(h),
                Some(n) if IpAddr::V4(self.nats[n].public) == p.dst.ip() => {
                    let nat = &self.nats[n];
                    if nat.spec.udp_blocked && !p.tcp {
                        return Dest::Nowhere;
                    }
                    return match nat.inbound(p.dst.port(), p.src) {
                        Some(i) if i == host.internal => Dest::Host(h),
                        _ => Dest::Nowhere,
                    };
                }
                _ => {}
            }
        }
        Dest::Nowhere
    }

    fn relay_packet(&mut self, p: Packet) {
        if p.dst == self.relay.addr {
            match p.bytes.first() {
                Some(&R_ALLOCATE) => {
                    let port = match self.relay.allocations.get(&p.src) {
                        Some((port, _, _)) => *port,
                        None => {
                            let port = self.relay.next_port;
                            self.relay.next_port += 1;
                            self.relay
                                .allocations
                                .insert(p.src, (port, HashSet::new(), p.tcp));
                            self.relay.by_port.insert(port, p.src);
                            port
                        }
                    };
                    let mut v = vec![R_ALLOCATED];
                    put_addr(&mut v, SocketAddr::new(self.relay.addr.ip(), port));
                    self.send(self.relay.addr, p.src, v, p.tcp);
                }
                Some(&R_SEND) => {
                    let Some(peer) = get_addr(&p.bytes[1..]) else {
                        return;
                    };
                    let Some((port, perms, _)) = self.relay.allocations.get_mut(&p.src) else {
                        return;
                    };
                    perms.insert(peer.ip());
                    let from = SocketAddr::new(self.relay.addr.ip(), *port);
                    self.relay.forwarded += 1;
                    self.send(from, peer, p.bytes[7..].to_vec(), false);
                }
                _ => {}
            }
            return;
        }
        // To a relayed address: Data to the client if permitted.
        let Some(client) = self.relay.by_port.get(&p.dst.port()).copied() else {
            return;
        };
        let Some((_, perms, tcp)) = self.relay.allocations.get(&client) else {
            return;
        };
        if !perms.contains(&p.src.ip()) {
            return;
        }
        let tcp = *tcp;
        let mut v = vec![R_DATA];
        put_addr(&mut v, p.src);
        v.extend_from_slice(&p.bytes);
        self.relay.forwarded += 1;
        self.send(self.relay.addr, client, v, tcp);
    }
}

fn deliver_to_side(
    net: &mut SimNet,
    side: &mut Side,
    idx: usize,
    p: Packet,
    out: &mut PairOutcome,
) {
    let now = net.now;
    let (via, from, bytes) = if p.src == net.relay.addr {
        match p.bytes.first() {
            Some(&R_ALLOCATED) => {
                side.relayed = get_addr(&p.bytes[1..]);
                return;
            }
            Some(&R_DATA) => match get_addr(&p.bytes[1..]) {
                Some(from) => (Via::Relay(net.relay.addr), from, p.bytes[7..].to_vec()),
                None => return,
            },
            _ => return,
        }
    } else if net.supernodes.contains(&p.src) {
        if let Some(a) = get_addr(p.bytes.get(1..).unwrap_or(&[])) {
            side.srflx.push(a);
        }
        return;
    } else {
        (Via::Direct, p.src, p.bytes)
    };
    if bytes.first() == Some(&APP) && bytes.len() >= 9 {
        let mut s = [0u8; 8];
        s.copy_from_slice(&bytes[1..9]);
        out.app_received[idx].push(u64::from_be_bytes(s));
        return;
    }
    if let Some(agent) = side.agent.as_mut() {
        agent.handle_stun(now, via, from, &bytes, &mut net.rng);
    }
}

fn flush_side(net: &mut SimNet, side: &mut Side) {
    let Some(agent) = side.agent.as_mut() else {
        return;
    };
    let mut out = Vec::new();
    while let Some(t) = agent.poll_transmit() {
        out.push(t);
    }
    for t in out {
        send_via(net, side, t.via, t.dst, t.bytes);
    }
}

fn send_via(net: &mut SimNet, side: &Side, via: Via, dst: SocketAddr, bytes: Vec<u8>) {
    match via {
        Via::Direct => net.send_from_host(side.host, dst, bytes, false),
        Via::Relay(server) => {
            let mut v = vec![R_SEND];
            put_addr(&mut v, dst);
            v.extend_from_slice(&bytes);
            net.send_from_host(side.host, server, v, side.tcp_to_relay);
        }
    }
}

/// Run A (`a`, caller, controlling) connecting to B (`b`).
pub fn run_pair(a: Env, b: Env, opts: SimOptions) -> PairOutcome {
    let mut net = SimNet::new(opts.clone());
    let mut sides = [
        Side {
            host: net.add_host(a, 1),
            env: a,
            agent: None,
            srflx: Vec::new(),
            relayed: None,
            tcp_to_relay: a == Env::UdpBlocked,
            app_seq: 0,
        },
        Side {
            host: net.add_host(b, 2),
            env: b,
            agent: None,
            srflx: Vec::new(),
            relayed: None,
            tcp_to_relay: b == Env::UdpBlocked,
            app_seq: 0,
        },
    ];
    if let Some(until) = opts.block_direct_until {
        let (pa, pb) = (net.public_ip(sides[0].host), net.public_ip(sides[1].host));
        net.blocked = Some((pa, pb));
        let _ = until;
    }
    let mut out = PairOutcome::default();
    // Login: both sides attach to two supernodes (server-reflexive
    // addresses) and allocate on the relay, before the call.
    for s in &sides {
        for sn in net.supernodes.clone() {
            net.send_from_host(s.host, sn, vec![WHO], false);
        }
        net.send_from_host(s.host, net.relay.addr, vec![R_ALLOCATE], s.tcp_to_relay);
    }
    let call_at = 1_000;
    let mut offer_to_b: Option<(u64, super::IceOffer)> = None;
    let mut answer_to_a: Option<(u64, super::IceOffer)> = None;
    let mut connected_at: Option<u64> = None;
    let mut next_app = opts.app_interval_ms.map(|_| call_at);
    let limit = opts.limit_ms + call_at;
    loop {
        // Next thing to happen.
        let mut t = u64::MAX;
        if let Some(Reverse((at, _))) = net.queue.peek() {
            t = t.min(*at);
        }
        for s in &sides {
            if let Some(a) = &s.agent
                && let Some(d) = a.poll_timeout()
            {
                t = t.min(d);
            }
        }
        if sides[0].agent.is_none() {
            t = t.min(call_at);
        }
        if let Some((at, _)) = &offer_to_b {
            t = t.min(*at);
        }
        if let Some((at, _)) = &answer_to_a {
            t = t.min(*at);
        }
        if let Some(u) = opts.block_direct_until
            && net.blocked.is_some()
        {
            t = t.min(call_at + u);
        }
        if let Some(f) = opts.block_direct_from
            && net.blocked.is_none()
            && net.now < call_at + f
        {
            t = t.min(call_at + f);
        }
        if let Some(n) = next_app {
            t = t.min(n);
        }
        let stop = connected_at.map_or(limit, |c| (c + opts.run_after_connect_ms).min(limit));
        if t > stop {
            break;
        }
        net.now = t.max(net.now);
        let now = net.now;
        if let Some(u) = opts.block_direct_until
            && now >= call_at + u
        {
            net.blocked = None;
        }
        if let Some(f) = opts.block_direct_from
            && now >= call_at + f
            && net.blocked.is_none()
        {
            net.blocked = Some((net.public_ip(sides[0].host), net.public_ip(sides[1].host)));
        }
        // The call starts: A gathers and offers.
        if sides[0].agent.is_none() && now >= call_at {
            let agent = make_agent(&mut net, &sides[0], IceRole::Controlling, now, &opts);
            offer_to_b = Some((now + opts.signalling_ms, agent.local_offer()));
            sides[0].agent = Some(agent);
        }
        if let Some((at, offer)) = offer_to_b.take() {
            if now >= at {
                let mut agent = make_agent(&mut net, &sides[1], IceRole::Controlled, now, &opts);
                // B's own clock for setup starts when the offer arrives.
                agent.set_remote(now, &offer);
                answer_to_a = Some((now + opts.signalling_ms, agent.local_offer()));
                sides[1].agent = Some(agent);
            } else {
                offer_to_b = Some((at, offer));
            }
        }
        if let Some((at, answer)) = answer_to_a.take() {
            if now >= at {
                if let Some(a) = sides[0].agent.as_mut() {
                    a.set_remote(now, &answer);
                }
            } else {
                answer_to_a = Some((at, answer));
            }
        }
        // Packets due.
        while let Some(Reverse((at, seq))) = net.queue.peek().copied() {
            if at > now {
                break;
            }
            net.queue.pop();
            let Some(p) = net.packets.remove(&seq) else {
                continue;
            };
            match net.route(&p) {
                Dest::Relay => net.relay_packet(p),
                Dest::Supernode => {
                    let mut v = vec![WHO];
                    put_addr(&mut v, p.src);
                    net.send(p.dst, p.src, v, false);
                }
                Dest::Host(h) => {
                    let i = if sides[0].host == h { 0 } else { 1 };
                    deliver_to_side(&mut net, &mut sides[i], i, p, &mut out);
                }
                Dest::Nowhere => {}
            }
        }
        // Timers, then events and transmits.
        for (i, side) in sides.iter_mut().enumerate() {
            if let Some(agent) = side.agent.as_mut() {
                if agent.poll_timeout().is_some_and(|d| d <= now) {
                    agent.handle_timeout(now, &mut net.rng);
                }
                while let Some(ev) = agent.poll_event() {
                    match ev {
                        IceEvent::Connected { path, setup_ms } => {
                            out.connected[i] = Some((path, setup_ms));
                            out.connected_at[i] = Some(now - call_at);
                        }
                        IceEvent::PathChanged { to, .. } => out.path_changes[i].push((now, to)),
                        IceEvent::Failed { reason } => out.failed[i] = Some(reason),
                    }
                }
            }
            flush_side(&mut net, side);
        }
        if let Some(n) = next_app
            && now >= n
        {
            for (i, side) in sides.iter_mut().enumerate() {
                if let Some(path) = side.agent.as_ref().and_then(|a| a.selected()) {
                    side.app_seq += 1;
                    out.app_sent[i] += 1;
                    let mut v = vec![APP];
                    v.extend_from_slice(&side.app_seq.to_be_bytes());
                    send_via(&mut net, side, path.via, path.remote, v);
                }
            }
            next_app = opts.app_interval_ms.map(|iv| n + iv);
        }
        let both = sides
            .iter()
            .all(|s| s.agent.as_ref().is_some_and(|a| a.selected().is_some()));
        let upgraded_or_done = opts.block_direct_until.is_none()
            || sides.iter().all(|s| {
                s.agent
                    .as_ref()
                    .and_then(|a| a.selected())
                    .is_some_and(|p| p.is_direct())
            });
        if connected_at.is_none() && both && upgraded_or_done {
            connected_at = Some(now);
        }
        if sides
            .iter()
            .any(|s| s.agent.as_ref().is_some_and(|a| a.is_failed()))
            && connected_at.is_none()
        {
            connected_at = Some(now);
        }
    }
    for (i, s) in sides.iter().enumerate() {
        if let Some(a) = &s.agent {
            out.final_path[i] = a.selected();
            out.checks_sent[i] = a.stats().checks_sent + a.stats().retransmits;
            out.predicted[i] = a.stats().predicted_ports;
        }
    }
    out.relay_forwarded = net.relay.forwarded;
    out
}

fn make_agent(
    net: &mut SimNet,
    side: &Side,
    role: IceRole,
    now: u64,
    opts: &SimOptions,
) -> IceAgent {
    let mut locals = vec![Candidate::new(
        CandidateKind::Host,
        net.hosts[side.host].internal,
        65535,
    )];
    for (i, a) in side.srflx.iter().enumerate() {
        locals.push(Candidate::new(
            CandidateKind::ServerReflexive,
            *a,
            65535 - i as u16,
        ));
    }
    let relays: Vec<(SocketAddr, SocketAddr)> = side
        .relayed
        .map(|r| (net.relay.addr, r))
        .into_iter()
        .collect();
    // What the node knows without a NAT test: UDP blocked when no
    // supernode answered, destination-dependent when they saw different
    // ports.
    let mapping = if side.srflx.is_empty() {
        MappingHint::Blocked
    } else if side.srflx.windows(2).any(|w| w[0] != w[1]) {
        MappingHint::DestinationDependent
    } else {
        MappingHint::EndpointIndependent
    };
    let _ = side.env;
    let session = net.rng.r#gen();
    // The relay is not one of the observing supernodes: allocating on it
    // opened one more mapping.
    let mut cfg = opts.ice.clone();
    cfg.prior_mappings = 1;
    IceAgent::new(
        cfg,
        role,
        session,
        now,
        locals,
        &relays,
        mapping,
        &mut net.rng,
    )
}
