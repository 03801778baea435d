//! One NAT box for the simulated network ([`super::net`]): RFC 4787
//! mapping (EIM/ADM/APDM) x filtering (EIF/ADF/APDF), port allocation
//! (preserving, sequential with a step, random), idle mapping timeouts,
//! optional hairpinning and a firewall that drops UDP (TCP still passes).
//!
//! A mapping is keyed by the internal endpoint plus, for ADM, the
//! destination IP or, for APDM, the destination address and port; it owns
//! one external port on the NAT's public IP. Each mapping remembers the
//! remote endpoints it sent to and when: the filter admits an inbound
//! datagram on that port from any source (EIF), from an IP it sent to
//! (ADF) or from the exact endpoint it sent to (APDF), within the mapping
//! timeout. A mapping with no outbound datagram for `mapping_timeout_ms`
//! is dead: lookups treat it as absent and it is swept lazily.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::time::Millis;

/// How a datagram travels: the simulated network ([`super::net`]) tags
/// each one, and a NAT that blocks UDP passes only TCP (see that module's
/// doc for what TCP means there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
}

/// How internal endpoints map to external ones (RFC 4787 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MappingBehavior {
    /// One external port per internal endpoint, whatever the destination.
    EndpointIndependent,
    /// A new external port per destination address.
    AddressDependent,
    /// A new external port per destination address and port.
    AddressPortDependent,
}

/// Which inbound datagrams reach a mapping (RFC 4787 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilteringBehavior {
    /// Any source.
    EndpointIndependent,
    /// Sources whose address the mapping has sent to.
    AddressDependent,
    /// Only the exact address and port the mapping has sent to.
    AddressPortDependent,
}

/// How a new mapping picks its external port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortAllocation {
    /// The internal port when free, else the next free one above it
    /// (what Linux masquerading does).
    Preserve,
    /// Consecutive ports from `start`, stepping by `step` (predictable:
    /// what port prediction relies on).
    Sequential { start: u16, step: u16 },
    /// A random free port in 1024..=65535 (Linux `fully-random`).
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatConfig {
    pub public_ip: IpAddr,
    pub mapping: MappingBehavior,
    pub filtering: FilteringBehavior,
    pub ports: PortAllocation,
    /// A mapping idle (no outbound datagram) this long is removed.
    pub mapping_timeout_ms: u64,
    /// Drop every UDP datagram both ways (a firewall blocking UDP);
    /// TCP still passes.
    pub udp_blocked: bool,
    /// A host sending to its own NAT's public address is turned around
    /// (RFC 4787 §6); without it such datagrams are dropped.
    pub hairpinning: bool,
}

impl NatConfig {
    pub fn new(public_ip: IpAddr, mapping: MappingBehavior, filtering: FilteringBehavior) -> Self {
        NatConfig {
            public_ip,
            mapping,
            filtering,
            ports: match mapping {
                MappingBehavior::EndpointIndependent => PortAllocation::Preserve,
                _ => PortAllocation::Random,
            },
            mapping_timeout_ms: 120_000,
            udp_blocked: false,
            hairpinning: false,
        }
    }

    /// EIM + EIF.
    pub fn full_cone(public_ip: IpAddr) -> Self {
        Self::new(
            public_ip,
            MappingBehavior::EndpointIndependent,
            FilteringBehavior::EndpointIndependent,
        )
    }

    /// EIM + ADF.
    pub fn restricted_cone(public_ip: IpAddr) -> Self {
        Self::new(
            public_ip,
            MappingBehavior::EndpointIndependent,
            FilteringBehavior::AddressDependent,
        )
    }

    /// EIM + APDF.
    pub fn port_restricted_cone(public_ip: IpAddr) -> Self {
        Self::new(
            public_ip,
            MappingBehavior::EndpointIndependent,
            FilteringBehavior::AddressPortDependent,
        )
    }

    /// APDM + APDF.
    pub fn symmetric(public_ip: IpAddr) -> Self {
        Self::new(
            public_ip,
            MappingBehavior::AddressPortDependent,
            FilteringBehavior::AddressPortDependent,
        )
    }

