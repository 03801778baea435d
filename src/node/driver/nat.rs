//! NAT detection on a client: the sub-driver around [`NatDetector`]. It
//! starts once the first supernode answered (or after
//! [`NatOptions::wait_attach_ms`] when none does), measures against the
//! configured STUN servers or the supernodes, and checks every
//! [`NatOptions::local_check_ms`] whether the local address changed (a
//! new network), which makes the detector measure again. It takes no
//! commands; its one event is the [`NatReport`] of a detection. STUN
//! answers come to it from the client driver's `datagram` step.

use super::base::Base;
use crate::nat::{DetectorConfig, NatDetector, NatEvent, NatReport, Transmit};
use crate::node::peer;
use crate::time::Millis;
use std::net::SocketAddr;

/// How a client measures its NAT.
#[derive(Debug, Clone)]
pub struct NatOptions {
    pub detector: DetectorConfig,
    /// STUN servers to measure against; empty: the supernodes.
    pub servers: Vec<SocketAddr>,
    /// Start without waiting for an attachment after this long (when UDP
    /// is blocked none ever comes).
    pub wait_attach_ms: u64,
    /// How often the local address is checked for a change.
    pub local_check_ms: u64,
}

impl Default for NatOptions {
    fn default() -> Self {
        NatOptions {
            detector: DetectorConfig::default(),
            servers: Vec::new(),
            wait_attach_ms: 1_500,
            local_check_ms: 10_000,
        }
    }
}

/// The NAT detector of a client and when to run it.
pub(super) struct NatDriver {
    det: NatDetector,
    opts: NatOptions,
    /// The detection ran (it runs once; later ones follow local changes).
    started: bool,
    /// Start by then even without an attachment.
    start_at: Millis,
    /// Next check of the local address (after the start).
    local_check_at: Millis,
    /// Until then a "no STUN answer" report waits for an attachment over
    /// TCP (the link's fallback plus time to connect): attached, UDP is
    /// blocked; still alone, the supernodes may be down.
    hold_until: Millis,
    /// A "no STUN answer" report waiting for `hold_until` or an attachment.
    held: Option<NatReport>,
}

/// Time after the TCP fallback starts for its connection to attach.
const TCP_ATTACH_MS: u64 = 4_000;

impl NatDriver {
    /// `tcp_fallback_ms`: when the link tries TCP without a UDP answer
    /// (none: it never does).
    pub fn new(opts: NatOptions, now: Millis, tcp_fallback_ms: Option<u64>) -> Self {
        NatDriver {
            det: NatDetector::new(opts.detector),
            hold_until: tcp_fallback_ms.map_or(Millis::ZERO, |ms| now + ms + TCP_ATTACH_MS),
            held: None,
            start_at: now + opts.wait_attach_ms,
            local_check_at: Millis::MAX,
            started: false,
            opts,
        }
    }

    pub fn deadline(&self) -> Millis {
        let mut t = (self.det.poll_timeout().unwrap_or(Millis::MAX)).min(self.local_check_at);
        if self.held.is_some() {
            t = t.min(self.hold_until);
        }
        if self.started {
            t
        } else {
            t.min(self.start_at)
        }
    }

    /// A datagram of another protocol came: UDP works here.
    pub fn note_udp_received(&mut self) {
        self.det.note_udp_received();
    }

    /// A STUN datagram; true when it was the detector's.
    pub fn datagram(&mut self, now: Millis, from: SocketAddr, d: &[u8]) -> bool {
        self.det.handle_datagram(now, from, d)
    }

    /// A supernode saw us at `observed` (over TCP: our TCP mapping, which
    /// says nothing of UDP); true when the detection should start now.
    pub fn on_attached(
        &mut self,
        now: Millis,
        supernode: SocketAddr,
        observed: SocketAddr,
        over_tcp: bool,
    ) -> bool {
        if !over_tcp {
            self.det.observe_mapped(now, supernode, observed);
        }
        !self.started
    }

    /// The servers to measure against: the configured ones, else `known`
    /// (the attached supernodes, then the other known ones).
    /// The servers to measure against: one family, IPv4 when this host
    /// has a route to one of them (directly or through NAT64).
    async fn servers(
        &self,
        base: &Base,
        known: impl FnOnce() -> Vec<SocketAddr>,
    ) -> Vec<SocketAddr> {
        let all = if self.opts.servers.is_empty() {
            known()
        } else {
            self.opts.servers.clone()
        };
        let mut v4_route = false;
        if let Ok(bound) = base.socket.local_addr() {
            for &a in all.iter().filter(|a| a.is_ipv4()) {
                if peer::host_address(bound, base.socket.routed(a))
                    .await
                    .is_some()
                {
                    v4_route = true;
                    break;
                }
            }
        }
        one_family(all, v4_route)
    }

