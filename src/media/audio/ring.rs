//! Call progress tones: the ring-back a caller hears while the callee's
//! phone rings, the ringtone of an incoming call, and the conference's
//! join and leave chimes. Generated sample by sample from the position,
//! so any chunking gives the same audio.

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

/// The short tone a conference plays on our output only (never sent to
/// the others) when someone joins or leaves: two notes of
/// `CHIME_NOTE_MS`, rising for a join, falling for a leave, above the
/// voice band's fundamentals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chime {
    Joined,
    Left,
}

/// One note of a chime, ms.
pub const CHIME_NOTE_MS: u64 = 80;
/// Its notes: A6 and D7.
const CHIME_LOW_HZ: f64 = 1_760.0;
const CHIME_HIGH_HZ: f64 = 2_349.3;
/// Peak level of a chime (of full scale): a cue, under the voices.
const CHIME_AMPLITUDE: f64 = 0.15;
/// Each note fades in and out over this long (no clicks), ms.
const CHIME_RAMP_MS: f64 = 8.0;

impl Chime {
    /// The two notes in order, Hz.
    pub fn notes(self) -> [f64; 2] {
        match self {
            Chime::Joined => [CHIME_LOW_HZ, CHIME_HIGH_HZ],
            Chime::Left => [CHIME_HIGH_HZ, CHIME_LOW_HZ],
        }
    }

    /// Samples in the whole chime.
    pub fn len() -> usize {
        (2 * CHIME_NOTE_MS * SAMPLE_RATE as u64 / 1000) as usize
    }

    /// Sample `n` of the chime (0 past its end).
    pub fn sample(self, n: usize) -> i16 {
        let note = (CHIME_NOTE_MS * SAMPLE_RATE as u64 / 1000) as usize;
        if n >= 2 * note {
            return 0;
        }
        let hz = self.notes()[n / note];
        let t = n as f64 / SAMPLE_RATE as f64;
        // Raised-cosine ramps at both ends of each note.
        let in_note = (n % note) as f64 * 1000.0 / SAMPLE_RATE as f64;
        let edge = in_note.min(CHIME_NOTE_MS as f64 - in_note) / CHIME_RAMP_MS;
        let env = if edge >= 1.0 {
            1.0
        } else {
            0.5 - 0.5 * (std::f64::consts::PI * edge).cos()
        };
        to_i16((CHIME_AMPLITUDE * env * (std::f64::consts::TAU * hz * t).sin()) as f32)
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

    #[test]
    fn chimes_rise_for_a_join_and_fall_for_a_leave() {
        let render = |c: Chime| {
            (0..Chime::len() + 100)
                .map(|n| c.sample(n))
                .collect::<Vec<i16>>()
        };
        let (join, leave) = (render(Chime::Joined), render(Chime::Left));
        let half = Chime::len() / 2;
        assert!(power(&join[..half], 1_760.0) > 100.0 * power(&join[..half], 2_349.3));
        assert!(
            power(&join[half..2 * half], 2_349.3) > 100.0 * power(&join[half..2 * half], 1_760.0)
        );
        assert!(power(&leave[..half], 2_349.3) > 100.0 * power(&leave[..half], 1_760.0));
        // Short, soft, and silent at its ends (no click).
        assert_eq!(Chime::len(), ms(160));
        assert!(join[Chime::len()..].iter().all(|s| *s == 0));
        assert!(join[0].unsigned_abs() < 100 && join[half].unsigned_abs() < 600);
        let peak = join.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!(peak > 4_000 && peak < 5_200, "{peak}");
        // Next to nothing at the conference tests' tones.
        for hz in [440.0, 620.0, 830.0, 1_070.0, 1_330.0] {
            assert!(power(&join, hz) < 1e-4 * power(&join, 1_760.0), "{hz}");
        }
    }
}
