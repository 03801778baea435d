//! One call's media, sans-IO: captured PCM in, encrypted datagrams out;
//! datagrams in, PCM to play out; receiver reports, stats events and a
//! media timeout on the timer. No clock, socket or audio device inside:
//! the driver passes `now` (ms) and moves bytes and samples.

use super::codec::{CodecConfig, CodecError, Decoder, Encoder, MAX_FRAME_SAMPLES, MAX_PACKET};
use super::jitter::{JitterBuffer, JitterConfig, JitterStats, Playout};
use super::packet::{Kind, MediaKeys, Opener, PacketError, Sealer};
use super::report::{ReceiveStats, Report, rtt_ms};
use super::tsm::{self, Level};
use crate::time::Millis;
use std::collections::VecDeque;

/// Everything a media session is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaConfig {
    pub codec: CodecConfig,
    pub jitter: JitterConfig,
    /// Interval between receiver reports (and stats events), ms.
    pub report_interval_ms: u64,
    /// Nothing authentic from the peer for this long ends the media with
    /// [`MediaEvent::Timeout`].
    pub timeout_ms: u64,
    /// Echo cancellation, noise suppression and gain on the microphone
    /// path (run by the driver, before the session).
    pub processing: super::processing::ProcessingConfig,
    /// For benchmarks: the driver impairs what this side sends.
    pub impair: Option<super::impair::ImpairConfig>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            codec: CodecConfig::default(),
            jitter: JitterConfig::default(),
            report_interval_ms: 1_000,
            timeout_ms: 15_000,
            processing: Default::default(),
            impair: None,
        }
    }
}

/// A snapshot of a session's counters, published as a stats event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaStats {
    /// Round-trip time from the last report, ms.
    pub rtt_ms: Option<u32>,
    /// Loss of *our* stream as the peer last reported it, percent.
    pub remote_loss_percent: f64,
    /// Jitter the peer measured on our stream, ms.
    pub remote_jitter_ms: f64,
    /// Loss the encoder plans FEC for, percent.
    pub encoder_loss_percent: u8,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub bytes_received: u64,
    /// Audio frames of the peer's stream expected and lost (sequence gaps).
    pub frames_expected: u64,
    pub frames_lost: u64,
    /// Interarrival jitter of the peer's stream, ms.
    pub jitter_ms: f64,
    pub jitter_buffer: JitterStats,
    /// Datagrams dropped: not a media packet, failed authentication
    /// (tampered, or another key), replayed, or undecodable.
    pub malformed: u64,
    pub auth_failed: u64,
    pub replayed: u64,
    pub decode_errors: u64,
    /// Reports received.
    pub reports: u64,
    /// Peak level of the audio we sent (silence when muted) over the last
    /// report interval, 0.0 to 1.0: the UI's microphone meter.
    pub mic_level: f32,
    /// The microphone path's processing: stages on, echo measures (filled
    /// in by the driver, which runs it).
    pub processing: super::processing::ProcessingStats,
    /// Estimated call quality (E-model MOS and bars) from the figures
    /// above.
    pub quality: super::quality::Quality,
}

