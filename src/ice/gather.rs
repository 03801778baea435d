//! The relayed candidate of a client, sans-IO: REST credentials from the
//! attached supernode, one TURN allocation ([`TurnClient`]) on the first
//! relay they name, over UDP (the main socket) or TCP (when UDP is
//! blocked), its permissions and channels, and the data peers send
//! through it.
//!
//! - Credentials are asked for once attached ([`RelayGatherer::on_attached`]:
//!   cheap, no state on the relay) and again before they expire, so an
//!   allocation can be refreshed with fresh ones.
//! - The allocation is made only when a session wants it
//!   ([`RelayGatherer::want`], from [`super::SessionEvent::GatherRelay`])
//!   and released after `idle_ms` without sessions
//!   ([`RelayGatherer::in_use`] keeps it).
//! - The driver carries [`GatherTransmit`]s to the relay (a datagram from
//!   the main socket, or bytes on the TCP stream to it) and hands back
//!   what comes from the relay: [`RelayGatherer::handle_input`] takes only
//!   this allocation's messages.

use crate::relay::{TurnClient, TurnClientConfig, TurnClientEvent, TurnCredentials, TurnTransport};
use crate::time::Millis;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

/// Credentials for the group's relays (`ClientEvent::RelayCredentials`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayCredentials {
    pub username: String,
    pub password: String,
    /// When they stop working, on the node's timeline (ms, the `now` the
    /// gatherer is given; the driver moves the wall-clock expiry onto it).
    pub expires_at: Millis,
    pub relays: Vec<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct GatherConfig {
    pub transport: TurnTransport,
    /// Release the allocation after this long without sessions.
    pub idle_ms: u64,
    /// Ask for fresh credentials this long before they expire.
    pub renew_before_ms: u64,
    /// A credentials request unanswered this long has failed.
    pub credentials_timeout_ms: u64,
}

impl Default for GatherConfig {
    fn default() -> Self {
        GatherConfig {
            transport: TurnTransport::Udp,
            idle_ms: 120_000,
            renew_before_ms: 300_000,
            credentials_timeout_ms: 5_000,
        }
    }
}

/// What the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatherEvent {
    /// Ask the supernode for relay credentials.
    NeedCredentials,
    /// The relayed candidate: `IceSessions::add_relay`.
    Allocated {
        server: SocketAddr,
        relayed: SocketAddr,
    },
    /// No allocation now: the sessions waiting for one go without.
    Unavailable { reason: String },
    /// The allocation is gone (released when idle, refused, or its TCP
    /// connection closed): `IceSessions::remove_relay`.
    Lost { server: SocketAddr, reason: String },
    /// A peer's datagram, through our relay.
    Data {
        server: SocketAddr,
        peer: SocketAddr,
        data: Vec<u8>,
    },
}

/// Bytes for the relay server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatherTransmit {
    pub server: SocketAddr,
    pub transport: TurnTransport,
    pub bytes: Vec<u8>,
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatherStats {
    pub allocations: u64,
    pub credential_requests: u64,
    pub sent: u64,
    pub received: u64,
    pub unsent: u64,
}

/// One client's relay allocation.
pub struct RelayGatherer {
    cfg: GatherConfig,
    tid_key: [u8; 32],
    generation: u64,
    creds: Option<RelayCredentials>,
    asked_at: Option<Millis>,
    wanted: bool,
    client: Option<TurnClient>,
    ready: bool,
    last_used: Millis,
    transmits: VecDeque<GatherTransmit>,
    events: VecDeque<GatherEvent>,
    stats: GatherStats,
    /// The families we have reached a supernode over (the relay is
    /// reached over one of them: an IPv6-only host's socket is dual-stack
    /// all the same, and a send to IPv4 fails).
    reached: crate::socket::Families,
}

impl std::fmt::Debug for RelayGatherer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayGatherer")
            .field("client", &self.client)
            .field("ready", &self.ready)
            .field("wanted", &self.wanted)
            .finish_non_exhaustive()
    }
}

