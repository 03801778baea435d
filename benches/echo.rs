//! Microphone processing benchmarks (echo cancellation, noise suppression,
//! gain): `cargo bench --bench echo -- [erle|doubletalk|noise|cpu|latency]...`
//! (all by default). Every run is the driver's own order of work, in
//! virtual time: 10 ms device ticks, what the output played fed as the
//! far-end reference before the capture; the microphone is a simulated
//! room (`media::audio::room`: device delay, speaker non-linearity, a
//! reverberation tail, a path change mid-call).
//!
//! - erle: echo return loss enhancement (sent energy with the canceller
//!   off over with it on) per 0.5 s window with far-end speech, for echo
//!   paths of 40-200 ms delay and 50-300 ms tails; the figure is the ERLE
//!   from 2 s on after the far end starts, and again after the path
//!   changes at 12 s.
//! - doubletalk: both talk at once; PESQ-WB of the near-end speech sent
//!   (everything on) against the near-end speech alone.
//! - noise: near-end speech with white and babble-like noise at 5, 10 and
//!   20 dB SNR; PESQ-WB with noise suppression and gain on and off.
//! - cpu: time per 10 ms frame with everything on, and the share of one
//!   core.
//! - latency: the delay processing adds to the sent audio (cross-
//!   correlation of a near-end signal in and out).
//!
//! PESQ via scripts/pesq_mos.py (`pip install pesq numpy scipy`).

use natter::media::audio::room::{EchoPath, Room};
use natter::media::audio::{self, TICK_SAMPLES};
use natter::media::processing::{Processor, Stages};
use std::path::Path;

const SPEECH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/speech.wav");
const SR: usize = 48_000;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("echo bench: skipped (run with `cargo bench --bench echo`)");
        return;
    }
    let what: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let on = |w: &str| what.is_empty() || what.iter().any(|a| a == w);
    let speech = audio::read_wav(Path::new(SPEECH)).unwrap();
    if on("erle") {
        erle(&speech);
    }
    if on("doubletalk") {
        doubletalk(&speech);
    }
    if on("noise") {
        noise(&speech);
    }
    if on("cpu") {
        cpu(&speech);
    }
    if on("latency") {
        latency(&speech);
    }
}

const ALL: Stages = Stages {
    echo_cancellation: true,
    noise_suppression: true,
    auto_gain: true,
};
const AEC: Stages = Stages {
    echo_cancellation: true,
    noise_suppression: false,
    auto_gain: false,
};

/// The sent stream: the room hears `far` (played) and `near`; the path
/// becomes `change.1` at sample `change.0`.
fn run(
    far: &[i16],
    near: &[i16],
    path: EchoPath,
    change: Option<(usize, EchoPath)>,
    stages: Stages,
) -> Vec<i16> {
    let mut room = Room::new(path);
    let mut p = Processor::new(stages);
    let mut mic = [0i16; TICK_SAMPLES];
    let mut out = Vec::with_capacity(far.len());
    for (i, (played, n)) in far
        .chunks_exact(TICK_SAMPLES)
        .zip(near.chunks_exact(TICK_SAMPLES))
        .enumerate()
    {
        if let Some((at, new)) = change
            && i * TICK_SAMPLES == at
        {
            room.set_path(new);
        }
        room.mic(played, n, &mut mic);
        if stages.any() {
            p.push_reference(played);
            out.extend_from_slice(p.process_capture(&mic));
        } else {
            out.extend_from_slice(&mic);
        }
    }
    out
}

fn energy(x: &[i16]) -> f64 {
    x.iter().map(|&v| (v as f64).powi(2)).sum()
}

fn db(num: f64, den: f64) -> f64 {
    10.0 * (num / den.max(1.0)).log10()
}

/// ERLE over [from, to) samples, in windows where the far end speaks.
fn erle_between(off: &[i16], on: &[i16], far: &[i16], from: usize, to: usize) -> f64 {
    let w = SR / 2;
    let (mut e_off, mut e_on) = (0.0, 0.0);
    let far_rms = (energy(far) / far.len() as f64).sqrt();
    let mut i = from;
    while i + w <= to {
        let rms = (energy(&far[i..i + w]) / w as f64).sqrt();
        if rms > 0.3 * far_rms {
            e_off += energy(&off[i..i + w]);
            e_on += energy(&on[i..i + w]);
        }
        i += w;
    }
    db(e_off, e_on)
}

