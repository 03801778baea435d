//! The client's NAT measurement (RFC 5780 §4), sans-IO, over the node's
//! main UDP socket so that what it measures is the mapping the link and
//! media use.
//!
//! One run has three phases, each a set of Binding transactions sent in
//! parallel and retransmitted (RTO doubling from [`DetectorConfig::rto_ms`])
//! until answered or [`DetectorConfig::test_timeout_ms`] passes:
//!
//! 1. **Binding** (test I) to up to [`DetectorConfig::max_servers`] servers
//!    at once: the public address, whether UDP gets through at all, and
//!    which server offers a second address (OTHER-ADDRESS).
//! 2. **Filtering** (§4.4), before anything is sent to the other address
//!    (contacting it first would open an address-dependent filter and read
//!    as endpoint-independent): CHANGE-REQUEST "IP and port" answered ->
//!    EIF; else "port" answered -> ADF; else APDF.
//! 3. **Mapping** (§4.3): Binding to (other IP, primary port) and to the
//!    other address; the mapped addresses of every (server, mapped) pair
//!    observed are then compared ([`classify_mapping`]). Without any
//!    server with a second address, the test I answers of several servers
//!    stand in for the mapping test, and filtering is reported unknown.
//!
//! A run ends with a [`NatEvent::Report`]. The detector runs again, at most
//! every [`DetectorConfig::min_recheck_ms`], when the network changes: the
//! local address changes ([`NatDetector::set_local`]) or a server sees us
//! at another address ([`NatDetector::observe_mapped`]).

