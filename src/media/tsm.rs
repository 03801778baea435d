//! Time-scale modification of decoded audio, as WebRTC NetEQ's
//! accelerate and preemptive expand do: the playout delay changes by
//! removing or repeating one pitch period inside the audio with a
//! crossfade (WSOLA: the period is where the signal best matches itself),
//! so neither pitch nor continuity changes. Low-energy audio (pauses) may
//! be shortened or lengthened by more than a period at once, and needs no
//! match.
//!
//! Pure functions over 48 kHz mono samples; the playout side
//! ([`super::session`]) decides when, from the jitter buffer's excess
//! delay and a [`Level`] tracker.

/// Shortest period searched: 2.5 ms (400 Hz).
pub const MIN_PERIOD: usize = 120;
/// Longest period searched: 15 ms (67 Hz).
pub const MAX_PERIOD: usize = 720;
/// Samples a change needs: two of the longest periods.
pub const MIN_INPUT: usize = 2 * MAX_PERIOD;
/// Smallest normalised correlation at which speech is changed by a
/// period (NetEQ accelerates at 0.9).
const MIN_CORRELATION: f32 = 0.9;

/// The best period of `x[..]`: the lag in `min..=max` with the highest
/// normalised correlation between `x[0..lag]` and `x[lag..2lag]`, first
/// every 4th lag on every 4th sample, then refined around the best.
/// Returns (lag, correlation).
fn best_period(x: &[i16], min: usize, max: usize) -> (usize, f32) {
    let max = max.min(x.len() / 2);
    let min = min.max(MIN_PERIOD);
    if max < min {
        return (0, 0.0);
    }
    let corr = |lag: usize, step: usize| -> f32 {
        let (mut xy, mut xx, mut yy) = (0f64, 0f64, 0f64);
        let mut i = 0;
        while i < lag {
            let a = x[i] as f64;
            let b = x[i + lag] as f64;
            xy += a * b;
            xx += a * a;
            yy += b * b;
            i += step;
        }
        if xx <= 0.0 || yy <= 0.0 {
            return 0.0;
        }
        (xy / (xx * yy).sqrt()) as f32
    };
    let mut best = (min, f32::MIN);
    let mut lag = min;
    while lag <= max {
        let c = corr(lag, 4);
        if c > best.1 {
            best = (lag, c);
        }
        lag += 4;
    }
    let (lo, hi) = (best.0.saturating_sub(4).max(min), (best.0 + 4).min(max));
    let mut fine = (best.0, f32::MIN);
    for lag in lo..=hi {
        let c = corr(lag, 1);
        if c > fine.1 {
            fine = (lag, c);
        }
    }
    fine
}

/// Crossfade `a` (fading out) into `b` (fading in), into `out`.
fn crossfade(a: &[i16], b: &[i16], out: &mut Vec<i16>) {
    let n = a.len().min(b.len());
    for i in 0..n {
        let w = (i as f32 + 0.5) / n as f32;
        let y = a[i] as f32 * (1.0 - w) + b[i] as f32 * w;
        out.push(y.round().clamp(-32768.0, 32767.0) as i16);
    }
}

/// The stretch to remove or repeat in `x`, if a change may happen: in
/// low-energy audio about `want` samples (from half of it), whatever the
/// match; in speech one pitch period, where it matches well.
fn period_for(x: &[i16], quiet: bool, want: usize) -> Option<usize> {
    let (min, max) = if quiet {
        (want / 2, want.max(MIN_PERIOD))
    } else {
        (MIN_PERIOD, MAX_PERIOD)
    };
    let (lag, c) = best_period(x, min, max);
    if lag == 0 {
        return None;
    }
    if quiet || c >= MIN_CORRELATION {
        Some(lag)
    } else {
        None
    }
}

/// Shorten `x` by about `want` samples (at least one period, at most
/// `want` rounded up to whole periods in quiet audio, one period in
/// speech), appending the result to `out`. Returns the samples removed (0
/// when no good match: `x` is copied unchanged).
pub fn accelerate(x: &[i16], want: usize, quiet: bool, out: &mut Vec<i16>) -> usize {
    if x.len() < 2 * MIN_PERIOD || want == 0 {
        out.extend_from_slice(x);
        return 0;
    }
    // In quiet audio the removed stretch may be longer than a pitch
    // period (one crossfade over it), bounded by half the input.
    let Some(lag) = period_for(x, quiet, want) else {
        out.extend_from_slice(x);
        return 0;
    };
    crossfade(&x[..lag], &x[lag..2 * lag], out);
    out.extend_from_slice(&x[2 * lag..]);
    lag
}