fn erle(speech: &[i16]) {
    // 24 s of far-end speech (the sample twice, the second time from 2 s).
    let mut far: Vec<i16> = speech[..12 * SR].to_vec();
    far.extend_from_slice(&speech[2 * SR..14 * SR]);
    let near = vec![0i16; far.len()];
    let change_at = 12 * SR;
    println!(
        "erle: far-end speech, empty room, path change at 12 s; ERLE (dB) over [2 s, 12 s) and over [14 s, 24 s), i.e. from 2 s after the start and after the change; first 0.5 s window of [0, 2 s) too"
    );
    for (delay, tail) in [(40, 50), (100, 150), (200, 300), (120, 300)] {
        let a = EchoPath {
            delay_ms: delay,
            tail_ms: tail,
            gain: 0.5,
            nonlinear: true,
            seed: 1,
        };
        // The laptop moved: another delay, a louder and longer path.
        let b = EchoPath {
            delay_ms: (delay + 60).min(240),
            tail_ms: (tail + 100).min(300),
            gain: 0.7,
            nonlinear: true,
            seed: 2,
        };
        let off = run(&far, &near, a, Some((change_at, b)), Stages::default());
        let on = run(&far, &near, a, Some((change_at, b)), AEC);
        let start = erle_between(&off, &on, &far, 2 * SR, 12 * SR);
        let after = erle_between(&off, &on, &far, 14 * SR, 24 * SR);
        let first_2s = erle_between(&off, &on, &far, 0, 2 * SR);
        let just_after = erle_between(&off, &on, &far, 12 * SR, 14 * SR);
        println!(
            "  delay {delay:>3} ms, tail {tail:>3} ms -> {:>3} ms/{:>3} ms: ERLE {start:5.1} dB from 2 s, {after:5.1} dB from 2 s after the change ({first_2s:5.1} dB in the first 2 s, {just_after:5.1} dB in the 2 s after the change)",
            b.delay_ms, b.tail_ms
        );
    }
}

fn pesq(reference: &[i16], degraded: &[i16]) -> Option<f64> {
    let dir = tempfile::tempdir().unwrap();
    let (r, d) = (dir.path().join("ref.wav"), dir.path().join("deg.wav"));
    audio::write_wav(&r, reference).unwrap();
    audio::write_wav(&d, degraded).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pesq_mos.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&r)
        .arg(&d)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn show(x: Option<f64>) -> String {
    x.map_or("n/a (pip install pesq numpy scipy)".into(), |m| {
        format!("{m:.2}")
    })
}

fn doubletalk(speech: &[i16]) {
    // The far end talks all along (the sample's first 11 s, twice); the
    // near end (its last 11 s, another voice's turn) from 0 to 11 s,
    // 6 dB below the echo's source.
    let n = 11 * SR;
    let mut far = speech[..n].to_vec();
    far.extend_from_slice(&speech[..n]);
    let near_voice: Vec<i16> = speech[speech.len() - n..].to_vec();
    let mut near = near_voice.clone();
    near.extend(std::iter::repeat_n(0, n));
    let path = EchoPath {
        delay_ms: 100,
        tail_ms: 200,
        gain: 0.5,
        nonlinear: true,
        seed: 3,
    };
    // The canceller has converged on the far end first: the near end
    // speaks over the second half. Reference: the near end alone.
    let far2 = far.clone();
    let mut near2 = vec![0i16; n];
    near2.extend_from_slice(&near_voice);
    println!(
        "doubletalk: PESQ-WB of the near-end speech sent while the far end talks (echo path 100 ms, 200 ms tail, ERL 6 dB)"
    );
    // The same with no acoustic echo at all (the far end plays, the
    // microphone hears only the near end): what the canceller itself
    // does to near-end speech while the far end talks.
    let silent = EchoPath { gain: 0.0, ..path };
    for (label, f, nr, range, p) in [
        ("near end from the start", &far, &near, 0..n, path),
        (
            "near end after 11 s of far end",
            &far2,
            &near2,
            n..2 * n,
            path,
        ),
        ("no echo, far end talking", &far2, &near2, n..2 * n, silent),
    ] {
        // (The near end is the sample's last 11 s, the far end its first
        // 11 s: other words, never a delayed copy.)
        let off = run(f, nr, p, None, Stages::default());
        let aec = run(f, nr, p, None, AEC);
        let all = run(f, nr, p, None, ALL);
        let r = &nr[range.clone()];
        println!(
            "  {label}: unprocessed {}, AEC {}, AEC+NS+AGC {}",
            show(pesq(r, &off[range.clone()])),
            show(pesq(r, &aec[range.clone()])),
            show(pesq(r, &all[range.clone()]))
        );
    }
    // What the goal asks of the canceller: the same room with its echo
    // attenuated by a perfect canceller (no near-end distortion at all).
    for cut in [10.0, 20.0, 30.0, 40.0] {
        let p = EchoPath {
            gain: path.gain / 10f32.powf(cut / 20.0),
            ..path
        };
        let off = run(&far2, &near2, p, None, Stages::default());
        println!(
            "  echo {cut:.0} dB weaker, unprocessed: {}",
            show(pesq(&near2[n..], &off[n..]))
        );
    }
}

