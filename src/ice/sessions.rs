//! ICE sessions of one client, sans-IO: our candidates (host addresses of
//! the main socket, what the supernodes observed, relay allocations), one
//! [`IceAgent`] per peer, the offer/answer exchange, and the routing of
//! STUN datagrams to the right agent. The node driver feeds it datagrams,
//! commands and `now`, sends its transmits and offers, and starts the peer
//! link on the path it selects.
//!
//! A connection goes: `connect(user)` (after the caller looked the user up)
//! -> [`SessionEvent::SendOffer`] -> the callee's `on_offer` -> its
//! `SendOffer { answer: true }` -> the caller's `on_answer`; both agents
//! check at once, and [`SessionEvent::Selected`] says which path to run the
//! peer link over (and again when the path changes).
//!
//! Relayed candidates: when the node can allocate on a TURN relay
//! ([`IceSessions::set_relay_gathering`]) and holds no allocation, a new
//! session (ours or the peer's offer) waits for one:
//! [`SessionEvent::GatherRelay`] asks the driver to allocate, and
//! [`IceSessions::add_relay`] or [`IceSessions::relay_unavailable`] (or
//! `relay_gather_ms`) lets the waiting sessions start.
//! [`SessionEvent::RemoteCandidates`] names the peer's addresses, which the
//! relay must permit. After a path change the link may still address the
//! old remote: [`IceSessions::route_to`] sends it over the current path.

use super::agent::{IceAgent, IceConfig, IceEvent, IceRole};
use super::offer::{IceOffer, MappingHint};
use super::{Candidate, CandidateKind, IceError, Path, Transmit, Via};
use crate::time::Millis;
use rand::RngCore;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

/// Sessions at once; more are refused.
pub const MAX_SESSIONS: usize = 64;

/// What the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// Carry this offer (or answer) to `to` through the supernodes.
    SendOffer {
        to: String,
        offer: IceOffer,
        answer: bool,
    },
    /// ICE chose `path` for `user` (`first`: the first time; otherwise the
    /// path changed from `from`). `setup_ms` counts from the start.
    Selected {
        user: String,
        path: Path,
        from: Option<Path>,
        setup_ms: u64,
        controlling: bool,
    },
    Failed {
        user: String,
        reason: String,
    },
    /// Sessions wait for a relayed candidate: allocate one, then call
    /// [`IceSessions::add_relay`] (or [`IceSessions::relay_unavailable`]).
    GatherRelay,
    /// The peer's candidates: our relay must let them send to us.
    RemoteCandidates {
        user: String,
        addrs: Vec<SocketAddr>,
    },
}

#[derive(Debug)]
struct Session {
    agent: IceAgent,
    started: Millis,
    /// Remote ends of earlier paths (the link may still address them).
    former: Vec<SocketAddr>,
}

/// A session waiting for the relay allocation.
#[derive(Debug)]
enum Parked {
    Connect { user: String, started: Millis },
    Offer { from: String, offer: IceOffer },
}

/// Back off this long after the relay could not be had.
const RELAY_RETRY_MS: u64 = 30_000;

/// Every ICE session of this client.
#[derive(Debug)]
pub struct IceSessions {
    cfg: IceConfig,
    host: Vec<SocketAddr>,
    srflx: Vec<SocketAddr>,
    relays: Vec<(SocketAddr, SocketAddr)>,
    mapping: MappingHint,
    sessions: BTreeMap<String, Session>,
    events: VecDeque<SessionEvent>,
    transmits: VecDeque<Transmit>,
    /// STUN datagrams no session took.
    pub unclaimed: u64,
    /// The driver can allocate relayed candidates.
    gather_relays: bool,
    /// Waiting for an allocation until then.
    gathering_until: Option<Millis>,
    /// No relay to be had until then.
    relay_retry_at: Millis,
    parked: Vec<Parked>,
}

impl IceSessions {
    pub fn new(cfg: IceConfig) -> Self {
        IceSessions {
            cfg,
            host: Vec::new(),
            srflx: Vec::new(),
            relays: Vec::new(),
            mapping: MappingHint::Unknown,
            sessions: BTreeMap::new(),
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            unclaimed: 0,
            gather_relays: false,
            gathering_until: None,
            relay_retry_at: Millis::ZERO,
            parked: Vec::new(),
        }
    }

