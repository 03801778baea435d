//! ICE pairs on the simulated network ([`super::net`]): two hosts, each
//! public or behind a NAT of one of the matrix's kinds (RFC 4787 mapping,
//! filtering and port allocation, or a firewall that blocks UDP and lets
//! only TCP to the relay through). Two "supernodes" answer with the
//! address they observed (server-reflexive candidates) and one relay
//! forwards as a TURN server does (allocation per client 5-tuple,
//! permissions per peer IP, Send and Data). The relay framing here is the
//! simulator's own, standing in for the TURN client and server cores.
//!
//! [`run_pair`] runs two [`IceAgent`]s across this network (A calls B) and
//! reports how they connected.

use super::nat::{FilteringBehavior, MappingBehavior, NatConfig, PortAllocation};
use super::net::{DropRule, LinkModel, Network, RuleId, Transport};
use crate::ice::agent::{IceAgent, IceConfig, IceEvent, IceRole};
use crate::ice::offer::MappingHint;
use crate::ice::{Candidate, CandidateKind, IceOffer, Path, PathKind, Via};
use crate::time::Millis;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

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

    /// The NAT of this environment with public IP `public` (`None` for a
    /// public host); sequential ports start at `seq_start`.
    pub fn nat_config(self, public: IpAddr, seq_start: u16) -> Option<NatConfig> {
        use FilteringBehavior as F;
        use MappingBehavior as M;
        let seq = PortAllocation::Sequential {
            start: seq_start,
            step: 1,
        };
        let (mapping, filtering, ports) = match self {
            Env::Public => return None,
            Env::FullCone => (
                M::EndpointIndependent,
                F::EndpointIndependent,
                PortAllocation::Preserve,
            ),
            Env::RestrictedCone => (
                M::EndpointIndependent,
                F::AddressDependent,
                PortAllocation::Preserve,
            ),
            Env::PortRestricted | Env::UdpBlocked => (
                M::EndpointIndependent,
                F::AddressPortDependent,
                PortAllocation::Preserve,
            ),
            Env::Symmetric => (
                M::AddressPortDependent,
                F::AddressPortDependent,
                PortAllocation::Random,
            ),
            Env::SymmetricSequential => (M::AddressPortDependent, F::AddressPortDependent, seq),
        };
        Some(NatConfig {
            ports,
            udp_blocked: self == Env::UdpBlocked,
            ..NatConfig::new(public, mapping, filtering)
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
    /// One side moves to another network during the call.
    pub roam: Option<Roam>,
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
            roam: None,
            run_after_connect_ms: 500,
            limit_ms: 15_000,
        }
    }
}

/// A side moving to another network in the middle of a call (a laptop
/// from Wi-Fi to a phone's hotspot): a new internal address behind a new
/// NAT (or a public one), the old address gone.
#[derive(Debug, Clone, Copy)]
pub struct Roam {
    /// 0: the caller A (controlling), 1: the callee B.
    pub side: usize,
    /// When, in ms after the call starts.
    pub at_ms: u64,
    /// The environment it moves to.
    pub to: Env,
    /// The node notices the change this long after the move and calls
    /// [`IceAgent::network_changed`], asks a supernode for its new
    /// address and sends the peer its new candidates through the
    /// signalling channel ([`IceAgent::update_remote`] on the other side,
    /// `signalling_ms` later); `None`: it never does.
    pub notice_ms: Option<u64>,
}

/// How a run ended, seen from each side (index 0: the caller A).
#[derive(Debug, Clone, Default)]
pub struct PairOutcome {
    /// First path each side selected, and when (ms since its start).
    pub connected: [Option<(Path, u64)>; 2],
    /// Path each side ended on.
    pub final_path: [Option<Path>; 2],
    pub path_changes: [Vec<(Millis, Path)>; 2],
    pub failed: [Option<String>; 2],
    /// Connectivity checks and responses each side sent.
    pub checks_sent: [u64; 2],
    pub predicted: [u64; 2],
    /// Application datagrams sent and the sequence numbers received.
    pub app_sent: [u64; 2],
    pub app_received: [Vec<u64>; 2],
    /// When each of those arrived (simulated ms since the network began).
    pub app_received_at: [Vec<Millis>; 2],
    /// When the roam happened, on the same clock.
    pub roamed_at: Option<Millis>,
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
    idx: usize,
    agent: Option<IceAgent>,
    srflx: Vec<SocketAddr>,
    relayed: Option<SocketAddr>,
    tcp_to_relay: bool,
    app_seq: u64,
}

