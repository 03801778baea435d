//! Failed-login throttling per account and per source ([`SourceKey`]: an
//! IPv4 address or an IPv6 /64), and a registration rate limit per
//! source. Pure state driven by `now`, on the wall clock
//! ([`UnixMillis`]): the same rules run on rows in the database that
//! several authorities share, so a lockout is judged against their
//! clocks, not one process's timeline.
//!
//! A password attempt is counted as a failure *before* it is hashed
//! ([`Throttle::login_attempt`]) and refunded if it succeeds, so guesses sent
//! in parallel on many connections meet the lockout as serial ones do.

use crate::limits::SourceKey;
use crate::time::UnixMillis;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// Throttling knobs; see `[authority]` in config/natter.toml.
#[derive(Debug, Clone)]
pub struct ThrottlePolicy {
    /// Failures per account allowed before lockouts start.
    pub account_failures: u32,
    /// Failures per source address allowed before lockouts start (higher:
    /// many users can share one NAT address).
    pub address_failures: u32,
    /// A failure count decays to zero after this long without failures.
    pub window_ms: u64,
    /// Longest lockout; lockouts double per failure up to this.
    pub max_lockout_ms: u64,
    /// Registrations per address per hour; 0 means no limit.
    pub registrations_per_hour: u32,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            account_failures: 5,
            address_failures: 20,
            window_ms: 15 * 60 * 1000,
            max_lockout_ms: 15 * 60 * 1000,
            registrations_per_hour: 20,
        }
    }
}

/// Failed attempts against one account or one source. Kept in memory by
/// [`Throttle`], or as a database row when several authorities share the
/// throttle (see [`super::store::Store::shared_login_attempt`]): both
/// apply these same rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    /// Failures counted (attempts in flight count until refunded).
    pub count: u32,
    /// When the last failure was counted (wall clock): the window decays
    /// from it.
    pub last: UnixMillis,
    /// No attempt before this (wall clock).
    pub locked_until: UnixMillis,
}

impl Failures {
    /// Forget everything once the window has passed and no lock holds.
    pub fn decay(&mut self, now: UnixMillis, window_ms: u64) {
        if now.since(self.last) > window_ms && now >= self.locked_until {
            *self = Failures::default();
        }
    }

    /// Milliseconds until the next attempt (0: now).
    pub fn wait(&self, now: UnixMillis) -> u64 {
        self.locked_until.since(now)
    }

    /// An attempt counted in advance turned out right.
    pub fn refund(&mut self, free: u32) {
        self.count = self.count.saturating_sub(1);
        if self.count < free {
            self.locked_until = UnixMillis::ZERO;
        }
    }

    /// Count a failure; past `free` failures, lock for 1 s doubling per
    /// failure up to the policy's maximum.
    pub fn fail(&mut self, now: UnixMillis, free: u32, policy: &ThrottlePolicy) {
        self.count = self.count.saturating_add(1);
        self.last = now;
        if self.count >= free {
            let doublings = (self.count - free).min(30);
            let lock = (1000u64 << doublings).min(policy.max_lockout_ms);
            self.locked_until = now + lock;
        }
    }
}

#[derive(Debug, Default)]
pub struct Throttle {
    pub policy: ThrottlePolicy,
    accounts: HashMap<String, Failures>,
    addresses: HashMap<SourceKey, Failures>,
    /// When each source registered in the last hour (wall clock).
    registrations: HashMap<SourceKey, VecDeque<UnixMillis>>,
}

