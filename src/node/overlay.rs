//! Tokio driver for the overlay: one task owns the UDP socket, the link
//! endpoint (encrypted, certificate-checked sessions) and the role's
//! sans-IO core, and moves bytes, commands and events between them. The
//! task sleeps until the earliest deadline of the link or the core.
//!
//! On a client it also hosts the ICE sessions ([`IceSessions`]): STUN
//! datagrams on the main socket go to them first, their checks leave from
//! the same socket, and once a path is selected the caller opens a peer
//! link session over it ([`PeerEvent`]).

use crate::clock::Clock;
use crate::ice::{IceConfig, IceOffer, IceSessions, SessionEvent, Via};
use crate::identity::Role;
use crate::link::{LinkEndpoint, LinkEvent};
use crate::node::demux::{self, Datagram};
use crate::node::peer::{self, PeerEvent};
use crate::overlay::{ClientCore, ClientEvent, Status, SupernodeCore, SupernodeEvent};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

/// The core this node runs.
pub enum Core {
    Supernode(Box<SupernodeCore>),
    Client(Box<ClientCore>),
}

/// What the UI or a script asks of a client node.
#[derive(Debug)]
pub enum Command {
    Lookup {
        username: String,
    },
    SetStatus {
        status: Status,
        message: String,
    },
    Watch {
        username: String,
    },
    /// Snapshot of counters and attachments, for status output and tests.
    Status {
        reply: oneshot::Sender<NodeStatus>,
    },
    /// A renewed certificate for this device.
    SetCertificate {
        cert: Box<crate::identity::Certificate>,
    },
    /// Publish an offline record, detach and stop.
    Shutdown,
    /// Connect to a user peer to peer: look them up, exchange ICE
    /// candidates, probe, and open a link session over the chosen path.
    Connect {
        username: String,
    },
    /// An ICE offer (or answer) from `from`, as [`PeerEvent::Signal`]
    /// produced it on their side.
    IceSignal {
        from: String,
        bytes: Vec<u8>,
        answer: bool,
    },
}

/// What the node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Client(ClientEvent),
    Supernode(SupernodeEvent),
    /// Peer-to-peer connections (clients).
    Peer(PeerEvent),
    /// The node task ended.
    Stopped,
}

#[derive(Debug, Clone, Default)]
pub struct NodeStatus {
    pub local_addr: Option<SocketAddr>,
    pub attached: Vec<SocketAddr>,
    pub members: usize,
    pub clients: usize,
    pub records: usize,
    pub queries_sent: u64,
    pub host_cache: Vec<SocketAddr>,
    pub link_sessions: usize,
    pub dropped_not_supernode: u64,
}

/// A running overlay node.
pub struct OverlayNode {
    pub local_addr: SocketAddr,
    pub commands: mpsc::Sender<Command>,
    pub events: mpsc::Receiver<Event>,
    pub task: tokio::task::JoinHandle<()>,
}

impl OverlayNode {
    /// Start the node's task on an already bound socket.
    pub fn spawn(
        socket: UdpSocket,
        link: LinkEndpoint,
        core: Core,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Self> {
        let local_addr = socket.local_addr()?;
        let (ctx, crx) = mpsc::channel(256);
        let (etx, erx) = mpsc::channel(4096);
        let span = match &core {
            Core::Supernode(_) => tracing::info_span!("supernode", addr = %local_addr),
            Core::Client(c) => tracing::info_span!("client", user = %c.username()),
        };
        let task = tokio::spawn(
            async move {
                let mut n = Driver {
                    socket,
                    link,
                    core,
                    clock,
                    rng: StdRng::from_entropy(),
                    events: etx,
                    not_supernode: 0,
                    ice: IceSessions::new(IceConfig::default()),
                    connecting: HashMap::new(),
                    host_known: false,
                    ice_relay_unsent: 0,
                };
                n.run(crx).await;
                let _ = n.events.send(Event::Stopped).await;
            }
            .instrument(span),
        );
        Ok(OverlayNode {
            local_addr,
            commands: ctx,
            events: erx,
            task,
        })
    }
}

struct Driver {
    socket: UdpSocket,
    link: LinkEndpoint,
    core: Core,
    clock: Arc<dyn Clock>,
    rng: StdRng,
    events: mpsc::Sender<Event>,
    not_supernode: u64,
    ice: IceSessions,
    /// Connect commands waiting for their lookup: user -> when asked.
    connecting: HashMap<String, u64>,
    host_known: bool,
    /// ICE datagrams for a relay this node has no TURN client for.
    ice_relay_unsent: u64,
}

impl Driver {
    fn peer_event(&mut self, e: PeerEvent) {
        if self.events.try_send(Event::Peer(e)).is_err() {
            tracing::warn!("event queue full: a peer event was dropped");
        }
    }

