//! Our uplink, measured from the media we send: the mixer ranking's
//! "uplink" ([`super::Member::uplink_kbps`]). Sans-IO: fed each media
//! leg's periodic statistics (bytes sent so far, the loss the far end
//! reported, the round-trip time), for 1:1 calls and conference legs
//! alike, so a node that carried a conference before starts the next one
//! with what it proved then.
//!
//! - A **rate sample** is the sum over the legs reported in the last
//!   [`FRESH_MS`] of each leg's bytes sent since its previous report; a
//!   leg counts from its [`WARM_REPORTS`]th report on (a starting stream's
//!   first loss and RTT figures are not the uplink's).
//! - The sample is **clean** when no leg reports more than
//!   [`CLEAN_LOSS_PCT`] loss and no leg's RTT is above twice (and 100 ms
//!   over) the least RTT seen on that leg: the uplink carried that rate.
//!   The estimate is the highest clean rate seen ("proven").
//! - The sample is **congested** when most legs report more than
//!   [`CONGESTED_LOSS_PCT`] loss or an inflated RTT: the uplink is at
//!   most 90 % of that rate, and the estimate drops to it.
//!
//! The estimate is quantised ([`quantise`]: 1 or 1.5 times a power of
//! two) so that jitter in the rates does not re-order the ranking.

use crate::time::Millis;
use std::collections::BTreeMap;

/// A leg's report older than this no longer counts in the rate.
pub const FRESH_MS: u64 = 3_000;
/// A leg silent this long is forgotten (the table's deadline).
pub const FORGET_MS: u64 = 30_000;
/// At most this many legs are tracked (a conference's own and a call).
pub const MAX_LEGS: usize = 2 * super::MAX_PARTICIPANTS;
/// Loss at or below this is no sign of a full uplink, percent.
pub const CLEAN_LOSS_PCT: f64 = 2.0;
/// Loss above this on most legs is a full uplink, percent.
pub const CONGESTED_LOSS_PCT: f64 = 5.0;
/// A leg's reports before this one do not count.
pub const WARM_REPORTS: u32 = 3;
/// Reports at least this far apart make a rate (shorter: kept for later).
const MIN_SPAN_MS: u64 = 500;

/// One leg's last report.
#[derive(Debug, Clone, Copy)]
struct LegRate {
    /// When the report came, and the bytes sent so far then.
    at: Millis,
    bytes: u64,
    /// kbit/s sent since the report before (0 until there is one).
    kbps: f64,
    /// The loss the far end reported on our stream, percent.
    loss_pct: f64,
    /// The last and the least round-trip time, ms.
    rtt_ms: Option<u32>,
    min_rtt_ms: Option<u32>,
    /// Reports so far (up to [`WARM_REPORTS`]).
    reports: u32,
}

impl LegRate {
    fn inflated(&self) -> bool {
        match (self.rtt_ms, self.min_rtt_ms) {
            (Some(r), Some(m)) => r > (2 * m).max(m + 100),
            _ => false,
        }
    }
}

/// Counters, for tests and the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UplinkStats {
    pub samples: u64,
    pub clean: u64,
    pub congested: u64,
    /// Legs refused because the table was full.
    pub refused: u64,
}

/// The uplink estimate of one node; see the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct UplinkEstimator {
    /// Per leg (a conference peer, or `call:ID`): its last report.
    legs: BTreeMap<String, LegRate>,
    /// The highest clean rate, kbit/s, capped by congestion.
    proven_kbps: f64,
    stats: UplinkStats,
}

impl UplinkEstimator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Leg `leg` reported at `now`: `bytes_sent` in total, the far end's
    /// loss of our stream and the RTT.
    pub fn report(
        &mut self,
        now: Millis,
        leg: &str,
        bytes_sent: u64,
        remote_loss_pct: f64,
        rtt_ms: Option<u32>,
    ) {
        self.legs
            .retain(|_, l| now.0.saturating_sub(l.at.0) < FORGET_MS);
        if !self.legs.contains_key(leg) && self.legs.len() >= MAX_LEGS {
            self.stats.refused += 1;
            return;
        }
        let l = self.legs.entry(leg.to_owned()).or_insert(LegRate {
            at: now,
            bytes: bytes_sent,
            kbps: 0.0,
            loss_pct: 0.0,
            rtt_ms: None,
            min_rtt_ms: None,
            reports: 0,
        });
        l.reports = (l.reports + 1).min(WARM_REPORTS);
        let span = now.0.saturating_sub(l.at.0);
        if span >= MIN_SPAN_MS {
            // A restarted leg (fewer bytes) starts over.
            l.kbps = bytes_sent.saturating_sub(l.bytes) as f64 * 8.0 / span as f64;
            l.at = now;
            l.bytes = bytes_sent;
        } else if bytes_sent < l.bytes {
            l.bytes = bytes_sent;
        }
        l.loss_pct = if remote_loss_pct.is_finite() {
            remote_loss_pct
        } else {
            0.0
        };
        if let Some(r) = rtt_ms {
            l.rtt_ms = Some(r);
            l.min_rtt_ms = Some(l.min_rtt_ms.map_or(r, |m| m.min(r)));
        }
        self.sample(now);
    }

    /// Judge the rate of the fresh legs.
    fn sample(&mut self, now: Millis) {
        let fresh: Vec<&LegRate> = self
            .legs
            .values()
            .filter(|l| {
                l.reports >= WARM_REPORTS && now.0.saturating_sub(l.at.0) < FRESH_MS && l.kbps > 0.0
            })
            .collect();
        if fresh.is_empty() {
            return;
        }
        self.stats.samples += 1;
        let rate: f64 = fresh.iter().map(|l| l.kbps).sum();
        let bad = fresh
            .iter()
            .filter(|l| l.loss_pct > CONGESTED_LOSS_PCT || l.inflated())
            .count();
        let clean = fresh
            .iter()
            .all(|l| l.loss_pct <= CLEAN_LOSS_PCT && !l.inflated());
        if 2 * bad > fresh.len() {
            self.stats.congested += 1;
            self.proven_kbps = self.proven_kbps.min(rate * 0.9);
        } else if clean {
            self.stats.clean += 1;
            self.proven_kbps = self.proven_kbps.max(rate);
        }
    }

    /// The estimate, kbit/s, quantised; 0 while nothing was measured.
    pub fn kbps(&self) -> u32 {
        quantise(self.proven_kbps)
    }

    pub fn stats(&self) -> UplinkStats {
        self.stats
    }
}

