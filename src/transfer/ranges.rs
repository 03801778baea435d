//! Sets of half-open `u64` ranges: the bytes of a file a receiver holds
//! (its resume record) and the packet numbers it acknowledges.

/// Sorted, disjoint, non-adjacent half-open ranges `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// Sorted by start; never empty or touching ranges.
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    pub fn new() -> Self {
        RangeSet::default()
    }

    /// The ranges, lowest first.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Values covered.
    pub fn total(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// Whether `[0, end)` is covered.
    pub fn covers_to(&self, end: u64) -> bool {
        end == 0
            || self
                .ranges
                .first()
                .is_some_and(|&(s, e)| s == 0 && e >= end)
    }

    pub fn contains(&self, v: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, e)| e <= v);
        self.ranges.get(i).is_some_and(|&(s, _)| s <= v)
    }

    /// Add `[start, end)`; returns how many values were new.
    pub fn insert(&mut self, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        // First range that ends at or after `start` (may merge), last that
        // starts at or before `end`.
        let lo = self.ranges.partition_point(|&(_, e)| e < start);
        let hi = self.ranges.partition_point(|&(s, _)| s <= end);
        if lo == hi {
            self.ranges.insert(lo, (start, end));
            return end - start;
        }
        let merged_before: u64 = self.ranges[lo..hi].iter().map(|(s, e)| e - s).sum();
        let s = start.min(self.ranges[lo].0);
        let e = end.max(self.ranges[hi - 1].1);
        self.ranges.drain(lo + 1..hi);
        self.ranges[lo] = (s, e);
        (e - s) - merged_before
    }

    /// Remove `[start, end)`.
    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        for &(s, e) in &self.ranges {
            if e <= start || s >= end {
                out.push((s, e));
                continue;
            }
            if s < start {
                out.push((s, start));
            }
            if e > end {
                out.push((end, e));
            }
        }
        self.ranges = out;
    }

    /// Take up to `max` values from the lowest range.
    pub fn pop_front(&mut self, max: u64) -> Option<(u64, u64)> {
        let first = self.ranges.first_mut()?;
        let (s, e) = *first;
        let end = e.min(s.saturating_add(max.max(1)));
        if end >= e {
            self.ranges.remove(0);
        } else {
            first.0 = end;
        }
        Some((s, end))
    }

    /// What `[0, size)` lacks of this set.
    pub fn complement(&self, size: u64) -> RangeSet {
        let mut out = RangeSet::new();
        let mut at = 0;
        for &(s, e) in &self.ranges {
            if s >= size {
                break;
            }
            if s > at {
                out.ranges.push((at, s));
            }
            at = at.max(e);
        }
        if at < size {
            out.ranges.push((at, size));
        }
        out
    }

    /// Drop every value below `v`.
    pub fn trim_below(&mut self, v: u64) {
        self.remove(0, v);
    }

    /// The highest value, if any.
    pub fn max(&self) -> Option<u64> {
        self.ranges.last().map(|&(_, e)| e - 1)
    }

    /// A set from ranges as read off the wire or disk: each is checked and
    /// clipped to `[0, limit)`.
    pub fn from_ranges(list: impl IntoIterator<Item = (u64, u64)>, limit: u64) -> Self {
        let mut r = RangeSet::new();
        for (s, e) in list {
            r.insert(s.min(limit), e.min(limit));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_and_counts_new_values() {
        let mut r = RangeSet::new();
        assert_eq!(r.insert(10, 20), 10);
        assert_eq!(r.insert(30, 40), 10);
        assert_eq!(r.insert(15, 35), 10);
        assert_eq!(r.ranges(), &[(10, 40)]);
        assert_eq!(r.insert(40, 41), 1);
        assert_eq!(r.insert(0, 5), 5);
        assert_eq!(r.ranges(), &[(0, 5), (10, 41)]);
        assert!(r.contains(4) && !r.contains(5) && r.contains(10) && !r.contains(41));
        assert_eq!(r.total(), 36);
        assert_eq!(r.complement(50).ranges(), &[(5, 10), (41, 50)]);
        r.remove(2, 12);
        assert_eq!(r.ranges(), &[(0, 2), (12, 41)]);
        assert_eq!(r.pop_front(1), Some((0, 1)));
        assert_eq!(r.pop_front(100), Some((1, 2)));
        assert_eq!(r.pop_front(5), Some((12, 17)));
        assert!(!r.covers_to(1));
        assert_eq!(
            RangeSet::from_ranges([(0, 9), (5, 99)], 50).ranges(),
            &[(0, 50)]
        );
        assert!(RangeSet::from_ranges([(0, 9), (5, 99)], 50).covers_to(50));
    }
}
