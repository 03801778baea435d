//! NAT behaviour for in-process simulations: a model of one NAT box
//! ([`Nat`]: RFC 4787 mapping EIM/ADM/APDM x filtering EIF/ADF/APDF, port
//! allocation, mapping timeouts, blocked UDP) and a small datagram network
//! ([`NatNetwork`]) that carries datagrams between public hosts and hosts
//! behind such NATs, with seeded delay, jitter and loss in virtual time.
//!
//! The network knows nothing of the protocols: a test loop sends the
//! cores' datagrams with [`NatNetwork::send`], advances time to the next
//! delivery or core deadline, and hands each [`Delivered`] datagram to the
//! core owning its destination socket. Addresses are plain
//! [`SocketAddr`]s; a host is "behind" a NAT when its IP was placed there
//! with [`NatNetwork::place_behind`], and a NAT's public IP is its own.
//!
//! Not modelled: hairpinning (a host sending to its own NAT's public
//! address is dropped), ICMP, fragmentation, TCP.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

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
    /// Drop every UDP datagram both ways (a firewall blocking UDP).
    pub udp_blocked: bool,
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
    last_out: u64,
    /// Remote endpoints this mapping sent to, with when it last did.
    sent_to: HashMap<SocketAddr, u64>,
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
    /// Datagrams dropped because UDP is blocked.
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

    /// Live mappings.
    pub fn mappings(&self) -> usize {
        self.by_port.len()
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
        now: u64,
        internal: SocketAddr,
        dst: SocketAddr,
    ) -> Option<SocketAddr> {
        let port = *self.by_key.get(&self.key(internal, dst))?;
        let e = self.by_port.get(&port)?;
        (now < e.last_out + self.cfg.mapping_timeout_ms)
            .then_some(SocketAddr::new(self.cfg.public_ip, port))
    }

    fn key(&self, internal: SocketAddr, dst: SocketAddr) -> MapKey {
        match self.cfg.mapping {
            MappingBehavior::EndpointIndependent => MapKey::Endpoint(internal),
            MappingBehavior::AddressDependent => MapKey::Address(internal, dst.ip()),
            MappingBehavior::AddressPortDependent => MapKey::AddressPort(internal, dst),
        }
    }

    fn expire(&mut self, now: u64) {
        let t = self.cfg.mapping_timeout_ms;
        let dead: Vec<u16> = self
            .by_port
            .iter()
            .filter(|(_, e)| now >= e.last_out + t)
            .map(|(p, _)| *p)
            .collect();
        for p in dead {
            if let Some(e) = self.by_port.remove(&p) {
                self.by_key.remove(&e.key);
            }
        }
    }

    fn free_port(&mut self, internal: SocketAddr) -> Option<u16> {
        let free = |p: u16, m: &HashMap<u16, Entry>| p >= 1024 && !m.contains_key(&p);
        match self.cfg.ports {
            PortAllocation::Preserve => {
                // Ports 1024..=65535, from the internal port upwards, wrapping.
                let base = u32::from(internal.port().max(1024)) - 1024;
                (0..64_512u32)
                    .map(|i| (1024 + (base + i) % 64_512) as u16)
                    .find(|p| free(*p, &self.by_port))
            }
            PortAllocation::Sequential { step, .. } => {
                for _ in 0..=u16::MAX {
                    let p = self.next_seq;
                    self.next_seq = self.next_seq.wrapping_add(step.max(1));
                    if free(p, &self.by_port) {
                        return Some(p);
                    }
                }
                None
            }
            PortAllocation::Random => {
                for _ in 0..10_000 {
                    let p = self.rng.gen_range(1024..=u16::MAX);
                    if free(p, &self.by_port) {
                        return Some(p);
                    }
                }
                None
            }
        }
    }

    /// A datagram from `internal` to `dst` leaves through the NAT: returns
    /// its new source address (creating or refreshing the mapping), or
    /// `None` if it is dropped.
    pub fn outbound(
        &mut self,
        now: u64,
        internal: SocketAddr,
        dst: SocketAddr,
    ) -> Option<SocketAddr> {
        if self.cfg.udp_blocked {
            self.stats.blocked += 1;
            return None;
        }
        self.expire(now);
        let key = self.key(internal, dst);
        let port = match self.by_key.get(&key) {
            Some(p) => *p,
            None => {
                let p = self.free_port(internal)?;
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
        now: u64,
        src: SocketAddr,
        external: SocketAddr,
    ) -> Option<SocketAddr> {
        if self.cfg.udp_blocked {
            self.stats.blocked += 1;
            return None;
        }
        self.expire(now);
        let Some(e) = self.by_port.get(&external.port()) else {
            self.stats.no_mapping += 1;
            return None;
        };
        let t = self.cfg.mapping_timeout_ms;
        let live = |at: &u64| now < at + t;
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

/// Index of a NAT in a [`NatNetwork`].
pub type NatId = usize;

/// A datagram handed to its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub at: u64,
    /// The source as the receiver sees it (after the sender's NAT).
    pub from: SocketAddr,
    /// The receiving socket's own address (after the receiver's NAT).
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Counters of the network (NATs keep their own, see [`Nat::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    /// Dropped by a NAT on the way out or in.
    pub nat_dropped: u64,
    /// Sent to our own NAT's public address (no hairpinning).
    pub hairpin_dropped: u64,
}

/// Datagrams in flight between hosts, some of them behind NATs.
#[derive(Debug)]
pub struct NatNetwork {
    pub now: u64,
    pub delay_ms: u64,
    pub jitter_ms: u64,
    /// Probability in [0, 1] that a datagram is lost.
    pub loss: f64,
    rng: StdRng,
    nats: Vec<Nat>,
    behind: HashMap<IpAddr, NatId>,
    by_public: HashMap<IpAddr, NatId>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    in_flight: HashMap<u64, (SocketAddr, SocketAddr, Vec<u8>)>,
    seq: u64,
    stats: NetStats,
}

impl NatNetwork {
    /// A network at virtual time `now` with fixed one-way delay, jitter
    /// (uniform in 0..=jitter) and loss, all drawn from `seed`.
    pub fn new(seed: u64, now: u64, delay_ms: u64, jitter_ms: u64, loss: f64) -> Self {
        NatNetwork {
            now,
            delay_ms,
            jitter_ms,
            loss,
            rng: StdRng::seed_from_u64(seed),
            nats: Vec::new(),
            behind: HashMap::new(),
            by_public: HashMap::new(),
            queue: BinaryHeap::new(),
            in_flight: HashMap::new(),
            seq: 0,
            stats: NetStats::default(),
        }
    }

    /// Add a NAT; its RNG (random ports) is seeded from the network's.
    pub fn add_nat(&mut self, cfg: NatConfig) -> NatId {
        let id = self.nats.len();
        let seed = self.rng.r#gen();
        self.by_public.insert(cfg.public_ip, id);
        self.nats.push(Nat::new(cfg, seed));
        id
    }

    /// Put the host with IP `internal` behind `nat`.
    pub fn place_behind(&mut self, internal: IpAddr, nat: NatId) {
        self.behind.insert(internal, nat);
    }

    pub fn nat(&self, id: NatId) -> &Nat {
        &self.nats[id]
    }

    pub fn nat_mut(&mut self, id: NatId) -> &mut Nat {
        &mut self.nats[id]
    }

    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// Send a datagram now from the local socket `from` to `to`.
    pub fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.stats.sent += 1;
        let src = match self.behind.get(&from.ip()) {
            Some(&n) => {
                if self.nats[n].public_ip() == to.ip() {
                    self.stats.hairpin_dropped += 1;
                    return;
                }
                match self.nats[n].outbound(self.now, from, to) {
                    Some(s) => s,
                    None => {
                        self.stats.nat_dropped += 1;
                        return;
                    }
                }
            }
            None => from,
        };
        if self.loss > 0.0 && self.rng.r#gen::<f64>() < self.loss {
            self.stats.lost += 1;
            return;
        }
        let jitter = if self.jitter_ms > 0 {
            self.rng.gen_range(0..=self.jitter_ms)
        } else {
            0
        };
        self.seq += 1;
        let at = self.now + self.delay_ms + jitter;
        self.queue.push(Reverse((at, self.seq)));
        self.in_flight.insert(self.seq, (src, to, bytes));
    }

    /// When the next datagram arrives (before any NAT on the far side
    /// decides whether to let it in).
    pub fn next_arrival(&self) -> Option<u64> {
        self.queue.peek().map(|Reverse((at, _))| *at)
    }

    /// Set the time (never backwards).
    pub fn advance_to(&mut self, t: u64) {
        self.now = self.now.max(t);
    }

    /// The next datagram due by `now` that passes the receiver's NAT;
    /// datagrams the NAT drops are consumed and counted.
    pub fn poll_delivery(&mut self) -> Option<Delivered> {
        while let Some(Reverse((at, seq))) = self.queue.peek().copied() {
            if at > self.now {
                return None;
            }
            self.queue.pop();
            let Some((from, to, bytes)) = self.in_flight.remove(&seq) else {
                continue;
            };
            let to = match self.by_public.get(&to.ip()) {
                Some(&n) => match self.nats[n].inbound(at, from, to) {
                    Some(internal) => internal,
                    None => {
                        self.stats.nat_dropped += 1;
                        continue;
                    }
                },
                None => to,
            };
            self.stats.delivered += 1;
            return Some(Delivered {
                at,
                from,
                to,
                bytes,
            });
        }
        None
    }
}

/// A public IPv4 address for simulated hosts: 198.18.x.y (the benchmark
/// range), `n` in the last two octets.
pub fn public_ip(n: u16) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, (n >> 8) as u8, n as u8))
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
            let x = n.outbound(0, a(IN), s1).unwrap();
            assert_eq!(
                x == n.outbound(1, a(IN), s1p).unwrap(),
                same_ip_other_port,
                "{m:?}"
            );
            assert_eq!(x == n.outbound(2, a(IN), s2).unwrap(), other_ip, "{m:?}");
            assert_eq!(x, n.outbound(3, a(IN), s1).unwrap(), "a mapping is reused");
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
            let x = n.outbound(0, a(IN), s1).unwrap();
            assert_eq!(n.inbound(1, s1, x), Some(a(IN)));
            assert_eq!(
                n.inbound(1, a("1.1.1.1:9"), x).is_some(),
                same_ip_other_port,
                "{f:?}"
            );
            assert_eq!(
                n.inbound(1, a("3.3.3.3:3478"), x).is_some(),
                other_ip,
                "{f:?}"
            );
            // No mapping on another port, whatever the filter.
            let other = SocketAddr::new(x.ip(), x.port().wrapping_add(1));
            assert_eq!(n.inbound(1, s1, other), None);
        }
    }

    #[test]
    fn mappings_expire_and_ports_are_preserved_or_sequential() {
        let mut n = nat(
            MappingBehavior::EndpointIndependent,
            FilteringBehavior::EndpointIndependent,
        );
        let x = n.outbound(0, a(IN), a("1.1.1.1:1")).unwrap();
        assert_eq!(x.port(), 5000, "port preserved");
        assert!(n.inbound(119_999, a("9.9.9.9:9"), x).is_some());
        assert!(n.inbound(120_000, a("9.9.9.9:9"), x).is_none(), "expired");
        assert_eq!(n.mappings(), 0);

        let mut cfg = NatConfig::symmetric(PUB.parse().unwrap());
        cfg.ports = PortAllocation::Sequential {
            start: 40_000,
            step: 2,
        };
        let mut s = Nat::new(cfg, 1);
        let p: Vec<u16> = (1..=3)
            .map(|i| {
                s.outbound(0, a(IN), SocketAddr::new("1.1.1.1".parse().unwrap(), i))
                    .unwrap()
                    .port()
            })
            .collect();
        assert_eq!(p, vec![40_000, 40_002, 40_004]);
    }

    #[test]
    fn network_carries_through_nats_with_delay() {
        let mut net = NatNetwork::new(1, 1000, 10, 0, 0.0);
        let n = net.add_nat(NatConfig::port_restricted_cone(PUB.parse().unwrap()));
        net.place_behind(a(IN).ip(), n);
        let srv = a("1.1.1.1:3478");
        net.send(a(IN), srv, b"hi".to_vec());
        assert_eq!(net.next_arrival(), Some(1010));
        assert!(net.poll_delivery().is_none(), "not yet");
        net.advance_to(1010);
        let d = net.poll_delivery().unwrap();
        assert_eq!((d.to, d.bytes.as_slice()), (srv, &b"hi"[..]));
        assert_eq!(d.from.ip(), PUB.parse::<IpAddr>().unwrap());
        // The answer comes back through the mapping; a stranger's does not.
        net.send(srv, d.from, b"ok".to_vec());
        net.send(a("1.1.1.1:3479"), d.from, b"no".to_vec());
        net.advance_to(1020);
        let r = net.poll_delivery().unwrap();
        assert_eq!((r.to, r.from, r.bytes.as_slice()), (a(IN), srv, &b"ok"[..]));
        assert!(net.poll_delivery().is_none());
        assert_eq!(net.stats().nat_dropped, 1);
        assert_eq!(net.nat(n).stats().filtered, 1);
        // Blocked UDP: nothing leaves.
        net.nat_mut(n).set_udp_blocked(true);
        net.send(a(IN), srv, b"x".to_vec());
        assert_eq!(net.next_arrival(), None);
    }
}
