//! A UDP forwarder on loopback that impairs a media path with seeded
//! loss, delay and jitter (this kernel has no `tc netem`), for tests and
//! benchmarks. It sits between two endpoints: each sends to the proxy,
//! which forwards to the other, and records what it dropped.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ImpairConfig {
    /// Probability of dropping each datagram (0-1).
    pub loss: f64,
    /// Fixed one-way delay, ms.
    pub delay_ms: u64,
    /// Extra delay drawn uniformly from 0..=jitter_ms per datagram.
    pub jitter_ms: u64,
    pub seed: u64,
    /// Flip a bit in every Nth audio datagram from `a` (0: never), as a
    /// man in the middle would: the original is not delivered.
    pub corrupt_every: u64,
}

/// What the proxy did, per direction (`a_to_b`).
#[derive(Debug, Clone, Default)]
pub struct ImpairLog {
    pub forwarded: [u64; 2],
    /// Sequence numbers of dropped audio packets (payload type 111).
    pub dropped_audio: [Vec<u16>; 2],
    pub dropped_other: [u64; 2],
    /// Audio datagrams from `a` delivered corrupted.
    pub corrupted: u64,
}

#[derive(Debug)]
pub struct Impair {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<ImpairLog>>,
    task: JoinHandle<()>,
}

impl Drop for Impair {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Impair {
    /// Forward between `a` and `b`. Datagrams from `a` that were forwarded
    /// are also copied to `tap` (for tests that replay or tamper).
    pub async fn start(
        a: SocketAddr,
        b: SocketAddr,
        config: ImpairConfig,
        tap: Option<mpsc::UnboundedSender<Vec<u8>>>,
    ) -> std::io::Result<Impair> {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = sock.local_addr()?;
        let log = Arc::new(Mutex::new(ImpairLog::default()));
        let log2 = log.clone();
        let task = tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(config.seed);
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let (dir, to) = if from == a {
                    (0, b)
                } else if from == b {
                    (1, a)
                } else {
                    continue;
                };
                let mut d = buf[..n].to_vec();
                let audio = d.len() >= 4 && d[0] == 0x80 && d[1] & 0x7F == 111;
                let drop = rng.gen_bool(config.loss.clamp(0.0, 1.0));
                let delay = config.delay_ms
                    + if config.jitter_ms > 0 {
                        rng.gen_range(0..=config.jitter_ms)
                    } else {
                        0
                    };
                let mut corrupted = false;
                {
                    let mut l = log2.lock().unwrap_or_else(|e| e.into_inner());
                    if drop {
                        if audio {
                            l.dropped_audio[dir].push(u16::from_be_bytes([d[2], d[3]]));
                        } else {
                            l.dropped_other[dir] += 1;
                        }
                        continue;
                    }
                    l.forwarded[dir] += 1;
                    if dir == 0
                        && audio
                        && config.corrupt_every > 0
                        && l.forwarded[0] % config.corrupt_every == 0
                    {
                        // In the encrypted body: the header's fields have
                        // their own checks (version, replay window).
                        let i = rng.gen_range(20.min(d.len() - 1)..d.len());
                        d[i] ^= 1 << rng.gen_range(0..8);
                        l.corrupted += 1;
                        corrupted = true;
                    }
                }
                // The tap sees what was delivered intact.
                let tapped = (dir == 0 && !corrupted).then(|| d.clone());
                if delay == 0 {
                    let _ = sock.send_to(&d, to).await;
                } else {
                    let s = sock.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                        let _ = s.send_to(&d, to).await;
                    });
                }
                if let (Some(t), Some(d)) = (&tap, tapped) {
                    let _ = t.send(d);
                }
            }
        });
        Ok(Impair { addr, log, task })
    }
}