    /// Whether new sessions wait for a relay allocation when there is
    /// none (the node has a TURN client to make one).
    pub fn set_relay_gathering(&mut self, on: bool) {
        self.gather_relays = on;
    }

    /// Should a new session wait for a relay? Starts the gathering.
    fn must_wait(&mut self, now: Millis) -> bool {
        if !self.gather_relays || !self.relays.is_empty() || now < self.relay_retry_at {
            return false;
        }
        if self.gathering_until.is_none() {
            self.gathering_until = Some(now + self.cfg.relay_gather_ms);
            self.events.push_back(SessionEvent::GatherRelay);
        }
        true
    }

    /// Start the sessions that waited for the relay.
    fn release(&mut self, now: Millis, rng: &mut dyn RngCore) {
        self.gathering_until = None;
        for p in std::mem::take(&mut self.parked) {
            match p {
                Parked::Connect { user, started } => {
                    if let Err(e) = self.start_connect(now, started, &user, rng) {
                        self.events.push_back(SessionEvent::Failed {
                            user,
                            reason: e.to_string(),
                        });
                    }
                }
                Parked::Offer { from, offer } => self.start_offer(now, &from, &offer, rng),
            }
        }
    }

    /// No relay allocation can be had now: waiting sessions start without.
    pub fn relay_unavailable(&mut self, now: Millis, rng: &mut dyn RngCore) {
        self.relay_retry_at = now + RELAY_RETRY_MS;
        self.release(now, rng);
    }

    /// The allocation on `server` is gone: new sessions gather again.
    pub fn remove_relay(&mut self, server: SocketAddr) {
        self.relays.retain(|(s, _)| *s != server);
    }

    /// Sessions waiting for the relay.
    pub fn waiting(&self) -> usize {
        self.parked.len()
    }

    /// The main socket's addresses (host candidates).
    pub fn set_host(&mut self, addrs: Vec<SocketAddr>) {
        self.host = addrs;
    }

    /// Our address as a supernode (or STUN server) saw it, in the order
    /// observed. Different ports for different observers mean a
    /// destination-dependent mapping, which the offer announces.
    pub fn observe(&mut self, addr: SocketAddr) {
        if !self.srflx.contains(&addr) {
            self.srflx.push(addr);
            if self.srflx.len() > 4 {
                self.srflx.remove(0);
            }
        }
        if self.mapping != MappingHint::Blocked {
            self.mapping = if self.srflx.iter().any(|a| a.ip() == addr.ip() && *a != addr) {
                MappingHint::DestinationDependent
            } else if self.mapping == MappingHint::Unknown {
                MappingHint::EndpointIndependent
            } else {
                self.mapping
            };
        }
    }

    /// What NAT detection found; overrides the guess from observations.
    pub fn set_mapping(&mut self, m: MappingHint) {
        self.mapping = m;
    }

    /// A TURN allocation: `relayed` on `server`. Sessions that waited for
    /// it start now.
    pub fn add_relay(
        &mut self,
        now: Millis,
        server: SocketAddr,
        relayed: SocketAddr,
        rng: &mut dyn RngCore,
    ) {
        if !self.relays.contains(&(server, relayed)) {
            self.relays.push((server, relayed));
        }
        self.relay_retry_at = Millis::ZERO;
        self.release(now, rng);
    }

    /// Our relay allocations, `(server, relayed address)`.
    pub fn relays(&self) -> &[(SocketAddr, SocketAddr)] {
        &self.relays
    }

    pub fn mapping(&self) -> MappingHint {
        self.mapping
    }

    fn locals(&self) -> Vec<Candidate> {
        // RFC 8421: both families, IPv6 preferred, intermixed.
        let of = |kind, addrs: &[SocketAddr]| {
            let prefs = super::local_preferences(addrs);
            addrs
                .iter()
                .zip(prefs)
                .map(move |(a, p)| Candidate::new(kind, *a, p))
                .collect::<Vec<_>>()
        };
        let mut v = of(CandidateKind::Host, &self.host);
        v.extend(of(CandidateKind::ServerReflexive, &self.srflx));
        v
    }

