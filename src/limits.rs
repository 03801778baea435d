//! Shares of strangers' load, for every core that keeps state a stranger
//! can ask for: which sources count as one ([`SourceKey`]: an IPv4
//! address, an IPv6 /64), token buckets driven by `now` ([`Bucket`]) and a
//! bounded table of them per source ([`RateTable`]). Pure state, no clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};

use crate::time::Millis;

/// The unit a per-address share is charged to: an IPv4 address, or the
/// /64 of an IPv6 address (one host gets a whole /64, so finer keys are
/// free to an attacker). IPv4-mapped IPv6 counts as the IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey(IpAddr);

impl SourceKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            v4 @ IpAddr::V4(_) => SourceKey(v4),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                SourceKey(IpAddr::V6(Ipv6Addr::new(
                    s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                )))
            }
        }
    }
}

impl From<IpAddr> for SourceKey {
    fn from(ip: IpAddr) -> Self {
        SourceKey::of(ip)
    }
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

/// A token bucket: `burst` tokens, refilled at `per_sec` a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Tokens left, in thousandths (integer arithmetic, no drift).
    milli_tokens: u64,
    /// When `milli_tokens` was last brought up to date.
    updated: Millis,
}

/// The shape of a bucket: how many at once and how many a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub per_sec: u32,
}

impl Rate {
    pub const fn new(burst: u32, per_sec: u32) -> Self {
        Rate { burst, per_sec }
    }
}

impl Bucket {
    pub fn full(rate: Rate, now: Millis) -> Self {
        Bucket {
            milli_tokens: u64::from(rate.burst) * 1000,
            updated: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Millis) {
        let dt = now.since(self.updated);
        let add = dt.saturating_mul(u64::from(rate.per_sec));
        self.milli_tokens = self
            .milli_tokens
            .saturating_add(add)
            .min(u64::from(rate.burst) * 1000);
        self.updated = self.updated.max(now);
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, rate: Rate, now: Millis) -> bool {
        self.refill(rate, now);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is back to full (so it can be forgotten).
    pub fn is_full(&mut self, rate: Rate, now: Millis) -> bool {
        self.refill(rate, now);
        self.milli_tokens >= u64::from(rate.burst) * 1000
    }
}

/// One bucket per key, bounded: when `max_keys` are tracked, full buckets
/// are forgotten, and if none is full a new key is refused (charging an
/// unknown key to nobody would let a spray of sources through).
#[derive(Debug)]
pub struct RateTable<K> {
    pub rate: Rate,
    max_keys: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Eq + Hash + Copy> RateTable<K> {
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        RateTable {
            rate,
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token from `key`'s bucket; false when it is empty or the
    /// table is full of busy keys.
    pub fn allow(&mut self, key: K, now: Millis) -> bool {
        let rate = self.rate;
        if rate.per_sec == 0 && rate.burst == 0 {
            return true;
        }
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_keys {
            self.prune(now);
            if self.buckets.len() >= self.max_keys {
                return false;
            }
        }
        self.buckets
            .entry(key)
            .or_insert_with(|| Bucket::full(rate, now))
            .take(rate, now)
    }

    /// Forget keys whose bucket has refilled.
    pub fn prune(&mut self, now: Millis) {
        let rate = self.rate;
        self.buckets.retain(|_, b| !b.is_full(rate, now));
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// How many of something each key holds right now (connections, half-open
/// handshakes, sessions), against a cap per key.
#[derive(Debug)]
pub struct Shares<K> {
    pub cap: usize,
    held: HashMap<K, usize>,
}

impl<K: Eq + Hash + Clone> Shares<K> {
    pub fn new(cap: usize) -> Self {
        Shares {
            cap,
            held: HashMap::new(),
        }
    }

    /// Counts one more for `key` unless it already holds `cap`.
    pub fn try_add(&mut self, key: K) -> bool {
        let n = self.held.entry(key).or_insert(0);
        if *n >= self.cap {
            return false;
        }
        *n += 1;
        true
    }

    /// Counts one more for `key` past the cap (state that exists anyway
    /// must be counted, or its removal would undercount).
    pub fn force_add(&mut self, key: K) {
        *self.held.entry(key).or_insert(0) += 1;
    }

    pub fn remove(&mut self, key: &K) {
        if let Some(n) = self.held.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.held.remove(key);
            }
        }
    }

    pub fn get(&self, key: &K) -> usize {
        self.held.get(key).copied().unwrap_or(0)
    }

    /// The key holding the most, and how many.
    pub fn largest(&self) -> Option<(K, usize)> {
        self.held
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(k, n)| (k.clone(), *n))
    }

    /// The key holding most, and how many.
    pub fn heaviest(&self) -> Option<(K, usize)> {
        self.held
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .max_by_key(|x| x.1)
    }
}

/// Whether the `n`-th refusal of a kind deserves a log line: the first and
/// then each power of two, so a flood logs a handful of lines, not one per
/// packet.
pub fn log_worthy(n: u64) -> bool {
    n.is_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_keys_by_64_and_ipv4_by_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(SourceKey::of(a), SourceKey::of(b));
        assert_ne!(SourceKey::of(a), SourceKey::of(c));
        let m: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(SourceKey::of(m), SourceKey::of(v4));
        assert_ne!(
            SourceKey::of(v4),
            SourceKey::of("10.0.0.2".parse().unwrap())
        );
        assert_eq!(SourceKey::of(a).to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn bucket_bursts_then_refills() {
        let r = Rate::new(3, 2);
        let mut b = Bucket::full(r, Millis::ZERO);
        assert!(b.take(r, Millis::ZERO) && b.take(r, Millis::ZERO) && b.take(r, Millis::ZERO));
        assert!(!b.take(r, Millis::ZERO));
        assert!(!b.take(r, Millis(499)));
        assert!(b.take(r, Millis(500)));
        assert!(!b.take(r, Millis(500)));
        assert!(b.is_full(r, Millis(10_000)));
    }

    #[test]
    fn table_is_bounded() {
        let mut t = RateTable::new(Rate::new(1, 1), 2);
        assert!(t.allow(1, Millis::ZERO));
        assert!(t.allow(2, Millis::ZERO));
        assert!(!t.allow(3, Millis::ZERO), "full of busy keys");
        assert!(!t.allow(1, Millis::ZERO));
        assert!(t.allow(3, Millis(1000)), "refilled keys are forgotten");
    }

    #[test]
    fn shares_cap_per_key() {
        let mut s = Shares::new(2);
        assert!(s.try_add('a') && s.try_add('a'));
        assert!(!s.try_add('a'));
        assert!(s.try_add('b'));
        assert_eq!(s.heaviest(), Some(('a', 2)));
        s.remove(&'a');
        assert!(s.try_add('a'));
    }
}
