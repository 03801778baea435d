//! Audio devices: where call audio comes from and goes to, as 48 kHz mono
//! i16 samples through two lock-free single-producer single-consumer rings
//! ([`rtrb`]): the device side never blocks or allocates, and the codec
//! runs elsewhere (the media driver).
//!
//! Devices are named by a [`DeviceSpec`]:
//! - `default` or a sound card's name: a `cpal` stream (feature
//!   `audio-cpal`, ALSA on Linux), opened at 48 kHz mono when the card can,
//!   else at its own rate and channel count with resampling and mixing;
//! - `file:PATH`: a WAV file to play (any rate or channel count, converted)
//!   or to record (48 kHz mono 16-bit);
//! - `tone` or `tone:HZ`: a sine generator (input only);
//! - `null`: silence in, nothing out;
//! - `echo` (input only): what the output device played, 10 ms later (the
//!   echo test contact plays back what it hears); the output must be a
//!   file or `null`.
//!
//! File, tone and null devices are paced in real time by our own clock (a
//! thread that moves 10 ms of audio per tick on an absolute schedule), so
//! every path runs on a machine with no sound card. ALSA's own messages
//! are routed to the log, never to the terminal.

mod resample;
mod ring;
pub mod room;
#[cfg(feature = "audio-cpal")]
mod sound_card;

pub use resample::{PullResampler, Resampler, to_f32, to_i16};
pub use ring::{Cadence, Chime, RingKind};

use rtrb::{Consumer, Producer, RingBuffer};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;

/// The one sample rate natter's media path runs at.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples a paced device moves per tick (10 ms).
pub const TICK_SAMPLES: usize = (SAMPLE_RATE / 100) as usize;
/// Capacity of each ring: one second of audio.
pub const RING_SAMPLES: usize = SAMPLE_RATE as usize;

#[derive(Debug, Error)]
pub enum AudioError {
    #[error(
        "{0:?} is not an audio device: expected `default`, `null`, `tone[:HZ]`, `echo`, `file:PATH` or a device name (see --list-audio-devices)"
    )]
    BadSpec(String),
    #[error("{what} is input only")]
    InputOnly { what: String },
    #[error("the echo input needs a file or null output, not {output}")]
    EchoOutput { output: String },
    #[error("WAV file {path}: {source}")]
    Wav { path: PathBuf, source: hound::Error },
    #[error("no audio device named {0:?} (see --list-audio-devices)")]
    NoDevice(String),
    #[error("this build has no sound card support (feature `audio-cpal`); use file:, tone or null")]
    NoSoundCardSupport,
    #[error("audio device {device}: {message}")]
    Backend { device: String, message: String },
    #[error("the audio pacing thread failed")]
    Thread,
}

/// Which device to use, as written in the config or on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceSpec {
    /// The system's default sound card.
    Default,
    Null,
    Tone {
        hz: f32,
    },
    File(PathBuf),
    /// Input only: what the output played (the echo test contact).
    Echo,
    /// A sound card by name, as `--list-audio-devices` prints it.
    Named(String),
}

