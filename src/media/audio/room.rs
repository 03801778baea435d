//! A simulated room for echo tests and benchmarks: what a microphone hears
//! of a loudspeaker. The far-end audio the output device plays goes
//! through the device delay, a speaker non-linearity and a room impulse
//! response (a direct path and reflections decaying exponentially over
//! the tail), and is added to the near-end audio (speech, noise). The echo
//! path can change mid-call ([`Room::set_path`]), as when a laptop is
//! moved. Deterministic: the impulse response comes from a seed.

use super::SAMPLE_RATE;

/// One echo path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EchoPath {
    /// Output device to microphone delay (buffers, converters), ms.
    pub delay_ms: u32,
    /// Length of the room's reverberation tail (to -60 dB), ms.
    pub tail_ms: u32,
    /// Echo level relative to the far-end audio played (the echo return
    /// loss is its inverse), linear.
    pub gain: f32,
    /// Speaker non-linearity: a soft clip and a second-order term.
    pub nonlinear: bool,
    /// Seed of the reflections.
    pub seed: u64,
}

impl Default for EchoPath {
    fn default() -> Self {
        EchoPath {
            delay_ms: 100,
            tail_ms: 150,
            gain: 0.5,
            nonlinear: true,
            seed: 1,
        }
    }
}

/// History kept: the longest delay plus the longest tail (2^15 samples,
/// 680 ms).
const HISTORY: usize = 1 << 15;
/// One reflection every this many samples on average (0.25 ms).
const REFLECTION_SPACING: usize = 12;

/// The microphone side of a simulated room; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Room {
    /// (lag in samples, gain) of the impulse response, delay included.
    taps: Vec<(usize, f32)>,
    nonlinear: bool,
    /// What the speaker radiated, a ring of [`HISTORY`] samples.
    history: Vec<f32>,
    pos: usize,
}

/// A deterministic generator (SplitMix64): no RNG crate state in tests.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn uniform(state: &mut u64) -> f32 {
    (next(state) >> 40) as f32 / (1u64 << 24) as f32
}

impl Room {
    pub fn new(path: EchoPath) -> Self {
        let mut r = Room {
            taps: Vec::new(),
            nonlinear: false,
            history: vec![0.0; HISTORY],
            pos: 0,
        };
        r.set_path(path);
        r
    }

    /// Change the echo path (the sound already in the room stays).
    pub fn set_path(&mut self, path: EchoPath) {
        let sr = SAMPLE_RATE as f32;
        let delay = (path.delay_ms as usize * SAMPLE_RATE as usize / 1000).min(HISTORY / 2);
        let tail =
            (path.tail_ms as usize * SAMPLE_RATE as usize / 1000).clamp(1, HISTORY - delay - 1);
        let mut seed = path.seed;
        // Amplitude decays by 60 dB over the tail.
        let decay = (1e-3f32).ln() / (path.tail_ms.max(1) as f32 / 1000.0);
        let mut taps = vec![(delay, 1.0f32)];
        let mut lag = 1 + (uniform(&mut seed) * REFLECTION_SPACING as f32) as usize;
        while lag < tail {
            let t = lag as f32 / sr;
            let sign = if next(&mut seed) & 1 == 0 { 1.0 } else { -1.0 };
            let a = sign * (0.3 + 0.7 * uniform(&mut seed)) * 0.6 * (decay * t).exp();
            taps.push((delay + lag, a));
            lag += 1 + (uniform(&mut seed) * 2.0 * REFLECTION_SPACING as f32) as usize;
        }
        // Scale so the path's energy gain is `gain` squared.
        let energy: f32 = taps.iter().map(|(_, a)| a * a).sum();
        let k = path.gain / energy.sqrt();
        for t in &mut taps {
            t.1 *= k;
        }
        self.taps = taps;
        self.nonlinear = path.nonlinear;
    }

    /// The echo of one played sample (full scale 1.0), as the microphone
    /// hears it.
    pub fn echo(&mut self, played: f32) -> f32 {
        let x = if self.nonlinear {
            (1.5 * played).tanh() / 1.5 + 0.05 * played * played
        } else {
            played
        };
        self.pos = (self.pos + 1) & (HISTORY - 1);
        self.history[self.pos] = x;
        let mut y = 0.0;
        for &(lag, a) in &self.taps {
            y += a * self.history[(self.pos + HISTORY - lag) & (HISTORY - 1)];
        }
        y
    }

    /// What the microphone captures while the output plays `played`: its
    /// echo plus `near` (both 48 kHz mono, the same length as `out`).
    pub fn mic(&mut self, played: &[i16], near: &[i16], out: &mut [i16]) {
        for ((o, &p), &n) in out.iter_mut().zip(played).zip(near) {
            let y = self.echo(super::to_f32(p)) + super::to_f32(n);
            *o = super::to_i16(y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_impulse_comes_back_after_the_delay_and_decays() {
        let mut r = Room::new(EchoPath {
            delay_ms: 50,
            tail_ms: 100,
            gain: 0.5,
            nonlinear: false,
            seed: 7,
        });
        let mut y = vec![r.echo(1.0)];
        y.extend((0..9_600).map(|_| r.echo(0.0)));
        let first = y.iter().position(|v| v.abs() > 1e-6).unwrap();
        assert_eq!(first, 2_400, "50 ms at 48 kHz");
        let e = |a: usize, b: usize| y[a..b].iter().map(|v| v * v).sum::<f32>();
        let total = e(0, y.len());
        assert!((total - 0.25).abs() < 1e-3, "energy gain {total}");
        // The tail decays: its last quarter is far below its first.
        assert!(e(7_200, 7_200 + 1_200) < e(2_401, 2_401 + 1_200) / 100.0);
        assert!(e(2_400 + 4_900, y.len()) == 0.0, "nothing past the tail");
    }
}
