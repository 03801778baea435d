//! Peer-to-peer connections on a client: the sub-driver around the ICE
//! sessions ([`IceSessions`]) and the ways their traffic leaves
//! ([`paths`]: relayed candidates, TCP when UDP is blocked).
//!
//! A [`PeerCommand::Connect`] (or a call, through the client driver)
//! looks the user up; once their record says they are reachable, ICE
//! gathers and sends an offer sealed in an envelope (kinds
//! [`ENVELOPE_OFFER`]/[`ENVELOPE_ANSWER`], routed here by the dispatcher),
//! probes the candidate pairs from the main socket, and when a path is
//! selected the caller opens a link session over it. The session's
//! certificate must name the user we meant: then [`PeerEvent::Connected`].
//! Failures on the way (lookup, offer envelope, ICE, the link closing)
//! come out as [`PeerEvent::Failed`]. Events wait in a queue the client
//! driver drains after each step (it tells the calls first).

mod paths;

pub use paths::PathOptions;

use super::base::Base;
use crate::ice::offer::{ENVELOPE_ANSWER, ENVELOPE_OFFER};
use crate::ice::{IceConfig, IceOffer, IceSessions, SessionEvent, Via};
use crate::identity::Role;
use crate::link::CloseReason;
use crate::node::peer::{self, PeerEvent};
use crate::overlay::{ClientCore, ClientEvent, EnvelopeId, LookupOutcome};
use crate::time::Millis;
use paths::PeerPaths;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// What the node's owner asks of the peer connections.
#[derive(Debug)]
pub enum PeerCommand {
    /// Connect to a user peer to peer: look them up, exchange ICE
    /// candidates, probe, and open a link session over the chosen path.
    Connect { username: String },
    /// An ICE offer (or answer) from `from`, as [`PeerEvent::Signal`]
    /// produced it on their side.
    IceSignal {
        from: String,
        bytes: Vec<u8>,
        answer: bool,
    },
}

/// The driver state this sub-driver works with besides its own.
pub(super) struct Cx<'a> {
    pub now: Millis,
    pub base: &'a mut Base,
    pub core: &'a mut ClientCore,
}

/// ICE sessions and paths of one client; see the module docs.
pub(super) struct Peers {
    pub ice: IceSessions,
    /// Relayed candidates and TCP streams (`paths`).
    paths: PeerPaths,
    /// Connect commands waiting for their lookup: user -> when asked.
    connecting: HashMap<String, Millis>,
    /// Our host candidates, at most one per family: each found on the
    /// first attachment over that family (a dual-stack socket attached
    /// over IPv6 and IPv4 has both), with the supernode it was found
    /// towards (the address watch asks the routing table again).
    hosts: Vec<(SocketAddr, SocketAddr)>,
    /// The next check of our host addresses (see [`Peers::watch`]), and
    /// the last one.
    watch_at: Millis,
    watched_at: Millis,
    /// Send errors on the main socket already looked into.
    errors_seen: u64,
    /// Times our host address changed (a new network).
    pub network_changes: u64,
    /// After a network change: Binding requests to the supernodes our
    /// host candidates were found towards, for our new server-reflexive
    /// address (the peers get it in a repeated offer). Their transaction
    /// ids (at most [`MAX_REBIND_TIDS`]), sends left and the next one.
    rebind: Vec<[u8; 12]>,
    rebind_left: u32,
    rebind_at: Millis,
    /// STUN requests of ours waiting for the socket.
    stun_out: Vec<(SocketAddr, Vec<u8>)>,
    /// Envelopes carrying our ICE offers and answers, by id: to whom.
    ice_envelopes: HashMap<EnvelopeId, String>,
    /// ICE datagrams for a relay this node has no TURN client for.
    pub ice_relay_unsent: u64,
    /// For the client driver to drain (see the module docs).
    events: VecDeque<PeerEvent>,
    /// Media datagrams peers sent through our relay, for the calls.
    relayed_media: Vec<(SocketAddr, Vec<u8>)>,
    /// The node runs calls: relayed media is theirs (else dropped).
    pub media: bool,
    /// ICE offers from users not allowed our candidates (not contacts, no
    /// call we accepted or placed): held unanswered, one per sender and
    /// [`MAX_HELD_OFFERS`] in all (oldest out), for [`HELD_OFFER_MS`],
    /// in case the user answers their call; never put in the session
    /// table, so strangers cannot fill it.
    held: VecDeque<(String, IceOffer, Millis)>,
    /// Offers from strangers held or dropped (never answered unasked).
    pub stranger_offers: u64,
}

