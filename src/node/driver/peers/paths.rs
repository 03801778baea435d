//! The ways a client's traffic leaves besides plain UDP on the main
//! socket (part of the ICE-and-paths sub-driver, [`super`]):
//!
//! - **Relayed candidates**: a [`RelayGatherer`] gets REST
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
//!   (A supernode whose TURN service listens on TCP takes link streams
//!   from that listener into its [`Base`]'s [`crate::node::tcp::TcpIo`]
//!   and answers on them.)

use super::{Cx, Peers};
use crate::ice::gather::{GatherConfig, GatherEvent, RelayCredentials, RelayGatherer};
use crate::ice::offer::MappingHint;
use crate::ice::{Path, SessionEvent, Transmit, Via};
use crate::node::driver::base::Base;
use crate::node::tcp::{StreamKind, TcpInput};
use crate::overlay::ClientEvent;
use crate::relay::TurnTransport;
use crate::time::Millis;
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
    /// Link frames to supernodes go over TCP.
    pub(super) tcp_mode: bool,
    /// A datagram came on the main socket: UDP works, no fallback.
    udp_heard: bool,
    /// Fall back to TCP then, unless UDP was heard.
    fallback_at: Millis,
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
    pub(super) fn new(o: &PathOptions, now: Millis, tid_key: [u8; 32]) -> Self {
        PeerPaths {
            gather: o
                .relay
                .then(|| RelayGatherer::new(GatherConfig::default(), tid_key)),
            tcp_mode: false,
            udp_heard: false,
            fallback_at: o.tcp_fallback_ms.map_or(Millis::MAX, |ms| now + ms),
            fallback_ms: o.tcp_fallback_ms,
            force_tcp: o.force_tcp,
            tcp_link_ok: false,
            mapping_before: MappingHint::Unknown,
            relayed_dropped: 0,
        }
    }
}

impl Peers {
    /// At the start: a client told to use TCP starts so.
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
    fn paths_tcp_failed(&mut self, base: &Base, now: Millis) {
        if !self.paths.tcp_mode
            || self.paths.force_tcp
            || self.paths.tcp_link_ok
            || base.tcp.any_link()
        {
            return;
        }
        tracing::info!("no supernode answered over TCP: back to UDP");
        self.paths.tcp_mode = false;
        self.paths.fallback_at = self
            .paths
            .fallback_ms
            .map_or(Millis::MAX, |ms| now.saturating_add(ms));
        if let Some(g) = &mut self.paths.gather {
            g.set_transport(TurnTransport::Udp);
        }
        self.ice.set_mapping(self.paths.mapping_before);
    }

    /// A datagram on the main socket: the relay's, when it comes from our
    /// relay server and is its answer, Data indication or ChannelData.
    pub(in crate::node::driver) fn paths_datagram(
        &mut self,
        cx: &mut Cx<'_>,
        from: SocketAddr,
        kind: Datagram<'_>,
        d: &[u8],
    ) -> bool {
        self.paths.udp_heard = true;
        if !matches!(kind, Datagram::Stun(_) | Datagram::ChannelData(_)) {
            return false;
        }
        let took = self
            .paths
            .gather
            .as_mut()
            .is_some_and(|g| g.handle_input(cx.now, TurnTransport::Udp, from, d));
        if took {
            self.paths_gather_events(cx);
        }
        took
    }

    /// Input from a TCP stream, after the base took link frames and closed
    /// streams (`Base::tcp_input`).
    pub(in crate::node::driver) fn paths_tcp_input(&mut self, cx: &mut Cx<'_>, x: &TcpInput) {
        let now = cx.now;
        match x {
            TcpInput::Link { .. } => self.paths.tcp_link_ok = true,
            TcpInput::Turn { server, msg } => {
                if let Some(g) = &mut self.paths.gather {
                    g.handle_input(now, TurnTransport::Tcp, *server, msg);
                }
            }
            TcpInput::Closed { kind, peer } => {
                if *kind == StreamKind::Link {
                    self.paths_tcp_failed(cx.base, now);
                }
                if *kind == StreamKind::Turn
                    && let Some(g) = &mut self.paths.gather
                {
                    g.tcp_closed(now, *peer);
                }
            }
        }
        self.paths_gather_events(cx);
    }

    /// Timers: the TCP fallback, the relay's.
    pub(super) fn paths_timeout(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        if !self.paths.tcp_mode && !self.paths.udp_heard && now >= self.paths.fallback_at {
            self.paths_tcp_mode("no UDP answer");
        }
        if let Some(g) = &mut self.paths.gather {
            if !self.ice.is_empty() {
                g.in_use(now);
            }
            g.handle_timeout(now);
        }
        self.paths_gather_events(cx);
    }

    pub(super) fn paths_deadline(&self) -> Millis {
        let fallback = if self.paths.tcp_mode || self.paths.udp_heard {
            Millis::MAX
        } else {
            self.paths.fallback_at
        };
        let g = self
            .paths
            .gather
            .as_ref()
            .and_then(|g| g.poll_timeout())
            .unwrap_or(Millis::MAX);
        fallback.min(g)
    }