impl std::str::FromStr for DeviceSpec {
    type Err = AudioError;
    fn from_str(s: &str) -> Result<Self, AudioError> {
        let bad = || AudioError::BadSpec(s.to_owned());
        Ok(match s {
            "" => return Err(bad()),
            "default" => DeviceSpec::Default,
            "null" => DeviceSpec::Null,
            "echo" => DeviceSpec::Echo,
            "tone" => DeviceSpec::Tone { hz: 440.0 },
            _ => {
                if let Some(hz) = s.strip_prefix("tone:") {
                    let hz: f32 = hz.parse().map_err(|_| bad())?;
                    if !(1.0..=20_000.0).contains(&hz) {
                        return Err(bad());
                    }
                    DeviceSpec::Tone { hz }
                } else if let Some(p) = s.strip_prefix("file:") {
                    if p.is_empty() {
                        return Err(bad());
                    }
                    DeviceSpec::File(p.into())
                } else {
                    DeviceSpec::Named(s.to_owned())
                }
            }
        })
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Default => f.write_str("default"),
            DeviceSpec::Null => f.write_str("null"),
            DeviceSpec::Echo => f.write_str("echo"),
            DeviceSpec::Tone { hz } => write!(f, "tone:{hz}"),
            DeviceSpec::File(p) => write!(f, "file:{}", p.display()),
            DeviceSpec::Named(n) => f.write_str(n),
        }
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl DeviceSpec {
    fn is_sound_card(&self) -> bool {
        matches!(self, DeviceSpec::Default | DeviceSpec::Named(_))
    }
}

/// What the device side did wrong, counted from the audio threads.
#[derive(Debug, Default)]
pub struct AudioCounters {
    /// Captured samples dropped because the capture ring was full.
    pub overruns: AtomicU64,
    /// Playback samples filled with silence because the ring was empty
    /// (counted once playback has started).
    pub underruns: AtomicU64,
    /// Captured samples produced so far.
    pub captured: AtomicU64,
    /// Samples played (or recorded) so far.
    pub played: AtomicU64,
}

/// An open pair of devices. Read captured audio from `capture`, write
/// audio to play into `playback`; `reference` gives back what the output
/// device was really handed, sample for sample (silence on an underrun
/// included): the echo canceller's far-end reference.
pub struct AudioIo {
    pub capture: Consumer<i16>,
    pub playback: Producer<i16>,
    pub reference: Consumer<i16>,
    /// The input is a sound card (a room with a microphone), not a file,
    /// tone or null device: audio processing is on by default.
    pub input_sound_card: bool,
    pub counters: Arc<AudioCounters>,
    /// When the devices started: sample `n` of the capture (paced
    /// devices) was produced at `started + n / 48 kHz`.
    pub started: Instant,
    /// Samples in the input file (file input only), to know when it ends.
    pub input_samples: Option<u64>,
    paced: Option<Paced>,
    #[cfg(feature = "audio-cpal")]
    _streams: Vec<cpal::Stream>,
}

impl std::fmt::Debug for AudioIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioIo")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl AudioIo {
    /// Stop the devices; a recording is finalised (its error, if any, is
    /// returned).
    pub fn close(mut self) -> Result<(), AudioError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), AudioError> {
        match self.paced.take() {
            Some(p) => p.stop(),
            None => Ok(()),
        }
    }
}

impl Drop for AudioIo {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!("closing audio: {e}");
        }
    }
}

/// Open `input` for capture and `output` for playback.
pub fn open(input: &DeviceSpec, output: &DeviceSpec) -> Result<AudioIo, AudioError> {
    let (cap_tx, cap_rx) = RingBuffer::<i16>::new(RING_SAMPLES);
    let (play_tx, play_rx) = RingBuffer::<i16>::new(RING_SAMPLES);
    let (ref_tx, ref_rx) = RingBuffer::<i16>::new(RING_SAMPLES);
    let counters = Arc::new(AudioCounters::default());
    if matches!(output, DeviceSpec::Tone { .. } | DeviceSpec::Echo) {
        return Err(AudioError::InputOnly {
            what: output.to_string(),
        });
    }
    if *input == DeviceSpec::Echo && output.is_sound_card() {
        return Err(AudioError::EchoOutput {
            output: output.to_string(),
        });
    }
    let mut source = None;
    let mut input_samples = None;
    let mut cap_tx = Some(cap_tx);
    let mut play_rx = Some(play_rx);
    let mut ref_tx = Some(ref_tx);
    match input {
        DeviceSpec::Null => source = Some(Source::Null),
        DeviceSpec::Echo => source = Some(Source::Echo(std::collections::VecDeque::new())),
        DeviceSpec::Tone { hz } => source = Some(Source::Tone(Tone::new(*hz, 0.3))),
        DeviceSpec::File(p) => {
            let w = read_wav(p)?;
            input_samples = Some(w.len() as u64);
            source = Some(Source::Samples(w, 0));
        }
        DeviceSpec::Default | DeviceSpec::Named(_) => {}
    }
    let sink = match output {
        DeviceSpec::Null => Some(Sink::Null),
        DeviceSpec::File(p) => Some(Sink::Wav(
            hound::WavWriter::create(p, wav_spec()).map_err(|source| AudioError::Wav {
                path: p.clone(),
                source,
            })?,
            p.clone(),
        )),
        _ => None,
    };
    #[cfg(feature = "audio-cpal")]
    let mut streams = Vec::new();
    if input.is_sound_card() || output.is_sound_card() {
        #[cfg(feature = "audio-cpal")]
        {
            if input.is_sound_card() {
                let tx = cap_tx.take().expect("capture ring unused");
                streams.push(sound_card::open_input(input, tx, counters.clone())?);
            }
            if output.is_sound_card() {
                let rx = play_rx.take().expect("playback ring unused");
                let reference = ref_tx.take().expect("reference ring unused");
                streams.push(sound_card::open_output(
                    output,
                    rx,
                    reference,
                    counters.clone(),
                )?);
            }
        }
        #[cfg(not(feature = "audio-cpal"))]
        return Err(AudioError::NoSoundCardSupport);
    }
    let started = Instant::now();
    let paced = if source.is_some() || sink.is_some() {
        Some(Paced::spawn(
            started,
            source.map(|s| (s, cap_tx.take().expect("capture ring unused"))),
            sink.map(|s| {
                (
                    s,
                    play_rx.take().expect("playback ring unused"),
                    ref_tx.take().expect("reference ring unused"),
                )
            }),
            counters.clone(),
        )?)
    } else {
        None
    };
    Ok(AudioIo {
        capture: cap_rx,
        playback: play_tx,
        reference: ref_rx,
        input_sound_card: input.is_sound_card(),
        counters,
        started,
        input_samples,
        paced,
        #[cfg(feature = "audio-cpal")]
        _streams: streams,
    })
}