/// How often the address watch runs while a peer path is in use (a call
/// moves to a new network within this plus a round trip) and otherwise.
const WATCH_IN_USE_MS: u64 = 250;
const WATCH_IDLE_MS: u64 = 5_000;
/// Send errors bring the watch forward, at most this often.
const WATCH_ON_ERROR_MS: u64 = 100;

/// Binding requests for our new address after a network change: sends,
/// the gap between them, transaction ids remembered.
const REBIND_SENDS: u32 = 5;
const REBIND_RTO_MS: u64 = 250;
const MAX_REBIND_TIDS: usize = 16;

/// When the address watch is due, given when it was last run
/// (`watched_at`) and scheduled (`watch_at`): a watch scheduled at the idle
/// pace comes forward as soon as a path is in use (a call that starts
/// just after an idle watch would otherwise not notice a move for up to
/// [`WATCH_IDLE_MS`]), and a send error brings it forward too.
fn watch_due(watch_at: Millis, watched_at: Millis, in_use: bool, send_error: bool) -> Millis {
    let mut at = watch_at;
    if in_use {
        at = at.min(watched_at + WATCH_IN_USE_MS);
    }
    if send_error {
        at = at.min(watched_at + WATCH_ON_ERROR_MS);
    }
    at
}

/// Stranger offers held at once (one per sender).
const MAX_HELD_OFFERS: usize = 8;
/// How long a held offer waits for the user to answer the call (the ring
/// timeout).
const HELD_OFFER_MS: u64 = 60_000;

