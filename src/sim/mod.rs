//! Deterministic simulation for the sans-IO cores and their tests. One
//! simulated datagram network ([`net::Network`], with the RFC 4787 NAT
//! model of [`nat`]) carries every simulation: the overlay here, NAT
//! detection ([`detect`]), ICE pairs ([`ice`]), and the link and relay
//! core tests.
//!
//! This module runs the overlay on it: the same [`SupernodeCore`] and
//! [`ClientCore`] that run on real sockets run here by the thousand, in
//! virtual time with seeded randomness; messages arrive with the sender's
//! certificate, as the encrypted link layer would deliver them.

pub mod detect;
pub mod ice;
pub mod nat;
pub mod net;

pub use net::LinkModel;

use crate::identity::{AuthorityKey, Certificate, DeviceIdentity, Role, Username};
use crate::overlay::{
    ClientConfig, ClientCore, ClientEvent, SupernodeConfig, SupernodeCore, SupernodeEvent,
};
use crate::time::{Millis, UnixMillis};
use net::{Delivered, Network, Transport};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

pub enum Node {
    Supernode(Box<SupernodeCore>),
    Client(Box<ClientCore>),
}

impl Node {
    fn poll_timeout(&self) -> Option<Millis> {
        match self {
            Node::Supernode(s) => s.poll_timeout(),
            Node::Client(c) => c.poll_timeout(),
        }
    }
}

/// Something a node reported, with when and which node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    Supernode(SupernodeEvent),
    Client(ClientEvent),
}

struct Slot {
    node: Node,
    cert: Arc<Certificate>,
    addr: SocketAddr,
    alive: bool,
    /// When the node is next woken, if it is queued.
    wake_at: Option<Millis>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SimStats {
    pub delivered: u64,
    pub lost: u64,
    pub to_dead: u64,
    pub unroutable: u64,
    pub bytes: u64,
    pub events_processed: u64,
}

pub struct Sim {
    /// Virtual time, the nodes' timeline (it starts at [`EPOCH_MS`]).
    pub now: Millis,
    /// Randomness handed to the cores (the network has its own).
    pub rng: StdRng,
    /// Messages in flight; each node's address is bound to its index.
    pub net: Network,
    /// Nodes to wake by due time, in the order they were queued. With a
    /// million nodes, buckets are far cheaper than a binary heap.
    wakes: BTreeMap<Millis, Vec<u32>>,
    nodes: Vec<Slot>,
    events: Vec<(Millis, usize, NodeEvent)>,
    pub keep_events: bool,
    /// With `keep_events`, keep supernodes' events too. Off where only
    /// clients' answers matter: after a mass failure every survivor
    /// reports every dead member, 24 million events at 10,000 supernodes.
    pub keep_supernode_events: bool,
    stats: SimStats,
}

/// Virtual time starts here (ms since the epoch, in 2027), so certificate
/// windows behave as on a real clock.
pub const EPOCH_MS: u64 = 1_800_000_000_000;

impl Sim {
    /// The simulation's wall clock: it reads [`EPOCH_MS`] when the
    /// virtual clock starts and runs with it (records and envelopes are
    /// dated and judged by it).
    pub fn unix(&self) -> UnixMillis {
        Self::unix_at(self.now)
    }

    /// The simulation's wall clock when virtual time read `t`.
    pub fn unix_at(t: Millis) -> UnixMillis {
        UnixMillis(EPOCH_MS) + t.since(Millis(EPOCH_MS))
    }

    pub fn new(seed: u64, link: LinkModel) -> Self {
        Sim {
            now: Millis(EPOCH_MS),
            rng: StdRng::seed_from_u64(seed),
            net: Network::new(seed ^ 0x6e65_7477_6f72_6b00, Millis(EPOCH_MS), link),
            wakes: BTreeMap::new(),
            nodes: Vec::new(),
            events: Vec::new(),
            keep_events: true,
            keep_supernode_events: true,
            stats: SimStats::default(),
        }
    }

