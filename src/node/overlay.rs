//! Tokio driver for the overlay: one task owns the UDP socket, the link
//! endpoint (encrypted, certificate-checked sessions) and the role's
//! sans-IO core, and moves bytes, commands and events between them. The
//! task sleeps until the earliest deadline of the link or the core.
//!
//! The main socket carries more than link frames
//! ([`crate::wire::stun::classify`]): on a supernode, STUN Binding goes to
//! the [`StunServer`] (which may answer from the extra RFC 5780 sockets
//! this driver also owns); on a client, STUN answers go to the
//! [`NatDetector`], which measures the NAT at login and again when the
//! network changes.
//!
//! On a client it also hosts the ICE sessions ([`IceSessions`]): STUN
//! datagrams on the main socket go to them first, their checks leave from
//! the same socket, and once a path is selected the caller opens a peer
//! link session over it ([`PeerEvent`]).

use crate::clock::Clock;
use crate::ice::offer::{ENVELOPE_ANSWER, ENVELOPE_OFFER};
use crate::ice::{IceConfig, IceOffer, IceSessions, SessionEvent, Via};
use crate::identity::Role;
use crate::link::{LinkEndpoint, LinkEvent};
use crate::nat::{
    DetectorConfig, NatDetector, NatEvent, NatReport, StunServer, StunServerConfig, StunStats,
};
use crate::node::calls::{CallOptions, CallUpdate, Calls, Ctx, MediaMsg};
use crate::node::messaging::Messaging;
use crate::node::peer::{self, PeerEvent};
use crate::node::turn::{TurnHandle, TurnService, TurnSetup};
use crate::overlay::{ClientCore, ClientEvent, Status, SupernodeCore, SupernodeEvent};
use crate::wire::stun::{Datagram, Header, classify, method};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

mod paths;
pub use paths::PathOptions;

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
    /// Ask the primary supernode for relay (TURN) credentials.
    RelayCredentials,
    /// Send a sealed envelope to a user (see `overlay::envelope`); its id
    /// comes back on `reply`, its outcome as an `Envelope*` client event.
    SendEnvelope {
        to: String,
        kind: u8,
        payload: Vec<u8>,
        store_if_offline: bool,
        reply: Option<oneshot::Sender<crate::overlay::EnvelopeId>>,
    },
    // Chat and contacts (nodes started with `NodeOptions::messaging`).
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
    // Calls (nodes started with `NodeOptions::calls`; see `node::calls`).
    /// Call a user; the call's id (or why not) comes back on `reply`, its
    /// states as [`Event::Call`].
    Call {
        username: String,
        reply: Option<oneshot::Sender<Result<crate::call::CallId, String>>>,
    },
    /// Answer an incoming call (`None`: the current one).
    AcceptCall {
        call: Option<crate::call::CallId>,
    },
    DeclineCall {
        call: Option<crate::call::CallId>,
    },
    /// End a call in any state: cancel, decline or hang up.
    HangUp {
        call: Option<crate::call::CallId>,
    },
    /// Mute our microphone (`None`: toggle).
    Mute {
        call: Option<crate::call::CallId>,
        on: Option<bool>,
    },
    /// Put the call on hold (`None`: toggle).
    Hold {
        call: Option<crate::call::CallId>,
        on: Option<bool>,
    },
}

/// What the node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Client(ClientEvent),
    Supernode(SupernodeEvent),
    /// A NAT detection finished (clients).
    Nat(NatReport),
    Chat(crate::chat::ChatEvent),
    Contacts(crate::contacts::ContactsEvent),
    /// A command could not be carried out.
    CommandFailed {
        error: String,
    },
    /// Peer-to-peer connections (clients).
    Peer(PeerEvent),
    /// Calls: state changes and media statistics (clients with calls).
    Call(CallUpdate),
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
    /// The last NAT detection (clients).
    pub nat: Option<NatReport>,
    /// STUN server counters (supernodes).
    pub stun: Option<StunStats>,
    /// Datagrams of no protocol this node speaks, dropped.
    pub dropped_datagrams: u64,
    /// STUN messages no core here took (e.g. TURN methods before the
    /// relay is built), dropped.
    pub stun_unhandled: u64,
}

