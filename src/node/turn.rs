//! Tokio drivers for the TURN cores in [`crate::relay`].
//!
//! [`TurnService`] runs a supernode's [`TurnServer`]: TURN over UDP arrives
//! on the node's main socket (the supernode driver hands it TURN methods and
//! ChannelData through [`TurnHandle::datagram`] and keeps the rest), TURN
//! over TCP on a listener on the same port number, and peers' datagrams on
//! one relay socket per allocation, bound here when the core asks and read
//! by a small task each. Replies leave from the socket the core names.
//!
//! [`TurnConnection`] runs a [`TurnClient`] over its own UDP socket or TCP
//! stream, for tests, benchmarks and tools (the ICE agent drives the client
//! core over the main socket itself).

use crate::clock::Clock;
use crate::node::tcp::{
    Deadline, ReadOutcome, StreamKind, TcpAdmission, TcpAdmissionStats, TcpPermit,
};
use crate::relay::framing::StreamFramer;
use crate::relay::{
    AllocId, ClientAddr, ServerEvent, Transport, TurnClient, TurnClientConfig, TurnClientError,
    TurnClientEvent, TurnCredentials, TurnServer, TurnStats, Via,
};
use crate::time::Millis;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Inputs waiting for the service task; beyond this, datagrams are dropped
/// (and counted) rather than queued without bound.
const QUEUE: usize = 4096;
/// Inputs handled before transmits are flushed.
const BATCH: usize = 256;

/// Where relay sockets are bound and what address they advertise.
#[derive(Debug, Clone)]
pub struct TurnServiceConfig {
    /// Where IPv4 relay sockets are bound (IPv4 "any" when the main
    /// socket is on IPv6 "any").
    pub relay_bind: IpAddr,
    /// The address put in XOR-RELAYED-ADDRESS (the node's public IP).
    pub relay_public: IpAddr,
    /// The public IPv6 relay address, when the node has one: allocations
    /// asking for REQUESTED-ADDRESS-FAMILY IPv6 get it (bound on
    /// `relay_bind` when that is IPv6, else on IPv6 "any").
    pub relay_v6: Option<IpAddr>,
    /// Relay ports; `0..=0` lets the system pick.
    pub port_min: u16,
    pub port_max: u16,
    /// What the TCP listener holds at most (TURN and link streams).
    pub tcp: crate::node::tcp::TcpLimits,
}

/// Datagrams from the main socket gathered for one hand-off to the relay
/// (one allocation and one queue slot for the lot).
#[derive(Debug, Default)]
pub struct TurnBatch {
    data: Vec<u8>,
    /// Source, start and end in `data` of each datagram.
    items: Vec<(SocketAddr, usize, usize)>,
}

