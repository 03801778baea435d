//! Receiver reports (RTCP RR in spirit, encrypted like audio): what we
//! received of the peer's stream (highest sequence, cumulative and recent
//! loss, interarrival jitter) and a timestamp echo from which the peer
//! computes the round-trip time, as RTCP's LSR/DLSR do.
//!
//! Body (after decryption), big-endian:
//! `version u8 = 1 | sent_at u32 | echo u32 | echo_delay u32 | highest u32 |
//! lost u32 | fraction_lost u8 | jitter_us u32 | delay_ms u16` (28 bytes).

use crate::time::Millis;
use thiserror::Error;

pub const REPORT_LEN: usize = 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("malformed receiver report")]
pub struct ReportError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Report {
    /// Sender's clock (ms, low 32 bits) when it sent this report.
    pub sent_at: u32,
    /// The `sent_at` of the last report it received from us (0: none).
    pub echo: u32,
    /// How long it held that report before sending this one, ms.
    pub echo_delay: u32,
    /// Highest extended sequence number received (low 32 bits).
    pub highest: u32,
    /// Packets lost since the start (expected minus received).
    pub lost: u32,
    /// Loss since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Interarrival jitter (RFC 3550), microseconds.
    pub jitter_us: u32,
    /// The reporter's jitter buffer delay, ms.
    pub delay_ms: u16,
}

impl Report {
    pub fn encode(&self) -> [u8; REPORT_LEN] {
        let mut b = [0u8; REPORT_LEN];
        b[0] = 1;
        b[1..5].copy_from_slice(&self.sent_at.to_be_bytes());
        b[5..9].copy_from_slice(&self.echo.to_be_bytes());
        b[9..13].copy_from_slice(&self.echo_delay.to_be_bytes());
        b[13..17].copy_from_slice(&self.highest.to_be_bytes());
        b[17..21].copy_from_slice(&self.lost.to_be_bytes());
        b[21] = self.fraction_lost;
        b[22..26].copy_from_slice(&self.jitter_us.to_be_bytes());
        b[26..28].copy_from_slice(&self.delay_ms.to_be_bytes());
        b
    }

    /// Borrows, checks the length first, never panics. Later versions may
    /// append fields.
    pub fn decode(b: &[u8]) -> Result<Report, ReportError> {
        if b.len() < REPORT_LEN || b[0] != 1 {
            return Err(ReportError);
        }
        let u = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Ok(Report {
            sent_at: u(1),
            echo: u(5),
            echo_delay: u(9),
            highest: u(13),
            lost: u(17),
            fraction_lost: b[21],
            jitter_us: u(22),
            delay_ms: u16::from_be_bytes([b[26], b[27]]),
        })
    }
}

/// Round-trip time from a report echoing one of ours: `now - echo -
/// echo_delay`, in 32-bit millisecond arithmetic. `None` before the peer
/// has received any of ours, or for an impossible value.
pub fn rtt_ms(now: Millis, r: &Report) -> Option<u32> {
    if r.echo == 0 {
        return None;
    }
    let rtt = (now.get() as u32)
        .wrapping_sub(r.echo)
        .wrapping_sub(r.echo_delay);
    (rtt < 60_000).then_some(rtt)
}

/// What we received of the peer's stream: RFC 3550 appendix A.3 and A.8.
#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    first: Option<u64>,
    highest: u64,
    received: u64,
    /// At the previous report.
    expected_prior: u64,
    received_prior: u64,
    /// Interarrival jitter in ms (smoothed, 1/16 gain).
    jitter: f64,
    last_transit: Option<f64>,
}

impl ReceiveStats {
    /// Extend a 16-bit sequence number to 64 bits, nearest to the highest
    /// seen.
    pub fn extend(&self, seq: u16) -> u64 {
        let Some(_) = self.first else {
            return (1 << 32) + seq as u64;
        };
        let h = self.highest;
        let cand = (h & !0xFFFF) | seq as u64;
        [cand.wrapping_sub(1 << 16), cand, cand + (1 << 16)]
            .into_iter()
            .min_by_key(|c| c.abs_diff(h))
            .unwrap_or(cand)
    }

    /// An authentic packet `ext` with RTP `timestamp` arrived at `now`.
    pub fn on_packet(&mut self, now: Millis, ext: u64, timestamp: u32) {
        match self.first {
            None => {
                self.first = Some(ext);
                self.highest = ext;
            }
            Some(f) if ext < f => self.first = Some(ext),
            _ => self.highest = self.highest.max(ext),
        }
        self.received += 1;
        let transit = now.get() as f64 - timestamp as f64 / 48.0;
        if let Some(prev) = self.last_transit {
            let d = (transit - prev).abs();
            // A timestamp wrap (every 24.9 h) would look like a huge jump.
            if d < 10_000.0 {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.last_transit = Some(transit);
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn expected(&self) -> u64 {
        self.first.map_or(0, |f| self.highest - f + 1)
    }

    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    pub fn jitter_ms(&self) -> f64 {
        self.jitter
    }

    /// Fill a report's reception fields and start a new interval.
    pub fn report(&mut self) -> (u32, u32, u8, u32) {
        let expected = self.expected();
        let interval_expected = expected - self.expected_prior.min(expected);
        let interval_received = self.received - self.received_prior.min(self.received);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost = interval_expected.saturating_sub(interval_received);
        let fraction = (lost * 256)
            .checked_div(interval_expected)
            .map_or(0, |f| f.min(255) as u8);
        (
            self.highest as u32,
            self.lost().min(u32::MAX as u64) as u32,
            fraction,
            (self.jitter * 1000.0) as u32,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trip_and_bad_input() {
        let r = Report {
            sent_at: 1,
            echo: 2,
            echo_delay: 3,
            highest: 4,
            lost: 5,
            fraction_lost: 6,
            jitter_us: 7,
            delay_ms: 8,
        };
        assert_eq!(Report::decode(&r.encode()).unwrap(), r);
        assert!(Report::decode(&r.encode()[..27]).is_err());
        let mut b = r.encode();
        b[0] = 2;
        assert!(Report::decode(&b).is_err());
    }

    #[test]
    fn rtt_from_the_echo() {
        let r = Report {
            echo: 1000,
            echo_delay: 30,
            ..Default::default()
        };
        assert_eq!(rtt_ms(Millis(1100), &r), Some(70));
        assert_eq!(rtt_ms(Millis(1100), &Report::default()), None);
    }

    #[test]
    fn loss_counts_and_sequence_wrap() {
        let mut s = ReceiveStats::default();
        let mut seq: u16 = 65_500;
        let mut sent = 0;
        for i in 0..200u32 {
            if i % 10 != 3 {
                let ext = s.extend(seq);
                s.on_packet(Millis(i as u64 * 20), ext, i * 960);
            }
            sent += 1;
            seq = seq.wrapping_add(1);
        }
        assert_eq!(s.expected(), sent);
        assert_eq!(s.lost(), 20);
        let (_, lost, fraction, jitter) = s.report();
        assert_eq!(lost, 20);
        assert_eq!(fraction, (256 / 10) as u8);
        assert_eq!(jitter, 0);
        // Nothing new: no interval loss.
        assert_eq!(s.report().2, 0);
    }
}
