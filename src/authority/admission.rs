//! Who may hold one of the authority's connection slots, and for how long.
//! Sans-IO: the driver reports accepts, frame progress and closes with
//! `now` ([`Millis`], the node's monotonic timeline: these are
//! per-connection timeouts, never judged against another machine); this
//! decides admissions, evictions and each connection's deadline.
//!
//! A slot is paid for with progress: a frame (the first one included) must
//! arrive whole within `frame_deadline_ms` of its first byte being due, not
//! merely keep trickling; one source ([`SourceKey`]) holds at most
//! `per_address` slots; and when every slot is taken the connection that
//! has kept us waiting longest, from the source holding most, makes room.

use crate::limits::{Shares, SourceKey};
use crate::time::Millis;
use std::collections::HashMap;
use std::net::IpAddr;

/// Connection admission knobs; see `[authority]` in config/natter.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionPolicy {
    /// Slots in all.
    pub max_connections: usize,
    /// Slots one source (IPv4 address, IPv6 /64) may hold.
    pub per_address: usize,
    /// A whole frame must arrive within this long of being due (after the
    /// accept for the first frame, after its first byte for later ones).
    pub frame_deadline_ms: u64,
    /// A connection with no frame started is closed after this long.
    pub idle_ms: u64,
    /// When full, a connection that has kept us waiting at least this
    /// long may be evicted for a newcomer.
    pub evict_after_ms: u64,
}

impl Default for AdmissionPolicy {
    fn default() -> Self {
        AdmissionPolicy {
            max_connections: 1024,
            per_address: 16,
            frame_deadline_ms: 10_000,
            idle_ms: 30_000,
            evict_after_ms: 1_000,
        }
    }
}

/// Names a connection to the admission table.
pub type ConnId = u64;

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source already holds `per_address` slots.
    AddressCap,
    /// Every slot is held by a connection that is making progress.
    Full,
}

/// What to do with a newly accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Accept(ConnId),
    /// Accept `id`, after closing `evict` (already forgotten here).
    AcceptEvicting {
        id: ConnId,
        evict: ConnId,
    },
    Refuse(Refusal),
}

/// Why a connection's time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A frame did not arrive whole in time.
    FrameDeadline,
    /// Nothing started for `idle_ms`.
    Idle,
}

/// Counters of admissions and refusals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    pub accepted: u64,
    pub refused_address_cap: u64,
    pub refused_full: u64,
    pub evicted: u64,
    pub frame_deadline: u64,
    pub idle: u64,
}

#[derive(Debug, Clone, Copy)]
struct Conn {
    /// The source charged for this slot.
    key: SourceKey,
    /// Since when we have been waiting on the peer (monotonic).
    waiting_since: Millis,
    /// When the frame being awaited must be complete, if one is due
    /// (monotonic).
    frame_due: Option<Millis>,
    /// A request is being served (hashing, database): the wait is ours.
    busy: bool,
}

#[derive(Debug)]
pub struct Admission {
    pub policy: AdmissionPolicy,
    conns: HashMap<ConnId, Conn>,
    shares: Shares<SourceKey>,
    next_id: ConnId,
    stats: AdmissionStats,
}

impl Admission {
    pub fn new(policy: AdmissionPolicy) -> Self {
        Admission {
            shares: Shares::new(policy.per_address.max(1)),
            policy,
            conns: HashMap::new(),
            next_id: 1,
            stats: AdmissionStats::default(),
        }
    }

    pub fn stats(&self) -> AdmissionStats {
        self.stats
    }

    pub fn open(&self) -> usize {
        self.conns.len()
    }

