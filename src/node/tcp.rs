//! Byte streams beside the main UDP socket, for networks that block UDP:
//! link frames over TCP (a client attaches to its supernodes this way; a
//! supernode accepts them on its TURN-over-TCP port, [`is_link_start`]
//! tells the two apart) and TURN over TCP to the client's relay. Link
//! frames are already length-prefixed ([`crate::wire`]), TURN messages are
//! cut by [`StreamFramer`]. Each connection has a reader and a writer task;
//! what arrives comes back to the driver as [`TcpInput`] on one channel.
//!
//! A supernode's listener takes streams from strangers, so every accepted
//! one holds a [`TcpPermit`] from a [`TcpAdmission`] (a cap on all of them
//! and a share per source, IPv4 address or IPv6 /64) and is read under
//! [`StreamDeadlines`]: closed when silent for too long, or when a message
//! it started does not arrive whole in time (a sender trickling bytes).

use crate::limits::{Shares, SourceKey, log_worthy};
use crate::link::packet::KIND_INIT;
use crate::relay::framing::StreamFramer;
use crate::wire::stun::MAGIC_COOKIE;
use crate::wire::{HEADER, MAX_FRAME, VERSION};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// Frames queued per connection before new ones are dropped.
const QUEUE: usize = 512;
/// A connection attempt gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Link,
    Turn,
}

/// From the streams to the driver.
#[derive(Debug)]
pub enum TcpInput {
    /// One link frame (as it would have come in a datagram).
    Link {
        from: SocketAddr,
        frame: Vec<u8>,
    },
    /// One TURN message (STUN or ChannelData) from the relay.
    Turn {
        server: SocketAddr,
        msg: Vec<u8>,
    },
    Closed {
        kind: StreamKind,
        peer: SocketAddr,
    },
}

/// A link stream a supernode's TCP listener accepted, with the bytes read
/// while telling it from TURN.
#[derive(Debug)]
pub struct AcceptedLink {
    pub addr: SocketAddr,
    pub stream: TcpStream,
    pub prefix: Vec<u8>,
    /// Its place in the listener's admission (released when it closes)
    /// and the deadlines it is read under.
    pub permit: TcpPermit,
}

/// What a supernode's TCP listener holds at most, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Accepted streams open at once, all sources together.
    pub max_connections: usize,
    /// Accepted streams one source (IPv4 address, IPv6 /64) may hold.
    pub per_address: usize,
    /// A TURN stream without an allocation is closed after this long with
    /// nothing read (one with an allocation lives as long as it does).
    pub turn_idle: Duration,
    /// A link stream with nothing read for this long is closed (link
    /// keepalives come every 15 s, sessions end after 60 s of silence).
    pub link_idle: Duration,
    /// A message a stream started must arrive whole within this long (the
    /// first bytes included: a stream must say what it is in time).
    pub frame_deadline: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 4096,
            per_address: 32,
            turn_idle: Duration::from_secs(120),
            link_idle: Duration::from_secs(90),
            frame_deadline: Duration::from_secs(10),
        }
    }
}

/// Counters of a [`TcpAdmission`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TcpAdmissionStats {
    /// Streams admitted since start.
    pub accepted: u64,
    /// Streams open now.
    pub open: u64,
    /// Refused: `max_connections` streams were open.
    pub refused_full: u64,
    /// Refused: the source held its `per_address` share.
    pub refused_per_address: u64,
    /// Closed after `turn_idle` / `link_idle` of silence.
    pub idle_closed: u64,
    /// Closed: a message did not arrive whole within `frame_deadline`.
    pub slow_closed: u64,
    /// Closed to make room for a source holding fewer streams.
    pub evicted: u64,
}

/// Why a stream was refused at accept.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TcpRefusal {
    #[error("{limit} TCP streams are open, the most this node takes")]
    Full { limit: usize },
    #[error("{from} holds {limit} TCP streams, its share")]
    PerAddress { from: SourceKey, limit: usize },
}

