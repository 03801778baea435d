//! Byte streams beside the main UDP socket, for networks that block UDP:
//! link frames over TCP (a client attaches to its supernodes this way; a
//! supernode accepts them on its TURN-over-TCP port, [`is_link_start`]
//! tells the two apart) and TURN over TCP to the client's relay. Link
//! frames are already length-prefixed ([`crate::wire`]), TURN messages are
//! cut by [`StreamFramer`]. Each connection has a reader and a writer task;
//! what arrives comes back to the driver as [`TcpInput`] on one channel.
//! Streams a supernode's listener accepted hold a [`TcpPermit`] and are
//! read under its deadlines ([`crate::tcp_limits`]).

use crate::link::packet::KIND_INIT;
use crate::relay::framing::StreamFramer;
pub use crate::tcp_limits::{
    Deadline, ReadOutcome, StreamDeadlines, StreamKind, TcpAdmission, TcpAdmissionStats, TcpLimits,
    TcpPermit, TcpRefusal, read_within,
};
use crate::wire::stun::MAGIC_COOKIE;
use crate::wire::{HEADER, MAX_FRAME, VERSION};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Frames queued per connection before new ones are dropped.
const QUEUE: usize = 512;
/// A connection attempt gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
    use tokio::io::AsyncReadExt;

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