    /// Start the detection (once).
    pub async fn start(
        &mut self,
        base: &mut Base,
        known: impl FnOnce() -> Vec<SocketAddr>,
        reason: &str,
    ) {
        if self.started {
            return;
        }
        let servers = self.servers(base, known).await;
        self.det.set_servers(servers);
        let local = self.local_address(base).await;
        let now = base.now();
        self.det.set_local(now, local);
        self.det.start(now, reason, &mut base.rng);
        self.started = true;
        self.local_check_at = now + self.opts.local_check_ms;
    }

    /// Our address towards the first server (the host candidate).
    async fn local_address(&self, base: &Base) -> Option<SocketAddr> {
        let bound = base.socket.local_addr().ok()?;
        let first = self.det.servers().first().copied()?;
        peer::host_address(bound, base.socket.routed(first)).await
    }

    /// Check whether our local address changed (a new network).
    async fn check_local(&mut self, base: &Base) {
        let local = self.local_address(base).await;
        let now = base.now();
        self.local_check_at = now + self.opts.local_check_ms;
        if local.is_some() {
            self.det.set_local(now, local);
        }
    }

    /// The client's address watch saw a new network: check the local
    /// address now (a change makes the detector measure again).
    pub async fn local_changed(&mut self, base: &mut Base) {
        if self.started {
            self.check_local(base).await;
        }
    }

    /// Timers: the start without an attachment, the local check, the
    /// detector's own.
    pub async fn handle_timeout(
        &mut self,
        base: &mut Base,
        now: Millis,
        known: impl FnOnce() -> Vec<SocketAddr>,
    ) {
        if !self.started && now >= self.start_at {
            self.start(base, known, "login").await;
        } else if self.started && now >= self.local_check_at {
            self.check_local(base).await;
        }
        self.det.handle_timeout(now, &mut base.rng);
    }

    /// The next report. Measured against the supernodes, no STUN answer
    /// says "UDP blocked" only when a supernode is `attached` some other
    /// way (over TCP); such a report waits for the TCP fallback to attach
    /// until `hold_until`, and attached to none by then, the supernodes
    /// may just be down (issue 13.12). STUN servers the user named are
    /// taken at their word. An attachment later makes the detector check
    /// again ("UDP works again").
    pub fn poll_report(&mut self, now: Millis, attached: bool) -> Option<NatReport> {
        let r = match self.held.take() {
            Some(r) => r,
            None => match self.det.poll_event()? {
                NatEvent::Report(r) => r,
            },
        };
        if !r.udp_blocked || attached || !self.opts.servers.is_empty() {
            return Some(r);
        }
        if now < self.hold_until {
            self.held = Some(r);
            return None;
        }
        let mut r = r;
        r.udp_blocked = false;
        r.unreachable = true;
        r.notes
            .push("no supernode answered: they may be down; UDP is not known to be blocked".into());
        Some(r)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.det.poll_transmit()
    }

    /// The last detection's report.
    pub fn last(&self) -> Option<&NatReport> {
        self.det.last()
    }
}

/// The servers of one family: a NAT maps each family on its own, and
/// RFC 5780 tests compare addresses that must be of one family. IPv4 when
/// there is any and the host has a route to it (`v4_route`: where NATs
/// are), else IPv6 (an IPv6-only network; IPv4 again when there is no
/// IPv6 server, to report what fails).
fn one_family(servers: Vec<SocketAddr>, v4_route: bool) -> Vec<SocketAddr> {
    let any_v4 = servers.iter().any(|a| a.is_ipv4());
    let any_v6 = servers.iter().any(|a| a.is_ipv6());
    let v4 = any_v4 && (v4_route || !any_v6);
    servers.into_iter().filter(|a| a.is_ipv4() == v4).collect()
}

#[cfg(test)]
mod tests {
    use super::one_family;
    use std::net::SocketAddr;

    #[test]
    fn detection_measures_one_family() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let mixed = vec![
            a("[2001:db8::1]:7710"),
            a("198.51.100.1:7710"),
            a("198.51.100.2:7710"),
        ];
        assert_eq!(
            one_family(mixed.clone(), true),
            vec![a("198.51.100.1:7710"), a("198.51.100.2:7710")]
        );
        // An IPv6-only host measures over IPv6.
        assert_eq!(one_family(mixed, false), vec![a("[2001:db8::1]:7710")]);
        let v6 = vec![a("[2001:db8::1]:7710"), a("[2001:db8::2]:7710")];
        assert_eq!(one_family(v6.clone(), true), v6);
        let v4 = vec![a("198.51.100.1:7710")];
        assert_eq!(one_family(v4.clone(), false), v4);
    }
}