    pub fn add(&mut self, node: Node, cert: Arc<Certificate>, addr: SocketAddr) -> usize {
        let i = self.nodes.len();
        self.nodes.push(Slot {
            node,
            cert,
            addr,
            alive: true,
            wake_at: None,
        });
        self.net.bind(addr, i);
        self.schedule_wake(i, self.now);
        i
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i].node
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i].node
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr
    }

    pub fn index_of(&self, addr: &SocketAddr) -> Option<usize> {
        self.net.owner_of(*addr)
    }

    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].alive
    }

    /// Crash a node: it sends nothing more and everything sent to it is lost.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
    }

    /// Stop supernode `i` cleanly (SIGTERM): it tells the overlay and its
    /// clients that it is leaving, then stops like [`Sim::kill`].
    pub fn leave(&mut self, i: usize) {
        if let Node::Supernode(s) = &mut self.nodes[i].node {
            s.leave(&mut self.rng);
        }
        self.flush(i);
        self.kill(i);
    }

    /// Start a new node in slot `i`, at the same address (a restarted
    /// process), and bring it up.
    pub fn replace(&mut self, i: usize, node: Node) {
        self.nodes[i].node = node;
        self.nodes[i].alive = true;
        self.nodes[i].wake_at = None;
        self.schedule_wake(i, self.now);
    }

    pub fn supernode(&self, i: usize) -> Option<&SupernodeCore> {
        match &self.nodes[i].node {
            Node::Supernode(s) => Some(s),
            _ => None,
        }
    }

    pub fn client(&self, i: usize) -> Option<&ClientCore> {
        match &self.nodes[i].node {
            Node::Client(c) => Some(c),
            _ => None,
        }
    }

    pub fn client_mut(&mut self, i: usize) -> Option<&mut ClientCore> {
        match &mut self.nodes[i].node {
            Node::Client(c) => Some(c),
            _ => None,
        }
    }

    pub fn take_events(&mut self) -> Vec<(Millis, usize, NodeEvent)> {
        std::mem::take(&mut self.events)
    }

    /// Counters: the network's and the simulator's.
    pub fn stats(&self) -> SimStats {
        let n = self.net.stats();
        SimStats {
            delivered: n.delivered - self.stats.to_dead,
            lost: n.lost,
            unroutable: n.unbound,
            bytes: n.bytes,
            ..self.stats.clone()
        }
    }

    fn schedule_wake(&mut self, i: usize, at: Millis) {
        let at = at.max(self.now);
        if (self.nodes[i].wake_at).is_none_or(|w| at < w || w < self.now) {
            self.nodes[i].wake_at = Some(at);
            self.wakes.entry(at).or_default().push(i as u32);
        }
    }

    /// Call after touching a node from outside (e.g. a client lookup).
    pub fn touched(&mut self, i: usize) {
        self.flush(i);
    }

    /// Move a node's output into the network and re-arm its timer.
    fn flush(&mut self, i: usize) {
        let out: Vec<crate::overlay::Transmit> = match &mut self.nodes[i].node {
            Node::Supernode(s) => s.drain_transmits().collect(),
            Node::Client(c) => c.drain_transmits().collect(),
        };
        let from = self.nodes[i].addr;
        self.net.advance_to(self.now);
        for t in out {
            self.net
                .send_as(Some(i), Transport::Udp, from, t.dst, t.bytes);
        }
        if self.keep_events {
            loop {
                let e = match &mut self.nodes[i].node {
                    Node::Supernode(s) => s.poll_event().map(NodeEvent::Supernode),
                    Node::Client(c) => c.poll_event().map(NodeEvent::Client),
                };
                let Some(e) = e else { break };
                if self.keep_supernode_events || matches!(e, NodeEvent::Client(_)) {
                    self.events.push((self.now, i, e));
                }
            }
        } else {
            match &mut self.nodes[i].node {
                Node::Supernode(s) => while s.poll_event().is_some() {},
                Node::Client(c) => while c.poll_event().is_some() {},
            }
        }
        if let Some(t) = self.nodes[i].node.poll_timeout() {
            self.schedule_wake(i, t);
        }
    }

    /// Run until virtual time `until` (ms since the epoch). At each
    /// instant, messages due are delivered before nodes due are woken.
    pub fn run_until(&mut self, until: Millis) {
        loop {
            let next_wake = self.wakes.first_key_value().map(|(at, _)| *at);
            let at = match (self.net.next_due(), next_wake) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if at > until {
                break;
            }
            self.now = at;
            self.net.advance_to(at);
            while let Some(d) = self.net.poll_delivery() {
                self.deliver(d);
            }
            // Wakes queued for `at` while these run land in a new bucket
            // for `at`, taken next.
            if let Some(first) = self.wakes.first_entry()
                && *first.key() <= at
            {
                for node in first.remove() {
                    self.wake(node as usize, at);
                }
            }
        }
        self.now = self.now.max(until);
        self.net.advance_to(self.now);
    }

    fn wake(&mut self, node: usize, at: Millis) {
        self.stats.events_processed += 1;
        if !self.nodes[node].alive || self.nodes[node].wake_at != Some(at) {
            return;
        }
        self.nodes[node].wake_at = None;
        let (now, unix) = (self.now, self.unix());
        let Sim { nodes, rng, .. } = self;
        match &mut nodes[node].node {
            Node::Supernode(s) => s.handle_timeout(now, unix, rng),
            Node::Client(c) => c.handle_timeout(now, unix, rng),
        }
        self.flush(node);
    }

    fn deliver(&mut self, d: Delivered) {
        self.stats.events_processed += 1;
        let to = d.to_owner;
        if !self.nodes[to].alive {
            self.stats.to_dead += 1;
            return;
        }
        let Some(from) = d.from_owner else {
            return;
        };
        let (now, unix) = (self.now, self.unix());
        let cert = self.nodes[from].cert.clone();
        let Sim { nodes, rng, .. } = self;
        match &mut nodes[to].node {
            Node::Supernode(s) => s.handle_message(now, unix, d.from, &cert, &d.bytes, rng),
            Node::Client(c) => c.handle_message(now, unix, d.from, &d.bytes),
        }
        self.flush(to);
    }

    pub fn run_for(&mut self, ms: u64) {
        let until = self.now + ms;
        self.run_until(until);
    }
}

