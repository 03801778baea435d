//! NAT detection in the simulator: STUN servers (each with its sockets),
//! one client behind a simulated NAT (or none) running a
//! [`NatDetector`], all on a [`Network`] in virtual time. Used by the
//! detector's unit tests and `tests/it/nat_detect_sim.rs`.

use super::nat::NatConfig;
use super::net::{NatId, Network};
use crate::nat::{DetectorConfig, NatDetector, NatEvent, NatReport, StunServer, StunServerConfig};
use crate::time::{Millis, earliest};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::net::SocketAddr;

/// The client's socket owner number; server `i` owns `SERVER + i`.
const CLIENT: usize = 0;
const SERVER: usize = 1;

/// Servers, a client and the network between them.
pub struct DetectLab {
    pub net: Network,
    pub servers: Vec<StunServer>,
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
        net: Network,
        client: SocketAddr,
        nat: Option<NatConfig>,
        cfg: DetectorConfig,
    ) -> Self {
        let mut net = net;
        net.bind(client, CLIENT);
        let nat = nat.map(|c| {
            let id = net.add_nat(c);
            net.place_behind(client.ip(), id);
            id
        });
        DetectLab {
            net,
            servers: Vec::new(),
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
        self.net.bind(primary, SERVER + i);
        for x in s.extra_sockets() {
            self.net.bind(x, SERVER + i);
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
    pub fn run_until_report(&mut self, until: Millis) -> Option<NatReport> {
        loop {
            self.flush();
            if let Some(NatEvent::Report(r)) = self.detector.poll_event() {
                return Some(r);
            }
            let t = earliest(self.net.next_due(), self.detector.poll_timeout());
            let Some(t) = t.filter(|t| *t <= until) else {
                self.net.advance_to(until);
                return None;
            };
            self.net.advance_to(t);
            let now = self.net.now();
            while let Some(d) = self.net.poll_delivery() {
                if d.to_owner == CLIENT {
                    if !self.detector.handle_datagram(now, d.from, &d.bytes) {
                        self.detector.note_udp_received();
                    }
                } else if let Some(s) = self.servers.get_mut(d.to_owner - SERVER) {
                    s.handle_datagram(now, d.to, d.from, &d.bytes);
                }
            }
            if self.detector.poll_timeout().is_some_and(|t| t <= now) {
                self.detector.handle_timeout(now, &mut self.rng);
            }
        }
    }

    /// Start a detection now and run it to its report (at most `limit_ms`).
    pub fn detect(&mut self, reason: &str, limit_ms: u64) -> Option<NatReport> {
        let now = self.net.now();
        self.detector.start(now, reason, &mut self.rng);
        self.run_until_report(now + limit_ms)
    }
}
