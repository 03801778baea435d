//! SWIM-style membership among supernodes, sans-IO.
//!
//! Each node probes one member per period (round-robin over a shuffled
//! order); a member that misses its ack is probed indirectly through
//! others, then suspected, then declared down unless it refutes by raising
//! its incarnation. Updates ride on pings and acks, each sent a bounded
//! number of times; a periodic page-by-page sync with a random member
//! repairs whatever gossip missed. Members are kept in a `BTreeMap` keyed by
//! ring position, so owner lookups walk the ring directly and every update
//! is O(log n) even with tens of thousands of members. An entry takes 32
//! bytes (addresses packed, see [`super::addr`]) and queued gossip names
//! members rather than copying them: a simulation of 10,000 supernodes
//! holds 10^8 entries.
//!
//! foca was considered: its member list is a `Vec` scanned on every
//! update, which makes a 10,000-supernode simulation quadratic.

use super::addr::{AddrTable, PackedAddr};
use super::msg::{MemberState, Msg, Update};
use crate::time::Millis;
use rand::{
    Rng, RngCore,
    seq::{IteratorRandom, SliceRandom},
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;

#[derive(Debug, Clone)]
pub struct MembershipConfig {
    pub probe_period_ms: u64,
    pub probe_timeout_ms: u64,
    pub indirect_probes: usize,
    pub suspect_timeout_ms: u64,
    /// Each update is sent `retransmit_mult * log2(n)` times.
    pub retransmit_mult: u32,
    pub max_piggyback: usize,
    /// While updates are waiting, push them to `gossip_fanout` random
    /// members this often (their acks carry theirs back): a mass failure
    /// spreads in seconds instead of riding on probes alone.
    pub gossip_period_ms: u64,
    pub gossip_fanout: usize,
    /// Full sync with a random member this often; 0 disables it.
    pub sync_period_ms: u64,
    /// Down members are remembered this long (so stale gossip cannot
    /// revive them), then forgotten.
    pub forget_after_ms: u64,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            probe_period_ms: 500,
            probe_timeout_ms: 250,
            indirect_probes: 3,
            suspect_timeout_ms: 3000,
            retransmit_mult: 3,
            max_piggyback: 32,
            gossip_period_ms: 200,
            gossip_fanout: 2,
            sync_period_ms: 60_000,
            forget_after_ms: 120_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub addr: SocketAddr,
    pub incarnation: u32,
    pub state: MemberState,
    /// When it entered its state, on our timeline.
    pub since: Millis,
}

impl Member {
    pub fn is_up(&self) -> bool {
        self.state != MemberState::Down
    }
}

/// A member as stored: [`Member`] with its address packed.
#[derive(Debug, Clone, Copy)]
struct Entry {
    since: Millis,
    incarnation: u32,
    addr: PackedAddr,
    state: MemberState,
}

impl Entry {
    fn is_up(&self) -> bool {
        self.state != MemberState::Down
    }
}

/// An update waiting to be gossiped: it is sent only while the member
/// still has this incarnation and state, with the member's address.
#[derive(Debug, Clone, Copy)]
struct Queued {
    id: u64,
    incarnation: u32,
    state: MemberState,
    left: u16,
}

/// A change the directory cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Up(u64),
    Down(u64),
}

#[derive(Debug)]
struct Probe {
    target: u64,
    seq: u32,
    indirect_at: Millis,
    fail_at: Millis,
    indirect_sent: bool,
}

