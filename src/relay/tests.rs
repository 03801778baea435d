//! The client and server cores against each other in virtual time on the
//! simulated network ([`crate::sim::net`], no delay), with the driver's
//! part (relay sockets, routing by transport) played by a small harness.

use super::*;
use crate::sim::net::{LinkModel, Network, Transport as NetTransport};
use crate::time::Millis;
use std::net::SocketAddr;

/// Socket owners on the network: clients own their index.
const SERVER: usize = 1_000_000;
const PEERS: usize = 1_000_001;

const SECRET: &[u8] = b"group secret";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The wall clock at virtual time `now`: these tests' wall clock runs with
/// their virtual clock, both from the same epoch.
fn wall(now: Millis) -> crate::time::UnixSecs {
    crate::time::UnixMillis(now.get()).secs()
}

struct Net {
    now: Millis,
    net: Network,
    server: TurnServer,
    server_addr: SocketAddr,
    clients: Vec<(SocketAddr, TurnClient, Vec<TurnClientEvent>)>,
    /// (alloc, relay address)
    relays: Vec<(AllocId, SocketAddr)>,
    /// What reached peers: (relay address it left from, peer, bytes).
    at_peers: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    server_events: Vec<ServerEvent>,
    next_port: u16,
}

impl Net {
    fn new(cfg: TurnServerConfig) -> Self {
        let now = Millis(1_700_000_000_000);
        let server_addr = addr("198.51.100.1:3478");
        let mut net = Network::new(1, now, LinkModel::instant());
        net.bind(server_addr, SERVER);
        Net {
            now,
            net,
            server: TurnServer::new(cfg, [3; 32], now),
            server_addr,
            clients: Vec::new(),
            relays: Vec::new(),
            at_peers: Vec::new(),
            server_events: Vec::new(),
            next_port: 50_000,
        }
    }

    fn creds(&self, user: &str, ttl: u64) -> TurnCredentials {
        let c = creds::issue(SECRET, user, wall(self.now).get(), ttl);
        TurnCredentials {
            username: c.username,
            password: c.password,
        }
    }

    fn client(&mut self, from: &str, creds: TurnCredentials, tcp: bool) -> usize {
        let cfg = if tcp {
            TurnClientConfig::tcp(self.server_addr)
        } else {
            TurnClientConfig::udp(self.server_addr)
        };
        self.client_with(from, creds, cfg)
    }

    /// A UDP client asking for an IPv6 relayed address.
    fn client6(&mut self, from: &str, creds: TurnCredentials) -> usize {
        let cfg = TurnClientConfig {
            ipv6: true,
            ..TurnClientConfig::udp(self.server_addr)
        };
        self.client_with(from, creds, cfg)
    }

    fn client_with(&mut self, from: &str, creds: TurnCredentials, cfg: TurnClientConfig) -> usize {
        let key = [self.clients.len() as u8 + 1; 32];
        // Two clients on one address (a restarted app): the first keeps it.
        if self.net.owner_of(addr(from)).is_none() {
            self.net.bind(addr(from), self.clients.len());
        }
        self.clients.push((
            addr(from),
            TurnClient::new(cfg, creds, key, self.now),
            Vec::new(),
        ));
        self.clients.len() - 1
    }

    fn transport(&self, i: usize) -> ClientAddr {
        let (a, c, _) = &self.clients[i];
        ClientAddr {
            transport: match c.transport() {
                TurnTransport::Udp => Transport::Udp,
                TurnTransport::Tcp => Transport::Tcp(i as u64),
            },
            addr: *a,
        }
    }