impl RelayGatherer {
    /// `tid_key` must be random (TURN transaction ids derive from it).
    pub fn new(cfg: GatherConfig, tid_key: [u8; 32]) -> Self {
        RelayGatherer {
            cfg,
            tid_key,
            generation: 0,
            creds: None,
            asked_at: None,
            wanted: false,
            client: None,
            ready: false,
            last_used: Millis::ZERO,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: GatherStats::default(),
            reached: crate::socket::Families::default(),
        }
    }

    /// UDP (the main socket) or TCP (UDP blocked) to the relay, for the
    /// next allocation.
    pub fn set_transport(&mut self, t: TurnTransport) {
        self.cfg.transport = t;
    }

    pub fn transport(&self) -> TurnTransport {
        self.cfg.transport
    }

    pub fn stats(&self) -> &GatherStats {
        &self.stats
    }

    /// The relay server of the current allocation (or attempt).
    pub fn server(&self) -> Option<SocketAddr> {
        self.client.as_ref().map(|c| c.server())
    }

    /// The allocation, when it is up.
    pub fn allocation(&self) -> Option<(SocketAddr, SocketAddr)> {
        let c = self.client.as_ref()?;
        Some((c.server(), c.relayed_addr()?))
    }

    fn ask(&mut self, now: Millis) {
        if self
            .asked_at
            .is_some_and(|t| now < t + self.cfg.credentials_timeout_ms)
        {
            return;
        }
        self.asked_at = Some(now);
        self.stats.credential_requests += 1;
        self.events.push_back(GatherEvent::NeedCredentials);
    }

    /// Attached to a supernode at `supernode`: get credentials ahead of
    /// need; its family is one the relay can be reached over.
    pub fn on_attached(&mut self, now: Millis, supernode: SocketAddr) {
        if supernode.is_ipv4() {
            self.reached.v4 = true;
        } else {
            self.reached.v6 = true;
        }
        if self.creds.is_none() {
            self.ask(now);
        }
    }

    fn creds_fresh(&self, now: Millis) -> bool {
        self.creds
            .as_ref()
            .is_some_and(|c| c.expires_at > now + 10_000 && !c.relays.is_empty())
    }

    /// A session needs the relayed candidate.
    pub fn want(&mut self, now: Millis) {
        self.wanted = true;
        self.last_used = now;
        if let Some((server, relayed)) = self.allocation() {
            self.events
                .push_back(GatherEvent::Allocated { server, relayed });
        } else if self.client.is_some() {
            // Allocating.
        } else if self.creds_fresh(now) {
            self.start(now);
        } else {
            self.ask(now);
        }
    }

    /// Sessions exist: keep the allocation.
    pub fn in_use(&mut self, now: Millis) {
        self.last_used = now;
    }

    pub fn on_credentials(&mut self, now: Millis, c: RelayCredentials) {
        self.asked_at = None;
        if let Some(cl) = &mut self.client {
            cl.set_credentials(TurnCredentials {
                username: c.username.clone(),
                password: c.password.clone(),
            });
        }
        self.creds = Some(c);
        if self.wanted && self.client.is_none() {
            if self.creds_fresh(now) {
                self.start(now);
            } else {
                self.unavailable("the relay credentials name no relay".into());
            }
        }
    }

    /// The supernode would not give credentials.
    pub fn on_refused(&mut self, _now: Millis, reason: &str) {
        self.asked_at = None;
        if self.wanted && self.client.is_none() {
            self.unavailable(format!("no relay credentials: {reason}"));
        }
    }

    fn unavailable(&mut self, reason: String) {
        self.wanted = false;
        self.events.push_back(GatherEvent::Unavailable { reason });
    }