/// What a node runs besides the overlay on its sockets.
#[derive(Debug, Default)]
pub struct NodeOptions {
    /// Supernodes: the STUN server, with the main socket as its primary.
    pub stun: Option<StunServerConfig>,
    /// Supernodes: the extra RFC 5780 sockets, already bound (see
    /// [`StunServer::extra_sockets`]).
    pub stun_sockets: Vec<UdpSocket>,
    /// Supernodes: the TURN relay sharing the main socket.
    pub turn: Option<TurnSetup>,
    /// Clients: chat and contacts.
    pub messaging: Option<Messaging>,
    /// Clients: measure the NAT.
    pub nat: Option<NatOptions>,
    /// Clients: make and answer calls.
    pub calls: Option<CallOptions>,
    /// Clients: relayed candidates and the TCP fallback (`paths`).
    pub paths: PathOptions,
}

/// How a client measures its NAT.
#[derive(Debug, Clone)]
pub struct NatOptions {
    pub detector: DetectorConfig,
    /// STUN servers to measure against; empty: the supernodes.
    pub servers: Vec<SocketAddr>,
    /// Start without waiting for an attachment after this long (when UDP
    /// is blocked none ever comes).
    pub wait_attach_ms: u64,
    /// How often the local address is checked for a change.
    pub local_check_ms: u64,
}

impl Default for NatOptions {
    fn default() -> Self {
        NatOptions {
            detector: DetectorConfig::default(),
            servers: Vec::new(),
            wait_attach_ms: 1_500,
            local_check_ms: 10_000,
        }
    }
}

/// The NAT detector of a client and when to run it.
struct NatState {
    det: NatDetector,
    opts: NatOptions,
    started: bool,
    start_at: u64,
    local_check_at: u64,
}

/// A running overlay node.
pub struct OverlayNode {
    pub local_addr: SocketAddr,
    pub commands: mpsc::Sender<Command>,
    pub events: mpsc::Receiver<Event>,
    pub task: tokio::task::JoinHandle<()>,
    /// The TURN relay on this node's socket, when it runs one.
    pub turn: Option<TurnHandle>,
}

impl OverlayNode {
    /// Start the node's task on an already bound socket.
    pub fn spawn(
        socket: UdpSocket,
        link: LinkEndpoint,
        core: Core,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Self> {
        Self::spawn_with(socket, link, core, clock, NodeOptions::default())
    }

    /// [`OverlayNode::spawn`] with what [`NodeOptions`] adds: a STUN
    /// server or TURN relay (supernodes), NAT detection, messaging, calls
    /// and relayed paths (clients).
    pub fn spawn_with(
        socket: UdpSocket,
        link: LinkEndpoint,
        core: Core,
        clock: Arc<dyn Clock>,
        opts: NodeOptions,
    ) -> std::io::Result<Self> {
        let local_addr = socket.local_addr()?;
        let socket = Arc::new(socket);
        let messaging = opts.messaging;
        let calls = match (&core, opts.calls) {
            (Core::Client(_), Some(c)) => Some(Box::new(Calls::new(c, clock.clone()))),
            _ => None,
        };
        // Link streams the TURN listener accepts (clients without UDP).
        let (ltx, lrx) = mpsc::channel(64);
        let turn = opts.turn.map(|t| {
            TurnService::spawn_with_links(
                t.core,
                socket.clone(),
                t.tcp,
                t.cfg,
                clock.clone(),
                Some(ltx),
            )
        });
        let turn_handle = turn.as_ref().map(|t| t.handle.clone());
        let now = clock.now_ms();
        let is_client = matches!(core, Core::Client(_));
        let stun = match (&core, opts.stun) {
            (Core::Supernode(_), Some(cfg)) => Some(StunServer::new(cfg)),
            _ => None,
        };
        let nat = match (is_client, opts.nat) {
            (true, Some(o)) => Some(NatState {
                det: NatDetector::new(o.detector),
                start_at: now + o.wait_attach_ms,
                local_check_at: u64::MAX,
                started: false,
                opts: o,
            }),
            _ => None,
        };
        // Extra sockets: a task each, forwarding what arrives to the driver.
        let (xtx, xrx) = mpsc::channel::<(SocketAddr, SocketAddr, Vec<u8>)>(1024);
        let mut extra = HashMap::new();
        let mut readers = Vec::new();
        for s in opts.stun_sockets {
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
        drop(xtx);
        let (ctx, crx) = mpsc::channel(256);
        let (etx, erx) = mpsc::channel(4096);
        let mut tid_key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut tid_key);
        let mut paths = paths::PeerPaths::new(is_client, &opts.paths, now, tid_key);
        paths.tcp.accept_from(lrx);
        let mut ice = IceSessions::new(IceConfig {
            relay_only: opts.paths.relay_only,
            ..IceConfig::default()
        });
        ice.set_relay_gathering(paths.gather.is_some());
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
                    stun,
                    extra,
                    nat,
                    dropped_datagrams: 0,
                    stun_unhandled: 0,
                    turn,
                    messaging: messaging.map(Box::new),
                    calls,
                    ice,
                    paths,
                    connecting: HashMap::new(),
                    host_known: false,
                    ice_relay_unsent: 0,
                    ice_envelopes: HashMap::new(),
                };
                n.paths_start();
                n.run(crx, xrx).await;
                for r in readers {
                    r.abort();
                }
                let _ = n.events.send(Event::Stopped).await;
            }
            .instrument(span),
        );
        Ok(OverlayNode {
            local_addr,
            commands: ctx,
            events: erx,
            task,
            turn: turn_handle,
        })
    }
}