/// The nodes of a built overlay.
pub struct Overlay {
    pub sim: Sim,
    pub authority: AuthorityKey,
    pub supernodes: Vec<usize>,
    pub clients: Vec<usize>,
    /// Lookups issued at once by the full check of [`Overlay::blackout`].
    pub full_check_batch: usize,
}

/// How to build a simulated overlay.
#[derive(Debug, Clone)]
pub struct OverlaySpec {
    pub seed: u64,
    pub supernodes: usize,
    pub clients: usize,
    pub link: LinkModel,
    pub supernode: SupernodeConfig,
    pub client: ClientConfig,
    /// Start supernodes with full membership instead of joining one by one.
    pub converged: bool,
    /// Supernodes join over this long; clients start over this long after.
    pub join_spread_ms: u64,
    pub client_spread_ms: u64,
    /// Supernodes each client knows at start.
    pub client_bootstrap: usize,
}

impl Default for OverlaySpec {
    fn default() -> Self {
        OverlaySpec {
            seed: 1,
            supernodes: 10,
            clients: 100,
            link: LinkModel::default(),
            supernode: SupernodeConfig::default(),
            client: ClientConfig::default(),
            converged: false,
            join_spread_ms: 5_000,
            client_spread_ms: 10_000,
            client_bootstrap: 8,
        }
    }
}

pub fn sn_addr(i: usize) -> SocketAddr {
    let i = i as u32;
    SocketAddr::from((Ipv4Addr::from(0x0a00_0000 | (i & 0x00ff_ffff)), 7000))
}

pub fn client_addr(i: usize) -> SocketAddr {
    let i = i as u32;
    SocketAddr::from((Ipv4Addr::from(0x6400_0000 | (i & 0x00ff_ffff)), 5000))
}