    fn start(&mut self, now: Millis) {
        let Some(c) = &self.creds else { return };
        // A relay of a family we reached a supernode over, IPv4 first;
        // else any (nothing attached yet), IPv4 first.
        let reached = self.reached;
        let pick = |ok: &dyn Fn(&SocketAddr) -> bool| {
            let mut fit = c.relays.iter().copied().filter(|a| ok(a));
            let first = fit.next()?;
            Some(if first.is_ipv4() {
                first
            } else {
                fit.find(|a| a.is_ipv4()).unwrap_or(first)
            })
        };
        let server = pick(&|a| reached.reaches(*a)).or_else(|| pick(&|_| true));
        let Some(server) = server else {
            self.unavailable("no relay".into());
            return;
        };
        let mut cfg = match self.cfg.transport {
            TurnTransport::Udp => TurnClientConfig::udp(server),
            TurnTransport::Tcp => TurnClientConfig::tcp(server),
        };
        // An IPv4 relayed address whenever the relays have IPv4 (it reaches
        // the most peers, IPv4-only ones too; RFC 8656 lets an IPv6 client
        // ask for it); IPv6 from an IPv6-only relay group.
        cfg.ipv6 = !c.relays.iter().any(|a| a.is_ipv4());
        // A fresh key per allocation: transaction ids never repeat.
        self.generation += 1;
        let mut key = self.tid_key;
        for (k, g) in key.iter_mut().zip(self.generation.to_be_bytes()) {
            *k ^= g;
        }
        let mut cl = TurnClient::new(
            cfg,
            TurnCredentials {
                username: c.username.clone(),
                password: c.password.clone(),
            },
            key,
            now,
        );
        cl.allocate(now);
        self.stats.allocations += 1;
        self.client = Some(cl);
        self.ready = false;
        self.drain(now);
    }

    /// A message from `from` over `transport`; false when it is not this
    /// allocation's (the caller offers it to others).
    pub fn handle_input(
        &mut self,
        now: Millis,
        transport: TurnTransport,
        from: SocketAddr,
        bytes: &[u8],
    ) -> bool {
        let Some(cl) = &mut self.client else {
            return false;
        };
        if cl.server() != from || cl.transport() != transport {
            return false;
        }
        let took = cl.handle_input(now, bytes);
        if took {
            self.stats.received += 1;
            self.drain(now);
        }
        took
    }

    /// The TCP connection to `server` closed: its allocation went with it.
    pub fn tcp_closed(&mut self, now: Millis, server: SocketAddr) {
        if self
            .client
            .as_ref()
            .is_some_and(|c| c.server() == server && c.transport() == TurnTransport::Tcp)
        {
            self.drop_client(now, "the TCP connection to the relay closed".into());
        }
    }

    fn drop_client(&mut self, _now: Millis, reason: String) {
        let Some(cl) = self.client.take() else { return };
        if self.ready {
            self.ready = false;
            self.events.push_back(GatherEvent::Lost {
                server: cl.server(),
                reason,
            });
        } else if self.wanted {
            self.unavailable(reason);
        }
    }

    /// Let `peer` (any port) send to our relayed address, and us to it.
    pub fn permit(&mut self, now: Millis, peer: IpAddr) {
        if let Some(cl) = &mut self.client
            && cl.relayed_family_ipv6() == peer.is_ipv6()
        {
            let _ = cl.create_permission(now, peer);
            self.drain(now);
        }
    }

    /// Bind a channel to `peer` (the path in use): 4-byte headers.
    pub fn bind(&mut self, now: Millis, peer: SocketAddr) {
        if let Some(cl) = &mut self.client
            && cl.is_allocated()
        {
            let _ = cl.create_permission(now, peer.ip());
            let _ = cl.bind_channel(now, peer);
            self.drain(now);
        }
    }

