//! Voice benchmarks: `cargo bench --bench media -- [latency|quality|load]...`
//! (all three by default).
//!
//! - latency: mouth-to-ear delay natter adds without a network: two media
//!   sessions over loopback UDP, the caller playing assets/speech.wav from a
//!   paced file device, the callee recording; the recording is
//!   cross-correlated with the input. Device buffers of a real sound card
//!   (a period on each side) come on top.
//! - quality: PESQ wideband MOS (Python `pesq` at 16 kHz, via
//!   scripts/pesq_mos.py) of the speech sample sent through two media session
//!   cores in virtual time over a simulated network: 0/5/10/20% random
//!   loss with FEC on and off, and 30 ms of jitter. Skipped (with a note)
//!   when Python's `pesq` is missing: `pip install pesq numpy scipy`.
//! - load: CPU and memory per call for 10 concurrent calls in real time
//!   over loopback (each call is both ends: two sessions, two encoders).

use natter::clock::SystemClock;
use natter::media::audio::{self, DeviceSpec};
use natter::media::driver;
use natter::media::{MediaConfig, MediaKeys, MediaSession, Side};
use natter::time::Millis;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BinaryHeap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

const SPEECH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/speech.wav");

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("media bench: skipped (run with `cargo bench --bench media`)");
        return;
    }
    let what: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let all = what.is_empty();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if all || what.iter().any(|w| w == "latency") {
        rt.block_on(latency());
    }
    if all || what.iter().any(|w| w == "quality") {
        quality();
    }
    if all || what.iter().any(|w| w == "load") {
        rt.block_on(load());
    }
}

struct Pair {
    a: driver::MediaHandle,
    b: driver::MediaHandle,
    a_started: Instant,
    b_started: Instant,
}

async fn pair(input: DeviceSpec, output: DeviceSpec, config: MediaConfig) -> Pair {
    let sa = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let sb = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let (aa, ba) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
    let mut secret = [0u8; 32];
    rand::thread_rng().fill(&mut secret);
    let a = MediaSession::new(
        config.clone(),
        &MediaKeys::derive(&secret, Side::Caller),
        1,
        Millis::ZERO,
    )
    .unwrap();
    let b = MediaSession::new(
        config,
        &MediaKeys::derive(&secret, Side::Callee),
        2,
        Millis::ZERO,
    )
    .unwrap();
    let io_a = audio::open(&input, &DeviceSpec::Null).unwrap();
    let io_b = audio::open(&DeviceSpec::Null, &output).unwrap();
    let (a_started, b_started) = (io_a.started, io_b.started);
    let (ta, _) = driver::udp_transport(sa, ba);
    let (tb, _) = driver::udp_transport(sb, aa);
    Pair {
        a: driver::spawn(a, io_a, ta, Arc::new(SystemClock)),
        b: driver::spawn(b, io_b, tb, Arc::new(SystemClock)),
        a_started,
        b_started,
    }
}

/// Lag (in samples) of `y` behind `x` in `0..max_lag` with the highest
/// normalised correlation, and that correlation.
fn best_lag(x: &[i16], y: &[i16], max_lag: usize) -> (usize, f64) {
    let n = x.len().min(y.len().saturating_sub(max_lag));
    let x = &x[..n];
    let ex: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
    (0..max_lag)
        .map(|lag| {
            let y = &y[lag..lag + n];
            let xy: f64 = x.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum();
            let ey: f64 = y.iter().map(|&v| (v as f64).powi(2)).sum();
            (lag, xy / (ex * ey).sqrt().max(1.0))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, 0.0))
}

async fn latency() {
    for frame_ms in [20, 10] {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("rec.wav");
        let mut config = MediaConfig::default();
        config.codec.frame_ms = frame_ms;
        let p = pair(
            DeviceSpec::File(SPEECH.into()),
            DeviceSpec::File(rec.clone()),
            config,
        )
        .await;
        tokio::time::sleep(Duration::from_secs(8)).await;
        p.a.stop().await.unwrap();
        p.b.stop().await.unwrap();
        let input = audio::read_wav(Path::new(SPEECH)).unwrap();
        let out = audio::read_wav(&rec).unwrap();
        // Input seconds 1-5 against the recording.
        let (lag, corr) = best_lag(&input[48_000..5 * 48_000], &out[48_000..], 48 * 300);
        // Input sample n left the device at a_started + n/48k; recording
        // sample m reached it at b_started + m/48k.
        let offset_ms = p.b_started.duration_since(p.a_started).as_secs_f64() * 1000.0;
        let ms = lag as f64 / 48.0 + offset_ms;
        println!(
            "latency: {frame_ms} ms frames: natter adds {ms:.1} ms mouth-to-ear without a network (correlation {corr:.2}); a sound card adds its period on each side"
        );
    }
}

/// (arrival, serial, to_b, bytes) in a min-heap.
type InFlight = std::cmp::Reverse<(u64, u64, bool, Vec<u8>)>;

