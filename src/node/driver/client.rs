//! The client driver: the overlay client ([`ClientCore`]) on the
//! socket-and-link base, with its sub-drivers (peers, NAT detection,
//! chat and contacts, calls; see the [parent module](super)).
//!
//! Its main loop ([`ClientDriver::run`]) waits for one input, hands it to
//! the core it is for, then pumps until nothing moves:
//!
//! 1. link events: overlay messages from supernodes into the core, peer
//!    links up and down to the peers sub-driver;
//! 2. the core's messages into the link;
//! 3. the core's events through the dispatcher ([`super::dispatch`]),
//!    then the sub-drivers' events;
//! 4. NAT detection starts at the first attachment;
//! 5. ICE's requests (offers to send, paths selected);
//! 6. delivery: the events the peers sub-driver follows, then out to the
//!    owner;
//!
//! and finally flushes the datagrams and frames the cores queued.

use super::base::Base;
use super::nat::NatDriver;
use super::peers::{Cx, Peers};
use super::{ClientOptions, Command, Event, NodeStatus, OverlayNode};
use crate::clock::Clock;
use crate::identity::Role;
use crate::link::{LinkEndpoint, LinkEvent};
use crate::node::api::ErrorReason;
use crate::node::calls::{CallCommand, Calls, CallsEvent, Ctx, MediaMsg};
use crate::node::files::{Files, FilesCx, FilesEvent, Job};
use crate::node::messaging::{Messaging, MessagingCommand, MessagingEvent};
use crate::node::peer::PeerEvent;
use crate::overlay::{ClientCore, ClientEvent};
use crate::socket::NodeSocket;
use crate::time::{Millis, earliest};
use crate::wire::stun::{Datagram, classify};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::Instrument;

/// Batches of datagrams read after a wake-up at most (each one system
/// call), before the pump runs.
const DRAIN_BATCHES: usize = 4;
/// Datagrams per batch.
const BATCH: usize = 32;

/// A client node's task state; see the module docs.
pub(super) struct ClientDriver {
    pub(super) base: Base,
    pub(super) core: Box<ClientCore>,
    /// ICE sessions and the paths their traffic takes.
    pub(super) peers: Peers,
    pub(super) nat: Option<NatDriver>,
    pub(super) messaging: Option<Box<Messaging>>,
    pub(super) calls: Option<Box<Calls>>,
    /// File transfers.
    pub(super) files: Option<Box<Files>>,
    /// Overlay messages from links with users, dropped: clients take
    /// orders only from supernodes.
    not_supernode: u64,
}

pub(super) fn spawn(
    socket: NodeSocket,
    link: LinkEndpoint,
    core: ClientCore,
    clock: Arc<dyn Clock>,
    opts: ClientOptions,
) -> std::io::Result<OverlayNode> {
    let local_addr = socket.local_addr()?;
    let (ctx, crx) = mpsc::channel(256);
    let (etx, erx) = mpsc::channel(4096);
    let now = clock.now();
    let span = tracing::info_span!("client", user = %core.username());
    let driver = ClientDriver {
        peers: Peers::new(&opts.paths, now, opts.calls.is_some()),
        nat: (opts.nat).map(|o| NatDriver::new(o, now, opts.paths.tcp_fallback_ms)),
        messaging: opts.messaging.map(Box::new),
        calls: opts.calls.map(|c| {
            let mut calls = Box::new(Calls::new(c, clock.clone()));
            let ed25519 = core.certificate().ed25519;
            calls.set_device_name(&crate::node::login::own_device_name(&ed25519));
            calls.set_account(core.username());
            calls
        }),
        files: opts
            .files
            .map(|f| Box::new(Files::new(f, rand::random::<u64>()))),
        base: Base::new(Arc::new(socket), link, clock, etx),
        core: Box::new(core),
        not_supernode: 0,
    };
    Ok(OverlayNode {
        local_addr,
        commands: ctx,
        events: erx,
        task: tokio::spawn(driver.run(crx).instrument(span)),
        turn: None,
    })
}