    fn agent(&self, role: IceRole, session: u64, now: Millis, rng: &mut dyn RngCore) -> IceAgent {
        IceAgent::new(
            self.cfg.clone(),
            role,
            session,
            now,
            self.locals(),
            &self.relays,
            self.mapping,
            rng,
        )
    }

    /// Start connecting to `user` (we call, we control). `started` is when
    /// the user asked, so setup time includes the lookup.
    pub fn connect(
        &mut self,
        now: Millis,
        started: Millis,
        user: &str,
        rng: &mut dyn RngCore,
    ) -> Result<(), IceError> {
        if self.sessions.len() + self.parked.len() >= MAX_SESSIONS
            && !self.sessions.contains_key(user)
        {
            return Err(IceError::Credentials);
        }
        if self.must_wait(now) {
            self.parked
                .retain(|p| !matches!(p, Parked::Connect { user: u, .. } if u == user));
            self.parked.push(Parked::Connect {
                user: user.to_owned(),
                started,
            });
            return Ok(());
        }
        self.start_connect(now, started, user, rng)
    }

    fn start_connect(
        &mut self,
        now: Millis,
        started: Millis,
        user: &str,
        rng: &mut dyn RngCore,
    ) -> Result<(), IceError> {
        if self.sessions.len() >= MAX_SESSIONS && !self.sessions.contains_key(user) {
            return Err(IceError::Credentials);
        }
        let session = rng.next_u64();
        let agent = self.agent(IceRole::Controlling, session, now, rng);
        self.events.push_back(SessionEvent::SendOffer {
            to: user.to_owned(),
            offer: agent.local_offer(),
            answer: false,
        });
        self.sessions.insert(
            user.to_owned(),
            Session {
                agent,
                started,
                former: Vec::new(),
            },
        );
        Ok(())
    }

    /// An offer from `from`: answer it and start checking. A new offer
    /// replaces an older session with the same user.
    pub fn on_offer(&mut self, now: Millis, from: &str, offer: &IceOffer, rng: &mut dyn RngCore) {
        let known = self
            .sessions
            .get(from)
            .is_some_and(|s| s.agent.session() == offer.session);
        if !known && self.must_wait(now) {
            self.parked
                .retain(|p| !matches!(p, Parked::Offer { from: f, .. } if f == from));
            if self.parked.len() < MAX_SESSIONS {
                self.parked.push(Parked::Offer {
                    from: from.to_owned(),
                    offer: offer.clone(),
                });
            }
            return;
        }
        self.start_offer(now, from, offer, rng);
    }

    fn start_offer(&mut self, now: Millis, from: &str, offer: &IceOffer, rng: &mut dyn RngCore) {
        if let Some(s) = self.sessions.get_mut(from)
            && s.agent.session() == offer.session
        {
            // The peer moved and names its new candidates.
            if s.agent.update_remote(now, offer) > 0 {
                tracing::info!(peer = from, "the peer moved: checking its new candidates");
                self.permit(from, offer);
                return;
            }
            // A duplicate: repeat our answer.
            self.events.push_back(SessionEvent::SendOffer {
                to: from.to_owned(),
                offer: s.agent.local_offer(),
                answer: true,
            });
            return;
        }
        if self.sessions.len() >= MAX_SESSIONS && !self.sessions.contains_key(from) {
            return;
        }
        let mut agent = self.agent(IceRole::Controlled, offer.session, now, rng);
        if !agent.set_remote(now, offer) {
            return;
        }
        self.permit(from, offer);
        self.events.push_back(SessionEvent::SendOffer {
            to: from.to_owned(),
            offer: agent.local_offer(),
            answer: true,
        });
        self.sessions.insert(
            from.to_owned(),
            Session {
                agent,
                started: now,
                former: Vec::new(),
            },
        );
    }

    /// With a relay, ask for permissions for the peer's addresses.
    fn permit(&mut self, user: &str, offer: &IceOffer) {
        if !self.relays.is_empty() && !offer.candidates.is_empty() {
            self.events.push_back(SessionEvent::RemoteCandidates {
                user: user.to_owned(),
                addrs: offer.candidates.iter().map(|c| c.addr).collect(),
            });
        }
    }