struct Driver {
    socket: Arc<UdpSocket>,
    link: LinkEndpoint,
    core: Core,
    clock: Arc<dyn Clock>,
    rng: StdRng,
    events: mpsc::Sender<Event>,
    not_supernode: u64,
    stun: Option<StunServer>,
    /// The extra RFC 5780 sockets by local address.
    extra: HashMap<SocketAddr, Arc<UdpSocket>>,
    nat: Option<NatState>,
    dropped_datagrams: u64,
    stun_unhandled: u64,
    /// Stops with the node.
    turn: Option<TurnService>,
    messaging: Option<Box<Messaging>>,
    calls: Option<Box<Calls>>,
    ice: IceSessions,
    /// Relayed candidates and TCP streams (`paths`).
    paths: paths::PeerPaths,
    /// Connect commands waiting for their lookup: user -> when asked.
    connecting: HashMap<String, u64>,
    host_known: bool,
    /// ICE datagrams for a relay this node has no TURN client for.
    ice_relay_unsent: u64,
    /// Envelopes carrying our ICE offers and answers, by id: to whom.
    ice_envelopes: HashMap<crate::overlay::EnvelopeId, String>,
}

impl Driver {
    fn peer_event(&mut self, e: PeerEvent) {
        self.with_calls(|c, cx| c.on_peer(&e, cx));
        if self.events.try_send(Event::Peer(e)).is_err() {
            tracing::warn!("event queue full: a peer event was dropped");
        }
    }

