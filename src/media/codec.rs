//! Opus at 48 kHz mono in VOIP mode: the encoder (frame size, bitrate,
//! in-band FEC tuned by the loss the receiver reports) and the decoder
//! (normal decoding, loss concealment, and FEC recovery of a lost frame
//! from the packet after it).

use super::audio::SAMPLE_RATE;
use thiserror::Error;

/// Largest encoded frame we produce (Opus allows 1275 bytes per frame;
/// voice at our bitrates is far below).
pub const MAX_PACKET: usize = 1275;
/// Largest frame the decoder accepts: 120 ms.
pub const MAX_FRAME_SAMPLES: usize = SAMPLE_RATE as usize * 120 / 1000;

#[derive(Debug, Error)]
pub enum CodecError {
    #[error("frame duration {0} ms: expected 10, 20 or 40")]
    FrameDuration(u32),
    #[error("bitrate {0} b/s: expected 6000 to 510000")]
    Bitrate(u32),
    #[error("encoder got {got} samples, expected {expected}")]
    FrameSize { got: usize, expected: usize },
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
}

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecConfig {
    /// 10, 20 or 40 ms.
    pub frame_ms: u32,
    /// Target bits per second.
    pub bitrate: u32,
    /// In-band forward error correction (LBRR).
    pub fec: bool,
    /// Loss percentage the encoder assumes before the first receiver
    /// report, and at least afterwards while FEC is on: Opus adds FEC
    /// only for a loss above 0.
    pub min_loss_percent: u8,
    /// Encoder complexity, 0-10 (CPU for quality; libopus' default is 9).
    pub complexity: u8,
}

impl Default for CodecConfig {
    fn default() -> Self {
        CodecConfig {
            frame_ms: 20,
            bitrate: 32_000,
            fec: true,
            min_loss_percent: 5,
            complexity: 9,
        }
    }
}

impl CodecConfig {
    pub fn validate(&self) -> Result<(), CodecError> {
        if ![10, 20, 40].contains(&self.frame_ms) {
            return Err(CodecError::FrameDuration(self.frame_ms));
        }
        if !(6_000..=510_000).contains(&self.bitrate) {
            return Err(CodecError::Bitrate(self.bitrate));
        }
        Ok(())
    }

    pub fn frame_samples(&self) -> usize {
        (SAMPLE_RATE / 1000 * self.frame_ms) as usize
    }
}

pub struct Encoder {
    inner: opus::Encoder,
    config: CodecConfig,
    loss_percent: u8,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("config", &self.config)
            .field("loss_percent", &self.loss_percent)
            .finish()
    }
}

impl Encoder {
    pub fn new(config: CodecConfig) -> Result<Self, CodecError> {
        config.validate()?;
        let mut inner =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
        inner.set_bitrate(opus::Bitrate::Bits(config.bitrate as i32))?;
        inner.set_inband_fec(config.fec)?;
        inner.set_signal(opus::Signal::Voice)?;
        inner.set_complexity(config.complexity.min(10) as i32)?;
        let mut e = Encoder {
            inner,
            config,
            loss_percent: 0,
        };
        e.set_loss_percent(0)?;
        Ok(e)
    }

    pub fn config(&self) -> &CodecConfig {
        &self.config
    }

    /// The loss the encoder currently plans FEC for.
    pub fn loss_percent(&self) -> u8 {
        self.loss_percent
    }

    /// Feed back the loss the receiver reported (0-100).
    pub fn set_loss_percent(&mut self, reported: u8) -> Result<(), CodecError> {
        let p = if self.config.fec {
            reported.max(self.config.min_loss_percent)
        } else {
            reported
        }
        .min(100);
        if p != self.loss_percent || p == 0 {
            self.inner.set_packet_loss_perc(p as i32)?;
            self.loss_percent = p;
        }
        Ok(())
    }

    pub fn set_bitrate(&mut self, bitrate: u32) -> Result<(), CodecError> {
        if !(6_000..=510_000).contains(&bitrate) {
            return Err(CodecError::Bitrate(bitrate));
        }
        self.inner
            .set_bitrate(opus::Bitrate::Bits(bitrate as i32))?;
        self.config.bitrate = bitrate;
        Ok(())
    }

    /// Encode exactly one frame into `out`; returns the packet length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        let expected = self.config.frame_samples();
        if pcm.len() != expected {
            return Err(CodecError::FrameSize {
                got: pcm.len(),
                expected,
            });
        }
        Ok(self.inner.encode(pcm, out)?)
    }

    /// Encoder delay in samples (lookahead), for latency accounting.
    pub fn lookahead(&mut self) -> usize {
        self.inner.get_lookahead().unwrap_or(0).max(0) as usize
    }
}

pub struct Decoder {
    inner: opus::Decoder,
    /// Samples per frame of the stream, learnt from the packets (the
    /// sender picks its frame size); used to size concealment.
    frame_samples: usize,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("frame_samples", &self.frame_samples)
            .finish()
    }
}