    /// What the ICE sessions ask for.
    fn session_event(&mut self, now: u64, e: SessionEvent) {
        match e {
            SessionEvent::SendOffer { to, offer, answer } => self.peer_event(PeerEvent::Signal {
                to,
                bytes: offer.encode(),
                answer,
            }),
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
                if let Some(cert) = self.link.peer(path.remote)
                    && cert.role != Role::Supernode
                {
                    let name = cert.username.clone();
                    self.peer_established(now, path.remote, &name);
                    return;
                }
                // The caller opens the link; the callee answers it.
                if controlling && let Err(e) = self.link.connect(now, path.remote, &mut self.rng) {
                    self.peer_event(PeerEvent::Failed {
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
                self.peer_event(PeerEvent::PathChanged {
                    user,
                    from,
                    to: path,
                });
            }
            SessionEvent::Failed { user, reason } => {
                self.peer_event(PeerEvent::Failed { user, reason })
            }
        }
    }

    /// A link session with a non-supernode came up: a peer connection if
    /// ICE led to it and the certificate names the user we meant.
    fn peer_established(&mut self, now: u64, addr: SocketAddr, username: &str) {
        let Some(user) = self.ice.user_at(addr).map(str::to_owned) else {
            tracing::debug!(%addr, username, "link from a peer without an ICE session");
            return;
        };
        if user != username {
            self.link.close(now, addr);
            self.ice.close(&user);
            self.peer_event(PeerEvent::Failed {
                user,
                reason: format!("the peer at {addr} is {username}"),
            });
            return;
        }
        let (Some(path), Some(started)) = (self.ice.selected(&user), self.ice.started(&user))
        else {
            return;
        };
        self.peer_event(PeerEvent::Connected {
            user,
            path,
            setup_ms: now.saturating_sub(started),
        });
    }

    fn deadline(&self) -> u64 {
        let core = match &self.core {
            Core::Supernode(s) => s.poll_timeout(),
            Core::Client(c) => c.poll_timeout(),
        };
        core.min(self.link.poll_timeout().unwrap_or(u64::MAX))
            .min(self.ice.poll_timeout().unwrap_or(u64::MAX))
    }

    async fn run(&mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; 65_536];
        let mut stopping = false;
        loop {
            let now = self.clock.now_ms();
            let wait = self.deadline().saturating_sub(now).min(60_000);
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        let now = self.clock.now_ms();
                        let d = &buf[..n];
                        let ice = demux::classify(d) == Datagram::Stun
                            && self.ice.handle_stun(now, Via::Direct, from, d, &mut self.rng);
                        if !ice {
                            self.link.handle_datagram(now, from, d, &mut self.rng);
                        }
                    }
                    // ICMP errors from earlier sends surface here; the
                    // protocol's own timers deal with unreachable peers.
                    Err(e) => tracing::debug!("recv: {e}"),
                },
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {
                    let now = self.clock.now_ms();
                    self.link.handle_timeout(now, &mut self.rng);
                    self.ice.handle_timeout(now, &mut self.rng);
                    match &mut self.core {
                        Core::Supernode(s) => s.handle_timeout(now, &mut self.rng),
                        Core::Client(c) => c.handle_timeout(now, &mut self.rng),
                    }
                }
                cmd = commands.recv(), if !stopping => match cmd {
                    None => stopping = true,
                    Some(c) => stopping = self.command(c),
                },
            }
            self.pump().await;
            if stopping {
                // Let the goodbye leave before the socket closes.
                self.flush_socket().await;
                return;
            }
        }
    }

    /// Returns true when the node should stop.
    fn command(&mut self, c: Command) -> bool {
        let now = self.clock.now_ms();
        match (&mut self.core, c) {
            (Core::Client(cl), Command::Lookup { username }) => {
                cl.lookup(now, &username);
            }
            (Core::Client(cl), Command::SetStatus { status, message }) => {
                cl.set_status(status, &message)
            }
            (Core::Client(cl), Command::Watch { username }) => cl.watch(&username),
            (_, Command::Status { reply }) => {
                let mut st = NodeStatus {
                    local_addr: self.socket.local_addr().ok(),
                    link_sessions: self.link.sessions().count(),
                    dropped_not_supernode: self.not_supernode,
                    ..Default::default()
                };
                match &self.core {
                    Core::Client(cl) => {
                        st.attached = cl.attached().collect();
                        st.host_cache = cl.host_cache();
                    }
                    Core::Supernode(s) => {
                        st.members = s.membership().alive_count();
                        st.clients = s.client_count();
                        st.records = s.record_count();
                        st.queries_sent = s.stats().queries_sent;
                    }
                }
                let _ = reply.send(st);
            }
            (core, Command::SetCertificate { cert }) => {
                if let Err(e) = self.link.set_certificate((*cert).clone()) {
                    tracing::warn!("renewed certificate refused: {e}");
                } else if let Core::Client(cl) = core {
                    cl.set_certificate(*cert);
                }
            }
            (Core::Client(cl), Command::Shutdown) => {
                cl.shutdown(now);
                return true;
            }
            (Core::Supernode(_), Command::Shutdown) => return true,
            (Core::Client(cl), Command::Connect { username }) => {
                let username = username.to_ascii_lowercase();
                self.connecting.insert(username.clone(), now);
                cl.lookup(now, &username);
            }
            (
                Core::Client(_),
                Command::IceSignal {
                    from,
                    bytes,
                    answer,
                },
            ) => match IceOffer::decode(&bytes) {
                Ok(o) if answer => {
                    if !self.ice.on_answer(now, &from, &o) {
                        tracing::debug!(%from, "ICE answer for no session");
                    }
                }
                Ok(o) => self.ice.on_offer(now, &from, &o, &mut self.rng),
                Err(e) => tracing::debug!(%from, "bad ICE signal: {e}"),
            },
            (Core::Supernode(_), c) => tracing::debug!("ignored {c:?} on a supernode"),
        }
        false
    }

    /// Move everything that is ready: link events into the core, core
    /// messages into the link, datagrams onto the socket, events out.
    async fn pump(&mut self) {
        let now = self.clock.now_ms();
        for _ in 0..64 {
            let mut progressed = false;
            while let Some(ev) = self.link.poll_event() {
                progressed = true;
                if let LinkEvent::Message { addr, payload, .. } = ev {
                    let Some(cert) = self.link.peer(addr).cloned() else {
                        continue;
                    };
                    match &mut self.core {
                        Core::Supernode(s) => {
                            s.handle_message(now, addr, &cert, &payload, &mut self.rng)
                        }
                        Core::Client(c) => {
                            // Clients take orders only from supernodes.
                            if cert.role != Role::Supernode {
                                self.not_supernode += 1;
                                continue;
                            }
                            c.handle_message(now, addr, &payload);
                        }
                    }
                } else if let LinkEvent::Established { addr, peer } = &ev {
                    if peer.role != Role::Supernode {
                        self.peer_established(now, *addr, &peer.username);
                    }
                } else if let LinkEvent::Closed { addr, reason } = ev {
                    tracing::debug!(%addr, ?reason, "link closed");
                    if let Some(user) = self.ice.user_at(addr).map(str::to_owned) {
                        self.ice.close(&user);
                        self.peer_event(PeerEvent::Failed {
                            user,
                            reason: format!("peer link closed: {reason:?}"),
                        });
                    }
                }
            }
            let out: Vec<crate::overlay::Transmit> = match &mut self.core {
                Core::Supernode(s) => s.drain_transmits().collect(),
                Core::Client(c) => c.drain_transmits().collect(),
            };
            for t in out {
                progressed = true;
                if let Err(e) = self.link.send(now, t.dst, &t.bytes, &mut self.rng) {
                    tracing::debug!(dst = %t.dst, "link send: {e}");
                }
            }
            let mut evs = Vec::new();
            match &mut self.core {
                Core::Supernode(s) => {
                    while let Some(e) = s.poll_event() {
                        evs.push(Event::Supernode(e));
                    }
                }
                Core::Client(c) => {
                    while let Some(e) = c.poll_event() {
                        evs.push(Event::Client(e));
                    }
                }
            }
            while let Some(e) = self.ice.poll_event() {
                progressed = true;
                self.session_event(now, e);
            }
            for e in evs {
                progressed = true;
                if let Event::Client(ClientEvent::Lookup {
                    username, outcome, ..
                }) = &e
                    && let Some(started) = self.connecting.remove(username)
                {
                    match outcome {
                        crate::overlay::LookupOutcome::Online(_) => {
                            if let Err(err) =
                                self.ice.connect(now, started, username, &mut self.rng)
                            {
                                self.peer_event(PeerEvent::Failed {
                                    user: username.clone(),
                                    reason: err.to_string(),
                                });
                            }
                        }
                        other => self.peer_event(PeerEvent::Failed {
                            user: username.clone(),
                            reason: match other {
                                crate::overlay::LookupOutcome::Offline { .. } => {
                                    "offline".to_string()
                                }
                                crate::overlay::LookupOutcome::NotFound => "not found".to_string(),
                                crate::overlay::LookupOutcome::Failed(w) => {
                                    format!("lookup failed: {w}")
                                }
                                crate::overlay::LookupOutcome::Online(_) => unreachable!(),
                            },
                        }),
                    }
                }
                if let Event::Client(ClientEvent::Attached {
                    supernode,
                    observed,
                    ..
                }) = &e
                {
                    self.ice.observe(*observed);
                    if !self.host_known
                        && let Ok(bound) = self.socket.local_addr()
                        && let Some(h) = peer::host_address(bound, *supernode).await
                    {
                        self.host_known = true;
                        self.ice.set_host(vec![h]);
                    }
                }
                // A dead supernode's session is stale: the next message
                // must start a fresh handshake (it may have restarted).
                match &e {
                    Event::Client(ClientEvent::Detached { supernode, .. }) => {
                        self.link.close(now, *supernode)
                    }
                    Event::Supernode(SupernodeEvent::ClientDetached { addr, .. })
                    | Event::Supernode(SupernodeEvent::MemberDown { addr, .. }) => {
                        self.link.close(now, *addr)
                    }
                    _ => {}
                }
                if self.events.try_send(e).is_err() {
                    tracing::warn!("event queue full: an event was dropped");
                }
            }
            if !progressed {
                break;
            }
        }
        self.flush_socket().await;
    }

    async fn flush_socket(&mut self) {
        while let Some(t) = self.ice.poll_transmit() {
            match t.via {
                Via::Direct => {
                    if let Err(e) = self.socket.send_to(&t.bytes, t.dst).await {
                        tracing::debug!(dst = %t.dst, "ICE send: {e}");
                    }
                }
                // No TURN client in this node yet: no relayed candidates
                // are offered, so this is only reached by a bug.
                Via::Relay(_) => self.ice_relay_unsent += 1,
            }
        }
        while let Some(t) = self.link.poll_transmit() {
            if let Err(e) = self.socket.send_to(&t.bytes, t.dst).await {
                tracing::debug!(dst = %t.dst, "send: {e}");
            }
        }
    }
}
