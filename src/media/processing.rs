//! The microphone path's audio processing: echo cancellation (WebRTC's
//! AEC3), noise suppression and automatic gain (AGC2), from `sonora`, the
//! pure Rust port of WebRTC's audio processing module.
//!
//! The far-end reference is what the output device really played: the
//! audio side copies every sample it hands the device (silence on an
//! underrun included) into a reference ring, and the media driver feeds
//! it here with the captured audio. AEC3 estimates the delay between the
//! two (device buffers, the room) and follows it when it changes. Runs in
//! the media driver, never on the audio thread; both paths are cut into
//! the 10 ms frames the module works in, with buffers allocated once.
//!
//! Tuning, measured with `cargo bench --profile dev --bench echo`:
//! - AEC3's own high-pass filter (three biquads, about 150 Hz) is off: on
//!   near-end speech alone it cost 0.8 PESQ-WB (3.87 against 4.64 without
//!   it). A first-order DC blocker (about 23 Hz) in front of the module
//!   removes a microphone's offset instead, transparently.
//! - Noise suppression runs at the high level: at 10 dB SNR it gains 0.67
//!   PESQ-WB on white noise (moderate: 0.43), at a cost of 0.17 on speech
//!   with no noise at all. On babble (six talkers) it gains only 0.04 /
//!   0.13 / 0.32 at 5 / 10 / 20 dB SNR (white: 0.36 / 0.66 / 0.89): a
//!   stationary-noise suppressor does not take speech-like noise out.
//!
//! Not met: near-end speech during double talk (PESQ-WB 1.14 with an
//! echo 6 dB below it). Measured with AEC3's settings opened through a
//! patched copy of `sonora` (0.2 fixes them to the defaults): with no
//! echo at all, a talking far end alone costs the near end 2 points (the
//! suppressor assumes a 0 dB echo path until its filter converges and
//! regains 6 dB per 4 ms block after each pause); with the echo, a 52 ms
//! linear filter (13 blocks) against a 200 ms tail, adaptation during
//! double talk and the speaker's non-linearity each leave audible echo
//! (a 240 ms filter frozen once converged and no suppression: 2.65; 3.37
//! in a linear room).
//!
//! Why 3.5 is out of reach of any tuning (the doubletalk bench's
//! reference rows): the near end with the room's echo merely made weaker,
//! no canceller and no distortion, scores PESQ-WB 1.16 as is, and 1.61 /
//! 2.65 / 3.52 / 4.05 with it 10 / 20 / 30 / 40 dB weaker (interfering
//! speech costs PESQ far more than noise): 3.5 asks for 30 dB of echo
//! removed during double talk, with the near end untouched. AEC3 removes
//! 33-41 dB with the far end alone, but no setting of a patched `sonora`
//! moved double talk off 1.11-1.21 (AEC alone, near end after 11 s of far
//! end; suppressor nearend tuning and dominant-nearend detection opened,
//! a 240 ms filter, a 0.1 default echo path gain, subband nearend
//! detection). The HMM transparent mode (the one AEC3 setting `sonora`
//! 0.2 exposes) leaves ERLE and double talk as they are and costs the
//! near end more with no echo at all (2.39 against 2.65).

use super::audio::TICK_SAMPLES;
use sonora::config::{
    AdaptiveDigital, EchoCanceller, GainController2, NoiseSuppression, NoiseSuppressionLevel,
};
use sonora::{AudioProcessing, StreamConfig};

/// A stage's setting: on, off, or on only with a sound card (`auto`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Switch {
    /// On when the input is a sound card (a room with a microphone), off
    /// for files, tones and the null device (whose audio is already clean).
    #[default]
    Auto,
    On,
    Off,
}

impl Switch {
    /// Whether the stage runs, given whether the input is a sound card.
    pub fn resolve(self, sound_card: bool) -> bool {
        match self {
            Switch::Auto => sound_card,
            Switch::On => true,
            Switch::Off => false,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Switch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Word(String),
        }
        let bad = || serde::de::Error::custom("expected true, false or \"auto\"");
        match Raw::deserialize(d).map_err(|_: D::Error| bad())? {
            Raw::Bool(true) => Ok(Switch::On),
            Raw::Bool(false) => Ok(Switch::Off),
            Raw::Word(w) if w == "auto" => Ok(Switch::Auto),
            Raw::Word(_) => Err(bad()),
        }
    }
}

/// Which stages to run (the `[audio]` keys).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessingConfig {
    pub echo_cancellation: Switch,
    pub noise_suppression: Switch,
    pub auto_gain: Switch,
}