    /// Run `f` on the call layer with the driver state it needs.
    fn with_calls<R>(&mut self, f: impl FnOnce(&mut Calls, &mut Ctx<'_>) -> R) -> Option<R> {
        let now = self.clock.now_ms();
        let (Some(calls), Core::Client(client)) = (self.calls.as_deref_mut(), &mut self.core)
        else {
            return None;
        };
        let mut cx = Ctx {
            now,
            client,
            link: &self.link,
            ice: &self.ice,
            rng: &mut self.rng,
        };
        Some(f(calls, &mut cx))
    }

    /// Open a peer connection to `user` unless one is up or under way.
    fn ensure_peer(&mut self, now: u64, user: String) {
        if self.connecting.contains_key(&user) || self.ice.started(&user).is_some() {
            return;
        }
        if let Core::Client(cl) = &mut self.core {
            cl.lookup(now, &user);
            self.connecting.insert(user, now);
        }
    }

    /// A message from a call's media tasks.
    async fn media_msg(&mut self, m: MediaMsg) {
        if let Some(Some((path, bytes))) = self.with_calls(|c, cx| c.on_media(m, cx)) {
            // Direct, through our relay, or over TCP, as the link goes.
            self.paths_send_link(path.remote, bytes).await;
        }
    }

    /// What the ICE sessions ask for.
    fn session_event(&mut self, now: u64, e: SessionEvent) {
        match e {
            SessionEvent::SendOffer { to, offer, answer } => {
                let bytes = offer.encode();
                // Sealed to the peer, through the supernodes.
                if let Core::Client(cl) = &mut self.core {
                    let kind = if answer {
                        ENVELOPE_ANSWER
                    } else {
                        ENVELOPE_OFFER
                    };
                    let id = cl.send_envelope(now, &mut self.rng, &to, kind, &bytes, false);
                    self.ice_envelopes.insert(id, to.clone());
                }
                self.peer_event(PeerEvent::Signal { to, bytes, answer })
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
            // Relay gathering and permissions: `paths`.
            SessionEvent::GatherRelay | SessionEvent::RemoteCandidates { .. } => {}
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
        let nat = self.nat.as_ref().map_or(u64::MAX, |n| {
            let t = n.det.poll_timeout().min(n.local_check_at);
            if n.started { t } else { t.min(n.start_at) }
        });
        let apps = self
            .messaging
            .as_ref()
            .map_or(u64::MAX, |m| m.poll_timeout());
        let calls = self.calls.as_ref().map_or(u64::MAX, |c| c.poll_timeout());
        core.min(nat)
            .min(self.link.poll_timeout().unwrap_or(u64::MAX))
            .min(apps)
            .min(calls)
            .min(self.ice.poll_timeout().unwrap_or(u64::MAX))
            .min(self.paths_deadline())
    }

    /// One datagram from the network, on the main socket (`local` None) or
    /// an extra STUN socket.
    fn datagram(&mut self, local: Option<SocketAddr>, from: SocketAddr, d: &[u8]) {
        let now = self.clock.now_ms();
        let kind = classify(d);
        // Our relay's answers and what peers send through it.
        if local.is_none() && self.paths_datagram(from, kind, d) {
            return;
        }
        if !matches!(kind, Datagram::Stun(_))
            && let Some(n) = &mut self.nat
        {
            n.det.note_udp_received();
        }
        match kind {
            Datagram::Link if local.is_none() => {
                self.link.handle_datagram(now, from, d, &mut self.rng)
            }
            Datagram::Stun(h) => self.stun_datagram(now, local, from, h, d),
            Datagram::ChannelData(_) if local.is_none() => match &self.turn {
                Some(t) => t.handle.datagram(from, d),
                None => self.dropped_datagrams += 1,
            },
            Datagram::Media if local.is_none() && self.calls.is_some() => {
                if let Some(c) = &mut self.calls {
                    c.media_datagram(from, d, &self.ice);
                }
            }
            _ => self.dropped_datagrams += 1,
        }
    }

    fn stun_datagram(
        &mut self,
        now: u64,
        local: Option<SocketAddr>,
        from: SocketAddr,
        h: Header,
        d: &[u8],
    ) {
        // TURN (Allocate, Refresh, CreatePermission, ChannelBind, Send) on
        // the main socket goes to the relay, with or without a STUN server.
        if h.is_turn()
            && local.is_none()
            && let Some(t) = &self.turn
        {
            t.handle.datagram(from, d);
            return;
        }
        if let Some(server) = &mut self.stun {
            if h.method == method::BINDING {
                let local = local.unwrap_or(server.config().primary);
                server.handle_datagram(now, local, from, d);
            } else {
                self.stun_unhandled += 1;
            }
            return;
        }
        if let Some(n) = &mut self.nat
            && n.det.handle_datagram(now, from, d)
        {
            return;
        }
        // ICE connectivity checks and their answers.
        if local.is_none()
            && self
                .ice
                .handle_stun(now, Via::Direct, from, d, &mut self.rng)
        {
            return;
        }
        // Other STUN on a client (TURN client answers) goes to those cores
        // here.
        self.stun_unhandled += 1;
    }

    /// Start the NAT detection (once) against the configured servers, or
    /// the attached supernodes then the other known ones.
    async fn start_nat(&mut self, reason: &str) {
        let bound = self.socket.local_addr().ok();
        let Some(n) = &mut self.nat else { return };
        if n.started {
            return;
        }
        let servers = if n.opts.servers.is_empty() {
            match &self.core {
                Core::Client(c) => c.attached().chain(c.host_cache()).collect(),
                Core::Supernode(_) => Vec::new(),
            }
        } else {
            n.opts.servers.clone()
        };
        n.det.set_servers(servers);
        let first = n.det.servers().first().copied();
        let local = match (bound, first) {
            (Some(b), Some(f)) => peer::host_address(b, f).await,
            _ => None,
        };
        let Some(n) = &mut self.nat else { return };
        let now = self.clock.now_ms();
        n.det.set_local(now, local);
        n.det.start(now, reason, &mut self.rng);
        n.started = true;
        n.local_check_at = now + n.opts.local_check_ms;
    }

    /// Check whether our local address changed (a new network).
    async fn check_local(&mut self) {
        let bound = self.socket.local_addr().ok();
        let Some(n) = &mut self.nat else { return };
        let first = n.det.servers().first().copied();
        let local = match (bound, first) {
            (Some(b), Some(f)) => peer::host_address(b, f).await,
            _ => None,
        };
        let Some(n) = &mut self.nat else { return };
        let now = self.clock.now_ms();
        n.local_check_at = now + n.opts.local_check_ms;
        if local.is_some() {
            n.det.set_local(now, local);
        }
    }

    async fn run(
        &mut self,
        mut commands: mpsc::Receiver<Command>,
        mut extra: mpsc::Receiver<(SocketAddr, SocketAddr, Vec<u8>)>,
    ) {
        let mut buf = vec![0u8; 65_536];
        let mut stopping = false;
        loop {
            let now = self.clock.now_ms();
            let wait = self.deadline().saturating_sub(now).min(60_000);
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.datagram(None, from, &buf[..n]),
                    // ICMP errors from earlier sends surface here; the
                    // protocol's own timers deal with unreachable peers.
                    Err(e) => tracing::debug!("recv: {e}"),
                },
                Some((local, from, d)) = extra.recv() => self.datagram(Some(local), from, &d),
                Some(m) = next_media(&mut self.calls) => self.media_msg(m).await,
                x = self.paths.tcp.recv() => self.paths_tcp_input(x),
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {
                    let now = self.clock.now_ms();
                    self.link.handle_timeout(now, &mut self.rng);
                    self.ice.handle_timeout(now, &mut self.rng);
                    self.paths_timeout(now);
                    match &mut self.core {
                        Core::Supernode(s) => s.handle_timeout(now, &mut self.rng),
                        Core::Client(c) => {
                            c.handle_timeout(now, &mut self.rng);
                            if let Some(m) = &mut self.messaging {
                                m.handle_timeout(now, c, &mut self.rng);
                            }
                        }
                    }
                    self.with_calls(|c, cx| c.handle_timeout(cx));
                    if let Some(n) = &self.nat {
                        if !n.started && now >= n.start_at {
                            self.start_nat("login").await;
                        } else if n.started && now >= n.local_check_at {
                            self.check_local().await;
                        }
                    }
                    if let Some(n) = &mut self.nat {
                        n.det.handle_timeout(now, &mut self.rng);
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
                // Recordings are complete before the node reports Stopped.
                if let Some(c) = &mut self.calls {
                    c.shutdown().await;
                    while let Some(e) = c.poll_event() {
                        let _ = self.events.try_send(e);
                    }
                }
                return;
            }
        }
    }

    /// Returns true when the node should stop.
    fn command(&mut self, c: Command) -> bool {
        let now = self.clock.now_ms();
        if matches!(c, Command::Shutdown) {
            self.with_calls(|calls, cx| calls.hangup_all(cx));
        }
        let c = if self.calls.is_some() && matches!(self.core, Core::Client(_)) {
            match self.with_calls(|calls, cx| calls.command(c, cx)) {
                Some(Some(c)) => c,
                _ => return false,
            }
        } else {
            c
        };
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
            (Core::Client(cl), Command::RelayCredentials) => {
                cl.request_relay_credentials();
            }
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
                    nat: self.nat.as_ref().and_then(|n| n.det.last().cloned()),
                    stun: self.stun.as_ref().map(|s| s.stats().clone()),
                    dropped_datagrams: self.dropped_datagrams,
                    stun_unhandled: self.stun_unhandled,
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
            if let Some(c) = &mut self.calls {
                while let Some(e) = c.poll_event() {
                    evs.push(e);
                }
                for user in c.take_connects() {
                    progressed = true;
                    self.ensure_peer(now, user);
                }
            }
            if let Some(n) = &mut self.nat {
                while let Some(NatEvent::Report(r)) = n.det.poll_event() {
                    evs.push(Event::Nat(r));
                }
            }
            let mut attached = false;
            for e in &evs {
                if let Event::Client(ClientEvent::Attached {
                    supernode,
                    observed,
                    ..
                }) = e
                    && let Some(n) = &mut self.nat
                {
                    attached = true;
                    n.det.observe_mapped(now, *supernode, *observed);
                }
            }
            if attached && self.nat.as_ref().is_some_and(|n| !n.started) {
                self.start_nat("login").await;
                progressed = true;
            }
            while let Some(e) = self.ice.poll_event() {
                progressed = true;
                if !self.paths_session_event(now, &e) {
                    self.session_event(now, e);
                }
            }
            for e in evs {
                progressed = true;
                if let Event::Client(ce) = &e {
                    self.paths_client_event(now, ce);
                }
                // Call signalling rides on envelopes too.
                let call_envelope = match &e {
                    Event::Client(ClientEvent::Envelope {
                        from,
                        kind,
                        payload,
                        ..
                    }) if *kind == crate::node::calls::ENVELOPE_CALL => {
                        let user = from.username.clone();
                        self.with_calls(|c, cx| c.on_envelope(&user, payload, cx))
                            .is_some()
                    }
                    Event::Client(ClientEvent::EnvelopeFailed { id, reason }) => self
                        .with_calls(|c, cx| c.on_envelope_outcome(id, Some(reason), cx))
                        .unwrap_or(false),
                    Event::Client(
                        ClientEvent::EnvelopeDelivered { id } | ClientEvent::EnvelopeStored { id },
                    ) => self
                        .with_calls(|c, cx| c.on_envelope_outcome(id, None, cx))
                        .unwrap_or(false),
                    _ => false,
                };
                if call_envelope {
                    continue;
                }
                // ICE offers and answers ride on envelopes: ours to handle.
                match &e {
                    Event::Client(ClientEvent::Envelope {
                        from,
                        kind,
                        payload,
                        ..
                    }) if *kind == ENVELOPE_OFFER || *kind == ENVELOPE_ANSWER => {
                        match IceOffer::decode(payload) {
                            Ok(o) if *kind == ENVELOPE_ANSWER => {
                                self.ice.on_answer(now, &from.username, &o);
                            }
                            Ok(o) => self.ice.on_offer(now, &from.username, &o, &mut self.rng),
                            Err(err) => {
                                tracing::debug!(from = %from.username, "bad ICE envelope: {err}")
                            }
                        }
                        continue;
                    }
                    Event::Client(ClientEvent::EnvelopeFailed { id, reason })
                        if self.ice_envelopes.contains_key(id) =>
                    {
                        if let Some(user) = self.ice_envelopes.remove(id) {
                            self.ice.close(&user);
                            self.peer_event(PeerEvent::Failed {
                                user,
                                reason: format!("could not reach the peer: {reason}"),
                            });
                        }
                        continue;
                    }
                    Event::Client(
                        ClientEvent::EnvelopeDelivered { id } | ClientEvent::EnvelopeStored { id },
                    ) if self.ice_envelopes.remove(id).is_some() => continue,
                    _ => {}
                }
                if let Event::Client(ClientEvent::Lookup {
                    username, outcome, ..
                }) = &e
                    && let Some(started) = self.connecting.remove(username)
                {
                    let reachable = match outcome {
                        crate::overlay::LookupOutcome::Online(_) => true,
                        // Invisible users show offline to everyone but are
                        // still attached: they answer the offer if they wish.
                        crate::overlay::LookupOutcome::Offline { record, .. } => {
                            record.is_reachable(now / 1000)
                        }
                        _ => false,
                    };
                    match outcome {
                        _ if reachable => {
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
                                crate::overlay::LookupOutcome::Online(_) => {
                                    "unreachable".to_string()
                                }
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
                    // Over TCP, the observed address is no UDP candidate.
                    if !self.paths.tcp_mode {
                        self.ice.observe(*observed);
                    }
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
                Via::Relay(_) => self.paths_send_relayed(t),
            }
        }
        while let Some(t) = self.link.poll_transmit() {
            // Over a relay, a TCP stream or the main socket (`paths`).
            self.paths_send_link(t.dst, t.bytes).await;
        }
        self.paths_flush().await;
        let mut stun = Vec::new();
        if let Some(n) = &mut self.nat {
            while let Some(t) = n.det.poll_transmit() {
                stun.push(t);
            }
        }
        if let Some(s) = &mut self.stun {
            while let Some(t) = s.poll_transmit() {
                stun.push(t);
            }
        }
        for t in stun {
            let sent = match t.src.and_then(|a| self.extra.get(&a)) {
                Some(x) => x.send_to(&t.bytes, t.dst).await,
                None => self.socket.send_to(&t.bytes, t.dst).await,
            };
            if let Err(e) = sent {
                tracing::debug!(dst = %t.dst, "STUN send: {e}");
            }
        }
    }
}

/// The next message of a call's media tasks (never, without calls).
async fn next_media(calls: &mut Option<Box<Calls>>) -> Option<MediaMsg> {
    match calls {
        Some(c) => c.media_rx.recv().await,
        None => std::future::pending().await,
    }
}