    /// The answer to our offer.
    pub fn on_answer(&mut self, now: Millis, from: &str, answer: &IceOffer) -> bool {
        let ok = match self.sessions.get_mut(from) {
            Some(s) if s.agent.session() == answer.session && s.agent.has_remote() => {
                // The peer moved and names its new candidates.
                let moved = s.agent.update_remote(now, answer) > 0;
                if moved {
                    tracing::info!(peer = from, "the peer moved: checking its new candidates");
                }
                moved
            }
            Some(s) if s.agent.session() == answer.session => s.agent.set_remote(now, answer),
            _ => false,
        };
        if ok {
            self.permit(from, answer);
        }
        ok
    }

    /// A STUN datagram from the network; false when no session took it
    /// (the NAT detector's or the TURN client's, or stray).
    pub fn handle_stun(
        &mut self,
        now: Millis,
        via: Via,
        from: SocketAddr,
        bytes: &[u8],
        rng: &mut dyn RngCore,
    ) -> bool {
        let owner = super::agent::owner(self.sessions.iter().map(|(k, s)| (k, &s.agent)), bytes);
        let Some(user) = owner else {
            return false;
        };
        let took = self
            .sessions
            .get_mut(&user)
            .is_some_and(|s| s.agent.handle_stun(now, via, from, bytes, rng));
        self.collect(now);
        took
    }

    /// Our network changed (a new local address): what was observed of
    /// our addresses is stale (new sessions start from what the next
    /// attachments observe), and every session with a path tells its
    /// peer where we are now ([`super::agent::IceAgent::network_changed`]).
    /// Returns how many sessions had a path.
    pub fn network_changed(&mut self, now: Millis, rng: &mut dyn RngCore) -> usize {
        self.srflx.clear();
        self.host.clear();
        if self.mapping != MappingHint::Blocked {
            self.mapping = MappingHint::Unknown;
        }
        let mut moved = 0;
        for s in self.sessions.values_mut() {
            if s.agent.selected().is_some() {
                moved += 1;
                s.agent.network_changed(now, rng);
            }
        }
        self.collect(now);
        moved
    }

    pub fn handle_timeout(&mut self, now: Millis, rng: &mut dyn RngCore) {
        if self.gathering_until.is_some_and(|t| t <= now) {
            // The relay did not come in time: go without it.
            self.relay_unavailable(now, rng);
        }
        for s in self.sessions.values_mut() {
            if s.agent.poll_timeout().is_some_and(|t| t <= now) {
                s.agent.handle_timeout(now, rng);
            }
        }
        self.collect(now);
    }

    fn collect(&mut self, _now: Millis) {
        let mut dead = Vec::new();
        for (user, s) in self.sessions.iter_mut() {
            while let Some(t) = s.agent.poll_transmit() {
                self.transmits.push_back(t);
            }
            while let Some(e) = s.agent.poll_event() {
                let controlling = s.agent.role() == IceRole::Controlling;
                match e {
                    IceEvent::Connected { path, setup_ms } => {
                        let base = s.agent.started_at();
                        self.events.push_back(SessionEvent::Selected {
                            user: user.clone(),
                            path,
                            from: None,
                            setup_ms: setup_ms + base.since(s.started),
                            controlling,
                        })
                    }
                    IceEvent::PathChanged { from, to } => {
                        if from.remote != to.remote && !s.former.contains(&from.remote) {
                            if s.former.len() >= 4 {
                                s.former.remove(0);
                            }
                            s.former.push(from.remote);
                        }
                        self.events.push_back(SessionEvent::Selected {
                            user: user.clone(),
                            path: to,
                            from: Some(from),
                            setup_ms: 0,
                            controlling,
                        })
                    }
                    IceEvent::Failed { reason } => {
                        dead.push(user.clone());
                        self.events.push_back(SessionEvent::Failed {
                            user: user.clone(),
                            reason,
                        });
                    }
                }
            }
        }
        for u in dead {
            self.sessions.remove(&u);
        }
    }