    /// Relay `bytes` to `peer`; false when there is no allocation on
    /// `server`.
    pub fn send(
        &mut self,
        now: Millis,
        server: SocketAddr,
        peer: SocketAddr,
        bytes: &[u8],
    ) -> bool {
        let Some(cl) = &mut self.client else {
            self.stats.unsent += 1;
            return false;
        };
        if cl.server() != server || !cl.is_allocated() {
            self.stats.unsent += 1;
            return false;
        }
        let _ = cl.create_permission(now, peer.ip());
        let ok = cl.send_to(now, peer, bytes).is_ok();
        if ok {
            self.stats.sent += 1;
        }
        self.drain(now);
        ok
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        if let Some(cl) = &mut self.client {
            cl.handle_timeout(now);
        }
        self.drain(now);
        if self
            .asked_at
            .is_some_and(|t| now >= t + self.cfg.credentials_timeout_ms)
        {
            self.asked_at = None;
            if self.wanted && self.client.is_none() {
                self.unavailable("no answer to the relay credentials request".into());
            }
        }
        if self.ready
            && let Some(c) = &self.creds
            && now + self.cfg.renew_before_ms >= c.expires_at
        {
            self.ask(now);
        }
        if self.client.is_some() && now >= self.last_used + self.cfg.idle_ms {
            self.wanted = false;
            if let Some(cl) = &mut self.client {
                cl.close(now);
            }
            self.drain(now);
            self.drop_client(now, "idle".into());
        }
    }

    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut t = self.client.as_ref().and_then(|c| c.poll_timeout());
        let mut at = |v: Millis| t = Some(t.map_or(v, |x: Millis| x.min(v)));
        if let Some(a) = self.asked_at {
            at(a + self.cfg.credentials_timeout_ms);
        }
        if self.client.is_some() {
            at(self.last_used + self.cfg.idle_ms);
        }
        if self.ready
            && self.asked_at.is_none()
            && let Some(c) = &self.creds
        {
            at(c.expires_at.saturating_sub(self.cfg.renew_before_ms));
        }
        t
    }

    pub fn poll_transmit(&mut self) -> Option<GatherTransmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<GatherEvent> {
        self.events.pop_front()
    }

    fn drain(&mut self, now: Millis) {
        let Some(cl) = &mut self.client else { return };
        let (server, transport) = (cl.server(), cl.transport());
        while let Some(t) = cl.poll_transmit() {
            self.transmits.push_back(GatherTransmit {
                server: t.dst,
                transport,
                bytes: t.bytes,
            });
        }
        let mut gone = None;
        while let Some(e) = cl.poll_event() {
            match e {
                TurnClientEvent::Allocated { relayed, .. } => {
                    self.ready = true;
                    self.last_used = self.last_used.max(now);
                    self.events
                        .push_back(GatherEvent::Allocated { server, relayed });
                }
                TurnClientEvent::AllocateFailed { code, reason } => {
                    gone = Some(format!("allocation refused: {code} {reason}"));
                }
                TurnClientEvent::Lost { code, reason } => {
                    gone = Some(format!("allocation lost: {code} {reason}"));
                }
                TurnClientEvent::Closed => gone = Some("released".into()),
                TurnClientEvent::Data { peer, data } => {
                    self.events
                        .push_back(GatherEvent::Data { server, peer, data })
                }
                TurnClientEvent::PermissionFailed { peer, code, reason } => {
                    tracing::debug!(%peer, code, reason, "TURN permission refused")
                }
                TurnClientEvent::ChannelBindFailed { peer, code, reason } => {
                    tracing::debug!(%peer, code, reason, "TURN channel refused")
                }
                TurnClientEvent::Refreshed { .. }
                | TurnClientEvent::PermissionCreated { .. }
                | TurnClientEvent::ChannelBound { .. } => {}
            }
        }
        if let Some(reason) = gone {
            self.drop_client(now, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{
        ClientAddr, ServerEvent, Transport, TurnServer, TurnServerConfig, Via, creds,
    };

    const SECRET: &[u8] = b"lab secret";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A gatherer against a real TurnServer core; the peer at `peer`.
    struct Lab {
        now: Millis,
        server: TurnServer,
        g: RelayGatherer,
        me: SocketAddr,
        at_peer: Vec<Vec<u8>>,
        events: Vec<GatherEvent>,
        relay: Option<(u64, SocketAddr)>,
    }

    impl Lab {
        /// The lab's wall clock: it runs with the virtual clock, both from
        /// the same epoch.
        fn unix(&self) -> crate::time::UnixSecs {
            crate::time::UnixMillis(self.now.0).secs()
        }

        fn new(transport: TurnTransport) -> Self {
            let now = Millis(1_700_000_000_000);
            let mut g = RelayGatherer::new(
                GatherConfig {
                    transport,
                    ..GatherConfig::default()
                },
                [7; 32],
            );
            g.on_attached(now, addr("198.51.100.1:7710"));
            Lab {
                now,
                server: TurnServer::new(
                    TurnServerConfig {
                        secret: SECRET.to_vec(),
                        ..Default::default()
                    },
                    [1; 32],
                    now,
                ),
                g,
                me: addr("203.0.113.5:4000"),
                at_peer: Vec::new(),
                events: Vec::new(),
                relay: None,
            }
        }

        fn creds(&self, ttl: u64) -> RelayCredentials {
            let c = creds::issue(SECRET, "alice", self.unix().get(), ttl);
            RelayCredentials {
                username: c.username,
                password: c.password,
                expires_at: Millis(c.expires * 1000),
                relays: vec![addr("198.51.100.1:7710")],
            }
        }

        fn run(&mut self) {
            let from = ClientAddr {
                transport: match self.g.transport() {
                    TurnTransport::Udp => Transport::Udp,
                    TurnTransport::Tcp => Transport::Tcp(1),
                },
                addr: self.me,
            };
            for _ in 0..100 {
                let mut moved = false;
                while let Some(t) = self.g.poll_transmit() {
                    moved = true;
                    assert_eq!(t.transport, self.g.transport());
                    self.server
                        .handle_client(self.now, self.unix(), from, &t.bytes);
                }
                while let Some(e) = self.server.poll_event() {
                    moved = true;
                    if let ServerEvent::OpenRelay { alloc, .. } = e {
                        let a = addr("198.51.100.1:50000");
                        self.relay = Some((alloc, a));
                        self.server.relay_opened(self.now, alloc, Ok(a));
                    }
                }
                while let Some(t) = self.server.poll_transmit() {
                    moved = true;
                    match t.via {
                        Via::Client(c) => {
                            assert_eq!(c, from);
                            let server = addr("198.51.100.1:7710");
                            let took =
                                self.g
                                    .handle_input(self.now, self.g.transport(), server, &t.bytes);
                            // Only answers to a released allocation go untaken.
                            assert!(took || self.g.server().is_none());
                        }
                        Via::Relay { .. } => self.at_peer.push(t.bytes),
                    }
                }
                while let Some(e) = self.g.poll_event() {
                    moved = true;
                    self.events.push(e);
                }
                if !moved {
                    break;
                }
            }
        }
    }

    /// A dual-stack relay (grant listing its IPv4 and IPv6 addresses) and
    /// a host that reached its supernode over IPv6 only (IPv6-only, or
    /// NAT64): the relay is asked over IPv6, for an IPv4 relayed address.
    #[test]
    fn the_relay_is_reached_over_a_family_a_supernode_was_reached_over() {
        let now = Millis(1_000);
        let v4 = addr("198.51.100.1:7710");
        let v6 = addr("[2001:db8:100::1]:7710");
        let creds = RelayCredentials {
            username: "u".into(),
            password: "p".into(),
            expires_at: now + 3_600_000,
            relays: vec![v4, v6],
        };
        let mut g = RelayGatherer::new(GatherConfig::default(), [7; 32]);
        g.on_attached(now, v6);
        g.on_credentials(now, creds.clone());
        g.want(now);
        assert_eq!(g.server(), Some(v6));
        assert!(!g.client.as_ref().unwrap().relayed_family_ipv6());
        // Reached over both: IPv4 first.
        let mut g = RelayGatherer::new(GatherConfig::default(), [7; 32]);
        g.on_attached(now, v6);
        g.on_attached(now, v4);
        g.on_credentials(now, creds.clone());
        g.want(now);
        assert_eq!(g.server(), Some(v4));
        // An IPv6-only relay group: an IPv6 relayed address.
        let mut g = RelayGatherer::new(GatherConfig::default(), [7; 32]);
        g.on_attached(now, v6);
        g.on_credentials(
            now,
            RelayCredentials {
                relays: vec![v6],
                ..creds
            },
        );
        g.want(now);
        assert_eq!(g.server(), Some(v6));
        assert!(g.client.as_ref().unwrap().relayed_family_ipv6());
    }

    #[test]
    fn allocates_when_wanted_relays_both_ways_and_releases_when_idle() {
        for transport in [TurnTransport::Udp, TurnTransport::Tcp] {
            let mut l = Lab::new(transport);
            l.run();
            assert_eq!(l.events, vec![GatherEvent::NeedCredentials]);
            l.events.clear();
            let c = l.creds(3600);
            l.g.on_credentials(l.now, c);
            l.run();
            // Credentials alone allocate nothing.
            assert!(l.relay.is_none() && l.events.is_empty());
            l.g.want(l.now);
            l.run();
            let server = addr("198.51.100.1:7710");
            let relayed = addr("198.51.100.1:50000");
            assert_eq!(l.events, vec![GatherEvent::Allocated { server, relayed }]);
            l.events.clear();
            // To a peer and back.
            let peer = addr("203.0.113.9:6000");
            l.g.permit(l.now, peer.ip());
            l.run();
            assert!(l.g.send(l.now, server, peer, b"ping"));
            l.run();
            assert_eq!(l.at_peer, vec![b"ping".to_vec()]);
            let (alloc, _) = l.relay.unwrap();
            l.server.handle_peer(l.now, alloc, peer, b"pong");
            l.run();
            assert_eq!(
                l.events,
                vec![GatherEvent::Data {
                    server,
                    peer,
                    data: b"pong".to_vec()
                }]
            );
            l.events.clear();
            // Not ours: another server, or the other transport.
            let other = match transport {
                TurnTransport::Udp => TurnTransport::Tcp,
                TurnTransport::Tcp => TurnTransport::Udp,
            };
            assert!(!l.g.handle_input(l.now, other, server, b"\x01\x01"));
            assert!(!l.g.send(l.now, addr("198.51.100.2:7710"), peer, b"x"));
            // Idle: released, and the sessions are told.
            let t = l.g.poll_timeout().unwrap();
            assert!(t <= l.now + GatherConfig::default().idle_ms);
            l.now += GatherConfig::default().idle_ms;
            l.g.handle_timeout(l.now);
            l.run();
            assert!(
                l.events.contains(&GatherEvent::Lost {
                    server,
                    reason: "idle".into()
                }),
                "{:?}",
                l.events
            );
            assert!(l.g.allocation().is_none());
        }
    }

    #[test]
    fn renews_credentials_before_they_expire_and_reports_refusals() {
        let mut l = Lab::new(TurnTransport::Udp);
        l.run();
        l.events.clear();
        // Short-lived credentials: renewed ahead of expiry while in use.
        let c = l.creds(400);
        let expires = c.expires_at;
        l.g.on_credentials(l.now, c);
        l.g.want(l.now);
        l.run();
        assert!(l.g.allocation().is_some());
        l.events.clear();
        let t = l.g.poll_timeout().unwrap();
        assert!(
            t <= expires - GatherConfig::default().renew_before_ms,
            "{t}"
        );
        l.now = expires - GatherConfig::default().renew_before_ms;
        l.g.in_use(l.now);
        l.g.handle_timeout(l.now);
        l.run();
        assert_eq!(l.events, vec![GatherEvent::NeedCredentials]);
        // A supernode that refuses: the waiting sessions go without.
        let mut l = Lab::new(TurnTransport::Udp);
        l.run();
        l.events.clear();
        l.g.want(l.now);
        l.g.on_refused(l.now, "no relay here");
        l.run();
        assert!(matches!(&l.events[..], [GatherEvent::Unavailable { .. }]));
        // Credentials that the relay rejects (expired): refused, not hung.
        let mut l = Lab::new(TurnTransport::Udp);
        l.run();
        l.events.clear();
        let mut c = l.creds(3600);
        c.password = "wrong".into();
        l.g.on_credentials(l.now, c);
        l.g.want(l.now);
        l.run();
        assert!(
            matches!(&l.events[..], [GatherEvent::Unavailable { reason }] if reason.contains("401")),
            "{:?}",
            l.events
        );
    }
}