/// The accepted streams of one listener: pure counting state behind a
/// lock the accept loop and the streams' tasks share (no clock inside).
#[derive(Debug, Clone)]
pub struct TcpAdmission {
    limits: TcpLimits,
    state: Arc<Mutex<AdmissionState>>,
}

#[derive(Debug)]
struct AdmissionState {
    /// Streams held per source, against `per_address`.
    shares: Shares<SourceKey>,
    /// Open streams by admission order (oldest first): their source and
    /// how to close them when a newcomer evicts one.
    streams: std::collections::BTreeMap<u64, (SourceKey, Arc<Notify>)>,
    /// The next stream's id.
    next_id: u64,
    stats: TcpAdmissionStats,
}

impl TcpAdmission {
    pub fn new(limits: TcpLimits) -> Self {
        TcpAdmission {
            limits,
            state: Arc::new(Mutex::new(AdmissionState {
                shares: Shares::new(limits.per_address.max(1)),
                streams: std::collections::BTreeMap::new(),
                next_id: 0,
                stats: TcpAdmissionStats::default(),
            })),
        }
    }

    pub fn limits(&self) -> TcpLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AdmissionState> {
        // Counting only: a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a stream from `addr`, or why there is none (counted
    /// and logged; the caller drops the stream). When every place is
    /// taken, a source holding more streams than the newcomer's would
    /// gives up its oldest: many sources together cannot shut out one
    /// that holds little.
    pub fn admit(&self, addr: SocketAddr) -> Result<TcpPermit, TcpRefusal> {
        let key = SourceKey::of(addr.ip());
        let mut st = self.lock();
        if st.shares.get(&key) >= st.shares.cap {
            st.stats.refused_per_address += 1;
            if log_worthy(st.stats.refused_per_address) {
                tracing::warn!(source = %key, count = st.stats.refused_per_address, "tcp: stream refused, source holds its share");
            }
            return Err(TcpRefusal::PerAddress {
                from: key,
                limit: st.shares.cap,
            });
        }
        if st.streams.len() >= self.limits.max_connections && !st.evict_for(key) {
            st.stats.refused_full += 1;
            if log_worthy(st.stats.refused_full) {
                tracing::warn!(%addr, count = st.stats.refused_full, "tcp: stream refused, listener full");
            }
            return Err(TcpRefusal::Full {
                limit: self.limits.max_connections,
            });
        }
        st.shares.force_add(key);
        let id = st.next_id;
        st.next_id += 1;
        let close = Arc::new(Notify::new());
        st.streams.insert(id, (key, close.clone()));
        st.stats.open = st.streams.len() as u64;
        st.stats.accepted += 1;
        Ok(TcpPermit {
            admission: self.clone(),
            id,
            close,
        })
    }

    pub fn stats(&self) -> TcpAdmissionStats {
        self.lock().stats
    }
}

impl AdmissionState {
    /// Closes the oldest stream among those of the sources holding the
    /// most, if they hold more than `newcomer` would after admission.
    fn evict_for(&mut self, newcomer: SourceKey) -> bool {
        let Some((_, n)) = self.shares.largest() else {
            return false;
        };
        if n <= self.shares.get(&newcomer) + 1 {
            return false;
        }
        let Some((id, big)) = self
            .streams
            .iter()
            .find(|(_, (k, _))| self.shares.get(k) == n)
            .map(|(id, (k, _))| (*id, *k))
        else {
            return false;
        };
        self.release(id, true);
        self.stats.evicted += 1;
        if log_worthy(self.stats.evicted) {
            tracing::info!(source = %big, count = self.stats.evicted, "tcp: stream evicted for a newcomer");
        }
        true
    }