/// The largest of 1 or 1.5 times a power of two at or below `kbps` (0
/// below 1): 100 becomes 96, 130 becomes 128, 200 becomes 192.
pub fn quantise(kbps: f64) -> u32 {
    if kbps.is_nan() || kbps < 1.0 {
        return 0;
    }
    let k = kbps.min(f64::from(u32::MAX / 2));
    let p = 2f64.powi(k.log2().floor() as i32);
    if k >= 1.5 * p {
        (1.5 * p) as u32
    } else {
        p as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantise_steps() {
        assert_eq!(quantise(0.0), 0);
        assert_eq!(quantise(f64::NAN), 0);
        assert_eq!(quantise(1.0), 1);
        assert_eq!(quantise(100.0), 96);
        assert_eq!(quantise(130.0), 128);
        assert_eq!(quantise(200.0), 192);
        assert_eq!(quantise(255.9), 192);
        assert_eq!(quantise(256.0), 256);
    }

    /// `legs` legs each sending `kbps` for `secs`, reporting once a second
    /// with this loss and RTT.
    fn run(
        u: &mut UplinkEstimator,
        t: &mut u64,
        legs: usize,
        kbps: u64,
        secs: u64,
        (loss, rtt): (f64, u32),
        bytes: &mut [u64],
    ) {
        for _ in 0..secs {
            *t += 1_000;
            for (i, b) in bytes.iter_mut().enumerate().take(legs) {
                *b += kbps * 1_000 / 8;
                u.report(Millis(*t), &format!("p{i}"), *b, loss, Some(rtt));
            }
        }
    }

    #[test]
    fn the_clean_rate_is_proven_and_congestion_caps_it() {
        let mut u = UplinkEstimator::new();
        let (mut t, mut bytes) = (0u64, [0u64; 4]);
        assert_eq!(u.kbps(), 0, "nothing measured yet");
        // A starting stream's first reports do not count.
        run(&mut u, &mut t, 1, 40, 2, (30.0, 30), &mut bytes);
        assert_eq!(u.kbps(), 0);
        assert_eq!(u.stats().samples, 0);
        // One 1:1 call at 40 kbit/s: 40 proven (quantised to 32).
        run(&mut u, &mut t, 1, 40, 5, (0.0, 30), &mut bytes);
        assert_eq!(u.kbps(), 32);
        // Mixing for four at 40 each, clean: 160 proven (128).
        run(&mut u, &mut t, 4, 40, 5, (0.5, 35), &mut bytes);
        assert_eq!(u.kbps(), 128);
        assert!(u.stats().clean >= 5);
        // Some loss on one leg only: neither clean nor congested.
        let before = u.stats();
        t += 1_000;
        for (i, b) in bytes.iter_mut().enumerate() {
            *b += 5_000;
            let loss = if i == 0 { 4.0 } else { 0.0 };
            u.report(Millis(t), &format!("p{i}"), *b, loss, Some(35));
        }
        assert_eq!(u.kbps(), 128);
        assert_eq!(u.stats().congested, before.congested);
        // Then the uplink fills: RTT triples and loss climbs on every leg
        // at 4 x 40: at most 90 % of 160 (144, quantised 128); at 4 x 20
        // congested again: 72 (64).
        run(&mut u, &mut t, 4, 40, 3, (8.0, 120), &mut bytes);
        assert!(u.stats().congested > before.congested);
        assert_eq!(u.kbps(), 128);
        run(&mut u, &mut t, 4, 20, 3, (8.0, 120), &mut bytes);
        assert_eq!(u.kbps(), 64);
    }

    #[test]
    fn stale_legs_do_not_count_and_the_table_is_bounded() {
        let mut u = UplinkEstimator::new();
        let (mut t, mut bytes) = (0u64, [0u64; 4]);
        run(&mut u, &mut t, 2, 50, 4, (0.0, 20), &mut bytes);
        assert_eq!(u.kbps(), 96);
        // Only leg p0 goes on; p1's old rate no longer adds after 3 s.
        for _ in 0..5 {
            t += 1_000;
            bytes[0] += 50 * 125;
            u.report(Millis(t), "p0", bytes[0], 0.0, Some(20));
        }
        assert_eq!(u.kbps(), 96, "the proven rate stays");
        assert_eq!(u.legs.len(), 2);
        t += FORGET_MS;
        u.report(Millis(t), "p0", bytes[0], 0.0, Some(20));
        assert_eq!(u.legs.len(), 1, "the silent leg is forgotten");
        for i in 0..MAX_LEGS + 5 {
            u.report(Millis(t), &format!("x{i}"), 0, 0.0, None);
        }
        assert_eq!(u.legs.len(), MAX_LEGS);
        assert_eq!(u.stats().refused, 6);
    }
}
