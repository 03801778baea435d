//! A 10-minute call in virtual time between two media session cores whose
//! clocks differ by 0.1% (A's runs fast), over a simulated network with
//! seeded jitter and a little loss. Each side sends a 1 kHz burst
//! every second; the mouth-to-ear delay of every burst is measured from
//! the audio the other side plays. The call must end with no more delay
//! than it had after its first seconds, in both directions (A's faster
//! clock piles frames up at B; A runs short of B's frames): the playout
//! delay follows by time-scale modification.

use natter::media::audio::Tone;
use natter::media::{MediaConfig, MediaKeys, MediaSession, Side};
use natter::time::Millis;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BinaryHeap;

const CALL_MS: u64 = 600_000;
const SKEW: f64 = 1.001;
const CHUNK: usize = 480;

/// A side's audio: its clock rate (relative to true time), the bursts it
/// sends, and what it played.
struct Side_ {
    session: MediaSession,
    rate: f64,
    tone: Tone,
    captured: u64,
    /// Chunks pushed/pulled so far.
    chunks_in: u64,
    chunks_out: u64,
    played: Vec<i16>,
}

impl Side_ {
    fn new(session: MediaSession, rate: f64) -> Self {
        Side_ {
            session,
            rate,
            tone: Tone::new(1000.0, 0.5),
            captured: 0,
            chunks_in: 0,
            chunks_out: 0,
            played: Vec::new(),
        }
    }

    /// Local clock at true time `t` (ms).
    fn now(&self, t: f64) -> u64 {
        (t * self.rate) as u64
    }

    /// A 100 ms burst at the start of every second of this side's audio.
    fn capture_chunk(&mut self) -> [i16; CHUNK] {
        let mut c = [0i16; CHUNK];
        for s in c.iter_mut() {
            let v = self.tone.next_sample();
            if self.captured % 48_000 < 4_800 {
                *s = v;
            }
            self.captured += 1;
        }
        c
    }
}

/// Onsets (sample indexes) of bursts in played audio: a loud sample after
/// at least 300 ms of quiet.
fn onsets(s: &[i16]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut quiet = 0usize;
    for (i, &x) in s.iter().enumerate() {
        if x.unsigned_abs() > 8_000 {
            if quiet >= 14_400 {
                out.push(i);
            }
            quiet = 0;
        } else {
            quiet += 1;
        }
    }
    out
}

/// (true time of the burst's capture in s, mouth-to-ear delay in ms) for
/// every burst `rx` played of what `tx` sent.
fn delays(tx_rate: f64, rx: &Side_) -> Vec<(f64, f64)> {
    onsets(&rx.played)
        .into_iter()
        .map(|m| {
            let played_at = m as f64 / 48.0 / rx.rate;
            // The burst whose capture precedes this onset most closely.
            let k = ((played_at * tx_rate) / 1000.0).floor();
            let captured_at = k * 1000.0 / tx_rate;
            (captured_at / 1000.0, played_at - captured_at)
        })
        .collect()
}

fn mean(v: &[(f64, f64)], from: f64, to: f64) -> (f64, usize) {
    let s: Vec<f64> = v
        .iter()
        .filter(|(t, _)| (from..to).contains(t))
        .map(|x| x.1)
        .collect();
    (s.iter().sum::<f64>() / s.len().max(1) as f64, s.len())
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    /// Arrival in true microseconds, negated for a min-heap.
    at: std::cmp::Reverse<(u64, u64)>,
    to_b: bool,
    bytes: Vec<u8>,
}

/// The jitter buffer is what is under test: a cheap encoder setting keeps
/// ten minutes of audio each way fast to simulate.
fn config() -> MediaConfig {
    let mut c = MediaConfig::default();
    c.codec.complexity = 0;
    c
}