/// Speech through two session cores in virtual time over a network with
/// i.i.d. `loss` and uniform `jitter_ms`; returns B's output.
fn simulate(input: &[i16], loss: f64, jitter_ms: u64, fec: bool, seed: u64) -> Vec<i16> {
    let mut config = MediaConfig::default();
    config.codec.fec = fec;
    if !fec {
        config.codec.min_loss_percent = 0;
    }
    let secret = [7u8; 32];
    let mut a = MediaSession::new(
        config.clone(),
        &MediaKeys::derive(&secret, Side::Caller),
        1,
        Millis::ZERO,
    )
    .unwrap();
    let mut b = MediaSession::new(
        config,
        &MediaKeys::derive(&secret, Side::Callee),
        2,
        Millis::ZERO,
    )
    .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut net: BinaryHeap<InFlight> = BinaryHeap::new();
    let mut serial = 0;
    let mut out = Vec::with_capacity(input.len() + 48_000);
    let mut buf = [0i16; 480];
    let end = (input.len() / 480) as u64 * 10 + 1_000;
    for t in 0..end {
        while net.peek().is_some_and(|p| p.0.0 <= t) {
            let std::cmp::Reverse((_, _, to_b, d)) = net.pop().unwrap();
            if to_b {
                b.handle_datagram(Millis(t), &d);
            } else {
                a.handle_datagram(Millis(t), &d);
            }
        }
        if t % 10 == 0 {
            let i = (t / 10) as usize * 480;
            let chunk = input.get(i..i + 480).unwrap_or(&[0; 480]);
            a.push_capture(Millis(t), chunk);
            b.push_capture(Millis(t), &[0; 480]);
            b.pull_playback(Millis(t), &mut buf);
            out.extend_from_slice(&buf);
        }
        for (s, to_b) in [(&mut a, true), (&mut b, false)] {
            if s.poll_timeout().is_some_and(|d| d <= Millis(t)) {
                s.handle_timeout(Millis(t));
            }
            while let Some(d) = s.poll_transmit() {
                if rng.gen_bool(loss) {
                    continue;
                }
                let delay = 20
                    + if jitter_ms > 0 {
                        rng.gen_range(0..=jitter_ms)
                    } else {
                        0
                    };
                serial += 1;
                net.push(std::cmp::Reverse((t + delay, serial, to_b, d)));
            }
            while s.poll_event().is_some() {}
        }
    }
    out
}

fn quality() {
    let input = audio::read_wav(Path::new(SPEECH)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("ref.wav");
    audio::write_wav(&reference, &input).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pesq_mos.py");
    let mut conditions = Vec::new();
    for loss in [0.0, 0.05, 0.10, 0.20] {
        for fec in [true, false] {
            conditions.push((loss, 0, fec));
        }
    }
    conditions.push((0.0, 30, true));
    conditions.push((0.05, 30, true));
    println!(
        "quality: PESQ wideband MOS of {} s of speech at 16 kHz (seeded i.i.d. loss, 20 ms delay)",
        input.len() / 48_000
    );
    for (loss, jitter, fec) in conditions {
        let out = simulate(&input, loss, jitter, fec, 1);
        let deg = dir.path().join("deg.wav");
        audio::write_wav(&deg, &out).unwrap();
        let mos = std::process::Command::new("python3")
            .arg(script)
            .arg(&reference)
            .arg(&deg)
            .output();
        let label = format!(
            "loss {:>2.0}%, jitter {:>2} ms, FEC {}",
            loss * 100.0,
            jitter,
            if fec { "on " } else { "off" }
        );
        match mos {
            Ok(o) if o.status.success() => {
                println!(
                    "  {label}: MOS {}",
                    String::from_utf8_lossy(&o.stdout).trim()
                )
            }
            Ok(o) => {
                println!(
                    "  {label}: PESQ unavailable: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                return;
            }
            Err(e) => {
                println!("  {label}: python3 unavailable: {e}");
                return;
            }
        }
    }
}

fn proc_cpu_secs() -> f64 {
    // utime and stime, fields 14 and 15 of /proc/self/stat, in clock ticks.
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn load() {
    const CALLS: usize = 10;
    const SECS: u64 = 10;
    let rss0 = rss_kib();
    let mut calls = Vec::new();
    for _ in 0..CALLS {
        calls.push(
            pair(
                DeviceSpec::File(SPEECH.into()),
                DeviceSpec::Null,
                MediaConfig::default(),
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss1 = rss_kib();
    let cpu0 = proc_cpu_secs();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(SECS)).await;
    let cpu = proc_cpu_secs() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    for c in calls {
        c.a.stop().await.unwrap();
        c.b.stop().await.unwrap();
    }
    println!(
        "load: {CALLS} calls (both ends in this process, 20 ms frames, 32 kb/s, complexity 9): {:.1}% of one core per call ({:.1}% per end), {} KiB of memory per call",
        cpu / wall * 100.0 / CALLS as f64,
        cpu / wall * 50.0 / CALLS as f64,
        (rss1.saturating_sub(rss0)) / CALLS as u64
    );
}