/// Socket owners on the network: sides 0 and 1 own their host's socket.
const RELAY: usize = 10;
const SUPERNODE: usize = 11;

/// The network with the relay and supernodes of one run.
struct World {
    net: Network,
    /// For the agents and the hosts' sequential ports.
    rng: StdRng,
    relay: Relay,
    supernodes: Vec<SocketAddr>,
    /// Host sockets by side (their address behind any NAT).
    hosts: [SocketAddr; 2],
    /// Drops direct UDP between the two sides' public IPs.
    blocked: Option<RuleId>,
}

impl World {
    fn new(opts: &SimOptions) -> Self {
        let link = LinkModel::new(opts.delay_ms, opts.jitter_ms, opts.loss.clamp(0.0, 1.0));
        let mut w = World {
            net: Network::new(opts.seed ^ 0x6e65_7477_6f72_6b00, Millis::ZERO, link),
            rng: StdRng::seed_from_u64(opts.seed),
            relay: Relay {
                addr: SocketAddr::from(([192, 0, 2, 1], 3478)),
                next_port: 49152,
                allocations: HashMap::new(),
                by_port: HashMap::new(),
                forwarded: 0,
            },
            supernodes: vec![
                SocketAddr::from(([192, 0, 2, 10], 7710)),
                SocketAddr::from(([192, 0, 2, 11], 7710)),
            ],
            hosts: [SocketAddr::from(([0, 0, 0, 0], 0)); 2],
            blocked: None,
        };
        w.net.bind(w.relay.addr, RELAY);
        for sn in w.supernodes.clone() {
            w.net.bind(sn, SUPERNODE);
        }
        w
    }

    /// Side `side`'s host in environment `env`: 10.n.0.2 behind NAT
    /// 203.0.113.n, or public at 198.51.100.n (n = side + 1).
    fn add_host(&mut self, side: usize, env: Env) {
        let n = side as u8 + 1;
        let start = 20_000 + self.rng.gen_range(0..10_000u16);
        let public = IpAddr::V4(Ipv4Addr::new(203, 0, 113, n));
        let internal = match env.nat_config(public, start) {
            Some(cfg) => {
                let id = self.net.add_nat(cfg);
                let internal = SocketAddr::from(([10, n, 0, 2], 5000));
                self.net.place_behind(internal.ip(), id);
                internal
            }
            None => SocketAddr::from(([198, 51, 100, n], 5000)),
        };
        self.net.bind(internal, side);
        self.hosts[side] = internal;
    }

    /// Side `side` leaves its network for `env`: its socket is now
    /// 10.(n+20).0.2:5000 behind a new NAT at 203.0.113.(n+20), or public
    /// at 198.51.100.(n+20); nothing reaches the old address any more.
    fn move_host(&mut self, side: usize, env: Env) {
        let n = side as u8 + 21;
        let start = 20_000 + self.rng.gen_range(0..10_000u16);
        let public = IpAddr::V4(Ipv4Addr::new(203, 0, 113, n));
        let internal = match env.nat_config(public, start) {
            Some(cfg) => {
                let id = self.net.add_nat(cfg);
                let internal = SocketAddr::from(([10, n, 0, 2], 5000));
                self.net.place_behind(internal.ip(), id);
                internal
            }
            None => SocketAddr::from(([198, 51, 100, n], 5000)),
        };
        self.net.unbind(self.hosts[side]);
        self.net.bind(internal, side);
        self.hosts[side] = internal;
    }

    fn public_ip(&self, side: usize) -> IpAddr {
        let h = self.hosts[side];
        match self.net.nat_of(h.ip()) {
            Some(n) => self.net.nat(n).public_ip(),
            None => h.ip(),
        }
    }