/// Sound cards for `--list-audio-devices`, `ID  (name)`: (inputs, outputs).
pub fn list_devices() -> Result<(Vec<String>, Vec<String>), AudioError> {
    #[cfg(feature = "audio-cpal")]
    return sound_card::list();
    #[cfg(not(feature = "audio-cpal"))]
    Err(AudioError::NoSoundCardSupport)
}

fn wav_spec() -> hound::WavSpec {
    hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}

/// Read a whole WAV file as 48 kHz mono i16, mixing channels and
/// resampling as needed.
pub fn read_wav(path: &std::path::Path) -> Result<Vec<i16>, AudioError> {
    let err = |source| AudioError::Wav {
        path: path.to_owned(),
        source,
    };
    let mut r = hound::WavReader::open(path).map_err(err)?;
    let spec = r.spec();
    let channels = spec.channels.max(1) as usize;
    let raw: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().collect::<Result<_, _>>().map_err(err)?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
                .map_err(err)?
        }
    };
    let mut rs = Resampler::new(spec.sample_rate, SAMPLE_RATE);
    let mut out = Vec::with_capacity(
        raw.len() / channels * SAMPLE_RATE as usize / spec.sample_rate.max(1) as usize + 1,
    );
    for frame in raw.chunks(channels) {
        let x = frame.iter().sum::<f32>() / frame.len() as f32;
        rs.push(x, |y| out.push(to_i16(y)));
    }
    rs.flush(|y| out.push(to_i16(y)));
    Ok(out)
}

/// Write 48 kHz mono i16 samples to a WAV file.
pub fn write_wav(path: &std::path::Path, samples: &[i16]) -> Result<(), AudioError> {
    let err = |source| AudioError::Wav {
        path: path.to_owned(),
        source,
    };
    let mut w = hound::WavWriter::create(path, wav_spec()).map_err(err)?;
    for &s in samples {
        w.write_sample(s).map_err(err)?;
    }
    w.finalize().map_err(err)
}

/// A sine wave generator.
#[derive(Debug, Clone)]
pub struct Tone {
    phase: f64,
    step: f64,
    amplitude: f32,
}

impl Tone {
    pub fn new(hz: f32, amplitude: f32) -> Self {
        Tone {
            phase: 0.0,
            step: hz as f64 / SAMPLE_RATE as f64,
            amplitude,
        }
    }

    pub fn next_sample(&mut self) -> i16 {
        let y = (self.phase * std::f64::consts::TAU).sin() as f32 * self.amplitude;
        self.phase = (self.phase + self.step).fract();
        to_i16(y)
    }

    pub fn fill(&mut self, out: &mut [i16]) {
        for s in out {
            *s = self.next_sample();
        }
    }
}

enum Source {
    Null,
    Tone(Tone),
    /// A whole file's samples and the read position; silence after.
    Samples(Vec<i16>, usize),
    /// What the sink played, to capture again.
    Echo(std::collections::VecDeque<i16>),
}