    /// A connection from `ip` was accepted by the socket.
    pub fn on_accept(&mut self, now: Millis, ip: IpAddr) -> Admit {
        let key = SourceKey::of(ip);
        if self.shares.get(&key) >= self.shares.cap {
            self.stats.refused_address_cap += 1;
            tracing::warn!(source = %key, cap = self.shares.cap, "authority: connection refused, per-address cap");
            return Admit::Refuse(Refusal::AddressCap);
        }
        let mut evict = None;
        if self.conns.len() >= self.policy.max_connections.max(1) {
            let Some(victim) = self.victim(now) else {
                self.stats.refused_full += 1;
                tracing::warn!(source = %key, "authority: connection refused, every slot busy");
                return Admit::Refuse(Refusal::Full);
            };
            self.forget(victim);
            self.stats.evicted += 1;
            tracing::info!(source = %key, "authority: slow connection evicted for a newcomer");
            evict = Some(victim);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.shares.try_add(key);
        self.conns.insert(
            id,
            Conn {
                key,
                waiting_since: now,
                frame_due: Some(now + self.policy.frame_deadline_ms),
                busy: false,
            },
        );
        self.stats.accepted += 1;
        match evict {
            None => Admit::Accept(id),
            Some(evict) => Admit::AcceptEvicting { id, evict },
        }
    }

    /// The evictable connection (not being served, kept us waiting at least
    /// `evict_after_ms`) whose source holds most slots, longest waiting.
    fn victim(&self, now: Millis) -> Option<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| !c.busy && now.since(c.waiting_since) >= self.policy.evict_after_ms)
            .max_by_key(|(id, c)| {
                (
                    self.shares.get(&c.key),
                    now.since(c.waiting_since),
                    std::cmp::Reverse(**id),
                )
            })
            .map(|(id, _)| *id)
    }

    fn forget(&mut self, id: ConnId) {
        if let Some(c) = self.conns.remove(&id) {
            self.shares.remove(&c.key);
        }
    }

    /// A whole frame arrived: serving it is our time, not the peer's.
    pub fn on_frame(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.busy = true;
            c.frame_due = None;
        }
    }

    /// We wait on the peer again; `partial` says bytes of the next frame
    /// are already here (its deadline then runs from now).
    pub fn on_waiting(&mut self, id: ConnId, now: Millis, partial: bool) {
        let deadline = self.policy.frame_deadline_ms;
        if let Some(c) = self.conns.get_mut(&id) {
            if c.busy {
                c.busy = false;
                c.waiting_since = now;
            }
            if c.frame_due.is_none() && partial {
                c.frame_due = Some(now + deadline);
            }
        }
    }

    /// When `id` must next have made progress; `None` while it is served
    /// or once it is gone (evicted).
    pub fn deadline(&self, id: ConnId) -> Option<Millis> {
        let c = self.conns.get(&id)?;
        if c.busy {
            return None;
        }
        Some(c.frame_due.unwrap_or(c.waiting_since + self.policy.idle_ms))
    }

    /// Call when `deadline` has passed: counts, logs and forgets `id`.
    pub fn on_expired(&mut self, id: ConnId, now: Millis) -> Option<Expiry> {
        let due = self.deadline(id)?;
        if now < due {
            return None;
        }
        let c = self.conns.get(&id)?;
        let why = if c.frame_due.is_some() {
            self.stats.frame_deadline += 1;
            Expiry::FrameDeadline
        } else {
            self.stats.idle += 1;
            Expiry::Idle
        };
        tracing::info!(source = %c.key, ?why, "authority: connection closed, too slow");
        self.forget(id);
        Some(why)
    }

    /// The connection ended (either side). Idempotent.
    pub fn on_closed(&mut self, id: ConnId) {
        self.forget(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    fn id(a: Admit) -> ConnId {
        match a {
            Admit::Accept(id) | Admit::AcceptEvicting { id, .. } => id,
            Admit::Refuse(r) => panic!("refused: {r:?}"),
        }
    }

    #[test]
    fn trickling_a_frame_does_not_extend_its_deadline() {
        let mut a = Admission::new(AdmissionPolicy::default());
        let c = id(a.on_accept(Millis(0), ip(1)));
        // One byte every 2 s: the per-read idle timer of old never fired.
        for t in (0..10_000).step_by(2_000) {
            a.on_waiting(c, Millis(t), true);
            assert_eq!(a.deadline(c), Some(Millis(10_000)));
        }
        assert_eq!(a.on_expired(c, Millis(9_999)), None);
        assert_eq!(a.on_expired(c, Millis(10_000)), Some(Expiry::FrameDeadline));
        assert_eq!(a.open(), 0);
        assert_eq!(a.stats().frame_deadline, 1);
    }

    #[test]
    fn served_connections_wait_for_their_next_frame() {
        let mut a = Admission::new(AdmissionPolicy::default());
        let c = id(a.on_accept(Millis(0), ip(1)));
        a.on_frame(c);
        assert_eq!(a.deadline(c), None, "hashing is our time");
        a.on_waiting(c, Millis(60_000), false);
        assert_eq!(a.deadline(c), Some(Millis(90_000)));
        a.on_waiting(c, Millis(70_000), true);
        assert_eq!(a.deadline(c), Some(Millis(80_000)));
        assert_eq!(a.on_expired(c, Millis(80_000)), Some(Expiry::FrameDeadline));
    }

    #[test]
    fn one_source_holds_at_most_its_share() {
        let mut a = Admission::new(AdmissionPolicy::default());
        for _ in 0..16 {
            id(a.on_accept(Millis(0), ip(1)));
        }
        assert_eq!(
            a.on_accept(Millis(0), ip(1)),
            Admit::Refuse(Refusal::AddressCap)
        );
        // One IPv6 /64 is one source.
        for i in 0..16u16 {
            let v6 = IpAddr::from([0x2001, 0xdb8, 0, 1, i, 0, 0, 1]);
            id(a.on_accept(Millis(0), v6));
        }
        let v6 = IpAddr::from([0x2001, 0xdb8, 0, 1, 99, 0, 0, 1]);
        assert_eq!(
            a.on_accept(Millis(0), v6),
            Admit::Refuse(Refusal::AddressCap)
        );
        id(a.on_accept(Millis(0), ip(2)));
        assert_eq!(a.stats().refused_address_cap, 2);
    }

    #[test]
    fn a_full_table_evicts_the_slowest_of_the_heaviest_source() {
        let mut a = Admission::new(AdmissionPolicy {
            max_connections: 4,
            ..Default::default()
        });
        let honest = id(a.on_accept(Millis(0), ip(9)));
        let slow: Vec<_> = (0..3)
            .map(|i| id(a.on_accept(Millis(100 * i), ip(1))))
            .collect();
        // Too soon: everyone has been waiting under evict_after_ms.
        assert_eq!(
            a.on_accept(Millis(500), ip(7)),
            Admit::Refuse(Refusal::Full)
        );
        assert_eq!(
            a.on_accept(Millis(2_000), ip(7)),
            Admit::AcceptEvicting {
                id: 5,
                evict: slow[0]
            }
        );
        assert!(a.deadline(honest).is_some());
        // Connections being served are never evicted.
        for c in [honest, slow[1], slow[2], 5] {
            a.on_frame(c);
        }
        assert_eq!(
            a.on_accept(Millis(9_000), ip(8)),
            Admit::Refuse(Refusal::Full)
        );
        let s = a.stats();
        assert_eq!((s.evicted, s.refused_full), (1, 2));
    }
}