    /// Forgets stream `id`; `close` tells its task to end.
    fn release(&mut self, id: u64, close: bool) {
        if let Some((key, n)) = self.streams.remove(&id) {
            self.shares.remove(&key);
            if close {
                n.notify_one();
            }
        }
        self.stats.open = self.streams.len() as u64;
    }
}

/// One admitted stream's place; dropping it frees the place.
#[derive(Debug)]
pub struct TcpPermit {
    admission: TcpAdmission,
    id: u64,
    /// Notified when a newcomer evicts this stream.
    close: Arc<Notify>,
}

impl TcpPermit {
    /// The deadlines a stream of `kind` is read under.
    pub fn deadlines(&self, kind: StreamKind) -> StreamDeadlines {
        let l = self.admission.limits;
        StreamDeadlines {
            idle: match kind {
                StreamKind::Link => l.link_idle,
                StreamKind::Turn => l.turn_idle,
            },
            frame: l.frame_deadline,
        }
    }

    /// One read of an accepted stream of `kind`: under its deadlines
    /// (see [`read_within`]), and cut short when it is evicted. The
    /// caller that closes for an expired deadline says so with
    /// [`TcpPermit::closed_for`].
    pub async fn read<R: tokio::io::AsyncRead + Unpin>(
        &self,
        rd: &mut R,
        buf: &mut [u8],
        kind: StreamKind,
        partial_since: Option<Instant>,
    ) -> ReadOutcome {
        let d = self.deadlines(kind);
        tokio::select! {
            r = read_within(rd, buf, Some(d), partial_since) => r,
            _ = self.close.notified() => ReadOutcome::Evicted,
        }
    }

    /// The stream is closed for `why` (counted and logged).
    pub fn closed_for(&self, why: Deadline, addr: SocketAddr) {
        let mut st = self.admission.lock();
        let n = match why {
            Deadline::Idle => {
                st.stats.idle_closed += 1;
                st.stats.idle_closed
            }
            Deadline::Frame => {
                st.stats.slow_closed += 1;
                st.stats.slow_closed
            }
        };
        if log_worthy(n) {
            tracing::info!(%addr, count = n, ?why, "tcp: stream closed, deadline passed");
        }
    }
}

impl Drop for TcpPermit {
    fn drop(&mut self) {
        self.admission.lock().release(self.id, false);
    }
}

/// How long an accepted stream may stay silent, and how long a message it
/// started may take to arrive whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamDeadlines {
    pub idle: Duration,
    pub frame: Duration,
}

/// Which of [`StreamDeadlines`] passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    Idle,
    Frame,
}

/// What one deadline-bound read gave.
#[derive(Debug)]
pub enum ReadOutcome {
    Bytes(usize),
    /// End of stream or an error: the stream is over.
    Closed,
    Expired(Deadline),
    /// A newcomer took this stream's place (see [`TcpAdmission::admit`]).
    Evicted,
}

/// Reads into `buf` under `deadlines` (none: no limit). `partial_since`
/// is when the stream started the message it has not finished, if any:
/// the frame deadline runs from then, the idle one from now.
pub async fn read_within<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut [u8],
    deadlines: Option<StreamDeadlines>,
    partial_since: Option<Instant>,
) -> ReadOutcome {
    let done = |r: std::io::Result<usize>| match r {
        Ok(0) | Err(_) => ReadOutcome::Closed,
        Ok(n) => ReadOutcome::Bytes(n),
    };
    let Some(d) = deadlines else {
        return done(rd.read(buf).await);
    };
    let (wait, why) = match partial_since {
        Some(t0) => (d.frame.saturating_sub(t0.elapsed()), Deadline::Frame),
        None => (d.idle, Deadline::Idle),
    };
    match tokio::time::timeout(wait, rd.read(buf)).await {
        Ok(r) => done(r),
        Err(_) => ReadOutcome::Expired(why),
    }
}