#[derive(Debug)]
struct Relay {
    origin: SocketAddr,
    origin_seq: u32,
    expires: Millis,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MembershipStats {
    pub pings_sent: u64,
    pub updates_applied: u64,
    pub refutations: u64,
    pub declared_down: u64,
    pub sync_pages_sent: u64,
    pub bytes_sent: u64,
}

#[derive(Debug)]
pub struct Membership {
    pub me: u64,
    pub my_addr: SocketAddr,
    incarnation: u32,
    cfg: MembershipConfig,
    members: BTreeMap<u64, Entry>,
    addrs: AddrTable,
    alive: usize,
    order: Vec<u64>,
    order_pos: usize,
    probe: Option<Probe>,
    next_probe_at: Millis,
    next_sync_at: Millis,
    next_gc_at: Millis,
    next_gossip_at: Millis,
    /// (down at, id, incarnation) of suspected members, earliest first.
    suspects: BinaryHeap<Reverse<(Millis, u64, u32)>>,
    relays: HashMap<u32, Relay>,
    gossip: VecDeque<Queued>,
    seq: u32,
    changes: Vec<Change>,
    pub stats: MembershipStats,
}

pub const PAGE: usize = 48;

impl Membership {
    pub fn new(
        me: u64,
        my_addr: SocketAddr,
        incarnation: u32,
        cfg: MembershipConfig,
        now: Millis,
    ) -> Self {
        let mut addrs = AddrTable::default();
        let mut members = BTreeMap::new();
        members.insert(
            me,
            Entry {
                addr: addrs.pack(my_addr),
                incarnation,
                state: MemberState::Alive,
                since: now,
            },
        );
        Membership {
            me,
            my_addr,
            incarnation,
            next_probe_at: now + cfg.probe_period_ms,
            next_sync_at: now + cfg.sync_period_ms.max(1),
            next_gc_at: now + 1000,
            next_gossip_at: now,
            cfg,
            members,
            addrs,
            alive: 0,
            order: Vec::new(),
            order_pos: 0,
            probe: None,
            suspects: BinaryHeap::new(),
            relays: HashMap::new(),
            gossip: VecDeque::new(),
            seq: 0,
            changes: Vec::new(),
            stats: MembershipStats::default(),
        }
    }

    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// Members that are not down, self excluded.
    pub fn alive_count(&self) -> usize {
        self.alive
    }

    fn unpack(&self, e: &Entry) -> Member {
        Member {
            addr: self.addrs.unpack(e.addr),
            incarnation: e.incarnation,
            state: e.state,
            since: e.since,
        }
    }

    pub fn get(&self, id: u64) -> Option<Member> {
        self.members.get(&id).map(|e| self.unpack(e))
    }

    pub fn is_up(&self, id: u64) -> bool {
        id == self.me || self.members.get(&id).is_some_and(|m| m.is_up())
    }

    /// Every known member, self included, in ring order.
    pub fn members(&self) -> impl Iterator<Item = (u64, Member)> + '_ {
        self.members.iter().map(|(k, v)| (*k, self.unpack(v)))
    }

    pub fn addr_of(&self, id: u64) -> Option<SocketAddr> {
        if id == self.me {
            return Some(self.my_addr);
        }
        self.members.get(&id).map(|m| self.addrs.unpack(m.addr))
    }

