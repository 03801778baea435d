//! Delay-based congestion control after LEDBAT (RFC 6817): the window
//! grows while the one-way queuing delay stays under a target and shrinks
//! in proportion as it rises above, so a file transfer fills the spare
//! capacity of a path and gives way to anything that queues there (a
//! call on the same path). Loss halves the window, a retransmission
//! timeout takes it back to the minimum, as in TCP.
//!
//! One-way delays come from timestamps on data packets echoed by the
//! receiver; the clocks of the two ends differ, so only the difference
//! from the lowest delay seen (the base delay, kept per minute for ten
//! minutes, as the RFC does) counts as queuing.

use crate::time::Millis;

/// Queuing delay the controller aims at, ms (RFC 6817 allows up to 100;
/// lower gives way to a call sooner).
pub const TARGET_MS: i64 = 25;
/// The target while a call runs: a call's packets wait behind whatever
/// the transfer queued, and its jitter buffer pays for it.
pub const CALL_TARGET_MS: i64 = 5;
/// The smallest window, in packets.
const MIN_PACKETS: u64 = 2;
/// Base delay history: minutes kept.
const BASE_HISTORY: usize = 10;
/// Current delay filter: the lowest of the last samples.
const CURRENT_FILTER: usize = 4;

/// One transfer's congestion state.
#[derive(Debug, Clone)]
pub struct Ledbat {
    /// Congestion window, bytes.
    cwnd: u64,
    /// Largest packet, bytes (the RFC's MSS).
    mss: u64,
    /// Ceiling of the window, bytes (the receiver's buffer, in effect).
    max_cwnd: u64,
    /// Growing fast until delay or loss says the path is full.
    slow_start: bool,
    /// Per-minute minima of the delay samples, newest last, with the
    /// minute they belong to.
    base: Vec<(u64, i64)>,
    /// The last few samples (the current-delay filter).
    current: Vec<i64>,
    /// Sample baseline: raw echoes are u32 clock differences; they are
    /// taken relative to the first one, so wrapping does not matter.
    origin: Option<u32>,
    /// Window reductions do not repeat within one round trip: packets
    /// sent before this time were already paid for.
    recovery_until: Millis,
    /// Queuing delay aimed at, ms ([`TARGET_MS`], or [`CALL_TARGET_MS`]).
    target: i64,
}

impl Ledbat {
    pub fn new(mss: u64, max_cwnd: u64) -> Self {
        Ledbat {
            cwnd: 4 * mss,
            mss,
            max_cwnd: max_cwnd.max(MIN_PACKETS * mss),
            slow_start: true,
            base: Vec::new(),
            current: Vec::new(),
            origin: None,
            recovery_until: Millis::ZERO,
            target: TARGET_MS,
        }
    }

    /// Packets of `mss` bytes from now on (the path carries larger ones,
    /// or no longer does); the window stays within its bounds in packets.
    pub fn set_mss(&mut self, mss: u64) {
        self.mss = mss.max(1);
        self.max_cwnd = self.max_cwnd.max(MIN_PACKETS * self.mss);
        self.cwnd = self.cwnd.clamp(MIN_PACKETS * self.mss, self.max_cwnd);
    }

    /// Aim at `ms` of queuing delay from now on.
    pub fn set_target(&mut self, ms: i64) {
        self.target = ms.max(1);
    }

    pub fn window(&self) -> u64 {
        self.cwnd
    }

    /// Queuing delay estimate, ms (0 before any sample).
    pub fn queuing_delay(&self) -> i64 {
        match (self.current.iter().min(), self.base_delay()) {
            (Some(c), Some(b)) => (c - b).max(0),
            _ => 0,
        }
    }

    fn base_delay(&self) -> Option<i64> {
        self.base.iter().map(|&(_, d)| d).min()
    }

    /// A one-way delay sample (receiver clock minus sender timestamp,
    /// wrapping u32 ms) at `now`.
    pub fn on_delay(&mut self, now: Millis, raw: u32) {
        let origin = *self.origin.get_or_insert(raw);
        let d = i64::from(raw.wrapping_sub(origin) as i32);
        let minute = now.get() / 60_000;
        match self.base.last_mut() {
            Some((m, min)) if *m == minute => *min = (*min).min(d),
            _ => {
                self.base.push((minute, d));
                if self.base.len() > BASE_HISTORY {
                    self.base.remove(0);
                }
            }
        }
        self.current.push(d);
        if self.current.len() > CURRENT_FILTER {
            self.current.remove(0);
        }
    }

