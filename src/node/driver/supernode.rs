//! The supernode driver: the overlay's supernode core
//! ([`SupernodeCore`]) on the socket-and-link base, with the STUN server
//! ([`StunServer`], which may answer from the extra RFC 5780 sockets
//! this driver also owns) and the TURN relay ([`TurnService`], its own
//! task, fed from the main socket) beside it.
//!
//! Its main loop ([`SupernodeDriver::run`]) waits for one input (a
//! datagram on the main or an extra socket, a link frame over TCP, a
//! timer, a command), hands it over, then pumps: link events into the
//! core, the core's messages into the link, its events out (closing the
//! sessions of clients and members that went away); and flushes.

use super::base::Base;
use super::{Command, Event, NodeStatus, OverlayNode, SupernodeOptions};
use crate::clock::Clock;
use crate::link::{LinkEndpoint, LinkEvent};
use crate::metrics::supernode::SupernodeCounters;
use crate::nat::StunServer;
use crate::node::turn::TurnService;
use crate::overlay::{SupernodeCore, SupernodeEvent};
use crate::time::Millis;
use crate::wire::stun::{Datagram, Header, classify, method};
use std::collections::HashMap;

/// Batches of waiting datagrams read after each wake-up (at most 32
/// each) before the node's other work runs again.
const DRAIN_BATCHES: usize = 8;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

/// A datagram on an extra STUN socket: (local, from, bytes).
type Extra = (SocketAddr, SocketAddr, Vec<u8>);

/// A supernode's task state; see the module docs.
struct SupernodeDriver {
    base: Base,
    core: Box<SupernodeCore>,
    stun: Option<StunServer>,
    /// The extra RFC 5780 sockets by local address.
    extra: HashMap<SocketAddr, Arc<UdpSocket>>,
    /// Stops with the node.
    turn: Option<TurnService>,
    /// TURN datagrams read since the last hand-off to the relay.
    turn_batch: crate::node::turn::TurnBatch,
    /// The durable copy of the offline mailbox, if kept.
    mailbox: Option<crate::node::mailbox::MailboxStore>,
}

pub(super) fn spawn(
    socket: crate::socket::NodeSocket,
    link: LinkEndpoint,
    core: SupernodeCore,
    clock: Arc<dyn Clock>,
    opts: SupernodeOptions,
) -> std::io::Result<OverlayNode> {
    let local_addr = socket.local_addr()?;
    let socket = Arc::new(socket);
    let (ctx, crx) = mpsc::channel(256);
    let (etx, erx) = mpsc::channel(4096);
    let mut base = Base::new(socket.clone(), link, clock.clone(), etx);
    // Link streams the TURN listener accepts (clients without UDP).
    let (ltx, lrx) = mpsc::channel(64);
    base.tcp.accept_from(lrx);
    let turn = opts
        .turn
        .map(|t| TurnService::spawn_with_links(t.core, socket, t.tcp, t.cfg, clock, Some(ltx)));
    let (extra, xrx, readers) = extra_sockets(opts.stun_sockets)?;
    let mut core = core;
    let mailbox = opts.mailbox.as_deref().and_then(|path| {
        let store = crate::node::mailbox::MailboxStore::open(path)
            .inspect_err(|e| tracing::warn!("offline mailbox kept in memory only: {e}"))
            .ok()?;
        // The kept envelopes expire on the wall clock (their signed
        // expiry), as `restore_mail` judges them.
        let (now, unix) = (base.now(), base.clock.unix());
        let rows = store
            .load(unix)
            .inspect_err(|e| tracing::warn!("offline mailbox not restored: {e}"))
            .unwrap_or_default();
        let restored = rows
            .iter()
            .filter(|(user, sender, bytes)| core.restore_mail(now, unix, user, sender, bytes))
            .count();
        tracing::info!(restored, path = %path.display(), "offline mailbox");
        core.journal_mailbox();
        Some(store)
    });
    let driver = SupernodeDriver {
        base,
        mailbox,
        core: Box::new(core),
        stun: opts.stun.map(StunServer::new),
        extra,
        turn,
        turn_batch: Default::default(),
    };
    let turn = driver.turn.as_ref().map(|t| t.handle.clone());
    let span = tracing::info_span!("supernode", addr = %local_addr);
    let task = tokio::spawn(
        async move {
            driver.run(crx, xrx).await;
            for r in readers {
                r.abort();
            }
        }
        .instrument(span),
    );
    Ok(OverlayNode {
        local_addr,
        commands: ctx,
        events: erx,
        task,
        turn,
    })
}

