//! The ICE agent for one connection attempt with one peer (sans-IO): check
//! list, pacing and retransmission, triggered checks, peer-reflexive
//! candidates, port prediction, nomination by the controlling side,
//! consent keepalives, and the relayed-to-direct upgrade. See the module
//! docs of [`crate::ice`].

use super::check::{self, Check, Request, RoleAttr};
use super::offer::{IceOffer, MappingHint, valid_credentials};
use super::{Candidate, CandidateKind, Path, Transmit, Via};
use crate::time::Millis;
use rand::RngCore;
use std::collections::VecDeque;
use std::net::SocketAddr;
use stun_rs::MessageClass;

/// Timers and bounds of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceConfig {
    /// Gap between two new checks (RFC 8445 Ta).
    pub pace_ms: u64,
    /// First retransmission of a check; doubles up to `max_rto_ms`.
    pub rto_ms: u64,
    pub max_rto_ms: u64,
    /// Requests sent per check (first one included) before the pair fails.
    pub check_attempts: u32,
    /// No working pair by then: the attempt fails.
    pub connect_timeout_ms: u64,
    /// After the first direct pair works, wait this long for a better one
    /// before nominating.
    pub settle_ms: u64,
    /// A working relayed pair waits this long (from the start) for a
    /// direct one before it is nominated.
    pub relay_wait_ms: u64,
    /// Consent checks on the selected pair.
    pub keepalive_ms: u64,
    /// The selected pair is lost when nothing answered for this long.
    pub consent_timeout_ms: u64,
    /// The selected pair has not answered for this long: check every
    /// other pair again and move to the best one that answers (direct or
    /// relayed) before consent runs out.
    pub recover_after_ms: u64,
    /// How long a new session waits for a relay allocation (when the
    /// node gathers relayed candidates) before it starts without one.
    pub relay_gather_ms: u64,
    /// Offer and use relayed candidates only (never reveal or use our own
    /// addresses; WebRTC's `iceTransportPolicy: "relay"`).
    pub relay_only: bool,
    /// While relayed, the direct pairs are checked again this often.
    pub reprobe_ms: u64,
    /// The peer checked us from an address our direct path does not use
    /// (it may have roamed): the selected pair must answer a keepalive
    /// sent then within this long, else we move to a pair that answered
    /// since (see [`IceAgent::network_changed`] for the roaming side).
    pub verify_ms: u64,
    /// Ports tried by port prediction.
    pub predict_window: u16,
    /// New NAT mappings the node opens between its last server-reflexive
    /// observation and the first check (e.g. an allocation on a relay
    /// that is not one of the observing supernodes): they shift where our
    /// own next ports fall, which port prediction lines up against.
    pub prior_mappings: u16,
    /// Requests one round (the first attempt, or one re-probe) may send.
    pub max_checks_per_round: u32,
    pub max_pairs: usize,
    pub max_remote_candidates: usize,
}

impl Default for IceConfig {
    fn default() -> Self {
        IceConfig {
            pace_ms: 10,
            rto_ms: 100,
            max_rto_ms: 800,
            check_attempts: 7,
            connect_timeout_ms: 10_000,
            settle_ms: 60,
            relay_wait_ms: 1_500,
            keepalive_ms: 2_500,
            consent_timeout_ms: 15_000,
            recover_after_ms: 6_000,
            relay_gather_ms: 3_000,
            relay_only: false,
            reprobe_ms: 4_000,
            verify_ms: 600,
            predict_window: 16,
            prior_mappings: 0,
            max_checks_per_round: 400,
            max_pairs: 128,
            max_remote_candidates: 48,
        }
    }
}

impl IceConfig {
    fn rto(&self, sent: u32) -> u64 {
        self.rto_ms
            .saturating_mul(1 << sent.saturating_sub(1).min(10))
            .min(self.max_rto_ms)
    }
}

/// Which side nominates: the caller controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceRole {
    Controlling,
    Controlled,
}

/// What the agent reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceEvent {
    /// A pair was nominated; `setup_ms` counts from the agent's start.
    Connected {
        path: Path,
        setup_ms: u64,
    },
    /// The selected pair changed (e.g. relayed to direct). Traffic already
    /// in flight on the old path still arrives and must be accepted.
    PathChanged {
        from: Path,
        to: Path,
    },
    Failed {
        reason: String,
    },
}

/// Counters of what the agent sent, took and refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceStats {
    pub checks_sent: u64,
    pub retransmits: u64,
    pub responses_sent: u64,
    pub requests_received: u64,
    pub responses_received: u64,
    pub bad_integrity: u64,
    pub malformed: u64,
    pub peer_reflexive: u64,
    pub predicted_ports: u64,
    pub role_conflicts: u64,
    pub budget_exhausted: u64,
    pub reprobes: u64,
    pub keepalives: u64,
    /// Times the selected pair went silent and the others were re-checked.
    pub recoveries: u64,
    /// Times the peer checked us from a new address while a direct pair
    /// was selected, and the selected pair was verified.
    pub verifies: u64,
    /// Times the selected direct pair was left for one to the peer's new
    /// address after a failed verification (the peer roamed).
    pub peer_roams: u64,
    /// Times our own network changed under a selected pair.
    pub network_changes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    Direct,
    Relay {
        server: SocketAddr,
        relayed: SocketAddr,
    },
}

