//! Streaming linear-interpolation resampler and channel mixing, for
//! devices that cannot run at 48 kHz mono. Runs inside audio callbacks:
//! no allocation, constant state.

/// Converts a stream at `from` Hz to `to` Hz one input sample at a time.
#[derive(Debug, Clone)]
pub struct Resampler {
    /// Input samples per output sample.
    step: f64,
    /// Position of the next output between `prev` (0) and the next input (1).
    pos: f64,
    prev: f32,
}

impl Resampler {
    pub fn new(from: u32, to: u32) -> Self {
        Resampler {
            step: from.max(1) as f64 / to.max(1) as f64,
            pos: 0.0,
            prev: 0.0,
        }
    }

    /// Whether this resampler changes anything.
    pub fn is_identity(&self) -> bool {
        self.step == 1.0
    }

    /// Feed one input sample; `emit` receives the output samples it
    /// completes (none, one or several).
    #[inline]
    pub fn push(&mut self, x: f32, mut emit: impl FnMut(f32)) {
        if self.is_identity() {
            emit(x);
            return;
        }
        while self.pos < 1.0 {
            emit(self.prev + (x - self.prev) * self.pos as f32);
            self.pos += self.step;
        }
        self.pos -= 1.0;
        self.prev = x;
    }
}

/// The other direction: produces output samples on demand, pulling
/// input samples as it needs them (for playback callbacks).
#[derive(Debug, Clone)]
pub struct PullResampler {
    step: f64,
    /// Position of the next output between `prev` (0) and `cur` (1).
    pos: f64,
    prev: f32,
    cur: f32,
}

impl PullResampler {
    pub fn new(from: u32, to: u32) -> Self {
        PullResampler {
            step: from.max(1) as f64 / to.max(1) as f64,
            pos: 1.0,
            prev: 0.0,
            cur: 0.0,
        }
    }

    /// One output sample; `next` yields input samples.
    #[inline]
    pub fn pull(&mut self, mut next: impl FnMut() -> f32) -> f32 {
        if self.step == 1.0 {
            return next();
        }
        while self.pos >= 1.0 {
            self.prev = self.cur;
            self.cur = next();
            self.pos -= 1.0;
        }
        let y = self.prev + (self.cur - self.prev) * self.pos as f32;
        self.pos += self.step;
        y
    }
}

/// f32 in [-1, 1] to i16, saturating.
#[inline]
pub fn to_i16(x: f32) -> i16 {
    (x * 32767.0).round().clamp(-32768.0, 32767.0) as i16
}

#[inline]
pub fn to_f32(x: i16) -> f32 {
    x as f32 / 32768.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(from: u32, to: u32, input: &[f32]) -> Vec<f32> {
        let mut r = Resampler::new(from, to);
        let mut out = Vec::new();
        for &x in input {
            r.push(x, |y| out.push(y));
        }
        out
    }

    #[test]
    fn rates_convert_with_the_right_count() {
        let input = vec![0.5f32; 44_100];
        let out = run(44_100, 48_000, &input);
        assert!((out.len() as i64 - 48_000).abs() <= 1, "{}", out.len());
        let out = run(96_000, 48_000, &vec![0.5; 96_000]);
        assert!((out.len() as i64 - 48_000).abs() <= 1, "{}", out.len());
        assert_eq!(run(48_000, 48_000, &[0.1, 0.2]), vec![0.1, 0.2]);
    }

    #[test]
    fn a_sine_keeps_its_frequency() {
        let f = 1000.0;
        let input: Vec<f32> = (0..44_100)
            .map(|i| (2.0 * std::f32::consts::PI * f * i as f32 / 44_100.0).sin())
            .collect();
        let out = run(44_100, 48_000, &input);
        let crossings = out.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
        assert!((crossings as i64 - 1000).abs() <= 2, "{crossings}");
    }

    #[test]
    fn pulling_consumes_at_the_ratio() {
        let mut r = PullResampler::new(48_000, 44_100);
        let mut taken = 0;
        for _ in 0..44_100 {
            r.pull(|| {
                taken += 1;
                0.0
            });
        }
        assert!((taken as i64 - 48_000).abs() <= 2, "{taken}");
    }

    #[test]
    fn conversions_saturate() {
        assert_eq!(to_i16(2.0), i16::MAX);
        assert_eq!(to_i16(-2.0), i16::MIN);
        assert_eq!(to_i16(to_f32(1234)), 1234);
    }
}
