//! The media of a conference: one audio device and one [`MediaSession`]
//! per leg, in one tokio task (the audio thread only sees its lock-free
//! rings, as in the 1:1 [`super::driver`]).
//!
//! Every 20 ms frame of microphone audio (after the microphone path's
//! [`Processor`]) the mixer takes one frame of decoded audio from each
//! leg's jitter buffer and
//! - sends leg `i` the mix-minus `mic + sum(legs) - leg_i` (nobody hears
//!   themselves); receivers whose own frame is silent (muted, or not
//!   talking) all get the same mix, `mic + sum(legs)`, encoded once and
//!   sealed per leg under that leg's keys ([`MediaSession::push_encoded`]);
//!   the others are encoded by their own leg's encoder;
//! - plays `sum(legs)`.
//!
//! A participant who is not the mixer runs the same task with one leg (to
//! the mixer): it sends its microphone and plays what the mixer sends. So
//! a failover only swaps legs; the device and its recording go on.
//!
//! A [`Chime`] (someone joined or left) is added to what we play only.
//!
//! Legs left out of the mix (muted by the conference's starter) still
//! receive it. Levels (peak per leg and of the microphone) and each leg's
//! last authentic datagram are reported every [`LEVELS_MS`].

use super::audio::{AudioError, AudioIo, Chime, RING_SAMPLES};
use super::codec::{Encoder, MAX_PACKET};
use super::processing::Processor;
use super::session::{MediaConfig, MediaEvent, MediaSession};
use crate::clock::Clock;
use crate::time::Millis;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const TICK: Duration = Duration::from_millis(5);
/// How often levels and leg liveness are reported, ms.
pub const LEVELS_MS: u64 = 200;
/// A leg's frame whose peak is at most this is silence: its receiver
/// shares the everyone-mix (about -54 dBFS).
const SILENT_PEAK: u16 = 64;
/// Frames of silence (200 ms) before a receiver shares the everyone-mix.
const SILENT_FRAMES: u32 = 10;
/// Played audio queued ahead of the device at most (samples, 200 ms).
const MAX_PLAY_QUEUE: usize = 9_600;

#[derive(Debug)]
pub enum MixCommand {
    /// Start a leg to `peer` (replacing one of the same name).
    AddLeg {
        peer: String,
        session: Box<MediaSession>,
    },
    RemoveLeg(String),
    /// Mute our microphone.
    Mute(bool),
    /// Leave `peer`'s audio out of the mixes (muted by the starter).
    Exclude {
        peer: String,
        on: bool,
    },
    /// Play a chime (to us only).
    Chime(Chime),
    Stop,
}

