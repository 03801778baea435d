//! Streaming band-limited resampling (windowed-sinc, `rubato`) and
//! sample conversions, for devices that cannot run at 48 kHz and WAV files
//! at other rates. Runs inside audio callbacks: every buffer is allocated
//! when the resampler is made, none while it runs.
//!
//! Both directions process fixed input chunks of [`CHUNK`] samples:
//! [`Resampler`] is fed one input sample at a time (capture callbacks,
//! files) and emits what each full chunk yields; [`PullResampler`] is
//! asked for one output sample at a time (playback callbacks) and pulls a
//! chunk of input when it runs out.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Resampler as _, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

/// Input samples per processing step: about 1.3 ms at 48 kHz.
pub const CHUNK: usize = 64;

/// The windowed-sinc converter from `from` Hz to `to` Hz, and its output
/// buffer (None when the rates are equal or the converter cannot be made;
/// the latter cannot happen for rates of 1 Hz and up).
struct Core {
    inner: Async<f32>,
    /// Input chunk being filled.
    input: Vec<f32>,
    /// Output of the last chunk.
    output: Vec<f32>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("ratio", &self.inner.resample_ratio())
            .finish_non_exhaustive()
    }
}

impl Core {
    fn new(from: u32, to: u32) -> Option<Core> {
        if from == to || from == 0 || to == 0 {
            return None;
        }
        // 256 taps with a Blackman-Harris window: flat to about 0.9 of
        // the lower Nyquist frequency, aliasing well under the codec's
        // noise, at a cost of a percent or two of a core.
        let params = SincInterpolationParameters {
            sinc_len: 256,
            f_cutoff: None,
            oversampling_factor: 256,
            interpolation: SincInterpolationType::Linear,
            window: WindowFunction::BlackmanHarris2,
        };
        let inner = Async::<f32>::new_sinc(
            to as f64 / from as f64,
            1.0,
            &params,
            CHUNK,
            1,
            FixedAsync::Input,
        )
        .ok()?;
        let output = vec![0.0; inner.output_frames_max()];
        Some(Core {
            inner,
            input: vec![0.0; CHUNK],
            output,
        })
    }

    /// Convert the full input chunk; returns the output samples made.
    fn process(&mut self) -> usize {
        let max = self.output.len();
        let (Ok(i), Ok(mut o)) = (
            InterleavedSlice::new(&self.input[..], 1, CHUNK),
            InterleavedSlice::new_mut(&mut self.output[..], 1, max),
        ) else {
            return 0;
        };
        match self.inner.process_into_buffer(&i, &mut o, None) {
            Ok((_, n)) => n.min(max),
            Err(_) => 0,
        }
    }

    /// Output samples of delay (the filter's half length).
    fn delay(&self) -> usize {
        self.inner.output_delay()
    }
}

/// Converts a stream at `from` Hz to `to` Hz one input sample at a time.
#[derive(Debug)]
pub struct Resampler {
    core: Option<Core>,
    /// Samples in the current input chunk.
    filled: usize,
    /// Output samples still to drop: the filter's start-up delay.
    skip: usize,
    /// Input samples pushed and output samples emitted, to end a file at
    /// its exact converted length ([`Resampler::flush`]).
    pushed: u64,
    emitted: u64,
    ratio: f64,
}

impl Resampler {
    pub fn new(from: u32, to: u32) -> Self {
        let core = Core::new(from, to);
        Resampler {
            skip: core.as_ref().map_or(0, Core::delay),
            core,
            filled: 0,
            pushed: 0,
            emitted: 0,
            ratio: to.max(1) as f64 / from.max(1) as f64,
        }
    }

    /// Whether this resampler changes anything.
    pub fn is_identity(&self) -> bool {
        self.core.is_none()
    }

    /// Feed one input sample; `emit` receives the output samples it
    /// completes (none, or a chunk's worth).
    #[inline]
    pub fn push(&mut self, x: f32, mut emit: impl FnMut(f32)) {
        self.pushed += 1;
        let Some(core) = self.core.as_mut() else {
            self.emitted += 1;
            emit(x);
            return;
        };
        core.input[self.filled] = x;
        self.filled += 1;
        if self.filled == CHUNK {
            self.filled = 0;
            let n = core.process();
            for &y in &core.output[..n] {
                if self.skip > 0 {
                    self.skip -= 1;
                } else {
                    self.emitted += 1;
                    emit(y);
                }
            }
        }
    }

