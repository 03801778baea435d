//! Call progress tones: the ring-back a caller hears while the callee's
//! phone rings, and the ringtone of an incoming call. Generated sample by
//! sample from the position in the cadence, so any chunking gives the same
//! audio.

use super::{SAMPLE_RATE, to_i16};

/// Which tone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingKind {
    /// ITU-T E.180 ring-back: 425 Hz, 1 s on, 4 s off.
    Back,
    /// Incoming call: 400 + 450 Hz, 0.4 s on, 0.2 s off, 0.4 s on, 2 s off
    /// (the British double ring, which no caller hears as ring-back).
    Incoming,
}

impl RingKind {
    /// (frequencies, on/off steps in ms starting with "on").
    fn pattern(self) -> (&'static [f32], &'static [u32]) {
        match self {
            RingKind::Back => (&[425.0], &[1_000, 4_000]),
            RingKind::Incoming => (&[400.0, 450.0], &[400, 200, 400, 2_000]),
        }
    }

    /// Whether the tone sounds at `ms` into the cadence.
    pub fn sounding_at(self, ms: u64) -> bool {
        let (_, steps) = self.pattern();
        let period: u64 = steps.iter().map(|s| *s as u64).sum();
        let mut t = ms % period;
        for (i, s) in steps.iter().enumerate() {
            if t < *s as u64 {
                return i % 2 == 0;
            }
            t -= *s as u64;
        }
        false
    }

    /// The frequencies it plays.
    pub fn frequencies(self) -> &'static [f32] {
        self.pattern().0
    }
}

/// Peak level of the tones (of full scale): audible, below speech.
const AMPLITUDE: f32 = 0.2;

/// A cadence generator at 48 kHz.
#[derive(Debug, Clone)]
pub struct Cadence {
    kind: RingKind,
    /// Samples produced so far.
    pos: u64,
}

impl Cadence {
    pub fn new(kind: RingKind) -> Self {
        Cadence { kind, pos: 0 }
    }

    /// Samples produced so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn next_sample(&mut self) -> i16 {
        let n = self.pos;
        self.pos += 1;
        let ms = n * 1000 / SAMPLE_RATE as u64;
        if !self.kind.sounding_at(ms) {
            return 0;
        }
        let t = n as f64 / SAMPLE_RATE as f64;
        let freqs = self.kind.frequencies();
        let y: f64 = freqs
            .iter()
            .map(|f| (std::f64::consts::TAU * *f as f64 * t).sin())
            .sum::<f64>()
            / freqs.len() as f64;
        to_i16(y as f32 * AMPLITUDE)
    }

    pub fn fill(&mut self, out: &mut [i16]) {
        for s in out {
            *s = self.next_sample();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Energy of `hz` in `x` (Goertzel), normalised by length.
    fn power(x: &[i16], hz: f32) -> f64 {
        let w = std::f64::consts::TAU * hz as f64 / SAMPLE_RATE as f64;
        let c = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &v in x {
            let s = v as f64 + c * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        (s1 * s1 + s2 * s2 - c * s1 * s2) / (x.len() as f64).powi(2)
    }

    fn ms(n: u64) -> usize {
        (n * SAMPLE_RATE as u64 / 1000) as usize
    }

    #[test]
    fn ring_back_is_425_hz_one_second_in_five() {
        let mut c = Cadence::new(RingKind::Back);
        let mut x = vec![0i16; ms(10_000)];
        c.fill(&mut x);
        let on = &x[ms(100)..ms(900)];
        assert!(power(on, 425.0) > 100.0 * power(on, 600.0));
        assert!(x[ms(1_010)..ms(4_990)].iter().all(|s| *s == 0));
        assert!(power(&x[ms(5_100)..ms(5_900)], 425.0) > 1_000.0);
        assert!(x[ms(6_010)..ms(9_990)].iter().all(|s| *s == 0));
    }

    #[test]
    fn incoming_ring_is_a_double_ring_of_two_tones() {
        let mut c = Cadence::new(RingKind::Incoming);
        let mut x = vec![0i16; ms(3_000)];
        c.fill(&mut x);
        for part in [&x[ms(20)..ms(380)], &x[ms(620)..ms(980)]] {
            assert!(power(part, 400.0) > 1_000.0);
            assert!(power(part, 450.0) > 1_000.0);
            assert!(power(part, 425.0) < power(part, 400.0) / 10.0);
        }
        assert!(x[ms(405)..ms(595)].iter().all(|s| *s == 0));
        assert!(x[ms(1_005)..ms(2_995)].iter().all(|s| *s == 0));
    }

    #[test]
    fn chunking_does_not_change_the_audio() {
        let mut a = Cadence::new(RingKind::Incoming);
        let mut whole = vec![0i16; 9_600];
        a.fill(&mut whole);
        let mut b = Cadence::new(RingKind::Incoming);
        let mut parts = Vec::new();
        for n in [1, 479, 3_000, 6_120] {
            let mut p = vec![0i16; n];
            b.fill(&mut p);
            parts.extend(p);
        }
        assert_eq!(whole, parts);
        assert_eq!(b.position(), 9_600);
    }
}