/// What the conference media reports.
#[derive(Debug, Clone, PartialEq)]
pub enum MixEvent {
    /// A leg's own event (its first datagram, its periodic stats).
    Leg { peer: String, event: MediaEvent },
    /// Every [`LEVELS_MS`]: per leg, when its last authentic datagram came
    /// and its peak level since the last report (0-255); our microphone's.
    Levels { legs: Vec<LegLevel>, mic: u8 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegLevel {
    pub peer: String,
    /// When the leg last received audio, on the node's timeline.
    pub last_received: Millis,
    pub heard_any: bool,
    pub level: u8,
}

/// Counters of the mixer's work, for benchmarks and the final report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MixStats {
    /// Frames mixed.
    pub frames: u64,
    /// Encodings by a leg's own encoder (a talker's mix-minus) and of the
    /// shared everyone-mix.
    pub own_encodes: u64,
    pub shared_encodes: u64,
    /// Datagrams the transport could not take.
    pub dropped_out: u64,
    /// Bytes sent and received over all legs, headers included.
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// Datagrams to and from the legs, tagged with the peer's name.
#[derive(Debug)]
pub struct MixTransport {
    pub outgoing: mpsc::Sender<(String, Vec<u8>)>,
    pub incoming: mpsc::Receiver<(String, Vec<u8>)>,
}

#[derive(Debug)]
pub struct MixHandle {
    pub commands: mpsc::Sender<MixCommand>,
    pub events: mpsc::Receiver<MixEvent>,
    pub task: JoinHandle<Result<MixStats, AudioError>>,
}

struct Leg {
    session: Box<MediaSession>,
    /// This frame's decoded audio.
    pcm: Vec<i16>,
    excluded: bool,
    /// Peak since the last levels report.
    peak: u16,
    /// Totals of legs already removed are kept in the stats.
    counted: (u64, u64),
    /// Consecutive frames in which this leg's own audio was silent.
    silent_frames: u32,
}

/// The mixing state, apart from the devices: sans-IO, so a benchmark can
/// run it without a sound card or a runtime.
pub struct Mixer {
    config: MediaConfig,
    frame: usize,
    legs: BTreeMap<String, Leg>,
    shared: Encoder,
    muted: bool,
    mic: Vec<i16>,
    mic_peak: u16,
    total: Vec<i32>,
    /// Scratch: one receiver's mix before limiting, and after.
    mix32: Vec<i32>,
    mix: Vec<i16>,
    /// Mixed audio for the device.
    play: VecDeque<i16>,
    /// The chime playing and its next sample.
    chime: Option<(Chime, usize)>,
    stats: MixStats,
}

impl Mixer {
    pub fn new(config: MediaConfig) -> Result<Self, super::codec::CodecError> {
        let frame = config.codec.frame_samples();
        Ok(Mixer {
            shared: Encoder::new(config.codec)?,
            config,
            frame,
            legs: BTreeMap::new(),
            muted: false,
            mic: Vec::with_capacity(4 * frame),
            mic_peak: 0,
            total: vec![0; frame],
            mix32: vec![0; frame],
            mix: vec![0; frame],
            play: VecDeque::with_capacity(MAX_PLAY_QUEUE + frame),
            chime: None,
            stats: MixStats::default(),
        })
    }

    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    pub fn add_leg(&mut self, peer: String, session: Box<MediaSession>) {
        let frame = self.frame;
        if let Some(old) = self.legs.remove(&peer) {
            self.retire(&old);
        }
        self.legs.insert(
            peer,
            Leg {
                session,
                pcm: vec![0; frame],
                excluded: false,
                peak: 0,
                counted: (0, 0),
                silent_frames: 0,
            },
        );
    }

    fn retire(&mut self, l: &Leg) {
        let s = l.session.stats();
        self.stats.bytes_sent += s.bytes_sent - l.counted.0;
        self.stats.bytes_received += s.bytes_received - l.counted.1;
    }

    pub fn remove_leg(&mut self, peer: &str) {
        if let Some(old) = self.legs.remove(peer) {
            self.retire(&old);
        }
    }

    pub fn set_muted(&mut self, on: bool) {
        self.muted = on;
    }

    pub fn exclude(&mut self, peer: &str, on: bool) {
        if let Some(l) = self.legs.get_mut(peer) {
            l.excluded = on;
        }
    }

    /// Add `c` to what we play from the next frame (a newer one replaces
    /// one still playing).
    pub fn chime(&mut self, c: Chime) {
        self.chime = Some((c, 0));
    }

    pub fn stats(&self) -> MixStats {
        let mut s = self.stats.clone();
        for l in self.legs.values() {
            let ls = l.session.stats();
            s.bytes_sent += ls.bytes_sent - l.counted.0;
            s.bytes_received += ls.bytes_received - l.counted.1;
        }
        s
    }

    /// A datagram from `peer`'s leg.
    pub fn datagram(&mut self, now: Millis, peer: &str, d: &[u8]) {
        if let Some(l) = self.legs.get_mut(peer) {
            l.session.handle_datagram(now, d);
        }
    }

    /// Captured (processed) microphone audio: every whole frame is mixed.
    pub fn push_capture(&mut self, now: Millis, pcm: &[i16]) {
        self.mic.extend_from_slice(pcm);
        while self.mic.len() >= self.frame {
            self.mix_frame(now);
            self.mic.drain(..self.frame);
        }
    }

    fn mix_frame(&mut self, now: Millis) {
        let f = self.frame;
        self.stats.frames += 1;
        if self.muted {
            self.mic[..f].fill(0);
        }
        let mic = &self.mic[..f];
        self.mic_peak = self
            .mic_peak
            .max(mic.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0));
        self.total.fill(0);
        for l in self.legs.values_mut() {
            l.session.pull_playback(now, &mut l.pcm);
            if l.excluded {
                l.pcm.fill(0);
            }
            let peak = l.pcm.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
            l.peak = l.peak.max(peak);
            for (t, s) in self.total.iter_mut().zip(&l.pcm) {
                *t += i32::from(*s);
            }
        }
        // What we play: everyone but us.
        limit(&self.total, &mut self.mix);
        if let Some((c, pos)) = &mut self.chime {
            for s in self.mix.iter_mut() {
                *s = s.saturating_add(c.sample(*pos));
                *pos += 1;
            }
            if *pos >= Chime::len() {
                self.chime = None;
            }
        }
        self.play.extend(self.mix.iter());
        if self.play.len() > MAX_PLAY_QUEUE {
            let extra = self.play.len() - MAX_PLAY_QUEUE;
            self.play.drain(..extra);
        }
        // The everyone-mix (ours included), encoded once for the legs
        // whose own frame is silent.
        let mut shared: Option<([u8; MAX_PACKET], usize)> = None;
        let mixing = self.legs.len() > 1;
        for l in self.legs.values_mut() {
            let own_peak = l.pcm.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
            l.silent_frames = if own_peak <= SILENT_PEAK {
                l.silent_frames.saturating_add(1)
            } else {
                0
            };
            // Sticky: a receiver joins the shared encoding only after a
            // while of silence (each switch of encoder is a seam).
            if mixing && l.silent_frames >= SILENT_FRAMES {
                if shared.is_none() {
                    for (o, (t, m)) in self.mix32.iter_mut().zip(self.total.iter().zip(mic)) {
                        *o = t + i32::from(*m);
                    }
                    limit(&self.mix32, &mut self.mix);
                    let mut buf = [0u8; MAX_PACKET];
                    match self.shared.encode(&self.mix, &mut buf) {
                        Ok(n) => {
                            self.stats.shared_encodes += 1;
                            shared = Some((buf, n));
                        }
                        Err(e) => tracing::warn!("mixer: {e}"),
                    }
                }
                if let Some((buf, n)) = &shared {
                    l.session.push_encoded(now, &buf[..*n]);
                }
            } else {
                for (o, ((t, m), s)) in self
                    .mix32
                    .iter_mut()
                    .zip(self.total.iter().zip(mic).zip(&l.pcm))
                {
                    *o = t + i32::from(*m) - i32::from(*s);
                }
                limit(&self.mix32, &mut self.mix);
                self.stats.own_encodes += 1;
                l.session.push_capture(now, &self.mix);
            }
        }
    }

    /// Mixed audio to play: `out` filled, silence where there is none yet.
    pub fn pull_playback(&mut self, out: &mut [i16]) {
        for o in out.iter_mut() {
            *o = self.play.pop_front().unwrap_or(0);
        }
    }

    pub fn poll_timeout(&self) -> Option<Millis> {
        self.legs
            .values()
            .filter_map(|l| l.session.poll_timeout())
            .min()
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        for l in self.legs.values_mut() {
            if l.session.poll_timeout().is_some_and(|t| t <= now) {
                l.session.handle_timeout(now);
            }
        }
    }

    /// The next datagram to send, with the leg's peer.
    pub fn poll_transmit(&mut self) -> Option<(String, Vec<u8>)> {
        self.legs
            .iter_mut()
            .find_map(|(p, l)| l.session.poll_transmit().map(|d| (p.clone(), d)))
    }

    /// Leg events (a leg's silence timeout is the conference core's
    /// business, not the media's: dropped here).
    pub fn poll_event(&mut self) -> Option<MixEvent> {
        self.legs.iter_mut().find_map(|(p, l)| {
            loop {
                match l.session.poll_event() {
                    Some(MediaEvent::Timeout { .. }) => continue,
                    Some(event) => {
                        break Some(MixEvent::Leg {
                            peer: p.clone(),
                            event,
                        });
                    }
                    None => break None,
                }
            }
        })
    }

    /// Levels since the last call, and each leg's liveness.
    pub fn levels(&mut self) -> MixEvent {
        let legs = self
            .legs
            .iter_mut()
            .map(|(p, l)| {
                let level = (l.peak >> 7).min(255) as u8;
                l.peak = 0;
                LegLevel {
                    peer: p.clone(),
                    last_received: l.session.last_received(),
                    heard_any: l.session.heard_any(),
                    level,
                }
            })
            .collect();
        let mic = (self.mic_peak >> 7).min(255) as u8;
        self.mic_peak = 0;
        MixEvent::Levels { legs, mic }
    }
}

/// `sum` into `out`, scaled down as a whole when it would clip (a
/// per-frame limiter: the voices keep their relative levels).
fn limit(sum: &[i32], out: &mut [i16]) {
    let peak = sum.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    if peak <= i16::MAX as u32 {
        for (o, s) in out.iter_mut().zip(sum) {
            *o = *s as i16;
        }
    } else {
        let g = f64::from(i16::MAX) / f64::from(peak);
        for (o, s) in out.iter_mut().zip(sum) {
            *o = (f64::from(*s) * g) as i16;
        }
    }
}

/// Run the conference media with `audio` until stopped.
pub fn spawn(
    mixer: Mixer,
    audio: AudioIo,
    transport: MixTransport,
    clock: Arc<dyn Clock>,
) -> MixHandle {
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (ev_tx, ev_rx) = mpsc::channel(256);
    let task = tokio::spawn(tracing::Instrument::instrument(
        run(mixer, audio, transport, clock, cmd_rx, ev_tx),
        tracing::info_span!("conference media"),
    ));
    MixHandle {
        commands: cmd_tx,
        events: ev_rx,
        task,
    }
}

async fn run(
    mut mixer: Mixer,
    mut audio: AudioIo,
    mut transport: MixTransport,
    clock: Arc<dyn Clock>,
    mut commands: mpsc::Receiver<MixCommand>,
    events: mpsc::Sender<MixEvent>,
) -> Result<MixStats, AudioError> {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cap = vec![0i16; RING_SAMPLES];
    let mut play = vec![0i16; RING_SAMPLES];
    let mut reference = vec![0i16; RING_SAMPLES];
    let stages = mixer.config().processing.stages(audio.input_sound_card);
    let mut processor = stages.any().then(|| Processor::new(stages));
    while audio.capture.pop().is_ok() {}
    while audio.reference.pop().is_ok() {}
    let mut next_levels = clock.now() + LEVELS_MS;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = clock.now();
                let r = drain(&mut audio.reference, &mut reference);
                let n = drain(&mut audio.capture, &mut cap);
                match processor.as_mut() {
                    Some(p) => {
                        p.push_reference(&reference[..r]);
                        let out = p.process_capture(&cap[..n]);
                        if !out.is_empty() {
                            mixer.push_capture(now, out);
                        }
                    }
                    None if n > 0 => mixer.push_capture(now, &cap[..n]),
                    None => {}
                }
                let queued = RING_SAMPLES - audio.playback.slots();
                if queued < super::driver::PLAYBACK_LEAD {
                    let want = super::driver::PLAYBACK_LEAD - queued;
                    mixer.pull_playback(&mut play[..want]);
                    if let Ok(mut chunk) = audio.playback.write_chunk(want) {
                        let (a, b) = chunk.as_mut_slices();
                        let la = a.len();
                        a.copy_from_slice(&play[..la]);
                        b.copy_from_slice(&play[la..want]);
                        chunk.commit_all();
                    }
                }
                if mixer.poll_timeout().is_some_and(|t| t <= now) {
                    mixer.handle_timeout(now);
                }
                if now >= next_levels {
                    next_levels = now + LEVELS_MS;
                    let _ = events.try_send(mixer.levels());
                }
            }
            d = transport.incoming.recv() => match d {
                Some((peer, d)) => mixer.datagram(clock.now(), &peer, &d),
                None => break,
            },
            c = commands.recv() => match c {
                Some(MixCommand::AddLeg { peer, session }) => mixer.add_leg(peer, session),
                Some(MixCommand::RemoveLeg(peer)) => mixer.remove_leg(&peer),
                Some(MixCommand::Mute(on)) => mixer.set_muted(on),
                Some(MixCommand::Exclude { peer, on }) => mixer.exclude(&peer, on),
                Some(MixCommand::Chime(c)) => mixer.chime(c),
                Some(MixCommand::Stop) | None => break,
            },
        }
        while let Some(p) = mixer.poll_transmit() {
            if transport.outgoing.try_send(p).is_err() {
                mixer.stats.dropped_out += 1;
            }
        }
        while let Some(e) = mixer.poll_event() {
            // A slow consumer loses stats events, never audio.
            let _ = events.try_send(e);
        }
    }
    let stats = mixer.stats();
    audio.close()?;
    Ok(stats)
}