/// The owner's view of a messaging event.
fn messaging_event(e: MessagingEvent) -> Event {
    match e {
        MessagingEvent::Chat(e) => Event::Chat(e),
        MessagingEvent::Contacts(e) => Event::Contacts(e),
        MessagingEvent::Group(r) => Event::Group(r),
        MessagingEvent::Failed {
            command,
            reason,
            error,
        } => Event::CommandFailed {
            command,
            reason,
            error,
        },
    }
}

/// The owner's view of a files event.
fn files_event(e: FilesEvent) -> Event {
    match e {
        FilesEvent::File(e) => Event::File(e),
        FilesEvent::Failed { command, error } => Event::CommandFailed {
            command,
            reason: ErrorReason::Failed,
            error,
        },
    }
}

/// The owner's view of a calls event.
fn calls_event(e: CallsEvent) -> Event {
    match e {
        CallsEvent::Update(u) => Event::Call(u),
        CallsEvent::Failed { command, error } => Event::CommandFailed {
            command,
            reason: ErrorReason::Failed,
            error,
        },
    }
}

impl ClientDriver {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; 65_536];
        // What else is waiting after a wake-up, read many per system
        // call (slots of 64 KiB: pages are touched only as data lands).
        let mut more = crate::mmsg::RecvBatch::new(BATCH, 65_536);
        loop {
            let wait = self.base.wait(self.deadline());
            let stop = tokio::select! {
                r = self.base.socket.recv_from(&mut buf) => {
                    match r {
                        Ok((n, from)) => self.datagram(from, &buf[..n]),
                        // ICMP errors from earlier sends surface here; the
                        // protocol's own timers deal with unreachable peers.
                        Err(e) => tracing::debug!("recv: {e}"),
                    }
                    for _ in 0..DRAIN_BATCHES {
                        match self.base.socket.try_recv_batch(&mut more) {
                            Ok(n) => {
                                for i in 0..n {
                                    let (from, d) = more.get(i);
                                    self.datagram(from, d);
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
                Some(m) = next_media(&mut self.calls) => {
                    self.media_msg(m).await;
                    false
                }
                Some(j) = next_job(&mut self.files) => {
                    let now = self.base.now();
                    self.with_files(now, |f, cx| f.job(j, cx));
                    false
                }
                x = self.base.tcp.recv() => {
                    self.tcp_input(x);
                    false
                }
                _ = tokio::time::sleep(wait) => {
                    self.timeout().await;
                    false
                }
                cmd = commands.recv() => match cmd {
                    None => true,
                    Some(c) => self.command(c),
                },
            };
            self.pump().await;
            if stop {
                self.stop().await;
                break;
            }
        }
        let _ = self.base.events.send(Event::Stopped).await;
    }

    /// The node is stopping: let the goodbye leave before the socket
    /// closes, and finish the recordings before the node reports Stopped.
    async fn stop(&mut self) {
        self.flush().await;
        if let Some(c) = &mut self.calls {
            c.shutdown().await;
            while let Some(e) = c.poll_event() {
                let _ = self.base.events.try_send(calls_event(e));
            }
        }
    }

    /// The earliest deadline of the cores (the link's: [`Base::wait`]).
    fn deadline(&self) -> Option<Millis> {
        let nat = self.nat.as_ref().map(|n| n.deadline());
        let apps = self.messaging.as_ref().and_then(|m| m.poll_timeout());
        let calls = self.calls.as_ref().and_then(|c| c.poll_timeout());
        let files = self.files.as_ref().map(|f| f.poll_timeout(self.base.now()));
        [
            nat,
            apps,
            calls,
            files,
            Some(self.peers.deadline()),
            Some(self.peers.watch_deadline(self.base.send_errors)),
        ]
        .into_iter()
        .fold(self.core.poll_timeout(), earliest)
    }

    /// Run `f` on the calls with the driver state they need.
    pub(super) fn with_calls<R>(
        &mut self,
        f: impl FnOnce(&mut Calls, &mut Ctx<'_>) -> R,
    ) -> Option<R> {
        let calls = self.calls.as_deref_mut()?;
        let mut cx = Ctx {
            now: self.base.clock.now(),
            client: &mut self.core,
            link: &self.base.link,
            ice: &self.peers.ice,
            rng: &mut self.base.rng,
            nat: self.nat.as_ref().and_then(|n| n.last()),
            unix: self.base.clock.unix(),
        };
        Some(f(calls, &mut cx))
    }

    /// Run `f` on the files with the driver state they need.
    pub(super) fn with_files<R>(
        &mut self,
        now: Millis,
        f: impl FnOnce(&mut Files, &mut FilesCx<'_>) -> R,
    ) -> Option<R> {
        let call = self.calls.as_ref().is_some_and(|c| c.current().is_some());
        let files = self.files.as_deref_mut()?;
        files.set_call(call);
        let mut cx = FilesCx {
            now,
            unix: self.base.clock.unix(),
            client: &mut self.core,
            link: &mut self.base.link,
            ice: &mut self.peers.ice,
            rng: &mut self.base.rng,
        };
        Some(f(files, &mut cx))
    }

    /// Run `f` on the peers sub-driver, then take what it queued.
    pub(super) fn with_peers<R>(
        &mut self,
        now: Millis,
        f: impl FnOnce(&mut Peers, &mut Cx<'_>) -> R,
    ) -> R {
        let mut cx = Cx {
            now,
            base: &mut self.base,
            core: &mut self.core,
        };
        let r = f(&mut self.peers, &mut cx);
        self.peers_out();
        r
    }

    /// What the peers sub-driver queued: its events (the calls hear of
    /// them first) and media datagrams that came through our relay.
    pub(super) fn peers_out(&mut self) {
        while let Some(e) = self.peers.poll_event() {
            self.with_calls(|c, cx| c.on_peer(&e, cx));
            if let Some(f) = &mut self.files {
                let now = self.base.clock.now();
                match &e {
                    PeerEvent::Connected { user, path, .. } => {
                        f.path(now, user, true);
                        f.path_is(user, path);
                    }
                    PeerEvent::PathChanged { user, to, .. } => f.path_is(user, to),
                    PeerEvent::Failed { user, .. } => f.path(now, user, false),
                    _ => {}
                }
            }
            self.base.emit(Event::Peer(e));
        }
        for (from, d) in self.peers.take_relayed_media() {
            if let Some(c) = &mut self.calls {
                c.media_datagram(from, &d, &self.peers.ice);
            }
        }
    }

    /// One datagram on the main socket.
    fn datagram(&mut self, from: SocketAddr, d: &[u8]) {
        let now = self.base.now();
        let kind = classify(d);
        // Our relay's answers and what peers send through it.
        if self.with_peers(now, |p, cx| p.paths_datagram(cx, from, kind, d)) {
            return;
        }
        if !matches!(kind, Datagram::Stun(_))
            && let Some(n) = &mut self.nat
        {
            n.note_udp_received();
        }
        match kind {
            Datagram::Link => {
                let unix = self.base.unix();
                let rng = &mut self.base.rng;
                self.base.link.handle_datagram(now, unix, from, d, rng)
            }
            Datagram::Stun(_) => self.stun(now, from, d),
            Datagram::Media if self.calls.is_some() => {
                if let Some(c) = &mut self.calls {
                    c.media_datagram(from, d, &self.peers.ice);
                }
            }
            _ => self.base.dropped_datagrams += 1,
        }
    }

    /// A STUN datagram: the NAT detector's answers, ICE checks.
    fn stun(&mut self, now: Millis, from: SocketAddr, d: &[u8]) {
        if let Some(n) = &mut self.nat
            && n.datagram(now, from, d)
        {
            return;
        }
        if !self.with_peers(now, |p, cx| p.stun(cx, from, d)) {
            // TURN client answers come through `paths`; the rest: dropped.
            self.base.stun_unhandled += 1;
        }
    }

    fn tcp_input(&mut self, x: crate::node::tcp::TcpInput) {
        self.base.tcp_input(&x);
        let now = self.base.now();
        self.with_peers(now, |p, cx| p.paths_tcp_input(cx, &x));
    }

    /// A message from a call's media tasks.
    async fn media_msg(&mut self, m: MediaMsg) {
        if let Some(Some((path, bytes))) = self.with_calls(|c, cx| c.on_media(m, cx)) {
            // Direct, through our relay, or over TCP, as the link goes.
            self.peers
                .paths_send_link(&mut self.base, path.remote, bytes)
                .await;
        }
    }

    async fn timeout(&mut self) {
        let now = self.base.now();
        let unix = self.base.unix();
        (self.base.link).handle_timeout(now, unix, &mut self.base.rng);
        self.with_peers(now, |p, cx| p.handle_timeout(cx));
        let unix = self.base.clock.unix();
        self.core.handle_timeout(now, unix, &mut self.base.rng);
        if let Some(m) = &mut self.messaging {
            m.handle_timeout(now, unix, &mut self.core, &mut self.base.rng);
        }
        self.with_calls(|c, cx| c.handle_timeout(cx));
        self.with_files(now, |f, cx| f.handle_timeout(cx));
        if let Some(n) = &mut self.nat {
            let core = &self.core;
            n.handle_timeout(&mut self.base, now, || known_servers(core))
                .await;
        }
        if now >= self.peers.watch_deadline(self.base.send_errors) {
            self.watch_network().await;
        }
    }

    /// The address watch ([`Peers::watch`]): on a new network, the peers
    /// tell their peers where we are now, and NAT detection runs again.
    async fn watch_network(&mut self) {
        let Some(hosts) = self.peers.watch(&self.base).await else {
            return;
        };
        let now = self.base.now();
        self.with_peers(now, |p, cx| p.network_changed(cx, hosts));
        if let Some(n) = &mut self.nat {
            n.local_changed(&mut self.base).await;
        }
    }

    /// Returns true when the node should stop.
    fn command(&mut self, c: Command) -> bool {
        let (now, unix) = (self.base.now(), self.base.clock.unix());
        let (core, rng) = (&mut self.core, &mut self.base.rng);
        match c {
            Command::Lookup { username } => {
                core.lookup(now, &username);
            }
            Command::SetStatus { status, message } => match &mut self.messaging {
                Some(m) => m.command(
                    now,
                    unix,
                    MessagingCommand::SetStatus { status, message },
                    core,
                    rng,
                ),
                None => core.set_status(status, &message),
            },
            Command::Watch { username } => core.watch(&username),
            Command::RelayCredentials => {
                core.request_relay_credentials();
            }
            Command::SendEnvelope {
                to,
                kind,
                payload,
                store_if_offline,
                reply,
            } => {
                let id = core.send_envelope(now, unix, rng, &to, kind, &payload, store_if_offline);
                if let Some(r) = reply {
                    let _ = r.send(id);
                }
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::SetCertificate { cert } => {
                if self.base.set_certificate(&cert) {
                    if let Some(m) = &mut self.messaging {
                        m.set_certificate(&cert);
                    }
                    self.core.set_certificate(*cert);
                }
            }
            Command::SetRevocations { .. } => {
                tracing::debug!("revocation list ignored: clients do not enforce it");
            }
            Command::Shutdown => {
                self.shutdown(now);
                return true;
            }
            Command::Peer(p) => self.with_peers(now, |peers, cx| peers.command(cx, p)),
            Command::Messaging(m) => match &mut self.messaging {
                Some(ms) => ms.command(now, unix, m, core, rng),
                None => self.failed(
                    m.name(),
                    format!("chat and contacts are not enabled on this node: {m:?}"),
                ),
            },
            Command::Call(c) if self.calls.is_none() => self.failed(
                c.name(),
                format!("calls are not enabled on this node: {c:?}"),
            ),
            Command::Call(CallCommand::Call { username, reply })
                if self
                    .messaging
                    .as_ref()
                    .is_some_and(|m| m.is_blocked(&username)) =>
            {
                self.with_calls(|calls, _| calls.refuse_blocked(&username, reply));
            }
            Command::Call(c) => {
                self.with_calls(|calls, cx| calls.command(c, cx));
            }
            Command::Files(c) if self.files.is_none() => self.failed(
                c.name(),
                format!("file transfer is not enabled on this node: {c:?}"),
            ),
            Command::Files(c) => {
                self.with_files(now, |f, cx| f.command(c, cx));
            }
        }
        false
    }

    fn failed(&self, command: &'static str, error: String) {
        self.base.emit(Event::CommandFailed {
            command,
            reason: ErrorReason::Failed,
            error,
        });
    }

    /// Hang up, tell contacts we leave, publish the offline record.
    fn shutdown(&mut self, now: Millis) {
        let unix = self.base.clock.unix();
        self.with_calls(|calls, cx| calls.hangup_all(cx));
        if let Some(m) = &mut self.messaging {
            m.shutdown(now, unix, &mut self.core, &mut self.base.rng);
        }
        self.core.shutdown(now, unix);
    }

    fn status(&self) -> NodeStatus {
        NodeStatus {
            attached: self.core.attached().collect(),
            host_cache: self.core.host_cache(),
            dropped_not_supernode: self.not_supernode,
            nat: self.nat.as_ref().and_then(|n| n.last().cloned()),
            ..self.base.status()
        }
    }

    /// Move everything that is ready between the cores, then flush (the
    /// steps are in the module docs).
    async fn pump(&mut self) {
        let now = self.base.now();
        for _ in 0..64 {
            let mut progressed = self.link_events(now);
            progressed |= self.overlay_transmits(now);
            let (evs, routed) = self.overlay_events(now);
            progressed |= routed;
            progressed |= self.start_nat_on_attach(now, &evs).await;
            progressed |= self.with_peers(now, |p, cx| p.ice_events(cx));
            progressed |= self.release_held_offers(now);
            progressed |= !evs.is_empty();
            for e in evs {
                self.deliver(now, e).await;
            }
            if !progressed {
                break;
            }
        }
        self.flush().await;
    }

    /// Step 1: what the link endpoint reports.
    fn link_events(&mut self, now: Millis) -> bool {
        let mut progressed = false;
        while let Some(ev) = self.base.link.poll_event() {
            progressed = true;
            match ev {
                LinkEvent::Message { addr, payload, .. } => {
                    let Some(cert) = self.base.link.peer(addr) else {
                        continue;
                    };
                    if cert.role != Role::Supernode {
                        // A user's link carries only file messages.
                        let user = cert.username.clone();
                        let file = self
                            .with_files(now, |f, cx| f.on_link(&user, &payload, cx))
                            .unwrap_or(false);
                        if !file {
                            self.not_supernode += 1;
                        }
                        continue;
                    }
                    self.core
                        .handle_message(now, self.base.clock.unix(), addr, &payload);
                }
                LinkEvent::Established { addr, peer } if peer.role != Role::Supernode => {
                    self.with_peers(now, |p, cx| p.link_up(cx, addr, &peer.username));
                }
                LinkEvent::Closed { addr, reason } => {
                    tracing::debug!(%addr, ?reason, "link closed");
                    self.peers.link_closed(addr, &reason);
                    self.peers_out();
                }
                LinkEvent::Busy { addr, others } => {
                    tracing::info!(%addr, ?others, "no room at the node: trying others");
                    self.core.link_busy(now, addr, others);
                }
                _ => {}
            }
        }
        progressed
    }

    /// Step 2: the overlay core's messages into the link.
    fn overlay_transmits(&mut self, now: Millis) -> bool {
        self.base.send_overlay(now, self.core.drain_transmits())
    }

    /// Step 3: the core's events through the dispatcher, then what the
    /// sub-drivers report; true when any event came.
    fn overlay_events(&mut self, now: Millis) -> (Vec<Event>, bool) {
        let mut evs = Vec::new();
        let mut progressed = false;
        while let Some(e) = self.core.poll_event() {
            progressed = true;
            if let Some(e) = self.route(now, e) {
                evs.push(Event::Client(e));
            }
        }
        if let Some(m) = &mut self.messaging {
            evs.extend(std::iter::from_fn(|| m.poll_event()).map(messaging_event));
        }
        if let Some(c) = &mut self.calls {
            evs.extend(std::iter::from_fn(|| c.poll_event()).map(calls_event));
            let mut users = c.take_connects();
            for user in c.take_reconnects() {
                // Its link ends at another device than the call's: drop
                // it, so the connection below starts afresh.
                if let Some(p) = self.peers.ice.selected(&user) {
                    self.base.link.close(now, p.remote);
                }
                self.peers.ice.close(&user);
                users.push(user);
            }
            for user in users {
                progressed = true;
                let mut cx = Cx {
                    now,
                    base: &mut self.base,
                    core: &mut self.core,
                };
                self.peers.ensure(&mut cx, user);
            }
        }
        if let Some(n) = &mut self.nat {
            let attached = self.core.attached().next().is_some();
            evs.extend(std::iter::from_fn(|| n.poll_report(now, attached)).map(Event::Nat));
        }
        if evs
            .iter()
            .any(|e| matches!(e, Event::Client(ClientEvent::Published { .. })))
        {
            self.with_files(now, |f, cx| f.online(cx));
        }
        progressed |= self.files_out(now, &mut evs);
        (evs, progressed)
    }

    /// What the files queued: events, and peers to connect to (a
    /// reconnect drops the old ICE session and link first).
    fn files_out(&mut self, now: Millis, evs: &mut Vec<Event>) -> bool {
        let Some(f) = &mut self.files else {
            return false;
        };
        let before = evs.len();
        evs.extend(std::iter::from_fn(|| f.poll_event()).map(files_event));
        let connects = f.take_connects();
        let progressed = evs.len() > before || !connects.is_empty();
        for (user, fresh) in connects {
            if fresh {
                if let Some(p) = self.peers.ice.selected(&user) {
                    self.base.link.close(now, p.remote);
                }
                self.peers.ice.close(&user);
            }
            let mut cx = Cx {
                now,
                base: &mut self.base,
                core: &mut self.core,
            };
            self.peers.ensure(&mut cx, user);
        }
        progressed
    }

    /// Step 4: the first attachment starts the NAT detection; true when
    /// it did.
    async fn start_nat_on_attach(&mut self, now: Millis, evs: &[Event]) -> bool {
        let Some(n) = &mut self.nat else {
            return false;
        };
        let mut start = false;
        for e in evs {
            if let Event::Client(ClientEvent::Attached {
                supernode,
                observed,
                ..
            }) = e
            {
                // Over TCP the supernode saw our TCP mapping: it says
                // nothing of UDP (and is no sign that UDP works again).
                let over_tcp = self.base.tcp.has_link(*supernode);
                start |= n.on_attached(now, *supernode, *observed, over_tcp);
            }
        }
        if start {
            let core = &self.core;
            n.start(&mut self.base, || known_servers(core), "login")
                .await;
        }
        start
    }

    /// Step 6: one event out to the owner, after the peers sub-driver saw
    /// it.
    async fn deliver(&mut self, now: Millis, e: Event) {
        if let Event::Client(ce) = &e {
            let mut cx = Cx {
                now,
                base: &mut self.base,
                core: &mut self.core,
            };
            self.peers.on_client_event(&mut cx, ce).await;
            self.peers_out();
        }
        if let Event::Nat(r) = &e
            && let (Some(server), Some(public)) = (r.server, r.public)
            && !self.base.tcp.has_link(server)
        {
            self.peers.stun_answered(&self.base, server, public).await;
        }
        // A dead supernode's session is stale: the next message must start
        // a fresh handshake (it may have restarted).
        if let Event::Client(ClientEvent::Detached { supernode, .. }) = &e {
            self.base.link.close(now, *supernode);
        }
        self.base.emit(e);
    }

    /// Everything the cores queued: ICE, link frames, the relay's (all in
    /// `peers`), the NAT detector's STUN requests.
    async fn flush(&mut self) {
        // Data the windows allow, then everything out.
        let now = self.base.now();
        self.with_files(now, |f, cx| {
            f.flush(cx);
            f.end_step();
        });
        self.peers.flush(&mut self.base).await;
        if let Some(n) = &mut self.nat {
            while let Some(t) = n.poll_transmit() {
                self.base.send_udp(t.dst, &t.bytes, "STUN").await;
            }
        }
    }
}

/// The servers NAT detection measures against by default: the attached
/// supernodes, then the other known ones.
fn known_servers(core: &ClientCore) -> Vec<SocketAddr> {
    core.attached().chain(core.host_cache()).collect()
}

/// The next finished job of the files (never, without files).
async fn next_job(files: &mut Option<Box<Files>>) -> Option<Job> {
    match files {
        Some(f) => f.jobs.recv().await,
        None => std::future::pending().await,
    }
}

/// The next message of a call's media tasks (never, without calls).
async fn next_media(calls: &mut Option<Box<Calls>>) -> Option<MediaMsg> {
    match calls {
        Some(c) => c.media_rx.recv().await,
        None => std::future::pending().await,
    }
}
