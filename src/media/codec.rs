//! Opus at 48 kHz mono in VOIP mode: the encoder (frame size, bitrate,
//! in-band FEC and Deep REDundancy tuned by the loss the receiver
//! reports) and the decoder (normal decoding, deep loss concealment, FEC
//! recovery of a lost frame from the packet after it, and DRED recovery
//! from a later packet, up to a second back). Built on
//! `media::libopus`.

use super::audio::SAMPLE_RATE;
use super::libopus::{self, OpusError};
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
    Opus(#[from] OpusError),
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
    /// Deep REDundancy: each packet carries a neural coding of the past,
    /// as long as the reported loss calls for ([`dred_frames`]).
    pub dred: bool,
}

/// From this planned loss (percent) on, DRED replaces LBRR: libopus
/// gives DRED only what LBRR leaves of the bitrate (about 15 ms of
/// history at 32 kb/s), and alone most of it (about 175 ms), which
/// rebuilds bursts LBRR cannot; below it LBRR's one frame is the better
/// copy of an isolated loss.
pub const DRED_OVER_LBRR_PERCENT: u8 = 10;

/// DRED history to send for a planned loss (percent), in 10 ms frames:
/// 200 ms at the floor of 5 %, growing to a second at 25 % and more.
pub fn dred_frames(loss_percent: u8) -> i32 {
    if loss_percent == 0 {
        0
    } else {
        (loss_percent as i32 * 4).clamp(20, 100)
    }
}

impl Default for CodecConfig {
    fn default() -> Self {
        CodecConfig {
            frame_ms: 20,
            bitrate: 32_000,
            fec: true,
            min_loss_percent: 5,
            complexity: 9,
            dred: true,
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
    inner: libopus::Encoder,
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
        let mut inner = libopus::Encoder::new(SAMPLE_RATE)?;
        inner.set_bitrate(config.bitrate as i32)?;
        inner.set_inband_fec(config.fec)?;
        inner.set_voice()?;
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
            let dred = if self.config.dred { dred_frames(p) } else { 0 };
            self.inner.set_dred_duration(dred)?;
            let dred_only = self.config.dred && p >= DRED_OVER_LBRR_PERCENT;
            self.inner.set_inband_fec(self.config.fec && !dred_only)?;
            self.loss_percent = p;
        }
        Ok(())
    }

    pub fn set_bitrate(&mut self, bitrate: u32) -> Result<(), CodecError> {
        if !(6_000..=510_000).contains(&bitrate) {
            return Err(CodecError::Bitrate(bitrate));
        }
        self.inner.set_bitrate(bitrate as i32)?;
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
        self.inner.lookahead().unwrap_or(0)
    }
}