/// Move everything in `ring` into `buf`; returns how many samples.
fn drain(ring: &mut rtrb::Consumer<i16>, buf: &mut [i16]) -> usize {
    let n = ring.slots();
    if n > 0
        && let Ok(chunk) = ring.read_chunk(n)
    {
        let (a, b) = chunk.as_slices();
        buf[..a.len()].copy_from_slice(a);
        buf[a.len()..a.len() + b.len()].copy_from_slice(b);
        chunk.commit_all();
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::Tone;
    use crate::media::{MediaKeys, Side};

    /// Strength of `hz` in `s` relative to the signal (0..1), Goertzel.
    fn share(s: &[i16], hz: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * hz / 48_000.0;
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in s {
            let s0 = x as f64 + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let p = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
        let e: f64 = s.iter().map(|&x| (x as f64).powi(2)).sum();
        2.0 * p / (s.len() as f64 * e.max(1.0))
    }

    /// A mixer with three remote participants, each a plain session
    /// playing its tone: each hears the other two and the mixer's own,
    /// never itself; the mixer plays the three.
    #[test]
    fn mix_minus_in_virtual_time() {
        let tones = [500.0, 700.0, 900.0];
        let mic_hz = 1100.0;
        let mut mixer = Mixer::new(MediaConfig::default()).unwrap();
        let mut remotes = Vec::new();
        for (i, hz) in tones.iter().enumerate() {
            let secret = [i as u8 + 1; 32];
            let ours = MediaSession::new(
                MediaConfig::default(),
                &MediaKeys::derive(&secret, Side::Caller),
                10 + i as u32,
                Millis::ZERO,
            )
            .unwrap();
            let theirs = MediaSession::new(
                MediaConfig::default(),
                &MediaKeys::derive(&secret, Side::Callee),
                20 + i as u32,
                Millis::ZERO,
            )
            .unwrap();
            mixer.add_leg(format!("p{i}"), Box::new(ours));
            remotes.push((theirs, Tone::new(*hz as f32, 0.2), Vec::<i16>::new()));
        }
        let mut mic = Tone::new(mic_hz as f32, 0.2);
        let mut played = Vec::new();
        let mut buf = [0i16; 960];
        for t in (0..3_000u64).step_by(20) {
            let t = Millis(t);
            mic.fill(&mut buf);
            mixer.push_capture(t, &buf);
            mixer.handle_timeout(t);
            let mut out = [0i16; 960];
            mixer.pull_playback(&mut out);
            played.extend_from_slice(&out);
            while let Some((peer, d)) = mixer.poll_transmit() {
                let i: usize = peer[1..].parse().unwrap();
                remotes[i].0.handle_datagram(t + 10, &d);
            }
            for (i, (s, tone, heard)) in remotes.iter_mut().enumerate() {
                tone.fill(&mut buf);
                s.push_capture(t, &buf);
                while let Some(d) = s.poll_transmit() {
                    mixer.datagram(t + 10, &format!("p{i}"), &d);
                }
                let mut out = [0i16; 960];
                s.pull_playback(t + 10, &mut out);
                heard.extend_from_slice(&out);
            }
        }
        let steady = |v: &[i16]| v[48_000..].to_vec();
        for (i, (_, _, heard)) in remotes.iter().enumerate() {
            let h = steady(heard);
            assert!(share(&h, tones[i]) < 0.01, "p{i} hears itself");
            assert!(share(&h, mic_hz) > 0.1, "p{i} misses the mixer");
            for (j, hz) in tones.iter().enumerate() {
                if j != i {
                    assert!(share(&h, *hz) > 0.1, "p{i} misses p{j}");
                }
            }
        }
        let p = steady(&played);
        assert!(share(&p, mic_hz) < 0.01, "the mixer hears itself");
        for hz in tones {
            assert!(share(&p, hz) > 0.15, "the mixer misses {hz}");
        }
        let s = mixer.stats();
        assert!(s.own_encodes > 100 && s.bytes_sent > 0, "{s:?}");
    }

    /// A chime goes into what we play, once, and not into what a leg
    /// is sent.
    #[test]
    fn a_chime_is_played_to_us_only() {
        let mut mixer = Mixer::new(MediaConfig::default()).unwrap();
        let secret = [9u8; 32];
        let ours = MediaSession::new(
            MediaConfig::default(),
            &MediaKeys::derive(&secret, Side::Caller),
            1,
            Millis::ZERO,
        )
        .unwrap();
        let mut theirs = MediaSession::new(
            MediaConfig::default(),
            &MediaKeys::derive(&secret, Side::Callee),
            2,
            Millis::ZERO,
        )
        .unwrap();
        mixer.add_leg("p".into(), Box::new(ours));
        let (mut played, mut heard) = (Vec::new(), Vec::new());
        let silence = [0i16; 960];
        for t in (0..1_000u64).step_by(20) {
            let t = Millis(t);
            if t == Millis(200) {
                mixer.chime(Chime::Joined);
            }
            mixer.push_capture(t, &silence);
            let mut out = [0i16; 960];
            mixer.pull_playback(&mut out);
            played.extend_from_slice(&out);
            while let Some((_, d)) = mixer.poll_transmit() {
                theirs.handle_datagram(t + 10, &d);
            }
            theirs.push_capture(t, &silence);
            while let Some(d) = theirs.poll_transmit() {
                mixer.datagram(t + 10, "p", &d);
            }
            theirs.pull_playback(t + 10, &mut out);
            heard.extend_from_slice(&out);
        }
        let loud = |v: &[i16]| v.iter().filter(|s| s.unsigned_abs() > 1_000).count();
        // 160 ms of chime, most of it above the threshold; once only.
        let n = loud(&played);
        assert!(n > 4_000 && n <= Chime::len(), "{n}");
        assert_eq!(loud(&played[..9_600]), 0, "not before it");
        assert!(loud(&played[24_000..]) == 0, "played once");
        assert_eq!(loud(&heard), 0, "the leg is not sent the chime");
    }
}

/// Mixer cost in process (not a timed test: `cargo test --profile dev --lib
/// media::mixer::bench -- --ignored --nocapture`): `n` legs, two talking,
/// ten seconds of audio through the mixer and back out to each sender's
/// session; the mixer's share of one core and its bandwidth.
#[cfg(test)]
mod bench {
    use super::*;
    use crate::media::audio::Tone;
    use crate::media::{MediaKeys, Side};

    fn run(n: usize) {
        let mut mixer = Mixer::new(MediaConfig::default()).unwrap();
        let mut remotes = Vec::new();
        for i in 0..n {
            let secret = [i as u8 + 1; 32];
            let ours = MediaSession::new(
                MediaConfig::default(),
                &MediaKeys::derive(&secret, Side::Caller),
                i as u32,
                Millis::ZERO,
            )
            .unwrap();
            let theirs = MediaSession::new(
                MediaConfig::default(),
                &MediaKeys::derive(&secret, Side::Callee),
                1000 + i as u32,
                Millis::ZERO,
            )
            .unwrap();
            mixer.add_leg(format!("p{i:02}"), Box::new(ours));
            // Two talk, the rest are silent.
            let amp = if i < 2 { 0.2 } else { 0.0 };
            remotes.push((theirs, Tone::new(300.0 + 97.0 * i as f32, amp)));
        }
        let mut mic = Tone::new(1000.0, 0.0);
        let mut buf = [0i16; 960];
        let mut mixer_time = std::time::Duration::ZERO;
        let secs = 10u64;
        for t in (0..secs * 1000).step_by(20) {
            let t = Millis(t);
            for (i, (s, tone)) in remotes.iter_mut().enumerate() {
                tone.fill(&mut buf);
                s.push_capture(t, &buf);
                while let Some(d) = s.poll_transmit() {
                    let t0 = std::time::Instant::now();
                    mixer.datagram(t + 5, &format!("p{i:02}"), &d);
                    mixer_time += t0.elapsed();
                }
            }
            let t0 = std::time::Instant::now();
            mic.fill(&mut buf);
            mixer.push_capture(t + 10, &buf);
            mixer.handle_timeout(t + 10);
            let mut out = [0i16; 960];
            mixer.pull_playback(&mut out);
            let mut sent = Vec::new();
            while let Some(p) = mixer.poll_transmit() {
                sent.push(p);
            }
            mixer_time += t0.elapsed();
            for (peer, d) in sent {
                let i: usize = peer[1..].parse().unwrap();
                remotes[i].0.handle_datagram(t + 15, &d);
            }
        }
        let s = mixer.stats();
        eprintln!(
            "{:2} participants: mixer {:.1} % of one core; sends {:.0} kbit/s, receives {:.0} kbit/s; {} own and {} shared encodings",
            n + 1,
            mixer_time.as_secs_f64() * 100.0 / secs as f64,
            s.bytes_sent as f64 * 8.0 / secs as f64 / 1000.0,
            s.bytes_received as f64 * 8.0 / secs as f64 / 1000.0,
            s.own_encodes,
            s.shared_encodes
        );
    }

    #[test]
    #[ignore = "a benchmark: run with --ignored --nocapture"]
    fn mixer_cost_at_5_10_25() {
        for n in [4, 9, 24] {
            run(n);
        }
    }
}
