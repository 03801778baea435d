//! Endpoints on the simulated network ([`crate::sim::net`]) under virtual
//! time, with seeded loss, duplication, reordering and drop rules.

use super::packet::{KIND_DATA, KIND_FIN, KIND_INIT, KIND_RESP, Packet};
use super::*;
use crate::identity::{AuthorityKey, Role, Username};
use crate::sim::net::{Delivered, DropRule, LinkModel, Network, RuleId};
use crate::time::{Millis, UnixMillis, UnixSecs};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// 2027-01-15, inside every test certificate's validity.
const T0: Millis = Millis(1_800_000_000_000);

/// The wall clock at virtual time `t`: these tests' wall clock and virtual
/// time both start at [`T0`] and run together.
fn wall(t: Millis) -> UnixSecs {
    UnixMillis(t.get()).secs()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

fn cert_for(
    a: &AuthorityKey,
    d: &DeviceIdentity,
    name: &str,
    not_before: u64,
    not_after: u64,
) -> Certificate {
    Certificate::issue(
        a,
        1,
        Role::User,
        not_before,
        not_after,
        &Username::parse(name).unwrap(),
        d.ed25519_public(),
        d.x25519_public(),
    )
}

struct Pki {
    authority: AuthorityKey,
    rng: StdRng,
}

impl Pki {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        Pki {
            authority: AuthorityKey::generate(&mut rng),
            rng,
        }
    }

    fn device(&mut self) -> DeviceIdentity {
        DeviceIdentity::generate(&mut self.rng)
    }

    fn endpoint(&mut self, name: &str, config: LinkConfig) -> LinkEndpoint {
        let d = self.device();
        let c = cert_for(&self.authority, &d, name, 0, wall(T0).get() + 86_400);
        LinkEndpoint::new(d, c, self.authority.public(), config).unwrap()
    }
}

use crate::identity::DeviceIdentity;

/// One endpoint per address, owner `i` for node `i`; datagrams move
/// between them at `now` (the network's links have no delay).
struct Net {
    nodes: Vec<(SocketAddr, LinkEndpoint, Vec<LinkEvent>)>,
    now: Millis,
    /// Seeds for the endpoints' randomness.
    rng: StdRng,
    net: Network,
    /// The kind filter of [`Net::block`].
    blocked: Option<RuleId>,
}

impl Net {
    fn new(seed: u64, nodes: Vec<(SocketAddr, LinkEndpoint)>) -> Self {
        let mut net = Network::new(seed, T0, LinkModel::instant());
        net.start_capture();
        for (i, (a, _)) in nodes.iter().enumerate() {
            net.bind(*a, i);
        }
        Net {
            nodes: nodes.into_iter().map(|(a, e)| (a, e, Vec::new())).collect(),
            now: T0,
            rng: StdRng::seed_from_u64(seed),
            net,
            blocked: None,
        }
    }

    /// Lose, duplicate and (within a burst) reorder datagrams.
    fn impair(&mut self, loss: f64, duplicate: f64, reorder: bool) {
        self.net.set_link(LinkModel {
            loss,
            duplicate,
            reorder,
            ..LinkModel::instant()
        });
    }

    fn lossy(&self) -> bool {
        self.net.link().loss > 0.0
    }

    /// Drop every datagram whose kind is in `kinds` (none: stop dropping).
    fn block(&mut self, kinds: &[u8]) {
        if let Some(r) = self.blocked.take() {
            self.net.remove_rule(r);
        }
        if !kinds.is_empty() {
            self.blocked = Some(self.net.add_rule(DropRule::ByteIn {
                offset: 3,
                values: kinds.to_vec(),
            }));
        }
    }

    /// Cut the network: nothing passes any more.
    fn cut(&mut self) {
        self.net.add_rule(DropRule::All);
    }

    /// Everything delivered so far.
    fn delivered(&self) -> &[Delivered] {
        self.net.captured()
    }

    /// Node `i` now sends from and listens on `a` (its NAT rebound).
    fn rebind(&mut self, i: usize, a: SocketAddr) {
        self.net.unbind(self.nodes[i].0);
        self.net.bind(a, i);
        self.nodes[i].0 = a;
    }

    fn pair(seed: u64, config: LinkConfig) -> Self {
        let mut pki = Pki::new(seed);
        let a = pki.endpoint("alice", config.clone());
        let b = pki.endpoint("bob", config);
        Net::new(seed, vec![(addr(1), a), (addr(2), b)])
    }