    /// Up members (and self) in ring order from `key`, wrapping.
    pub fn ring_from(&self, key: u64) -> impl Iterator<Item = (u64, SocketAddr)> + '_ {
        self.members
            .range(key..)
            .chain(self.members.range(..key))
            .filter(|(_, m)| m.is_up())
            .map(|(k, m)| (*k, self.addrs.unpack(m.addr)))
    }

    /// Up to `n` distinct up members other than self, chosen at random.
    /// Samples the probe order (every up member is in it) rather than
    /// scanning the table: this runs for every attaching client, and
    /// scanning 10,000 members each time dominated a large simulation.
    pub fn random_up(&self, rng: &mut dyn RngCore, n: usize) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::with_capacity(n);
        for id in self.order.choose_multiple(rng, n * 2 + 4) {
            if out.len() == n {
                break;
            }
            // The order can hold an id twice (down, then up again).
            if let Some(m) = self.members.get(id).filter(|m| m.is_up()) {
                let a = self.addrs.unpack(m.addr);
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        if out.len() < n.min(self.alive) {
            // Mostly stale order (right after a mass failure): scan.
            out = self
                .members
                .iter()
                .filter(|(id, m)| **id != self.me && m.is_up())
                .map(|(_, m)| self.addrs.unpack(m.addr))
                .choose_multiple(rng, n);
        }
        out
    }

    /// Start from a converged overlay: every `(id, addr)` known as alive,
    /// as if learned by gossip, with nothing left to gossip. The table is
    /// built in one pass, which packs the tree's nodes full.
    pub fn seed(&mut self, now: Millis, members: impl IntoIterator<Item = (u64, SocketAddr)>) {
        let mut fresh: Vec<u64> = Vec::new();
        let mut added: Vec<(u64, Entry)> = Vec::new();
        for (id, addr) in members {
            if id == self.me || self.members.contains_key(&id) {
                continue;
            }
            fresh.push(id);
            let e = Entry {
                since: now,
                incarnation: 0,
                addr: self.addrs.pack(addr),
                state: MemberState::Alive,
            };
            added.push((id, e));
        }
        let mut all: Vec<(u64, Entry)> = std::mem::take(&mut self.members).into_iter().collect();
        all.extend(added);
        // Stable: of repeated ids, the first (known before, or seeded
        // first) stays.
        all.sort_by_key(|(id, _)| *id);
        all.dedup_by_key(|(id, _)| *id);
        self.members = all.into_iter().collect();
        let mut sorted = fresh.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() < fresh.len() {
            let mut seen = std::collections::HashSet::new();
            fresh.retain(|id| seen.insert(*id));
        }
        self.order.reserve_exact(fresh.len());
        for id in fresh {
            // Same placement as `apply`, so seeding is not a different run.
            self.alive += 1;
            self.order.push(id);
            let last = self.order.len() - 1;
            let j = (id as usize) % self.order.len();
            self.order.swap(j, last);
        }
        self.clear_gossip();
    }

    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    fn max_tx(&self) -> u32 {
        let n = (self.alive + 1) as f64;
        self.cfg.retransmit_mult * (n.log2().ceil() as u32).max(1)
    }

    pub fn clear_gossip(&mut self) {
        self.gossip.clear();
        self.gossip.shrink_to_fit();
    }

    fn queue(&mut self, u: Update) {
        let left = self.max_tx().min(u16::MAX as u32) as u16;
        // Bound the queue, dropping the oldest (they have had the most
        // sends) before adding: growing past the bound would double the
        // queue's allocation in every supernode after a mass failure.
        if self.gossip.len() >= 4096 {
            self.gossip.pop_back();
        }
        self.gossip.push_front(Queued {
            id: u.id,
            incarnation: u.incarnation,
            state: u.state,
            left,
        });
    }

    fn piggyback(&mut self) -> Vec<Update> {
        let mut out = Vec::new();
        let mut n = self.gossip.len().min(self.cfg.max_piggyback);
        while n > 0 {
            n -= 1;
            let Some(q) = self.gossip.pop_front() else {
                break;
            };
            // Skip updates superseded since they were queued.
            let Some(m) = self
                .members
                .get(&q.id)
                .filter(|m| m.incarnation == q.incarnation && m.state == q.state)
            else {
                continue;
            };
            out.push(Update {
                id: q.id,
                addr: self.addrs.unpack(m.addr),
                incarnation: q.incarnation,
                state: q.state,
            });
            if q.left > 1 {
                self.gossip.push_back(Queued {
                    left: q.left - 1,
                    ..q
                });
            }
        }
        if self.gossip.is_empty() && self.gossip.capacity() > 64 {
            // After a burst of news (a mass failure), give the space back.
            self.gossip.shrink_to_fit();
        }
        out
    }

    fn self_update(&self) -> Update {
        Update {
            id: self.me,
            addr: self.my_addr,
            incarnation: self.incarnation,
            state: MemberState::Alive,
        }
    }

    fn send(&mut self, out: &mut Vec<(SocketAddr, Vec<u8>)>, to: SocketAddr, m: &Msg<'_>) {
        let bytes = m.encode();
        self.stats.bytes_sent += bytes.len() as u64;
        out.push((to, bytes));
    }

    /// Apply one update by SWIM's precedence rules; returns whether it
    /// changed anything (and so should be gossiped on).
    pub fn apply(&mut self, now: Millis, u: Update) -> bool {
        if u.id == self.me {
            if u.state != MemberState::Alive && u.incarnation >= self.incarnation {
                // Refute: we are alive.
                self.incarnation = u.incarnation + 1;
                if let Some(me) = self.members.get_mut(&self.me) {
                    me.incarnation = self.incarnation;
                }
                self.stats.refutations += 1;
                let me = self.self_update();
                self.queue(me);
            }
            return false;
        }
        let cur = self.members.get(&u.id).copied();
        let accept = match cur {
            None => true,
            Some(c) => match u.state {
                MemberState::Alive => u.incarnation > c.incarnation,
                MemberState::Suspect => {
                    (c.state == MemberState::Alive && u.incarnation >= c.incarnation)
                        || (c.state != MemberState::Down && u.incarnation > c.incarnation)
                        || (c.state == MemberState::Down && u.incarnation > c.incarnation)
                }
                MemberState::Down => {
                    c.state != MemberState::Down && u.incarnation >= c.incarnation
                        || u.incarnation > c.incarnation
                }
            },
        };
        if !accept {
            return false;
        }
        self.stats.updates_applied += 1;
        let was_up = cur.is_some_and(|c| c.is_up());
        let m = Entry {
            addr: self.addrs.pack(u.addr),
            incarnation: u.incarnation,
            state: u.state,
            since: now,
        };
        self.members.insert(u.id, m);
        let is_up = m.is_up();
        if is_up && !was_up {
            self.alive += 1;
            self.order.push(u.id);
            let last = self.order.len() - 1;
            // Insert at a random-ish place without an rng: mix the id.
            let j = (u.id as usize) % self.order.len();
            self.order.swap(j, last);
            self.changes.push(Change::Up(u.id));
        } else if !is_up && was_up {
            self.alive -= 1;
            self.changes.push(Change::Down(u.id));
        }
        if u.state == MemberState::Suspect {
            self.suspects.push(Reverse((
                now + self.cfg.suspect_timeout_ms,
                u.id,
                u.incarnation,
            )));
        }
        self.queue(u);
        true
    }

    /// A verified supernode talked to us: it is alive (learning it if new).
    pub fn heard_from(&mut self, now: Millis, id: u64, addr: SocketAddr) {
        if id == self.me {
            return;
        }
        match self.members.get(&id) {
            None => {
                self.apply(
                    now,
                    Update {
                        id,
                        addr,
                        incarnation: 0,
                        state: MemberState::Alive,
                    },
                );
            }
            Some(m)
                if m.state == MemberState::Down
                    && now.since(m.since) > self.cfg.suspect_timeout_ms =>
            {
                // A restarted node: it will refute with a higher incarnation
                // once it hears; meanwhile let it back at once.
                let inc = m.incarnation + 1;
                self.apply(
                    now,
                    Update {
                        id,
                        addr,
                        incarnation: inc,
                        state: MemberState::Alive,
                    },
                );
            }
            _ => {}
        }
    }

    /// Something other than a probe timed out talking to `id`: probe it now
    /// rather than waiting for its turn.
    pub fn hint_unresponsive(&mut self, now: Millis, id: u64) {
        if self.probe.is_none()
            && self
                .members
                .get(&id)
                .is_some_and(|m| m.state == MemberState::Alive)
        {
            self.start_probe(now, id, &mut Vec::new());
        }
    }

    /// Leave for good: tell every member we know to be up that we are
    /// down (at our own incarnation, which they accept at once), so they
    /// take over our share of the ring now instead of after the failure
    /// detector's suspicion timeout. Nothing is gossiped after this.
    pub fn leave(&mut self, out: &mut Vec<(SocketAddr, Vec<u8>)>) {
        let down = Update {
            id: self.me,
            addr: self.my_addr,
            incarnation: self.incarnation,
            state: MemberState::Down,
        };
        let up: Vec<SocketAddr> = self
            .members
            .iter()
            .filter(|(id, m)| **id != self.me && m.is_up())
            .map(|(_, m)| self.addrs.unpack(m.addr))
            .collect();
        for to in up {
            // seq 0: not a probe; the Ack that comes back is not awaited.
            self.send(
                out,
                to,
                &Msg::Ping {
                    seq: 0,
                    updates: vec![down],
                },
            );
        }
        self.clear_gossip();
    }

    /// Ask `bootstrap` to let us in.
    pub fn join(&mut self, bootstrap: SocketAddr, out: &mut Vec<(SocketAddr, Vec<u8>)>) {
        self.send(out, bootstrap, &Msg::Join);
    }

    pub fn handle(
        &mut self,
        now: Millis,
        from: SocketAddr,
        from_id: u64,
        msg: Msg<'_>,
        out: &mut Vec<(SocketAddr, Vec<u8>)>,
    ) {
        self.heard_from(now, from_id, from);
        match msg {
            Msg::Ping { seq, updates } => {
                for u in updates {
                    self.apply(now, u);
                }
                let updates = self.piggyback();
                self.send(out, from, &Msg::Ack { seq, updates });
            }
            Msg::Ack { seq, updates } => {
                for u in updates {
                    self.apply(now, u);
                }
                if let Some(p) = &self.probe
                    && p.seq == seq
                {
                    self.probe = None;
                } else if let Some(r) = self.relays.remove(&seq) {
                    let updates = self.piggyback();
                    self.send(
                        out,
                        r.origin,
                        &Msg::Ack {
                            seq: r.origin_seq,
                            updates,
                        },
                    );
                }
            }
            Msg::PingReq {
                seq,
                target,
                target_addr,
            } => {
                self.seq = self.seq.wrapping_add(1).max(1);
                let my_seq = self.seq;
                self.relays.insert(
                    my_seq,
                    Relay {
                        origin: from,
                        origin_seq: seq,
                        expires: now + self.cfg.probe_period_ms * 2,
                    },
                );
                let _ = target;
                let updates = self.piggyback();
                self.send(
                    out,
                    target_addr,
                    &Msg::Ping {
                        seq: my_seq,
                        updates,
                    },
                );
            }
            Msg::Join => {
                let me = self.self_update();
                self.queue(me);
                self.send_page(0, from, out);
            }
            Msg::SyncReq { page } => self.send_page(page, from, out),
            Msg::SyncPage {
                page,
                pages,
                updates,
            } => {
                for u in updates {
                    self.apply(now, u);
                }
                if page == 0 {
                    for p in 1..pages.min(4096) {
                        self.send(out, from, &Msg::SyncReq { page: p });
                    }
                }
            }
            _ => {}
        }
    }

    fn send_page(&mut self, page: u16, to: SocketAddr, out: &mut Vec<(SocketAddr, Vec<u8>)>) {
        let pages = self.members.len().div_ceil(PAGE).max(1) as u16;
        let updates: Vec<Update> = self
            .members
            .iter()
            .skip(page as usize * PAGE)
            .take(PAGE)
            .map(|(id, m)| Update {
                id: *id,
                addr: self.addrs.unpack(m.addr),
                incarnation: m.incarnation,
                state: m.state,
            })
            .collect();
        self.stats.sync_pages_sent += 1;
        self.send(
            out,
            to,
            &Msg::SyncPage {
                page,
                pages,
                updates,
            },
        );
    }

    fn next_target(&mut self, rng: &mut dyn RngCore) -> Option<u64> {
        for _ in 0..self.order.len() * 2 + 1 {
            if self.order_pos >= self.order.len() {
                // Drop members that are no longer up, then reshuffle.
                let members = &self.members;
                self.order
                    .retain(|id| members.get(id).is_some_and(|m| m.is_up()));
                self.order.shuffle(rng);
                self.order_pos = 0;
                if self.order.is_empty() {
                    return None;
                }
            }
            let id = self.order[self.order_pos];
            self.order_pos += 1;
            if self.members.get(&id).is_some_and(|m| m.is_up()) {
                return Some(id);
            }
        }
        None
    }

    fn start_probe(&mut self, now: Millis, target: u64, out: &mut Vec<(SocketAddr, Vec<u8>)>) {
        let Some(addr) = self.members.get(&target).map(|m| self.addrs.unpack(m.addr)) else {
            return;
        };
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        self.probe = Some(Probe {
            target,
            seq,
            indirect_at: now + self.cfg.probe_timeout_ms,
            fail_at: now + self.cfg.probe_period_ms.max(self.cfg.probe_timeout_ms * 2),
            indirect_sent: false,
        });
        self.stats.pings_sent += 1;
        let updates = self.piggyback();
        self.send(out, addr, &Msg::Ping { seq, updates });
    }

    pub fn handle_timeout(
        &mut self,
        now: Millis,
        rng: &mut dyn RngCore,
        out: &mut Vec<(SocketAddr, Vec<u8>)>,
    ) {
        // Probe in flight.
        if let Some(p) = &mut self.probe {
            if !p.indirect_sent && now >= p.indirect_at {
                p.indirect_sent = true;
                let (target, seq) = (p.target, p.seq);
                if let Some(taddr) = self.members.get(&target).map(|m| self.addrs.unpack(m.addr)) {
                    let helpers: Vec<SocketAddr> = self
                        .order
                        .choose_multiple(rng, self.cfg.indirect_probes + 2)
                        .filter(|id| **id != target && self.is_up(**id))
                        .take(self.cfg.indirect_probes)
                        .filter_map(|id| self.members.get(id).map(|m| self.addrs.unpack(m.addr)))
                        .collect();
                    for h in helpers {
                        self.send(
                            out,
                            h,
                            &Msg::PingReq {
                                seq,
                                target,
                                target_addr: taddr,
                            },
                        );
                    }
                }
            }
            if let Some(p) = &self.probe
                && now >= p.fail_at
            {
                let target = p.target;
                self.probe = None;
                if let Some(m) = self.members.get(&target).copied()
                    && m.state == MemberState::Alive
                {
                    self.apply(
                        now,
                        Update {
                            id: target,
                            addr: self.addrs.unpack(m.addr),
                            incarnation: m.incarnation,
                            state: MemberState::Suspect,
                        },
                    );
                }
            }
        }
        // Suspicions that ran out.
        while let Some(Reverse((at, id, inc))) = self.suspects.peek().copied() {
            if at > now {
                break;
            }
            self.suspects.pop();
            if let Some(m) = self.members.get(&id).copied()
                && m.state == MemberState::Suspect
                && m.incarnation == inc
            {
                self.stats.declared_down += 1;
                self.apply(
                    now,
                    Update {
                        id,
                        addr: self.addrs.unpack(m.addr),
                        incarnation: inc,
                        state: MemberState::Down,
                    },
                );
            }
        }
        // Next probe.
        if now >= self.next_probe_at {
            self.next_probe_at = now + self.cfg.probe_period_ms;
            if self.probe.is_none()
                && let Some(t) = self.next_target(rng)
            {
                self.start_probe(now, t, out);
            }
        }
        // Gossip rounds while there is news (seq 0: not a probe).
        if now >= self.next_gossip_at {
            self.next_gossip_at = now + self.cfg.gossip_period_ms.max(1);
            if !self.gossip.is_empty() {
                let targets: Vec<SocketAddr> = self
                    .order
                    .choose_multiple(rng, self.cfg.gossip_fanout + 2)
                    .filter_map(|id| {
                        self.members
                            .get(id)
                            .filter(|m| m.is_up())
                            .map(|m| self.addrs.unpack(m.addr))
                    })
                    .take(self.cfg.gossip_fanout)
                    .collect();
                for t in targets {
                    let updates = self.piggyback();
                    if updates.is_empty() {
                        break;
                    }
                    self.send(out, t, &Msg::Ping { seq: 0, updates });
                }
            }
        }
        // Anti-entropy.
        if self.cfg.sync_period_ms > 0 && now >= self.next_sync_at {
            let jitter = rng.gen_range(0..=self.cfg.sync_period_ms / 4);
            self.next_sync_at =
                now + self.cfg.sync_period_ms - self.cfg.sync_period_ms / 8 + jitter;
            if let Some(id) = self.order.choose(rng).copied()
                && let Some(a) = self
                    .members
                    .get(&id)
                    .filter(|m| m.is_up())
                    .map(|m| self.addrs.unpack(m.addr))
            {
                self.send(out, a, &Msg::SyncReq { page: 0 });
            }
        }
        // Housekeeping: old relays, long-dead members.
        if now >= self.next_gc_at {
            self.next_gc_at = now + 1000;
            self.relays.retain(|_, r| r.expires > now);
            let forget = self.cfg.forget_after_ms;
            self.members
                .retain(|_, m| m.is_up() || now.since(m.since) < forget);
            // Keep self even if something odd happened above.
            let addr = self.addrs.pack(self.my_addr);
            self.members.entry(self.me).or_insert(Entry {
                addr,
                incarnation: self.incarnation,
                state: MemberState::Alive,
                since: now,
            });
            // Forgotten members' IPv6 addresses: rebuild the table so
            // that made-up members cannot grow it without bound.
            if self.addrs.v6_len() > 2 * self.members.len() + 64 {
                let mut t = AddrTable::default();
                for e in self.members.values_mut() {
                    e.addr = t.pack(self.addrs.unpack(e.addr));
                }
                self.addrs = t;
            }
        }
    }

    pub fn poll_timeout(&self) -> Millis {
        let mut t = self.next_probe_at;
        if let Some(p) = &self.probe {
            t = t.min(if p.indirect_sent {
                p.fail_at
            } else {
                p.indirect_at
            });
        }
        if let Some(Reverse((at, _, _))) = self.suspects.peek() {
            t = t.min(*at);
        }
        if self.cfg.sync_period_ms > 0 {
            t = t.min(self.next_sync_at);
        }
        if !self.gossip.is_empty() {
            t = t.min(self.next_gossip_at);
        }
        t.min(self.next_gc_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], i))
    }

    #[test]
    fn ring_walk_includes_self_in_order() {
        let mut m = Membership::new(50, addr(50), 0, MembershipConfig::default(), Millis::ZERO);
        for id in [10u64, 30, 70, 90] {
            m.apply(
                Millis::ZERO,
                Update {
                    id,
                    addr: addr(id as u16),
                    incarnation: 0,
                    state: MemberState::Alive,
                },
            );
        }
        let ids: Vec<u64> = m.ring_from(40).map(|(k, _)| k).collect();
        assert_eq!(m.alive_count(), 4);
        assert_eq!(ids, vec![50, 70, 90, 10, 30]);
        let ids: Vec<u64> = m.ring_from(95).map(|(k, _)| k).collect();
        assert_eq!(ids, vec![10, 30, 50, 70, 90]);
        let ids: Vec<u64> = m.ring_from(50).map(|(k, _)| k).collect();
        assert_eq!(ids, vec![50, 70, 90, 10, 30]);
        let ids: Vec<u64> = m.ring_from(60).map(|(k, _)| k).collect();
        assert_eq!(ids, vec![70, 90, 10, 30, 50]);
        m.apply(
            Millis::ZERO,
            Update {
                id: 70,
                addr: addr(70),
                incarnation: 0,
                state: MemberState::Down,
            },
        );
        let ids: Vec<u64> = m.ring_from(60).map(|(k, _)| k).collect();
        assert_eq!(ids, vec![90, 10, 30, 50]);
    }

    #[test]
    fn precedence_rules() {
        let mut m = Membership::new(1, addr(1), 0, MembershipConfig::default(), Millis::ZERO);
        let up = |inc, state| Update {
            id: 2,
            addr: addr(2),
            incarnation: inc,
            state,
        };
        assert!(m.apply(Millis::ZERO, up(0, MemberState::Alive)));
        assert!(m.apply(Millis::ZERO, up(0, MemberState::Suspect)));
        assert!(
            !m.apply(Millis::ZERO, up(0, MemberState::Alive)),
            "same incarnation cannot clear suspicion"
        );
        assert!(
            m.apply(Millis::ZERO, up(1, MemberState::Alive)),
            "refutation"
        );
        assert!(m.apply(Millis::ZERO, up(1, MemberState::Down)));
        assert!(
            !m.apply(Millis::ZERO, up(1, MemberState::Alive)),
            "stale gossip cannot revive"
        );
        assert!(
            m.apply(Millis::ZERO, up(2, MemberState::Alive)),
            "rejoin with a new incarnation"
        );
        assert_eq!(
            m.take_changes(),
            vec![Change::Up(2), Change::Down(2), Change::Up(2)]
        );
    }

    #[test]
    fn suspicion_of_self_is_refuted() {
        let mut m = Membership::new(1, addr(1), 0, MembershipConfig::default(), Millis::ZERO);
        m.apply(
            Millis::ZERO,
            Update {
                id: 1,
                addr: addr(1),
                incarnation: 0,
                state: MemberState::Suspect,
            },
        );
        assert_eq!(m.incarnation(), 1);
        let ups = m.piggyback();
        assert!(
            ups.iter()
                .any(|u| u.id == 1 && u.incarnation == 1 && u.state == MemberState::Alive)
        );
    }
}