/// Does a stream starting with `prefix` carry link frames? `None`: too
/// few bytes to tell yet. Its first frame is a link handshake INIT
/// (`len, version, kind`); a TURN stream starts with a STUN message
/// (magic cookie at offset 4) or ChannelData (0x40-0x7F).
pub fn is_link_start(prefix: &[u8]) -> Option<bool> {
    if prefix.len() < 8 {
        return None;
    }
    let len = u16::from_be_bytes([prefix[0], prefix[1]]) as usize;
    Some(
        prefix[4..8] != MAGIC_COOKIE
            && prefix[2] == VERSION
            && prefix[3] == KIND_INIT
            && (2..=MAX_FRAME).contains(&len),
    )
}

/// A stream that cannot carry link frames.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TcpError {
    #[error("impossible link frame length {0}")]
    FrameLength(usize),
}

/// The length of the first whole link frame in `buf`, `Ok(None)` when it
/// is incomplete, `Err` when the length is impossible.
pub fn link_frame_len(buf: &[u8]) -> Result<Option<usize>, TcpError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
    if !(2..=MAX_FRAME).contains(&len) {
        return Err(TcpError::FrameLength(len));
    }
    Ok((buf.len() >= HEADER + len).then_some(HEADER + len))
}

#[derive(Debug, Default, Clone)]
pub struct TcpStats {
    pub connects: u64,
    pub accepted: u64,
    pub frames_out: u64,
    pub frames_in: u64,
    pub queue_full: u64,
}

/// The TCP streams of one node.
#[derive(Debug)]
pub struct TcpIo {
    links: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    turns: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    tx: mpsc::Sender<TcpInput>,
    rx: mpsc::Receiver<TcpInput>,
    accepted: Option<mpsc::Receiver<AcceptedLink>>,
    pub stats: TcpStats,
}

impl Default for TcpIo {
    fn default() -> Self {
        Self::new()
    }
}

impl TcpIo {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(4096);
        TcpIo {
            links: HashMap::new(),
            turns: HashMap::new(),
            tx,
            rx,
            accepted: None,
            stats: TcpStats::default(),
        }
    }

    /// Link streams accepted elsewhere (the TURN service's listener) come
    /// in here.
    pub fn accept_from(&mut self, rx: mpsc::Receiver<AcceptedLink>) {
        self.accepted = Some(rx);
    }

    /// The next input from any stream (never ends).
    pub async fn recv(&mut self) -> TcpInput {
        loop {
            let rx = &mut self.rx;
            let acc = &mut self.accepted;
            tokio::select! {
                Some(i) = rx.recv() => return i,
                Some(a) = async {
                    match acc {
                        Some(r) => r.recv().await,
                        None => std::future::pending().await,
                    }
                } => self.adopt(a),
            }
        }
    }

    fn adopt(&mut self, a: AcceptedLink) {
        self.stats.accepted += 1;
        let (wtx, wrx) = mpsc::channel(QUEUE);
        tracing::debug!(addr = %a.addr, "link over TCP accepted");
        // A newer stream from the same address replaces the old one.
        self.links.insert(a.addr, wtx);
        let tx = self.tx.clone();
        tokio::spawn(run_stream(
            StreamKind::Link,
            a.addr,
            a.stream,
            a.prefix,
            wrx,
            tx,
            Some(a.permit),
        ));
    }

    /// Whether a link stream to `addr` exists.
    pub fn has_link(&self, addr: SocketAddr) -> bool {
        self.links.contains_key(&addr)
    }

    /// Whether any link stream is open or opening.
    pub fn any_link(&self) -> bool {
        !self.links.is_empty()
    }

    /// Send a link frame on the stream to `dst`; with `connect`, open one
    /// when there is none. False when there is no stream for it.
    pub fn send_link(&mut self, dst: SocketAddr, frame: Vec<u8>, connect: bool) -> bool {
        if !self.links.contains_key(&dst) {
            if !connect {
                return false;
            }
            self.stats.connects += 1;
            let s = spawn_out(StreamKind::Link, dst, self.tx.clone());
            self.links.insert(dst, s);
        }
        push(&mut self.links, &mut self.stats, dst, frame)
    }

    /// Send TURN bytes on the stream to `server` (opened on first use).
    pub fn send_turn(&mut self, server: SocketAddr, bytes: Vec<u8>) -> bool {
        if !self.turns.contains_key(&server) {
            self.stats.connects += 1;
            let s = spawn_out(StreamKind::Turn, server, self.tx.clone());
            self.turns.insert(server, s);
        }
        push(&mut self.turns, &mut self.stats, server, bytes)
    }

    /// Forget a closed stream (the next send opens a new one).
    pub fn closed(&mut self, kind: StreamKind, peer: SocketAddr) {
        match kind {
            StreamKind::Link => self.links.remove(&peer),
            StreamKind::Turn => self.turns.remove(&peer),
        };
    }

    /// Close the TURN stream to `server`.
    pub fn close_turn(&mut self, server: SocketAddr) {
        self.turns.remove(&server);
    }
}

