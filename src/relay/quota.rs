//! A token bucket for per-user relay bandwidth, in integer milli-bytes so
//! that slow refills lose nothing to rounding.

use crate::time::Millis;

/// Bytes per second with a burst allowance; rate 0 means unlimited.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    capacity_mb: u64,
    tokens_mb: u64,
    /// When it was last refilled.
    last: Millis,
}

impl TokenBucket {
    /// A full bucket: `rate` bytes/s, holding at most `burst` bytes.
    pub fn new(rate: u64, burst: u64, now: Millis) -> Self {
        let capacity_mb = burst.max(1).saturating_mul(1000);
        TokenBucket {
            rate,
            capacity_mb,
            tokens_mb: capacity_mb,
            last: now,
        }
    }

    /// Take `bytes` if the bucket holds them.
    pub fn take(&mut self, now: Millis, bytes: usize) -> bool {
        if self.rate == 0 {
            return true;
        }
        let dt = now.since(self.last);
        self.last = self.last.max(now);
        self.tokens_mb = self
            .tokens_mb
            .saturating_add(self.rate.saturating_mul(dt))
            .min(self.capacity_mb);
        let want = (bytes as u64).saturating_mul(1000);
        if self.tokens_mb >= want {
            self.tokens_mb -= want;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_rate_over_time() {
        let mut b = TokenBucket::new(10_000, 2_000, Millis::ZERO);
        let mut passed = 0u64;
        // 10 s of 100-byte packets offered every millisecond (100 kB/s).
        for ms in 0..10_000 {
            if b.take(Millis(ms), 100) {
                passed += 100;
            }
        }
        // 10 kB/s for 10 s plus the initial burst.
        assert!((100_000..=102_100).contains(&passed), "{passed}");
        let mut free = TokenBucket::new(0, 0, Millis::ZERO);
        assert!(free.take(Millis::ZERO, 1 << 20));
    }
}
