//! NAT detection in the simulator: STUN servers (each with its sockets),
//! one client behind a simulated NAT (or none) running a
//! [`NatDetector`], all on a [`NatNetwork`] in virtual time. Used by the
//! detector's unit tests and `tests/it/nat_detect_sim.rs`.

use super::nat::{NatConfig, NatId, NatNetwork};
use crate::nat::{DetectorConfig, NatDetector, NatEvent, NatReport, StunServer, StunServerConfig};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Servers, a client and the network between them.
pub struct DetectLab {
    pub net: NatNetwork,
    pub servers: Vec<StunServer>,
    /// Every socket of every server -> the server's index.
    sockets: HashMap<SocketAddr, usize>,
    pub detector: NatDetector,
    /// The client's socket (its address behind the NAT).
    pub client: SocketAddr,
    pub nat: Option<NatId>,
    pub rng: StdRng,
}

impl DetectLab {
    /// A lab with the client at `client`; behind a NAT of `nat` unless
    /// `None` (then `client` should be a public address).
    pub fn new(
        seed: u64,
        net: NatNetwork,
        client: SocketAddr,
        nat: Option<NatConfig>,
        cfg: DetectorConfig,
    ) -> Self {
        let mut net = net;
        let nat = nat.map(|c| {
            let id = net.add_nat(c);
            net.place_behind(client.ip(), id);
            id
        });
        DetectLab {
            net,
            servers: Vec::new(),
            sockets: HashMap::new(),
            detector: NatDetector::new(cfg),
            client,
            nat,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Add a STUN server; returns its index.
    pub fn add_server(&mut self, primary: SocketAddr, alt: Option<SocketAddr>) -> usize {
        let s = StunServer::new(StunServerConfig { primary, alt });
        let i = self.servers.len();
        self.sockets.insert(primary, i);
        for x in s.extra_sockets() {
            self.sockets.insert(x, i);
        }
        self.servers.push(s);
        i
    }

    fn flush(&mut self) {
        while let Some(t) = self.detector.poll_transmit() {
            self.net.send(self.client, t.dst, t.bytes);
        }
        for s in &mut self.servers {
            let primary = s.config().primary;
            while let Some(t) = s.poll_transmit() {
                self.net.send(t.src.unwrap_or(primary), t.dst, t.bytes);
            }
        }
    }

    /// Run until the detector reports or virtual time passes `until`.
    pub fn run_until_report(&mut self, until: u64) -> Option<NatReport> {
        loop {
            self.flush();
            if let Some(NatEvent::Report(r)) = self.detector.poll_event() {
                return Some(r);
            }
            let t = self
                .net
                .next_arrival()
                .unwrap_or(u64::MAX)
                .min(self.detector.poll_timeout());
            if t > until {
                self.net.advance_to(until);
                return None;
            }
            self.net.advance_to(t);
            let now = self.net.now;
            while let Some(d) = self.net.poll_delivery() {
                if d.to == self.client {
                    if !self.detector.handle_datagram(now, d.from, &d.bytes) {
                        self.detector.note_udp_received();
                    }
                } else if let Some(&i) = self.sockets.get(&d.to) {
                    self.servers[i].handle_datagram(d.to, d.from, &d.bytes);
                }
            }
            if self.detector.poll_timeout() <= now {
                self.detector.handle_timeout(now, &mut self.rng);
            }
        }
    }

    /// Start a detection now and run it to its report (at most `limit_ms`).
    pub fn detect(&mut self, reason: &str, limit_ms: u64) -> Option<NatReport> {
        let now = self.net.now;
        self.detector.start(now, reason, &mut self.rng);
        self.run_until_report(now + limit_ms)
    }
}
