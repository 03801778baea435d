//! Tokio driver for the overlay: one task owns the UDP socket, the link
//! endpoint (encrypted, certificate-checked sessions) and the role's
//! sans-IO core, and moves bytes, commands and events between them. The
//! task sleeps until the earliest deadline of the link or the core.

use crate::clock::Clock;
use crate::identity::Role;
use crate::link::{LinkEndpoint, LinkEvent};
use crate::node::messaging::Messaging;
use crate::overlay::{ClientCore, ClientEvent, Status, SupernodeCore, SupernodeEvent};
use rand::SeedableRng;
use rand::rngs::StdRng;
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
    /// Send a sealed envelope to a user (see `overlay::envelope`); its id
    /// comes back on `reply`, its outcome as an `Envelope*` client event.
    SendEnvelope {
        to: String,
        kind: u8,
        payload: Vec<u8>,
        store_if_offline: bool,
        reply: Option<oneshot::Sender<crate::overlay::EnvelopeId>>,
    },
    // Chat and contacts (nodes started with `spawn_with_messaging`).
    /// Send a chat message; its id (or why not) comes back on `reply`.
    SendMessage {
        to: String,
        text: String,
        reply: Option<oneshot::Sender<Result<crate::chat::MsgId, String>>>,
    },
    /// The last `limit` messages with a user, oldest first.
    History {
        with: String,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<crate::chat::Message>, String>>,
    },
    /// The contact list.
    Contacts {
        reply: oneshot::Sender<Vec<crate::contacts::ContactInfo>>,
    },
    AddContact {
        user: String,
        greeting: String,
    },
    AcceptContact {
        user: String,
    },
    DeclineContact {
        user: String,
    },
    RemoveContact {
        user: String,
    },
    BlockContact {
        user: String,
    },
    UnblockContact {
        user: String,
    },
    /// The user did something (resets the idle timer behind auto-away).
    Activity,
}

/// What the node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Client(ClientEvent),
    Supernode(SupernodeEvent),
    Chat(crate::chat::ChatEvent),
    Contacts(crate::contacts::ContactsEvent),
    /// A command could not be carried out.
    CommandFailed {
        error: String,
    },
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
        Self::spawn_with_messaging(socket, link, core, clock, None)
    }

    /// [`OverlayNode::spawn`] with chat and contacts on a client node.
    pub fn spawn_with_messaging(
        socket: UdpSocket,
        link: LinkEndpoint,
        core: Core,
        clock: Arc<dyn Clock>,
        messaging: Option<Messaging>,
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
                    messaging: messaging.map(Box::new),
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
    messaging: Option<Box<Messaging>>,
}

impl Driver {
    fn deadline(&self) -> u64 {
        let core = match &self.core {
            Core::Supernode(s) => s.poll_timeout(),
            Core::Client(c) => c.poll_timeout(),
        };
        let apps = self
            .messaging
            .as_ref()
            .map_or(u64::MAX, |m| m.poll_timeout());
        core.min(self.link.poll_timeout().unwrap_or(u64::MAX))
            .min(apps)
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
                        self.link.handle_datagram(now, from, &buf[..n], &mut self.rng);
                    }
                    // ICMP errors from earlier sends surface here; the
                    // protocol's own timers deal with unreachable peers.
                    Err(e) => tracing::debug!("recv: {e}"),
                },
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {
                    let now = self.clock.now_ms();
                    self.link.handle_timeout(now, &mut self.rng);
                    match &mut self.core {
                        Core::Supernode(s) => s.handle_timeout(now, &mut self.rng),
                        Core::Client(c) => {
                            c.handle_timeout(now, &mut self.rng);
                            if let Some(m) = &mut self.messaging {
                                m.handle_timeout(now, c, &mut self.rng);
                            }
                        }
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
        let c = match (&mut self.core, &mut self.messaging) {
            (Core::Client(cl), Some(m)) => match m.command(now, c, cl, &mut self.rng) {
                Some(c) => c,
                None => return false,
            },
            _ => c,
        };
        match (&mut self.core, c) {
            (Core::Client(cl), Command::Lookup { username }) => {
                cl.lookup(now, &username);
            }
            (Core::Client(cl), Command::SetStatus { status, message }) => {
                cl.set_status(status, &message)
            }
            (Core::Client(cl), Command::Watch { username }) => cl.watch(&username),
            (
                Core::Client(cl),
                Command::SendEnvelope {
                    to,
                    kind,
                    payload,
                    store_if_offline,
                    reply,
                },
            ) => {
                let id =
                    cl.send_envelope(now, &mut self.rng, &to, kind, &payload, store_if_offline);
                if let Some(r) = reply {
                    let _ = r.send(id);
                }
            }
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
            (Core::Supernode(_), c) => tracing::debug!("ignored {c:?} on a supernode"),
            (Core::Client(_), c) => {
                let error = format!("chat and contacts are not enabled on this node: {c:?}");
                if self
                    .events
                    .try_send(Event::CommandFailed { error })
                    .is_err()
                {
                    tracing::warn!("event queue full: an event was dropped");
                }
            }
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
                } else if let LinkEvent::Closed { addr, reason } = ev {
                    tracing::debug!(%addr, ?reason, "link closed");
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
                        progressed = true;
                        let consumed = match &mut self.messaging {
                            Some(m) => m.on_event(now, &e, c, &mut self.rng),
                            None => false,
                        };
                        if !consumed {
                            evs.push(Event::Client(e));
                        }
                    }
                    if let Some(m) = &mut self.messaging {
                        while let Some(e) = m.poll_event() {
                            evs.push(e);
                        }
                    }
                }
            }
            for e in evs {
                progressed = true;
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
        while let Some(t) = self.link.poll_transmit() {
            if let Err(e) = self.socket.send_to(&t.bytes, t.dst).await {
                tracing::debug!(dst = %t.dst, "send: {e}");
            }
        }
    }
}