use super::stun::{self, BindingResponse};
use super::{Filtering, Mapping, NatReport, Transmit};
use crate::time::Millis;
use crate::wire::stun::{Class, method, peek};
use rand::RngCore;
use std::collections::VecDeque;
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectorConfig {
    /// First retransmission timeout; doubled after every attempt.
    pub rto_ms: u64,
    /// Sends per request at most.
    pub attempts: u32,
    /// A test with no answer after this long has failed (filtered, lost
    /// or blocked); also bounds each phase.
    pub test_timeout_ms: u64,
    /// Servers asked at once in test I.
    pub max_servers: usize,
    /// Shortest time between the end of one run and a re-check.
    pub min_recheck_ms: u64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            rto_ms: 200,
            attempts: 5,
            test_timeout_ms: 2_000,
            max_servers: 3,
            min_recheck_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatEvent {
    Report(NatReport),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Test I to the server with this index.
    Primary(usize),
    /// Filtering test II: change IP and port.
    FilterBoth,
    /// Filtering test III: change port.
    FilterPort,
    /// Mapping test II: other IP, primary port.
    MapAltIp,
    /// Mapping test III: the other address.
    MapAlt,
}

#[derive(Debug, Clone)]
struct Txn {
    tid: [u8; 12],
    dst: SocketAddr,
    purpose: Purpose,
    request: Vec<u8>,
    started: Millis,
    next_send: Millis,
    sent: u32,
    /// The answer, and where it came from.
    answer: Option<(SocketAddr, BindingResponse)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Binding,
    Filtering,
    Mapping,
}

/// The sans-IO NAT detector.
#[derive(Debug)]
pub struct NatDetector {
    cfg: DetectorConfig,
    servers: Vec<SocketAddr>,
    local: Option<SocketAddr>,
    phase: Phase,
    phase_deadline: Millis,
    txns: Vec<Txn>,
    /// Transaction ids of the current run's finished phases: late answers
    /// are still ours (claimed, not passed to other STUN users).
    old_tids: Vec<[u8; 12]>,
    // Results of the current run.
    started: Millis,
    reason: String,
    requests: u32,
    saw_udp: bool,
    server: Option<SocketAddr>,
    other: Option<SocketAddr>,
    public: Option<SocketAddr>,
    observations: Vec<(SocketAddr, SocketAddr)>,
    filtering: Filtering,
    notes: Vec<String>,
    // Between runs.
    last: Option<NatReport>,
    last_end: Millis,
    recheck: Option<(Millis, String)>,
    out: VecDeque<Transmit>,
    events: VecDeque<NatEvent>,
}

impl NatDetector {
    pub fn new(cfg: DetectorConfig) -> Self {
        NatDetector {
            cfg,
            servers: Vec::new(),
            local: None,
            phase: Phase::Idle,
            phase_deadline: Millis::MAX,
            txns: Vec::new(),
            old_tids: Vec::new(),
            started: Millis::ZERO,
            reason: String::new(),
            requests: 0,
            saw_udp: false,
            server: None,
            other: None,
            public: None,
            observations: Vec::new(),
            filtering: Filtering::Unknown,
            notes: Vec::new(),
            last: None,
            last_end: Millis::ZERO,
            recheck: None,
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The STUN servers to measure against, best first (e.g. the attached
    /// supernodes, then others known). Used by the next run.
    pub fn set_servers(&mut self, servers: Vec<SocketAddr>) {
        let mut v: Vec<SocketAddr> = Vec::new();
        for s in servers {
            if !v.contains(&s) {
                v.push(s);
            }
        }
        self.servers = v;
    }

    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Our own address towards the servers (the socket's port and the IP
    /// the route to them uses), for telling "no NAT" apart. A change after
    /// a run has reported means the network changed: schedule a re-check.
    pub fn set_local(&mut self, now: Millis, local: Option<SocketAddr>) {
        if local == self.local {
            return;
        }
        let before = self.local;
        self.local = local;
        if before.is_some() && self.last.is_some() {
            self.schedule_recheck(now, "local address changed");
        }
    }

    pub fn is_running(&self) -> bool {
        self.phase != Phase::Idle
    }

    /// The last finished report.
    pub fn last(&self) -> Option<&NatReport> {
        self.last.as_ref()
    }

    /// A server saw us at `mapped` (e.g. a supernode's attach answer). If
    /// that contradicts the last report, the network changed: re-check.
    pub fn observe_mapped(&mut self, now: Millis, server: SocketAddr, mapped: SocketAddr) {
        let Some(last) = &self.last else { return };
        let changed = if last.udp_blocked {
            Some("UDP works again")
        } else if last.public.is_some_and(|p| p.ip() != mapped.ip()) {
            Some("public address changed")
        } else if last
            .observations
            .iter()
            .any(|&(s, m)| s == server && m != mapped)
            || (matches!(last.mapping, Mapping::EndpointIndependent | Mapping::NoNat)
                && last.public.is_some_and(|p| p != mapped))
        {
            // Per server, since a dependent mapping differs by server.
            Some("mapped address changed")
        } else {
            None
        };
        if let Some(why) = changed {
            self.schedule_recheck(now, why);
        }
    }

    /// Some non-STUN datagram arrived from the network during a run: UDP
    /// is not blocked even if no STUN server answers.
    pub fn note_udp_received(&mut self) {
        if self.phase != Phase::Idle {
            self.saw_udp = true;
        }
    }

    fn schedule_recheck(&mut self, now: Millis, why: &str) {
        if self.recheck.is_some() {
            return;
        }
        let at = now.max(self.last_end + self.cfg.min_recheck_ms);
        tracing::info!(reason = why, "NAT re-check scheduled");
        self.recheck = Some((at, why.to_owned()));
    }

    /// Start a run now (a run in progress is abandoned).
    pub fn start(&mut self, now: Millis, reason: &str, rng: &mut dyn RngCore) {
        self.recheck = None;
        self.txns.clear();
        self.old_tids.clear();
        self.started = now;
        self.reason = reason.to_owned();
        self.requests = 0;
        self.saw_udp = false;
        self.server = None;
        self.other = None;
        self.public = None;
        self.observations.clear();
        self.filtering = Filtering::Unknown;
        self.notes.clear();
        if self.servers.is_empty() {
            self.notes.push("no STUN server known".into());
            self.finish(now);
            return;
        }
        self.phase = Phase::Binding;
        self.phase_deadline = now + self.cfg.test_timeout_ms;
        let servers: Vec<SocketAddr> = self
            .servers
            .iter()
            .take(self.cfg.max_servers.max(1))
            .copied()
            .collect();
        for (i, s) in servers.into_iter().enumerate() {
            self.add_txn(now, s, Purpose::Primary(i), false, false, rng);
        }
        self.send_due(now);
    }

    fn add_txn(
        &mut self,
        now: Millis,
        dst: SocketAddr,
        purpose: Purpose,
        change_ip: bool,
        change_port: bool,
        rng: &mut dyn RngCore,
    ) {
        let mut tid = [0u8; 12];
        rng.fill_bytes(&mut tid);
        self.txns.push(Txn {
            tid,
            dst,
            purpose,
            request: stun::binding_request(tid, change_ip, change_port),
            started: now,
            next_send: now,
            sent: 0,
            answer: None,
        });
    }

    fn send_due(&mut self, now: Millis) {
        let (rto, attempts) = (self.cfg.rto_ms.max(1), self.cfg.attempts.max(1));
        for t in &mut self.txns {
            if t.answer.is_some() || t.sent >= attempts || t.next_send > now {
                continue;
            }
            self.out.push_back(Transmit {
                src: None,
                dst: t.dst,
                bytes: t.request.clone(),
            });
            self.requests += 1;
            t.sent += 1;
            // Sends at 0, rto, 3 rto, 7 rto, ... after the start.
            t.next_send = t.started + rto * ((1u64 << t.sent.min(20)) - 1);
        }
    }

    /// A STUN datagram that arrived on the main socket. Returns whether
    /// it was ours (an answer to one of our requests); if not, the caller
    /// passes it to its other STUN users.
    pub fn handle_datagram(&mut self, now: Millis, from: SocketAddr, d: &[u8]) -> bool {
        let Some(h) = peek(d) else { return false };
        if h.method != method::BINDING || !matches!(h.class, Class::Success | Class::Error) {
            return false;
        }
        let Some(i) = self.txns.iter().position(|t| t.tid == h.transaction) else {
            return self.old_tids.contains(&h.transaction);
        };
        let r = match stun::parse_binding_response(d) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%from, "bad STUN answer: {e}");
                return true;
            }
        };
        if self.txns[i].answer.is_none() {
            self.txns[i].answer = Some((from, r));
            self.advance(now);
        }
        true
    }

    pub fn handle_timeout(&mut self, now: Millis, rng: &mut dyn RngCore) {
        if let Some((at, why)) = &self.recheck
            && *at <= now
            && self.phase == Phase::Idle
        {
            let why = why.clone();
            self.start(now, &why, rng);
            return;
        }
        if self.phase == Phase::Idle {
            return;
        }
        self.send_due(now);
        self.advance_with(now, Some(rng));
    }

    fn advance(&mut self, now: Millis) {
        self.advance_with(now, None)
    }

    /// Move to the next phase when the current one is complete. New
    /// transactions need randomness: without it (on an answer), the next
    /// phase starts at the next timeout, which is set to now.
    fn advance_with(&mut self, now: Millis, rng: Option<&mut dyn RngCore>) {
        if !self.phase_complete(now) {
            return;
        }
        match rng {
            Some(rng) => self.next_phase(now, rng),
            None => self.phase_deadline = now,
        }
    }

    fn phase_complete(&self, now: Millis) -> bool {
        let timed_out = now >= self.phase_deadline;
        let answered = |p: Purpose| {
            self.txns
                .iter()
                .any(|t| t.purpose == p && t.answer.is_some())
        };
        match self.phase {
            Phase::Idle => false,
            Phase::Binding => {
                timed_out
                    || self.txns.iter().all(|t| t.answer.is_some())
                    || self.txns.iter().any(|t| {
                        t.answer
                            .as_ref()
                            .is_some_and(|(_, r)| r.error.is_none() && usable_other(t.dst, r.other))
                    })
            }
            Phase::Filtering => {
                timed_out
                    || answered(Purpose::FilterBoth)
                    || self.txns.iter().all(|t| t.answer.is_some())
            }
            Phase::Mapping => timed_out || self.txns.iter().all(|t| t.answer.is_some()),
        }
    }

    fn next_phase(&mut self, now: Millis, rng: &mut dyn RngCore) {
        let done: Vec<Txn> = std::mem::take(&mut self.txns);
        self.old_tids.extend(done.iter().map(|t| t.tid));
        match self.phase {
            Phase::Idle => {}
            Phase::Binding => self.after_binding(now, &done, rng),
            Phase::Filtering => {
                self.after_filtering(&done);
                self.start_mapping(now, rng);
            }
            Phase::Mapping => {
                for t in &done {
                    if let Some((_, r)) = &t.answer
                        && let Some(m) = r.mapped
                    {
                        self.observations.push((t.dst, m));
                    } else {
                        self.notes
                            .push(format!("no answer from {} in the mapping test", t.dst));
                    }
                }
                self.finish(now);
            }
        }
    }

    fn after_binding(&mut self, now: Millis, done: &[Txn], rng: &mut dyn RngCore) {
        let answered: Vec<&Txn> = done
            .iter()
            .filter(|t| {
                t.answer
                    .as_ref()
                    .is_some_and(|(_, r)| r.error.is_none() && r.mapped.is_some())
            })
            .collect();
        for t in &answered {
            if let Some((_, r)) = &t.answer
                && let Some(m) = r.mapped
            {
                self.observations.push((t.dst, m));
            }
        }
        for t in done.iter().filter(|t| t.answer.is_none()) {
            self.notes.push(format!("no answer from {}", t.dst));
        }
        // The server to test against: the first (in our order) with a
        // usable second address, else the first that answered.
        let chosen = answered
            .iter()
            .find(|t| usable_other(t.dst, t.answer.as_ref().and_then(|(_, r)| r.other)))
            .or(answered.first())
            .copied();
        let Some(chosen) = chosen else {
            self.finish(now);
            return;
        };
        let Some((_, r)) = &chosen.answer else { return };
        self.server = Some(chosen.dst);
        self.public = r.mapped;
        self.other = r.other.filter(|_| usable_other(chosen.dst, r.other));
        if let Some(o) = r.other
            && self.other.is_none()
        {
            self.notes.push(format!(
                "{} gave OTHER-ADDRESS {o}, which does not differ in both address and port",
                chosen.dst
            ));
        }
        match self.other {
            Some(_) => {
                let s = chosen.dst;
                self.phase = Phase::Filtering;
                self.phase_deadline = now + self.cfg.test_timeout_ms;
                self.add_txn(now, s, Purpose::FilterBoth, true, true, rng);
                self.add_txn(now, s, Purpose::FilterPort, false, true, rng);
                self.send_due(now);
            }
            None => {
                self.notes.push(
                    "filtering: no server with a second address (RFC 5780 OTHER-ADDRESS)".into(),
                );
                self.finish(now);
            }
        }
    }

    fn after_filtering(&mut self, done: &[Txn]) {
        let (Some(server), Some(other)) = (self.server, self.other) else {
            return;
        };
        let get = |p: Purpose| {
            done.iter()
                .find(|t| t.purpose == p)
                .and_then(|t| t.answer.as_ref())
        };
        let both_from = other;
        let port_from = SocketAddr::new(server.ip(), other.port());
        let check =
            |a: Option<&(SocketAddr, BindingResponse)>, want: SocketAddr| -> Result<bool, String> {
                match a {
                    None => Ok(false),
                    Some((_, r)) if r.error.is_some() => Err(format!(
                        "{server} answered CHANGE-REQUEST with error {}",
                        r.error.unwrap_or(0)
                    )),
                    Some((from, _)) if *from != want => Err(format!(
                        "{server} ignored CHANGE-REQUEST (answer from {from}, expected {want})"
                    )),
                    Some(_) => Ok(true),
                }
            };
        self.filtering = match (
            check(get(Purpose::FilterBoth), both_from),
            check(get(Purpose::FilterPort), port_from),
        ) {
            (Ok(true), _) => Filtering::EndpointIndependent,
            (Ok(false), Ok(true)) => Filtering::AddressDependent,
            (Ok(false), Ok(false)) => Filtering::AddressPortDependent,
            (Err(e), _) | (_, Err(e)) => {
                self.notes.push(format!("filtering: {e}"));
                Filtering::Unknown
            }
        };
    }

    fn start_mapping(&mut self, now: Millis, rng: &mut dyn RngCore) {
        let (Some(server), Some(other)) = (self.server, self.other) else {
            self.finish(now);
            return;
        };
        self.phase = Phase::Mapping;
        self.phase_deadline = now + self.cfg.test_timeout_ms;
        self.add_txn(
            now,
            SocketAddr::new(other.ip(), server.port()),
            Purpose::MapAltIp,
            false,
            false,
            rng,
        );
        self.add_txn(now, other, Purpose::MapAlt, false, false, rng);
        self.send_due(now);
    }

    fn finish(&mut self, now: Millis) {
        self.phase = Phase::Idle;
        self.phase_deadline = Millis::MAX;
        // Answers from finished phases stay claimable until the next run.
        let old: Vec<[u8; 12]> = self.txns.drain(..).map(|t| t.tid).collect();
        self.old_tids.extend(old);
        let udp_blocked = self.public.is_none() && !self.saw_udp && !self.servers.is_empty();
        if self.public.is_none() && self.saw_udp {
            self.notes
                .push("no STUN server answered, but other UDP traffic arrived".into());
        }
        let mut mapping = Mapping::Unknown;
        if let Some(public) = self.public {
            if self.local == Some(public) {
                mapping = Mapping::NoNat;
            } else {
                let (m, note) = classify_mapping(&self.observations);
                mapping = m;
                if let Some(n) = note {
                    self.notes.push(format!("mapping: {n}"));
                }
                if self.local.is_none() {
                    self.notes
                        .push("local address unknown: \"no NAT\" cannot be told apart".into());
                }
            }
        }
        let report = NatReport {
            udp_blocked,
            unreachable: false,
            mapping,
            filtering: if self.public.is_some() {
                self.filtering
            } else {
                Filtering::Unknown
            },
            public: self.public,
            local: self.local,
            server: self.server,
            other: self.other,
            observations: self.observations.clone(),
            started_ms: self.started.get(),
            duration_ms: now.since(self.started),
            requests: self.requests,
            notes: std::mem::take(&mut self.notes),
            reason: std::mem::take(&mut self.reason),
        };
        tracing::info!(reason = %report.reason, "NAT: {}", report.summary());
        self.last = Some(report.clone());
        self.last_end = now;
        self.events.push_back(NatEvent::Report(report));
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<NatEvent> {
        self.events.pop_front()
    }

    /// The next time [`NatDetector::handle_timeout`] must run.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut t = self
            .recheck
            .as_ref()
            .map(|(at, _)| *at)
            .unwrap_or(Millis::MAX);
        if self.phase != Phase::Idle {
            t = t.min(self.phase_deadline);
            let attempts = self.cfg.attempts.max(1);
            for x in &self.txns {
                if x.answer.is_none() && x.sent < attempts {
                    t = t.min(x.next_send);
                }
            }
        }
        (t < Millis::MAX).then_some(t)
    }
}

/// Whether `other` can serve RFC 5780 tests against `server`: it must
/// differ in both address and port.
fn usable_other(server: SocketAddr, other: Option<SocketAddr>) -> bool {
    other.is_some_and(|o| o.ip() != server.ip() && o.port() != server.port())
}

/// The mapping behaviour shown by (server, mapped address) observations of
/// one local socket, and a note when it could not be pinned down.
///
/// Destinations on different addresses that got different mappings show
/// address dependence; then two ports of one address that got the same
/// mapping show it stops there (ADM), different ones show port dependence
/// too (APDM). Equal mappings across addresses show EIM.
pub fn classify_mapping(obs: &[(SocketAddr, SocketAddr)]) -> (Mapping, Option<String>) {
    let mut diff_ip_differ = false;
    let mut diff_ip_same = false;
    let mut same_ip_differ = false;
    let mut same_ip_same = false;
    for (i, &(s1, m1)) in obs.iter().enumerate() {
        for &(s2, m2) in &obs[i + 1..] {
            if s1 == s2 {
                continue;
            }
            match (s1.ip() == s2.ip(), m1 == m2) {
                (false, false) => diff_ip_differ = true,
                (false, true) => diff_ip_same = true,
                (true, false) => same_ip_differ = true,
                (true, true) => same_ip_same = true,
            }
        }
    }
    if same_ip_differ {
        return (Mapping::AddressPortDependent, None);
    }
    if diff_ip_differ {
        if same_ip_same {
            return (Mapping::AddressDependent, None);
        }
        return (
            Mapping::Dependent,
            Some("no two servers on one address, so address- and port-dependent cannot be told apart".into()),
        );
    }
    if diff_ip_same {
        return (Mapping::EndpointIndependent, None);
    }
    if same_ip_same {
        return (
            Mapping::Unknown,
            Some(
                "only one server address answered: endpoint-independent or address-dependent"
                    .into(),
            ),
        );
    }
    (
        Mapping::Unknown,
        Some("needs answers from two server addresses (a supernode with a second address, or a second supernode)".into()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::StunServer;
    use crate::sim::detect::DetectLab;
    use crate::sim::nat::NatConfig;
    use crate::sim::net::{LinkModel, Network};
    use rand::SeedableRng;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const T0: u64 = 1_000_000;
    const S1: &str = "198.51.100.1:3478";
    const S1_ALT: &str = "198.51.100.2:3479";

    fn lab(client: &str, nat: Option<NatConfig>, loss: f64, seed: u64) -> DetectLab {
        let net = Network::new(seed, Millis(T0), LinkModel::new(15, 5, loss));
        let mut l = DetectLab::new(seed, net, a(client), nat, DetectorConfig::default());
        l.detector.set_local(Millis(T0), Some(a(client)));
        l
    }

    #[test]
    fn public_host_is_no_nat_and_open() {
        let mut l = lab("192.0.2.7:5000", None, 0.0, 1);
        l.add_server(a(S1), Some(a(S1_ALT)));
        l.detector.set_servers(vec![a(S1)]);
        let r = l.detect("login", 10_000).unwrap();
        assert!(!r.udp_blocked);
        assert_eq!(r.mapping, Mapping::NoNat);
        assert_eq!(r.filtering, Filtering::EndpointIndependent);
        assert_eq!(r.public, Some(a("192.0.2.7:5000")));
        assert_eq!(r.server, Some(a(S1)));
        assert_eq!(r.other, Some(a(S1_ALT)));
        // Test I, then filtering (both answered at once), then mapping.
        assert!(r.duration_ms < 200, "{}", r.duration_ms);
        assert_eq!(r.reason, "login");
        assert!(r.notes.is_empty(), "{:?}", r.notes);
    }

    #[test]
    fn nothing_answers_means_udp_blocked_in_bounded_time() {
        let mut l = lab(
            "10.0.0.2:5000",
            Some(NatConfig::udp_blocked(a("198.18.0.1:0").ip())),
            0.0,
            2,
        );
        l.add_server(a(S1), Some(a(S1_ALT)));
        l.detector.set_servers(vec![a(S1), a("198.51.100.9:7710")]);
        let r = l.detect("login", 10_000).unwrap();
        assert!(r.udp_blocked);
        assert_eq!(
            (r.mapping, r.filtering),
            (Mapping::Unknown, Filtering::Unknown)
        );
        assert_eq!(r.public, None);
        assert_eq!(r.duration_ms, 2_000);
        // Sends at 0, 200, 600 and 1400 ms to each of the two servers.
        assert_eq!(r.requests, 8);
    }

    #[test]
    fn other_udp_traffic_is_not_blocked() {
        let mut l = lab("192.0.2.7:5000", None, 0.0, 3);
        l.detector.set_servers(vec![a("198.51.100.9:7710")]);
        l.detector.start(Millis(T0), "login", &mut l.rng);
        l.net.advance_to(Millis(T0 + 100));
        l.detector.note_udp_received();
        let r = l.run_until_report(Millis(T0 + 10_000)).unwrap();
        assert!(!r.udp_blocked);
        assert_eq!(r.mapping, Mapping::Unknown);
        assert!(
            r.notes.iter().any(|n| n.contains("other UDP traffic")),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn without_second_address_two_servers_give_the_mapping() {
        let pub_ip = a("198.18.0.1:0").ip();
        for (nat, want) in [
            (
                NatConfig::port_restricted_cone(pub_ip),
                Mapping::EndpointIndependent,
            ),
            (NatConfig::symmetric(pub_ip), Mapping::Dependent),
        ] {
            let mut l = lab("10.0.0.2:5000", Some(nat), 0.0, 4);
            l.add_server(a("198.51.100.1:7710"), None);
            l.add_server(a("198.51.100.50:7710"), None);
            l.detector
                .set_servers(vec![a("198.51.100.1:7710"), a("198.51.100.50:7710")]);
            let r = l.detect("login", 10_000).unwrap();
            assert_eq!(r.mapping, want);
            assert_eq!(r.filtering, Filtering::Unknown);
            assert_eq!(r.other, None);
            assert_eq!(r.observations.len(), 2);
            assert!(
                r.notes.iter().any(|n| n.contains("filtering")),
                "{:?}",
                r.notes
            );
            assert!(r.duration_ms < 200);
        }
        // One server, no second address: the mapping cannot be measured.
        let mut l = lab("10.0.0.2:5000", Some(NatConfig::full_cone(pub_ip)), 0.0, 5);
        l.add_server(a("198.51.100.1:7710"), None);
        l.detector.set_servers(vec![a("198.51.100.1:7710")]);
        let r = l.detect("login", 10_000).unwrap();
        assert_eq!(
            (r.mapping, r.filtering),
            (Mapping::Unknown, Filtering::Unknown)
        );
        assert_eq!(r.public.map(|p| p.ip()), Some(pub_ip));
        assert!(!r.udp_blocked);
    }

    #[test]
    fn prefers_the_server_with_a_second_address() {
        let pub_ip = a("198.18.0.1:0").ip();
        let mut l = lab(
            "10.0.0.2:5000",
            Some(NatConfig::restricted_cone(pub_ip)),
            0.0,
            6,
        );
        l.add_server(a("198.51.100.50:7710"), None);
        l.add_server(a(S1), Some(a(S1_ALT)));
        l.detector.set_servers(vec![a("198.51.100.50:7710"), a(S1)]);
        let r = l.detect("login", 10_000).unwrap();
        assert_eq!(r.server, Some(a(S1)));
        assert_eq!(r.mapping, Mapping::EndpointIndependent);
        assert_eq!(r.filtering, Filtering::AddressDependent);
    }

    #[test]
    fn survives_loss_by_retransmitting() {
        let pub_ip = a("198.18.0.1:0").ip();
        for seed in 1..=20 {
            let mut l = lab(
                "10.0.0.2:5000",
                Some(NatConfig::port_restricted_cone(pub_ip)),
                0.1,
                seed,
            );
            l.add_server(a(S1), Some(a(S1_ALT)));
            l.detector.set_servers(vec![a(S1)]);
            let r = l.detect("login", 10_000).unwrap();
            assert_eq!(
                (r.mapping, r.filtering),
                (
                    Mapping::EndpointIndependent,
                    Filtering::AddressPortDependent
                ),
                "seed {seed}: {r:?}"
            );
            assert!(r.duration_ms <= 6_000);
        }
    }

    #[test]
    fn rechecks_when_the_network_changes() {
        let pub_ip = a("198.18.0.1:0").ip();
        let mut l = lab("10.0.0.2:5000", Some(NatConfig::full_cone(pub_ip)), 0.0, 7);
        l.add_server(a(S1), Some(a(S1_ALT)));
        l.detector.set_servers(vec![a(S1)]);
        let r = l.detect("login", 10_000).unwrap();
        let end = r.started_ms + r.duration_ms;
        // The same address again: nothing to do.
        l.detector
            .observe_mapped(Millis(end + 1), a(S1), r.public.unwrap());
        assert_eq!(l.detector.poll_timeout(), None);
        // Seen from another address: re-check, but not before min_recheck_ms.
        l.detector
            .observe_mapped(Millis(end + 1), a(S1), a("203.0.113.5:6000"));
        assert_eq!(l.detector.poll_timeout(), Some(Millis(end + 10_000)));
        let r2 = l.run_until_report(Millis(end + 20_000)).unwrap();
        assert_eq!(r2.reason, "public address changed");
        assert_eq!(r2.started_ms, end + 10_000);
        assert_eq!(r2.mapping, Mapping::EndpointIndependent);
        // A new local address triggers one too.
        let end2 = r2.started_ms + r2.duration_ms;
        l.detector
            .set_local(Millis(end2 + 50_000), Some(a("10.0.0.2:5001")));
        let r3 = l.run_until_report(Millis(end2 + 60_000)).unwrap();
        assert_eq!(r3.reason, "local address changed");
    }

    #[test]
    fn foreign_stun_is_not_claimed() {
        let mut d = NatDetector::new(DetectorConfig::default());
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        d.set_servers(vec![a(S1)]);
        d.start(Millis(T0), "login", &mut rng);
        let req = d.poll_transmit().unwrap();
        // A response to someone else's transaction, and a request.
        let mut s = StunServer::new(crate::nat::StunServerConfig {
            primary: a(S1),
            alt: None,
        });
        s.handle_datagram(
            Millis(T0),
            a(S1),
            a("192.0.2.1:1"),
            &stun::binding_request([9; 12], false, false),
        );
        let other = s.poll_transmit().unwrap();
        assert!(!d.handle_datagram(Millis(T0 + 1), a(S1), &other.bytes));
        assert!(!d.handle_datagram(Millis(T0 + 1), a(S1), &req.bytes));
        assert!(!d.handle_datagram(Millis(T0 + 1), a(S1), b"garbage"));
        // Our own transaction, answered, is claimed.
        s.handle_datagram(Millis(T0), a(S1), a("192.0.2.1:1"), &req.bytes);
        let ours = s.poll_transmit().unwrap();
        assert!(d.handle_datagram(Millis(T0 + 2), a(S1), &ours.bytes));
    }

    #[test]
    fn mapping_classification_table() {
        let s = |x: &str| a(x);
        let m = |x: &str| a(x);
        let eim = [
            (s("1.1.1.1:1"), m("9.9.9.9:5")),
            (s("2.2.2.2:1"), m("9.9.9.9:5")),
            (s("2.2.2.2:2"), m("9.9.9.9:5")),
        ];
        assert_eq!(classify_mapping(&eim).0, Mapping::EndpointIndependent);
        let adm = [
            (s("1.1.1.1:1"), m("9.9.9.9:5")),
            (s("2.2.2.2:1"), m("9.9.9.9:6")),
            (s("2.2.2.2:2"), m("9.9.9.9:6")),
        ];
        assert_eq!(classify_mapping(&adm).0, Mapping::AddressDependent);
        let apdm = [
            (s("1.1.1.1:1"), m("9.9.9.9:5")),
            (s("2.2.2.2:1"), m("9.9.9.9:6")),
            (s("2.2.2.2:2"), m("9.9.9.9:7")),
        ];
        assert_eq!(classify_mapping(&apdm).0, Mapping::AddressPortDependent);
        let dep = [
            (s("1.1.1.1:1"), m("9.9.9.9:5")),
            (s("2.2.2.2:1"), m("9.9.9.9:6")),
        ];
        assert_eq!(classify_mapping(&dep).0, Mapping::Dependent);
        let one_ip = [
            (s("1.1.1.1:1"), m("9.9.9.9:5")),
            (s("1.1.1.1:2"), m("9.9.9.9:5")),
        ];
        assert_eq!(classify_mapping(&one_ip).0, Mapping::Unknown);
        assert_eq!(classify_mapping(&eim[..1]).0, Mapping::Unknown);
        assert_eq!(classify_mapping(&[]).0, Mapping::Unknown);
    }
}
