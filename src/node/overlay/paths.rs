//! The ways a node's traffic leaves besides plain UDP on the main socket:
//!
//! - **Relayed candidates** (clients): a [`RelayGatherer`] gets REST
//!   credentials from the attached supernode and, when an ICE session
//!   wants one, a TURN allocation on the relay they name. Its messages go
//!   from the main socket (or over TCP, below); the relay's answers, Data
//!   indications and ChannelData are taken from the demux before the NAT
//!   detector and ICE see them. ICE checks and link frames whose path is
//!   relayed ([`IceSessions::route_to`]) go through it; what peers send
//!   through it comes back as if from the peer ([`Via::Relay`]).
//! - **TCP** (UDP blocked): a client that heard nothing on UDP for
//!   `tcp_fallback_ms` (or is told to from the start) sends its link
//!   frames to supernodes over TCP, and allocates on its relay over TCP.
//!   A supernode whose TURN service listens on TCP takes link streams
//!   from that listener ([`crate::node::tcp`]) and answers on them.

use super::{Core, Driver};
use crate::ice::gather::{GatherConfig, GatherEvent, RelayCredentials, RelayGatherer};
use crate::ice::offer::MappingHint;
use crate::ice::{Path, SessionEvent, Transmit, Via};
use crate::node::tcp::{StreamKind, TcpInput, TcpIo};
use crate::overlay::ClientEvent;
use crate::relay::TurnTransport;
use crate::wire::stun::{Datagram, classify};
use std::net::SocketAddr;

/// How a client reaches supernodes and relays (see the module docs).
#[derive(Debug, Clone)]
pub struct PathOptions {
    /// Attach over TCP when no UDP datagram arrived this long after the
    /// start; `None`: never.
    pub tcp_fallback_ms: Option<u64>,
    /// Over TCP from the start (a network known to block UDP).
    pub force_tcp: bool,
    /// Gather relayed candidates (a TURN allocation) for peer connections.
    pub relay: bool,
    /// Offer and use relayed candidates only.
    pub relay_only: bool,
}

impl Default for PathOptions {
    fn default() -> Self {
        PathOptions {
            tcp_fallback_ms: Some(3_000),
            force_tcp: false,
            relay: true,
            relay_only: false,
        }
    }
}

/// The state behind the module's job.
pub(super) struct PeerPaths {
    pub(super) gather: Option<RelayGatherer>,
    pub(super) tcp: TcpIo,
    /// Link frames to supernodes go over TCP.
    pub(super) tcp_mode: bool,
    udp_heard: bool,
    fallback_at: u64,
    fallback_ms: Option<u64>,
    force_tcp: bool,
    /// A link frame came over TCP: TCP mode works here.
    tcp_link_ok: bool,
    /// The mapping before TCP mode set it to blocked.
    mapping_before: MappingHint,
    /// Relayed datagrams of no protocol handled here (media), dropped.
    pub(super) relayed_dropped: u64,
}

impl PeerPaths {
    pub(super) fn new(client: bool, o: &PathOptions, now: u64, tid_key: [u8; 32]) -> Self {
        PeerPaths {
            gather: (client && o.relay)
                .then(|| RelayGatherer::new(GatherConfig::default(), tid_key)),
            tcp: TcpIo::new(),
            tcp_mode: false,
            udp_heard: false,
            fallback_at: match o.tcp_fallback_ms {
                Some(ms) if client => now + ms,
                _ => u64::MAX,
            },
            fallback_ms: o.tcp_fallback_ms,
            force_tcp: client && o.force_tcp,
            tcp_link_ok: false,
            mapping_before: MappingHint::Unknown,
            relayed_dropped: 0,
        }
    }
}

impl Driver {
    /// Before the first pump: a client told to use TCP starts so.
    pub(super) fn paths_start(&mut self) {
        if self.paths.force_tcp {
            self.paths_tcp_mode("configured");
        }
    }

    fn paths_tcp_mode(&mut self, why: &str) {
        if self.paths.tcp_mode {
            return;
        }
        tracing::info!("{why}: attaching to supernodes and relays over TCP");
        self.paths.tcp_mode = true;
        if let Some(g) = &mut self.paths.gather {
            g.set_transport(TurnTransport::Tcp);
        }
        // Nobody can reach our UDP socket: only relayed pairs work.
        self.paths.mapping_before = self.ice.mapping();
        self.ice.set_mapping(MappingHint::Blocked);
    }