    fn block_direct(&mut self, on: bool) {
        match (on, self.blocked) {
            (true, None) => {
                let rule = DropRule::UdpBetween(self.public_ip(0), self.public_ip(1));
                self.blocked = Some(self.net.add_rule(rule));
            }
            (false, Some(r)) => {
                self.net.remove_rule(r);
                self.blocked = None;
            }
            _ => {}
        }
    }

    /// A host sends a datagram from its socket.
    fn send_from_host(&mut self, side: usize, dst: SocketAddr, bytes: Vec<u8>, tcp: bool) {
        let t = if tcp { Transport::Tcp } else { Transport::Udp };
        self.net
            .send_as(Some(side), t, self.hosts[side], dst, bytes);
    }

    fn relay_packet(&mut self, src: SocketAddr, dst: SocketAddr, t: Transport, bytes: &[u8]) {
        let tcp = t == Transport::Tcp;
        if dst == self.relay.addr {
            match bytes.first() {
                Some(&R_ALLOCATE) => {
                    let port = match self.relay.allocations.get(&src) {
                        Some((port, _, _)) => *port,
                        None => {
                            let port = self.relay.next_port;
                            self.relay.next_port += 1;
                            self.relay
                                .allocations
                                .insert(src, (port, HashSet::new(), tcp));
                            self.relay.by_port.insert(port, src);
                            self.net
                                .bind(SocketAddr::new(self.relay.addr.ip(), port), RELAY);
                            port
                        }
                    };
                    let mut v = vec![R_ALLOCATED];
                    put_addr(&mut v, SocketAddr::new(self.relay.addr.ip(), port));
                    self.net.send_as(Some(RELAY), t, self.relay.addr, src, v);
                }
                Some(&R_SEND) => {
                    let Some(peer) = get_addr(&bytes[1..]) else {
                        return;
                    };
                    let Some((port, perms, _)) = self.relay.allocations.get_mut(&src) else {
                        return;
                    };
                    perms.insert(peer.ip());
                    let from = SocketAddr::new(self.relay.addr.ip(), *port);
                    self.relay.forwarded += 1;
                    let payload = bytes[7..].to_vec();
                    self.net
                        .send_as(Some(RELAY), Transport::Udp, from, peer, payload);
                }
                _ => {}
            }
            return;
        }
        // To a relayed address: Data to the client if permitted.
        let Some(client) = self.relay.by_port.get(&dst.port()).copied() else {
            return;
        };
        let Some((_, perms, tcp)) = self.relay.allocations.get(&client) else {
            return;
        };
        if !perms.contains(&src.ip()) {
            return;
        }
        let t = if *tcp { Transport::Tcp } else { Transport::Udp };
        let mut v = vec![R_DATA];
        put_addr(&mut v, src);
        v.extend_from_slice(bytes);
        self.relay.forwarded += 1;
        self.net.send_as(Some(RELAY), t, self.relay.addr, client, v);
    }
}

fn deliver_to_side(
    w: &mut World,
    side: &mut Side,
    idx: usize,
    src: SocketAddr,
    bytes: Vec<u8>,
    out: &mut PairOutcome,
) {
    let now = w.net.now();
    let (via, from, bytes) = if src == w.relay.addr {
        match bytes.first() {
            Some(&R_ALLOCATED) => {
                side.relayed = get_addr(&bytes[1..]);
                return;
            }
            Some(&R_DATA) => match get_addr(&bytes[1..]) {
                Some(from) => (Via::Relay(w.relay.addr), from, bytes[7..].to_vec()),
                None => return,
            },
            _ => return,
        }
    } else if w.supernodes.contains(&src) {
        if let Some(a) = get_addr(bytes.get(1..).unwrap_or(&[])) {
            side.srflx.push(a);
        }
        return;
    } else {
        (Via::Direct, src, bytes)
    };
    if bytes.first() == Some(&APP) && bytes.len() >= 9 {
        let mut s = [0u8; 8];
        s.copy_from_slice(&bytes[1..9]);
        out.app_received[idx].push(u64::from_be_bytes(s));
        out.app_received_at[idx].push(now);
        return;
    }
    if let Some(agent) = side.agent.as_mut() {
        agent.handle_stun(now, via, from, &bytes, &mut w.rng);
    }
}

