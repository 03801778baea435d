//! Seeded network impairment (this kernel has no `tc netem`), for tests
//! and benchmarks, in two forms:
//! - [`Impair`]: a UDP forwarder on loopback between two endpoints: each
//!   sends to the proxy, which forwards to the other, and records what it
//!   dropped;
//! - [`WireImpairment`]: the same decisions, sans-IO, for a media driver
//!   to apply to its own sending (`[media.impair]`): the benchmark of a
//!   real call between two processes impairs the caller's wire this way,
//!   since ICE picks the path and no proxy can sit on it.
//!
//! Loss is either independent (`burst` <= 1) or a two-state
//! Gilbert-Elliott chain whose bad state loses every packet: the average
//! loss is `loss` and bad runs last `burst` packets on average.

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
    /// Mean length of a loss burst in packets (Gilbert-Elliott); 0 or 1:
    /// independent loss.
    pub burst: f64,
}

/// The loss process of one direction: independent or Gilbert-Elliott.
#[derive(Debug, Clone)]
struct LossChain {
    /// Average loss (0-1).
    loss: f64,
    /// Mean burst length, packets (<= 1: independent).
    burst: f64,
    /// In the bad (losing) state of the chain.
    bad: bool,
}

impl LossChain {
    fn new(loss: f64, burst: f64) -> Self {
        LossChain {
            loss: loss.clamp(0.0, 1.0),
            burst,
            bad: false,
        }
    }

    /// Whether the next packet is lost.
    fn lose(&mut self, rng: &mut StdRng) -> bool {
        if self.burst <= 1.0 || self.loss <= 0.0 || self.loss >= 1.0 {
            return rng.gen_bool(self.loss);
        }
        // Bad runs are geometric with mean `burst`; the good-to-bad rate
        // makes the bad state's share (the average loss) `loss`.
        let leave_bad = 1.0 / self.burst;
        let enter_bad = (self.loss * leave_bad / (1.0 - self.loss)).min(1.0);
        self.bad = if self.bad {
            !rng.gen_bool(leave_bad)
        } else {
            rng.gen_bool(enter_bad)
        };
        self.bad
    }
}

/// Sans-IO impairment of one sender's datagrams: for each, drop it or
/// say how long to hold it (delay plus jitter, so packets reorder when
/// the jitter exceeds their spacing). Seeded: the same config gives the
/// same decisions.
#[derive(Debug, Clone)]
pub struct WireImpairment {
    config: ImpairConfig,
    chain: LossChain,
    rng: StdRng,
    /// Datagrams dropped so far.
    pub dropped: u64,
}

impl WireImpairment {
    pub fn new(config: ImpairConfig) -> Self {
        WireImpairment {
            chain: LossChain::new(config.loss, config.burst),
            rng: StdRng::seed_from_u64(config.seed),
            config,
            dropped: 0,
        }
    }

    /// `None`: drop the datagram; else hold it this many ms.
    pub fn decide(&mut self) -> Option<u64> {
        if self.chain.lose(&mut self.rng) {
            self.dropped += 1;
            return None;
        }
        let jitter = if self.config.jitter_ms > 0 {
            self.rng.gen_range(0..=self.config.jitter_ms)
        } else {
            0
        };
        Some(self.config.delay_ms + jitter)
    }
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
            let mut chain = LossChain::new(config.loss, config.burst);
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
                let drop = chain.lose(&mut rng);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Loss share and mean burst length of `n` decisions.
    fn measure(config: ImpairConfig, n: usize) -> (f64, f64) {
        let mut w = WireImpairment::new(config);
        let lost: Vec<bool> = (0..n).map(|_| w.decide().is_none()).collect();
        let runs = lost.windows(2).filter(|p| !p[0] && p[1]).count().max(1);
        let n_lost = lost.iter().filter(|&&l| l).count();
        (n_lost as f64 / n as f64, n_lost as f64 / runs as f64)
    }

    #[test]
    fn independent_and_bursty_loss_have_their_averages() {
        let (loss, burst) = measure(
            ImpairConfig {
                loss: 0.2,
                seed: 1,
                ..Default::default()
            },
            100_000,
        );
        assert!((loss - 0.2).abs() < 0.01, "{loss}");
        assert!((burst - 1.25).abs() < 0.05, "{burst}");
        let (loss, burst) = measure(
            ImpairConfig {
                loss: 0.1,
                burst: 3.0,
                seed: 2,
                ..Default::default()
            },
            100_000,
        );
        assert!((loss - 0.1).abs() < 0.01, "{loss}");
        assert!((burst - 3.0).abs() < 0.2, "{burst}");
    }

    #[test]
    fn jitter_stays_in_its_range_and_is_seeded() {
        let c = ImpairConfig {
            delay_ms: 5,
            jitter_ms: 30,
            seed: 3,
            ..Default::default()
        };
        let a: Vec<_> = {
            let mut w = WireImpairment::new(c);
            (0..1000).map(|_| w.decide().unwrap()).collect()
        };
        let mut w = WireImpairment::new(c);
        assert!(a.iter().all(|&d| (5..=35).contains(&d)));
        assert!(a.iter().any(|&d| d > 30) && a.iter().any(|&d| d < 10));
        assert_eq!(
            a,
            (0..1000).map(|_| w.decide().unwrap()).collect::<Vec<_>>()
        );
    }
}
