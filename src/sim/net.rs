//! The one simulated datagram network every in-process simulation runs on
//! (overlay, link, relay, ICE, NAT detection). A plain struct driven by the
//! test loop: virtual time in milliseconds, one seeded RNG, no clocks.
//!
//! A socket is an address bound with [`Network::bind`] to an owner number
//! the caller chooses (a node index, say); datagrams to unbound addresses
//! are dropped. What a datagram goes through on [`Network::send`]:
//!
//! 1. The sender's NAT, if its IP was put behind one with
//!    [`Network::place_behind`]: the source becomes the mapping's external
//!    address (created or refreshed, see [`super::nat`]); a blocked
//!    firewall drops UDP; a datagram to the NAT's own public IP is turned
//!    around if the NAT hairpins and dropped if not.
//! 2. Routing: to a NAT's public IP it is kept for that NAT to judge on
//!    arrival; else the destination must be a bound socket, resolved now,
//!    and not behind a NAT unless the sender is behind the same one (a
//!    LAN, where nothing is translated). A private address elsewhere is
//!    unroutable (after the sender's NAT has made its mapping).
//! 3. Drop rules ([`DropRule`]), matched on the wire addresses.
//! 4. The link model of the path ([`LinkModel`]: the default, or the one set
//!    for this pair of wire IPs): loss, duplication, delay plus uniform
//!    jitter, and optional reordering of datagrams due in the same ms.
//!
//! [`Network::poll_delivery`] then hands out datagrams due by `now` in due
//! order (same-ms ties in send order unless the link reorders); one sent
//! with zero delay while a batch is delivered comes after that batch. On
//! arrival at a NAT's public IP the NAT looks up the mapping on that port
//! and applies its filter at the arrival time; refused datagrams are
//! counted and skipped. Each datagram costs one slot in a reused table
//! and one entry in a time-bucketed queue; the hot path allocates nothing
//! beyond the caller's bytes (buckets are recycled).
//!
//! TCP is modelled only as a [`Transport`] tag: it passes a UDP-blocking
//! firewall and drop rules for UDP, is never lost or duplicated by the
//! link model (TCP retransmits), and otherwise travels like a datagram
//! (delay and jitter, no ordering of its own).
//!
//! Not modelled: ICMP, fragmentation, MTU, bandwidth.

pub use super::nat::Transport;
use super::nat::{Nat, NatConfig};
use crate::time::Millis;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};

/// Properties of a simulated path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkModel {
    pub delay_ms: u64,
    /// Extra delay, uniform in `0..=jitter_ms`.
    pub jitter_ms: u64,
    /// Probability in [0, 1] that a datagram is lost.
    pub loss: f64,
    /// Probability in [0, 1] that a datagram arrives twice.
    pub duplicate: f64,
    /// Datagrams due in the same ms arrive in random order, not send order.
    pub reorder: bool,
}

impl Default for LinkModel {
    fn default() -> Self {
        LinkModel::new(20, 10, 0.0)
    }
}

impl LinkModel {
    pub fn new(delay_ms: u64, jitter_ms: u64, loss: f64) -> Self {
        LinkModel {
            delay_ms,
            jitter_ms,
            loss,
            duplicate: 0.0,
            reorder: false,
        }
    }

    /// No delay, no loss: datagrams arrive at the instant they are sent.
    pub fn instant() -> Self {
        LinkModel::new(0, 0, 0.0)
    }
}

/// A datagram the network drops before it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropRule {
    /// Everything (a cut cable).
    All,
    /// UDP between these two IPs, either way (TCP passes).
    UdpBetween(IpAddr, IpAddr),
    /// Datagrams whose byte at `offset` is one of `values` (a filter on a
    /// packet type).
    ByteIn { offset: usize, values: Vec<u8> },
}

impl DropRule {
    fn drops(&self, from: SocketAddr, to: SocketAddr, t: Transport, bytes: &[u8]) -> bool {
        match self {
            DropRule::All => true,
            DropRule::UdpBetween(a, b) => {
                t == Transport::Udp
                    && ((from.ip() == *a && to.ip() == *b) || (from.ip() == *b && to.ip() == *a))
            }
            DropRule::ByteIn { offset, values } => {
                bytes.get(*offset).is_some_and(|x| values.contains(x))
            }
        }
    }
}