/// The extra sockets by local address, and a reader task each forwarding
/// what arrives to the driver.
#[allow(clippy::type_complexity)]
fn extra_sockets(
    sockets: Vec<UdpSocket>,
) -> std::io::Result<(
    HashMap<SocketAddr, Arc<UdpSocket>>,
    mpsc::Receiver<Extra>,
    Vec<JoinHandle<()>>,
)> {
    let (xtx, xrx) = mpsc::channel::<Extra>(1024);
    let mut extra = HashMap::new();
    let mut readers = Vec::new();
    for s in sockets {
        let s = Arc::new(s);
        let local = s.local_addr()?;
        extra.insert(local, s.clone());
        let tx = xtx.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                match s.recv_from(&mut buf).await {
                    Ok((n, from)) => {
                        if tx.send((local, from, buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::debug!(%local, "recv: {e}"),
                }
            }
        }));
    }
    Ok((extra, xrx, readers))
}

impl SupernodeDriver {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut extra: mpsc::Receiver<Extra>,
    ) {
        let mut buf = vec![0u8; 65_536];
        // What else is waiting after a wake-up, read many per system
        // call (slots of 64 KiB: pages are touched only as data lands).
        let mut more = crate::mmsg::RecvBatch::new(32, 65_536);
        loop {
            let wait = self.base.wait(self.core.poll_timeout());
            let stop = tokio::select! {
                r = self.base.socket.recv_from(&mut buf) => {
                    match r {
                        Ok((n, from)) => self.datagram(None, from, &buf[..n]),
                        // ICMP errors from earlier sends surface here; the
                        // protocol's own timers deal with unreachable peers.
                        Err(e) => tracing::debug!("recv: {e}"),
                    }
                    for _ in 0..DRAIN_BATCHES {
                        match self.base.socket.try_recv_batch(&mut more) {
                            Ok(n) => {
                                for i in 0..n {
                                    let (from, d) = more.get(i);
                                    self.datagram(None, from, d);
                                }
                                if n < more.capacity() {
                                    break;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                    false
                }
                Some((local, from, d)) = extra.recv() => {
                    self.datagram(Some(local), from, &d);
                    false
                }
                x = self.base.tcp.recv() => {
                    self.base.tcp_input(&x);
                    false
                }
                _ = tokio::time::sleep(wait) => {
                    let now = self.base.now();
                    let unix = self.base.unix();
                    (self.base.link).handle_timeout(now, unix, &mut self.base.rng);
                    let unix = self.base.clock.unix();
                    self.core.handle_timeout(now, unix, &mut self.base.rng);
                    let hint = self.core.busy_hint(&mut self.base.rng);
                    self.base.link.set_busy_hint(hint);
                    false
                }
                cmd = commands.recv() => match cmd {
                    None => true,
                    Some(c) => self.command(c),
                },
            };
            // TURN datagrams gathered above go to the relay in one hand-off.
            if let Some(t) = &self.turn {
                t.handle.datagrams(&mut self.turn_batch);
            }
            self.pump();
            // On a stop, this lets the goodbye leave before the socket
            // closes.
            self.flush().await;
            if stop {
                break;
            }
        }
        let _ = self.base.events.send(Event::Stopped).await;
    }

    /// One datagram, on the main socket (`local` None) or an extra STUN
    /// socket.
    fn datagram(&mut self, local: Option<SocketAddr>, from: SocketAddr, d: &[u8]) {
        let now = self.base.now();
        match classify(d) {
            Datagram::Link if local.is_none() => {
                let unix = self.base.unix();
                let rng = &mut self.base.rng;
                self.base.link.handle_datagram(now, unix, from, d, rng)
            }
            Datagram::Stun(h) => self.stun_datagram(local, from, h, d),
            Datagram::ChannelData(_) if local.is_none() => match &self.turn {
                Some(_) => self.turn_batch.push(from, d),
                None => self.base.dropped_datagrams += 1,
            },
            _ => self.base.dropped_datagrams += 1,
        }
    }

    fn stun_datagram(&mut self, local: Option<SocketAddr>, from: SocketAddr, h: Header, d: &[u8]) {
        // TURN (Allocate, Refresh, CreatePermission, ChannelBind, Send) on
        // the main socket goes to the relay, with or without a STUN server.
        if h.is_turn() && local.is_none() && self.turn.is_some() {
            self.turn_batch.push(from, d);
            return;
        }
        match &mut self.stun {
            Some(server) if h.method == method::BINDING => {
                let local = local.unwrap_or(server.config().primary);
                server.handle_datagram(self.base.now(), local, from, d);
            }
            _ => self.base.stun_unhandled += 1,
        }
    }

    /// Returns true when the node should stop.
    fn command(&mut self, c: Command) -> bool {
        match c {
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::SetCertificate { cert } => {
                self.base.set_certificate(&cert);
            }
            Command::SetRevocations { list } => {
                if let Ok(n) = self.core.set_revocations(self.base.clock.unix(), &list) {
                    tracing::debug!(detached = n, "revocation list taken");
                }
            }
            Command::Shutdown => {
                // Tell the overlay and our clients first; the driver
                // flushes these before the socket closes.
                self.core.leave(&mut self.base.rng);
                return true;
            }
            c => tracing::debug!("ignored {c:?} on a supernode"),
        }
        false
    }

    fn status(&self) -> NodeStatus {
        let st = NodeStatus {
            members: self.core.membership().alive_count(),
            clients: self.core.client_count(),
            records: self.core.record_count(),
            queries_sent: self.core.stats().queries_sent,
            stun: self.stun.as_ref().map(|s| s.stats().clone()),
            ..self.base.status()
        };
        NodeStatus {
            counters: Some(Box::new(self.counters(&st))),
            ..st
        }
    }

    /// Every core's counters, for a metrics scrape.
    fn counters(&self, st: &NodeStatus) -> SupernodeCounters {
        SupernodeCounters {
            overlay: self.core.stats().clone(),
            envelopes: self.core.envelope_stats().clone(),
            membership: self.core.membership_stats().clone(),
            link: self.base.link.stats().clone(),
            stun: st.stun.clone(),
            clients: st.clients,
            records: st.records,
            members: st.members,
            mailbox: self.core.mailbox_size(),
            link_sessions: st.link_sessions,
            dropped_datagrams: st.dropped_datagrams,
            stun_unhandled: st.stun_unhandled,
        }
    }

    /// Link events into the core, its messages into the link, its events
    /// out, until nothing moves.
    fn pump(&mut self) {
        let now = self.base.now();
        for _ in 0..64 {
            let mut progressed = self.link_events(now);
            progressed |= self.base.send_overlay(now, self.core.drain_transmits());
            while let Some(e) = self.core.poll_event() {
                progressed = true;
                self.deliver(now, e);
            }
            if !progressed {
                break;
            }
        }
        if let Some(store) = &mut self.mailbox {
            let changes = self.core.drain_mailbox_changes();
            if let Err(e) = store.apply(&changes) {
                tracing::warn!("offline mailbox not saved: {e}");
            }
        }
    }

    fn link_events(&mut self, now: Millis) -> bool {
        let mut progressed = false;
        while let Some(ev) = self.base.link.poll_event() {
            progressed = true;
            match ev {
                LinkEvent::Message { addr, payload, .. } => {
                    let Some(cert) = self.base.link.peer(addr).cloned() else {
                        continue;
                    };
                    let unix = self.base.clock.unix();
                    let rng = &mut self.base.rng;
                    self.core
                        .handle_message(now, unix, addr, &cert, &payload, rng);
                    // A revoked device or disabled account: its session
                    // goes (the core counted and dropped the message).
                    if self.core.refuses(&cert) {
                        self.base.link.close(now, addr);
                    }
                }
                LinkEvent::Closed { addr, reason } => {
                    tracing::debug!(%addr, ?reason, "link closed");
                }
                LinkEvent::Roamed { from, to, .. } => self.core.client_roamed(now, from, to),
                _ => {}
            }
        }
        progressed
    }

    fn deliver(&mut self, now: Millis, e: SupernodeEvent) {
        // A dead client's or member's session is stale: the next message
        // must start a fresh handshake (it may have restarted).
        if let SupernodeEvent::ClientDetached { addr, .. }
        | SupernodeEvent::MemberDown { addr, .. } = &e
        {
            self.base.link.close(now, *addr);
        }
        self.base.emit(Event::Supernode(e));
    }

    /// Link frames (on their TCP stream when a client came over TCP, else
    /// the main socket) and the STUN server's answers.
    async fn flush(&mut self) {
        while let Some(t) = self.base.link.poll_transmit() {
            self.base.send_frame(t.dst, t.bytes, false).await;
        }
        let Some(s) = &mut self.stun else { return };
        while let Some(t) = s.poll_transmit() {
            let sent = match t.src.and_then(|a| self.extra.get(&a)) {
                Some(x) => x.send_to(&t.bytes, t.dst).await,
                None => self.base.socket.send_to(&t.bytes, t.dst).await,
            };
            if let Err(e) = sent {
                tracing::debug!(dst = %t.dst, "STUN send: {e}");
            }
        }
    }
}
