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

use super::agent::{IceAgent, IceConfig, IceEvent, IceRole};
use super::offer::{IceOffer, MappingHint};
use super::{Candidate, CandidateKind, IceError, Path, Transmit, Via};
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
}

#[derive(Debug)]
struct Session {
    agent: IceAgent,
    started: u64,
}

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
        }
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

    /// A TURN allocation: `relayed` on `server`.
    pub fn add_relay(&mut self, server: SocketAddr, relayed: SocketAddr) {
        if !self.relays.contains(&(server, relayed)) {
            self.relays.push((server, relayed));
        }
    }

    pub fn mapping(&self) -> MappingHint {
        self.mapping
    }

    fn locals(&self) -> Vec<Candidate> {
        let mut v: Vec<Candidate> = self
            .host
            .iter()
            .enumerate()
            .map(|(i, a)| Candidate::new(CandidateKind::Host, *a, 65535 - i as u16))
            .collect();
        v.extend(
            self.srflx
                .iter()
                .enumerate()
                .map(|(i, a)| Candidate::new(CandidateKind::ServerReflexive, *a, 65535 - i as u16)),
        );
        v
    }

    fn agent(&self, role: IceRole, session: u64, now: u64, rng: &mut dyn RngCore) -> IceAgent {
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
        now: u64,
        started: u64,
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
        self.sessions
            .insert(user.to_owned(), Session { agent, started });
        Ok(())
    }

    /// An offer from `from`: answer it and start checking. A new offer
    /// replaces an older session with the same user.
    pub fn on_offer(&mut self, now: u64, from: &str, offer: &IceOffer, rng: &mut dyn RngCore) {
        if let Some(s) = self.sessions.get(from)
            && s.agent.session() == offer.session
        {
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
            },
        );
    }

    /// The answer to our offer.
    pub fn on_answer(&mut self, now: u64, from: &str, answer: &IceOffer) -> bool {
        match self.sessions.get_mut(from) {
            Some(s) if s.agent.session() == answer.session => s.agent.set_remote(now, answer),
            _ => false,
        }
    }

    /// A STUN datagram from the network; false when no session took it
    /// (the NAT detector's or the TURN client's, or stray).
    pub fn handle_stun(
        &mut self,
        now: u64,
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

    pub fn handle_timeout(&mut self, now: u64, rng: &mut dyn RngCore) {
        for s in self.sessions.values_mut() {
            if s.agent.poll_timeout().is_some_and(|t| t <= now) {
                s.agent.handle_timeout(now, rng);
            }
        }
        self.collect(now);
    }

    fn collect(&mut self, _now: u64) {
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
                            setup_ms: setup_ms + base.saturating_sub(s.started),
                            controlling,
                        })
                    }
                    IceEvent::PathChanged { from, to } => {
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

    pub fn poll_timeout(&self) -> Option<u64> {
        self.sessions
            .values()
            .filter_map(|s| s.agent.poll_timeout())
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

    /// Which user, if any, has `addr` as the remote end of its path.
    pub fn user_at(&self, addr: SocketAddr) -> Option<&str> {
        self.sessions
            .iter()
            .find(|(_, s)| s.agent.selected().is_some_and(|p| p.remote == addr))
            .map(|(u, _)| u.as_str())
    }

    /// How to reach `dst`: through a relay when a session's path says so.
    pub fn route(&self, dst: SocketAddr) -> Via {
        self.sessions
            .values()
            .filter_map(|s| s.agent.selected())
            .find(|p| p.remote == dst)
            .map_or(Via::Direct, |p| p.via)
    }

    /// When `user`'s attempt started (for setup times).
    pub fn started(&self, user: &str) -> Option<u64> {
        self.sessions.get(user).map(|s| s.started)
    }

    pub fn close(&mut self, user: &str) {
        self.sessions.remove(user);
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}