/// Handle of a rule added with [`Network::add_rule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleId(u32);

/// Index of a NAT in a [`Network`].
pub type NatId = usize;

/// A datagram handed to its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// When it arrived (its due time; the receiver's NAT judged it then).
    pub at: Millis,
    /// The source as the receiver sees it (after the sender's NAT).
    pub from: SocketAddr,
    /// The receiving socket's own address (after the receiver's NAT).
    pub to: SocketAddr,
    /// Owner of the sending socket, if it was bound.
    pub from_owner: Option<usize>,
    /// Owner of the receiving socket.
    pub to_owner: usize,
    pub transport: Transport,
    pub bytes: Vec<u8>,
}

/// Counters of the network (NATs keep their own, see [`Nat::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    /// Payload bytes of datagrams sent.
    pub bytes: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Dropped by a NAT on the way out or in.
    pub nat_dropped: u64,
    /// Sent to the sender's own NAT, which does not hairpin.
    pub hairpin_dropped: u64,
    /// Dropped by a [`DropRule`].
    pub rule_dropped: u64,
    /// To an address no socket is bound to, or a private one elsewhere.
    pub unbound: u64,
}

const NONE: u32 = u32::MAX;

/// A socket address packed for the queue: IPv4 inline, IPv6 boxed (16
/// bytes instead of 32, for millions of datagrams in flight).
#[derive(Debug, Clone)]
enum Wire {
    V4([u8; 4], u16),
    V6(Box<SocketAddrV6>),
}

impl From<SocketAddr> for Wire {
    fn from(a: SocketAddr) -> Self {
        match a {
            SocketAddr::V4(a) => Wire::V4(a.ip().octets(), a.port()),
            SocketAddr::V6(a) => Wire::V6(Box::new(a)),
        }
    }
}

impl From<&Wire> for SocketAddr {
    fn from(w: &Wire) -> Self {
        match w {
            Wire::V4(ip, port) => SocketAddr::from((*ip, *port)),
            Wire::V6(a) => SocketAddr::V6(**a),
        }
    }
}

/// A datagram in flight, with its wire addresses.
#[derive(Debug)]
struct Flight {
    from: Wire,
    to: Wire,
    from_owner: u32,
    /// Resolved at send for public destinations; `NONE` when a NAT decides.
    to_owner: u32,
    transport: Transport,
    bytes: Vec<u8>,
}

/// Datagrams in flight between sockets, some of them behind NATs.
#[derive(Debug)]
pub struct Network {
    now: Millis,
    rng: StdRng,
    link: LinkModel,
    /// Per-path models by (lower, higher) wire IP.
    links: HashMap<(IpAddr, IpAddr), LinkModel>,
    sockets: HashMap<SocketAddr, u32>,
    nats: Vec<Nat>,
    behind: HashMap<IpAddr, NatId>,
    by_public: HashMap<IpAddr, NatId>,
    rules: Vec<(RuleId, DropRule)>,
    next_rule: u32,
    /// Slot indexes by due time, each bucket in delivery order.
    queue: BTreeMap<Millis, Vec<u32>>,
    /// The bucket being delivered, reversed (next at the end), and its time.
    ready: Vec<u32>,
    ready_at: Millis,
    /// Emptied buckets, reused for new ones.
    spare: Vec<Vec<u32>>,
    slots: Vec<Option<Flight>>,
    free: Vec<u32>,
    capture: Option<Vec<Delivered>>,
    stats: NetStats,
}

impl Network {
    /// A network at virtual time `now` whose paths all follow `link`,
    /// every random draw (loss, jitter, NAT ports) seeded from `seed`.
    pub fn new(seed: u64, now: Millis, link: LinkModel) -> Self {
        Network {
            now,
            rng: StdRng::seed_from_u64(seed),
            link,
            links: HashMap::new(),
            sockets: HashMap::new(),
            nats: Vec::new(),
            behind: HashMap::new(),
            by_public: HashMap::new(),
            rules: Vec::new(),
            next_rule: 0,
            queue: BTreeMap::new(),
            ready: Vec::new(),
            ready_at: now,
            spare: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            capture: None,
            stats: NetStats::default(),
        }
    }

    pub fn now(&self) -> Millis {
        self.now
    }