/// The stages that run in a call, resolved for its input device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stages {
    pub echo_cancellation: bool,
    pub noise_suppression: bool,
    pub auto_gain: bool,
}

impl ProcessingConfig {
    pub fn stages(&self, sound_card: bool) -> Stages {
        Stages {
            echo_cancellation: self.echo_cancellation.resolve(sound_card),
            noise_suppression: self.noise_suppression.resolve(sound_card),
            auto_gain: self.auto_gain.resolve(sound_card),
        }
    }
}

impl Stages {
    pub fn any(&self) -> bool {
        self.echo_cancellation || self.noise_suppression || self.auto_gain
    }
}

/// What the processing reports: the stages on, and the echo canceller's
/// own measures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessingStats {
    pub stages: Stages,
    /// Echo return loss enhancement AEC3 measures, dB.
    pub erle_db: Option<f64>,
    /// The echo path delay AEC3 estimated (device buffers and the room),
    /// ms.
    pub echo_delay_ms: Option<i32>,
}

/// The processing of one call's microphone path; see the [module docs](self).
pub struct Processor {
    apm: AudioProcessing,
    stages: Stages,
    /// Reference samples not yet a whole frame.
    render: Vec<i16>,
    /// Captured samples not yet a whole frame.
    capture: Vec<i16>,
    /// A frame's output (the render output is discarded).
    scratch: [i16; TICK_SAMPLES],
    /// Processed capture, handed out by [`Processor::process_capture`].
    out: Vec<i16>,
    /// The DC blocker's state: its last input and output sample.
    dc: DcBlocker,
}

/// A first-order DC blocker, `y[n] = x[n] - x[n-1] + POLE * y[n-1]`: a
/// microphone's offset out, speech untouched (-3 dB at about 23 Hz).
#[derive(Debug, Clone, Copy, Default)]
struct DcBlocker {
    /// Last input sample.
    x1: f32,
    /// Last output sample.
    y1: f32,
}

impl DcBlocker {
    const POLE: f32 = 0.997;

    fn run(&mut self, frame: &mut [i16]) {
        for v in frame {
            let x = *v as f32;
            let y = x - self.x1 + Self::POLE * self.y1;
            self.x1 = x;
            self.y1 = y;
            *v = y.round().clamp(-32768.0, 32767.0) as i16;
        }
    }
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("stages", &self.stages)
            .finish_non_exhaustive()
    }
}

impl Processor {
    pub fn new(stages: Stages) -> Self {
        let config = sonora::Config {
            // Its high-pass filter is the DC blocker's job (module docs).
            echo_canceller: stages.echo_cancellation.then(|| EchoCanceller {
                enforce_high_pass_filtering: false,
                ..Default::default()
            }),
            noise_suppression: stages.noise_suppression.then(|| NoiseSuppression {
                level: NoiseSuppressionLevel::High,
                ..Default::default()
            }),
            gain_controller2: stages.auto_gain.then(|| GainController2 {
                adaptive_digital: Some(AdaptiveDigital::default()),
                ..Default::default()
            }),
            // Full band, no resampling inside (its default is 32 kHz).
            pipeline: sonora::config::Pipeline {
                maximum_internal_processing_rate: sonora::config::MaxProcessingRate::Rate48kHz,
                ..Default::default()
            },
            ..Default::default()
        };
        let mono = StreamConfig::new(super::audio::SAMPLE_RATE, 1);
        let apm = AudioProcessing::builder()
            .config(config)
            .capture_config(mono)
            .render_config(mono)
            .build();
        Processor {
            apm,
            stages,
            render: Vec::with_capacity(TICK_SAMPLES),
            capture: Vec::with_capacity(TICK_SAMPLES),
            scratch: [0; TICK_SAMPLES],
            out: Vec::with_capacity(super::audio::RING_SAMPLES),
            dc: DcBlocker::default(),
        }
    }

    pub fn stages(&self) -> Stages {
        self.stages
    }

    /// What the output device played (48 kHz mono), in order.
    pub fn push_reference(&mut self, played: &[i16]) {
        if !self.stages.echo_cancellation {
            return;
        }
        let mut rest = played;
        while !rest.is_empty() {
            let take = (TICK_SAMPLES - self.render.len()).min(rest.len());
            self.render.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.render.len() == TICK_SAMPLES {
                // Errors are format errors, impossible with fixed frames.
                let _ = self.apm.process_render_i16(&self.render, &mut self.scratch);
                self.render.clear();
            }
        }
    }