/// Lengthen `x` by one period (about `want` in quiet audio), appending
/// the result to `out`. Returns the samples added (0 when no good match).
pub fn expand(x: &[i16], want: usize, quiet: bool, out: &mut Vec<i16>) -> usize {
    if x.len() < 2 * MIN_PERIOD || want == 0 {
        out.extend_from_slice(x);
        return 0;
    }
    let Some(lag) = period_for(x, quiet, want) else {
        out.extend_from_slice(x);
        return 0;
    };
    // x[..2lag] becomes x[..lag], fade(x[lag..2lag] -> x[..lag]),
    // x[lag..2lag]: one period more, continuous at both joins.
    out.extend_from_slice(&x[..lag]);
    crossfade(&x[lag..2 * lag], &x[..lag], out);
    out.extend_from_slice(&x[lag..]);
    lag
}

/// Tracks the level of recent speech, to tell pauses (where the delay
/// may change freely) from speech.
#[derive(Debug, Clone)]
pub struct Level {
    /// Slowly decaying peak of frame RMS: the speech level.
    speech: f32,
}

impl Default for Level {
    fn default() -> Self {
        Level { speech: 1000.0 }
    }
}

/// Below this RMS a frame is always quiet (about -56 dBFS).
const QUIET_FLOOR: f32 = 50.0;

impl Level {
    /// RMS of `x`.
    pub fn rms(x: &[i16]) -> f32 {
        if x.is_empty() {
            return 0.0;
        }
        let e: f64 = x.iter().map(|&s| (s as f64) * (s as f64)).sum();
        (e / x.len() as f64).sqrt() as f32
    }

    /// Update with a frame; whether it is quiet (20 dB under the speech
    /// level, or near silence).
    pub fn observe(&mut self, x: &[i16]) -> bool {
        let r = Self::rms(x);
        // Decays to half in about 3 s of 20 ms frames.
        self.speech = (self.speech * 0.995).max(r).max(300.0);
        r < QUIET_FLOOR.max(self.speech * 0.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| (amp * (std::f64::consts::TAU * hz * i as f64 / 48_000.0).sin()) as i16)
            .collect()
    }

    fn max_step(x: &[i16]) -> i32 {
        x.windows(2)
            .map(|w| (w[1] as i32 - w[0] as i32).abs())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn a_tone_loses_and_gains_whole_periods_without_a_step() {
        for hz in [100.0, 220.0, 440.0, 1000.0] {
            let x = tone(hz, 1920, 10_000.0);
            let own = max_step(&x);
            let mut out = Vec::new();
            let removed = accelerate(&x, 480, false, &mut out);
            assert!(removed >= MIN_PERIOD, "{hz} Hz: removed {removed}");
            assert_eq!(out.len(), x.len() - removed);
            assert!(max_step(&out) <= own + own / 20, "{hz} Hz accelerate");
            let mut out = Vec::new();
            let added = expand(&x, 480, false, &mut out);
            assert!(added >= MIN_PERIOD, "{hz} Hz: added {added}");
            assert_eq!(out.len(), x.len() + added);
            assert!(max_step(&out) <= own + own / 20, "{hz} Hz expand");
            // A whole number of periods, near enough: the tone goes on.
            let period = 48_000.0 / hz;
            let k = (removed as f64 / period).round();
            assert!((removed as f64 - k * period).abs() < 2.0, "{hz}: {removed}");
        }
    }

    #[test]
    fn noise_like_speech_is_left_alone_unless_quiet() {
        let mut seed = 1u32;
        let x: Vec<i16> = (0..1920)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 16) as i16
            })
            .collect();
        let mut out = Vec::new();
        assert_eq!(accelerate(&x, 480, false, &mut out), 0);
        assert_eq!(out, x);
        let mut out = Vec::new();
        assert!(accelerate(&x, 480, true, &mut out) >= 240);
    }

    #[test]
    fn pauses_are_quiet_speech_is_not() {
        let mut l = Level::default();
        assert!(!l.observe(&tone(200.0, 960, 8_000.0)));
        assert!(l.observe(&tone(200.0, 960, 300.0)));
        assert!(l.observe(&[0; 960]));
    }
}