    /// Set the time (never backwards).
    pub fn advance_to(&mut self, t: Millis) {
        self.now = self.now.max(t);
    }

    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// The default path model.
    pub fn link(&self) -> &LinkModel {
        &self.link
    }

    /// Change the default path model from now on.
    pub fn set_link(&mut self, link: LinkModel) {
        self.link = link;
    }

    /// The model of the path between wire IPs `a` and `b` (either way).
    pub fn set_path(&mut self, a: IpAddr, b: IpAddr, link: LinkModel) {
        self.links.insert((a.min(b), a.max(b)), link);
    }

    /// Bind `addr` to `owner` (below `u32::MAX`): datagrams to it are
    /// delivered with that owner. Rebinding replaces the owner.
    pub fn bind(&mut self, addr: SocketAddr, owner: usize) {
        self.sockets.insert(addr, owner as u32);
    }

    pub fn unbind(&mut self, addr: SocketAddr) {
        self.sockets.remove(&addr);
    }

    pub fn owner_of(&self, addr: SocketAddr) -> Option<usize> {
        self.sockets.get(&addr).map(|&o| o as usize)
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

    /// The NAT `ip` is behind, if any.
    pub fn nat_of(&self, ip: IpAddr) -> Option<NatId> {
        self.behind.get(&ip).copied()
    }

    pub fn add_rule(&mut self, rule: DropRule) -> RuleId {
        let id = RuleId(self.next_rule);
        self.next_rule += 1;
        self.rules.push((id, rule));
        id
    }

    pub fn remove_rule(&mut self, id: RuleId) {
        self.rules.retain(|(r, _)| *r != id);
    }

    pub fn clear_rules(&mut self) {
        self.rules.clear();
    }

    /// Record a copy of every datagram delivered from now on.
    pub fn start_capture(&mut self) {
        self.capture.get_or_insert_with(Vec::new);
    }

    /// What was delivered since capture started (empty without capture).
    pub fn captured(&self) -> &[Delivered] {
        self.capture.as_deref().unwrap_or(&[])
    }

    /// Send a UDP datagram now from the local socket `from` to `to`.
    pub fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.send_on(Transport::Udp, from, to, bytes);
    }

    /// Send now over `transport` from `from` (bound or not) to `to`.
    pub fn send_on(
        &mut self,
        transport: Transport,
        from: SocketAddr,
        to: SocketAddr,
        bytes: Vec<u8>,
    ) {
        let owner = self.sockets.get(&from).copied();
        self.send_as(owner.map(|o| o as usize), transport, from, to, bytes);
    }