fn flush_side(w: &mut World, side: &mut Side) {
    let Some(agent) = side.agent.as_mut() else {
        return;
    };
    let mut out = Vec::new();
    while let Some(t) = agent.poll_transmit() {
        out.push(t);
    }
    for t in out {
        send_via(w, side, t.via, t.dst, t.bytes);
    }
}

fn send_via(w: &mut World, side: &Side, via: Via, dst: SocketAddr, bytes: Vec<u8>) {
    match via {
        Via::Direct => w.send_from_host(side.idx, dst, bytes, false),
        Via::Relay(server) => {
            let mut v = vec![R_SEND];
            put_addr(&mut v, dst);
            v.extend_from_slice(&bytes);
            w.send_from_host(side.idx, server, v, side.tcp_to_relay);
        }
    }
}

/// Run A (`a`, caller, controlling) connecting to B (`b`).
pub fn run_pair(a: Env, b: Env, opts: SimOptions) -> PairOutcome {
    let mut w = World::new(&opts);
    w.add_host(0, a);
    w.add_host(1, b);
    let mut sides = [
        Side {
            idx: 0,
            agent: None,
            srflx: Vec::new(),
            relayed: None,
            tcp_to_relay: a == Env::UdpBlocked,
            app_seq: 0,
        },
        Side {
            idx: 1,
            agent: None,
            srflx: Vec::new(),
            relayed: None,
            tcp_to_relay: b == Env::UdpBlocked,
            app_seq: 0,
        },
    ];
    if opts.block_direct_until.is_some() {
        w.block_direct(true);
    }
    let mut out = PairOutcome::default();
    // Login: both sides attach to two supernodes (server-reflexive
    // addresses) and allocate on the relay, before the call.
    for s in &sides {
        for sn in w.supernodes.clone() {
            w.send_from_host(s.idx, sn, vec![WHO], false);
        }
        let relay = w.relay.addr;
        w.send_from_host(s.idx, relay, vec![R_ALLOCATE], s.tcp_to_relay);
    }
    let call_at = Millis(1_000);
    let mut offer_to_b: Option<(Millis, IceOffer)> = None;
    let mut answer_to_a: Option<(Millis, IceOffer)> = None;
    let mut connected_at: Option<Millis> = None;
    let mut next_app = opts.app_interval_ms.map(|_| call_at);
    let mut noticed = false;
    // The mover asked a supernode for its new address; its new candidates
    // on their way to the other side.
    let mut readvertise = false;
    let mut update: Option<(Millis, usize, IceOffer)> = None;
    let limit = call_at + opts.limit_ms;
    loop {
        // Next thing to happen.
        let mut t = Millis::MAX;
        if let Some(at) = w.net.next_due() {
            t = t.min(at);
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
            && w.blocked.is_some()
        {
            t = t.min(call_at + u);
        }
        if let Some(f) = opts.block_direct_from
            && w.blocked.is_none()
            && w.net.now() < call_at + f
        {
            t = t.min(call_at + f);
        }
        if let Some(n) = next_app {
            t = t.min(n);
        }
        if let Some((at, _, _)) = &update {
            t = t.min(*at);
        }
        if let Some(r) = opts.roam {
            if out.roamed_at.is_none() {
                t = t.min(call_at + r.at_ms);
            } else if let Some(ms) = r.notice_ms
                && !noticed
            {
                t = t.min(call_at + r.at_ms + ms);
            }
        }
        let stop = connected_at.map_or(limit, |c| (c + opts.run_after_connect_ms).min(limit));
        if t > stop {
            break;
        }
        w.net.advance_to(t);
        let now = w.net.now();
        if let Some(u) = opts.block_direct_until
            && now >= call_at + u
        {
            w.block_direct(false);
        }
        if let Some(f) = opts.block_direct_from
            && now >= call_at + f
        {
            w.block_direct(true);
        }
        if let Some(r) = opts.roam {
            if out.roamed_at.is_none() && now >= call_at + r.at_ms {
                w.move_host(r.side, r.to);
                out.roamed_at = Some(now);
            }
            if let Some(ms) = r.notice_ms
                && !noticed
                && now >= call_at + r.at_ms + ms
            {
                noticed = true;
                if let Some(a) = sides[r.side].agent.as_mut() {
                    a.network_changed(now, &mut w.rng);
                }
                sides[r.side].srflx.clear();
                readvertise = true;
                let sn = w.supernodes[0];
                w.send_from_host(r.side, sn, vec![WHO], false);
            }
        }
        if let Some((at, to, offer)) = update.take() {
            if now >= at {
                if let Some(a) = sides[to].agent.as_mut() {
                    a.update_remote(now, &offer);
                }
            } else {
                update = Some((at, to, offer));
            }
        }
        // The call starts: A gathers and offers.
        if sides[0].agent.is_none() && now >= call_at {
            let agent = make_agent(&mut w, &sides[0], IceRole::Controlling, now, &opts);
            offer_to_b = Some((now + opts.signalling_ms, agent.local_offer()));
            sides[0].agent = Some(agent);
        }
        if let Some((at, offer)) = offer_to_b.take() {
            if now >= at {
                let mut agent = make_agent(&mut w, &sides[1], IceRole::Controlled, now, &opts);
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
        while let Some(d) = w.net.poll_delivery() {
            match d.to_owner {
                RELAY => w.relay_packet(d.from, d.to, d.transport, &d.bytes),
                SUPERNODE => {
                    let mut v = vec![WHO];
                    put_addr(&mut v, d.from);
                    w.net
                        .send_as(Some(SUPERNODE), Transport::Udp, d.to, d.from, v);
                }
                i @ (0 | 1) => deliver_to_side(&mut w, &mut sides[i], i, d.from, d.bytes, &mut out),
                _ => {}
            }
        }
        // The mover's new address is known: its new candidates go out.
        if readvertise
            && let Some(r) = opts.roam
            && let Some(&mapped) = sides[r.side].srflx.first()
        {
            readvertise = false;
            let locals = [
                Candidate::new(CandidateKind::Host, w.hosts[r.side], 65535),
                Candidate::new(CandidateKind::ServerReflexive, mapped, 65535),
            ];
            if let Some(a) = sides[r.side].agent.as_mut() {
                a.set_local_addresses(&locals);
                update = Some((now + opts.signalling_ms, 1 - r.side, a.local_offer()));
            }
        }
        // Timers, then events and transmits.
        for (i, side) in sides.iter_mut().enumerate() {
            if let Some(agent) = side.agent.as_mut() {
                if agent.poll_timeout().is_some_and(|d| d <= now) {
                    agent.handle_timeout(now, &mut w.rng);
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
            flush_side(&mut w, side);
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
                    send_via(&mut w, side, path.via, path.remote, v);
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
    out.relay_forwarded = w.relay.forwarded;
    out
}

fn make_agent(
    w: &mut World,
    side: &Side,
    role: IceRole,
    now: Millis,
    opts: &SimOptions,
) -> IceAgent {
    let mut locals = vec![Candidate::new(
        CandidateKind::Host,
        w.hosts[side.idx],
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
        .map(|r| (w.relay.addr, r))
        .into_iter()
        .collect();
    // What the node knows without a NAT test: UDP blocked when no
    // supernode answered, destination-dependent when they saw different
    // ports.
    let mapping = if side.srflx.is_empty() {
        MappingHint::Blocked
    } else if side.srflx.windows(2).any(|p| p[0] != p[1]) {
        MappingHint::DestinationDependent
    } else {
        MappingHint::EndpointIndependent
    };
    let session = w.rng.r#gen();
    // The relay is not one of the observing supernodes: allocating on it
    // opened one more mapping.
    let mut cfg = opts.ice.clone();
    cfg.prior_mappings = 1;
    IceAgent::new(
        cfg, role, session, now, locals, &relays, mapping, &mut w.rng,
    )
}