/// Deterministic white noise (SplitMix64), unit RMS.
fn white(len: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 12f64.sqrt()
        })
        .collect()
}

/// Babble-like noise: six talkers (the sample at different offsets,
/// some reversed), summed, unit RMS. No talker starts at offset 0: that
/// one would be the near-end speech itself, in phase.
fn babble(speech: &[i16], len: usize) -> Vec<f64> {
    let mut out = vec![0.0; len];
    for k in 0..6 {
        let off = ((k + 1) * 3_700_001) % speech.len();
        for (i, o) in out.iter_mut().enumerate() {
            let j = (off + i) % speech.len();
            let v = if k % 2 == 1 {
                speech[speech.len() - 1 - j]
            } else {
                speech[j]
            };
            *o += v as f64;
        }
    }
    let rms = (out.iter().map(|v| v * v).sum::<f64>() / len as f64).sqrt();
    out.iter().map(|v| v / rms).collect()
}

fn noise(speech: &[i16]) {
    let clean: Vec<i16> = speech[..20 * SR].to_vec();
    let rms = (energy(&clean) / clean.len() as f64).sqrt();
    let silence = vec![0i16; clean.len()];
    println!("noise: PESQ-WB of near-end speech in noise, unprocessed -> NS+AGC (-> all three)");
    for (kind, n) in [
        ("white", white(clean.len(), 9)),
        ("babble", babble(speech, clean.len())),
    ] {
        for snr in [5.0, 10.0, 20.0] {
            let k = rms / 10f64.powf(snr / 20.0);
            let noisy: Vec<i16> = clean
                .iter()
                .zip(&n)
                .map(|(&s, &v)| (s as f64 + k * v).clamp(-32768.0, 32767.0) as i16)
                .collect();
            let stages = Stages {
                echo_cancellation: false,
                ..ALL
            };
            let ns = run(&silence, &noisy, EchoPath::default(), None, stages);
            let all = run(&silence, &noisy, EchoPath::default(), None, ALL);
            let before = pesq(&clean, &noisy);
            let after = pesq(&clean, &ns);
            let gain = before.zip(after).map(|(b, a)| a - b);
            println!(
                "  {kind:>6} {snr:>2} dB SNR: {} -> {} (gain {}), all three {}",
                show(before),
                show(after),
                show(gain),
                show(pesq(&clean, &all))
            );
        }
    }
}

fn cpu(speech: &[i16]) {
    let far: Vec<i16> = speech[..20 * SR].to_vec();
    let near: Vec<i16> = speech[speech.len() - 20 * SR..].to_vec();
    let mut room = Room::new(EchoPath::default());
    let mut p = Processor::new(ALL);
    let mut mic = [0i16; TICK_SAMPLES];
    let frames = far.len() / TICK_SAMPLES;
    let mut worst = 0f64;
    let mut total = 0f64;
    for (played, n) in far
        .chunks_exact(TICK_SAMPLES)
        .zip(near.chunks_exact(TICK_SAMPLES))
    {
        room.mic(played, n, &mut mic);
        let t = thread_cpu();
        p.push_reference(played);
        std::hint::black_box(p.process_capture(&mic));
        let d = thread_cpu() - t;
        total += d;
        worst = worst.max(d);
    }
    let per = total / frames as f64;
    println!(
        "cpu: everything on, {frames} frames of 10 ms, thread CPU time: {:.0} us per frame on average ({:.2}% of one core), worst {:.0} us",
        per * 1e6,
        per / 0.010 * 100.0,
        worst * 1e6
    );
}

/// CPU time of this thread, s: what the processing costs, without the
/// time other processes (a loaded machine) take from it.
fn thread_cpu() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn latency(speech: &[i16]) {
    let near: Vec<i16> = speech[..10 * SR].to_vec();
    let silence = vec![0i16; near.len()];
    println!(
        "latency: delay the processing adds to the sent audio (cross-correlation, near end alone)"
    );
    for (label, stages) in [("AEC", AEC), ("all three", ALL)] {
        let out = run(&silence, &near, EchoPath::default(), None, stages);
        let seg = &near[2 * SR..8 * SR];
        let mut best = (0usize, f64::MIN);
        for lag in 0..(SR / 20) {
            let c: f64 = seg
                .iter()
                .zip(&out[2 * SR + lag..8 * SR + lag])
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            if c > best.1 {
                best = (lag, c);
            }
        }
        println!(
            "  {label}: {:.2} ms ({} samples), PESQ-WB of the near end alone through it {}",
            best.0 as f64 * 1000.0 / SR as f64,
            best.0,
            show(pesq(&near, &out))
        );
    }
}
