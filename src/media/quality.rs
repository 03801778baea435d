//! Estimated call quality: a MOS from the line's loss, delay and jitter,
//! by the E-model (ITU-T G.107), simplified as for VoIP monitoring (Cole
//! and Rosenbluth, 2001): `R = R0 - Id - Ie_eff`, no simultaneous
//! impairments (`Is = 0`), no advantage factor (`A = 0`), narrowband scale.
//!
//! - `R0 = 93.2`: G.107's default basic signal-to-noise ratio.
//! - Delay: `Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)`, `d` the
//!   one-way mouth-to-ear delay: half the RTT, the jitter buffer's delay
//!   (twice the measured jitter before it has one), a codec frame plus
//!   Opus's 6.5 ms look-ahead, and the device buffers (10 ms capture,
//!   15 ms playback lead).
//! - Loss: `Ie_eff = Ie + (95 - Ie) Ppl / (Ppl + Bpl)` (random loss,
//!   `BurstR = 1`), `Ppl` the worse direction's packet loss in percent.
//!   ITU-T G.113 lists no values for Opus; we use `Ie = 0` (Opus at 24 to
//!   32 kbit/s is transparent on the narrowband scale) and `Bpl = 20`
//!   (G.113 gives 19 for G.729A and 25.1 for G.711 with concealment; Opus
//!   conceals and its in-band FEC rebuilds single losses).
//! - `MOS = 1 + 0.035 R + 7e-6 R (R - 60) (100 - R)` for `0 < R < 100`;
//!   a clean line scores 4.41.
//!
//! Bars, 0 to 5, from the MOS: 4.2 and up is 5 (a clean line), 3.9 is 4
//! ("satisfied"), 3.6 is 3, 3.1 is 2 ("many dissatisfied"), 2.6 is 1.

/// G.107's default R with no impairment.
pub const R0: f64 = 93.2;
/// Equipment impairment of Opus (see the module docs).
pub const OPUS_IE: f64 = 0.0;
/// Packet-loss robustness of Opus with concealment and in-band FEC.
pub const OPUS_BPL: f64 = 20.0;
/// Opus's encoder look-ahead, ms.
const LOOKAHEAD_MS: f64 = 6.5;
/// Device buffering on the path: a 10 ms capture tick and the 15 ms
/// playback lead of the media driver.
const DEVICES_MS: f64 = 25.0;

/// What the estimate is made from.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Line {
    /// Round-trip time, ms (`None` before the first report).
    pub rtt_ms: Option<f64>,
    /// Packet loss of the worse direction, percent.
    pub loss_percent: f64,
    /// Interarrival jitter, ms.
    pub jitter_ms: f64,
    /// The jitter buffer's current delay, ms (0 before it plays).
    pub buffer_ms: f64,
    /// Codec frame, ms.
    pub frame_ms: f64,
}

/// The estimate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quality {
    /// The E-model's rating, 0 to 100.
    pub r: f64,
    /// Estimated mean opinion score, 1 to 4.5.
    pub mos: f64,
    /// 0 to 5 bars.
    pub bars: u8,
    /// The one-way delay the estimate used, ms.
    pub delay_ms: f64,
}

impl Line {
    /// One-way mouth-to-ear delay, ms.
    pub fn delay_ms(&self) -> f64 {
        let buffer = if self.buffer_ms > 0.0 {
            self.buffer_ms
        } else {
            2.0 * self.jitter_ms
        };
        self.rtt_ms.unwrap_or(0.0) / 2.0 + buffer + self.frame_ms + LOOKAHEAD_MS + DEVICES_MS
    }

    pub fn quality(&self) -> Quality {
        let d = self.delay_ms();
        let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
        let ppl = self.loss_percent.clamp(0.0, 100.0);
        let ie = OPUS_IE + (95.0 - OPUS_IE) * ppl / (ppl + OPUS_BPL);
        let r = (R0 - id - ie).clamp(0.0, 100.0);
        let mos = mos(r);
        Quality {
            r,
            mos,
            bars: bars(mos),
            delay_ms: d,
        }
    }
}

/// G.107's R to MOS mapping.
pub fn mos(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)
    }
}

fn bars(mos: f64) -> u8 {
    [4.2, 3.9, 3.6, 3.1, 2.6]
        .iter()
        .position(|&t| mos >= t)
        .map_or(0, |i| 5 - i as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(rtt: f64, loss: f64, jitter: f64) -> Quality {
        Line {
            rtt_ms: Some(rtt),
            loss_percent: loss,
            jitter_ms: jitter,
            buffer_ms: 0.0,
            frame_ms: 20.0,
        }
        .quality()
    }

    #[test]
    fn a_clean_line_has_five_bars() {
        let q = line(2.0, 0.0, 1.0);
        assert!((q.mos - 4.37).abs() < 0.02, "{q:?}");
        assert_eq!(q.bars, 5);
        assert_eq!(mos(93.2).mul_add(100.0, 0.0).round(), 441.0);
    }

    #[test]
    fn loss_delay_and_jitter_each_cost_bars() {
        // Reference points of G.107 with these Ie/Bpl values.
        assert_eq!(line(20.0, 2.0, 2.0).bars, 4);
        let five = line(20.0, 5.0, 2.0);
        assert_eq!(five.bars, 3, "{five:?}");
        assert!(line(20.0, 20.0, 2.0).bars <= 1);
        // A satellite hop: 600 ms RTT.
        let far = line(600.0, 0.0, 2.0);
        assert!(far.bars <= 3 && far.delay_ms > 300.0, "{far:?}");
        // 100 ms of jitter means 200 ms of buffering.
        assert!(line(20.0, 0.0, 100.0).mos < line(20.0, 0.0, 2.0).mos - 0.3);
        assert_eq!(mos(-5.0), 1.0);
        let all_lost = line(20.0, 100.0, 2.0);
        assert!(all_lost.mos < 1.6 && all_lost.bars == 0, "{all_lost:?}");
    }
}