pub struct Decoder {
    inner: libopus::Decoder,
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
            inner: libopus::Decoder::new(SAMPLE_RATE)?,
            frame_samples: frame_samples.clamp(1, MAX_FRAME_SAMPLES),
        })
    }

    /// Samples in `packet` (its frame duration), without decoding it.
    pub fn samples_in(packet: &[u8]) -> Option<usize> {
        libopus::samples_in(packet, SAMPLE_RATE)
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

    /// Conceal one lost frame (libopus' deep packet loss concealment).
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        let n = self.frame_samples.min(out.len());
        Ok(self.inner.decode(&[], &mut out[..n], false)?)
    }

    /// Rebuild the frame lost `back` frames before `later` from the DRED
    /// data in `later`; `None` when `later` does not reach that far back
    /// (conceal instead).
    pub fn recover_dred(
        &mut self,
        later: &[u8],
        back: usize,
        out: &mut [i16],
    ) -> Result<Option<usize>, CodecError> {
        let n = self.frame_samples.min(out.len());
        let offset = back * n;
        // Parsing decodes only the features asked for (in 40 ms
        // latents): ask for a frame more than the offset.
        let available = self.inner.parse_dred(later, offset + 2 * n)?;
        if back == 0 || available < offset {
            return Ok(None);
        }
        Ok(Some(self.inner.decode_dred(offset, &mut out[..n])?))
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
    libopus::has_lbrr(packet)
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
        let mut enc = Encoder::new(CodecConfig {
            dred: false,
            ..Default::default()
        })
        .unwrap();
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

    /// Packets of `n` frames of speech, encoded planning for `loss` %.
    fn encode_speech(n: usize, loss: u8, dred: bool) -> (Vec<Vec<i16>>, Vec<Vec<u8>>) {
        let mut enc = Encoder::new(CodecConfig {
            dred,
            ..Default::default()
        })
        .unwrap();
        enc.set_loss_percent(loss).unwrap();
        let input = speech(n);
        let mut buf = [0u8; MAX_PACKET];
        let p = input
            .iter()
            .map(|f| {
                let k = enc.encode(f, &mut buf).unwrap();
                buf[..k].to_vec()
            })
            .collect();
        (input, p)
    }

    #[test]
    fn a_burst_of_five_lost_packets_is_rebuilt_from_dred() {
        let (_, packets) = encode_speech(100, 20, true);
        let lost = 60..65;
        let mut out = vec![0i16; MAX_FRAME_SAMPLES];
        let mut clean = Decoder::new(960).unwrap();
        let mut dred = Decoder::new(960).unwrap();
        let mut plc = Decoder::new(960).unwrap();
        let (mut c, mut d, mut p) = (Vec::new(), Vec::new(), Vec::new());
        for (i, pk) in packets.iter().enumerate() {
            let n = clean.decode(pk, &mut out).unwrap();
            c.extend_from_slice(&out[..n]);
            if lost.contains(&i) {
                // Everything from the first packet after the burst.
                let back = lost.end - i;
                let n = dred
                    .recover_dred(&packets[lost.end], back, &mut out)
                    .unwrap()
                    .unwrap_or_else(|| panic!("frame {i} ({back} back) not in DRED: concealed"));
                assert_eq!(n, 960);
                d.extend_from_slice(&out[..n]);
                let n = plc.conceal(&mut out).unwrap();
                p.extend_from_slice(&out[..n]);
                continue;
            }
            let n = dred.decode(pk, &mut out).unwrap();
            d.extend_from_slice(&out[..n]);
            let n = plc.decode(pk, &mut out).unwrap();
            p.extend_from_slice(&out[..n]);
        }
        // A vocoder does not keep the waveform's phase: compare the level
        // contour (dB per 5 ms) of the rebuilt stretch with the real
        // audio's. DRED follows it; concealment only fades.
        let contour_err = |x: &[i16]| -> f64 {
            let r = lost.start * 960..lost.end * 960;
            let db = |s: &[i16]| {
                let e: f64 = s.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / s.len() as f64;
                10.0 * (e + 1.0).log10()
            };
            let (a, b) = (&x[r.clone()], &c[r]);
            let n = a.len() / 240;
            (0..n)
                .map(|i| (db(&a[i * 240..(i + 1) * 240]) - db(&b[i * 240..(i + 1) * 240])).abs())
                .sum::<f64>()
                / n as f64
        };
        let (dd, pd) = (contour_err(&d), contour_err(&p));
        assert!(
            dd < pd,
            "level error: dred {dd:.1} dB, concealment {pd:.1} dB"
        );
        // A packet with no DRED (it is off) rebuilds nothing.
        let (_, plain) = encode_speech(20, 20, false);
        let mut dec = Decoder::new(960).unwrap();
        assert_eq!(dec.recover_dred(&plain[15], 2, &mut out).unwrap(), None);
        assert_eq!(dec.recover_dred(&[], 2, &mut out).unwrap(), None);
        // Garbage is an error or nothing, never a panic.
        assert!(!matches!(
            dec.recover_dred(&[0xff; 7], 2, &mut out),
            Ok(Some(_))
        ));
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