    /// Deliver everything until quiet.
    fn run(&mut self) {
        self.net.advance_to(self.now);
        for _ in 0..1000 {
            let mut moved = false;
            for i in 0..self.clients.len() {
                let from = self.clients[i].0;
                let tcp = self.clients[i].1.transport() == TurnTransport::Tcp;
                let t = if tcp {
                    NetTransport::Tcp
                } else {
                    NetTransport::Udp
                };
                while let Some(x) = self.clients[i].1.poll_transmit() {
                    moved = true;
                    assert_eq!(x.dst, self.server_addr);
                    self.net.send_as(Some(i), t, from, x.dst, x.bytes);
                }
            }
            self.deliver();
            while let Some(e) = self.server.poll_event() {
                moved = true;
                if let ServerEvent::OpenRelay { alloc, ipv6, .. } = e {
                    let ip = if ipv6 {
                        "2001:db8:1::1".parse().unwrap()
                    } else {
                        self.server_addr.ip()
                    };
                    let a = SocketAddr::new(ip, self.next_port);
                    self.next_port += 1;
                    self.relays.push((alloc, a));
                    self.net.bind(a, SERVER);
                    self.server.relay_opened(self.now, alloc, Ok(a));
                }
                if let ServerEvent::CloseRelay { alloc } = e {
                    self.relays.retain(|(x, _)| *x != alloc);
                }
                self.server_events.push(e);
            }
            while let Some(t) = self.server.poll_transmit() {
                moved = true;
                match t.via {
                    Via::Client(c) => {
                        let tr = match c.transport {
                            Transport::Udp => NetTransport::Udp,
                            Transport::Tcp(_) => NetTransport::Tcp,
                        };
                        let server = self.server_addr;
                        self.net.send_as(Some(SERVER), tr, server, c.addr, t.bytes);
                    }
                    Via::Relay { alloc, peer } => {
                        let relay = self.relays.iter().find(|r| r.0 == alloc).unwrap().1;
                        if self.net.owner_of(peer).is_none() {
                            self.net.bind(peer, PEERS);
                        }
                        self.net
                            .send_as(Some(SERVER), NetTransport::Udp, relay, peer, t.bytes);
                    }
                }
            }
            self.deliver();
            for (_, c, evs) in self.clients.iter_mut() {
                while let Some(e) = c.poll_event() {
                    moved = true;
                    evs.push(e);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("no quiescence");
    }

    /// Hand what the network delivers to the server, clients and peers.
    fn deliver(&mut self) {
        while let Some(d) = self.net.poll_delivery() {
            match d.to_owner {
                // To a relay socket: from a peer (another relay's, say).
                SERVER if d.to != self.server_addr => {
                    let alloc = self.alloc_of(d.to);
                    self.server.handle_peer(self.now, alloc, d.from, &d.bytes);
                }
                SERVER => {
                    let transport = match d.transport {
                        NetTransport::Udp => Transport::Udp,
                        NetTransport::Tcp => Transport::Tcp(d.from_owner.expect("a client") as u64),
                    };
                    let from = ClientAddr {
                        transport,
                        addr: d.from,
                    };
                    self.server
                        .handle_client(self.now, wall(self.now), from, &d.bytes);
                }
                PEERS => self.at_peers.push((d.from, d.to, d.bytes)),
                i => {
                    let c = &mut self.clients.get_mut(i).expect("to a known client").1;
                    assert!(c.handle_input(self.now, &d.bytes));
                }
            }
        }
    }

    fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        loop {
            let next = self
                .clients
                .iter()
                .filter_map(|c| c.1.poll_timeout())
                .chain(self.server.poll_timeout())
                .min()
                .unwrap_or(Millis::MAX);
            if next > end {
                break;
            }
            self.now = next.max(self.now);
            for c in self.clients.iter_mut() {
                c.1.handle_timeout(self.now);
            }
            self.server.handle_timeout(self.now);
            self.run();
        }
        self.now = end;
        self.run();
    }

    fn events(&mut self, i: usize) -> Vec<TurnClientEvent> {
        std::mem::take(&mut self.clients[i].2)
    }

    fn relay_of(&mut self, i: usize) -> SocketAddr {
        self.clients[i].1.relayed_addr().expect("allocated")
    }

    fn alloc_of(&self, relay: SocketAddr) -> AllocId {
        self.relays.iter().find(|r| r.1 == relay).unwrap().0
    }
}

fn allocated(evs: &[TurnClientEvent]) -> bool {
    evs.iter()
        .any(|e| matches!(e, TurnClientEvent::Allocated { .. }))
}

fn failure(evs: &[TurnClientEvent]) -> Option<u16> {
    evs.iter().find_map(|e| match e {
        TurnClientEvent::AllocateFailed { code, .. } => Some(*code),
        _ => None,
    })
}

fn cfg() -> TurnServerConfig {
    TurnServerConfig {
        secret: SECRET.to_vec(),
        realm: "natter.test".into(),
        ..Default::default()
    }
}

fn data_flows(tcp: bool) {
    let mut n = Net::new(cfg());
    let creds = n.creds("alice", 7200);
    let c = n.client("203.0.113.5:4000", creds, tcp);
    n.clients[c].1.allocate(n.now);
    n.run();
    let evs = n.events(c);
    assert!(allocated(&evs), "{evs:?}");
    assert_eq!(n.clients[c].1.mapped_addr(), Some(addr("203.0.113.5:4000")));
    assert_eq!(n.server.stats().unauthenticated, 1, "the 401 dance");
    let relay = n.relay_of(c);
    let alloc = n.alloc_of(relay);
    let peer = addr("192.0.2.9:7000");

    // Without a permission nothing passes either way.
    n.clients[c].1.send_to(n.now, peer, b"early").unwrap();
    n.run();
    assert!(n.at_peers.is_empty());
    n.server.handle_peer(n.now, alloc, peer, b"knock");
    n.run();
    assert!(n.events(c).is_empty());
    assert_eq!(n.server.stats().no_permission, 2);

    // Permission: Send and Data indications.
    n.clients[c].1.create_permission(n.now, peer.ip()).unwrap();
    n.run();
    assert!(
        n.events(c)
            .contains(&TurnClientEvent::PermissionCreated { peer: peer.ip() })
    );
    n.clients[c].1.send_to(n.now, peer, b"via send").unwrap();
    n.run();
    assert_eq!(n.at_peers.pop(), Some((relay, peer, b"via send".to_vec())));
    n.server.handle_peer(n.now, alloc, peer, b"via data");
    n.run();
    assert_eq!(
        n.events(c),
        vec![TurnClientEvent::Data {
            peer,
            data: b"via data".to_vec()
        }]
    );

    // Channel: ChannelData both ways.
    let ch = n.clients[c].1.bind_channel(n.now, peer).unwrap();
    n.run();
    assert!(
        n.events(c)
            .contains(&TurnClientEvent::ChannelBound { peer, channel: ch })
    );
    n.clients[c].1.send_to(n.now, peer, b"odd").unwrap();
    let t = n.clients[c].1.poll_transmit().unwrap();
    assert_eq!(t.bytes[0], 0x40, "ChannelData");
    assert_eq!(t.bytes.len(), if tcp { 8 } else { 7 });
    let from = n.transport(c);
    n.server.handle_client(n.now, wall(n.now), from, &t.bytes);
    n.run();
    assert_eq!(n.at_peers.pop(), Some((relay, peer, b"odd".to_vec())));
    n.server.handle_peer(n.now, alloc, peer, b"back");
    let t = n.server.poll_transmit().unwrap();
    assert_eq!(t.bytes[0], 0x40);
    assert!(n.clients[c].1.handle_input(n.now, &t.bytes));
    n.run();
    assert_eq!(
        n.events(c),
        vec![TurnClientEvent::Data {
            peer,
            data: b"back".to_vec()
        }]
    );

    // Refreshes keep allocation, permission and channel alive for an hour.
    n.advance(3_600_000);
    assert!(n.clients[c].1.is_allocated());
    assert_eq!(n.server.allocation_count(), 1);
    n.server.handle_peer(n.now, alloc, peer, b"later");
    n.run();
    assert_eq!(
        n.events(c).last(),
        Some(&TurnClientEvent::Data {
            peer,
            data: b"later".to_vec()
        })
    );

    // Close: the relay goes.
    n.clients[c].1.close(n.now);
    n.run();
    assert!(n.events(c).contains(&TurnClientEvent::Closed));
    assert_eq!(n.server.allocation_count(), 0);
    assert!(n.relays.is_empty());
}

#[test]
fn allocate_permission_channel_data_over_udp() {
    data_flows(false);
}

#[test]
fn allocate_permission_channel_data_over_tcp() {
    data_flows(true);
}

#[test]
fn bad_and_expired_credentials_are_refused() {
    let mut n = Net::new(cfg());
    let mut wrong = n.creds("mallory", 3600);
    wrong.password = rest_password(b"another secret", &wrong.username);
    let c = n.client("203.0.113.5:4000", wrong, false);
    n.clients[c].1.allocate(n.now);
    n.run();
    assert_eq!(failure(&n.events(c)), Some(401));
    assert_eq!(n.server.stats().bad_credentials, 1);

    let expired = n.creds("alice", 0);
    let c = n.client("203.0.113.5:4001", expired, false);
    n.clients[c].1.allocate(n.now);
    n.run();
    assert_eq!(failure(&n.events(c)), Some(401));
    assert_eq!(n.server.stats().expired_credentials, 1);

    // Not REST-style: a plain username.
    let plain = TurnCredentials {
        username: "alice".into(),
        password: rest_password(SECRET, "alice"),
    };
    let c = n.client("203.0.113.5:4002", plain, false);
    n.clients[c].1.allocate(n.now);
    n.run();
    assert_eq!(failure(&n.events(c)), Some(401));
    assert_eq!(n.server.allocation_count(), 0);
    assert!(n.relays.is_empty());
}

#[test]
fn credentials_expiring_during_an_allocation_stop_its_refresh() {
    let mut n = Net::new(TurnServerConfig {
        default_lifetime_secs: 60,
        max_lifetime_secs: 60,
        ..cfg()
    });
    let creds = n.creds("alice", 90);
    let c = n.client("203.0.113.5:4000", creds, false);
    n.clients[c].1.allocate(n.now);
    n.run();
    assert!(allocated(&n.events(c)));
    // Refresh at 30 s succeeds, at 60 s (creds dead since 90 s? no: 60 <
    // 90) succeeds, at 90 s+ fails: the allocation is lost.
    n.advance(200_000);
    let evs = n.events(c);
    assert!(
        evs.iter()
            .any(|e| matches!(e, TurnClientEvent::Lost { code: 401, .. })),
        "{evs:?}"
    );
    assert_eq!(n.server.allocation_count(), 0);
    assert!(n.server.stats().expired_credentials >= 1);
}

#[test]
fn stale_nonces_are_renewed_transparently() {
    let mut n = Net::new(TurnServerConfig {
        nonce_lifetime_ms: 5_000,
        default_lifetime_secs: 20,
        max_lifetime_secs: 20,
        ..cfg()
    });
    let creds = n.creds("alice", 3600);
    let c = n.client("203.0.113.5:4000", creds, false);
    n.clients[c].1.allocate(n.now);
    n.run();
    assert!(allocated(&n.events(c)));
    n.advance(120_000);
    assert!(n.clients[c].1.is_allocated());
    assert!(n.server.stats().stale_nonce >= 1);
    assert!(
        n.events(c)
            .iter()
            .any(|e| matches!(e, TurnClientEvent::Refreshed { .. }))
    );
}

#[test]
fn allocation_quotas_hold() {
    let mut n = Net::new(TurnServerConfig {
        user_allocations: 2,
        max_allocations: 3,
        ..cfg()
    });
    let mut codes = Vec::new();
    for (i, user) in ["alice", "alice", "alice", "bob", "carol"]
        .iter()
        .enumerate()
    {
        let creds = n.creds(user, 3600);
        let c = n.client(&format!("203.0.113.5:{}", 4000 + i), creds, false);
        n.clients[c].1.allocate(n.now);
        n.run();
        codes.push(failure(&n.events(c)));
    }
    assert_eq!(codes, vec![None, None, Some(486), None, Some(508)]);
    assert_eq!(n.server.stats().quota_refused, 1);
    assert_eq!(n.server.stats().capacity_refused, 1);
    assert_eq!(n.server.user_allocations("alice"), 2);
    // One of alice's allocations goes: she may allocate again.
    n.clients[0].1.close(n.now);
    n.run();
    let creds = n.creds("alice", 3600);
    let c = n.client("203.0.113.5:5000", creds, false);
    n.clients[c].1.allocate(n.now);
    n.run();
    assert!(allocated(&n.events(c)));
}

#[test]
fn bandwidth_quota_holds() {
    let mut n = Net::new(TurnServerConfig {
        user_bandwidth: 20_000,
        // The burst is at least one second's worth.
        user_burst: 5_000,
        ..cfg()
    });
    let creds = n.creds("alice", 3600);
    let c = n.client("203.0.113.5:4000", creds, false);
    n.clients[c].1.allocate(n.now);
    let peer = addr("192.0.2.9:7000");
    n.clients[c].1.bind_channel(n.now, peer).unwrap();
    n.run();
    // 2 s of 500-byte packets every 5 ms: 100 kB/s offered.
    for _ in 0..400 {
        n.clients[c].1.send_to(n.now, peer, &[7; 500]).unwrap();
        n.run();
        n.now += 5;
    }
    let passed: usize = n.at_peers.iter().map(|p| p.2.len()).sum();
    // 20 kB/s for 2 s plus the 20 kB burst.
    assert!((59_000..=60_500).contains(&passed), "{passed}");
    assert!(n.server.stats().bandwidth_dropped > 200);
}

#[test]
fn allocations_expire_without_refresh() {
    let mut n = Net::new(TurnServerConfig {
        default_lifetime_secs: 30,
        max_lifetime_secs: 30,
        ..cfg()
    });
    let creds = n.creds("alice", 3600);
    let c = n.client("203.0.113.5:4000", creds, false);
    n.clients[c].1.allocate(n.now);
    n.run();
    assert!(allocated(&n.events(c)));
    // The client goes silent (its refreshes are lost).
    n.clients.pop();
    n.advance(31_000);
    assert_eq!(n.server.allocation_count(), 0);
    assert_eq!(n.server.stats().allocations_expired, 1);
    assert!(n.relays.is_empty());
}

#[test]
fn loopback_and_multicast_peers_are_forbidden() {
    let mut n = Net::new(cfg());
    let creds = n.creds("alice", 3600);
    let c = n.client("203.0.113.5:4000", creds, false);
    n.clients[c].1.allocate(n.now);
    n.run();
    for bad in ["127.0.0.1:7710", "224.0.0.1:5000", "0.0.0.0:1"] {
        let peer = addr(bad);
        n.clients[c].1.create_permission(n.now, peer.ip()).unwrap();
        n.clients[c].1.bind_channel(n.now, peer).unwrap();
        n.run();
        let evs = n.events(c);
        assert!(
            evs.iter()
                .any(|e| matches!(e, TurnClientEvent::PermissionFailed { code: 403, .. })),
            "{bad}: {evs:?}"
        );
        assert!(
            evs.iter()
                .any(|e| matches!(e, TurnClientEvent::ChannelBindFailed { code: 403, .. })),
            "{bad}: {evs:?}"
        );
    }
    assert_eq!(n.server.stats().forbidden_peers, 6);
    let mut n = Net::new(TurnServerConfig {
        allow_loopback_peers: true,
        ..cfg()
    });
    let creds = n.creds("alice", 3600);
    let c = n.client("203.0.113.5:4000", creds, false);
    n.clients[c].1.allocate(n.now);
    n.clients[c]
        .1
        .create_permission(n.now, addr("127.0.0.1:1").ip())
        .unwrap();
    n.run();
    assert!(
        n.events(c)
            .iter()
            .any(|e| matches!(e, TurnClientEvent::PermissionCreated { .. }))
    );
}

/// Runs client `d`'s exchange with the server by hand (it shares its
/// address with an earlier client, which the network delivers to); its
/// last event, and what the server reported.
fn by_hand(n: &mut Net, d: usize) -> (Option<TurnClientEvent>, Vec<ServerEvent>) {
    let from = n.clients[d].0;
    let mut got = None;
    let mut server_events = Vec::new();
    for _ in 0..4 {
        while let Some(t) = n.clients[d].1.poll_transmit() {
            n.server
                .handle_client(n.now, wall(n.now), ClientAddr::udp(from), &t.bytes);
        }
        while let Some(e) = n.server.poll_event() {
            if let ServerEvent::OpenRelay { alloc, .. } = e {
                let a = SocketAddr::new(n.server_addr.ip(), n.next_port);
                n.next_port += 1;
                n.server.relay_opened(n.now, alloc, Ok(a));
            }
            server_events.push(e);
        }
        while let Some(t) = n.server.poll_transmit() {
            n.clients[d].1.handle_input(n.now, &t.bytes);
        }
        while let Some(e) = n.clients[d].1.poll_event() {
            got = Some(e);
        }
    }
    (got, server_events)
}

#[test]
fn mismatched_and_foreign_requests_are_refused() {
    let mut n = Net::new(cfg());
    let creds = n.creds("alice", 3600);
    let c = n.client("203.0.113.5:4000", creds, false);
    n.clients[c].1.allocate(n.now);
    n.run();
    assert!(allocated(&n.events(c)));
    // Another user on the same 5-tuple gets 437.
    let creds = n.creds("bob", 3600);
    let d = n.client("203.0.113.5:4000", creds, false);
    n.clients[d].1.allocate(n.now);
    let (got, _) = by_hand(&mut n, d);
    assert!(
        matches!(got, Some(TurnClientEvent::AllocateFailed { code: 437, .. })),
        "{got:?}"
    );
    assert_eq!(n.server.stats().allocations_replaced, 0);
    // Garbage and responses from clients are counted, not answered.
    let from = ClientAddr::udp(addr("203.0.113.9:1"));
    n.server
        .handle_client(n.now, wall(n.now), from, &[0x00, 0x01, 0x00]);
    n.server
        .handle_client(n.now, wall(n.now), from, &[0x41, 0x00, 0x00, 0x09]);
    assert!(n.server.poll_transmit().is_none());
    assert!(n.server.stats().malformed >= 2);
}

/// A client restarted on the same port behind a NAT that kept its
/// mapping reaches the relay from its predecessor's 5-tuple: the same
/// user's new Allocate replaces the stale allocation (RFC 8656's 437
/// left the new process without a relayed candidate until the old one
/// expired, and a relayed file transfer stalled in the real-NAT lab).
#[test]
fn a_restarted_client_replaces_its_stale_allocation() {
    let mut n = Net::new(cfg());
    let creds = n.creds("alice", 3600);
    let c = n.client("203.0.113.5:4000", creds, false);
    n.clients[c].1.allocate(n.now);
    n.run();
    assert!(allocated(&n.events(c)));
    let old = n.clients[c].1.relayed_addr().unwrap();
    let old_alloc = n.relays[0].0;
    // The restarted process: fresh credentials, a new transaction.
    n.now += 5_000;
    let creds = n.creds("alice", 3600);
    let d = n.client("203.0.113.5:4000", creds, false);
    n.clients[d].1.allocate(n.now);
    let (got, server_events) = by_hand(&mut n, d);
    assert!(
        matches!(got, Some(TurnClientEvent::Allocated { .. })),
        "{got:?}"
    );
    let new = n.clients[d].1.relayed_addr().unwrap();
    assert_ne!(new, old);
    assert!(
        server_events.contains(&ServerEvent::CloseRelay { alloc: old_alloc }),
        "{server_events:?}"
    );
    let st = n.server.stats();
    assert_eq!((st.allocations_replaced, st.mismatch), (1, 0));
    // One allocation of alice's is held, not two (her quota counts one).
    assert_eq!(n.server.allocation_count(), 1);
}

#[test]
fn special_ranges_and_the_hosts_own_services_are_forbidden_peers() {
    let own = addr("198.51.100.1:0").ip();
    let mut n = Net::new(TurnServerConfig {
        own_addresses: vec![own],
        ..cfg()
    });
    let alice = n.client("203.0.113.5:4000", n.creds("alice", 3600), false);
    let bob = n.client("203.0.113.6:4000", n.creds("bob", 3600), false);
    n.clients[alice].1.allocate(n.now);
    n.clients[bob].1.allocate(n.now);
    n.run();
    assert!(allocated(&n.events(alice)) && allocated(&n.events(bob)));

    // Private, CGNAT and link-local (cloud metadata) peers: 403.
    for bad in [
        "10.0.0.1:80",
        "172.16.5.5:80",
        "192.168.1.1:80",
        "169.254.169.254:80",
        "100.64.1.1:80",
        "0.1.2.3:80",
    ] {
        let peer = addr(bad);
        n.clients[alice]
            .1
            .create_permission(n.now, peer.ip())
            .unwrap();
        n.run();
        let evs = n.events(alice);
        assert!(
            evs.iter()
                .any(|e| matches!(e, TurnClientEvent::PermissionFailed { code: 403, .. })),
            "{bad}: {evs:?}"
        );
    }
    let forbidden = n.server.stats().forbidden_peers;
    assert_eq!(forbidden, 6);

    // Our own address: a permission is per IP, but only the relayed
    // addresses of live allocations are reachable there, not the host's
    // services (say the authority on 7700).
    n.clients[alice].1.create_permission(n.now, own).unwrap();
    n.run();
    assert!(
        n.events(alice)
            .contains(&TurnClientEvent::PermissionCreated { peer: own })
    );
    let service = SocketAddr::new(own, 7700);
    n.clients[alice]
        .1
        .send_to(n.now, service, b"GET /")
        .unwrap();
    n.run();
    assert!(n.at_peers.is_empty());
    assert_eq!(n.server.stats().forbidden_peers, forbidden + 1);
    n.clients[alice].1.bind_channel(n.now, service).unwrap();
    n.run();
    assert!(
        n.events(alice)
            .iter()
            .any(|e| matches!(e, TurnClientEvent::ChannelBindFailed { code: 403, .. }))
    );
    // Two relayed users of this relay still reach each other.
    let bob_relay = n.relay_of(bob);
    let alice_relay = n.relay_of(alice);
    assert_eq!(bob_relay.ip(), own);
    n.clients[bob].1.create_permission(n.now, own).unwrap();
    n.run();
    n.events(bob);
    n.clients[alice]
        .1
        .send_to(n.now, bob_relay, b"hi bob")
        .unwrap();
    n.run();
    assert_eq!(
        n.events(bob),
        vec![TurnClientEvent::Data {
            peer: alice_relay,
            data: b"hi bob".to_vec()
        }]
    );
    // Only the service port was refused (its Send and its ChannelBind).
    assert_eq!(n.server.stats().forbidden_peers, forbidden + 2);

    // An operator's exception for a private network of its own.
    let mut n = Net::new(TurnServerConfig {
        allowed_peers: vec!["10.20.0.0/16".parse().unwrap()],
        ..cfg()
    });
    let c = n.client("203.0.113.5:4000", n.creds("alice", 3600), false);
    n.clients[c].1.allocate(n.now);
    n.run();
    n.events(c);
    for (peer, ok) in [("10.20.1.1", true), ("10.21.0.1", false)] {
        let ip = peer.parse().unwrap();
        n.clients[c].1.create_permission(n.now, ip).unwrap();
        n.run();
        let created = n
            .events(c)
            .contains(&TurnClientEvent::PermissionCreated { peer: ip });
        assert_eq!(created, ok, "{peer}");
    }
}

/// RFC 8656 REQUESTED-ADDRESS-FAMILY: an IPv6 relayed address only where
/// the relay has one (440 else), its peers IPv6 only (443 for IPv4), and
/// the IPv6 special ranges (unique-local, link-local, loopback, IPv4
/// private space behind NAT64 or 6to4) forbidden like IPv4's.
#[test]
fn ipv6_relayed_addresses_and_their_peers() {
    let mut n = Net::new(cfg());
    let c = n.client6("203.0.113.5:4000", n.creds("alice", 3600));
    n.clients[c].1.allocate(n.now);
    n.run();
    assert_eq!(failure(&n.events(c)), Some(440));

    let mut n = Net::new(TurnServerConfig {
        relay_ipv6: true,
        ..cfg()
    });
    let c = n.client6("203.0.113.5:4000", n.creds("alice", 3600));
    n.clients[c].1.allocate(n.now);
    n.run();
    assert!(allocated(&n.events(c)));
    let relay = n.relay_of(c);
    assert!(relay.is_ipv6(), "{relay}");
    let alloc = n.alloc_of(relay);
    let peer = addr("[2001:db8:2::9]:7000");
    n.clients[c].1.create_permission(n.now, peer.ip()).unwrap();
    n.clients[c].1.bind_channel(n.now, peer).unwrap();
    n.run();
    let evs = n.events(c);
    assert!(
        evs.iter()
            .any(|e| matches!(e, TurnClientEvent::ChannelBound { .. })),
        "{evs:?}"
    );
    n.clients[c].1.send_to(n.now, peer, b"over six").unwrap();
    n.run();
    assert_eq!(n.at_peers.pop(), Some((relay, peer, b"over six".to_vec())));
    n.server.handle_peer(n.now, alloc, peer, b"back");
    n.run();
    assert_eq!(
        n.events(c),
        vec![TurnClientEvent::Data {
            peer,
            data: b"back".to_vec()
        }]
    );
    // The client core refuses the other family before asking.
    assert!(
        n.clients[c]
            .1
            .create_permission(n.now, addr("192.0.2.9:1").ip())
            .is_err()
    );

    for bad in [
        "[fd00::1]:1",
        "[fe80::1]:1",
        "[::1]:1",
        "[::]:1",
        "[ff02::1]:1",
        "[64:ff9b::a00:1]:1",
        "[2002:c0a8:101::1]:1",
        "[::ffff:10.0.0.1]:1",
    ] {
        let peer = addr(bad);
        n.clients[c].1.create_permission(n.now, peer.ip()).unwrap();
        n.run();
        let evs = n.events(c);
        assert!(
            evs.iter()
                .any(|e| matches!(e, TurnClientEvent::PermissionFailed { code: 403, .. })),
            "{bad}: {evs:?}"
        );
    }
    // A public IPv4 host behind NAT64 passes.
    n.clients[c]
        .1
        .create_permission(n.now, addr("[64:ff9b::c000:209]:1").ip())
        .unwrap();
    n.run();
    assert!(
        n.events(c)
            .iter()
            .any(|e| matches!(e, TurnClientEvent::PermissionCreated { .. }))
    );
}