fn push(
    map: &mut HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    stats: &mut TcpStats,
    dst: SocketAddr,
    b: Vec<u8>,
) -> bool {
    let Some(s) = map.get(&dst) else { return false };
    match s.try_send(b) {
        Ok(()) => {
            stats.frames_out += 1;
            true
        }
        // A stream that does not drain loses frames, like a lossy path.
        Err(mpsc::error::TrySendError::Full(_)) => {
            stats.queue_full += 1;
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            map.remove(&dst);
            false
        }
    }
}

fn spawn_out(
    kind: StreamKind,
    addr: SocketAddr,
    tx: mpsc::Sender<TcpInput>,
) -> mpsc::Sender<Vec<u8>> {
    let (wtx, wrx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                tracing::debug!(%addr, ?kind, "TCP stream open");
                run_stream(kind, addr, s, Vec::new(), wrx, tx, None).await
            }
            r => {
                tracing::debug!(%addr, ?kind, "TCP connect failed: {r:?}");
                let _ = tx.send(TcpInput::Closed { kind, peer: addr }).await;
            }
        }
    });
    wtx
}

/// Reads and writes one stream until it ends. `permit`: an accepted
/// stream, read under its deadlines (our own outgoing ones have none).
async fn run_stream(
    kind: StreamKind,
    addr: SocketAddr,
    stream: TcpStream,
    prefix: Vec<u8>,
    mut wrx: mpsc::Receiver<Vec<u8>>,
    tx: mpsc::Sender<TcpInput>,
    permit: Option<TcpPermit>,
) {
    let mut partial_since = None;
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        while let Some(b) = wrx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
    });
    let mut buf = prefix;
    let mut framer = StreamFramer::new();
    let mut chunk = vec![0u8; 16 * 1024];
    'read: loop {
        match kind {
            StreamKind::Link => loop {
                match link_frame_len(&buf) {
                    Ok(Some(n)) => {
                        let frame: Vec<u8> = buf.drain(..n).collect();
                        if tx.send(TcpInput::Link { from: addr, frame }).await.is_err() {
                            break 'read;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(%addr, "not link frames ({e}): closing");
                        break 'read;
                    }
                }
            },
            StreamKind::Turn => {
                framer.push(&buf);
                buf.clear();
                loop {
                    match framer.next_message() {
                        Ok(Some(m)) => {
                            let msg = m.to_vec();
                            if tx.send(TcpInput::Turn { server: addr, msg }).await.is_err() {
                                break 'read;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(%addr, "not TURN: {e}");
                            break 'read;
                        }
                    }
                }
            }
        }
        let held = buf.len() + framer.buffered();
        partial_since = (held > 0).then(|| partial_since.unwrap_or_else(Instant::now));
        let r = match &permit {
            Some(p) => p.read(&mut rd, &mut chunk, kind, partial_since).await,
            None => read_within(&mut rd, &mut chunk, None, None).await,
        };
        match r {
            ReadOutcome::Bytes(n) => buf.extend_from_slice(&chunk[..n]),
            ReadOutcome::Expired(why) => {
                if let Some(p) = &permit {
                    p.closed_for(why, addr);
                }
                break;
            }
            ReadOutcome::Closed | ReadOutcome::Evicted => break,
        }
    }
    writer.abort();
    let _ = tx.send(TcpInput::Closed { kind, peer: addr }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_streams_are_told_from_turn() {
        let mut init = vec![0u8; 322];
        init[0..2].copy_from_slice(&320u16.to_be_bytes());
        init[2] = VERSION;
        init[3] = KIND_INIT;
        assert_eq!(is_link_start(&init[..4]), None);
        assert_eq!(is_link_start(&init), Some(true));
        // A STUN Allocate: magic cookie at 4.
        let mut stun = vec![0u8, 3, 0, 16];
        stun.extend_from_slice(&MAGIC_COOKIE);
        stun.extend_from_slice(&[0; 28]);
        assert_eq!(is_link_start(&stun), Some(false));
        // A STUN message whose length bytes look like a link header.
        let mut odd = vec![0u8, 3, VERSION, KIND_INIT];
        odd.extend_from_slice(&MAGIC_COOKIE);
        assert_eq!(is_link_start(&odd), Some(false));
        assert_eq!(is_link_start(&[0x40, 0, 0, 4, 1, 2, 3, 4]), Some(false));
    }

    #[tokio::test]
    async fn admission_caps_each_source_and_evicts_the_biggest_holder_when_full() {
        let adm = TcpAdmission::new(TcpLimits {
            max_connections: 5,
            per_address: 2,
            ..Default::default()
        });
        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let a6: SocketAddr = "[2001:db8::1]:1000".parse().unwrap();
        let a6b: SocketAddr = "[2001:db8::2:3]:1000".parse().unwrap();
        let p1 = adm.admit(a).unwrap();
        let _p2 = adm.admit(a).unwrap();
        assert!(matches!(
            adm.admit(a),
            Err(TcpRefusal::PerAddress { limit: 2, .. })
        ));
        // One /64 is one source.
        let q1 = adm.admit(a6).unwrap();
        let _q2 = adm.admit(a6b).unwrap();
        assert!(matches!(adm.admit(a6), Err(TcpRefusal::PerAddress { .. })));
        let _r = adm.admit("192.0.2.2:1".parse().unwrap()).unwrap();
        // Full: a newcomer takes the oldest place of a source holding two.
        let _c = adm.admit("192.0.2.3:1".parse().unwrap()).unwrap();
        let t = Duration::from_secs(5);
        tokio::time::timeout(t, p1.close.notified()).await.unwrap();
        let _d = adm.admit("192.0.2.4:1".parse().unwrap()).unwrap();
        tokio::time::timeout(t, q1.close.notified()).await.unwrap();
        // Everyone holds one: nobody gives way.
        assert!(matches!(
            adm.admit("192.0.2.5:1".parse().unwrap()),
            Err(TcpRefusal::Full { limit: 5 })
        ));
        // Dropping an evicted permit frees nothing twice.
        drop((p1, q1));
        let s = adm.stats();
        assert_eq!((s.accepted, s.open, s.evicted), (7, 5, 2));
        assert_eq!((s.refused_per_address, s.refused_full), (2, 1));
        // A closed stream frees its place and its source's share.
        drop(_r);
        let _e = adm.admit("192.0.2.5:1".parse().unwrap()).unwrap();
        assert_eq!(adm.stats().open, 5);
    }

    #[tokio::test]
    async fn reads_expire_when_idle_or_when_a_message_trickles() {
        let d = StreamDeadlines {
            idle: Duration::from_millis(1000),
            frame: Duration::from_millis(100),
        };
        let (mut a, mut b) = tokio::io::duplex(64);
        let mut buf = [0u8; 8];
        // Silent: the idle deadline.
        let t0 = Instant::now();
        assert!(matches!(
            read_within(&mut b, &mut buf, Some(d), None).await,
            ReadOutcome::Expired(Deadline::Idle)
        ));
        assert!(t0.elapsed() >= d.idle);
        // A message started 90 ms ago has 10 ms left, not the idle time.
        let since = Instant::now() - Duration::from_millis(90);
        let t1 = Instant::now();
        assert!(matches!(
            read_within(&mut b, &mut buf, Some(d), Some(since)).await,
            ReadOutcome::Expired(Deadline::Frame)
        ));
        assert!(t1.elapsed() < d.idle, "{:?}", t1.elapsed());
        a.write_all(b"hi").await.unwrap();
        assert!(matches!(
            read_within(&mut b, &mut buf, Some(d), None).await,
            ReadOutcome::Bytes(2)
        ));
        drop(a);
        assert!(matches!(
            read_within(&mut b, &mut buf, Some(d), None).await,
            ReadOutcome::Closed
        ));
    }

    #[test]
    fn link_frames_are_cut_from_the_stream() {
        assert_eq!(link_frame_len(&[0]), Ok(None));
        assert_eq!(link_frame_len(&[0, 4, 1, 19]), Ok(None));
        assert_eq!(link_frame_len(&[0, 2, 1, 19, 9]), Ok(Some(4)));
        assert_eq!(link_frame_len(&[0, 0]), Err(TcpError::FrameLength(0)));
        assert!(link_frame_len(&[0xFF, 0xFF]).is_err());
    }

    #[tokio::test]
    async fn frames_cross_a_tcp_stream_both_ways() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = l.local_addr().unwrap();
        let (atx, arx) = mpsc::channel(4);
        let mut srv = TcpIo::new();
        srv.accept_from(arx);
        let admission = TcpAdmission::new(TcpLimits::default());
        tokio::spawn(async move {
            let (mut s, addr) = l.accept().await.unwrap();
            let mut prefix = vec![0u8; 8];
            s.read_exact(&mut prefix).await.unwrap();
            assert_eq!(is_link_start(&prefix), Some(true));
            atx.send(AcceptedLink {
                addr,
                stream: s,
                prefix,
                permit: admission.admit(addr).unwrap(),
            })
            .await
            .unwrap();
        });
        let mut cli = TcpIo::new();
        let mut init = vec![0u8; 322];
        init[0..2].copy_from_slice(&320u16.to_be_bytes());
        init[2] = VERSION;
        init[3] = KIND_INIT;
        let data = vec![0u8, 3, VERSION, 19, 42];
        assert!(!cli.send_link(server, init.clone(), false));
        assert!(cli.send_link(server, init.clone(), true));
        assert!(cli.send_link(server, data.clone(), false));
        let t = Duration::from_secs(10);
        let mut from = None;
        for want in [&init, &data] {
            match tokio::time::timeout(t, srv.recv()).await.unwrap() {
                TcpInput::Link { from: f, frame } => {
                    assert_eq!(&frame, want);
                    from = Some(f);
                }
                other => panic!("{other:?}"),
            }
        }
        let from = from.unwrap();
        assert!(srv.has_link(from));
        assert!(srv.send_link(from, data.clone(), false));
        match tokio::time::timeout(t, cli.recv()).await.unwrap() {
            TcpInput::Link { from, frame } => {
                assert_eq!(from, server);
                assert_eq!(frame, data);
            }
            other => panic!("{other:?}"),
        }
        // Garbage closes the stream.
        assert!(cli.send_link(server, vec![0, 0, 0], false));
        match tokio::time::timeout(t, srv.recv()).await.unwrap() {
            TcpInput::Closed { kind, peer } => {
                assert_eq!((kind, peer), (StreamKind::Link, from));
                srv.closed(kind, peer);
            }
            other => panic!("{other:?}"),
        }
        assert!(!srv.has_link(from));
    }
}
