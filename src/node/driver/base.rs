//! The socket-and-link base both drivers stand on: the node's one UDP
//! socket, its TCP link streams, the link endpoint, the clock, the RNG
//! the cores are given, the queue of events to the node's owner and the
//! counters of what no core took. It knows no role: the client and
//! supernode drivers put their cores on top and decide where each
//! datagram goes.

use super::{Event, NodeStatus};
use crate::clock::Clock;
use crate::link::LinkEndpoint;
use crate::node::tcp::{TcpInput, TcpIo};
use crate::socket::NodeSocket;
use crate::time::{Millis, UnixSecs, earliest};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A node's socket, link and what goes with them (see the module docs).
pub(super) struct Base {
    /// The main socket: link frames, STUN, TURN, ChannelData and media
    /// share it.
    pub socket: Arc<NodeSocket>,
    /// Link frames over TCP: streams a supernode's TURN listener accepted,
    /// or a client's to supernodes and relays when UDP is blocked.
    pub tcp: TcpIo,
    pub link: LinkEndpoint,
    /// Its monotonic reading times everything here (`Clock::now_ms`: a
    /// step of the wall clock moves no timer); cores are given `now`.
    pub clock: Arc<dyn Clock>,
    /// The one generator every core here draws from.
    pub rng: StdRng,
    /// To the node's owner.
    pub events: mpsc::Sender<Event>,
    /// Datagrams of no protocol this node speaks, dropped.
    pub dropped_datagrams: u64,
    /// STUN messages no core here took, dropped.
    pub stun_unhandled: u64,
    /// Sends on the main socket that failed (no route, address gone: the
    /// network may have changed; a client's address watch looks).
    pub send_errors: u64,
}

impl Base {
    /// Send an overlay core's messages over the link; whether there were
    /// any (a driver pumps until nothing moves).
    pub fn send_overlay(
        &mut self,
        now: Millis,
        out: impl Iterator<Item = crate::overlay::Transmit>,
    ) -> bool {
        let mut sent = false;
        for t in out {
            sent = true;
            if let Err(e) = self.link.send(now, t.dst, &t.bytes, &mut self.rng) {
                tracing::debug!(dst = %t.dst, "link send: {e}");
            }
        }
        sent
    }

    pub fn new(
        socket: Arc<NodeSocket>,
        link: LinkEndpoint,
        clock: Arc<dyn Clock>,
        events: mpsc::Sender<Event>,
    ) -> Self {
        Base {
            socket,
            tcp: TcpIo::new(),
            link,
            clock,
            rng: StdRng::from_entropy(),
            events,
            dropped_datagrams: 0,
            stun_unhandled: 0,
            send_errors: 0,
        }
    }

    /// The node's timeline (monotonic), for every timer.
    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// The wall clock, for certificates and records (see [`crate::clock`]).
    pub fn unix(&self) -> UnixSecs {
        self.clock.unix_secs()
    }

    /// Report an event to the owner (dropped, and logged, when its queue
    /// is full: the node never waits for its owner).
    pub fn emit(&self, e: Event) {
        if self.events.try_send(e).is_err() {
            tracing::warn!("event queue full: an event was dropped");
        }
    }

    /// How long the driver may sleep: until `deadline` or the link's,
    /// whichever is first, at most a minute.
    pub fn wait(&self, deadline: Option<Millis>) -> std::time::Duration {
        let deadline = earliest(deadline, self.link.poll_timeout()).unwrap_or(Millis::MAX);
        std::time::Duration::from_millis(deadline.since(self.now()).min(60_000))
    }

    /// Send on the main socket (errors are the peer's timers' business).
    pub async fn send_udp(&mut self, dst: SocketAddr, bytes: &[u8], what: &str) {
        if let Err(e) = self.socket.send_to(bytes, dst).await {
            self.send_errors += 1;
            tracing::debug!(%dst, "{what} send: {e}");
        }
    }

    /// Send datagrams on the main socket, many per system call (errors
    /// are counted, as [`Base::send_udp`] does).
    pub async fn send_udp_batch(&mut self, msgs: &[(SocketAddr, Vec<u8>)]) {
        if msgs.is_empty() {
            return;
        }
        let mut refs: Vec<(SocketAddr, &[u8])> = msgs.iter().map(|(a, b)| (*a, &b[..])).collect();
        match self.socket.send_batch(&mut refs).await {
            Ok(refused) => self.send_errors += refused as u64,
            Err(e) => {
                self.send_errors += 1;
                tracing::debug!("link send: {e}");
            }
        }
    }

    /// A link frame for `dst`: on its TCP stream when there is one (with
    /// `connect`, open one), else from the main socket.
    pub async fn send_frame(&mut self, dst: SocketAddr, bytes: Vec<u8>, connect: bool) {
        if let Some((dst, bytes)) = self.frame_tcp(dst, bytes, connect) {
            self.send_udp(dst, &bytes, "link").await;
        }
    }

    /// A link frame for `dst` onto its TCP stream when there is one (with
    /// `connect`, open one); else it is handed back, for the main socket.
    pub fn frame_tcp(
        &mut self,
        dst: SocketAddr,
        bytes: Vec<u8>,
        connect: bool,
    ) -> Option<(SocketAddr, Vec<u8>)> {
        if connect || self.tcp.has_link(dst) {
            self.tcp.send_link(dst, bytes, connect);
            return None;
        }
        Some((dst, bytes))
    }

    /// Input from a TCP stream: link frames into the endpoint, a closed
    /// stream out of the table. The role acts on the rest.
    pub fn tcp_input(&mut self, x: &TcpInput) {
        let now = self.now();
        match x {
            TcpInput::Link { from, frame } => {
                let unix = self.unix();
                self.link
                    .handle_datagram(now, unix, *from, frame, &mut self.rng)
            }
            TcpInput::Closed { kind, peer } => {
                tracing::debug!(%peer, ?kind, "TCP stream closed");
                self.tcp.closed(*kind, *peer);
            }
            TcpInput::Turn { .. } => {}
        }
    }

    /// The counters every node keeps; the role adds its own.
    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            local_addr: self.socket.local_addr().ok(),
            link_sessions: self.link.sessions().count(),
            dropped_datagrams: self.dropped_datagrams,
            stun_unhandled: self.stun_unhandled,
            ..Default::default()
        }
    }

    /// Install a renewed certificate in the link; false when refused.
    pub fn set_certificate(&mut self, cert: &crate::identity::Certificate) -> bool {
        match self.link.set_certificate(cert.clone()) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("renewed certificate refused: {e}");
                false
            }
        }
    }
}