impl Base {
    fn via(&self) -> Via {
        match self {
            Base::Direct => Via::Direct,
            Base::Relay { server, .. } => Via::Relay(*server),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PairState {
    Waiting,
    InProgress {
        txid: [u8; 12],
        sent: u32,
        next_at: Millis,
        nominate: bool,
    },
    Succeeded,
    Failed,
}

#[derive(Debug, Clone)]
struct Pair {
    base: usize,
    remote: usize,
    priority: u64,
    state: PairState,
    valid: bool,
    mapped: Option<SocketAddr>,
    peer_nominated: bool,
    last_response: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Failed,
}

/// One connection attempt with one peer.
#[derive(Debug)]
pub struct IceAgent {
    cfg: IceConfig,
    role: IceRole,
    tiebreaker: u64,
    session: u64,
    started: Millis,
    local_ufrag: String,
    local_pwd: String,
    mapping: MappingHint,
    locals: Vec<Candidate>,
    bases: Vec<(Base, u32)>,
    remote_ufrag: Option<String>,
    remote_pwd: Option<String>,
    remote_mapping: MappingHint,
    remotes: Vec<Candidate>,
    pairs: Vec<Pair>,
    triggered: VecDeque<usize>,
    next_pace: Millis,
    round_checks: u32,
    first_valid_at: Option<Millis>,
    selected: Option<usize>,
    nominating: Option<usize>,
    keepalive: Option<([u8; 12], usize)>,
    next_keepalive: Millis,
    next_reprobe: Millis,
    /// The selected pair went silent: the other pairs are being re-checked.
    recovering: bool,
    /// Since when the selected pair is being verified (the peer checked
    /// us from another address, or told us its new candidates): a
    /// keepalive went out then, and without its answer by `verify_due`
    /// we move.
    verify: Option<Millis>,
    /// When the verification runs out: `verify_ms` after it began, or at
    /// once when the peer told us it moved and its new address answers.
    verify_due: Millis,
    /// The peer told us it moved (new candidates in a repeated offer,
    /// [`IceAgent::update_remote`]) at this time: a new direct pair that
    /// answers is moved to at once, without waiting for `verify_ms`.
    announced: Option<Millis>,
    /// Our own network changed at this time ([`IceAgent::network_changed`]):
    /// every pair is being checked again, and the verification of the
    /// selected pair is renewed until it or another pair answers.
    moved: Option<Millis>,
    phase: Phase,
    transmits: VecDeque<Transmit>,
    events: VecDeque<IceEvent>,
    stats: IceStats,
}

fn random_string(rng: &mut dyn RngCore, n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..n)
        .map(|_| A[(rng.next_u32() % 64) as usize] as char)
        .collect()
}

fn txid(rng: &mut dyn RngCore) -> [u8; 12] {
    let mut t = [0u8; 12];
    rng.fill_bytes(&mut t);
    t
}

/// RFC 8445 6.1.2.3 pair priority.
fn pair_priority(controlling: u32, controlled: u32) -> u64 {
    let (g, d) = (controlling as u64, controlled as u64);
    (1u64 << 32) * g.min(d) + 2 * g.max(d) + u64::from(g > d)
}

impl IceAgent {
    /// `locals` are our host and server-reflexive candidates (in the order
    /// observed); `relays` our TURN allocations `(server, relayed address)`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: IceConfig,
        role: IceRole,
        session: u64,
        now: Millis,
        locals: Vec<Candidate>,
        relays: &[(SocketAddr, SocketAddr)],
        mapping: MappingHint,
        rng: &mut dyn RngCore,
    ) -> Self {
        let mut a = IceAgent {
            role,
            tiebreaker: rng.next_u64(),
            session,
            started: now,
            local_ufrag: random_string(rng, 8),
            local_pwd: random_string(rng, 24),
            mapping,
            locals: Vec::new(),
            bases: Vec::new(),
            remote_ufrag: None,
            remote_pwd: None,
            remote_mapping: MappingHint::Unknown,
            remotes: Vec::new(),
            pairs: Vec::new(),
            triggered: VecDeque::new(),
            next_pace: now,
            round_checks: 0,
            first_valid_at: None,
            selected: None,
            nominating: None,
            keepalive: None,
            next_keepalive: Millis::MAX,
            next_reprobe: Millis::MAX,
            recovering: false,
            verify: None,
            verify_due: Millis::MAX,
            announced: None,
            moved: None,
            phase: Phase::Running,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: IceStats::default(),
            cfg,
        };
        let mut seen = Vec::new();
        // With UDP blocked our addresses reach nobody, and offering them
        // would only make the peer check them until relay_wait_ms.
        for c in locals {
            if !a.cfg.relay_only
                && mapping != MappingHint::Blocked
                && !seen.contains(&c.addr)
                && matches!(c.kind, CandidateKind::Host | CandidateKind::ServerReflexive)
            {
                seen.push(c.addr);
                a.locals.push(c);
            }
        }
        // With UDP blocked the main socket reaches nobody: only relays.
        if mapping != MappingHint::Blocked && !a.cfg.relay_only {
            let host = a
                .locals
                .iter()
                .filter(|c| c.kind == CandidateKind::Host)
                .map(|c| c.priority)
                .max()
                .unwrap_or(super::candidate_priority(CandidateKind::Host, 65535));
            a.bases.push((Base::Direct, host));
        }
        for (i, (server, relayed)) in relays.iter().enumerate() {
            a.add_relay(*server, *relayed, i);
        }
        a
    }

    fn add_relay(&mut self, server: SocketAddr, relayed: SocketAddr, i: usize) {
        let c = Candidate::new(CandidateKind::Relayed, relayed, 65535 - i as u16);
        self.locals.push(c);
        self.bases
            .push((Base::Relay { server, relayed }, c.priority));
    }

    /// Our parameters for the peer.
    pub fn local_offer(&self) -> IceOffer {
        IceOffer {
            session: self.session,
            ufrag: self.local_ufrag.clone(),
            pwd: self.local_pwd.clone(),
            mapping: self.mapping,
            candidates: self.locals.clone(),
        }
    }

    pub fn session(&self) -> u64 {
        self.session
    }

    /// The `now` the agent was made at.
    pub fn started_at(&self) -> Millis {
        self.started
    }

    pub fn role(&self) -> IceRole {
        self.role
    }

    pub fn stats(&self) -> &IceStats {
        &self.stats
    }

    pub fn is_failed(&self) -> bool {
        self.phase == Phase::Failed
    }

    /// The pair in use.
    pub fn selected(&self) -> Option<Path> {
        self.selected.map(|p| self.path(p))
    }

    /// Does this agent own a local ufrag (incoming requests' USERNAME
    /// starts with it)?
    pub fn local_ufrag(&self) -> &str {
        &self.local_ufrag
    }

    /// The peer's parameters: checks start.
    pub fn set_remote(&mut self, now: Millis, offer: &IceOffer) -> bool {
        if !valid_credentials(&offer.ufrag, &offer.pwd) || self.remote_pwd.is_some() {
            return false;
        }
        self.remote_ufrag = Some(offer.ufrag.clone());
        self.remote_pwd = Some(offer.pwd.clone());
        self.remote_mapping = offer.mapping;
        for c in &offer.candidates {
            self.add_remote(*c);
        }
        self.predict();
        self.next_pace = self.next_pace.max(now);
        true
    }

    /// Whether the peer's parameters are known.
    pub fn has_remote(&self) -> bool {
        self.remote_pwd.is_some()
    }

    /// The peer repeated its offer (or answer) with candidates we did not
    /// know: it moved to a new network and tells us where it is now
    /// (through the supernodes, since its new address may be filtered by
    /// our NAT until we send to it). Its new candidates are checked at
    /// once, and a direct one that answers replaces the selected pair
    /// unless that still answers. Returns how many candidates were new
    /// (or known only as peer-reflexive until now); other credentials (a
    /// restart) change nothing.
    pub fn update_remote(&mut self, now: Millis, offer: &IceOffer) -> usize {
        if self.remote_ufrag.as_deref() != Some(offer.ufrag.as_str())
            || self.remote_pwd.as_deref() != Some(offer.pwd.as_str())
            || self.phase == Phase::Failed
        {
            return 0;
        }
        let mut added = 0;
        for c in &offer.candidates {
            let known = self
                .remotes
                .iter()
                .find(|r| r.addr == c.addr)
                .map(|r| r.kind);
            match known {
                None => {
                    if let Some(ri) = self.add_remote(*c) {
                        added += 1;
                        for p in 0..self.pairs.len() {
                            if self.pairs[p].remote == ri && !self.triggered.contains(&p) {
                                self.triggered.push_back(p);
                            }
                        }
                    }
                }
                // Its check from there came first: now it names it.
                Some(CandidateKind::PeerReflexive) if c.kind != CandidateKind::Predicted => {
                    self.add_remote(*c);
                    added += 1;
                }
                Some(_) => {}
            }
        }
        if added > 0 && self.selected.is_some() {
            self.remote_mapping = offer.mapping;
            self.round_checks = 0;
            self.announced = Some(now);
            if self.verify.is_none() {
                self.verify = Some(now);
                self.verify_due = now + self.cfg.verify_ms;
                self.keepalive = None;
                self.next_keepalive = now;
            }
            // Its new address may have answered already (its check from
            // there came before this message): no need to wait.
            if let Some(s) = self.selected {
                let last = self.pairs[s].last_response;
                let answered = (0..self.pairs.len()).any(|p| {
                    p != s
                        && self.is_direct_pair(p)
                        && self.pairs[p].valid
                        && self.pairs[p].last_response > last
                });
                if answered {
                    self.verify_due = now;
                }
            }
            self.next_pace = self.next_pace.min(now);
        }
        added
    }

    /// Our own host and server-reflexive addresses changed (a new
    /// network): what our next offer carries (relayed ones stay).
    pub fn set_local_addresses(&mut self, locals: &[Candidate]) {
        self.locals.retain(|c| c.kind == CandidateKind::Relayed);
        for c in locals {
            if matches!(c.kind, CandidateKind::Host | CandidateKind::ServerReflexive)
                && !self.locals.iter().any(|l| l.addr == c.addr)
                && !self.cfg.relay_only
                && self.mapping != MappingHint::Blocked
            {
                self.locals.push(*c);
            }
        }
    }

    /// Port prediction against a destination-dependent mapping: the next
    /// ports after the highest one the peer's supernodes observed, stepping
    /// by the gap between its observations (sequential allocators count
    /// up; the order the observations arrived in is not reliable).
    fn predict(&mut self) {
        let srflx: Vec<SocketAddr> = self
            .remotes
            .iter()
            .filter(|c| c.kind == CandidateKind::ServerReflexive)
            .map(|c| c.addr)
            .collect();
        let Some(first) = srflx.first().copied() else {
            return;
        };
        let mut ports: Vec<u16> = srflx
            .iter()
            .filter(|a| a.ip() == first.ip())
            .map(|a| a.port())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        if self.remote_mapping != MappingHint::DestinationDependent && ports.len() < 2 {
            return;
        }
        let top = *ports.last().unwrap_or(&first.port());
        let mut delta: i32 = 1;
        if let [.., a, b] = ports[..] {
            let d = b as i32 - a as i32;
            if (1..=64).contains(&d) {
                delta = d;
            }
        }
        // Both sides may be symmetric: then our i-th new mapping must meet
        // theirs, which happens when each side aims at the peer port as far
        // above the peer's last observed port as its own source port is
        // above its own. Our first predicted probe leaves from the mapping
        // after those we open for the other candidates, so the scan starts
        // that far up the window and wraps round.
        let own = self.cfg.prior_mappings as i32
            + self
                .remotes
                .iter()
                .filter(|c| matches!(c.kind, CandidateKind::Host | CandidateKind::ServerReflexive))
                .count() as i32;
        let w = self.cfg.predict_window as i32;
        for k in 1..=w {
            let port = top as i32 + delta * k;
            if port > 65535 {
                break;
            }
            let rank = (k - own - 1).rem_euclid(w.max(1));
            let addr = SocketAddr::new(first.ip(), port as u16);
            let c = Candidate::new(CandidateKind::Predicted, addr, 65535 - rank as u16);
            if self.add_remote(c).is_some() {
                self.stats.predicted_ports += 1;
            }
        }
    }

    /// Add a remote candidate and its pairs; returns its index if new.
    fn add_remote(&mut self, c: Candidate) -> Option<usize> {
        if let Some(i) = self.remotes.iter().position(|r| r.addr == c.addr) {
            // A check can arrive before the offer that names its source:
            // the signalled kind (e.g. the peer's relayed address) wins.
            if self.remotes[i].kind == CandidateKind::PeerReflexive
                && c.kind != CandidateKind::Predicted
            {
                self.remotes[i] = c;
                self.reprioritise();
            }
            return None;
        }
        if self.remotes.len() >= self.cfg.max_remote_candidates {
            return None;
        }
        self.remotes.push(c);
        let ri = self.remotes.len() - 1;
        for bi in 0..self.bases.len() {
            let (base, prio) = self.bases[bi];
            // A relay's port does not depend on where it sends, and a
            // different family cannot be reached.
            if matches!(base, Base::Relay { .. }) && c.kind == CandidateKind::Predicted {
                continue;
            }
            if let Base::Relay { relayed, .. } = base
                && relayed.is_ipv4() != c.addr.is_ipv4()
            {
                continue;
            }
            self.add_pair(bi, ri, prio);
        }
        Some(ri)
    }

    fn add_pair(&mut self, base: usize, remote: usize, local_prio: u32) -> Option<usize> {
        if let Some(i) = self
            .pairs
            .iter()
            .position(|p| p.base == base && p.remote == remote)
        {
            return Some(i);
        }
        if self.pairs.len() >= self.cfg.max_pairs {
            return None;
        }
        let rp = self.remotes[remote].priority;
        let priority = match self.role {
            IceRole::Controlling => pair_priority(local_prio, rp),
            IceRole::Controlled => pair_priority(rp, local_prio),
        };
        self.pairs.push(Pair {
            base,
            remote,
            priority,
            state: PairState::Waiting,
            valid: false,
            mapped: None,
            peer_nominated: false,
            last_response: Millis::ZERO,
        });
        Some(self.pairs.len() - 1)
    }

    fn path(&self, p: usize) -> Path {
        let pair = &self.pairs[p];
        let (base, _) = self.bases[pair.base];
        let remote = self.remotes[pair.remote];
        let (local, local_kind) = match base {
            Base::Relay { relayed, .. } => (relayed, CandidateKind::Relayed),
            Base::Direct => {
                let mapped = pair.mapped;
                match mapped.and_then(|m| self.locals.iter().find(|c| c.addr == m)) {
                    Some(c) => (c.addr, c.kind),
                    None => match mapped {
                        Some(m) => (m, CandidateKind::PeerReflexive),
                        None => (
                            self.locals.first().map(|c| c.addr).unwrap_or(remote.addr),
                            CandidateKind::Host,
                        ),
                    },
                }
            }
        };
        Path {
            via: base.via(),
            local,
            local_kind,
            remote: remote.addr,
            remote_kind: remote.kind,
        }
    }

    fn is_direct_pair(&self, p: usize) -> bool {
        let pair = &self.pairs[p];
        matches!(self.bases[pair.base].0, Base::Direct)
            && self.remotes[pair.remote].kind != CandidateKind::Relayed
    }

    fn role_attr(&self) -> RoleAttr {
        match self.role {
            IceRole::Controlling => RoleAttr::Controlling(self.tiebreaker),
            IceRole::Controlled => RoleAttr::Controlled(self.tiebreaker),
        }
    }

    /// Send (or re-send) the check of pair `p` with transaction `t`.
    fn send_check(&mut self, p: usize, t: [u8; 12], nominate: bool) {
        let (Some(ru), Some(rpwd)) = (&self.remote_ufrag, &self.remote_pwd) else {
            return;
        };
        let pair = &self.pairs[p];
        let (base, _) = self.bases[pair.base];
        // PRIORITY is what a peer-reflexive candidate of ours would get.
        let priority = super::candidate_priority(
            match base {
                Base::Direct => CandidateKind::PeerReflexive,
                Base::Relay { .. } => CandidateKind::Relayed,
            },
            65535,
        );
        let req = Request {
            txid: t,
            username: format!("{ru}:{}", self.local_ufrag),
            priority,
            use_candidate: nominate && self.role == IceRole::Controlling,
            role: Some(self.role_attr()),
        };
        if let Ok(bytes) = check::encode_request(&req, rpwd) {
            self.transmits.push_back(Transmit {
                via: base.via(),
                dst: self.remotes[pair.remote].addr,
                bytes,
            });
        }
    }

    fn start_check(&mut self, now: Millis, p: usize, nominate: bool, rng: &mut dyn RngCore) {
        let t = txid(rng);
        self.pairs[p].state = PairState::InProgress {
            txid: t,
            sent: 1,
            next_at: now + self.cfg.rto(1),
            nominate,
        };
        self.round_checks += 1;
        self.stats.checks_sent += 1;
        self.send_check(p, t, nominate);
    }

    /// A datagram classified as STUN. Returns false when it is not this
    /// agent's (another agent's, the NAT detector's or the TURN client's).
    pub fn handle_stun(
        &mut self,
        now: Millis,
        via: Via,
        from: SocketAddr,
        bytes: &[u8],
        rng: &mut dyn RngCore,
    ) -> bool {
        let Some(peek) = check::peek(bytes) else {
            return false;
        };
        match peek.class {
            MessageClass::Request => {
                let mine = peek.username.as_deref().is_some_and(|u| {
                    u.split_once(':').is_some_and(|(l, r)| {
                        l == self.local_ufrag
                            && self.remote_ufrag.as_deref().is_none_or(|ru| ru == r)
                    })
                });
                if !mine {
                    return false;
                }
                match check::open(bytes, &self.local_pwd) {
                    Ok(Check::Request(req)) => self.on_request(now, via, from, req, rng),
                    Ok(_) => self.stats.malformed += 1,
                    Err(super::IceError::Integrity) => self.stats.bad_integrity += 1,
                    Err(_) => self.stats.malformed += 1,
                }
                true
            }
            MessageClass::SuccessResponse | MessageClass::ErrorResponse => {
                let Some((p, keepalive)) = self.transaction(&peek.txid) else {
                    return false;
                };
                let Some(pwd) = self.remote_pwd.clone() else {
                    return false;
                };
                match check::open(bytes, &pwd) {
                    Ok(c) => self.on_response(now, via, from, p, keepalive, c, rng),
                    Err(super::IceError::Integrity) => self.stats.bad_integrity += 1,
                    Err(_) => self.stats.malformed += 1,
                }
                true
            }
            MessageClass::Indication => false,
        }
    }

    fn transaction(&self, t: &[u8; 12]) -> Option<(usize, bool)> {
        if let Some((kt, p)) = self.keepalive
            && kt == *t
        {
            return Some((p, true));
        }
        self.pairs
            .iter()
            .position(|p| matches!(p.state, PairState::InProgress { txid, .. } if txid == *t))
            .map(|p| (p, false))
    }

    fn base_of(&self, via: Via) -> Option<usize> {
        self.bases.iter().position(|(b, _)| b.via() == via)
    }

    fn on_request(
        &mut self,
        now: Millis,
        via: Via,
        from: SocketAddr,
        req: Request,
        rng: &mut dyn RngCore,
    ) {
        self.stats.requests_received += 1;
        if self.phase == Phase::Failed {
            return;
        }
        // Role conflict (RFC 8445 7.3.1.1): the larger tie-breaker controls.
        match (self.role, req.role) {
            (IceRole::Controlling, Some(RoleAttr::Controlling(t))) => {
                self.stats.role_conflicts += 1;
                if self.tiebreaker >= t {
                    if let Ok(b) =
                        check::encode_error(req.txid, check::ROLE_CONFLICT, &self.local_pwd)
                    {
                        self.transmits.push_back(Transmit {
                            via,
                            dst: from,
                            bytes: b,
                        });
                    }
                    return;
                }
                self.switch_role();
            }
            (IceRole::Controlled, Some(RoleAttr::Controlled(t))) => {
                self.stats.role_conflicts += 1;
                if self.tiebreaker >= t {
                    self.switch_role();
                } else {
                    if let Ok(b) =
                        check::encode_error(req.txid, check::ROLE_CONFLICT, &self.local_pwd)
                    {
                        self.transmits.push_back(Transmit {
                            via,
                            dst: from,
                            bytes: b,
                        });
                    }
                    return;
                }
            }
            _ => {}
        }
        let Some(bi) = self.base_of(via) else {
            return;
        };
        if let Ok(b) = check::encode_success(req.txid, from, &self.local_pwd) {
            self.stats.responses_sent += 1;
            self.transmits.push_back(Transmit {
                via,
                dst: from,
                bytes: b,
            });
        }
        let ri = match self.remotes.iter().position(|c| c.addr == from) {
            Some(ri) => ri,
            None => {
                let c = Candidate {
                    kind: CandidateKind::PeerReflexive,
                    addr: from,
                    priority: req.priority,
                };
                match self.add_remote(c) {
                    Some(ri) => {
                        self.stats.peer_reflexive += 1;
                        ri
                    }
                    None => return,
                }
            }
        };
        self.maybe_verify(now, via, from);
        let prio = self.bases[bi].1;
        let Some(p) = self.add_pair(bi, ri, prio) else {
            return;
        };
        if req.use_candidate && self.role == IceRole::Controlled {
            self.pairs[p].peer_nominated = true;
            if self.selected == Some(p) && self.moved.is_some() {
                // We moved and the peer nominates our pair again: it heard
                // from our new address and has chosen; we follow.
                self.verify = None;
                self.moved = None;
            }
            if self.pairs[p].valid {
                self.select(now, p);
            }
        }
        // Triggered check: they reached us, so our answer check should
        // get through now.
        match self.pairs[p].state {
            PairState::InProgress {
                txid,
                sent,
                nominate,
                ..
            } => {
                self.pairs[p].state = PairState::InProgress {
                    txid,
                    sent,
                    next_at: now,
                    nominate,
                };
            }
            PairState::Waiting | PairState::Failed => {
                self.pairs[p].state = PairState::Waiting;
                if !self.triggered.contains(&p) {
                    self.triggered.push_back(p);
                }
                if self.remote_pwd.is_some() && self.round_checks < self.cfg.max_checks_per_round {
                    self.triggered.retain(|&q| q != p);
                    self.start_check(now, p, false, rng);
                }
            }
            PairState::Succeeded => {}
        }
    }

    /// An authenticated check came from `from`: when our direct path goes
    /// elsewhere, the peer may have moved to a new network. Verify the
    /// selected pair now (a keepalive at once); `handle_timeout` moves to
    /// a pair that answered since if it stays silent.
    fn maybe_verify(&mut self, now: Millis, via: Via, from: SocketAddr) {
        let Some(s) = self.selected else { return };
        if via != Via::Direct
            || !self.is_direct_pair(s)
            || self.remotes[self.pairs[s].remote].addr == from
            || self.verify.is_some()
            || self.recovering
        {
            return;
        }
        self.verify = Some(now);
        self.verify_due = now + self.cfg.verify_ms;
        self.stats.verifies += 1;
        // A keepalive already in flight may predate the move: a new one.
        self.keepalive = None;
        self.next_keepalive = now;
    }

    /// Our own network changed (a new local address, or sends failing):
    /// the selected pair's traffic now leaves from a new mapping. The
    /// controlling side nominates the selected pair again at once, so
    /// the peer learns our new address and moves its side of the path
    /// to it; the controlled side sends a keepalive at once, which makes
    /// the peer verify its path and move (`maybe_verify`).
    ///
    /// The new network may not reach the peer directly (e.g. a symmetric
    /// NAT on both ends): every other pair is checked again at once,
    /// those to the peer's relayed candidates first (our own allocation
    /// is bound to the old address). When the selected pair has not
    /// answered within `2 * rto_ms` but another has, we move to the best
    /// of those (`verify_expired`); until one answers, that is looked at
    /// again every `rto_ms`.
    pub fn network_changed(&mut self, now: Millis, rng: &mut dyn RngCore) {
        let Some(s) = self.selected else { return };
        if self.phase == Phase::Failed {
            return;
        }
        self.stats.network_changes += 1;
        self.moved = Some(now);
        self.verify = Some(now);
        self.verify_due = now + 2 * self.cfg.rto_ms;
        self.announced = None;
        self.round_checks = 0;
        self.next_pace = self.next_pace.min(now);
        for p in 0..self.pairs.len() {
            if p != s && !matches!(self.pairs[p].state, PairState::InProgress { .. }) {
                self.pairs[p].state = PairState::Waiting;
                self.pairs[p].valid = false;
            }
        }
        let to_relay: Vec<usize> = (0..self.pairs.len())
            .filter(|&p| {
                p != s
                    && matches!(self.bases[self.pairs[p].base].0, Base::Direct)
                    && self.remotes[self.pairs[p].remote].kind == CandidateKind::Relayed
            })
            .collect();
        self.triggered.retain(|q| !to_relay.contains(q));
        for p in to_relay.into_iter().rev() {
            self.triggered.push_front(p);
        }
        if self.role == IceRole::Controlling && self.is_direct_pair(s) && self.nominating.is_none()
        {
            self.nominating = Some(s);
            self.round_checks = self.round_checks.saturating_sub(1);
            self.start_check(now, s, true, rng);
        } else {
            self.keepalive = None;
            self.next_keepalive = now;
        }
    }

    /// The selected pair `s` stopped answering: re-check the other pairs
    /// and move to the best one that answers. Pairs that answered after
    /// `s` last did stay valid (they work on the network as it is now).
    fn recover(&mut self, s: usize) {
        self.recovering = true;
        self.stats.recoveries += 1;
        self.round_checks = 0;
        self.pairs[s].valid = false;
        let since = self.pairs[s].last_response;
        for p in 0..self.pairs.len() {
            let fresh = self.pairs[p].valid
                && self.pairs[p].state == PairState::Succeeded
                && self.pairs[p].last_response > since;
            if p != s && !fresh && !matches!(self.pairs[p].state, PairState::InProgress { .. }) {
                self.pairs[p].state = PairState::Waiting;
                self.pairs[p].valid = false;
            }
        }
    }

    /// A verification ran out (see `maybe_verify`, `update_remote` and
    /// `network_changed`): when the selected pair did not answer since it
    /// started, move to the best pair that answered after it last did
    /// (a direct one if any, else one through a relay): the controlled
    /// side at once (the peer's end of the path is its unchanged socket,
    /// or its relay), the controlling side by nominating it.
    fn verify_expired(&mut self, now: Millis, since: Millis, rng: &mut dyn RngCore) {
        let Some(s) = self.selected else { return };
        let last = self.pairs[s].last_response;
        if last >= since {
            return;
        }
        let newer = (0..self.pairs.len())
            .filter(|&p| {
                p != s
                    && self.pairs[p].valid
                    && self.pairs[p].state == PairState::Succeeded
                    && self.pairs[p].last_response > last
            })
            .max_by_key(|&p| (self.is_direct_pair(p), self.pairs[p].priority));
        let Some(q) = newer else {
            // We moved and nothing answers yet: look again shortly.
            if self.moved == Some(since) && now < since + self.cfg.recover_after_ms {
                self.verify = Some(since);
                self.verify_due = now + self.cfg.rto_ms;
            }
            return;
        };
        self.moved = None;
        self.stats.peer_roams += 1;
        tracing::debug!(to = %self.path(q), "a move: a new pair answers, the selected one not");
        match self.role {
            IceRole::Controlled => self.select(now, q),
            IceRole::Controlling => {
                // A nomination of the old pair still in flight (ours
                // after the move) must not hold up the new one.
                if self.nominating == Some(s) {
                    self.nominating = None;
                    self.pairs[s].state = PairState::Succeeded;
                }
                self.recover(s);
                self.maybe_nominate(now, rng);
            }
        }
    }

    fn switch_role(&mut self) {
        self.role = match self.role {
            IceRole::Controlling => IceRole::Controlled,
            IceRole::Controlled => IceRole::Controlling,
        };
        self.reprioritise();
    }

    fn reprioritise(&mut self) {
        for i in 0..self.pairs.len() {
            let (_, lp) = self.bases[self.pairs[i].base];
            let rp = self.remotes[self.pairs[i].remote].priority;
            self.pairs[i].priority = match self.role {
                IceRole::Controlling => pair_priority(lp, rp),
                IceRole::Controlled => pair_priority(rp, lp),
            };
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_response(
        &mut self,
        now: Millis,
        via: Via,
        from: SocketAddr,
        p: usize,
        keepalive: bool,
        c: Check,
        rng: &mut dyn RngCore,
    ) {
        self.stats.responses_received += 1;
        let pair_via = self.bases[self.pairs[p].base].0.via();
        // Checks must be symmetric: the answer comes from where we sent.
        if from != self.remotes[self.pairs[p].remote].addr || via != pair_via {
            return;
        }
        if keepalive {
            self.keepalive = None;
            if matches!(c, Check::Success { .. }) {
                self.pairs[p].last_response = now;
                if self.selected == Some(p) {
                    // The keepalive went out after any verification began.
                    self.verify = None;
                    self.announced = None;
                }
                if self.recovering && self.selected == Some(p) {
                    // It was a hiccup: keep the pair.
                    self.recovering = false;
                    self.pairs[p].valid = true;
                }
            }
            return;
        }
        let PairState::InProgress { nominate, .. } = self.pairs[p].state else {
            return;
        };
        match c {
            Check::Success { mapped, .. } => {
                let pair = &mut self.pairs[p];
                pair.state = PairState::Succeeded;
                pair.valid = true;
                pair.mapped = Some(mapped);
                pair.last_response = now;
                if self.first_valid_at.is_none() {
                    self.first_valid_at = Some(now);
                }
                tracing::debug!(pair = %self.path(p), nominate, at_ms = now.since(self.started), "ICE check answered");
                if nominate && self.role == IceRole::Controlling {
                    self.nominating = None;
                    self.select(now, p);
                } else if self.role == IceRole::Controlled && self.pairs[p].peer_nominated {
                    self.select(now, p);
                } else if self.announced.is_some()
                    && let Some(v) = self.verify
                    && self.selected != Some(p)
                {
                    if self.is_direct_pair(p) {
                        // The peer said it moved and its new address answers.
                        self.announced = None;
                        self.verify = None;
                        self.verify_expired(now, v, rng);
                    } else {
                        // Through a relay: a direct pair checked as early
                        // would have answered by a retransmission from now.
                        self.verify_due = self.verify_due.min(now + self.cfg.rto_ms);
                    }
                }
            }
            Check::Error { code, .. } if code == check::ROLE_CONFLICT => {
                self.stats.role_conflicts += 1;
                self.switch_role();
                if nominate {
                    self.nominating = None;
                }
                self.start_check(now, p, false, rng);
            }
            _ => {
                tracing::debug!(pair = %self.path(p), at_ms = now.since(self.started), "ICE check refused");
                self.pairs[p].state = PairState::Failed;
                if nominate {
                    self.nominating = None;
                }
            }
        }
    }

    fn select(&mut self, now: Millis, p: usize) {
        if self.selected == Some(p) {
            return;
        }
        let to = self.path(p);
        match self.selected {
            None => {
                self.events.push_back(IceEvent::Connected {
                    path: to,
                    setup_ms: now.since(self.started),
                });
            }
            Some(old) => {
                let from = self.path(old);
                self.events.push_back(IceEvent::PathChanged { from, to });
            }
        }
        self.selected = Some(p);
        self.recovering = false;
        self.verify = None;
        self.announced = None;
        self.pairs[p].last_response = now;
        self.next_keepalive = now + self.cfg.keepalive_ms;
        if self.is_direct_pair(p) {
            self.next_reprobe = Millis::MAX;
            // A direct path is final: stop checking the rest.
            for q in &mut self.pairs {
                if q.state == PairState::Waiting {
                    q.state = PairState::Failed;
                }
            }
            self.triggered.clear();
        } else if self.next_reprobe == Millis::MAX {
            self.next_reprobe = now + self.cfg.reprobe_ms;
        }
    }

    /// The best valid pair, preferring direct ones.
    fn best_valid(&self) -> Option<usize> {
        (0..self.pairs.len())
            .filter(|&p| self.pairs[p].valid && self.pairs[p].state == PairState::Succeeded)
            .max_by_key(|&p| (self.is_direct_pair(p), self.pairs[p].priority))
    }

    fn direct_pending(&self) -> bool {
        (0..self.pairs.len()).any(|p| {
            self.is_direct_pair(p)
                && matches!(
                    self.pairs[p].state,
                    PairState::Waiting | PairState::InProgress { .. }
                )
        })
    }

    /// Controlling side: the pair to nominate and from when.
    fn nomination_due(&self) -> Option<(usize, Millis)> {
        if self.role != IceRole::Controlling || self.nominating.is_some() {
            return None;
        }
        let best = self.best_valid()?;
        if self.selected == Some(best) {
            return None;
        }
        if let Some(s) = self.selected
            && self.is_direct_pair(s)
            && !self.recovering
        {
            return None;
        }
        if self.is_direct_pair(best) {
            let at = self.first_valid_at.unwrap_or(Millis::ZERO) + self.cfg.settle_ms;
            Some((
                best,
                if self.direct_pending() {
                    at
                } else {
                    Millis::ZERO
                },
            ))
        } else if self.selected.is_none() || self.recovering {
            let at = self.started + self.cfg.relay_wait_ms;
            Some((
                best,
                if self.direct_pending() {
                    at
                } else {
                    Millis::ZERO
                },
            ))
        } else {
            None
        }
    }

    fn maybe_nominate(&mut self, now: Millis, rng: &mut dyn RngCore) {
        if let Some((best, at)) = self.nomination_due()
            && now >= at
        {
            tracing::debug!(pair = %self.path(best), at_ms = now.since(self.started), "ICE nominating");
            self.nominating = Some(best);
            // The nomination must not be cut by the round's budget.
            self.round_checks = self.round_checks.saturating_sub(1);
            self.start_check(now, best, true, rng);
        }
    }

    fn next_check(&mut self) -> Option<usize> {
        while let Some(p) = self.triggered.pop_front() {
            if self.pairs[p].state == PairState::Waiting {
                return Some(p);
            }
        }
        (0..self.pairs.len())
            .filter(|&p| self.pairs[p].state == PairState::Waiting)
            .max_by_key(|&p| self.pairs[p].priority)
    }

    pub fn handle_timeout(&mut self, now: Millis, rng: &mut dyn RngCore) {
        if self.phase == Phase::Failed {
            return;
        }
        // Retransmissions and failed checks.
        for p in 0..self.pairs.len() {
            if let PairState::InProgress {
                txid,
                sent,
                next_at,
                nominate,
            } = self.pairs[p].state
                && next_at <= now
            {
                if sent >= self.cfg.check_attempts {
                    tracing::debug!(pair = %self.path(p), at_ms = now.since(self.started), "ICE check timed out");
                    self.pairs[p].state = if self.pairs[p].valid {
                        PairState::Succeeded
                    } else {
                        PairState::Failed
                    };
                    if nominate {
                        self.nominating = None;
                    }
                } else {
                    self.pairs[p].state = PairState::InProgress {
                        txid,
                        sent: sent + 1,
                        next_at: now + self.cfg.rto(sent + 1),
                        nominate,
                    };
                    self.stats.retransmits += 1;
                    self.send_check(p, txid, nominate);
                }
            }
        }
        // One new check per pacing interval.
        if self.remote_pwd.is_some() && now >= self.next_pace {
            if self.round_checks >= self.cfg.max_checks_per_round {
                if self.next_check().is_some() {
                    self.stats.budget_exhausted += 1;
                }
            } else if let Some(p) = self.next_check() {
                self.start_check(now, p, false, rng);
                self.next_pace = now + self.cfg.pace_ms;
            }
        }
        self.maybe_nominate(now, rng);
        // Consent: keep the selected pair alive and notice its death.
        if let Some(s) = self.selected {
            if now >= self.pairs[s].last_response + self.cfg.consent_timeout_ms {
                self.fail(format!("path lost: {}", self.path(s)));
                return;
            }
            if let Some(v) = self.verify
                && now >= self.verify_due
            {
                self.verify = None;
                self.announced = None;
                self.verify_expired(now, v, rng);
            }
            let Some(s) = self.selected else { return };
            if !self.recovering && now >= self.pairs[s].last_response + self.cfg.recover_after_ms {
                // Silent: find another pair while consent lasts. The
                // selected pair stays in use (and keeps its keepalives)
                // until another is nominated.
                self.recover(s);
            }
            if now >= self.next_keepalive {
                let t = txid(rng);
                self.keepalive = Some((t, s));
                self.stats.keepalives += 1;
                self.send_check(s, t, false);
                self.next_keepalive = now + self.cfg.keepalive_ms;
            }
            if now >= self.next_reprobe {
                self.next_reprobe = now + self.cfg.reprobe_ms;
                self.stats.reprobes += 1;
                self.round_checks = 0;
                for p in 0..self.pairs.len() {
                    if self.is_direct_pair(p) && self.pairs[p].state == PairState::Failed {
                        self.pairs[p].state = PairState::Waiting;
                    }
                }
            }
        } else if now >= self.started + self.cfg.connect_timeout_ms {
            let reason = if self.remote_pwd.is_none() {
                "no answer from the peer".to_string()
            } else {
                format!(
                    "no candidate pair worked ({} pairs, {} checks)",
                    self.pairs.len(),
                    self.stats.checks_sent
                )
            };
            self.fail(reason);
        }
    }

    fn fail(&mut self, reason: String) {
        self.phase = Phase::Failed;
        self.selected = None;
        self.events.push_back(IceEvent::Failed { reason });
    }

    /// Stop: no more checks or keepalives.
    pub fn close(&mut self) {
        self.phase = Phase::Failed;
        self.selected = None;
    }

    pub fn poll_timeout(&self) -> Option<Millis> {
        if self.phase == Phase::Failed {
            return None;
        }
        let mut t = Millis::MAX;
        for p in &self.pairs {
            if let PairState::InProgress { next_at, .. } = p.state {
                t = t.min(next_at);
            }
        }
        if self.remote_pwd.is_some()
            && self.round_checks < self.cfg.max_checks_per_round
            && self.pairs.iter().any(|p| p.state == PairState::Waiting)
        {
            t = t.min(self.next_pace);
        }
        if let Some((_, at)) = self.nomination_due() {
            t = t.min(at);
        }
        match self.selected {
            Some(s) => {
                if !self.recovering {
                    t = t.min(self.pairs[s].last_response + self.cfg.recover_after_ms);
                }
                if self.verify.is_some() {
                    t = t.min(self.verify_due);
                }
                t = t
                    .min(self.next_keepalive)
                    .min(self.next_reprobe)
                    .min(self.pairs[s].last_response + self.cfg.consent_timeout_ms);
            }
            None => t = t.min(self.started + self.cfg.connect_timeout_ms),
        }
        Some(t)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }

    /// Remote candidates known so far (offered, peer-reflexive, predicted).
    pub fn remote_candidates(&self) -> &[Candidate] {
        &self.remotes
    }

    /// Pairs that answered, as paths.
    pub fn valid_paths(&self) -> Vec<Path> {
        (0..self.pairs.len())
            .filter(|&p| self.pairs[p].valid)
            .map(|p| self.path(p))
            .collect()
    }

    /// Pairs by state, for diagnostics: (waiting, in progress, succeeded, failed).
    pub fn pair_counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for p in &self.pairs {
            match p.state {
                PairState::Waiting => c.0 += 1,
                PairState::InProgress { .. } => c.1 += 1,
                PairState::Succeeded => c.2 += 1,
                PairState::Failed => c.3 += 1,
            }
        }
        c
    }
}

/// Which agent a STUN datagram is for: requests by the local ufrag in
/// USERNAME, responses by transaction id.
pub fn owner<'a, K: Clone + 'a>(
    agents: impl Iterator<Item = (&'a K, &'a IceAgent)>,
    bytes: &[u8],
) -> Option<K> {
    let peek = check::peek(bytes)?;
    let agents: Vec<(&K, &IceAgent)> = agents.collect();
    match peek.class {
        MessageClass::Request => {
            let u = peek.username?;
            let (l, _) = u.split_once(':')?;
            agents
                .iter()
                .find(|(_, a)| a.local_ufrag == l)
                .map(|(k, _)| (*k).clone())
        }
        MessageClass::SuccessResponse | MessageClass::ErrorResponse => agents
            .iter()
            .find(|(_, a)| a.transaction(&peek.txid).is_some())
            .map(|(k, _)| (*k).clone()),
        MessageClass::Indication => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::sim::ice::{Env, Roam, SimOptions, run_pair};

    /// A call between a full-cone NAT and a symmetric one goes direct;
    /// the full-cone side moves behind a symmetric NAT of its own, where
    /// only the other side's relay works. The mover notices 250 ms after
    /// the move (the driver's address watch): datagrams every 20 ms flow
    /// both ways again within 1 s of the move, on a relayed path, whether
    /// the mover controls ICE or not.
    #[test]
    fn a_move_that_needs_the_relay_keeps_the_call() {
        for (seed, side) in [(41, 0usize), (42, 1)] {
            let (a, b) = if side == 0 {
                (Env::FullCone, Env::Symmetric)
            } else {
                (Env::Symmetric, Env::FullCone)
            };
            let roam = Roam {
                side,
                at_ms: 3_000,
                to: Env::Symmetric,
                notice_ms: Some(250),
            };
            let o = run_pair(
                a,
                b,
                SimOptions {
                    seed,
                    app_interval_ms: Some(20),
                    roam: Some(roam),
                    run_after_connect_ms: roam.at_ms + 5_000,
                    limit_ms: 30_000,
                    ..SimOptions::default()
                },
            );
            let roamed = o.roamed_at.expect("the roam happened");
            assert!(
                o.connected
                    .iter()
                    .all(|c| c.is_some_and(|(p, _)| p.is_direct())),
                "side {side}: first paths {:?}",
                o.connected
            );
            assert!(
                o.both_connected()
                    && o.final_path
                        .iter()
                        .all(|p| p.is_some_and(|p| !p.is_direct())),
                "side {side}: final {:?}, failed {:?}",
                o.final_path,
                o.failed
            );
            // The longest silence each side heard from the move on.
            let mut gaps = [0; 2];
            for (i, at) in o.app_received_at.iter().enumerate() {
                let mut last = roamed;
                let mut gap = 0;
                for &t in at.iter().filter(|&&t| t >= roamed) {
                    gap = gap.max(t.since(last));
                    last = t;
                }
                let end = roamed + 4_000;
                gap = gap.max(end.since(last.min(end)));
                assert!(
                    gap <= 1_000,
                    "side {side} moves: side {i} heard a silence of {gap} ms"
                );
                gaps[i] = gap;
            }
            println!(
                "side {side} moves: longest silence A {} ms, B {} ms",
                gaps[0], gaps[1]
            );
        }
    }
}