impl Overlay {
    /// Build and start the overlay (nothing has run yet).
    pub fn build(spec: &OverlaySpec) -> Self {
        let mut sim = Sim::new(spec.seed, spec.link);
        let mut keyrng = StdRng::seed_from_u64(spec.seed ^ 0x5eed);
        let authority = AuthorityKey::generate(&mut keyrng);
        let now_s = sim.unix().secs().get();
        let issue = |rng: &mut StdRng, name: &str, role: Role| {
            let d = DeviceIdentity::generate(rng);
            let user = Username::parse(name).expect("generated names are valid");
            let c = Certificate::issue(
                &authority,
                rng.r#gen(),
                role,
                now_s - 60,
                now_s + 7 * 86400,
                &user,
                d.ed25519_public(),
                d.x25519_public(),
            );
            (d, Arc::new(c))
        };
        let mut supernodes = Vec::with_capacity(spec.supernodes);
        let mut sn_ids = Vec::with_capacity(spec.supernodes);
        let t0 = sim.now;
        for i in 0..spec.supernodes {
            let (_, cert) = issue(&mut keyrng, &format!("sn{i}"), Role::Supernode);
            let bootstrap: Vec<SocketAddr> = if spec.converged || i == 0 {
                Vec::new()
            } else {
                (0..3).map(|_| sn_addr(keyrng.gen_range(0..i))).collect()
            };
            let start = if spec.converged {
                t0
            } else {
                t0 + (i as u64 * spec.join_spread_ms) / spec.supernodes as u64
            };
            let core = SupernodeCore::new(
                authority.public(),
                &cert,
                sn_addr(i),
                bootstrap,
                spec.supernode.clone(),
                1,
                start,
            );
            sn_ids.push(core.me);
            let idx = sim.add(Node::Supernode(Box::new(core)), cert, sn_addr(i));
            sim.nodes[idx].wake_at = None;
            sim.schedule_wake(idx, start);
            supernodes.push(idx);
        }
        if spec.converged {
            for (k, &idx) in supernodes.iter().enumerate() {
                if let Node::Supernode(s) = &mut sim.nodes[idx].node {
                    let others = sn_ids
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != k)
                        .map(|(j, id)| (*id, sn_addr(j)));
                    s.seed_members(t0, others);
                }
            }
        }
        let client_start = t0
            + if spec.converged {
                0
            } else {
                spec.join_spread_ms + 2_000
            };
        let mut clients = Vec::with_capacity(spec.clients);
        for i in 0..spec.clients {
            let (d, cert) = issue(&mut keyrng, &format!("user{i}"), Role::User);
            let hc: Vec<SocketAddr> = (0..spec.client_bootstrap.min(spec.supernodes))
                .map(|_| sn_addr(keyrng.gen_range(0..spec.supernodes)))
                .collect();
            let start = client_start
                + if spec.clients > 0 {
                    (i as u64 * spec.client_spread_ms) / spec.clients as u64
                } else {
                    0
                };
            let core = ClientCore::new(
                d,
                cert.clone(),
                authority.public(),
                hc,
                spec.client.clone(),
                start,
            );
            let idx = sim.add(Node::Client(Box::new(core)), cert, client_addr(i));
            sim.nodes[idx].wake_at = None;
            sim.schedule_wake(idx, start);
            clients.push(idx);
        }
        Overlay {
            sim,
            authority,
            supernodes,
            clients,
            full_check_batch: 50_000,
        }
    }

    pub fn username(i: usize) -> String {
        format!("user{i}")
    }

    /// Start one more device of user `name` (a new device key and its own
    /// certificate from the authority, as `natter login` on another
    /// machine), attaching through `host_cache`; returns its node index
    /// (not in [`Overlay::clients`]).
    pub fn add_device(&mut self, name: &str, host_cache: Vec<SocketAddr>, seed: u64) -> usize {
        let mut rng = StdRng::seed_from_u64(seed);
        let now_s = self.sim.unix().secs().get();
        let d = DeviceIdentity::generate(&mut rng);
        let user = Username::parse(name).expect("a valid username");
        let cert = Arc::new(Certificate::issue(
            &self.authority,
            rng.r#gen(),
            Role::User,
            now_s - 60,
            now_s + 7 * 86400,
            &user,
            d.ed25519_public(),
            d.x25519_public(),
        ));
        let core = ClientCore::new(
            d,
            cert.clone(),
            self.authority.public(),
            host_cache,
            ClientConfig::default(),
            self.sim.now,
        );
        let addr = client_addr(0x80_0000 + self.sim.len());
        self.sim.add(Node::Client(Box::new(core)), cert, addr)
    }
}

/// Result of a batch of lookups.
#[derive(Debug, Default, Clone)]
pub struct LookupReport {
    pub asked: usize,
    pub online: usize,
    pub offline: usize,
    pub not_found: usize,
    pub failed: usize,
    /// Lookups whose record named no live supernode of the user.
    pub unreachable: usize,
    /// Answers whose record is older than the user's current one by more
    /// than the caches allow.
    pub stale: usize,
    pub latencies_ms: Vec<u64>,
    pub missing: Vec<String>,
    pub unreachable_users: Vec<String>,
}

impl LookupReport {
    /// Add another batch's results to these.
    pub fn absorb(&mut self, r: LookupReport) {
        self.asked += r.asked;
        self.online += r.online;
        self.offline += r.offline;
        self.not_found += r.not_found;
        self.failed += r.failed;
        self.unreachable += r.unreachable;
        self.stale += r.stale;
        self.latencies_ms.extend(r.latencies_ms);
        self.missing.extend(r.missing);
        self.unreachable_users.extend(r.unreachable_users);
    }
}