impl Source {
    fn fill(&mut self, out: &mut [i16]) {
        match self {
            Source::Null => out.fill(0),
            Source::Tone(t) => t.fill(out),
            Source::Samples(v, pos) => {
                let n = out.len().min(v.len() - *pos);
                out[..n].copy_from_slice(&v[*pos..*pos + n]);
                out[n..].fill(0);
                *pos += n;
            }
            Source::Echo(q) => {
                let n = out.len().min(q.len());
                for (o, s) in out.iter_mut().zip(q.drain(..n)) {
                    *o = s;
                }
                out[n..].fill(0);
            }
        }
    }
}

enum Sink {
    Null,
    Wav(hound::WavWriter<std::io::BufWriter<std::fs::File>>, PathBuf),
}

/// The real-time pacing thread of file, tone and null devices.
struct Paced {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(), AudioError>>,
}

impl Paced {
    fn spawn(
        started: Instant,
        mut source: Option<(Source, Producer<i16>)>,
        mut sink: Option<(Sink, Consumer<i16>, Producer<i16>)>,
        counters: Arc<AudioCounters>,
    ) -> Result<Self, AudioError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("natter-audio".into())
            .spawn(move || {
                let tick = Duration::from_millis(10);
                let mut buf = [0i16; TICK_SAMPLES];
                let mut ticks: u32 = 0;
                let mut playing = false;
                let result = loop {
                    if stop2.load(Ordering::Relaxed) {
                        break Ok(());
                    }
                    // Absolute schedule: a late tick is caught up, so the
                    // device keeps real time on average.
                    let due = started + tick * ticks;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    ticks += 1;
                    if let Some((src, tx)) = source.as_mut() {
                        src.fill(&mut buf);
                        let mut pushed = 0;
                        for &s in &buf {
                            if tx.push(s).is_err() {
                                break;
                            }
                            pushed += 1;
                        }
                        counters
                            .overruns
                            .fetch_add((TICK_SAMPLES - pushed) as u64, Ordering::Relaxed);
                        counters
                            .captured
                            .fetch_add(TICK_SAMPLES as u64, Ordering::Relaxed);
                    }
                    if let Some((snk, rx, reference)) = sink.as_mut() {
                        let mut got = 0;
                        while got < TICK_SAMPLES {
                            match rx.pop() {
                                Ok(s) => {
                                    buf[got] = s;
                                    got += 1;
                                }
                                Err(_) => break,
                            }
                        }
                        playing |= got > 0;
                        if playing {
                            counters
                                .underruns
                                .fetch_add((TICK_SAMPLES - got) as u64, Ordering::Relaxed);
                        }
                        buf[got..].fill(0);
                        // What was played, for the echo canceller (a
                        // full ring drops the rest: nobody reads it).
                        for &s in &buf {
                            if reference.push(s).is_err() {
                                break;
                            }
                        }
                        counters
                            .played
                            .fetch_add(TICK_SAMPLES as u64, Ordering::Relaxed);
                        // Bounded: the source takes a tick's worth per tick.
                        if let Some((Source::Echo(q), _)) = source.as_mut()
                            && q.len() < RING_SAMPLES
                        {
                            q.extend(&buf);
                        }
                        if let Sink::Wav(w, path) = snk {
                            for &s in &buf {
                                if let Err(source) = w.write_sample(s) {
                                    return Err(AudioError::Wav {
                                        path: path.clone(),
                                        source,
                                    });
                                }
                            }
                        }
                    }
                };
                if let Some((Sink::Wav(w, path), _, _)) = sink {
                    w.finalize()
                        .map_err(|source| AudioError::Wav { path, source })?;
                }
                result
            })
            .map_err(|_| AudioError::Thread)?;
        Ok(Paced { stop, thread })
    }

    fn stop(self) -> Result<(), AudioError> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().map_err(|_| AudioError::Thread)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(
            "default".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Default
        );
        assert_eq!("null".parse::<DeviceSpec>().unwrap(), DeviceSpec::Null);
        assert_eq!(
            "tone:1000".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Tone { hz: 1000.0 }
        );
        assert_eq!(
            "file:a.wav".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::File("a.wav".into())
        );
        assert_eq!(
            "hw:0,0".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Named("hw:0,0".into())
        );
        assert!("tone:abc".parse::<DeviceSpec>().is_err());
        assert!("tone:0".parse::<DeviceSpec>().is_err());
        assert!("file:".parse::<DeviceSpec>().is_err());
        assert!("".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn wav_round_trip_converts_rate_and_channels() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&p, spec).unwrap();
        for _ in 0..16_000 {
            w.write_sample(1000i16).unwrap();
            w.write_sample(3000i16).unwrap();
        }
        w.finalize().unwrap();
        let s = read_wav(&p).unwrap();
        assert!((s.len() as i64 - 48_000).abs() <= 2, "{}", s.len());
        // The filter rings for a few ms after the file's first sample.
        assert!(s[1_000..47_000].iter().all(|&x| (x - 2000).abs() <= 1));
    }

    /// File in, file out through the paced thread, in real time.
    #[test]
    fn paced_devices_keep_real_time() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.wav");
        let output = dir.path().join("out.wav");
        let samples: Vec<i16> = (0..24_000).map(|i| (i % 100) as i16).collect();
        write_wav(&input, &samples).unwrap();
        let mut io = open(
            &DeviceSpec::File(input.clone()),
            &DeviceSpec::File(output.clone()),
        )
        .unwrap();
        assert_eq!(io.input_samples, Some(24_000));
        // Loop the capture straight back to playback for 300 ms of device time.
        let mut moved = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while moved < 14_400 && Instant::now() < deadline {
            while let Ok(s) = io.capture.pop() {
                assert_eq!(s, (moved % 100) as i16, "sample {moved}");
                io.playback.push(s).unwrap();
                moved += 1;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let elapsed = io.started.elapsed();
        assert!(moved >= 14_400, "{moved}");
        // 300 ms of audio cannot be produced in much less than 300 ms.
        assert!(elapsed >= Duration::from_millis(290), "{elapsed:?}");
        io.close().unwrap();
        let rec = read_wav(&output).unwrap();
        let first = rec.iter().position(|&s| s != 0).unwrap();
        assert_eq!(rec[first], 1, "recording starts with the looped input");
    }

    /// The real cpal/ALSA path on ALSA's `null` card (present wherever
    /// libasound is): streams open and the callbacks move samples.
    #[cfg(all(feature = "audio-cpal", target_os = "linux"))]
    #[test]
    fn sound_card_streams_run() {
        let card = DeviceSpec::Named("alsa:null".into());
        let mut io = open(&card, &card).unwrap();
        for _ in 0..4800 {
            let _ = io.playback.push(1000);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = 0;
        while (got < 4800 || io.counters.played.load(Ordering::Relaxed) < 4800)
            && Instant::now() < deadline
        {
            while io.capture.pop().is_ok() {
                got += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(got >= 4800, "captured {got}");
        assert!(io.counters.played.load(Ordering::Relaxed) >= 4800);
        assert!(matches!(
            open(&DeviceSpec::Named("no such card".into()), &DeviceSpec::Null),
            Err(AudioError::NoDevice(_))
        ));
    }

    /// The echo input captures what the output played, a tick later.
    #[test]
    fn echo_input_plays_back_the_output() {
        assert_eq!("echo".parse::<DeviceSpec>().unwrap(), DeviceSpec::Echo);
        assert!(matches!(
            open(&DeviceSpec::Echo, &DeviceSpec::Default),
            Err(AudioError::EchoOutput { .. })
        ));
        assert!(matches!(
            open(&DeviceSpec::Null, &DeviceSpec::Echo),
            Err(AudioError::InputOnly { .. })
        ));
        let mut io = open(&DeviceSpec::Echo, &DeviceSpec::Null).unwrap();
        for i in 0..4800 {
            io.playback.push(i as i16 + 1).unwrap();
        }
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < 9600 && Instant::now() < deadline {
            while let Ok(s) = io.capture.pop() {
                got.push(s);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        io.close().unwrap();
        let first = got.iter().position(|&s| s != 0).expect("echo heard");
        let echoed: Vec<i16> = got[first..first + 4800].to_vec();
        assert_eq!(echoed, (1..=4800).map(|i| i as i16).collect::<Vec<_>>());
    }

    #[test]
    fn tone_is_input_only_and_tone_has_its_frequency() {
        assert!(matches!(
            open(&DeviceSpec::Null, &DeviceSpec::Tone { hz: 440.0 }),
            Err(AudioError::InputOnly { .. })
        ));
        let mut t = Tone::new(1000.0, 0.5);
        let mut v = vec![0i16; 48_000];
        t.fill(&mut v);
        let crossings = v.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
        assert!((crossings as i64 - 1000).abs() <= 1, "{crossings}");
    }
}