    /// End of the input (a file): emit what is still inside the filter,
    /// up to the input's converted length.
    pub fn flush(&mut self, mut emit: impl FnMut(f32)) {
        let total = (self.pushed as f64 * self.ratio).round() as u64;
        let pushed = self.pushed;
        // Zeros push the tail out; bounded by the filter's length.
        let mut budget = 4 * (CHUNK + self.core.as_ref().map_or(0, Core::delay) + 8);
        let mut n = self.emitted;
        while n < total && budget > 0 {
            self.push(0.0, |y| {
                if n < total {
                    emit(y);
                    n += 1;
                }
            });
            budget -= 1;
        }
        self.pushed = pushed;
    }
}

/// The other direction: produces output samples on demand, pulling input
/// samples as it needs them (for playback callbacks).
#[derive(Debug)]
pub struct PullResampler {
    core: Option<Core>,
    /// Next unread output sample, and how many the last chunk made.
    pos: usize,
    len: usize,
}

impl PullResampler {
    pub fn new(from: u32, to: u32) -> Self {
        PullResampler {
            core: Core::new(from, to),
            pos: 0,
            len: 0,
        }
    }

    /// One output sample; `next` yields input samples.
    #[inline]
    pub fn pull(&mut self, mut next: impl FnMut() -> f32) -> f32 {
        let Some(core) = self.core.as_mut() else {
            return next();
        };
        // A chunk always yields samples at sane ratios; the bound only
        // guards against a converter that yields none.
        let mut tries = 0;
        while self.pos >= self.len && tries < 4 {
            for s in core.input.iter_mut() {
                *s = next();
            }
            self.len = core.process();
            self.pos = 0;
            tries += 1;
        }
        if self.pos >= self.len {
            return 0.0;
        }
        let y = core.output[self.pos];
        self.pos += 1;
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
        r.flush(|y| out.push(y));
        out
    }

    fn tone(hz: f32, rate: u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| 0.5 * (std::f32::consts::TAU * hz * i as f32 / rate as f32).sin())
            .collect()
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
    }

    #[test]
    fn the_band_passes_and_what_is_above_it_does_not_alias() {
        // 48 -> 44.1 kHz: 1 kHz keeps its level; 23 kHz (above the new
        // Nyquist frequency) is removed, not folded down to 21.1 kHz as
        // linear interpolation folds it.
        let out = run(48_000, 44_100, &tone(1_000.0, 48_000, 48_000));
        let level = rms(&out[4_000..40_000]) / 0.5f32 * 2f32.sqrt();
        assert!((level - 1.0).abs() < 0.01, "1 kHz at {level}");
        let out = run(48_000, 44_100, &tone(23_000.0, 48_000, 48_000));
        let alias = rms(&out[4_000..40_000]) / (0.5 / 2f32.sqrt());
        assert!(alias < 0.01, "23 kHz comes out at {alias} (-40 dB is 0.01)");
        // 16 -> 48 kHz (speech files): 6.5 kHz passes; no image at
        // 9.5 kHz.
        let out = run(16_000, 48_000, &tone(6_500.0, 16_000, 16_000));
        let level = rms(&out[4_000..44_000]) / (0.5 / 2f32.sqrt());
        assert!((level - 1.0).abs() < 0.05, "6.5 kHz at {level}");
        let x: Vec<f32> = out[4_000..44_000].to_vec();
        let w = std::f32::consts::TAU * 9_500.0 / 48_000.0;
        let (mut re, mut im) = (0.0f32, 0.0f32);
        for (i, v) in x.iter().enumerate() {
            re += v * (w * i as f32).cos();
            im += v * (w * i as f32).sin();
        }
        let image = (re * re + im * im).sqrt() * 2.0 / x.len() as f32 / 0.5;
        assert!(image < 0.01, "image at 9.5 kHz: {image}");
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
        // Whole chunks are pulled, plus the filter's delay.
        assert!((taken as i64 - 48_000).abs() <= 2 * CHUNK as i64, "{taken}");
    }

    #[test]
    fn conversions_saturate() {
        assert_eq!(to_i16(2.0), i16::MAX);
        assert_eq!(to_i16(-2.0), i16::MIN);
        assert_eq!(to_i16(to_f32(1234)), 1234);
    }
}