/// Lookups in flight: started by [`Overlay::start_lookups`], fed by
/// [`Overlay::collect_lookups`] while the simulation runs and closed by
/// [`PendingLookups::finish`].
#[derive(Debug)]
pub struct PendingLookups {
    /// (asker node, query id) -> (target client, its published seq, asked at).
    want: HashMap<(usize, u32), (usize, u64, Millis)>,
    deadline: Millis,
    cache_ms: u64,
    rep: LookupReport,
}

impl PendingLookups {
    /// True when every lookup has been answered.
    pub fn done(&self) -> bool {
        self.want.is_empty()
    }

    /// The report; lookups still unanswered count as failed.
    pub fn finish(self) -> LookupReport {
        let mut rep = self.rep;
        rep.failed += self.want.len();
        for (t, _, _) in self.want.values() {
            rep.missing
                .push(format!("{} (no answer)", Overlay::username(*t)));
        }
        rep
    }
}

impl Overlay {
    /// Each `(asker, target)` client pair looks up the target; runs the
    /// simulation until every answer is in (or `timeout_ms`).
    pub fn lookups(
        &mut self,
        pairs: &[(usize, usize)],
        timeout_ms: u64,
        cache_ms: u64,
    ) -> LookupReport {
        let mut p = self.start_lookups(pairs, timeout_ms, cache_ms);
        while !p.done() && self.sim.now < p.deadline {
            self.sim.run_for(50.min(p.deadline - self.sim.now));
            self.collect_lookups(&mut p);
        }
        p.finish()
    }

    /// Ask the lookups now without running the simulation. Answers count
    /// if they arrive within `timeout_ms`; events queued before are dropped.
    pub fn start_lookups(
        &mut self,
        pairs: &[(usize, usize)],
        timeout_ms: u64,
        cache_ms: u64,
    ) -> PendingLookups {
        let mut want: HashMap<(usize, u32), (usize, u64, Millis)> = HashMap::new();
        self.sim.take_events();
        for &(a, t) in pairs {
            let ai = self.clients[a];
            let ti = self.clients[t];
            let target_seq = self.sim.client(ti).map_or(0, |c| c.content_seq());
            let name = Self::username(t);
            let now = self.sim.now;
            let Some(c) = self.sim.client_mut(ai) else {
                continue;
            };
            let qid = c.lookup(now, &name);
            want.insert((ai, qid), (t, target_seq, now));
            self.sim.touched(ai);
        }
        PendingLookups {
            want,
            deadline: self.sim.now + timeout_ms,
            cache_ms,
            rep: LookupReport {
                asked: pairs.len(),
                ..Default::default()
            },
        }
    }

    /// Take the lookup answers the simulation produced since the last call.
    pub fn collect_lookups(&mut self, p: &mut PendingLookups) {
        let cache_ms = p.cache_ms;
        let rep = &mut p.rep;
        for (at, node, e) in self.sim.take_events() {
            let NodeEvent::Client(ClientEvent::Lookup { qid, outcome, .. }) = e else {
                continue;
            };
            if at > p.deadline {
                continue;
            }
            let Some((t, target_seq, asked_at)) = p.want.remove(&(node, qid)) else {
                continue;
            };
            rep.latencies_ms.push(at - asked_at);
            let record = match &outcome {
                crate::overlay::LookupOutcome::Online(r) => {
                    rep.online += 1;
                    Some(r)
                }
                crate::overlay::LookupOutcome::Offline { record, .. } => {
                    rep.offline += 1;
                    Some(record)
                }
                crate::overlay::LookupOutcome::NotFound => {
                    rep.not_found += 1;
                    rep.missing.push(Self::username(t));
                    None
                }
                crate::overlay::LookupOutcome::Failed(_) => {
                    rep.failed += 1;
                    rep.missing.push(Self::username(t));
                    None
                }
            };
            if let Some(r) = record {
                // Stale: older than a record the user had published
                // saying something new (seq = its signing time; refreshes
                // that only extend a record reach the owners later by
                // design) more than the cache lifetime plus a second of
                // propagation before the lookup.
                if r.seq < target_seq
                    && target_seq + cache_ms + 1_000 < Sim::unix_at(asked_at).get()
                {
                    rep.stale += 1;
                }
                if !r
                    .supernodes
                    .iter()
                    .any(|a| self.sim.index_of(a).is_some_and(|i| self.sim.is_alive(i)))
                {
                    rep.unreachable += 1;
                    rep.unreachable_users.push(Self::username(t));
                }
            }
        }
    }
}