impl TurnBatch {
    pub fn push(&mut self, from: SocketAddr, bytes: &[u8]) {
        let at = self.data.len();
        self.data.extend_from_slice(bytes);
        self.items.push((from, at, self.data.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.items
            .iter()
            .map(|&(from, a, b)| (from, &self.data[a..b]))
    }
}

#[derive(Debug)]
enum Input {
    Client {
        from: ClientAddr,
        bytes: Vec<u8>,
    },
    /// Datagrams from UDP clients on the main socket.
    Clients(TurnBatch),
    /// Datagrams from peers on one allocation's relay socket.
    Peers {
        alloc: AllocId,
        batch: TurnBatch,
    },
    TcpOpen {
        conn: u64,
        tx: mpsc::Sender<Vec<u8>>,
        allocations: Arc<AtomicU32>,
    },
    TcpClosed {
        conn: u64,
    },
    Stats {
        reply: oneshot::Sender<TurnStats>,
    },
}

/// Feeds the service; cheap to clone.
#[derive(Debug, Clone)]
pub struct TurnHandle {
    tx: mpsc::Sender<Input>,
    dropped: Arc<AtomicU64>,
    /// The TCP listener's streams, when TURN over TCP is on.
    tcp: Option<TcpAdmission>,
}

impl TurnHandle {
    /// Hand over a datagram from the main socket.
    pub fn datagram(&self, from: SocketAddr, bytes: &[u8]) {
        let i = Input::Client {
            from: ClientAddr::udp(from),
            bytes: bytes.to_vec(),
        };
        if self.tx.try_send(i).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Hand over the datagrams gathered in `batch` (left empty): one
    /// queue slot for all of them, or all dropped (and counted) when the
    /// service is that far behind.
    pub fn datagrams(&self, batch: &mut TurnBatch) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        if self
            .tx
            .try_send(Input::Clients(std::mem::take(batch)))
            .is_err()
        {
            self.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The server core's counters.
    pub async fn stats(&self) -> Option<TurnStats> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::Stats { reply }).await.ok()?;
        rx.await.ok()
    }

    /// Datagrams dropped because the service was behind.
    pub fn queue_drops(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The TCP listener's counters (zero when it has none).
    pub fn tcp_stats(&self) -> TcpAdmissionStats {
        self.tcp.as_ref().map(|a| a.stats()).unwrap_or_default()
    }
}

/// A running TURN server. Dropping it stops the task and closes every
/// relay socket.
#[derive(Debug)]
pub struct TurnService {
    pub handle: TurnHandle,
    /// The TCP listener's address, when TURN over TCP is on.
    pub tcp_addr: Option<SocketAddr>,
    task: JoinHandle<()>,
}

impl Drop for TurnService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TurnService {
    /// Start serving. `main` is the node's socket (replies to UDP clients
    /// leave from it); `tcp` an already bound listener.
    pub fn spawn(
        core: TurnServer,
        main: Arc<crate::socket::NodeSocket>,
        tcp: Option<TcpListener>,
        cfg: TurnServiceConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::spawn_with_links(core, main, tcp, cfg, clock, None)
    }

    /// [`TurnService::spawn`], handing TCP connections that carry link
    /// frames instead of TURN (clients whose UDP is blocked attach over
    /// them, see [`crate::node::tcp`]) to `links`.
    pub fn spawn_with_links(
        core: TurnServer,
        main: Arc<crate::socket::NodeSocket>,
        tcp: Option<TcpListener>,
        cfg: TurnServiceConfig,
        clock: Arc<dyn Clock>,
        links: Option<mpsc::Sender<crate::node::tcp::AcceptedLink>>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let tcp_addr = tcp.as_ref().and_then(|l| l.local_addr().ok());
        let admission = tcp.as_ref().map(|_| TcpAdmission::new(cfg.tcp));
        let handle = TurnHandle {
            tx: tx.clone(),
            dropped: Arc::new(AtomicU64::new(0)),
            tcp: admission.clone(),
        };
        let span = tracing::info_span!("turn", realm = %core.config().realm);
        let task = tokio::spawn(tracing::Instrument::instrument(
            Service {
                core,
                main,
                cfg,
                clock,
                tx,
                relays: HashMap::new(),
                conns: HashMap::new(),
                alloc_conns: HashMap::new(),
                next_conn: 1,
                next_port: 0,
                links,
                admission,
            }
            .run(rx, tcp),
            span,
        ));
        TurnService {
            handle,
            tcp_addr,
            task,
        }
    }
}

struct Relay {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

struct Service {
    core: TurnServer,
    main: Arc<crate::socket::NodeSocket>,
    cfg: TurnServiceConfig,
    clock: Arc<dyn Clock>,
    tx: mpsc::Sender<Input>,
    relays: HashMap<AllocId, Relay>,
    /// TURN-over-TCP streams: their writer and how many allocations they
    /// carry (a stream with one is not closed for idling: the
    /// allocation's lifetime bounds it).
    conns: HashMap<u64, (mpsc::Sender<Vec<u8>>, Arc<AtomicU32>)>,
    /// The stream each TCP client's allocation arrived on.
    alloc_conns: HashMap<AllocId, u64>,
    next_conn: u64,
    next_port: u32,
    links: Option<mpsc::Sender<crate::node::tcp::AcceptedLink>>,
    /// Places on the TCP listener (`Some` when there is one).
    admission: Option<TcpAdmission>,
}

async fn accept(l: &Option<TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l
            .accept()
            .await
            .map(|(s, a)| (s, crate::socket::canonical(a))),
        None => std::future::pending().await,
    }
}

impl Service {
    async fn run(mut self, mut rx: mpsc::Receiver<Input>, tcp: Option<TcpListener>) {
        loop {
            let now = self.clock.now();
            let wait = self
                .core
                .poll_timeout()
                .map_or(60_000, |t| t.since(now).min(60_000));
            tokio::select! {
                i = rx.recv() => {
                    let Some(i) = i else { return };
                    self.input(i);
                    for _ in 0..BATCH {
                        match rx.try_recv() {
                            Ok(i) => self.input(i),
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {
                    self.core.handle_timeout(self.clock.now());
                }
                a = accept(&tcp) => match a {
                    Ok((stream, addr)) => self.tcp_conn(stream, addr),
                    Err(e) => tracing::debug!("accept: {e}"),
                },
            }
            self.events();
            self.flush().await;
        }
    }

    fn input(&mut self, i: Input) {
        let now = self.clock.now();
        match i {
            Input::Client { from, bytes } => {
                let unix = self.clock.unix_secs();
                self.core.handle_client(now, unix, from, &bytes)
            }
            Input::Clients(batch) => {
                let unix = self.clock.unix_secs();
                for (from, bytes) in batch.iter() {
                    self.core
                        .handle_client(now, unix, ClientAddr::udp(from), bytes);
                }
            }
            Input::Peers { alloc, batch } => {
                for (from, bytes) in batch.iter() {
                    self.core.handle_peer(now, alloc, from, bytes);
                }
            }
            Input::TcpOpen {
                conn,
                tx,
                allocations,
            } => {
                self.conns.insert(conn, (tx, allocations));
            }
            Input::TcpClosed { conn } => {
                self.conns.remove(&conn);
                self.core.transport_closed(Transport::Tcp(conn));
            }
            Input::Stats { reply } => {
                let _ = reply.send(self.core.stats().clone());
            }
        }
    }

    fn tcp_conn(&mut self, stream: TcpStream, addr: SocketAddr) {
        let Some(admission) = &self.admission else {
            return;
        };
        // Refused streams are dropped at once (counted and logged).
        let Ok(permit) = admission.admit(addr) else {
            return;
        };
        let conn = self.next_conn;
        self.next_conn += 1;
        let tx = self.tx.clone();
        let links = self.links.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            let _ = stream.set_nodelay(true);
            let mut prefix = Vec::new();
            if let Some(links) = links {
                // Link frames or TURN? The first bytes tell, within the
                // frame deadline.
                let mut b = [0u8; 64];
                let since = Some(Instant::now());
                let is_link = loop {
                    if let Some(l) = crate::node::tcp::is_link_start(&prefix) {
                        break l;
                    }
                    let kind = StreamKind::Link;
                    match permit.read(&mut stream, &mut b, kind, since).await {
                        ReadOutcome::Bytes(n) => prefix.extend_from_slice(&b[..n]),
                        ReadOutcome::Expired(why) => return permit.closed_for(why, addr),
                        ReadOutcome::Closed | ReadOutcome::Evicted => return,
                    }
                };
                if is_link {
                    let a = crate::node::tcp::AcceptedLink {
                        addr,
                        stream,
                        prefix,
                        permit,
                    };
                    let _ = links.send(a).await;
                    return;
                }
            }
            turn_stream(conn, addr, stream, prefix, tx, permit).await;
        });
    }

    /// Bind a relay socket in the configured range.
    fn bind_relay(&mut self, even: bool, ipv6: bool) -> std::io::Result<std::net::UdpSocket> {
        let bind = match (ipv6, self.cfg.relay_v6, self.cfg.relay_bind) {
            (true, None, _) => return Err(std::io::Error::other("no IPv6 relay address")),
            (true, Some(_), b @ IpAddr::V6(_)) => b,
            (true, Some(_), IpAddr::V4(_)) => IpAddr::from([0u16; 8]),
            (false, _, IpAddr::V6(a)) if a.is_unspecified() => IpAddr::from([0, 0, 0, 0]),
            (false, _, b) => b,
        };
        let (lo, hi) = (self.cfg.port_min as u32, self.cfg.port_max as u32);
        if lo == 0 || hi < lo {
            for _ in 0..64 {
                let s = std::net::UdpSocket::bind((bind, 0))?;
                if !even || s.local_addr()?.port() % 2 == 0 {
                    return Ok(s);
                }
            }
            return Err(std::io::Error::other("no even port"));
        }
        let span = hi - lo + 1;
        let mut last = std::io::Error::other("no free relay port");
        for i in 0..span {
            let port = lo + (self.next_port + i) % span;
            if even && port % 2 == 1 {
                continue;
            }
            match std::net::UdpSocket::bind((bind, port as u16)) {
                Ok(s) => {
                    self.next_port = (self.next_port + i + 1) % span;
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn open_relay(&mut self, alloc: AllocId, even: bool, ipv6: bool) -> Result<SocketAddr, String> {
        let std_socket = self.bind_relay(even, ipv6).map_err(|e| e.to_string())?;
        std_socket
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let socket = Arc::new(UdpSocket::from_std(std_socket).map_err(|e| e.to_string())?);
        let port = socket.local_addr().map_err(|e| e.to_string())?.port();
        let tx = self.tx.clone();
        let rs = socket.clone();
        let reader = tokio::spawn(async move {
            // Everything waiting, many datagrams per system call, handed
            // over as one input.
            let mut b = crate::mmsg::RecvBatch::new(16, 65_536);
            loop {
                if rs.readable().await.is_err() {
                    return;
                }
                let mut batch = TurnBatch::default();
                while batch.len() < 256 {
                    match crate::mmsg::try_recv_batch(&rs, &mut b) {
                        Ok(n) => {
                            b.map_sources(crate::socket::canonical);
                            for i in 0..n {
                                let (from, d) = b.get(i);
                                batch.push(from, d);
                            }
                            if n < b.capacity() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::debug!(alloc, "relay recv: {e}");
                            break;
                        }
                    }
                }
                if !batch.is_empty() && tx.send(Input::Peers { alloc, batch }).await.is_err() {
                    return;
                }
            }
        });
        self.relays.insert(alloc, Relay { socket, reader });
        let public = match (ipv6, self.cfg.relay_v6) {
            (true, Some(v6)) => v6,
            _ => self.cfg.relay_public,
        };
        Ok(SocketAddr::new(public, port))
    }

    fn events(&mut self) {
        while let Some(e) = self.core.poll_event() {
            match e {
                ServerEvent::OpenRelay {
                    alloc,
                    even_port,
                    ipv6,
                } => {
                    let r = self.open_relay(alloc, even_port, ipv6);
                    let now = self.clock.now();
                    self.core.relay_opened(now, alloc, r);
                }
                ServerEvent::CloseRelay { alloc } => {
                    self.relays.remove(&alloc);
                }
                ServerEvent::Allocated {
                    alloc,
                    user,
                    client,
                    relayed,
                } => {
                    tracing::info!(alloc, %user, client = %client.addr, %relayed, "allocated");
                    if let Transport::Tcp(conn) = client.transport
                        && let Some((_, n)) = self.conns.get(&conn)
                    {
                        n.fetch_add(1, Ordering::Relaxed);
                        self.alloc_conns.insert(alloc, conn);
                    }
                }
                ServerEvent::Released {
                    alloc,
                    user,
                    reason,
                } => {
                    tracing::info!(alloc, %user, reason, "released");
                    if let Some(conn) = self.alloc_conns.remove(&alloc)
                        && let Some((_, n)) = self.conns.get(&conn)
                    {
                        n.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                ServerEvent::Refused {
                    client,
                    code,
                    reason,
                } => tracing::debug!(client = %client.addr, code, reason, "refused"),
            }
        }
    }

    async fn flush(&mut self) {
        // UDP sends go out in runs per socket, many per system call, in
        // the order the core made them.
        let mut all = Vec::new();
        while let Some(t) = self.core.poll_transmit() {
            all.push(t);
        }
        let mut i = 0;
        while i < all.len() {
            let via = &all[i].via;
            let same = |v: &Via| match (via, v) {
                (
                    Via::Client(ClientAddr {
                        transport: Transport::Udp,
                        ..
                    }),
                    Via::Client(ClientAddr {
                        transport: Transport::Udp,
                        ..
                    }),
                ) => true,
                (Via::Relay { alloc: a, .. }, Via::Relay { alloc: b, .. }) => a == b,
                _ => false,
            };
            let run = all[i..].iter().take_while(|t| same(&t.via)).count();
            if run == 0 {
                // A TCP client: its stream's writer takes it.
                if let Via::Client(ClientAddr {
                    transport: Transport::Tcp(conn),
                    ..
                }) = all[i].via
                    && let Some((c, _)) = self.conns.get(&conn)
                {
                    // A client that does not read loses data, not the relay.
                    let _ = c.try_send(std::mem::take(&mut all[i].bytes));
                }
                i += 1;
                continue;
            }
            let mut msgs: Vec<(SocketAddr, &[u8])> = all[i..i + run]
                .iter()
                .map(|t| match t.via {
                    Via::Client(c) => (c.addr, &t.bytes[..]),
                    Via::Relay { peer, .. } => (peer, &t.bytes[..]),
                })
                .collect();
            let r = match &all[i].via {
                Via::Client(_) => self.main.send_batch(&mut msgs).await,
                Via::Relay { alloc, .. } => match self.relays.get(alloc) {
                    Some(r) => crate::mmsg::send_batch(&r.socket, &msgs).await,
                    None => Ok(0),
                },
            };
            if let Err(e) = r {
                tracing::debug!("turn send: {e}");
            }
            i += run;
        }
    }
}

/// TURN over one TCP connection: messages to the service, its replies
/// back (`prefix`: bytes already read from the stream).
async fn turn_stream(
    conn: u64,
    addr: SocketAddr,
    stream: TcpStream,
    prefix: Vec<u8>,
    tx: mpsc::Sender<Input>,
    permit: TcpPermit,
) {
    let mut partial_since = None;
    let (mut rd, mut wr) = stream.into_split();
    let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(1024);
    let allocations = Arc::new(AtomicU32::new(0));
    // Registered before any of its input can arrive: same queue.
    let open = Input::TcpOpen {
        conn,
        tx: wtx,
        allocations: allocations.clone(),
    };
    if tx.send(open).await.is_err() {
        return;
    }
    tokio::spawn(async move {
        while let Some(b) = wrx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
    });
    let mut framer = StreamFramer::new();
    framer.push(&prefix);
    let mut buf = vec![0u8; 16 * 1024];
    let from = ClientAddr {
        transport: Transport::Tcp(conn),
        addr,
    };
    'read: loop {
        loop {
            match framer.next_message() {
                Ok(Some(m)) => {
                    let i = Input::Client {
                        from,
                        bytes: m.to_vec(),
                    };
                    if tx.send(i).await.is_err() {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%addr, "not TURN over TCP: {e}");
                    break 'read;
                }
            }
        }
        partial_since = (framer.buffered() > 0).then(|| partial_since.unwrap_or_else(Instant::now));
        let kind = StreamKind::Turn;
        let n = match permit.read(&mut rd, &mut buf, kind, partial_since).await {
            ReadOutcome::Bytes(n) => n,
            // Quiet between refreshes: the allocation's lifetime rules.
            ReadOutcome::Expired(Deadline::Idle) if allocations.load(Ordering::Relaxed) > 0 => {
                continue;
            }
            ReadOutcome::Expired(why) => {
                permit.closed_for(why, addr);
                break;
            }
            ReadOutcome::Closed | ReadOutcome::Evicted => break,
        };
        framer.push(&buf[..n]);
    }
    let _ = tx.send(Input::TcpClosed { conn }).await;
}

#[derive(Debug, Error)]
pub enum TurnConnectionError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("the TURN server refused: {code} {reason}")]
    Refused { code: u16, reason: String },
    #[error("no answer in time")]
    Timeout,
    #[error("the connection task has stopped")]
    Stopped,
    #[error(transparent)]
    Client(#[from] TurnClientError),
}

enum Cmd {
    Allocate,
    Permission(IpAddr),
    Channel(SocketAddr, oneshot::Sender<Result<u16, TurnClientError>>),
    Send(SocketAddr, Vec<u8>),
    Credentials(TurnCredentials),
    Close,
}

/// A [`TurnClient`] on its own UDP socket or TCP stream.
#[derive(Debug)]
pub struct TurnConnection {
    commands: mpsc::Sender<Cmd>,
    events: mpsc::Receiver<TurnClientEvent>,
    held: VecDeque<TurnClientEvent>,
    pub local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for TurnConnection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Wire {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

impl TurnConnection {
    /// A client on a fresh UDP socket bound to `local` (port 0 for any).
    pub async fn udp(
        server: SocketAddr,
        local: SocketAddr,
        creds: TurnCredentials,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TurnConnectionError> {
        let s = UdpSocket::bind(local).await?;
        Self::start(TurnClientConfig::udp(server), creds, clock, Wire::Udp(s))
    }

    /// A client over a TCP connection to `server`.
    pub async fn tcp(
        server: SocketAddr,
        creds: TurnCredentials,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TurnConnectionError> {
        let s = TcpStream::connect(server).await?;
        s.set_nodelay(true)?;
        Self::start(TurnClientConfig::tcp(server), creds, clock, Wire::Tcp(s))
    }

    fn start(
        cfg: TurnClientConfig,
        creds: TurnCredentials,
        clock: Arc<dyn Clock>,
        wire: Wire,
    ) -> Result<Self, TurnConnectionError> {
        let local_addr = match &wire {
            Wire::Udp(s) => s.local_addr()?,
            Wire::Tcp(s) => s.local_addr()?,
        };
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
        let core = TurnClient::new(cfg, creds, key, clock.now());
        let (ctx, crx) = mpsc::channel(1024);
        let (etx, erx) = mpsc::channel(4096);
        let task = tokio::spawn(client_task(core, wire, clock, crx, etx));
        Ok(TurnConnection {
            commands: ctx,
            events: erx,
            held: VecDeque::new(),
            local_addr,
            task,
        })
    }

    async fn cmd(&self, c: Cmd) -> Result<(), TurnConnectionError> {
        self.commands
            .send(c)
            .await
            .map_err(|_| TurnConnectionError::Stopped)
    }

    /// Wait for an event `pick` accepts; others are kept for
    /// [`TurnConnection::next_event`].
    async fn wait<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&TurnClientEvent) -> Option<Result<T, TurnConnectionError>>,
    ) -> Result<T, TurnConnectionError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let e = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .map_err(|_| TurnConnectionError::Timeout)?
                .ok_or(TurnConnectionError::Stopped)?;
            match pick(&e) {
                Some(r) => return r,
                None => self.held.push_back(e),
            }
        }
    }

    /// Allocate; returns the relayed and the mapped address.
    pub async fn allocate(
        &mut self,
        timeout: Duration,
    ) -> Result<(SocketAddr, SocketAddr), TurnConnectionError> {
        self.cmd(Cmd::Allocate).await?;
        self.wait(timeout, |e| match e {
            TurnClientEvent::Allocated {
                relayed, mapped, ..
            } => Some(Ok((*relayed, *mapped))),
            TurnClientEvent::AllocateFailed { code, reason } => {
                Some(Err(TurnConnectionError::Refused {
                    code: *code,
                    reason: reason.clone(),
                }))
            }
            _ => None,
        })
        .await
    }

    pub async fn create_permission(
        &mut self,
        peer: IpAddr,
        timeout: Duration,
    ) -> Result<(), TurnConnectionError> {
        self.cmd(Cmd::Permission(peer)).await?;
        self.wait(timeout, |e| match e {
            TurnClientEvent::PermissionCreated { peer: p } if *p == peer => Some(Ok(())),
            TurnClientEvent::PermissionFailed {
                peer: p,
                code,
                reason,
            } if *p == peer => Some(Err(TurnConnectionError::Refused {
                code: *code,
                reason: reason.clone(),
            })),
            _ => None,
        })
        .await
    }

    pub async fn bind_channel(
        &mut self,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Result<u16, TurnConnectionError> {
        let (tx, rx) = oneshot::channel();
        self.cmd(Cmd::Channel(peer, tx)).await?;
        rx.await.map_err(|_| TurnConnectionError::Stopped)??;
        self.wait(timeout, |e| match e {
            TurnClientEvent::ChannelBound { peer: p, channel } if *p == peer => Some(Ok(*channel)),
            TurnClientEvent::ChannelBindFailed {
                peer: p,
                code,
                reason,
            } if *p == peer => Some(Err(TurnConnectionError::Refused {
                code: *code,
                reason: reason.clone(),
            })),
            _ => None,
        })
        .await
    }

    /// Relay `data` to `peer` (queued; errors surface as events).
    pub async fn send_to(
        &self,
        peer: SocketAddr,
        data: Vec<u8>,
    ) -> Result<(), TurnConnectionError> {
        self.cmd(Cmd::Send(peer, data)).await
    }

    pub async fn set_credentials(&self, c: TurnCredentials) -> Result<(), TurnConnectionError> {
        self.cmd(Cmd::Credentials(c)).await
    }

    /// Delete the allocation and wait until the server confirms.
    pub async fn close(&mut self, timeout: Duration) -> Result<(), TurnConnectionError> {
        self.cmd(Cmd::Close).await?;
        self.wait(timeout, |e| {
            matches!(e, TurnClientEvent::Closed).then_some(Ok(()))
        })
        .await
    }

    pub async fn next_event(&mut self) -> Option<TurnClientEvent> {
        if let Some(e) = self.held.pop_front() {
            return Some(e);
        }
        self.events.recv().await
    }

    /// The next data relayed to us, within `timeout`.
    pub async fn recv(
        &mut self,
        timeout: Duration,
    ) -> Result<(SocketAddr, Vec<u8>), TurnConnectionError> {
        if let Some(i) = self
            .held
            .iter()
            .position(|e| matches!(e, TurnClientEvent::Data { .. }))
            && let Some(TurnClientEvent::Data { peer, data }) = self.held.remove(i)
        {
            return Ok((peer, data));
        }
        self.wait(timeout, |e| match e {
            TurnClientEvent::Data { peer, data } => Some(Ok((*peer, data.clone()))),
            _ => None,
        })
        .await
    }
}

async fn client_task(
    mut core: TurnClient,
    wire: Wire,
    clock: Arc<dyn Clock>,
    mut commands: mpsc::Receiver<Cmd>,
    events: mpsc::Sender<TurnClientEvent>,
) {
    let (udp, mut rd, mut wr) = match wire {
        Wire::Udp(s) => (Some(s), None, None),
        Wire::Tcp(s) => {
            let (r, w) = s.into_split();
            (None, Some(r), Some(w))
        }
    };
    let mut framer = StreamFramer::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        // Transmits first, then events, then wait.
        while let Some(t) = core.poll_transmit() {
            if let Some(s) = &udp {
                let _ = s.send_to(&t.bytes, t.dst).await;
            } else if let Some(w) = &mut wr
                && w.write_all(&t.bytes).await.is_err()
            {
                return;
            }
        }
        while let Some(e) = core.poll_event() {
            if events.send(e).await.is_err() {
                return;
            }
        }
        let now = clock.now();
        let wait = core
            .poll_timeout()
            .map_or(60_000, |t| t.since(now).min(60_000));
        tokio::select! {
            r = async {
                match (&udp, &mut rd) {
                    (Some(s), _) => s.recv_from(&mut buf).await.map(|(n, _)| n),
                    (None, Some(r)) => r.read(&mut buf).await,
                    _ => std::future::pending().await,
                }
            } => {
                let now = clock.now();
                match r {
                    Ok(0) if udp.is_none() => return,
                    Ok(n) if udp.is_some() => {
                        core.handle_input(now, &buf[..n]);
                    }
                    Ok(n) => {
                        framer.push(&buf[..n]);
                        while let Ok(Some(m)) = framer.next_message() {
                            core.handle_input(now, m);
                        }
                    }
                    Err(e) => {
                        tracing::debug!("turn client recv: {e}");
                        if udp.is_none() {
                            return;
                        }
                    }
                }
            }
            c = commands.recv() => match c {
                None => return,
                Some(c) => client_command(&mut core, clock.now(), c),
            },
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {
                core.handle_timeout(clock.now());
            }
        }
    }
}

/// A [`TurnConnection`] command into its client core.
fn client_command(core: &mut TurnClient, now: Millis, c: Cmd) {
    match c {
        Cmd::Allocate => core.allocate(now),
        Cmd::Permission(ip) => {
            let _ = core.create_permission(now, ip);
        }
        Cmd::Channel(peer, reply) => {
            let _ = reply.send(core.bind_channel(now, peer));
        }
        Cmd::Send(peer, data) => {
            if let Err(e) = core.send_to(now, peer, &data) {
                tracing::debug!("turn send: {e}");
            }
        }
        Cmd::Credentials(c) => core.set_credentials(c),
        Cmd::Close => core.close(now),
    }
}

/// A TURN server to run on the node's socket (supernodes).
pub struct TurnSetup {
    pub core: crate::relay::TurnServer,
    pub cfg: TurnServiceConfig,
    /// TURN over TCP, on a listener the caller bound.
    pub tcp: Option<tokio::net::TcpListener>,
}

impl std::fmt::Debug for TurnSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnSetup")
            .field("tcp", &self.tcp)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Error)]
pub enum TurnSetupError {
    #[error("binding UDP {addr}: {source}")]
    Udp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for TURN over TCP on {addr}: {source}")]
    Tcp {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Bind a supernode's main UDP socket on `listen` and, when `tcp`, a TCP
/// listener on the same address and port (TURN over TCP and overlay over
/// TCP share the UDP port number). With port 0 the kernel picks a free UDP
/// port that may be taken for TCP, so that case retries with a new port.
pub async fn bind_udp_tcp(
    listen: SocketAddr,
    tcp: bool,
) -> Result<(crate::socket::NodeSocket, Option<TcpListener>), TurnSetupError> {
    const TRIES: usize = 16;
    let mut last = None;
    for _ in 0..TRIES {
        let udp = crate::socket::NodeSocket::bind(listen)
            .await
            .map_err(|source| TurnSetupError::Udp {
                addr: listen,
                source,
            })?;
        if !tcp {
            return Ok((udp, None));
        }
        let addr = udp.local_addr().map_err(|source| TurnSetupError::Udp {
            addr: listen,
            source,
        })?;
        match crate::socket::bind_tcp(addr).await {
            Ok(l) => return Ok((udp, Some(l))),
            Err(e) if listen.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => {
                tracing::debug!(%addr, "TCP port taken; picking another UDP port");
                last = Some((addr, e));
            }
            Err(source) => return Err(TurnSetupError::Tcp { addr, source }),
        }
    }
    let (addr, source) = last.expect("the loop ran");
    Err(TurnSetupError::Tcp { addr, source })
}

/// The relay a supernode runs from its `[relay]` config: the TURN server
/// for [`crate::node::driver::SupernodeOptions::turn`] and the grant
/// its core uses to issue credentials. Both `None` when no secret is set.
/// `local` is the bound main socket, `advertised` its public address and
/// `tcp` the listener from [`bind_udp_tcp`] (dropped when no secret is set).
pub async fn supernode_setup(
    rc: &crate::config::RelaySection,
    local: SocketAddr,
    advertised: SocketAddr,
    extra_relays: Vec<SocketAddr>,
    tcp: Option<TcpListener>,
    nonce_key: [u8; 32],
    now: Millis,
) -> Result<(Option<TurnSetup>, Option<crate::relay::RelayGrant>), TurnSetupError> {
    if rc.secret.is_empty() {
        return Ok((None, None));
    }
    let public = rc.public_ip.unwrap_or(advertised.ip());
    // Relayed addresses per family: IPv4 unless the node is IPv6 only;
    // IPv6 when its public address is IPv6 (an IPv6-only or dual-stack
    // node advertised over IPv6).
    // A dual-stack node (`public_ipv6` next to an IPv4 public address)
    // relays both families.
    let relay_ipv4 = public.is_ipv4();
    let relay_v6 = match rc.public_ipv6 {
        Some(v6) if relay_ipv4 => Some(IpAddr::V6(v6)),
        _ => public.is_ipv6().then_some(public),
    };
    let mut own_addresses = vec![public, advertised.ip()];
    own_addresses.extend(relay_v6);
    if !local.ip().is_unspecified() {
        own_addresses.push(local.ip());
    }
    own_addresses.dedup();
    let core = TurnServer::new(
        crate::relay::TurnServerConfig {
            realm: rc.realm.clone(),
            secret: rc.secret.as_bytes().to_vec(),
            default_lifetime_secs: rc.allocation_lifetime.0.as_secs().clamp(1, u32::MAX as u64)
                as u32,
            max_lifetime_secs: rc
                .max_allocation_lifetime
                .0
                .as_secs()
                .clamp(1, u32::MAX as u64) as u32,
            max_allocations: rc.max_allocations,
            user_allocations: rc.user_allocations,
            user_bandwidth: rc.user_bandwidth,
            allow_loopback_peers: rc.allow_loopback_peers,
            denied_peers: rc.denied_peers.clone(),
            allowed_peers: rc.allowed_peers.clone(),
            own_addresses,
            relay_ipv4,
            relay_ipv6: relay_v6.is_some(),
            ..Default::default()
        },
        nonce_key,
        now,
    );
    let setup = TurnSetup {
        core,
        cfg: TurnServiceConfig {
            relay_bind: local.ip(),
            relay_public: public,
            relay_v6,
            port_min: rc.ports.0,
            port_max: rc.ports.1,
            tcp: rc.tcp_limits(),
        },
        tcp,
    };
    let mut relays = vec![SocketAddr::new(public, advertised.port())];
    if let Some(v6) = relay_v6.filter(|v6| *v6 != public) {
        relays.push(SocketAddr::new(v6, advertised.port()));
    }
    for a in extra_relays {
        if !relays.contains(&a) {
            relays.push(a);
        }
    }
    let grant = crate::relay::RelayGrant {
        secret: rc.secret.as_bytes().to_vec(),
        realm: rc.realm.clone(),
        ttl_secs: rc.credential_lifetime.0.as_secs().max(1),
        relays,
    };
    Ok((Some(setup), Some(grant)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn udp_and_tcp_share_the_port() {
        let (udp, tcp) = bind_udp_tcp("127.0.0.1:0".parse().unwrap(), true)
            .await
            .unwrap();
        let tcp = tcp.expect("a TCP listener was asked for");
        assert_eq!(udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        let (_, none) = bind_udp_tcp("127.0.0.1:0".parse().unwrap(), false)
            .await
            .unwrap();
        assert!(none.is_none());
    }

    /// A dual-stack supernode (bound to any, an IPv4 public address and
    /// `public_ipv6`) relays both families and is listed at both.
    #[tokio::test]
    async fn a_dual_stack_relay_is_listed_and_relays_at_both_families() {
        let rc = crate::config::RelaySection {
            secret: "s".into(),
            public_ipv6: Some("2001:db8:100::1".parse().unwrap()),
            ..Default::default()
        };
        let local: SocketAddr = "[::]:7710".parse().unwrap();
        let advertised: SocketAddr = "198.51.100.1:7710".parse().unwrap();
        let (setup, grant) =
            supernode_setup(&rc, local, advertised, vec![], None, [1; 32], Millis(0))
                .await
                .unwrap();
        let (setup, grant) = (setup.unwrap(), grant.unwrap());
        assert_eq!(
            grant.relays,
            vec![advertised, "[2001:db8:100::1]:7710".parse().unwrap()]
        );
        assert_eq!(setup.cfg.relay_public, advertised.ip());
        assert_eq!(setup.cfg.relay_v6, Some("2001:db8:100::1".parse().unwrap()));
    }

    #[tokio::test]
    async fn a_named_port_taken_for_tcp_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        match bind_udp_tcp(addr, true).await {
            Err(e @ TurnSetupError::Tcp { .. }) => {
                assert!(e.to_string().contains(&addr.to_string()), "{e}")
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("bound a TCP port that is taken"),
        }
    }
}