    /// `bytes` newly acknowledged, `flight` bytes were in flight before.
    pub fn on_ack(&mut self, bytes: u64, flight: u64) {
        let q = self.queuing_delay();
        if self.slow_start {
            if q * 2 > self.target {
                self.slow_start = false;
            } else {
                self.cwnd = (self.cwnd + bytes).min(self.max_cwnd);
                return;
            }
        }
        let target = self.target;
        let delta = if q > target {
            // Above target, shrink in proportion (LEDBAT++'s multiplicative
            // decrease): over one window of acknowledgements the window
            // loses the share of delay above target, at most half.
            -(1.0 - target as f64 / q as f64).min(0.5) * bytes as f64
        } else {
            let off_target = (target - q) as f64 / target as f64;
            off_target * bytes as f64 * self.mss as f64 / self.cwnd.max(1) as f64
        };
        let mut cwnd = (self.cwnd as f64 + delta).max(0.0) as u64;
        // An application-limited sender does not grow its window (RFC 6817
        // §2.4.2, ALLOWED_INCREASE of one packet).
        cwnd = cwnd.min(flight + bytes + self.mss);
        self.cwnd = cwnd.clamp(MIN_PACKETS * self.mss, self.max_cwnd);
    }

    /// A packet sent at `sent_at` was lost (seen at `now`, one round trip
    /// `rtt` ms): halve once per round trip.
    pub fn on_loss(&mut self, now: Millis, sent_at: Millis, rtt: u64) {
        self.slow_start = false;
        if sent_at < self.recovery_until {
            return;
        }
        self.recovery_until = now + rtt.max(1);
        self.cwnd = (self.cwnd / 2).max(MIN_PACKETS * self.mss);
    }

    /// Nothing was acknowledged for a retransmission timeout.
    pub fn on_timeout(&mut self, now: Millis) {
        self.slow_start = false;
        self.recovery_until = now;
        self.cwnd = MIN_PACKETS * self.mss;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_under_target_and_backs_off_above() {
        let mut c = Ledbat::new(1000, 10_000_000);
        // Base delay 40 ms (clock offset), no queuing: slow start.
        for i in 0..50 {
            c.on_delay(Millis(i), 40);
            c.on_ack(1000, c.window());
        }
        let grown = c.window();
        assert!(grown >= 50_000, "{grown}");
        // Queuing builds up to 100 ms over a 25 ms target: shrinks.
        for i in 0..200 {
            c.on_delay(Millis(100 + i), 140);
            c.on_ack(1000, c.window());
        }
        assert!(c.window() < grown / 4, "{} vs {grown}", c.window());
        assert_eq!(c.queuing_delay(), 100);
        // The queue drains: grows again (linearly now).
        let low = c.window();
        for i in 0..200 {
            c.on_delay(Millis(400 + i), 41);
            c.on_ack(1000, c.window());
        }
        assert!(c.window() > low, "{} vs {low}", c.window());
    }

    #[test]
    fn loss_halves_once_per_round_trip_and_timeout_resets() {
        let mut c = Ledbat::new(1000, 1_000_000);
        for _ in 0..20 {
            c.on_ack(1000, c.window());
        }
        let w = c.window();
        c.on_loss(Millis(100), Millis(90), 20);
        assert_eq!(c.window(), w / 2);
        c.on_loss(Millis(105), Millis(95), 20);
        assert_eq!(c.window(), w / 2, "same round trip");
        c.on_timeout(Millis(200));
        assert_eq!(c.window(), 2000);
    }

    #[test]
    fn wrapping_timestamps_are_differences() {
        let mut c = Ledbat::new(1000, 1_000_000);
        c.on_delay(Millis(0), u32::MAX - 5);
        c.on_delay(Millis(1), 4);
        assert_eq!(c.queuing_delay(), 0, "min of filter is the base");
        for t in 2..10 {
            c.on_delay(Millis(t), 4);
        }
        assert_eq!(c.queuing_delay(), 10);
    }
}