/// p-th percentile (0-100) of `v`.
pub fn percentile(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p / 100.0).round() as usize;
    v[i]
}

/// What the supernode-loss scenario measured.
#[derive(Debug, Clone, Default)]
pub struct BlackoutReport {
    pub supernodes: usize,
    pub clients: usize,
    pub killed: usize,
    /// Fraction of a fixed sample of users found (with a live supernode in
    /// their record) at each second after the kill.
    pub found_by_second: Vec<(u64, f64)>,
    /// Seconds after the kill when the sample was first fully found.
    pub sample_recovered_after_s: Option<u64>,
    /// The full check of every user at `full_check_at_s` after the kill.
    pub full_check_at_s: u64,
    pub full: LookupReport,
    /// Simulated time the full check took, batches included: the last
    /// batch was asked this long before it ended.
    pub full_check_took_ms: u64,
    /// When the full check began, in ms after the kill (the sample
    /// lookups run within their second, so this is `full_check_at_s`).
    pub full_check_started_ms: u64,
    /// When its last batch was asked, in ms after the kill.
    pub full_check_last_batch_ms: u64,
    pub max_clients_seen: u64,
    pub max_clients_allowed: usize,
    pub forged_or_stale_answers: usize,
    /// (second, user, why) for sample lookups that did not succeed.
    pub sample_failures: Vec<(u64, String, &'static str)>,
    pub sim_stats: SimStats,
    /// Users whose primary and backup both died: how many, and the
    /// seconds after the kill by which each was attached again (p50, p99,
    /// max; `None` while some were not).
    pub lost_both: usize,
    /// Users whose primary and backup both died: ms after the kill until
    /// each was attached to a live supernode again and until it first
    /// published again (p50, p99, max; 100 ms resolution); those that
    /// never did within the check are left out and counted.
    pub reattach_ms: (u64, u64, u64),
    pub republish_ms: (u64, u64, u64),
    pub never_republished: usize,
    /// Users whose record lived only on killed supernodes and whose own
    /// supernodes all died too: only their republishing can bring it back.
    pub orphaned_records: usize,
    /// Their first republish after the kill (p50, p99, max ms).
    pub orphan_republish_ms: (u64, u64, u64),
    /// One line per user the full check missed: what happened to it.
    pub diagnostics: Vec<String>,
}

impl Overlay {
    /// Live clients attached to a supernode, usable as lookup askers.
    pub fn attached_clients(&self) -> Vec<usize> {
        (0..self.clients.len())
            .filter(|&k| {
                self.sim
                    .client(self.clients[k])
                    .is_some_and(|c| c.primary().is_some())
            })
            .collect()
    }