    /// A port-restricted cone whose firewall drops all UDP.
    pub fn udp_blocked(public_ip: IpAddr) -> Self {
        NatConfig {
            udp_blocked: true,
            ..Self::port_restricted_cone(public_ip)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum MapKey {
    Endpoint(SocketAddr),
    Address(SocketAddr, IpAddr),
    AddressPort(SocketAddr, SocketAddr),
}

#[derive(Debug, Clone)]
struct Entry {
    key: MapKey,
    internal: SocketAddr,
    last_out: Millis,
    /// Remote endpoints this mapping sent to, with when it last did.
    sent_to: HashMap<SocketAddr, Millis>,
}

/// Counters of one NAT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatStats {
    pub out: u64,
    pub inbound: u64,
    /// Inbound datagrams with no live mapping on their port.
    pub no_mapping: u64,
    /// Inbound datagrams the filter refused.
    pub filtered: u64,
    /// UDP datagrams dropped because UDP is blocked.
    pub blocked: u64,
    pub mappings_created: u64,
}

/// One NAT box.
#[derive(Debug)]
pub struct Nat {
    cfg: NatConfig,
    by_key: HashMap<MapKey, u16>,
    by_port: HashMap<u16, Entry>,
    next_seq: u16,
    /// When dead mappings are next swept (they are ignored before).
    next_sweep: Millis,
    rng: StdRng,
    stats: NatStats,
}

impl Nat {
    pub fn new(cfg: NatConfig, seed: u64) -> Self {
        let next_seq = match cfg.ports {
            PortAllocation::Sequential { start, .. } => start,
            _ => 0,
        };
        Nat {
            cfg,
            by_key: HashMap::new(),
            by_port: HashMap::new(),
            next_seq,
            next_sweep: Millis::ZERO,
            rng: StdRng::seed_from_u64(seed),
            stats: NatStats::default(),
        }
    }

    pub fn config(&self) -> &NatConfig {
        &self.cfg
    }

    /// Block or unblock all UDP from now on (mappings are kept).
    pub fn set_udp_blocked(&mut self, blocked: bool) {
        self.cfg.udp_blocked = blocked;
    }

    pub fn public_ip(&self) -> IpAddr {
        self.cfg.public_ip
    }

    pub fn stats(&self) -> &NatStats {
        &self.stats
    }

    /// Mappings alive at `now`.
    pub fn mappings(&self, now: Millis) -> usize {
        self.by_port.values().filter(|e| self.live(e, now)).count()
    }

    /// Forget every mapping (like `conntrack -F`).
    pub fn flush(&mut self) {
        self.by_key.clear();
        self.by_port.clear();
    }

    /// The external address of `internal`'s mapping towards `dst`, if one
    /// is alive; creates nothing.
    pub fn mapping_for(
        &self,
        now: Millis,
        internal: SocketAddr,
        dst: SocketAddr,
    ) -> Option<SocketAddr> {
        let port = *self.by_key.get(&self.key(internal, dst))?;
        let e = self.by_port.get(&port)?;
        self.live(e, now)
            .then_some(SocketAddr::new(self.cfg.public_ip, port))
    }

    fn live(&self, e: &Entry, now: Millis) -> bool {
        now < e.last_out + self.cfg.mapping_timeout_ms
    }

    fn key(&self, internal: SocketAddr, dst: SocketAddr) -> MapKey {
        match self.cfg.mapping {
            MappingBehavior::EndpointIndependent => MapKey::Endpoint(internal),
            MappingBehavior::AddressDependent => MapKey::Address(internal, dst.ip()),
            MappingBehavior::AddressPortDependent => MapKey::AddressPort(internal, dst),
        }
    }

    /// Remove the mapping on `port` if it is dead at `now`.
    fn reap(&mut self, port: u16, now: Millis) {
        let dead = self.by_port.get(&port).is_some_and(|e| !self.live(e, now));
        if dead && let Some(e) = self.by_port.remove(&port) {
            self.by_key.remove(&e.key);
        }
    }

    /// Sweep dead mappings at most twice per timeout (lookups check
    /// liveness themselves, so this only bounds memory).
    fn sweep(&mut self, now: Millis) {
        if now < self.next_sweep {
            return;
        }
        let t = self.cfg.mapping_timeout_ms;
        self.next_sweep = now + (t / 2).max(1);
        let by_key = &mut self.by_key;
        self.by_port.retain(|_, e| {
            let live = now < e.last_out + t;
            if !live {
                by_key.remove(&e.key);
            }
            live
        });
    }

    fn free_port(&mut self, now: Millis, internal: SocketAddr) -> Option<u16> {
        let t = self.cfg.mapping_timeout_ms;
        let free = |p: u16, m: &HashMap<u16, Entry>| {
            p >= 1024 && m.get(&p).is_none_or(|e| now >= e.last_out + t)
        };
        let port = match self.cfg.ports {
            PortAllocation::Preserve => {
                // Ports 1024..=65535, from the internal port upwards, wrapping.
                let base = u32::from(internal.port().max(1024)) - 1024;
                (0..64_512u32)
                    .map(|i| (1024 + (base + i) % 64_512) as u16)
                    .find(|p| free(*p, &self.by_port))
            }
            PortAllocation::Sequential { step, .. } => {
                let mut found = None;
                for _ in 0..=u16::MAX {
                    let p = self.next_seq;
                    self.next_seq = self.next_seq.wrapping_add(step.max(1));
                    if free(p, &self.by_port) {
                        found = Some(p);
                        break;
                    }
                }
                found
            }
            PortAllocation::Random => {
                let mut found = None;
                for _ in 0..10_000 {
                    let p = self.rng.gen_range(1024..=u16::MAX);
                    if free(p, &self.by_port) {
                        found = Some(p);
                        break;
                    }
                }
                found
            }
        }?;
        self.reap(port, now);
        Some(port)
    }

    /// A datagram from `internal` to `dst` leaves through the NAT: returns
    /// its new source address (creating or refreshing the mapping), or
    /// `None` if it is dropped.
    pub fn outbound(
        &mut self,
        now: Millis,
        internal: SocketAddr,
        dst: SocketAddr,
        transport: Transport,
    ) -> Option<SocketAddr> {
        if self.cfg.udp_blocked && transport == Transport::Udp {
            self.stats.blocked += 1;
            return None;
        }
        self.sweep(now);
        let key = self.key(internal, dst);
        if let Some(&p) = self.by_key.get(&key) {
            self.reap(p, now);
        }
        let port = match self.by_key.get(&key) {
            Some(p) => *p,
            None => {
                let p = self.free_port(now, internal)?;
                self.by_key.insert(key, p);
                self.by_port.insert(
                    p,
                    Entry {
                        key,
                        internal,
                        last_out: now,
                        sent_to: HashMap::new(),
                    },
                );
                self.stats.mappings_created += 1;
                p
            }
        };
        let e = self.by_port.get_mut(&port)?;
        e.last_out = now;
        e.sent_to.insert(dst, now);
        self.stats.out += 1;
        Some(SocketAddr::new(self.cfg.public_ip, port))
    }

    /// A datagram from `src` arrives at `external` (our public IP): returns
    /// the internal endpoint to deliver it to, or `None` if it is dropped
    /// (no mapping on that port, or the filter refuses the source).
    pub fn inbound(
        &mut self,
        now: Millis,
        src: SocketAddr,
        external: SocketAddr,
        transport: Transport,
    ) -> Option<SocketAddr> {
        if self.cfg.udp_blocked && transport == Transport::Udp {
            self.stats.blocked += 1;
            return None;
        }
        self.sweep(now);
        self.reap(external.port(), now);
        let Some(e) = self.by_port.get(&external.port()) else {
            self.stats.no_mapping += 1;
            return None;
        };
        let t = self.cfg.mapping_timeout_ms;
        let live = |at: &Millis| now < *at + t;
        let ok = match self.cfg.filtering {
            FilteringBehavior::EndpointIndependent => true,
            FilteringBehavior::AddressDependent => e
                .sent_to
                .iter()
                .any(|(a, at)| a.ip() == src.ip() && live(at)),
            FilteringBehavior::AddressPortDependent => e.sent_to.get(&src).is_some_and(live),
        };
        if !ok {
            self.stats.filtered += 1;
            return None;
        }
        self.stats.inbound += 1;
        Some(e.internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const IN: &str = "10.0.0.2:5000";
    const PUB: &str = "198.18.0.1";

    fn nat(m: MappingBehavior, f: FilteringBehavior) -> Nat {
        Nat::new(NatConfig::new(PUB.parse().unwrap(), m, f), 1)
    }

    #[test]
    fn mapping_behaviours() {
        use MappingBehavior::*;
        let s1 = a("1.1.1.1:3478");
        let s1p = a("1.1.1.1:3479");
        let s2 = a("2.2.2.2:3478");
        for (m, same_ip_other_port, other_ip) in [
            (EndpointIndependent, true, true),
            (AddressDependent, true, false),
            (AddressPortDependent, false, false),
        ] {
            let mut n = nat(m, FilteringBehavior::AddressPortDependent);
            let x = n.outbound(Millis(0), a(IN), s1, Transport::Udp).unwrap();
            assert_eq!(
                x == n.outbound(Millis(1), a(IN), s1p, Transport::Udp).unwrap(),
                same_ip_other_port,
                "{m:?}"
            );
            assert_eq!(
                x == n.outbound(Millis(2), a(IN), s2, Transport::Udp).unwrap(),
                other_ip,
                "{m:?}"
            );
            assert_eq!(
                x,
                n.outbound(Millis(3), a(IN), s1, Transport::Udp).unwrap(),
                "a mapping is reused"
            );
        }
    }

    #[test]
    fn filtering_behaviours() {
        use FilteringBehavior::*;
        let s1 = a("1.1.1.1:3478");
        for (f, same_ip_other_port, other_ip) in [
            (EndpointIndependent, true, true),
            (AddressDependent, true, false),
            (AddressPortDependent, false, false),
        ] {
            let mut n = nat(MappingBehavior::EndpointIndependent, f);
            let x = n.outbound(Millis(0), a(IN), s1, Transport::Udp).unwrap();
            assert_eq!(n.inbound(Millis(1), s1, x, Transport::Udp), Some(a(IN)));
            assert_eq!(
                n.inbound(Millis(1), a("1.1.1.1:9"), x, Transport::Udp)
                    .is_some(),
                same_ip_other_port,
                "{f:?}"
            );
            assert_eq!(
                n.inbound(Millis(1), a("3.3.3.3:3478"), x, Transport::Udp)
                    .is_some(),
                other_ip,
                "{f:?}"
            );
            // No mapping on another port, whatever the filter.
            let other = SocketAddr::new(x.ip(), x.port().wrapping_add(1));
            assert_eq!(n.inbound(Millis(1), s1, other, Transport::Udp), None);
        }
    }

    #[test]
    fn mappings_expire_and_ports_are_preserved_or_sequential() {
        let mut n = nat(
            MappingBehavior::EndpointIndependent,
            FilteringBehavior::EndpointIndependent,
        );
        let x = n
            .outbound(Millis(0), a(IN), a("1.1.1.1:1"), Transport::Udp)
            .unwrap();
        assert_eq!(x.port(), 5000, "port preserved");
        assert!(
            n.inbound(Millis(119_999), a("9.9.9.9:9"), x, Transport::Udp)
                .is_some()
        );
        assert!(
            n.inbound(Millis(120_000), a("9.9.9.9:9"), x, Transport::Udp)
                .is_none(),
            "expired"
        );
        assert_eq!(n.mappings(Millis(120_000)), 0);

        let mut cfg = NatConfig::symmetric(PUB.parse().unwrap());
        cfg.ports = PortAllocation::Sequential {
            start: 40_000,
            step: 2,
        };
        let mut s = Nat::new(cfg, 1);
        let p: Vec<u16> = (1..=3)
            .map(|i| {
                s.outbound(
                    Millis(0),
                    a(IN),
                    SocketAddr::new("1.1.1.1".parse().unwrap(), i),
                    Transport::Udp,
                )
                .unwrap()
                .port()
            })
            .collect();
        assert_eq!(p, vec![40_000, 40_002, 40_004]);
    }
}