    /// Every link stream closed before any frame came over TCP (nothing
    /// listens there, or the network is down altogether): TCP is no better
    /// than UDP, so go back to UDP and fall back again later rather than
    /// stay on TCP for good (a supernode without a relay takes no TCP).
    fn paths_tcp_failed(&mut self, now: u64) {
        if !self.paths.tcp_mode
            || self.paths.force_tcp
            || self.paths.tcp_link_ok
            || self.paths.tcp.any_link()
        {
            return;
        }
        tracing::info!("no supernode answered over TCP: back to UDP");
        self.paths.tcp_mode = false;
        self.paths.fallback_at = self
            .paths
            .fallback_ms
            .map_or(u64::MAX, |ms| now.saturating_add(ms));
        if let Some(g) = &mut self.paths.gather {
            g.set_transport(TurnTransport::Udp);
        }
        self.ice.set_mapping(self.paths.mapping_before);
    }

    /// A datagram on the main socket: the relay's, when it comes from our
    /// relay server and is its answer, Data indication or ChannelData.
    pub(super) fn paths_datagram(
        &mut self,
        from: SocketAddr,
        kind: Datagram<'_>,
        d: &[u8],
    ) -> bool {
        self.paths.udp_heard = true;
        if !matches!(kind, Datagram::Stun(_) | Datagram::ChannelData(_)) {
            return false;
        }
        let now = self.clock.now_ms();
        let took = self
            .paths
            .gather
            .as_mut()
            .is_some_and(|g| g.handle_input(now, TurnTransport::Udp, from, d));
        if took {
            self.paths_gather_events(now);
        }
        took
    }

    /// Input from a TCP stream.
    pub(super) fn paths_tcp_input(&mut self, x: TcpInput) {
        let now = self.clock.now_ms();
        match x {
            TcpInput::Link { from, frame } => {
                self.paths.tcp_link_ok = true;
                self.link.handle_datagram(now, from, &frame, &mut self.rng)
            }
            TcpInput::Turn { server, msg } => {
                if let Some(g) = &mut self.paths.gather {
                    g.handle_input(now, TurnTransport::Tcp, server, &msg);
                }
            }
            TcpInput::Closed { kind, peer } => {
                tracing::debug!(%peer, ?kind, "TCP stream closed");
                self.paths.tcp.closed(kind, peer);
                if kind == StreamKind::Link {
                    self.paths_tcp_failed(now);
                }
                if kind == StreamKind::Turn
                    && let Some(g) = &mut self.paths.gather
                {
                    g.tcp_closed(now, peer);
                }
            }
        }
        self.paths_gather_events(now);
    }

    /// Timers: the TCP fallback, the relay's.
    pub(super) fn paths_timeout(&mut self, now: u64) {
        if !self.paths.tcp_mode && !self.paths.udp_heard && now >= self.paths.fallback_at {
            self.paths_tcp_mode("no UDP answer");
        }
        if let Some(g) = &mut self.paths.gather {
            if !self.ice.is_empty() {
                g.in_use(now);
            }
            g.handle_timeout(now);
        }
        self.paths_gather_events(now);
    }

    pub(super) fn paths_deadline(&self) -> u64 {
        let fallback = if self.paths.tcp_mode || self.paths.udp_heard {
            u64::MAX
        } else {
            self.paths.fallback_at
        };
        let g = self
            .paths
            .gather
            .as_ref()
            .and_then(|g| g.poll_timeout())
            .unwrap_or(u64::MAX);
        fallback.min(g)
    }

    /// Overlay events the relay needs: attachment, credentials.
    pub(super) fn paths_client_event(&mut self, now: u64, e: &ClientEvent) {
        let Some(g) = &mut self.paths.gather else {
            return;
        };
        match e {
            ClientEvent::Attached { .. } => g.on_attached(now),
            ClientEvent::RelayCredentials {
                username,
                password,
                expires,
                relays,
                ..
            } => g.on_credentials(
                now,
                RelayCredentials {
                    username: username.clone(),
                    password: password.clone(),
                    expires_ms: expires.saturating_mul(1000),
                    relays: relays.clone(),
                },
            ),
            ClientEvent::RelayRefused { reason } => g.on_refused(now, reason),
            _ => return,
        }
        self.paths_gather_events(now);
    }