    fn ep(&mut self, i: usize) -> &mut LinkEndpoint {
        &mut self.nodes[i].1
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].0
    }

    fn connect(&mut self, from: usize, to: usize) {
        let (now, dst) = (self.now, self.addr(to));
        let mut rng = StdRng::seed_from_u64(self.rng.r#gen());
        self.ep(from).connect(now, dst, &mut rng).unwrap();
    }

    fn send(&mut self, from: usize, to: usize, msg: &[u8]) -> Result<(), LinkError> {
        let (now, dst) = (self.now, self.addr(to));
        let mut rng = StdRng::seed_from_u64(self.rng.r#gen());
        self.ep(from).send(now, dst, msg, &mut rng)
    }

    /// Collect every node's output, pass it through the lossy network and
    /// deliver it; repeat until quiet. Returns datagrams moved.
    fn pump(&mut self) -> usize {
        let mut moved = 0;
        self.net.advance_to(self.now);
        for _ in 0..1000 {
            let mut sent = false;
            for (i, (src, ep, events)) in self.nodes.iter_mut().enumerate() {
                while let Some(t) = ep.poll_transmit() {
                    sent = true;
                    self.net
                        .send_as(Some(i), Default::default(), *src, t.dst, t.bytes);
                }
                while let Some(e) = ep.poll_event() {
                    events.push(e);
                }
            }
            if !sent {
                return moved;
            }
            while let Some(d) = self.net.poll_delivery() {
                moved += 1;
                let now = self.now;
                let mut rng = StdRng::seed_from_u64(self.rng.r#gen());
                let ep = &mut self.nodes[d.to_owner].1;
                ep.handle_datagram(now, wall(now), d.from, &d.bytes, &mut rng);
            }
        }
        panic!("network never went quiet");
    }

    /// Jump to the earliest deadline (at most `limit`) and run timers.
    fn tick(&mut self, limit: Millis) {
        let next = self
            .nodes
            .iter()
            .filter_map(|n| n.1.poll_timeout())
            .min()
            .unwrap_or(limit)
            .min(limit)
            .max(self.now);
        self.now = next;
        for i in 0..self.nodes.len() {
            let now = self.now;
            let mut rng = StdRng::seed_from_u64(self.rng.r#gen());
            self.ep(i).handle_timeout(now, wall(now), &mut rng);
        }
        self.pump();
    }

    /// Pump and run timers until `until` (virtual ms since T0).
    fn run_until(&mut self, until: u64) {
        self.pump();
        while self.now < T0 + until {
            self.tick(T0 + until);
        }
    }

    fn events(&mut self, i: usize) -> Vec<LinkEvent> {
        std::mem::take(&mut self.nodes[i].2)
    }

    fn established(&self, i: usize) -> usize {
        self.nodes[i]
            .2
            .iter()
            .filter(|e| matches!(e, LinkEvent::Established { .. }))
            .count()
    }

    fn messages(&self, i: usize) -> Vec<Vec<u8>> {
        self.nodes[i]
            .2
            .iter()
            .filter_map(|e| match e {
                LinkEvent::Message { payload, .. } => Some(payload.clone()),
                _ => None,
            })
            .collect()
    }

    fn closed(&self, i: usize) -> Vec<CloseReason> {
        self.nodes[i]
            .2
            .iter()
            .filter_map(|e| match e {
                LinkEvent::Closed { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    fn last(&self, from: usize, kind: u8) -> Vec<u8> {
        let src = self.addr(from);
        self.delivered()
            .iter()
            .rev()
            .find(|d| d.from == src && d.bytes.get(3) == Some(&kind))
            .map(|d| d.bytes.clone())
            .expect("no such datagram")
    }

    /// Deliver raw bytes to node `to` as if from `from`.
    fn inject(&mut self, from: SocketAddr, to: usize, bytes: &[u8]) {
        let now = self.now;
        let mut rng = StdRng::seed_from_u64(self.rng.r#gen());
        self.ep(to)
            .handle_datagram(now, wall(now), from, bytes, &mut rng);
        self.pump();
    }
}

/// For lossy runs: enough attempts that a handshake failing at 30% loss
/// is a 1-in-50000 event (0.51^16), and idle far above a run of lost
/// keepalives.
fn lossy() -> LinkConfig {
    LinkConfig {
        handshake_attempts: 16,
        idle_timeout_ms: 20_000,
        ..fast()
    }
}

fn fast() -> LinkConfig {
    LinkConfig {
        handshake_retry_ms: 100,
        handshake_attempts: 5,
        keepalive_ms: 1_000,
        idle_timeout_ms: 4_000,
        ..LinkConfig::default()
    }
}

/// The two nodes share one session: each one's local index is the other's
/// peer index, and nothing else is held.
fn assert_one_session(net: &Net) {
    let (a, b) = (&net.nodes[0].1, &net.nodes[1].1);
    let (la, pa) = a
        .session_indexes(net.addr(1))
        .expect("alice has no session");
    let (lb, pb) = b.session_indexes(net.addr(0)).expect("bob has no session");
    assert_eq!((la, pa), (pb, lb), "the two sides hold different sessions");
    assert_eq!(a.counts(), (1, 0, 1));
    assert_eq!(b.counts(), (1, 0, 1));
}

#[test]
fn handshake_then_messages_both_ways() {
    let mut net = Net::pair(1, fast());
    // Sent before any session: queued behind the handshake it starts.
    net.send(0, 1, b"hello bob").unwrap();
    net.pump();
    assert_eq!(net.established(0), 1);
    assert_eq!(net.established(1), 1);
    assert_eq!(net.messages(1), vec![b"hello bob".to_vec()]);
    let b_events = net.events(1);
    let LinkEvent::Message {
        addr: from, peer, ..
    } = &b_events[1]
    else {
        panic!("expected the message after Established: {b_events:?}")
    };
    assert_eq!((*from, peer.username.as_str()), (net.addr(0), "alice"));
    assert_eq!(net.ep(0).peer(addr(2)).unwrap().username, "bob");
    assert_eq!(net.ep(1).peer(addr(1)).unwrap().username, "alice");

    net.send(1, 0, b"hi alice").unwrap();
    net.send(0, 1, b"again").unwrap();
    net.pump();
    assert_eq!(net.messages(0), vec![b"hi alice".to_vec()]);
    assert_eq!(net.messages(1), vec![b"again".to_vec()]);
    assert_one_session(&net);
    let s = net.ep(0).stats().clone();
    assert_eq!((s.handshakes_initiated, s.handshakes_completed), (1, 1));
    assert_eq!(
        (s.malformed, s.unknown_session, s.decrypt_failed),
        (0, 0, 0)
    );
    // connect on an established session changes nothing.
    net.events(0);
    net.events(1);
    net.connect(0, 1);
    net.connect(1, 0);
    net.pump();
    assert_one_session(&net);
    assert_eq!(net.established(0) + net.established(1), 0);
}

#[test]
fn handshake_survives_loss_duplication_and_reordering() {
    let config = lossy();
    for seed in 0..25 {
        let mut net = Net::pair(100 + seed, config.clone());
        net.impair(0.3, 0.2, true);
        net.send(0, 1, b"first").unwrap();
        net.run_until(60_000);
        assert_eq!(net.established(0), 1, "seed {seed}: alice not established");
        assert_eq!(net.established(1), 1, "seed {seed}: bob not established");
        assert!(
            net.closed(0).is_empty() && net.closed(1).is_empty(),
            "seed {seed}"
        );
        assert_one_session(&net);
        // Messages are delivered at most once despite duplication, and
        // most of them arrive.
        for i in 0..100u32 {
            net.send(0, 1, &i.to_be_bytes()).unwrap();
            net.send(1, 0, &i.to_be_bytes()).unwrap();
        }
        net.pump();
        for node in [0, 1] {
            let mut got = net.messages(node);
            got.retain(|m| m.len() == 4);
            let n = got.len();
            got.sort();
            got.dedup();
            assert_eq!(got.len(), n, "seed {seed}: a duplicate was delivered");
            assert!(n > 50, "seed {seed}: only {n} of 100 delivered");
        }
        let replays = net.ep(0).stats().replayed + net.ep(1).stats().replayed;
        assert!(replays > 0, "seed {seed}: duplicates were not counted");
    }
}

#[test]
fn duplicate_init_gets_the_cached_resp() {
    let mut net = Net::pair(2, fast());
    net.block(&[KIND_RESP]);
    net.connect(0, 1);
    net.pump();
    net.tick(Millis::MAX);
    net.tick(Millis::MAX);
    // Bob saw three INITs (two retransmissions) and made one handshake.
    let inits = net
        .delivered()
        .iter()
        .filter(|d| d.bytes[3] == KIND_INIT)
        .count();
    assert_eq!(inits, 3);
    assert_eq!(net.ep(1).counts(), (0, 1, 1));
    assert_eq!(net.ep(1).stats().duplicate_handshakes, 2);
    assert_eq!(net.ep(1).stats().datagrams_out, 3);
    net.block(&[]);
    net.tick(Millis::MAX);
    assert_one_session(&net);
    assert_eq!(net.ep(0).stats().handshakes_initiated, 1);
}

#[test]
fn lost_fin_heals_by_fin_ahead_of_data() {
    let mut net = Net::pair(3, fast());
    net.block(&[KIND_FIN]);
    net.connect(0, 1);
    net.pump();
    // Alice has keys but is unconfirmed; Bob is still half-open.
    assert_eq!(net.ep(0).counts(), (1, 0, 1));
    assert_eq!(net.ep(1).counts(), (0, 1, 1));
    assert!(net.ep(0).peer(addr(2)).is_none());
    assert_eq!(net.established(0), 0);
    net.send(0, 1, b"lost: no session yet").unwrap();
    net.pump();
    assert_eq!(net.ep(1).stats().unknown_session, 1);
    net.block(&[]);
    // The next DATA carries the FIN ahead of it.
    net.send(0, 1, b"carried by fin").unwrap();
    net.pump();
    assert_eq!(net.messages(1), vec![b"carried by fin".to_vec()]);
    assert_eq!((net.established(0), net.established(1)), (1, 1));
    assert_one_session(&net);
    // Confirmed: no more FINs, even for new messages.
    let fins = net
        .delivered()
        .iter()
        .filter(|d| d.bytes[3] == KIND_FIN)
        .count();
    net.send(0, 1, b"plain").unwrap();
    net.pump();
    assert_eq!(
        net.delivered()
            .iter()
            .filter(|d| d.bytes[3] == KIND_FIN)
            .count(),
        fins
    );
}

#[test]
fn lost_fin_heals_on_the_retransmit_timer_too() {
    let mut net = Net::pair(4, fast());
    net.block(&[KIND_FIN]);
    net.connect(0, 1);
    net.pump();
    net.tick(Millis::MAX);
    net.block(&[]);
    net.tick(Millis::MAX);
    assert_eq!((net.established(0), net.established(1)), (1, 1));
    assert_one_session(&net);
}

#[test]
fn unanswered_handshake_times_out_and_drops_its_queue() {
    let config = LinkConfig {
        max_queued_per_peer: 3,
        ..fast()
    };
    let mut net = Net::pair(5, config.clone());
    net.cut();
    for i in 0..3u8 {
        net.send(0, 1, &[i]).unwrap();
    }
    assert_eq!(
        net.send(0, 1, b"one too many"),
        Err(LinkError::QueueFull {
            addr: addr(2),
            limit: 3
        })
    );
    net.run_until(config.handshake_timeout_ms() - 1);
    assert!(net.closed(0).is_empty());
    assert_eq!(net.ep(0).stats().datagrams_out, 5, "five INITs");
    net.run_until(config.handshake_timeout_ms());
    assert_eq!(net.closed(0), vec![CloseReason::Timeout]);
    let s = net.ep(0).stats();
    assert_eq!(
        (s.queue_full, s.queue_dropped, s.handshake_timeouts),
        (1, 3, 1)
    );
    assert_eq!(net.ep(0).counts(), (0, 0, 0));
    assert_eq!(net.ep(0).poll_timeout(), None);
    // The unanswered half-open on bob's side (never reached) is nothing.
    assert_eq!(net.ep(1).counts(), (0, 0, 0));
}

#[test]
fn simultaneous_open_ends_with_one_session() {
    for seed in 0..30 {
        let mut net = Net::pair(200 + seed, lossy());
        if seed >= 10 {
            net.impair(0.3, 0.0, true);
        }
        net.send(0, 1, b"from alice").unwrap();
        net.send(1, 0, b"from bob").unwrap();
        net.run_until(60_000);
        assert_eq!(net.established(0), 1, "seed {seed}");
        assert_eq!(net.established(1), 1, "seed {seed}");
        assert_one_session(&net);
        let sim = net.ep(0).stats().simultaneous_open + net.ep(1).stats().simultaneous_open;
        assert!(sim > 0 || seed >= 10, "seed {seed}: INITs did not cross");
        if !net.lossy() {
            assert_eq!(net.messages(0), vec![b"from bob".to_vec()]);
            assert_eq!(net.messages(1), vec![b"from alice".to_vec()]);
        }
        assert!(net.closed(0).is_empty() && net.closed(1).is_empty());
    }
}

#[test]
fn crossing_inits_resolve_by_ephemeral_key() {
    // Deliver both INITs before anything else: each side sees the other's.
    let mut net = Net::pair(6, fast());
    net.connect(0, 1);
    net.connect(1, 0);
    let ta = net.ep(0).poll_transmit().unwrap();
    let tb = net.ep(1).poll_transmit().unwrap();
    let e = |b: &[u8]| match Packet::decode(b).unwrap() {
        Packet::Init { ephemeral, .. } => ephemeral,
        p => panic!("not an INIT: {p:?}"),
    };
    let alice_wins = e(&ta.bytes) > e(&tb.bytes);
    let mut rng = StdRng::seed_from_u64(6);
    net.ep(1)
        .handle_datagram(T0, wall(T0), addr(1), &ta.bytes, &mut rng);
    net.ep(0)
        .handle_datagram(T0, wall(T0), addr(2), &tb.bytes, &mut rng);
    net.pump();
    assert_one_session(&net);
    let (la, _) = net.ep(0).session_indexes(addr(2)).unwrap();
    let alice_init = match Packet::decode(&ta.bytes).unwrap() {
        Packet::Init { sender, .. } => sender,
        _ => unreachable!(),
    };
    assert_eq!(
        la == alice_init,
        alice_wins,
        "the larger INIT's session won"
    );
}

#[test]
fn yielded_side_retries_when_the_winning_handshake_dies() {
    let mut net = Net::pair(21, fast());
    net.send(0, 1, b"from alice").unwrap();
    net.send(1, 0, b"from bob").unwrap();
    let ta = net.ep(0).poll_transmit().unwrap();
    let tb = net.ep(1).poll_transmit().unwrap();
    let alice_wins = ta.bytes[8..40] > tb.bytes[8..40];
    let (winner, loser) = if alice_wins { (0, 1) } else { (1, 0) };
    let mut rng = StdRng::seed_from_u64(21);
    net.ep(1)
        .handle_datagram(T0, wall(T0), addr(1), &ta.bytes, &mut rng);
    net.ep(0)
        .handle_datagram(T0, wall(T0), addr(2), &tb.bytes, &mut rng);
    // Every answer to the winner's INIT is lost: it gives up.
    net.block(&[KIND_RESP]);
    while net.closed(winner).is_empty() {
        net.tick(Millis::MAX);
    }
    assert_eq!(net.closed(winner), vec![CloseReason::Timeout]);
    assert!(net.closed(loser).is_empty());
    // The loser's answered handshake expires; it still wants a session,
    // so it tries its own again, and the network has healed.
    net.block(&[]);
    net.run_until(20_000);
    assert_one_session(&net);
    assert_eq!(net.ep(loser).stats().handshakes_initiated, 2);
    assert_eq!(net.ep(loser).stats().half_open_expired, 1);
    let sent_by = |i: usize| -> &[u8] { if i == 0 { b"from alice" } else { b"from bob" } };
    assert_eq!(net.messages(winner), vec![sent_by(loser).to_vec()]);
    assert!(
        net.messages(loser).is_empty(),
        "the winner's message went with its timeout"
    );
}

#[test]
fn keepalives_hold_an_idle_session_and_silence_closes_it() {
    let config = fast();
    let mut net = Net::pair(7, config.clone());
    net.connect(0, 1);
    net.pump();
    net.run_until(20_000);
    assert!(net.closed(0).is_empty() && net.closed(1).is_empty());
    let ka = net.ep(0).stats().keepalives_out;
    assert!(
        (15..=22).contains(&ka),
        "about one keepalive a second, got {ka}"
    );
    assert_eq!(net.messages(0).len() + net.messages(1).len(), 0);
    // Traffic postpones keepalives: a message every 500 ms.
    let before = net.ep(0).stats().keepalives_out;
    for _ in 0..10 {
        net.send(0, 1, b"busy").unwrap();
        net.run_until(net.now - T0 + 500);
    }
    assert_eq!(net.ep(0).stats().keepalives_out, before);
    // Cut the wire: both sides close as idle after idle_timeout_ms.
    net.cut();
    let cut_at = net.now;
    while net.closed(0).is_empty() || net.closed(1).is_empty() {
        net.tick(Millis::MAX);
    }
    assert_eq!(net.closed(0), vec![CloseReason::Idle]);
    assert_eq!(net.closed(1), vec![CloseReason::Idle]);
    let waited = net.now - cut_at;
    assert!(
        waited <= config.idle_timeout_ms && waited + config.keepalive_ms >= config.idle_timeout_ms,
        "closed after {waited} ms"
    );
    assert_eq!(net.ep(0).counts(), (0, 0, 0));
    assert!(net.ep(0).peer(addr(2)).is_none());
}

#[test]
fn replayed_and_tampered_data_are_counted_drops() {
    let mut net = Net::pair(8, fast());
    net.send(0, 1, b"original").unwrap();
    net.pump();
    let data = net.last(0, KIND_DATA);
    net.inject(addr(1), 1, &data);
    assert_eq!(net.ep(1).stats().replayed, 1);
    assert_eq!(net.messages(1), vec![b"original".to_vec()]);

    // A counter too far behind is refused before decryption.
    for i in 0..(REPLAY_WINDOW + 2) {
        net.send(0, 1, &i.to_be_bytes()).unwrap();
    }
    net.pump();
    net.inject(addr(1), 1, &data);
    assert_eq!(net.ep(1).stats().replayed, 2);
    assert_eq!(net.ep(1).stats().decrypt_failed, 0);

    net.send(0, 1, b"to tamper").unwrap();
    let fresh = net.ep(0).poll_transmit().unwrap().bytes;
    let mut flipped_body = fresh.clone();
    *flipped_body.last_mut().unwrap() ^= 1;
    let mut flipped_counter = fresh.clone();
    // The counter's top byte: a fresh counter, so it reaches decryption.
    flipped_counter[4 + 4] ^= 1;
    let mut flipped_index = fresh.clone();
    flipped_index[4] ^= 1;
    let before = net.messages(1).len();
    net.inject(addr(1), 1, &flipped_body);
    net.inject(addr(1), 1, &flipped_counter);
    net.inject(addr(1), 1, &flipped_index);
    let s = net.ep(1).stats().clone();
    assert_eq!((s.decrypt_failed, s.unknown_session), (2, 1));
    assert_eq!(net.messages(1).len(), before);
    // The genuine one still gets through: tampering did not burn its counter.
    net.inject(addr(1), 1, &fresh);
    assert_eq!(net.messages(1).last().unwrap(), b"to tamper");
}

#[test]
fn garbage_is_counted_never_fatal() {
    let mut net = Net::pair(9, fast());
    net.send(0, 1, b"x").unwrap();
    net.pump();
    let mut rng = StdRng::seed_from_u64(9);
    for n in 0..500 {
        let len = rng.gen_range(0..400);
        let mut junk: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
        if n % 2 == 0 && len >= 4 {
            // Valid frame header, link kind, random body.
            let body_len = (len - 2) as u16;
            junk[..2].copy_from_slice(&body_len.to_be_bytes());
            junk[2] = 1;
            junk[3] = 16 + (n % 4) as u8;
        }
        net.inject(addr(9), 1, &junk);
        net.inject(addr(2), 0, &junk);
    }
    let s = net.ep(1).stats();
    assert!(s.malformed + s.unknown_session + s.handshake_failed > 0);
    // The session is untouched.
    net.send(0, 1, b"still here").unwrap();
    net.pump();
    assert_eq!(net.messages(1).last().unwrap(), b"still here");
}

#[test]
fn bad_certificates_are_rejected_and_counted() {
    let mut pki = Pki::new(10);
    let other = AuthorityKey::generate(&mut pki.rng);
    let pin = pki.authority.public();
    let alice = pki.endpoint("alice", fast());
    let exp = wall(T0).get() + 86_400;
    // Mallory: a certificate from another authority.
    let md = pki.device();
    let mallory = LinkEndpoint::new(
        md.clone(),
        cert_for(&other, &md, "mallory", 0, exp),
        pin,
        fast(),
    )
    .unwrap();
    // Old: a certificate that expired an hour ago.
    let od = pki.device();
    let old = LinkEndpoint::new(
        od.clone(),
        cert_for(&pki.authority, &od, "old", 0, wall(T0).get() - 3600),
        pin,
        fast(),
    )
    .unwrap();
    // Eve: bob's genuine certificate, her own device key. The constructor
    // refuses that, so she builds the endpoint with her own certificate
    // and swaps the bytes on the wire.
    let ed = pki.device();
    let bob_dev = pki.device();
    let bob_cert = cert_for(&pki.authority, &bob_dev, "bob", 0, exp);
    assert_eq!(
        LinkEndpoint::new(ed.clone(), bob_cert.clone(), pin, fast()).unwrap_err(),
        LinkError::NotOurCertificate
    );
    let mut eve = LinkEndpoint::new(
        ed.clone(),
        cert_for(&pki.authority, &ed, "eve", 0, exp),
        pin,
        fast(),
    )
    .unwrap();
    eve.force_certificate(bob_cert);

    let mut net = Net::new(
        10,
        vec![
            (addr(1), alice),
            (addr(2), mallory),
            (addr(3), old),
            (addr(4), eve),
        ],
    );
    // Each bad party initiates to alice; alice refuses its FIN.
    for i in 1..4 {
        net.send(i, 0, b"let me in").unwrap();
    }
    net.run_until(fast().handshake_timeout_ms() + 1);
    let s = net.ep(0).stats().clone();
    assert_eq!(s.cert_rejected_unknown_issuer, 1);
    assert_eq!(s.cert_rejected_expired, 1);
    assert_eq!(s.cert_rejected_key_mismatch, 1);
    assert_eq!(net.established(0), 0);
    assert!(net.messages(0).is_empty());
    assert_eq!(net.ep(0).counts(), (0, 0, 0));
    for i in 1..4 {
        // They verified alice but never got her ack: a timeout, not a session.
        assert_eq!(net.established(i), 0);
        assert_eq!(net.closed(i), vec![CloseReason::Timeout], "node {i}");
        assert_eq!(net.ep(i).counts(), (0, 0, 0));
    }

    // Alice initiates to them: she refuses their RESP and says why.
    net.events(0);
    for i in 1..4 {
        net.connect(0, i);
    }
    net.pump();
    let mut reasons = net.closed(0);
    reasons.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        reasons,
        vec![
            CloseReason::CertificateRejected(CertRejection::Expired),
            CloseReason::CertificateRejected(CertRejection::KeyMismatch),
            CloseReason::CertificateRejected(CertRejection::UnknownIssuer),
        ]
    );
    let s = net.ep(0).stats();
    assert_eq!(s.cert_rejected(), 6);
    assert_eq!(net.ep(0).counts(), (0, 0, 0));
}

#[test]
fn renewed_certificate_is_ours_and_checked_by_peers() {
    let mut pki = Pki::new(11);
    let mut alice = pki.endpoint("alice", fast());
    let other = pki.device();
    let foreign = cert_for(&pki.authority, &other, "other", 0, u64::MAX);
    assert_eq!(
        alice.set_certificate(foreign),
        Err(LinkError::NotOurCertificate)
    );
    let mine = alice.certificate().clone();
    let renewed = Certificate {
        serial: 2,
        ..mine.clone()
    };
    // Not re-signed, but ours: the endpoint only checks ownership, the
    // peer checks the signature.
    alice.set_certificate(renewed).unwrap();
    let bob = pki.endpoint("bob", fast());
    let mut net = Net::new(11, vec![(addr(1), alice), (addr(2), bob)]);
    net.connect(0, 1);
    net.run_until(5_000);
    assert_eq!(net.ep(1).stats().cert_rejected_bad_signature, 1);
    assert_eq!(net.established(1), 0);
    net.ep(0).set_certificate(mine).unwrap();
    net.connect(0, 1);
    net.pump();
    assert_eq!((net.established(0), net.established(1)), (1, 1));
}

#[test]
fn session_ends_when_the_peer_certificate_expires() {
    let mut pki = Pki::new(12);
    let alice = pki.endpoint("alice", fast());
    let bd = pki.device();
    let expires = wall(T0).get() + 10;
    let bob = LinkEndpoint::new(
        bd.clone(),
        cert_for(&pki.authority, &bd, "bob", 0, expires),
        pki.authority.public(),
        fast(),
    )
    .unwrap();
    let mut net = Net::new(12, vec![(addr(1), alice), (addr(2), bob)]);
    net.connect(0, 1);
    net.run_until(9_999);
    assert!(net.closed(0).is_empty());
    net.run_until(10_000);
    assert_eq!(net.closed(0), vec![CloseReason::PeerCertificateExpired]);
}

#[test]
fn roaming_moves_the_session_to_the_new_address() {
    let mut net = Net::pair(13, fast());
    net.send(0, 1, b"before").unwrap();
    net.pump();
    net.events(1);
    // Alice's NAT rebinds: her datagrams now come from port 7.
    net.send(0, 1, b"after").unwrap();
    let t = net.ep(0).poll_transmit().unwrap();
    net.rebind(0, addr(7));
    net.inject(addr(7), 1, &t.bytes);
    let ev = net.events(1);
    assert_eq!(
        ev[0],
        LinkEvent::Roamed {
            from: addr(1),
            to: addr(7),
            peer: PeerId::of(net.ep(0).certificate())
        }
    );
    assert!(
        matches!(&ev[1], LinkEvent::Message { addr: to, payload, .. } if *to == addr(7) && payload == b"after")
    );
    assert!(net.ep(1).peer(addr(1)).is_none());
    assert_eq!(net.ep(1).peer(addr(7)).unwrap().username, "alice");
    // Bob's replies follow her.
    net.send(1, 0, b"reply").unwrap();
    assert_eq!(net.ep(1).poll_transmit().unwrap().dst, addr(7));
    assert_eq!(net.ep(1).stats().roamed, 1);
    // A replayed old datagram from the old address moves nothing back.
    let old = net
        .delivered()
        .iter()
        .find(|d| d.from == addr(1) && d.bytes[3] == KIND_DATA)
        .unwrap()
        .bytes
        .clone();
    net.inject(addr(1), 1, &old);
    assert_eq!(net.ep(1).stats().roamed, 1);
    assert_eq!(net.ep(1).stats().replayed, 1);
}

#[test]
fn limits_on_sessions_and_handshakes() {
    let mut pki = Pki::new(14);
    let config = LinkConfig {
        max_sessions: 1,
        max_handshakes: 1,
        ..fast()
    };
    let hub = pki.endpoint("hub", config);
    let mut nodes = vec![(addr(1), hub)];
    for i in 2..6 {
        nodes.push((addr(i), pki.endpoint(&format!("node{i}"), fast())));
    }
    let mut net = Net::new(14, nodes);
    net.ep(0).set_busy_hint(vec![addr(7), addr(8)]);
    net.connect(1, 0);
    net.pump();
    assert_eq!(net.established(0), 1);
    // A second peer: the hub is full and says so at once (BUSY, naming
    // others), with no state kept; the peer gives up without waiting for
    // its handshake to time out.
    let asked = net.now;
    net.connect(2, 0);
    net.pump();
    assert_eq!(net.ep(0).stats().too_many_sessions, 1);
    assert_eq!(net.ep(0).stats().busy_sent, 1);
    assert_eq!(net.established(0), 1);
    assert_eq!(net.ep(0).counts(), (1, 0, 1));
    assert_eq!(net.now, asked, "refused before any timer ran");
    let ev = net.events(2);
    assert!(
        ev.iter()
            .any(|e| matches!(e, LinkEvent::Busy { addr: a, others }
            if *a == addr(1) && *others == vec![addr(7), addr(8)])),
        "{ev:?}"
    );
    assert!(
        ev.iter().any(|e| matches!(
            e,
            LinkEvent::Closed {
                reason: CloseReason::TooManySessions,
                ..
            }
        )),
        "{ev:?}"
    );
    assert_eq!(net.ep(2).stats().busy_received, 1);
    assert_eq!(net.ep(2).counts(), (0, 0, 0));
    // Outgoing: refused with an error.
    let now = net.now;
    let mut rng = StdRng::seed_from_u64(1);
    assert_eq!(
        net.ep(0).connect(now, addr(9), &mut rng),
        Err(LinkError::TooManySessions { limit: 1 })
    );
    assert_eq!(
        net.ep(0).send(now, addr(9), b"x", &mut rng),
        Err(LinkError::TooManySessions { limit: 1 })
    );
}

#[test]
fn a_stalled_handshake_fills_the_handshake_limit() {
    let mut pki = Pki::new(15);
    let config = LinkConfig {
        max_handshakes: 1,
        ..fast()
    };
    let hub = pki.endpoint("hub", config);
    let mut nodes = vec![(addr(1), hub)];
    for i in 2..5 {
        nodes.push((addr(i), pki.endpoint(&format!("node{i}"), fast())));
    }
    let mut net = Net::new(15, nodes);
    // One stalled handshake (its FIN never comes) fills the handshake
    // limit: the next INIT is refused.
    net.block(&[KIND_FIN]);
    net.connect(1, 0);
    net.pump();
    assert_eq!(net.ep(0).counts(), (0, 1, 1));
    net.connect(2, 0);
    net.pump();
    assert_eq!(net.ep(0).stats().too_many_handshakes, 1);
    assert_eq!(net.ep(0).counts(), (0, 1, 1));
}

#[test]
fn pending_outputs_are_bounded() {
    let config = LinkConfig {
        max_pending_transmits: 10,
        ..fast()
    };
    let mut net = Net::pair(15, config);
    net.connect(0, 1);
    net.pump();
    let now = net.now;
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..50 {
        net.ep(0).send(now, addr(2), b"x", &mut rng).unwrap();
    }
    assert_eq!(net.ep(0).stats().transmits_dropped, 40);
    assert_eq!(std::iter::from_fn(|| net.ep(0).poll_transmit()).count(), 10);
}

#[test]
fn restarted_peer_replaces_the_old_session() {
    let mut pki = Pki::new(16);
    let alice = pki.endpoint("alice", fast());
    let bd = pki.device();
    let bc = cert_for(&pki.authority, &bd, "bob", 0, wall(T0).get() + 86_400);
    let pin = pki.authority.public();
    let bob = LinkEndpoint::new(bd.clone(), bc.clone(), pin, fast()).unwrap();
    let mut net = Net::new(16, vec![(addr(1), alice), (addr(2), bob)]);
    net.connect(0, 1);
    net.pump();
    let old = net.ep(0).session_indexes(addr(2)).unwrap();
    // Bob restarts: same identity, no state.
    net.nodes[1].1 = LinkEndpoint::new(bd, bc, pin, fast()).unwrap();
    net.send(1, 0, b"i'm back").unwrap();
    net.pump();
    assert_eq!(net.messages(0), vec![b"i'm back".to_vec()]);
    assert_one_session(&net);
    assert_ne!(net.ep(0).session_indexes(addr(2)).unwrap(), old);
    assert_eq!(net.ep(0).stats().sessions_replaced, 1);
    // Same peer: no Closed, a second Established.
    assert!(net.closed(0).is_empty());
    assert_eq!(net.established(0), 2);
}

#[test]
fn local_close_and_limits_on_input() {
    let mut net = Net::pair(17, fast());
    net.connect(0, 1);
    net.pump();
    net.ep(0).close(T0, addr(2));
    net.pump();
    assert_eq!(net.closed(0), vec![CloseReason::Local]);
    assert_eq!(net.ep(0).counts(), (0, 0, 0));
    assert_eq!(
        net.send(0, 1, &vec![0; MAX_PAYLOAD + 1]),
        Err(LinkError::TooLarge {
            len: MAX_PAYLOAD + 1,
            max: MAX_PAYLOAD
        })
    );
    assert_eq!(net.send(0, 1, b""), Err(LinkError::Empty));
    // Bob's DATA to alice's closed session is an unknown session.
    net.send(1, 0, b"anyone?").unwrap();
    net.pump();
    assert_eq!(net.ep(0).stats().unknown_session, 1);
    // The largest message goes through in one datagram.
    net.send(0, 1, &vec![7; MAX_PAYLOAD]).unwrap();
    net.pump();
    assert_eq!(net.messages(1).last().unwrap().len(), MAX_PAYLOAD);
}

#[test]
fn init_padding_covers_the_largest_resp() {
    let mut pki = Pki::new(18);
    let long = "a".repeat(32);
    let mut a = pki.endpoint(&long, fast());
    let mut rng = StdRng::seed_from_u64(1);
    let mut b = pki.endpoint("bob", fast());
    b.connect(T0, addr(1), &mut rng).unwrap();
    let init = b.poll_transmit().unwrap().bytes;
    a.handle_datagram(T0, wall(T0), addr(2), &init, &mut rng);
    let resp = a.poll_transmit().unwrap().bytes;
    assert_eq!(resp[3], KIND_RESP);
    assert!(
        init.len() >= resp.len(),
        "INIT {} < RESP {}",
        init.len(),
        resp.len()
    );
}

#[test]
fn runs_are_deterministic() {
    let trace = |seed| {
        let mut net = Net::pair(seed, fast());
        net.impair(0.2, 0.0, true);
        net.send(0, 1, b"x").unwrap();
        net.run_until(5_000);
        net.delivered().to_vec()
    };
    assert_eq!(trace(19), trace(19));
    assert_ne!(trace(19), trace(20));
}

#[test]
fn exported_secrets_agree_per_label_and_differ_across_sessions() {
    let mut net = Net::pair(7, fast());
    net.send(0, 1, b"hi").unwrap();
    net.pump();
    let (a, a_init) = net.ep(0).export(addr(2), b"media", b"call 1").unwrap();
    let (b, b_init) = net.ep(1).export(addr(1), b"media", b"call 1").unwrap();
    assert_eq!(a, b);
    assert!(a_init && !b_init);
    let (c, _) = net.ep(0).export(addr(2), b"media", b"call 2").unwrap();
    let (d, _) = net.ep(0).export(addr(2), b"other", b"call 1").unwrap();
    assert!(a != c && a != d && c != d);
    assert!(net.ep(0).export(addr(9), b"media", b"").is_none());
    let mut other = Net::pair(8, fast());
    other.send(0, 1, b"hi").unwrap();
    other.pump();
    let (e, _) = other.ep(0).export(addr(2), b"media", b"call 1").unwrap();
    assert_ne!(a, e);
}

/// An INIT as an attacker sends it: any index, any key, maybe a cookie.
fn forged_init(rng: &mut StdRng, cookie: Option<[u8; super::packet::COOKIE]>) -> Vec<u8> {
    Packet::Init {
        sender: rng.r#gen(),
        ephemeral: rng.r#gen(),
        cookie,
    }
    .encode()
    .unwrap()
}

/// Issue 14.2: 256 INITs from one host's ports filled the table for good.
#[test]
fn one_host_cannot_fill_the_handshake_table() {
    let mut pki = Pki::new(40);
    let hub = pki.endpoint("hub", fast());
    let client = pki.endpoint("client", fast());
    let far = pki.endpoint("far", fast());
    let mut net = Net::new(
        40,
        vec![
            (addr(1), hub),
            (SocketAddr::from(([10, 0, 0, 2], 5)), client),
            (SocketAddr::from(([10, 0, 0, 3], 5)), far),
        ],
    );
    let mut rng = StdRng::seed_from_u64(40);
    let attacker = |port| SocketAddr::from(([10, 9, 9, 9], port));
    for port in 1..=256 {
        let init = forged_init(&mut rng, None);
        net.inject(attacker(port), 0, &init);
    }
    let s = net.ep(0).stats().clone();
    assert_eq!(net.ep(0).counts().1, 8, "one source, eight half-open");
    assert_eq!(s.half_open_per_address, 248);
    // An honest client attaches, and the hub still opens its own links.
    net.connect(1, 0);
    net.connect(0, 2);
    net.pump();
    assert_eq!(net.established(1), 1);
    assert_eq!(net.established(2), 1);
}

/// Spoofed sources cannot be capped per address: past the threshold they
/// get a COOKIE and no state, and an honest client gets in with one.
#[test]
fn spoofed_inits_get_cookies_not_state() {
    let mut pki = Pki::new(41);
    let hub = pki.endpoint("hub", fast());
    let client = pki.endpoint("client", fast());
    let mut net = Net::new(
        41,
        vec![
            (addr(1), hub),
            (SocketAddr::from(([10, 0, 0, 2], 5)), client),
        ],
    );
    let mut rng = StdRng::seed_from_u64(41);
    for i in 0..5_000u32 {
        let from = SocketAddr::from(([11, (i >> 16) as u8, (i >> 8) as u8, i as u8], 4000));
        let init = forged_init(&mut rng, None);
        net.inject(from, 0, &init);
    }
    let s = net.ep(0).stats().clone();
    assert_eq!(
        net.ep(0).counts().1,
        32,
        "state stops at the cookie threshold"
    );
    assert_eq!(s.cookies_sent, 5_000 - 32);
    // A made-up cookie does not pass.
    net.inject(
        SocketAddr::from(([12, 0, 0, 1], 1)),
        0,
        &forged_init(&mut rng, Some([5; 16])),
    );
    assert_eq!(net.ep(0).stats().cookies_invalid, 1);
    net.connect(1, 0);
    net.pump();
    assert_eq!(net.established(1), 1);
    assert_eq!(net.ep(1).stats().cookies_received, 1);
}

/// A cookie proves one address: replayed from another it is refused.
#[test]
fn a_cookie_is_bound_to_its_address() {
    let mut pki = Pki::new(42);
    let config = LinkConfig {
        cookie_after_half_open: 0,
        ..fast()
    };
    let hub = pki.endpoint("hub", config);
    let client = pki.endpoint("client", fast());
    let mut net = Net::new(42, vec![(addr(1), hub), (addr(2), client)]);
    net.connect(1, 0);
    net.pump();
    assert_eq!(net.established(1), 1);
    let with_cookie = net
        .delivered()
        .iter()
        .find(|d| d.bytes.get(3) == Some(&KIND_INIT) && d.bytes[4 + 4 + 32..][..16] != [0; 16])
        .map(|d| d.bytes.clone())
        .expect("the client repeated its INIT with the cookie");
    let before = net.ep(0).stats().cookies_invalid;
    net.inject(addr(3), 0, &with_cookie);
    assert_eq!(net.ep(0).stats().cookies_invalid, before + 1);
}

/// Issue 14.3: one account (or one address) cannot take every session.
#[test]
fn sessions_are_shared_per_account_and_per_address() {
    let mut pki = Pki::new(43);
    let config = LinkConfig {
        max_sessions_per_account: 3,
        max_sessions_per_address: 5,
        ..fast()
    };
    let hub = pki.endpoint("hub", config);
    let mut nodes = vec![(addr(1), hub)];
    // Six devices of "mallory" from six ports of one host, then two
    // other users from the same host, then one from elsewhere.
    for i in 0..6 {
        nodes.push((addr(10 + i), pki.endpoint("mallory", fast())));
    }
    nodes.push((addr(20), pki.endpoint("bob", fast())));
    nodes.push((addr(21), pki.endpoint("carol", fast())));
    nodes.push((addr(22), pki.endpoint("dave", fast())));
    nodes.push((
        SocketAddr::from(([10, 0, 0, 2], 1)),
        pki.endpoint("erin", fast()),
    ));
    let mut net = Net::new(43, nodes);
    for i in 1..=10 {
        net.connect(i, 0);
        net.pump();
    }
    let s = net.ep(0).stats().clone();
    assert_eq!(s.sessions_per_account, 3, "mallory holds three");
    // 3 mallory + bob + carol fill the host's five; dave is refused.
    assert_eq!(s.sessions_per_address, 1);
    assert_eq!(net.ep(0).counts().0, 6);
    assert_eq!(net.established(10), 1, "another host still gets in");
    // The refused are told (BUSY after their FIN), not left thinking
    // they hold a session until it idles out.
    assert_eq!(s.busy_sent, 4);
    for i in [4, 5, 6, 9] {
        let closed = net.closed(i);
        assert_eq!(closed, vec![CloseReason::TooManySessions], "node {i}");
        assert_eq!(net.ep(i).counts().0, 0, "node {i}");
    }
}

/// Issue 14.13: a session outlives its handshake certificate when the peer
/// renews before it expires (with 30% loss: the RENEW is re-sent); a
/// RENEW for another key, or one not newer, changes nothing.
#[test]
fn a_renewed_certificate_carries_a_live_session_past_the_old_expiry() {
    let mut pki = Pki::new(13);
    let alice = pki.endpoint("alice", fast());
    let bd = pki.device();
    let expires = wall(T0).get() + 10;
    let bob = LinkEndpoint::new(
        bd.clone(),
        cert_for(&pki.authority, &bd, "bob", 0, expires),
        pki.authority.public(),
        fast(),
    )
    .unwrap();
    let mut net = Net::new(13, vec![(addr(1), alice), (addr(2), bob)]);
    net.connect(0, 1);
    net.run_until(2_000);
    assert_eq!((net.established(0), net.established(1)), (1, 1));
    net.impair(0.3, 0.0, false);
    let renewed = cert_for(&pki.authority, &bd, "bob", 0, expires + 3_600);
    net.ep(1).set_certificate(renewed.clone()).unwrap();
    // Well past the handshake certificate's expiry, traffic both ways.
    net.run_until(60_000);
    assert!(net.closed(0).is_empty(), "{:?}", net.closed(0));
    assert_eq!(net.ep(0).peer(addr(2)), Some(&renewed));
    assert_eq!(net.ep(0).stats().certs_renewed, 1);
    // It still ends at the renewed certificate's expiry (no keepalive
    // loss: the session must not go idle first).
    net.impair(0.0, 0.0, false);
    net.run_until(3_609_999);
    assert!(net.closed(0).is_empty());
    net.run_until(3_610_000);
    assert_eq!(net.closed(0), vec![CloseReason::PeerCertificateExpired]);
}

#[test]
fn a_renewal_for_other_keys_or_an_older_certificate_is_refused() {
    let mut pki = Pki::new(14);
    let alice = pki.endpoint("alice", fast());
    let bd = pki.device();
    let expires = wall(T0).get() + 10;
    let bob = LinkEndpoint::new(
        bd.clone(),
        cert_for(&pki.authority, &bd, "bob", 0, expires),
        pki.authority.public(),
        fast(),
    )
    .unwrap();
    let mut net = Net::new(14, vec![(addr(1), alice), (addr(2), bob)]);
    net.connect(0, 1);
    net.run_until(2_000);
    // Not newer: refused, and the session still ends at the old expiry.
    let same = cert_for(&pki.authority, &bd, "bob", 0, expires);
    net.ep(1).set_certificate(same).unwrap();
    // Ours, but signed by another authority (the peer checks).
    let rogue = AuthorityKey::generate(&mut StdRng::seed_from_u64(99));
    net.ep(1)
        .set_certificate(cert_for(&rogue, &bd, "bob", 0, expires + 3_600))
        .unwrap();
    net.run_until(5_000);
    assert_eq!(net.ep(0).stats().certs_renewed, 0);
    assert!(net.ep(0).stats().renew_rejected >= 2);
    net.run_until(10_000);
    assert_eq!(net.closed(0), vec![CloseReason::PeerCertificateExpired]);
}