#[test]
fn ten_minutes_with_clock_skew_end_without_extra_delay() {
    let _turn = scenario!();
    let secret = [5u8; 32];
    let a = MediaSession::new(
        config(),
        &MediaKeys::derive(&secret, Side::Caller),
        1,
        Millis::ZERO,
    )
    .unwrap();
    let b = MediaSession::new(
        config(),
        &MediaKeys::derive(&secret, Side::Callee),
        2,
        Millis::ZERO,
    )
    .unwrap();
    let mut sides = [Side_::new(a, SKEW), Side_::new(b, 1.0)];
    let mut rng = StdRng::seed_from_u64(2026);
    let mut net: BinaryHeap<InFlight> = BinaryHeap::new();
    let mut serial = 0u64;
    let mut out = [0i16; CHUNK];
    // Step in 1 ms of true time.
    let mut t_us: u64 = 0;
    while t_us < CALL_MS * 1000 {
        let t = t_us as f64 / 1000.0;
        while net.peek().is_some_and(|p| p.at.0.0 <= t_us) {
            let p = net.pop().unwrap();
            let rx = &mut sides[p.to_b as usize];
            let now = rx.now(t);
            rx.session.handle_datagram(Millis(now), &p.bytes);
        }
        for (i, side) in sides.iter_mut().enumerate() {
            let now = side.now(t);
            // Chunk j is complete at local time (j + 1) * 10 ms.
            if (side.chunks_in + 1) * 10 <= now {
                let c = side.capture_chunk();
                side.session.push_capture(Millis(now), &c);
                side.chunks_in += 1;
            }
            // Chunk j is played from local time j * 10 ms.
            if side.chunks_out * 10 <= now {
                side.session.pull_playback(Millis(now), &mut out);
                side.played.extend_from_slice(&out);
                side.chunks_out += 1;
            }
            if side
                .session
                .poll_timeout()
                .is_some_and(|d| d <= Millis(now))
            {
                side.session.handle_timeout(Millis(now));
            }
            while let Some(bytes) = side.session.poll_transmit() {
                // 25 ms base, uniform 0-30 ms jitter, 0.5% loss.
                if rng.gen_bool(0.005) {
                    continue;
                }
                let delay = 25_000 + rng.gen_range(0..30_000u64);
                serial += 1;
                net.push(InFlight {
                    at: std::cmp::Reverse((t_us + delay, serial)),
                    to_b: i == 0,
                    bytes,
                });
            }
            while side.session.poll_event().is_some() {}
        }
        t_us += 1000;
    }

    for (name, tx, rx) in [("A->B", 0, 1), ("B->A", 1, 0)] {
        let d = delays(sides[tx].rate, &sides[rx]);
        // "After the first seconds": once the buffer has seen the
        // network's jitter and its first loss (which adds a frame of FEC
        // headroom to the target).
        let (early, n_early) = mean(&d, 10.0, 20.0);
        let (late, n_late) = mean(&d, 585.0, 595.0);
        let max_after_warmup = d
            .iter()
            .filter(|(t, _)| *t >= 10.0)
            .map(|x| x.1)
            .fold(0.0, f64::max);
        let stats = sides[rx].session.stats();
        eprintln!(
            "{name}: delay {early:.1} ms in seconds 10-20, {late:.1} ms at the end, max {max_after_warmup:.1} ms; {} bursts heard; {:?}",
            d.len(),
            stats.jitter_buffer
        );
        assert!(
            n_early >= 9 && n_late >= 9,
            "{name}: bursts heard {n_early} {n_late}"
        );
        assert!(
            d.len() >= 590,
            "{name}: only {} of 600 bursts heard",
            d.len()
        );
        assert!(
            late <= early + 10.0,
            "{name}: delay grew from {early:.1} to {late:.1} ms"
        );
        // Without drift compensation 0.1% of 10 minutes is 600 ms.
        assert!(
            max_after_warmup < early + 100.0,
            "{name}: delay peaked at {max_after_warmup:.1} ms"
        );
    }
    // A's faster clock: B shortens its audio by about 0.1 % of the call
    // (600 ms); A, short of B's frames, lengthens its own.
    let b_jb = sides[1].session.stats().jitter_buffer;
    let a_jb = sides[0].session.stats().jitter_buffer;
    // (Jitter and the FEC headroom after each loss move both ways too.)
    assert!(b_jb.accelerated_ms >= 300.0, "{b_jb:?}");
    assert!(a_jb.expanded_ms >= 300.0, "{a_jb:?}");
}