    pub fn poll_timeout(&self) -> Option<Millis> {
        self.sessions
            .values()
            .filter_map(|s| s.agent.poll_timeout())
            .chain(self.gathering_until)
            .min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// The path in use to `user`.
    pub fn selected(&self, user: &str) -> Option<Path> {
        self.sessions.get(user)?.agent.selected()
    }

    /// Which user, if any, has `addr` as the remote end of its path (or
    /// of an earlier one).
    pub fn user_at(&self, addr: SocketAddr) -> Option<&str> {
        self.sessions
            .iter()
            .find(|(_, s)| s.agent.selected().is_some_and(|p| p.remote == addr))
            .or_else(|| {
                self.sessions
                    .iter()
                    .find(|(_, s)| s.agent.selected().is_some() && s.former.contains(&addr))
            })
            .map(|(u, _)| u.as_str())
    }

    /// Where a datagram for `dst` goes: `dst` over its session's path, or
    /// for the remote end of an earlier path, the current one (the peer's
    /// link follows, as it roams on authenticated data).
    pub fn route_to(&self, dst: SocketAddr) -> (Via, SocketAddr) {
        if let Some(p) = self
            .sessions
            .values()
            .filter_map(|s| s.agent.selected())
            .find(|p| p.remote == dst)
        {
            return (p.via, dst);
        }
        self.sessions
            .values()
            .filter(|s| s.former.contains(&dst))
            .find_map(|s| s.agent.selected())
            .map_or((Via::Direct, dst), |p| (p.via, p.remote))
    }

    /// How to reach `dst`: through a relay when a session's path says so.
    pub fn route(&self, dst: SocketAddr) -> Via {
        self.sessions
            .values()
            .filter_map(|s| s.agent.selected())
            .find(|p| p.remote == dst)
            .map_or(Via::Direct, |p| p.via)
    }

    /// Our new server-reflexive address is known after a network change
    /// ([`IceSessions::network_changed`]): every session with a path
    /// sends its peer our new candidates (the offer, or the answer, again
    /// with the same credentials), so that a peer behind an address-
    /// dependent filter checks them and opens its filter to us. Returns
    /// how many sessions did.
    pub fn readvertise(&mut self) -> usize {
        let locals = self.locals();
        let mut n = 0;
        for (user, s) in self.sessions.iter_mut() {
            if s.agent.selected().is_none() {
                continue;
            }
            s.agent.set_local_addresses(&locals);
            n += 1;
            self.events.push_back(SessionEvent::SendOffer {
                to: user.clone(),
                offer: s.agent.local_offer(),
                answer: s.agent.role() == IceRole::Controlled,
            });
        }
        n
    }

    /// Whether any session has a path in use.
    pub fn any_selected(&self) -> bool {
        self.sessions.values().any(|s| s.agent.selected().is_some())
    }

    /// When `user`'s attempt started (for setup times).
    pub fn started(&self, user: &str) -> Option<Millis> {
        self.sessions.get(user).map(|s| s.started)
    }

    pub fn close(&mut self, user: &str) {
        self.sessions.remove(user);
        self.parked.retain(|p| match p {
            Parked::Connect { user: u, .. } => u != user,
            Parked::Offer { from, .. } => from != user,
        });
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn drain(s: &mut IceSessions) -> Vec<SessionEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    #[test]
    fn sessions_wait_for_the_relay_then_offer_it() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut s = IceSessions::new(IceConfig::default());
        s.set_host(vec![addr("10.0.0.2:5000")]);
        s.set_relay_gathering(true);
        s.connect(Millis(100), Millis(90), "bob", &mut rng).unwrap();
        assert_eq!(drain(&mut s), vec![SessionEvent::GatherRelay]);
        assert_eq!(s.waiting(), 1);
        assert_eq!(
            s.poll_timeout(),
            Some(Millis(100) + IceConfig::default().relay_gather_ms)
        );
        // A second attempt does not ask again.
        s.connect(Millis(120), Millis(120), "carol", &mut rng)
            .unwrap();
        assert!(drain(&mut s).is_empty());
        let (server, relayed) = (addr("198.51.100.1:7710"), addr("198.51.100.1:50000"));
        s.add_relay(Millis(150), server, relayed, &mut rng);
        let evs = drain(&mut s);
        assert_eq!(evs.len(), 2, "{evs:?}");
        for e in evs {
            let SessionEvent::SendOffer { offer, answer, .. } = e else {
                panic!("{e:?}")
            };
            assert!(!answer);
            assert!(
                offer
                    .candidates
                    .iter()
                    .any(|c| c.kind == CandidateKind::Relayed && c.addr == relayed)
            );
        }
        assert_eq!(s.started("bob"), Some(Millis(90)));
        // With the allocation in hand, new sessions start at once.
        s.connect(Millis(200), Millis(200), "dave", &mut rng)
            .unwrap();
        assert!(matches!(
            drain(&mut s)[..],
            [SessionEvent::SendOffer { .. }]
        ));
    }

    #[test]
    fn a_repeated_offer_with_new_candidates_updates_the_session() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut s = IceSessions::new(IceConfig::default());
        s.set_host(vec![addr("10.0.0.2:5000")]);
        let mut peer = IceSessions::new(IceConfig::default());
        peer.set_host(vec![addr("10.0.0.3:5000")]);
        peer.connect(Millis(0), Millis(0), "bob", &mut rng).unwrap();
        let Some(SessionEvent::SendOffer { offer, .. }) = peer.poll_event() else {
            panic!()
        };
        s.on_offer(Millis(10), "alice", &offer, &mut rng);
        assert!(matches!(
            drain(&mut s)[..],
            [SessionEvent::SendOffer { answer: true, .. }]
        ));
        let remotes = |s: &IceSessions| s.sessions["alice"].agent.remote_candidates().len();
        assert_eq!(remotes(&s), 1);
        // The same offer again: a duplicate, answered again.
        s.on_offer(Millis(20), "alice", &offer, &mut rng);
        assert!(matches!(
            drain(&mut s)[..],
            [SessionEvent::SendOffer { answer: true, .. }]
        ));
        // Alice moved: the offer again, with her new address.
        let mut moved = offer.clone();
        moved.candidates.push(Candidate::new(
            CandidateKind::ServerReflexive,
            addr("203.0.113.7:41000"),
            65535,
        ));
        s.on_offer(Millis(30), "alice", &moved, &mut rng);
        assert!(drain(&mut s).is_empty());
        assert_eq!(remotes(&s), 2);
        // Other credentials are no update (nor a restart): nothing changes.
        let mut other = moved.clone();
        other.pwd = "x".repeat(offer.pwd.len());
        other.candidates.push(Candidate::new(
            CandidateKind::ServerReflexive,
            addr("203.0.113.8:41000"),
            65535,
        ));
        s.on_offer(Millis(40), "alice", &other, &mut rng);
        assert_eq!(remotes(&s), 2);
    }

    #[test]
    fn without_a_relay_in_time_sessions_start_anyway() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut s = IceSessions::new(IceConfig::default());
        s.set_host(vec![addr("10.0.0.2:5000")]);
        s.set_relay_gathering(true);
        let mut peer = IceSessions::new(IceConfig::default());
        peer.set_host(vec![addr("10.0.0.3:5000")]);
        peer.connect(Millis(0), Millis(0), "alice", &mut rng)
            .unwrap();
        let Some(SessionEvent::SendOffer { offer, .. }) = peer.poll_event() else {
            panic!()
        };
        // The offer waits for our relay, which never comes.
        s.on_offer(Millis(10), "bob", &offer, &mut rng);
        assert_eq!(drain(&mut s), vec![SessionEvent::GatherRelay]);
        let t = s.poll_timeout().unwrap();
        s.handle_timeout(t, &mut rng);
        assert!(matches!(
            drain(&mut s)[..],
            [SessionEvent::SendOffer { answer: true, .. }]
        ));
        // Nor is it asked for again at once.
        s.connect(t + 1, t + 1, "carol", &mut rng).unwrap();
        assert!(matches!(
            drain(&mut s)[..],
            [SessionEvent::SendOffer { answer: false, .. }]
        ));
    }
}