impl Peers {
    pub fn new(opts: &PathOptions, now: Millis, media: bool) -> Self {
        let mut tid_key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut tid_key);
        let paths = PeerPaths::new(opts, now, tid_key);
        let mut ice = IceSessions::new(IceConfig {
            relay_only: opts.relay_only,
            ..IceConfig::default()
        });
        ice.set_relay_gathering(paths.gather.is_some());
        let mut p = Peers {
            ice,
            paths,
            connecting: HashMap::new(),
            hosts: Vec::new(),
            watch_at: now,
            watched_at: Millis::ZERO,
            errors_seen: 0,
            network_changes: 0,
            rebind: Vec::new(),
            rebind_left: 0,
            rebind_at: Millis::MAX,
            stun_out: Vec::new(),
            ice_envelopes: HashMap::new(),
            ice_relay_unsent: 0,
            events: VecDeque::new(),
            relayed_media: Vec::new(),
            media,
            held: VecDeque::new(),
            stranger_offers: 0,
        };
        p.paths_start();
        p
    }

    pub(super) fn report(&mut self, e: PeerEvent) {
        self.events.push_back(e);
    }

    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    pub(super) fn relayed_media(&mut self, from: SocketAddr, d: Vec<u8>) {
        self.relayed_media.push((from, d));
    }

    /// Media datagrams that came through our relay since the last call.
    pub fn take_relayed_media(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.relayed_media)
    }

    pub fn command(&mut self, cx: &mut Cx<'_>, c: PeerCommand) {
        let now = cx.now;
        match c {
            PeerCommand::Connect { username } => {
                let username = username.to_ascii_lowercase();
                self.connecting.insert(username.clone(), now);
                cx.core.lookup(now, &username);
            }
            PeerCommand::IceSignal {
                from,
                bytes,
                answer,
            } => match IceOffer::decode(&bytes) {
                Ok(o) if answer => {
                    if !self.ice.on_answer(now, &from, &o) {
                        tracing::debug!(%from, "ICE answer for no session");
                    }
                }
                Ok(o) => self.ice.on_offer(now, &from, &o, &mut cx.base.rng),
                Err(e) => tracing::debug!(%from, "bad ICE signal: {e}"),
            },
        }
    }

    /// Open a peer connection to `user` unless one is up or under way.
    pub fn ensure(&mut self, cx: &mut Cx<'_>, user: String) {
        if self.connecting.contains_key(&user) || self.ice.started(&user).is_some() {
            return;
        }
        cx.core.lookup(cx.now, &user);
        self.connecting.insert(user, cx.now);
    }

    /// An ICE offer or answer in an envelope from `from` (verified).
    /// `allowed`: whether `from` may have our candidates (a contact, or a
    /// call we placed or accepted); an offer from anyone else is held
    /// unanswered (see `held`) and counted.
    pub fn on_envelope(
        &mut self,
        cx: &mut Cx<'_>,
        from: &str,
        kind: u8,
        payload: &[u8],
        allowed: bool,
    ) {
        match IceOffer::decode(payload) {
            Ok(o) if kind == ENVELOPE_ANSWER => {
                self.ice.on_answer(cx.now, from, &o);
            }
            Ok(o) if !allowed && self.ice.started(from).is_none() => {
                self.stranger_offers += 1;
                if crate::limits::log_worthy(self.stranger_offers) {
                    tracing::info!(%from, held = self.stranger_offers, "ICE offer from a stranger held unanswered");
                }
                self.held.retain(|(f, ..)| f != from);
                if self.held.len() >= MAX_HELD_OFFERS {
                    self.held.pop_front();
                }
                self.held.push_back((from.to_owned(), o, cx.now));
            }
            Ok(o) => self.ice.on_offer(cx.now, from, &o, &mut cx.base.rng),
            Err(err) => tracing::debug!(%from, "bad ICE envelope: {err}"),
        }
    }

    /// Senders of held offers (not yet expired at `now`).
    pub fn held_senders(&mut self, now: Millis) -> Vec<String> {
        self.held.retain(|(.., at)| now.since(*at) < HELD_OFFER_MS);
        self.held.iter().map(|(f, ..)| f.clone()).collect()
    }

    /// `user` may have our candidates now (the user answered their call):
    /// answer the offer held from them, if any.
    pub fn release(&mut self, cx: &mut Cx<'_>, user: &str) {
        if let Some(i) = self.held.iter().position(|(f, ..)| f == user)
            && let Some((from, o, _)) = self.held.remove(i)
        {
            self.ice.on_offer(cx.now, &from, &o, &mut cx.base.rng);
        }
    }

    /// Binding requests for our new server-reflexive address, when due.
    fn rebind_send(&mut self, cx: &mut Cx<'_>) {
        if self.rebind_left == 0 || cx.now < self.rebind_at {
            return;
        }
        self.rebind_left -= 1;
        self.rebind_at = if self.rebind_left == 0 {
            Millis::MAX
        } else {
            cx.now + REBIND_RTO_MS
        };
        let mut to: Vec<SocketAddr> = self.hosts.iter().map(|&(_, t)| t).collect();
        to.dedup();
        for dst in to {
            let mut tid = [0u8; 12];
            rand::RngCore::fill_bytes(&mut cx.base.rng, &mut tid);
            if self.rebind.len() >= MAX_REBIND_TIDS {
                self.rebind.remove(0);
            }
            self.rebind.push(tid);
            self.stun_out
                .push((dst, crate::nat::stun::binding_request(tid, false, false)));
        }
    }

    /// A Binding answer to `rebind_send`: our new server-reflexive
    /// address, which the sessions with a path send their peers. True
    /// when the datagram was one.
    fn rebind_answer(&mut self, d: &[u8]) -> bool {
        if self.rebind.is_empty() {
            return false;
        }
        let Ok(r) = crate::nat::stun::parse_binding_response(d) else {
            return false;
        };
        if !self.rebind.contains(&r.transaction) {
            return false;
        }
        self.rebind.clear();
        self.rebind_left = 0;
        self.rebind_at = Millis::MAX;
        if let Some(mapped) = r.mapped {
            self.ice.observe(mapped);
            let n = self.ice.readvertise();
            tracing::info!(%mapped, sessions = n, "our new public address: sent to the peers");
        }
        true
    }

    /// The outcome of an envelope; true when it carried our offer or
    /// answer (a failed one fails the connection, unless it was a repeat
    /// for a connection that has a path).
    pub fn on_outcome(&mut self, id: &EnvelopeId, failed: Option<&str>) -> bool {
        let Some(user) = self.ice_envelopes.remove(id) else {
            return false;
        };
        if let Some(reason) = failed
            && self.ice.selected(&user).is_some()
        {
            tracing::info!(%user, "our new candidates did not reach the peer: {reason}");
            return true;
        }
        if let Some(reason) = failed {
            self.ice.close(&user);
            self.report(PeerEvent::Failed {
                user,
                reason: format!("could not reach the peer: {reason}"),
            });
        }
        true
    }

    /// Overlay events this sub-driver follows: attachment (candidates,
    /// relay), relay credentials, the lookups of connect commands.
    pub async fn on_client_event(&mut self, cx: &mut Cx<'_>, e: &ClientEvent) {
        self.paths_client_event(cx, e);
        match e {
            ClientEvent::Lookup {
                username, outcome, ..
            } => {
                if let Some(started) = self.connecting.remove(username) {
                    self.lookup_answered(cx, username, outcome, started);
                }
            }
            ClientEvent::Attached {
                supernode,
                observed,
                ..
            } => self.attached(cx.base, *supernode, *observed).await,
            _ => {}
        }
    }

    /// The lookup of a user we connect to answered: start ICE, or fail.
    fn lookup_answered(
        &mut self,
        cx: &mut Cx<'_>,
        username: &str,
        outcome: &LookupOutcome,
        started: Millis,
    ) {
        let reachable = match outcome {
            LookupOutcome::Online(_) => true,
            // Invisible users show offline to everyone but are still
            // attached: they answer the offer if they wish.
            LookupOutcome::Offline { record, .. } => record.is_reachable(cx.base.unix()),
            _ => false,
        };
        let reason = if reachable {
            match self
                .ice
                .connect(cx.now, started, username, &mut cx.base.rng)
            {
                Ok(()) => return,
                Err(err) => err.to_string(),
            }
        } else {
            match outcome {
                LookupOutcome::Offline { .. } => "offline".to_string(),
                LookupOutcome::NotFound => "not found".to_string(),
                LookupOutcome::Failed(w) => format!("lookup failed: {w}"),
                LookupOutcome::Online(_) => "unreachable".to_string(),
            }
        };
        self.report(PeerEvent::Failed {
            user: username.to_owned(),
            reason,
        });
    }

    /// The NAT detection's server saw us at `public`: a candidate like an
    /// attachment's. A dual-stack client may have attached over IPv6 only
    /// (both supernodes answered there first); the detection, run over
    /// IPv4 where there is any, gives its IPv4 candidates.
    pub async fn stun_answered(&mut self, base: &Base, server: SocketAddr, public: SocketAddr) {
        self.attached(base, server, public).await;
    }

    /// A supernode saw us at `observed`: a server-reflexive candidate, and
    /// (once per family) our host candidate.
    async fn attached(&mut self, base: &Base, supernode: SocketAddr, observed: SocketAddr) {
        // Over TCP, the observed address is no UDP candidate.
        if !self.paths.tcp_mode {
            self.ice.observe(observed);
        }
        // Behind NAT64 an IPv4 supernode is reached over IPv6.
        let routed = base.socket.routed(supernode);
        if !self
            .hosts
            .iter()
            .any(|(h, _)| h.is_ipv4() == routed.is_ipv4())
            && let Ok(bound) = base.socket.local_addr()
            && let Some(h) = peer::host_address(bound, routed).await
        {
            self.hosts.push((h, supernode));
            self.ice.set_host(self.host_addrs());
        }
    }

    fn host_addrs(&self) -> Vec<SocketAddr> {
        self.hosts.iter().map(|(h, _)| *h).collect()
    }

    /// When the address watch is due: soon after a send error, every
    /// [`WATCH_IN_USE_MS`] while a peer path is in use, else every
    /// [`WATCH_IDLE_MS`].
    pub fn watch_deadline(&self, send_errors: u64) -> Millis {
        if self.hosts.is_empty() {
            return Millis::MAX;
        }
        watch_due(
            self.watch_at,
            self.watched_at,
            self.ice.any_selected(),
            send_errors != self.errors_seen,
        )
    }

    /// The address watch: ask the routing table for our address towards
    /// each supernode our host candidates were found towards. When one
    /// changed we are on a new network (a laptop moved from Wi-Fi to a
    /// phone's hotspot): returns the new host addresses, for
    /// [`Peers::network_changed`].
    pub async fn watch(&mut self, base: &Base) -> Option<Vec<(SocketAddr, SocketAddr)>> {
        let now = base.now();
        self.errors_seen = base.send_errors;
        self.watched_at = now;
        let busy = self.ice.any_selected();
        self.watch_at = now + if busy { WATCH_IN_USE_MS } else { WATCH_IDLE_MS };
        let bound = base.socket.local_addr().ok()?;
        let mut now_hosts = Vec::with_capacity(self.hosts.len());
        for &(h, towards) in &self.hosts {
            // No route (the old network is gone, the new one not up yet):
            // keep the old address until there is one.
            let cur = peer::host_address(bound, base.socket.routed(towards))
                .await
                .unwrap_or(h);
            now_hosts.push((cur, towards));
        }
        (now_hosts != self.hosts).then_some(now_hosts)
    }

    /// Our network changed (see [`Peers::watch`]): the new host
    /// candidates, and every ICE session with a path tells its peer where
    /// we are now ([`IceSessions::network_changed`]).
    pub fn network_changed(&mut self, cx: &mut Cx<'_>, hosts: Vec<(SocketAddr, SocketAddr)>) {
        self.network_changes += 1;
        let from: Vec<_> = self.host_addrs();
        self.hosts = hosts;
        let moved = self.ice.network_changed(cx.now, &mut cx.base.rng);
        self.ice.set_host(self.host_addrs());
        self.rebind.clear();
        self.rebind_left = REBIND_SENDS;
        self.rebind_at = cx.now;
        self.rebind_send(cx);
        tracing::info!(?from, to = ?self.host_addrs(), paths = moved, "our network changed: peers told where we are now");
    }

    /// What the ICE sessions asked for since the last step; true when
    /// there was anything.
    pub fn ice_events(&mut self, cx: &mut Cx<'_>) -> bool {
        let mut progressed = false;
        while let Some(e) = self.ice.poll_event() {
            progressed = true;
            if !self.paths_session_event(cx, &e) {
                self.session_event(cx, e);
            }
        }
        progressed
    }

    fn session_event(&mut self, cx: &mut Cx<'_>, e: SessionEvent) {
        match e {
            SessionEvent::SendOffer { to, offer, answer } => {
                let bytes = offer.encode();
                // Sealed to the peer, through the supernodes.
                let kind = if answer {
                    ENVELOPE_ANSWER
                } else {
                    ENVELOPE_OFFER
                };
                let unix = cx.base.clock.unix();
                let rng = &mut cx.base.rng;
                let id = cx
                    .core
                    .send_envelope(cx.now, unix, rng, &to, kind, &bytes, false);
                self.ice_envelopes.insert(id, to.clone());
                self.report(PeerEvent::Signal { to, bytes, answer })
            }
            SessionEvent::Selected {
                user,
                path,
                from: None,
                controlling,
                ..
            } => {
                tracing::info!(%user, %path, "ICE selected a path");
                // The caller's link handshake may have arrived before the
                // callee's own check on this pair completed.
                if let Some(cert) = cx.base.link.peer(path.remote)
                    && cert.role != Role::Supernode
                {
                    let name = cert.username.clone();
                    self.link_up(cx, path.remote, &name);
                    return;
                }
                // The caller opens the link; the callee answers it.
                if controlling
                    && let Err(e) = cx.base.link.connect(cx.now, path.remote, &mut cx.base.rng)
                {
                    self.report(PeerEvent::Failed {
                        user,
                        reason: format!("peer link: {e}"),
                    });
                }
            }
            SessionEvent::Selected {
                user,
                path,
                from: Some(from),
                ..
            } => {
                tracing::info!(%user, %from, to = %path, "ICE path changed");
                self.report(PeerEvent::PathChanged {
                    user,
                    from,
                    to: path,
                });
            }
            SessionEvent::Failed { user, reason } => {
                self.report(PeerEvent::Failed { user, reason })
            }
            // Relay gathering and permissions: `paths`.
            SessionEvent::GatherRelay | SessionEvent::RemoteCandidates { .. } => {}
        }
    }

    /// A link session with a non-supernode came up: a peer connection if
    /// ICE led to it and the certificate names the user we meant.
    pub fn link_up(&mut self, cx: &mut Cx<'_>, addr: SocketAddr, username: &str) {
        let Some(user) = self.ice.user_at(addr).map(str::to_owned) else {
            tracing::debug!(%addr, username, "link from a peer without an ICE session");
            return;
        };
        if user != username {
            cx.base.link.close(cx.now, addr);
            self.ice.close(&user);
            self.report(PeerEvent::Failed {
                user,
                reason: format!("the peer at {addr} is {username}"),
            });
            return;
        }
        let (Some(path), Some(started)) = (self.ice.selected(&user), self.ice.started(&user))
        else {
            return;
        };
        self.report(PeerEvent::Connected {
            user,
            path,
            setup_ms: cx.now.since(started),
        });
    }

    /// A link session closed: the peer connection over it, if any, failed.
    pub fn link_closed(&mut self, addr: SocketAddr, reason: &CloseReason) {
        if let Some(user) = self.ice.user_at(addr).map(str::to_owned) {
            self.ice.close(&user);
            self.report(PeerEvent::Failed {
                user,
                reason: format!("peer link closed: {reason:?}"),
            });
        }
    }

    /// A STUN datagram on the main socket: ICE checks and their answers.
    pub fn stun(&mut self, cx: &mut Cx<'_>, from: SocketAddr, d: &[u8]) -> bool {
        if self.rebind_answer(d) {
            return true;
        }
        self.ice
            .handle_stun(cx.now, Via::Direct, from, d, &mut cx.base.rng)
    }

    pub fn handle_timeout(&mut self, cx: &mut Cx<'_>) {
        self.rebind_send(cx);
        self.ice.handle_timeout(cx.now, &mut cx.base.rng);
        self.paths_timeout(cx);
    }

    pub fn deadline(&self) -> Millis {
        self.ice
            .poll_timeout()
            .unwrap_or(Millis::MAX)
            .min(self.paths_deadline())
            .min(self.rebind_at)
    }

    /// Everything waiting to leave: ICE checks (direct or relayed), link
    /// frames (over the path their peer uses), the relay's own messages.
    pub async fn flush(&mut self, base: &mut Base) {
        for (dst, bytes) in std::mem::take(&mut self.stun_out) {
            base.send_udp(dst, &bytes, "STUN").await;
        }
        while let Some(t) = self.ice.poll_transmit() {
            match t.via {
                Via::Direct => base.send_udp(t.dst, &t.bytes, "ICE").await,
                Via::Relay(_) => self.paths_send_relayed(base.now(), t),
            }
        }
        // Over a relay, a TCP stream or the main socket (`paths`); those
        // for the main socket many per system call.
        let mut udp = Vec::new();
        while let Some(t) = base.link.poll_transmit() {
            udp.extend(self.paths_route_link(base, t.dst, t.bytes));
        }
        base.send_udp_batch(&udp).await;
        self.paths_flush(base).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call that starts just after an idle watch is watched at the call
    /// pace from then on, not after the idle interval (the roaming lab
    /// heard 0.9 s of silence when a move fell in that interval).
    #[test]
    fn the_watch_comes_forward_when_a_path_is_in_use() {
        let watched_at = Millis(10_000);
        let idle = watched_at + WATCH_IDLE_MS;
        assert_eq!(watch_due(idle, watched_at, false, false), idle);
        assert_eq!(
            watch_due(idle, watched_at, true, false),
            watched_at + WATCH_IN_USE_MS
        );
        assert_eq!(
            watch_due(idle, watched_at, true, true),
            watched_at + WATCH_ON_ERROR_MS
        );
        // Already scheduled at the call pace: unchanged.
        let soon = watched_at + WATCH_IN_USE_MS;
        assert_eq!(watch_due(soon, watched_at, true, false), soon);
    }
}