    /// Captured audio (48 kHz mono) in; the processed audio of every
    /// whole frame out (a partial frame waits for the next call).
    pub fn process_capture(&mut self, captured: &[i16]) -> &[i16] {
        self.out.clear();
        let mut rest = captured;
        while !rest.is_empty() {
            let take = (TICK_SAMPLES - self.capture.len()).min(rest.len());
            self.capture.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.capture.len() == TICK_SAMPLES {
                self.dc.run(&mut self.capture);
                // AEC3 finds the delay itself; this only says it is set.
                let _ = self.apm.set_stream_delay_ms(0);
                let _ = self
                    .apm
                    .process_capture_i16(&self.capture, &mut self.scratch);
                self.out.extend_from_slice(&self.scratch);
                self.capture.clear();
            }
        }
        &self.out
    }

    pub fn stats(&self) -> ProcessingStats {
        let s = self.apm.statistics();
        ProcessingStats {
            stages: self.stages,
            erle_db: s.echo_return_loss_enhancement,
            echo_delay_ms: s.delay_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::room::{EchoPath, Room};

    fn speech(secs: usize) -> Vec<i16> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/speech.wav");
        let mut s = crate::media::audio::read_wav(&p).unwrap();
        s.truncate(secs * 48_000);
        s
    }

    fn energy(x: &[i16]) -> f64 {
        x.iter().map(|&v| (v as f64).powi(2)).sum()
    }

    /// What is sent while the far end talks into a room with nobody in it
    /// (10 ms device ticks, reference before capture, as the driver does).
    fn sent(far: &[i16], path: EchoPath, stages: Stages) -> Vec<i16> {
        let mut room = Room::new(path);
        let mut p = Processor::new(stages);
        let silence = [0i16; TICK_SAMPLES];
        let mut mic = [0i16; TICK_SAMPLES];
        let mut out = Vec::with_capacity(far.len());
        for played in far.chunks_exact(TICK_SAMPLES) {
            room.mic(played, &silence, &mut mic);
            p.push_reference(played);
            if stages.any() {
                out.extend_from_slice(p.process_capture(&mic));
            } else {
                out.extend_from_slice(&mic);
            }
        }
        out
    }

    /// The CI check of the echo canceller: far-end speech through a known
    /// echo path (100 ms device delay, 150 ms reverberation tail, speaker
    /// non-linearity) is removed from the sent stream by at least 20 dB
    /// against the same run with the canceller off, after 3 s of speech.
    #[test]
    fn echo_canceller_removes_a_known_echo_path_by_20_db() {
        let far = speech(12);
        let path = EchoPath::default();
        let off = sent(&far, path, Stages::default());
        let on = sent(
            &far,
            path,
            Stages {
                echo_cancellation: true,
                ..Default::default()
            },
        );
        assert_eq!(on.len(), off.len());
        let from = 3 * 48_000;
        let erle = 10.0 * (energy(&off[from..]) / energy(&on[from..]).max(1.0)).log10();
        assert!(energy(&off[from..]) > 1e9, "the echo is loud without it");
        eprintln!("echo removed by {erle:.1} dB");
        assert!(erle >= 20.0, "echo removed by only {erle:.1} dB");
    }

    /// A microphone's DC offset is removed (AEC3's own high-pass filter is
    /// off), while the speech on it passes.
    #[test]
    fn a_dc_offset_is_removed() {
        let near = speech(4);
        let offset: Vec<i16> = near.iter().map(|&v| v / 2 + 4_000).collect();
        let mut p = Processor::new(Stages {
            echo_cancellation: true,
            ..Default::default()
        });
        let silence = [0i16; TICK_SAMPLES];
        let mut out = Vec::new();
        for c in offset.chunks_exact(TICK_SAMPLES) {
            p.push_reference(&silence);
            out.extend_from_slice(p.process_capture(c));
        }
        let tail = &out[2 * 48_000..];
        let mean = tail.iter().map(|&v| v as f64).sum::<f64>() / tail.len() as f64;
        assert!(mean.abs() < 40.0, "DC left: {mean:.0}");
        assert!(
            energy(tail) > energy(&near[2 * 48_000..]) / 8.0,
            "the speech passes"
        );
    }

    /// Stages run as resolved; off means the audio passes untouched.
    #[test]
    fn switches_resolve_with_the_device() {
        let c = ProcessingConfig {
            noise_suppression: Switch::Off,
            auto_gain: Switch::On,
            ..Default::default()
        };
        let card = c.stages(true);
        assert!(card.echo_cancellation && !card.noise_suppression && card.auto_gain);
        let file = c.stages(false);
        assert!(!file.echo_cancellation && !file.noise_suppression && file.auto_gain);
        let p = Processor::new(card);
        assert_eq!(p.stats().stages, card);
    }
}