impl Throttle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Throttle {
            policy,
            ..Default::default()
        }
    }

    /// Milliseconds until a login for `account` from `addr` may be tried,
    /// or `None` if it may be tried now.
    /// A device that logged in to `account` before (`known_device`) is
    /// not held back by the account's lockout, only by its address's: a
    /// stranger guessing at an account cannot lock its owner out.
    pub fn login_blocked(
        &mut self,
        now: UnixMillis,
        account: &str,
        addr: IpAddr,
        known_device: bool,
    ) -> Option<u64> {
        let w = self.policy.window_ms;
        let mut wait = 0;
        if let Some(f) = self.accounts.get_mut(account).filter(|_| !known_device) {
            f.decay(now, w);
            wait = wait.max(f.wait(now));
        }
        if let Some(f) = self.addresses.get_mut(&SourceKey::of(addr)) {
            f.decay(now, w);
            wait = wait.max(f.wait(now));
        }
        (wait > 0).then_some(wait)
    }

    /// Checks and counts a password attempt before it is hashed: `Err`
    /// holds the wait when it is blocked; otherwise it counts as a failure
    /// until [`Throttle::login_succeeded`] refunds it.
    pub fn login_attempt(
        &mut self,
        now: UnixMillis,
        account: &str,
        addr: IpAddr,
        known_device: bool,
    ) -> Result<(), u64> {
        if let Some(wait) = self.login_blocked(now, account, addr, known_device) {
            return Err(wait);
        }
        self.login_failed(now, account, addr);
        Ok(())
    }

    pub fn login_failed(&mut self, now: UnixMillis, account: &str, addr: IpAddr) {
        let p = self.policy.clone();
        let a = self.accounts.entry(account.to_owned()).or_default();
        a.decay(now, p.window_ms);
        a.fail(now, p.account_failures, &p);
        let b = self.addresses.entry(SourceKey::of(addr)).or_default();
        b.decay(now, p.window_ms);
        b.fail(now, p.address_failures, &p);
    }

    /// A correct password clears the account's failures and refunds the
    /// attempt counted against the address (only that one: one good
    /// account must not unlock guessing at others).
    pub fn login_succeeded(&mut self, account: &str, addr: IpAddr) {
        self.accounts.remove(account);
        if let Some(f) = self.addresses.get_mut(&SourceKey::of(addr)) {
            f.refund(self.policy.address_failures);
        }
    }

    /// Milliseconds until `addr` may register again, or `None`; counts the
    /// attempt when allowed.
    pub fn registration(&mut self, now: UnixMillis, addr: IpAddr) -> Option<u64> {
        let limit = self.policy.registrations_per_hour as usize;
        if limit == 0 {
            return None;
        }
        const HOUR: u64 = 3_600_000;
        let q = self.registrations.entry(SourceKey::of(addr)).or_default();
        while q.front().is_some_and(|&t| now.since(t) >= HOUR) {
            q.pop_front();
        }
        if q.len() >= limit {
            let oldest = q.front().copied().unwrap_or(now);
            return Some((oldest + HOUR).since(now).max(1));
        }
        q.push_back(now);
        None
    }

    /// Drop entries that no longer hold anything back.
    pub fn prune(&mut self, now: UnixMillis) {
        let w = self.policy.window_ms;
        let keep = |f: &mut Failures| {
            f.decay(now, w);
            f.count > 0
        };
        self.accounts.retain(|_, f| keep(f));
        self.addresses.retain(|_, f| keep(f));
        self.registrations
            .retain(|_, q| q.back().is_some_and(|&t| now.since(t) < 3_600_000));
    }

    pub fn tracked(&self) -> usize {
        self.accounts.len() + self.addresses.len() + self.registrations.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn account_locks_after_free_failures_and_doubles() {
        let mut t = Throttle::new(ThrottlePolicy::default());
        for _ in 0..4 {
            t.login_failed(UnixMillis(0), "alice", ip(1));
            assert_eq!(t.login_blocked(UnixMillis(0), "alice", ip(2), false), None);
        }
        t.login_failed(UnixMillis(0), "alice", ip(1));
        // From another address too: the lock is on the account.
        assert_eq!(
            t.login_blocked(UnixMillis(0), "alice", ip(2), false),
            Some(1000)
        );
        assert_eq!(
            t.login_blocked(UnixMillis(1000), "alice", ip(2), false),
            None
        );
        t.login_failed(UnixMillis(1000), "alice", ip(1));
        assert_eq!(
            t.login_blocked(UnixMillis(1000), "alice", ip(2), false),
            Some(2000)
        );
        // Another account from another address is unaffected.
        assert_eq!(t.login_blocked(UnixMillis(1000), "bob", ip(3), false), None);
    }

    #[test]
    fn address_locks_across_accounts() {
        let mut t = Throttle::new(ThrottlePolicy::default());
        for i in 0..20 {
            t.login_failed(UnixMillis(0), &format!("user{i}"), ip(9));
        }
        assert!(
            t.login_blocked(UnixMillis(0), "fresh", ip(9), false)
                .is_some()
        );
        assert!(
            t.login_blocked(UnixMillis(0), "fresh", ip(8), false)
                .is_none()
        );
    }

    #[test]
    fn failures_decay_and_success_clears() {
        let mut t = Throttle::new(ThrottlePolicy::default());
        for _ in 0..4 {
            t.login_failed(UnixMillis(0), "a", ip(1));
        }
        t.login_succeeded("a", ip(1));
        t.login_failed(UnixMillis(10), "a", ip(1));
        assert_eq!(t.login_blocked(UnixMillis(10), "a", ip(2), false), None);
        t.prune(UnixMillis(10 + 16 * 60 * 1000));
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn lockout_is_capped() {
        let mut t = Throttle::new(ThrottlePolicy::default());
        for _ in 0..100 {
            t.login_failed(UnixMillis(0), "a", ip(1));
        }
        assert_eq!(
            t.login_blocked(UnixMillis(0), "a", ip(2), false),
            Some(15 * 60 * 1000)
        );
    }

    #[test]
    fn parallel_attempts_are_counted_before_hashing() {
        let mut t = Throttle::new(ThrottlePolicy::default());
        // 50 guesses arrive before any hash finishes: 5 get through.
        let admitted = (0..50)
            .filter(|_| {
                t.login_attempt(UnixMillis(0), "alice", ip(1), false)
                    .is_ok()
            })
            .count();
        assert_eq!(admitted, 5);
        // The owner's known device is not locked out by the stranger.
        assert!(t.login_attempt(UnixMillis(0), "alice", ip(2), true).is_ok());
        t.login_succeeded("alice", ip(2));
        assert_eq!(t.login_blocked(UnixMillis(0), "alice", ip(3), false), None);
    }

    #[test]
    fn an_ipv6_64_is_one_address() {
        let mut t = Throttle::new(ThrottlePolicy::default());
        for i in 0..20u16 {
            let a = IpAddr::from([0x2001, 0xdb8, 7, 7, i, i, i, 1]);
            t.login_failed(UnixMillis(0), &format!("user{i}"), a);
        }
        let same = IpAddr::from([0x2001, 0xdb8, 7, 7, 0xffff, 1, 2, 3]);
        let other = IpAddr::from([0x2001, 0xdb8, 7, 8, 0, 0, 0, 1]);
        assert!(
            t.login_blocked(UnixMillis(0), "fresh", same, false)
                .is_some()
        );
        assert!(
            t.login_blocked(UnixMillis(0), "fresh", other, false)
                .is_none()
        );
    }

    #[test]
    fn a_success_refunds_its_attempt() {
        let mut t = Throttle::new(ThrottlePolicy {
            address_failures: 2,
            ..Default::default()
        });
        for _ in 0..5 {
            t.login_attempt(UnixMillis(0), "bob", ip(4), false).unwrap();
            t.login_succeeded("bob", ip(4));
        }
        assert_eq!(t.login_blocked(UnixMillis(0), "carol", ip(4), false), None);
    }

    #[test]
    fn registrations_limited_per_hour() {
        let mut t = Throttle::new(ThrottlePolicy {
            registrations_per_hour: 2,
            ..Default::default()
        });
        assert_eq!(t.registration(UnixMillis(0), ip(1)), None);
        assert_eq!(t.registration(UnixMillis(10), ip(1)), None);
        assert_eq!(t.registration(UnixMillis(20), ip(1)), Some(3_600_000 - 20));
        assert_eq!(t.registration(UnixMillis(20), ip(2)), None);
        assert_eq!(t.registration(UnixMillis(3_600_000), ip(1)), None);
    }
}