    /// Overlay events the relay needs: attachment, credentials.
    pub(super) fn paths_client_event(&mut self, cx: &mut Cx<'_>, e: &ClientEvent) {
        let (now, unix) = (cx.now, cx.base.unix());
        let Some(g) = &mut self.paths.gather else {
            return;
        };
        match e {
            ClientEvent::Attached { supernode, .. } => g.on_attached(now, *supernode),
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
                    // The wall-clock expiry, moved onto our timeline.
                    expires_at: now
                        .saturating_add(expires.saturating_sub(unix.get()).saturating_mul(1000)),
                    relays: relays.clone(),
                },
            ),
            ClientEvent::RelayRefused { reason } => g.on_refused(now, reason),
            _ => return,
        }
        self.paths_gather_events(cx);
    }

    /// ICE session events before the sub-driver acts on them: relay
    /// gathering and permissions, and a channel for a relayed path in use.
    /// Returns true when the event was only for this module.
    pub(super) fn paths_session_event(&mut self, cx: &mut Cx<'_>, e: &SessionEvent) -> bool {
        let now = cx.now;
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
                self.paths_gather_events(cx);
                return false;
            }
            _ => return false,
        }
        self.paths_gather_events(cx);
        true
    }

    /// Act on what the relay reports.
    fn paths_gather_events(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        loop {
            let Some(e) = self.paths.gather.as_mut().and_then(|g| g.poll_event()) else {
                return;
            };
            match e {
                GatherEvent::NeedCredentials => {
                    cx.core.request_relay_credentials();
                }
                GatherEvent::Allocated { server, relayed } => {
                    tracing::info!(%server, %relayed, "relayed candidate");
                    self.ice.add_relay(now, server, relayed, &mut cx.base.rng);
                }
                GatherEvent::Unavailable { reason } => {
                    tracing::info!("no relayed candidate: {reason}");
                    self.ice.relay_unavailable(now, &mut cx.base.rng);
                }
                GatherEvent::Lost { server, reason } => {
                    tracing::info!(%server, "relay allocation gone: {reason}");
                    self.ice.remove_relay(server);
                }
                GatherEvent::Data { server, peer, data } => {
                    self.paths_relayed(cx, server, peer, data)
                }
            }
        }
    }

    /// A datagram a peer sent through our relay: as if from the peer.
    fn paths_relayed(&mut self, cx: &mut Cx<'_>, server: SocketAddr, peer: SocketAddr, d: Vec<u8>) {
        let now = cx.now;
        match classify(&d) {
            Datagram::Stun(_) => {
                if !self
                    .ice
                    .handle_stun(now, Via::Relay(server), peer, &d, &mut cx.base.rng)
                {
                    cx.base.stun_unhandled += 1;
                }
            }
            Datagram::Link => {
                let unix = cx.base.unix();
                let rng = &mut cx.base.rng;
                cx.base.link.handle_datagram(now, unix, peer, &d, rng)
            }
            Datagram::Media if self.media => self.relayed_media(peer, d),
            _ => self.paths.relayed_dropped += 1,
        }
    }

    /// An ICE datagram for the relay.
    pub(super) fn paths_send_relayed(&mut self, now: Millis, t: Transmit) {
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
    pub(in crate::node::driver) async fn paths_send_link(
        &mut self,
        base: &mut Base,
        dst: SocketAddr,
        bytes: Vec<u8>,
    ) {
        if let Some((dst, bytes)) = self.paths_route_link(base, dst, bytes) {
            base.send_udp(dst, &bytes, "link").await;
        }
    }

    /// [`Peers::paths_send_link`] but for the main socket: a frame that
    /// goes from it is handed back (the caller sends many at once).
    pub(in crate::node::driver) fn paths_route_link(
        &mut self,
        base: &mut Base,
        dst: SocketAddr,
        bytes: Vec<u8>,
    ) -> Option<(SocketAddr, Vec<u8>)> {
        let now = base.now();
        let (via, dst) = self.ice.route_to(dst);
        if let Via::Relay(server) = via {
            match &mut self.paths.gather {
                Some(g) => {
                    g.send(now, server, dst, &bytes);
                }
                None => self.ice_relay_unsent += 1,
            }
            return None;
        }
        let connect = self.paths.tcp_mode && self.ice.user_at(dst).is_none();
        base.frame_tcp(dst, bytes, connect)
    }

    /// The relay's own messages to its server.
    pub(super) async fn paths_flush(&mut self, base: &mut Base) {
        let Some(g) = &mut self.paths.gather else {
            return;
        };
        let mut udp = Vec::new();
        while let Some(t) = g.poll_transmit() {
            match t.transport {
                TurnTransport::Udp => udp.push(t),
                TurnTransport::Tcp => {
                    base.tcp.send_turn(t.server, t.bytes);
                }
            }
        }
        for t in udp {
            base.send_udp(t.server, &t.bytes, "TURN").await;
        }
    }
}
