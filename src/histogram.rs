//! A fixed-bucket latency histogram: what a sans-IO core fills (no clock,
//! no allocation: `record` takes a duration the core computed from the
//! `now` it was given) and the metrics exporter renders as a Prometheus
//! histogram. The bounds are fixed so that two snapshots always add up.

/// Upper bounds of the buckets in milliseconds; a last, implicit bucket
/// takes everything slower.
pub const BOUNDS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

/// Counts of durations per bucket, their sum and their number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Durations at or under `BOUNDS_MS[i]` and over the bound before it;
    /// the last entry counts those over every bound.
    pub counts: [u64; BOUNDS_MS.len() + 1],
    /// Sum of all recorded durations, for the mean.
    pub sum_ms: u64,
}

impl LatencyHistogram {
    /// Count one duration.
    pub fn record(&mut self, ms: u64) {
        let i = BOUNDS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(BOUNDS_MS.len());
        self.counts[i] += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Cumulative counts at each bound (the Prometheus form), without the
    /// final `+Inf` bucket, which is [`count`](Self::count).
    pub fn cumulative(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        BOUNDS_MS
            .iter()
            .zip(&self.counts)
            .scan(0u64, |acc, (&bound, &n)| {
                *acc += n;
                Some((bound, *acc))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_the_bucket_of_their_bound() {
        let mut h = LatencyHistogram::default();
        for ms in [0, 1, 2, 3, 5000, 5001, 99_999] {
            h.record(ms);
        }
        assert_eq!(h.count(), 7);
        assert_eq!(h.sum_ms, 1 + 2 + 3 + 5000 + 5001 + 99_999);
        let cum: Vec<_> = h.cumulative().collect();
        assert_eq!(cum[0], (1, 2)); // 0 and 1
        assert_eq!(cum[1], (2, 3));
        assert_eq!(cum[2], (5, 4)); // 3
        assert_eq!(cum.last(), Some(&(5000, 5)));
        assert_eq!(h.counts[BOUNDS_MS.len()], 2);
    }
}