    /// ICE session events before the driver acts on them: relay gathering
    /// and permissions, and a channel for a relayed path in use. Returns
    /// true when the event was only for this module.
    pub(super) fn paths_session_event(&mut self, now: u64, e: &SessionEvent) -> bool {
        let Some(g) = &mut self.paths.gather else {
            return matches!(
                e,
                SessionEvent::GatherRelay | SessionEvent::RemoteCandidates { .. }
            );
        };
        match e {
            SessionEvent::GatherRelay => g.want(now),
            SessionEvent::RemoteCandidates { addrs, .. } => {
                for a in addrs {
                    g.permit(now, a.ip());
                }
            }
            SessionEvent::Selected {
                path:
                    Path {
                        via: Via::Relay(_),
                        remote,
                        ..
                    },
                ..
            } => {
                g.in_use(now);
                g.bind(now, *remote);
                self.paths_gather_events(now);
                return false;
            }
            _ => return false,
        }
        self.paths_gather_events(now);
        true
    }

    /// Act on what the relay reports.
    fn paths_gather_events(&mut self, now: u64) {
        loop {
            let Some(e) = self.paths.gather.as_mut().and_then(|g| g.poll_event()) else {
                return;
            };
            match e {
                GatherEvent::NeedCredentials => {
                    if let Core::Client(cl) = &mut self.core {
                        cl.request_relay_credentials();
                    }
                }
                GatherEvent::Allocated { server, relayed } => {
                    tracing::info!(%server, %relayed, "relayed candidate");
                    self.ice.add_relay(now, server, relayed, &mut self.rng);
                }
                GatherEvent::Unavailable { reason } => {
                    tracing::info!("no relayed candidate: {reason}");
                    self.ice.relay_unavailable(now, &mut self.rng);
                }
                GatherEvent::Lost { server, reason } => {
                    tracing::info!(%server, "relay allocation gone: {reason}");
                    self.ice.remove_relay(server);
                }
                GatherEvent::Data { server, peer, data } => {
                    self.paths_relayed(now, server, peer, &data)
                }
            }
        }
    }

    /// A datagram a peer sent through our relay: as if from the peer.
    fn paths_relayed(&mut self, now: u64, server: SocketAddr, peer: SocketAddr, d: &[u8]) {
        match classify(d) {
            Datagram::Stun(_) => {
                if !self
                    .ice
                    .handle_stun(now, Via::Relay(server), peer, d, &mut self.rng)
                {
                    self.stun_unhandled += 1;
                }
            }
            Datagram::Link => self.link.handle_datagram(now, peer, d, &mut self.rng),
            Datagram::Media if self.calls.is_some() => {
                if let Some(c) = &mut self.calls {
                    c.media_datagram(peer, d, &self.ice);
                }
            }
            _ => self.paths.relayed_dropped += 1,
        }
    }

    /// An ICE datagram for the relay.
    pub(super) fn paths_send_relayed(&mut self, t: Transmit) {
        let now = self.clock.now_ms();
        let Via::Relay(server) = t.via else { return };
        match &mut self.paths.gather {
            Some(g) => {
                g.send(now, server, t.dst, &t.bytes);
            }
            None => self.ice_relay_unsent += 1,
        }
    }

    /// A link frame for `dst`: over the relay when its peer's path is
    /// relayed, on a TCP stream when there is one (or when in TCP mode,
    /// to a supernode), else from the main socket.
    pub(super) async fn paths_send_link(&mut self, dst: SocketAddr, bytes: Vec<u8>) {
        let now = self.clock.now_ms();
        let (via, dst) = self.ice.route_to(dst);
        if let Via::Relay(server) = via {
            match &mut self.paths.gather {
                Some(g) => {
                    g.send(now, server, dst, &bytes);
                }
                None => self.ice_relay_unsent += 1,
            }
            return;
        }
        let connect = self.paths.tcp_mode && self.ice.user_at(dst).is_none();
        if connect || self.paths.tcp.has_link(dst) {
            self.paths.tcp.send_link(dst, bytes, connect);
            return;
        }
        if let Err(e) = self.socket.send_to(&bytes, dst).await {
            tracing::debug!(%dst, "send: {e}");
        }
    }

    /// The relay's own messages to its server.
    pub(super) async fn paths_flush(&mut self) {
        let Some(g) = &mut self.paths.gather else {
            return;
        };
        let mut udp = Vec::new();
        while let Some(t) = g.poll_transmit() {
            match t.transport {
                TurnTransport::Udp => udp.push(t),
                TurnTransport::Tcp => {
                    self.paths.tcp.send_turn(t.server, t.bytes);
                }
            }
        }
        for t in udp {
            if let Err(e) = self.socket.send_to(&t.bytes, t.server).await {
                tracing::debug!(server = %t.server, "TURN send: {e}");
            }
        }
    }
}
