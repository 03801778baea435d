//! Limits on the TCP streams a supernode's listener takes from strangers
//! (TURN over TCP, and links of clients whose UDP is blocked): a
//! [`TcpAdmission`] caps them all and gives each source (IPv4 address,
//! IPv6 /64) a share, handing each stream a [`TcpPermit`]; a full listener
//! takes the oldest stream of the biggest holder for a newcomer holding
//! fewer. Streams are read under [`StreamDeadlines`]: closed when silent
//! too long, or when a message they started does not arrive whole in time
//! (a sender trickling bytes). The admission is counting state only (no
//! clock); the deadlines are the reader's.

use crate::limits::{Shares, SourceKey, log_worthy};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Link,
    Turn,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

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
}