impl MediaStats {
    pub fn loss_percent(&self) -> f64 {
        if self.frames_expected == 0 {
            0.0
        } else {
            self.frames_lost as f64 * 100.0 / self.frames_expected as f64
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// The first authentic packet from the peer arrived.
    Flowing,
    /// Periodic statistics (after each report we send).
    Stats(Box<MediaStats>),
    /// Nothing authentic arrived for `silent_ms`: the path is gone.
    Timeout { silent_ms: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Packet(#[from] PacketError),
}

/// The media of one call; see the [module docs](self).
#[derive(Debug)]
pub struct MediaSession {
    config: MediaConfig,
    encoder: Encoder,
    decoder: Decoder,
    sealer: Sealer,
    opener: Opener,
    frame_samples: usize,
    capture: Vec<i16>,
    seq: u16,
    timestamp: u32,
    marker: bool,
    jitter: JitterBuffer,
    recv: ReceiveStats,
    remote_ssrc: Option<u32>,
    playback: VecDeque<i16>,
    decoded: Vec<i16>,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<MediaEvent>,
    next_report_at: Millis,
    /// The peer's last report: its `sent_at` and when we got it.
    peer_report: Option<(u32, Millis)>,
    last_recv: Millis,
    timed_out: bool,
    muted: bool,
    on_hold: bool,
    /// Recoveries whose next packet carried no FEC data.
    fec_missing: u64,
    /// Lost frames rebuilt from DRED: of those (a successor without FEC
    /// data, then the jitter buffer's `Dred` playouts).
    dred_for_fec: u64,
    dred_later: u64,
    stats: MediaStats,
    /// Peak absolute sample sent since the last report.
    level_peak: u16,
    /// Level of the audio played, to change the delay in its pauses.
    play_level: Level,
    /// Scratch for time-scale modification (unplayed audio plus a new
    /// frame, and the result): reused, not reallocated per frame.
    tsm_in: Vec<i16>,
    tsm_out: Vec<i16>,
}

/// Transmit queue bound: a stalled driver drops the oldest audio.
const MAX_TRANSMITS: usize = 256;
/// Decoded audio held ahead of the device, at most (samples).
const MAX_PLAYBACK: usize = 48_000;

impl MediaSession {
    /// `ssrc` is a random identifier of our stream (from the driver's RNG).
    pub fn new(
        config: MediaConfig,
        keys: &MediaKeys,
        ssrc: u32,
        now: Millis,
    ) -> Result<Self, MediaError> {
        let encoder = Encoder::new(config.codec)?;
        let frame_samples = config.codec.frame_samples();
        Ok(MediaSession {
            decoder: Decoder::new(frame_samples)?,
            jitter: JitterBuffer::new(config.jitter.clone(), config.codec.frame_ms as f64),
            encoder,
            sealer: Sealer::new(&keys.send, ssrc),
            opener: Opener::new(&keys.recv),
            frame_samples,
            capture: Vec::with_capacity(frame_samples * 2),
            seq: 0,
            timestamp: 0,
            marker: true,
            recv: ReceiveStats::default(),
            remote_ssrc: None,
            playback: VecDeque::new(),
            decoded: vec![0; MAX_FRAME_SAMPLES],
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_report_at: now + config.report_interval_ms,
            peer_report: None,
            last_recv: now,
            timed_out: false,
            muted: false,
            on_hold: false,
            fec_missing: 0,
            dred_for_fec: 0,
            dred_later: 0,
            stats: MediaStats::default(),
            level_peak: 0,
            play_level: Level::default(),
            tsm_in: Vec::with_capacity(2 * MAX_FRAME_SAMPLES),
            tsm_out: Vec::with_capacity(4 * MAX_FRAME_SAMPLES),
            config,
        })
    }

    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    pub fn ssrc(&self) -> u32 {
        self.sealer.ssrc()
    }

    /// Current counters.
    pub fn stats(&self) -> MediaStats {
        let mut s = self.stats.clone();
        s.frames_expected = self.recv.expected();
        s.frames_lost = self.recv.lost();
        s.jitter_ms = self.recv.jitter_ms();
        s.jitter_buffer = self.jitter.stats().clone();
        s.jitter_buffer.fec_recovered -= self.fec_missing.min(s.jitter_buffer.fec_recovered);
        s.jitter_buffer.concealed += self.fec_missing;
        s.jitter_buffer.dred_recovered = self.dred_for_fec + self.dred_later;
        s.jitter_buffer.concealed -= s
            .jitter_buffer
            .dred_recovered
            .min(s.jitter_buffer.concealed);
        s.encoder_loss_percent = self.encoder.loss_percent();
        s.quality = super::quality::Line {
            rtt_ms: s.rtt_ms.map(f64::from),
            loss_percent: s.loss_percent().max(s.remote_loss_percent),
            jitter_ms: s.jitter_ms,
            buffer_ms: s.jitter_buffer.delay_ms.max(0.0),
            frame_ms: self.config.codec.frame_ms as f64,
        }
        .quality();
        s
    }

    /// Muted: we send silence (the stream and its timing go on).
    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    /// On hold (either side): no audio is sent or played; reports go on,
    /// keeping the path and its NAT mappings alive. The jitter buffer
    /// starts afresh on resume.
    pub fn set_hold(&mut self, on_hold: bool) {
        if self.on_hold && !on_hold {
            self.jitter.reset();
            self.marker = true;
        }
        self.on_hold = on_hold;
        self.capture.clear();
        self.playback.clear();
    }

    pub fn is_muted(&self) -> bool {
        self.muted
    }

    pub fn is_on_hold(&self) -> bool {
        self.on_hold
    }

    /// Captured audio (48 kHz mono, any amount): whole frames are encoded
    /// and queued for sending.
    pub fn push_capture(&mut self, _now: Millis, pcm: &[i16]) {
        if self.on_hold {
            return;
        }
        self.capture.extend_from_slice(pcm);
        let mut packet = [0u8; MAX_PACKET];
        let mut start = 0;
        while self.capture.len() - start >= self.frame_samples {
            let frame = &mut self.capture[start..start + self.frame_samples];
            if self.muted {
                frame.fill(0);
            }
            let peak = frame.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
            self.level_peak = self.level_peak.max(peak);
            start += self.frame_samples;
            match self.encoder.encode(
                &self.capture[start - self.frame_samples..start],
                &mut packet,
            ) {
                Ok(n) => {
                    match self.sealer.seal(
                        Kind::Audio,
                        self.marker,
                        self.seq,
                        self.timestamp,
                        &packet[..n],
                    ) {
                        Ok(p) => self.queue(p),
                        Err(e) => tracing::warn!("media: {e}"),
                    }
                    self.marker = false;
                }
                Err(e) => tracing::warn!("media: encoding failed: {e}"),
            }
            self.seq = self.seq.wrapping_add(1);
            self.timestamp = self.timestamp.wrapping_add(self.frame_samples as u32);
        }
        self.capture.drain(..start);
    }

    /// An Opus frame encoded elsewhere (a conference mixer's encoding
    /// shared by receivers with the same mix): sealed and queued as our
    /// next frame.
    pub fn push_encoded(&mut self, _now: Millis, opus: &[u8]) {
        if self.on_hold {
            return;
        }
        match self
            .sealer
            .seal(Kind::Audio, self.marker, self.seq, self.timestamp, opus)
        {
            Ok(p) => self.queue(p),
            Err(e) => tracing::warn!("media: {e}"),
        }
        self.marker = false;
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(self.frame_samples as u32);
    }

    /// When the last authentic datagram from the peer arrived (the
    /// session's start before any).
    pub fn last_received(&self) -> Millis {
        self.last_recv
    }

    /// Whether any authentic datagram came from the peer.
    pub fn heard_any(&self) -> bool {
        self.stats.packets_received > 0
    }

    fn queue(&mut self, p: Vec<u8>) {
        if self.transmits.len() >= MAX_TRANSMITS {
            self.transmits.pop_front();
        }
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += p.len() as u64;
        self.transmits.push_back(p);
    }

    /// A media datagram from the peer. Anything inauthentic is dropped
    /// and counted.
    pub fn handle_datagram(&mut self, now: Millis, d: &[u8]) {
        let (h, body) = match self.opener.open(d) {
            Ok(x) => x,
            Err(e) => {
                match e {
                    PacketError::Malformed => self.stats.malformed += 1,
                    PacketError::AuthFailed => self.stats.auth_failed += 1,
                    PacketError::Replayed | PacketError::Exhausted => self.stats.replayed += 1,
                }
                return;
            }
        };
        self.stats.packets_received += 1;
        self.stats.bytes_received += d.len() as u64;
        if self.stats.packets_received == 1 {
            self.events.push_back(MediaEvent::Flowing);
        }
        self.last_recv = now;
        self.timed_out = false;
        match h.kind {
            Kind::Report => match Report::decode(&body) {
                Ok(r) => self.on_report(now, &r),
                Err(_) => self.stats.malformed += 1,
            },
            Kind::Audio => {
                if self.remote_ssrc != Some(h.ssrc) {
                    // A new stream (the peer restarted its media): start
                    // the timeline over.
                    if self.remote_ssrc.is_some() {
                        self.jitter.reset();
                        self.recv = ReceiveStats::default();
                    }
                    self.remote_ssrc = Some(h.ssrc);
                }
                let Some(samples) = Decoder::samples_in(&body) else {
                    self.stats.decode_errors += 1;
                    return;
                };
                let ext = self.recv.extend(h.seq);
                self.recv.on_packet(now, ext, h.timestamp);
                if !self.on_hold {
                    self.jitter.push(now, ext, samples as f64 / 48.0, body);
                }
            }
        }
    }

    fn on_report(&mut self, now: Millis, r: &Report) {
        self.stats.reports += 1;
        self.peer_report = Some((r.sent_at, now));
        if let Some(rtt) = rtt_ms(now, r) {
            self.stats.rtt_ms = Some(rtt);
        }
        self.stats.remote_loss_percent = r.fraction_lost as f64 * 100.0 / 256.0;
        self.stats.remote_jitter_ms = r.jitter_us as f64 / 1000.0;
        // Plan FEC for the loss the peer sees, rounded up.
        let pct = (r.fraction_lost as u32 * 100).div_ceil(256) as u8;
        if let Err(e) = self.encoder.set_loss_percent(pct) {
            tracing::warn!("media: {e}");
        }
    }

    /// Fill `out` with audio to play now: decoded frames from the jitter
    /// buffer, concealment or FEC recovery for lost ones, silence before
    /// the first frame and on hold.
    pub fn pull_playback(&mut self, now: Millis, out: &mut [i16]) {
        if self.on_hold {
            out.fill(0);
            return;
        }
        while self.playback.len() < out.len() {
            let n = match self.jitter.pop(now) {
                Playout::Silence => {
                    let n = self.decoder.frame_samples();
                    self.decoded[..n].fill(0);
                    Ok(n)
                }
                Playout::Frame(p) => self.decoder.decode(&p, &mut self.decoded),
                Playout::Recover(next) => {
                    if super::codec::has_fec(&next) {
                        self.decoder.recover(&next, &mut self.decoded)
                    } else {
                        // No LBRR: DRED from the same packet, else
                        // concealment (counted as such).
                        self.fec_missing += 1;
                        match self.decoder.recover_dred(&next, 1, &mut self.decoded) {
                            Ok(Some(n)) => {
                                self.dred_for_fec += 1;
                                Ok(n)
                            }
                            _ => self.decoder.conceal(&mut self.decoded),
                        }
                    }
                }
                Playout::Dred { later, back } => {
                    match self
                        .decoder
                        .recover_dred(&later, back as usize, &mut self.decoded)
                    {
                        Ok(Some(n)) => {
                            self.dred_later += 1;
                            Ok(n)
                        }
                        _ => self.decoder.conceal(&mut self.decoded),
                    }
                }
                Playout::Conceal => self.decoder.conceal(&mut self.decoded),
            };
            let n = match n {
                Ok(n) if n > 0 => n,
                Ok(_) | Err(_) => {
                    self.stats.decode_errors += 1;
                    let n = self.decoder.frame_samples();
                    self.decoded[..n].fill(0);
                    n
                }
            };
            self.queue_decoded(n);
        }
        let n = out.len();
        for (o, s) in out.iter_mut().zip(self.playback.drain(..n)) {
            *o = s;
        }
        if self.playback.len() > MAX_PLAYBACK {
            let extra = self.playback.len() - MAX_PLAYBACK;
            self.playback.drain(..extra);
        }
    }

    /// Queue `decoded[..n]` for playout, shortened or lengthened (with
    /// the unplayed audio before it) when the jitter buffer's delay is
    /// off its target: in pauses once 8 ms too long or 4 ms too short
    /// (running short means late frames and concealment), in speech only
    /// by more than a frame, one pitch period at a time.
    fn queue_decoded(&mut self, n: usize) {
        let frame = &self.decoded[..n];
        let quiet = self.play_level.observe(frame);
        let excess = self.jitter.excess_ms();
        let (short, long) = if quiet {
            (-4.0, 8.0)
        } else {
            let f = self.jitter.frame_ms().max(10.0);
            (-f, f)
        };
        if (short..=long).contains(&excess) {
            self.playback.extend(frame);
            return;
        }
        self.tsm_in.clear();
        self.tsm_in.extend(self.playback.iter());
        self.tsm_in.extend_from_slice(frame);
        self.tsm_out.clear();
        let want = (excess.abs() * 48.0) as usize;
        let changed = if excess > 0.0 {
            tsm::accelerate(&self.tsm_in, want, quiet, &mut self.tsm_out)
        } else {
            tsm::expand(&self.tsm_in, want, quiet, &mut self.tsm_out)
        };
        if changed == 0 {
            self.playback.extend(frame);
            return;
        }
        self.playback.clear();
        self.playback.extend(&self.tsm_out);
        let ms = changed as f64 / 48.0;
        self.jitter.shifted(if excess > 0.0 { -ms } else { ms });
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Millis> {
        let silence = if self.timed_out {
            Millis::MAX
        } else {
            self.last_recv + self.config.timeout_ms
        };
        Some(self.next_report_at.min(silence))
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        if now >= self.next_report_at {
            self.send_report(now);
            self.next_report_at = now + self.config.report_interval_ms;
        }
        if !self.timed_out && now >= self.last_recv + self.config.timeout_ms {
            self.timed_out = true;
            self.events.push_back(MediaEvent::Timeout {
                silent_ms: now - self.last_recv,
            });
        }
    }

    fn send_report(&mut self, now: Millis) {
        let (highest, lost, fraction_lost, jitter_us) = self.recv.report();
        let (echo, echo_delay) = match self.peer_report {
            Some((sent_at, at)) => (sent_at, (now - at) as u32),
            None => (0, 0),
        };
        let r = Report {
            // 0 means "none" in the echo field.
            sent_at: (now.get() as u32).max(1),
            echo,
            echo_delay,
            highest,
            lost,
            fraction_lost,
            jitter_us,
            delay_ms: self.jitter.stats().delay_ms.clamp(0.0, 65_535.0) as u16,
        };
        match self.sealer.seal(Kind::Report, false, 0, 0, &r.encode()) {
            Ok(p) => self.queue(p),
            Err(e) => tracing::warn!("media: {e}"),
        }
        self.stats.mic_level = f32::from(self.level_peak) / 32768.0;
        self.level_peak = 0;
        self.events
            .push_back(MediaEvent::Stats(Box::new(self.stats())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::Tone;
    use crate::media::packet::Side;

    fn pair() -> (MediaSession, MediaSession) {
        let secret = [3u8; 32];
        let a = MediaSession::new(
            MediaConfig::default(),
            &MediaKeys::derive(&secret, Side::Caller),
            1,
            Millis::ZERO,
        )
        .unwrap();
        let b = MediaSession::new(
            MediaConfig::default(),
            &MediaKeys::derive(&secret, Side::Callee),
            2,
            Millis::ZERO,
        )
        .unwrap();
        (a, b)
    }

    #[test]
    fn audio_reports_and_rtt_in_virtual_time() {
        let (mut a, mut b) = pair();
        let mut tone = Tone::new(440.0, 0.3);
        let mut cap = [0i16; 480];
        let mut out = [0i16; 480];
        let mut heard = Vec::new();
        for t in (0..5_000u64).step_by(10) {
            tone.fill(&mut cap);
            let t = Millis(t);
            a.push_capture(t, &cap);
            b.push_capture(t, &[0; 480]);
            a.handle_timeout(t);
            b.handle_timeout(t);
            // 15 ms one way.
            while let Some(p) = a.poll_transmit() {
                b.handle_datagram(t + 15, &p);
            }
            while let Some(p) = b.poll_transmit() {
                a.handle_datagram(t + 15, &p);
            }
            b.pull_playback(t + 15, &mut out);
            heard.extend_from_slice(&out);
        }
        let s = a.stats();
        assert_eq!(s.rtt_ms, Some(30), "{s:?}");
        assert!(s.reports >= 4);
        let sb = b.stats();
        assert_eq!((sb.frames_lost, sb.auth_failed, sb.replayed), (0, 0, 0));
        assert!(sb.frames_expected >= 240, "{sb:?}");
        let crossings = heard[48_000..]
            .windows(2)
            .filter(|w| w[0] < 0 && w[1] >= 0)
            .count() as f64
            / ((heard.len() - 48_000) as f64 / 48_000.0);
        assert!((crossings - 440.0).abs() < 3.0, "{crossings} Hz");
        assert!(matches!(b.poll_event(), Some(MediaEvent::Flowing)));
    }

    #[test]
    fn silence_times_out_once() {
        let (mut a, _) = pair();
        a.handle_timeout(Millis(14_000));
        while a.poll_event().is_some() {}
        a.handle_timeout(Millis(15_000));
        let ev: Vec<_> = std::iter::from_fn(|| a.poll_event()).collect();
        assert!(
            ev.contains(&MediaEvent::Timeout { silent_ms: 15_000 }),
            "{ev:?}"
        );
        a.handle_timeout(Millis(16_000));
        assert!(
            std::iter::from_fn(|| a.poll_event()).all(|e| !matches!(e, MediaEvent::Timeout { .. }))
        );
    }
}
