//! Measuring an honest client while an attack runs: success rate and
//! latency against a baseline, printed for the notes (`--nocapture`).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};

/// Outcomes of a bounded series of honest attempts.
#[derive(Debug, Default)]
pub struct Honest {
    pub ok: usize,
    pub tried: usize,
    /// Latencies of the successful attempts.
    pub ms: Vec<f64>,
    /// Why the others failed.
    pub errors: Vec<String>,
}

impl Honest {
    /// Runs `n` attempts one after another, each bounded by `limit`.
    pub async fn run<F, Fut, T, E>(n: usize, limit: Duration, mut f: F) -> Honest
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: std::fmt::Debug,
    {
        let mut h = Honest::default();
        for i in 0..n {
            h.tried += 1;
            let t = Instant::now();
            match tokio::time::timeout(limit, f(i)).await {
                Ok(Ok(_)) => {
                    h.ok += 1;
                    h.ms.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                Ok(Err(e)) => h.errors.push(format!("{e:?}")),
                Err(_) => h.errors.push(format!("no answer in {limit:?}")),
            }
        }
        h
    }

    pub fn median_ms(&self) -> f64 {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }

    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.tried.max(1) as f64
    }
}

/// Prints one line of figures: `what`, the attack, and the honest
/// client's success and extra median latency over `base`.
pub fn report(what: &str, attack: &str, base: &Honest, under: &Honest) {
    println!(
        "DOS-FIGURES {what}: attack {attack}; honest {}/{} ({:.0} %), median {:.1} ms vs {:.1} ms baseline (+{:.1} ms)",
        under.ok,
        under.tried,
        under.rate() * 100.0,
        under.median_ms(),
        base.median_ms(),
        under.median_ms() - base.median_ms()
    );
}

/// A TCP connection to `server` from `from` (one of loopback's many
/// addresses, so each attacker is a source of its own); `None` on failure.
pub async fn connect_from(from: IpAddr, server: SocketAddr) -> Option<TcpStream> {
    let sock = TcpSocket::new_v4().ok()?;
    sock.bind(SocketAddr::new(from, 0)).ok()?;
    sock.connect(server).await.ok()
}