    /// Kill `fraction` of the supernodes at once after `warmup_ms`; then
    /// every second look up a sample of users, and at `full_check_s` look
    /// up every user.
    pub fn blackout(
        &mut self,
        warmup_ms: u64,
        fraction: f64,
        sample: usize,
        full_check_s: u64,
    ) -> BlackoutReport {
        self.sim.keep_events = true;
        // Only clients' lookup answers are read here.
        self.sim.keep_supernode_events = false;
        self.sim.run_for(warmup_ms);
        let n = self.supernodes.len();
        let kill = ((n as f64) * fraction).round() as usize;
        let mut order: Vec<usize> = self.supernodes.clone();
        use rand::seq::SliceRandom;
        order.shuffle(&mut self.sim.rng);
        for &s in &order[..kill] {
            self.sim.kill(s);
        }
        let kill_at = self.sim.now;
        // Published sequence numbers follow the wall clock.
        let kill_unix = self.sim.unix().get();
        // Who lost what, for the diagnostics: each user's supernodes and
        // the supernode ring (every member, dead or alive).
        let mut ring: Vec<(u64, usize)> = self
            .supernodes
            .iter()
            .filter_map(|&s| self.sim.supernode(s).map(|sn| (sn.me, s)))
            .collect();
        ring.sort_unstable();
        let lost_both: Vec<bool> = self
            .clients
            .iter()
            .map(|&c| {
                self.sim.client(c).is_some_and(|c| {
                    c.attached().count() > 0
                        && c.attached()
                            .all(|a| self.sim.index_of(&a).is_none_or(|i| !self.sim.is_alive(i)))
                })
            })
            .collect();
        // (re-attached, first published) in ms after the kill.
        let mut back: Vec<(Option<u64>, Option<u64>)> = vec![(None, None); self.clients.len()];
        let attempts0: Vec<(u64, u64)> = self
            .clients
            .iter()
            .map(|&c| {
                self.sim
                    .client(c)
                    .map_or((0, 0), |c| (c.stats.attach_attempts, c.stats.redirects))
            })
            .collect();
        let mut rep = BlackoutReport {
            supernodes: n,
            clients: self.clients.len(),
            killed: kill,
            full_check_at_s: full_check_s,
            ..Default::default()
        };
        let users = self.clients.len();
        let sample_users: Vec<usize> = (0..sample.min(users))
            .map(|_| self.sim.rng.gen_range(0..users))
            .collect();
        // Second `sec` runs from kill + sec - 1 s to kill + sec s. From the
        // second second on, the sample is asked at its start and must be
        // answered within 950 ms, while the clock runs, so that the full
        // check starts at exactly kill + `full_check_s`.
        for sec in 0..full_check_s {
            let mut pending = None;
            if sec >= 1 {
                let askers = self.attached_clients();
                if askers.is_empty() {
                    rep.found_by_second.push((sec, 0.0));
                } else {
                    let pairs: Vec<(usize, usize)> = sample_users
                        .iter()
                        .map(|&t| (askers[self.sim.rng.gen_range(0..askers.len())], t))
                        .collect();
                    pending = Some(self.start_lookups(&pairs, 950, 2_000));
                }
            }
            for _ in 0..10 {
                self.sim.run_for(100);
                if let Some(p) = pending.as_mut() {
                    self.collect_lookups(p);
                }
                let at = self.sim.now - kill_at;
                for (k, &c) in self.clients.iter().enumerate() {
                    if !lost_both[k] || back[k].1.is_some() {
                        continue;
                    }
                    let Some(c) = self.sim.client(c) else {
                        continue;
                    };
                    if back[k].0.is_none()
                        && c.attached()
                            .any(|a| self.sim.index_of(&a).is_some_and(|i| self.sim.is_alive(i)))
                    {
                        back[k].0 = Some(at);
                    }
                    if c.published_seq() > kill_unix {
                        back[k].1 = Some(c.published_seq() - kill_unix);
                    }
                }
            }
            if let Some(p) = pending {
                let r = p.finish();
                let good = r.online + r.offline - r.unreachable.min(r.online + r.offline);
                let frac = good as f64 / r.asked.max(1) as f64;
                rep.forged_or_stale_answers += r.stale;
                rep.found_by_second.push((sec, frac));
                if frac >= 1.0 && rep.sample_recovered_after_s.is_none() {
                    rep.sample_recovered_after_s = Some(sec);
                }
                for u in r.missing {
                    rep.sample_failures.push((sec, u, "not found or timed out"));
                }
                for u in r.unreachable_users {
                    rep.sample_failures
                        .push((sec, u, "record names only dead supernodes"));
                }
            }
        }
        debug_assert_eq!(self.sim.now, kill_at + full_check_s * 1_000);
        let askers = self.attached_clients();
        let pairs: Vec<(usize, usize)> = (0..users)
            .map(|t| (askers[self.sim.rng.gen_range(0..askers.len())], t))
            .collect();
        // Published state of every user when the full check starts.
        let published_at: Vec<u64> = self
            .clients
            .iter()
            .map(|&c| self.sim.client(c).map_or(0, |c| c.published_seq()))
            .collect();
        // In batches: a million lookups in flight at once held several GB
        // of queued messages and pending queries at 10,000/1,000,000.
        let batch = self.full_check_batch.max(1);
        let mut full = LookupReport::default();
        let full_start = self.sim.now;
        rep.full_check_started_ms = full_start - kill_at;
        for chunk in pairs.chunks(batch) {
            rep.full_check_last_batch_ms = self.sim.now - kill_at;
            let r = self.lookups(chunk, 5_000, 2_000);
            full.absorb(r);
        }
        rep.full_check_took_ms = self.sim.now - full_start;
        rep.full = full;
        rep.forged_or_stale_answers += rep.full.stale;
        let alive = |sim: &Sim, i: usize| sim.is_alive(i);
        // The first `replicas` members from `key`: (node, alive).
        let first_owners = |sim: &Sim, key: u64, n: usize, live_only: bool| -> Vec<usize> {
            let start = ring.partition_point(|(id, _)| *id < key);
            (0..ring.len())
                .map(|j| ring[(start + j) % ring.len()].1)
                .filter(|&i| !live_only || alive(sim, i))
                .take(n)
                .collect()
        };
        let mut orphan_pub: Vec<u64> = Vec::new();
        let mut orphans: Vec<(u64, usize)> = Vec::new();
        for (k, &lost) in lost_both.iter().enumerate() {
            if !lost {
                continue;
            }
            let key = crate::overlay::user_key(&Self::username(k));
            if first_owners(&self.sim, key, 3, false)
                .iter()
                .all(|&i| !alive(&self.sim, i))
            {
                rep.orphaned_records += 1;
                let p = back[k].1.unwrap_or(u64::MAX);
                orphan_pub.push(p);
                orphans.push((p, k));
            }
        }
        let spread = |v: &mut Vec<u64>| {
            (
                percentile(v, 50.0),
                percentile(v, 99.0),
                v.iter().max().copied().unwrap_or(0),
            )
        };
        rep.orphan_republish_ms = spread(&mut orphan_pub);
        rep.lost_both = lost_both.iter().filter(|b| **b).count();
        let mut re: Vec<u64> = back.iter().filter_map(|b| b.0).collect();
        rep.reattach_ms = spread(&mut re);
        let mut rp: Vec<u64> = back.iter().filter_map(|b| b.1).collect();
        rep.never_republished = rep.lost_both - rp.len();
        rep.republish_ms = spread(&mut rp);
        // The slowest orphans: how their re-attachment went.
        orphans.sort_unstable();
        for &(p, k) in orphans.iter().rev().take(5) {
            let Some(c) = self.sim.client(self.clients[k]) else {
                continue;
            };
            rep.diagnostics.push(format!(
                "slow orphan {}: re-attached +{} ms, republished +{} ms, {} attach attempts and {} redirects since the kill",
                Self::username(k),
                back[k].0.map_or("never".into(), |v| v.to_string()),
                if p == u64::MAX { "never".into() } else { p.to_string() },
                c.stats.attach_attempts - attempts0[k].0,
                c.stats.redirects - attempts0[k].1,
            ));
        }
        for name in rep.full.missing.clone() {
            let Some(k) = name
                .split_whitespace()
                .next()
                .and_then(|n| n.strip_prefix("user"))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            let Some(c) = self.sim.client(self.clients[k]) else {
                continue;
            };
            let uname = Self::username(k);
            let key = crate::overlay::user_key(&uname);
            let orig = first_owners(&self.sim, key, 3, false);
            let live = first_owners(&self.sim, key, 3, true);
            let holders: Vec<String> = live
                .iter()
                .map(|&i| {
                    let h = self.sim.supernode(i).and_then(|s| s.holds(&uname));
                    h.map_or("none".into(), |s| s.to_string())
                })
                .collect();
            // How many of the dead ring predecessors of the live owners
            // each of the user's supernodes still thinks are up.
            let dead_before: Vec<u64> = orig
                .iter()
                .filter(|&&i| !alive(&self.sim, i))
                .filter_map(|&i| self.sim.supernode(i).map(|s| s.me))
                .collect();
            let views: Vec<String> = c
                .attached()
                .filter_map(|a| self.sim.index_of(&a))
                .filter_map(|i| self.sim.supernode(i))
                .map(|s| {
                    let still_up = dead_before
                        .iter()
                        .filter(|id| s.membership().is_up(**id))
                        .count();
                    format!(
                        "{} thinks {still_up}/{} dead owners up",
                        s.addr(),
                        dead_before.len()
                    )
                })
                .collect();
            let p = published_at[k];
            rep.diagnostics.push(format!(
                "missed {name}: lost both supernodes: {}, re-attached at +{}, published {} (published seq {}), \
                 original owners alive: {}/3, live owners hold seq [{}], now attached to {}: {}",
                lost_both[k],
                back[k].0.map_or("never".into(), |v| format!("{v} ms")),
                if p > kill_unix {
                    format!("+{} ms after the kill", p - kill_unix)
                } else {
                    format!("{} ms before the kill", kill_unix - p)
                },
                p,
                orig.iter().filter(|&&i| alive(&self.sim, i)).count(),
                holders.join(", "),
                c.attached().count(),
                views.join("; ")
            ));
        }
        for &s in &self.supernodes {
            if let Some(sn) = self.sim.supernode(s) {
                rep.max_clients_seen = rep.max_clients_seen.max(sn.stats().peak_clients);
            }
        }
        rep.sim_stats = self.sim.stats();
        rep
    }
}