    /// [`Network::send_on`] with the sender's owner given (saves a lookup).
    pub fn send_as(
        &mut self,
        from_owner: Option<usize>,
        transport: Transport,
        from: SocketAddr,
        to: SocketAddr,
        bytes: Vec<u8>,
    ) {
        self.stats.sent += 1;
        self.stats.bytes += bytes.len() as u64;
        let mut src = from;
        let (src_nat, dst_nat) = if self.behind.is_empty() {
            (None, None)
        } else {
            (
                self.behind.get(&from.ip()).copied(),
                self.behind.get(&to.ip()).copied(),
            )
        };
        // Out through the sender's NAT, unless the destination is on its LAN.
        if let Some(n) = src_nat
            && dst_nat != Some(n)
        {
            let nat = &mut self.nats[n];
            if nat.public_ip() == to.ip() && !nat.config().hairpinning {
                self.stats.hairpin_dropped += 1;
                return;
            }
            match nat.outbound(self.now, from, to, transport) {
                Some(s) => src = s,
                None => {
                    self.stats.nat_dropped += 1;
                    return;
                }
            }
        }
        let to_owner = if !self.by_public.is_empty() && self.by_public.contains_key(&to.ip()) {
            NONE
        } else {
            // A private address behind another NAT is not routable.
            match self.sockets.get(&to) {
                Some(&o) if dst_nat.is_none() || dst_nat == src_nat => o,
                _ => {
                    self.stats.unbound += 1;
                    return;
                }
            }
        };
        if self
            .rules
            .iter()
            .any(|(_, r)| r.drops(src, to, transport, &bytes))
        {
            self.stats.rule_dropped += 1;
            return;
        }
        let link = if self.links.is_empty() {
            self.link
        } else {
            let (a, b) = (src.ip(), to.ip());
            self.links
                .get(&(a.min(b), a.max(b)))
                .copied()
                .unwrap_or(self.link)
        };
        let udp = transport == Transport::Udp;
        if udp && link.loss > 0.0 && self.rng.r#gen::<f64>() < link.loss {
            self.stats.lost += 1;
            return;
        }
        let twice = udp && link.duplicate > 0.0 && self.rng.r#gen::<f64>() < link.duplicate;
        let flight = Flight {
            from: src.into(),
            to: to.into(),
            from_owner: from_owner.map_or(NONE, |o| o as u32),
            to_owner,
            transport,
            bytes,
        };
        if twice {
            self.stats.duplicated += 1;
            let copy = Flight {
                from: flight.from.clone(),
                to: flight.to.clone(),
                bytes: flight.bytes.clone(),
                ..flight
            };
            self.enqueue(&link, copy);
        }
        self.enqueue(&link, flight);
    }

    fn enqueue(&mut self, link: &LinkModel, f: Flight) {
        let jitter = if link.jitter_ms > 0 {
            self.rng.gen_range(0..=link.jitter_ms)
        } else {
            0
        };
        let at = self.now + link.delay_ms + jitter;
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(f);
                i
            }
            None => {
                self.slots.push(Some(f));
                (self.slots.len() - 1) as u32
            }
        };
        let spare = &mut self.spare;
        let bucket = self
            .queue
            .entry(at)
            .or_insert_with(|| spare.pop().unwrap_or_default());
        bucket.push(slot);
        if link.reorder {
            let j = self.rng.gen_range(0..bucket.len());
            let last = bucket.len() - 1;
            bucket.swap(j, last);
        }
    }

    /// When the next datagram is due (before any NAT on the far side
    /// decides whether to let it in).
    pub fn next_due(&self) -> Option<Millis> {
        if !self.ready.is_empty() {
            return Some(self.ready_at);
        }
        self.queue.first_key_value().map(|(at, _)| *at)
    }

    /// Datagrams in flight.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The next datagram due by `now` that reaches a socket; datagrams a
    /// NAT refuses or nobody is bound for are consumed and counted.
    pub fn poll_delivery(&mut self) -> Option<Delivered> {
        loop {
            let slot = match self.ready.pop() {
                Some(s) => s,
                None => {
                    let first = self.queue.first_entry()?;
                    if *first.key() > self.now {
                        return None;
                    }
                    self.ready_at = *first.key();
                    let mut batch = first.remove();
                    batch.reverse();
                    let done = std::mem::replace(&mut self.ready, batch);
                    if self.spare.len() < 64 {
                        self.spare.push(done);
                    }
                    continue;
                }
            };
            let Some(f) = self.slots[slot as usize].take() else {
                continue;
            };
            self.free.push(slot);
            let (from, to) = (SocketAddr::from(&f.from), SocketAddr::from(&f.to));
            let (to, to_owner) = if f.to_owner != NONE {
                (to, f.to_owner)
            } else {
                let Some(&n) = self.by_public.get(&to.ip()) else {
                    continue;
                };
                let Some(internal) = self.nats[n].inbound(self.ready_at, from, to, f.transport)
                else {
                    self.stats.nat_dropped += 1;
                    continue;
                };
                match self.sockets.get(&internal) {
                    Some(&o) => (internal, o),
                    None => {
                        self.stats.unbound += 1;
                        continue;
                    }
                }
            };
            self.stats.delivered += 1;
            let d = Delivered {
                at: self.ready_at,
                from,
                to,
                from_owner: (f.from_owner != NONE).then_some(f.from_owner as usize),
                to_owner: to_owner as usize,
                transport: f.transport,
                bytes: f.bytes,
            };
            if let Some(c) = self.capture.as_mut() {
                c.push(d.clone());
            }
            return Some(d);
        }
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

    #[test]
    fn queued_datagrams_stay_small() {
        assert!(std::mem::size_of::<Option<Flight>>() <= 72);
        let v6 = a("[2001:db8::1]:443");
        assert_eq!(SocketAddr::from(&Wire::from(v6)), v6);
    }

    #[test]
    fn carries_through_nats_with_delay() {
        let mut net = Network::new(1, Millis(1000), LinkModel::new(10, 0, 0.0));
        let n = net.add_nat(NatConfig::port_restricted_cone(PUB.parse().unwrap()));
        net.place_behind(a(IN).ip(), n);
        let srv = a("1.1.1.1:3478");
        let stranger = a("1.1.1.1:3479");
        net.bind(a(IN), 0);
        net.bind(srv, 1);
        net.bind(stranger, 2);
        net.send(a(IN), srv, b"hi".to_vec());
        assert_eq!(net.next_due(), Some(Millis(1010)));
        assert!(net.poll_delivery().is_none(), "not yet");
        net.advance_to(Millis(1010));
        let d = net.poll_delivery().unwrap();
        assert_eq!((d.to, d.bytes.as_slice()), (srv, &b"hi"[..]));
        assert_eq!((d.from_owner, d.to_owner), (Some(0), 1));
        assert_eq!(d.from.ip(), PUB.parse::<IpAddr>().unwrap());
        // The answer comes back through the mapping; a stranger's does not.
        net.send(srv, d.from, b"ok".to_vec());
        net.send(stranger, d.from, b"no".to_vec());
        net.advance_to(Millis(1020));
        let r = net.poll_delivery().unwrap();
        assert_eq!((r.to, r.from, r.bytes.as_slice()), (a(IN), srv, &b"ok"[..]));
        assert!(net.poll_delivery().is_none());
        assert_eq!(net.stats().nat_dropped, 1);
        assert_eq!(net.nat(n).stats().filtered, 1);
        // Nobody listens: dropped at once.
        net.send(srv, a("1.1.1.1:9"), b"?".to_vec());
        assert_eq!(net.stats().unbound, 1);
        // Hairpin: dropped unless the NAT turns it around.
        net.send(a(IN), d.from, b"me".to_vec());
        assert_eq!(net.stats().hairpin_dropped, 1);
        // Blocked UDP: nothing leaves, but TCP does.
        net.nat_mut(n).set_udp_blocked(true);
        net.send(a(IN), srv, b"x".to_vec());
        assert_eq!(net.next_due(), None);
        net.send_on(Transport::Tcp, a(IN), srv, b"t".to_vec());
        assert_eq!(net.next_due(), Some(Millis(1030)));
    }

    #[test]
    fn private_addresses_route_only_within_their_lan() {
        let mut net = Network::new(1, Millis(0), LinkModel::instant());
        let n1 = net.add_nat(NatConfig::full_cone(PUB.parse().unwrap()));
        let n2 = net.add_nat(NatConfig::full_cone("198.18.0.2".parse().unwrap()));
        let (h1, h1b) = (a("10.0.0.2:5000"), a("10.0.0.3:5000"));
        net.place_behind(h1.ip(), n1);
        net.place_behind(h1b.ip(), n1);
        net.bind(h1, 1);
        net.bind(h1b, 2);
        // Same LAN: delivered untranslated.
        net.send(h1b, h1, vec![1]);
        let d = net.poll_delivery().unwrap();
        assert_eq!((d.from, d.to_owner), (h1b, 1));
        assert_eq!(net.nat(n1).mappings(Millis(0)), 0);
        // Another site's private address: unroutable, after the sender's
        // NAT spent a mapping on it.
        let other = a("10.9.0.2:5000");
        net.place_behind(other.ip(), n2);
        net.bind(other, 3);
        net.send(h1, other, vec![2]);
        assert!(net.poll_delivery().is_none());
        assert_eq!(net.stats().unbound, 1);
        assert_eq!(net.nat(n1).mappings(Millis(0)), 1);
    }

    #[test]
    fn tcp_is_not_lost() {
        let mut net = Network::new(1, Millis(0), LinkModel::new(5, 0, 1.0));
        let (x, y) = (a("192.0.2.1:1"), a("192.0.2.2:2"));
        net.bind(x, 0);
        net.bind(y, 1);
        net.send(x, y, vec![1]);
        net.send_on(Transport::Tcp, x, y, vec![2]);
        net.advance_to(Millis(5));
        assert_eq!(net.poll_delivery().unwrap().bytes, vec![2]);
        assert_eq!(net.stats().lost, 1);
    }

    #[test]
    fn hairpinning_turns_datagrams_around() {
        let mut net = Network::new(1, Millis(0), LinkModel::instant());
        let mut cfg = NatConfig::full_cone(PUB.parse().unwrap());
        cfg.hairpinning = true;
        let n = net.add_nat(cfg);
        let (h1, h2) = (a("10.0.0.2:5000"), a("10.0.0.3:6000"));
        net.place_behind(h1.ip(), n);
        net.place_behind(h2.ip(), n);
        net.bind(h1, 1);
        net.bind(h2, 2);
        let srv = a("1.1.1.1:3478");
        net.bind(srv, 0);
        // h2 opens its mapping; h1 reaches it through the public address.
        net.send(h2, srv, vec![1]);
        let m2 = net.poll_delivery().unwrap().from;
        net.send(h1, m2, vec![2]);
        let d = net.poll_delivery().unwrap();
        assert_eq!((d.to_owner, d.to, d.from.ip()), (2, h2, m2.ip()));
    }

    #[test]
    fn ordering_rules_duplicates_and_capture() {
        let mut net = Network::new(3, Millis(0), LinkModel::instant());
        let (x, y) = (a("192.0.2.1:1"), a("192.0.2.2:2"));
        net.bind(x, 0);
        net.bind(y, 1);
        net.start_capture();
        for i in 0..20u8 {
            net.send(x, y, vec![0, i]);
        }
        // Sent during delivery at the same instant: after the batch.
        let mut got = Vec::new();
        while let Some(d) = net.poll_delivery() {
            if d.bytes[1] == 0 {
                net.send(y, x, vec![0, 99]);
            }
            got.push(d.bytes[1]);
        }
        let mut want: Vec<u8> = (0..20).collect();
        want.push(99);
        assert_eq!(got, want, "send order, replies after the batch");
        assert_eq!(net.captured().len(), 21);
        // Reordering permutes a same-ms batch; duplication copies.
        net.set_link(LinkModel {
            reorder: true,
            duplicate: 0.5,
            ..LinkModel::instant()
        });
        for i in 0..20u8 {
            net.send(x, y, vec![0, i]);
        }
        let mut got = Vec::new();
        while let Some(d) = net.poll_delivery() {
            got.push(d.bytes[1]);
        }
        assert!(got.len() > 20 && got.len() < 40, "{got:?}");
        assert!(!got.is_sorted(), "{got:?}");
        got.sort_unstable();
        got.dedup();
        assert_eq!(got, (0..20).collect::<Vec<u8>>());
        // Rules: by a byte, then everything; removed again.
        net.set_link(LinkModel::instant());
        let r = net.add_rule(DropRule::ByteIn {
            offset: 1,
            values: vec![7],
        });
        net.send(x, y, vec![0, 7]);
        net.send(x, y, vec![0, 8]);
        assert_eq!(net.poll_delivery().unwrap().bytes, vec![0, 8]);
        net.remove_rule(r);
        let cut = net.add_rule(DropRule::All);
        net.send(x, y, vec![0, 7]);
        assert!(net.poll_delivery().is_none());
        net.remove_rule(cut);
        net.add_rule(DropRule::UdpBetween(y.ip(), x.ip()));
        net.send(x, y, vec![1]);
        net.send_on(Transport::Tcp, x, y, vec![2]);
        assert_eq!(net.poll_delivery().unwrap().bytes, vec![2]);
        assert_eq!(net.stats().rule_dropped, 3);
    }

    #[test]
    fn per_path_models_delay_and_lose() {
        let mut net = Network::new(5, Millis(0), LinkModel::new(10, 0, 0.0));
        let (x, y, z) = (a("192.0.2.1:1"), a("192.0.2.2:2"), a("192.0.2.3:3"));
        for (i, s) in [x, y, z].into_iter().enumerate() {
            net.bind(s, i);
        }
        net.set_path(y.ip(), x.ip(), LinkModel::new(50, 0, 0.0));
        net.set_path(x.ip(), z.ip(), LinkModel::new(0, 0, 1.0));
        net.send(x, y, vec![1]);
        net.send(y, z, vec![2]);
        net.send(x, z, vec![3]);
        assert_eq!(net.stats().lost, 1);
        net.advance_to(Millis(10));
        assert_eq!(net.poll_delivery().unwrap().bytes, vec![2]);
        assert_eq!(net.next_due(), Some(Millis(50)));
        net.advance_to(Millis(50));
        assert_eq!(net.poll_delivery().unwrap().bytes, vec![1]);
        assert_eq!(net.in_flight(), 0);
    }
}