impl Decoder {
    pub fn new(frame_samples: usize) -> Result<Self, CodecError> {
        Ok(Decoder {
            inner: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)?,
            frame_samples: frame_samples.clamp(1, MAX_FRAME_SAMPLES),
        })
    }

    /// Samples in `packet` (its frame duration), without decoding it.
    pub fn samples_in(packet: &[u8]) -> Option<usize> {
        opus::packet::get_nb_samples(packet, SAMPLE_RATE)
            .ok()
            .filter(|&n| n > 0 && n <= MAX_FRAME_SAMPLES)
    }

    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    /// Decode a packet into `out` (at least [`MAX_FRAME_SAMPLES`] long);
    /// returns the samples written.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if let Some(n) = Self::samples_in(packet) {
            self.frame_samples = n;
        }
        Ok(self.inner.decode(packet, out, false)?)
    }

    /// Conceal one lost frame (packet loss concealment).
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        let n = self.frame_samples.min(out.len());
        Ok(self.inner.decode(&[], &mut out[..n], false)?)
    }

    /// Recover the frame lost just before `next` from the FEC data in
    /// `next` (falls back to concealment inside libopus when `next` has
    /// none). `next` itself must then be decoded normally.
    pub fn recover(&mut self, next: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let n = self.frame_samples.min(out.len());
        Ok(self.inner.decode(next, &mut out[..n], true)?)
    }
}

/// Whether a packet carries FEC (LBRR) data for the frame before it.
pub fn has_fec(packet: &[u8]) -> bool {
    if packet.is_empty() || packet.len() > i32::MAX as usize {
        return false;
    }
    // SAFETY: libopus reads at most `len` bytes of `packet` and validates
    // the packet structure before looking into it.
    unsafe { opusic_sys::opus_packet_has_lbrr(packet.as_ptr(), packet.len() as i32) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20 ms frames of the speech sample, from its first second on.
    fn speech(n: usize) -> Vec<Vec<i16>> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/speech.wav");
        let s = crate::media::audio::read_wav(std::path::Path::new(path)).unwrap();
        s[48_000..]
            .chunks(960)
            .take(n)
            .map(|c| c.to_vec())
            .collect()
    }

    #[test]
    fn config_is_checked() {
        assert!(
            Encoder::new(CodecConfig {
                frame_ms: 30,
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            Encoder::new(CodecConfig {
                bitrate: 100,
                ..Default::default()
            })
            .is_err()
        );
        let mut e = Encoder::new(CodecConfig::default()).unwrap();
        let mut out = [0u8; MAX_PACKET];
        assert!(matches!(
            e.encode(&[0; 100], &mut out),
            Err(CodecError::FrameSize { .. })
        ));
        for ms in [10, 20, 40] {
            let c = CodecConfig {
                frame_ms: ms,
                ..Default::default()
            };
            let mut e = Encoder::new(c).unwrap();
            let n = e.encode(&vec![0; c.frame_samples()], &mut out).unwrap();
            assert_eq!(Decoder::samples_in(&out[..n]), Some(c.frame_samples()));
        }
    }

    #[test]
    fn fec_recovers_a_lost_frame_better_than_concealment() {
        let mut enc = Encoder::new(CodecConfig::default()).unwrap();
        enc.set_loss_percent(20).unwrap();
        let input = speech(60);
        let mut packets = Vec::new();
        let mut buf = [0u8; MAX_PACKET];
        for f in &input {
            let n = enc.encode(f, &mut buf).unwrap();
            packets.push(buf[..n].to_vec());
        }
        let with = packets.iter().filter(|p| has_fec(p)).count();
        assert!(with > 40, "LBRR in {with} of 60 speech packets");
        let mut with_fec = Decoder::new(960).unwrap();
        let mut plc = Decoder::new(960).unwrap();
        let mut out = vec![0i16; MAX_FRAME_SAMPLES];
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            if i == 40 {
                let n = with_fec.recover(&packets[41], &mut out).unwrap();
                a.extend_from_slice(&out[..n]);
                let n = plc.conceal(&mut out).unwrap();
                b.extend_from_slice(&out[..n]);
                continue;
            }
            let n = with_fec.decode(p, &mut out).unwrap();
            a.extend_from_slice(&out[..n]);
            let n = plc.decode(p, &mut out).unwrap();
            b.extend_from_slice(&out[..n]);
        }
        // Compare the lost frame's region with a clean decode.
        let mut clean = Decoder::new(960).unwrap();
        let mut c = Vec::new();
        for p in &packets {
            let n = clean.decode(p, &mut out).unwrap();
            c.extend_from_slice(&out[..n]);
        }
        let err = |x: &[i16]| -> f64 {
            x[40 * 960..41 * 960]
                .iter()
                .zip(&c[40 * 960..41 * 960])
                .map(|(&p, &q)| (p as f64 - q as f64).powi(2))
                .sum()
        };
        assert!(err(&a) < err(&b), "fec {} plc {}", err(&a), err(&b));
    }

    #[test]
    fn loss_feedback_respects_the_floor() {
        let mut e = Encoder::new(CodecConfig::default()).unwrap();
        assert_eq!(e.loss_percent(), 5);
        e.set_loss_percent(12).unwrap();
        assert_eq!(e.loss_percent(), 12);
        e.set_loss_percent(0).unwrap();
        assert_eq!(e.loss_percent(), 5);
        let e = Encoder::new(CodecConfig {
            fec: false,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(e.loss_percent(), 0);
        assert!(!has_fec(&[]));
    }
}
