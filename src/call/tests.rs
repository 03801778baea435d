//! Two call cores wired together in virtual time, with seeded loss.

use super::*;
use crate::time::{Millis, UnixMillis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Pair {
    a: CallCore,
    b: CallCore,
    now: Millis,
    rng: StdRng,
    loss: f64,
    ev_a: Vec<CallEvent>,
    ev_b: Vec<CallEvent>,
    /// Deliver nothing (the callee is unreachable).
    cut: bool,
}

impl Pair {
    fn new(loss: f64, seed: u64) -> Self {
        Pair {
            a: CallCore::new(CallConfig::default()),
            b: CallCore::new(CallConfig::default()),
            now: Millis(1_000),
            rng: StdRng::seed_from_u64(seed),
            loss,
            ev_a: Vec::new(),
            ev_b: Vec::new(),
            cut: false,
        }
    }

    /// The wall clock: it runs with the virtual clock, from the same
    /// epoch.
    fn unix(&self) -> UnixMillis {
        UnixMillis(self.now.get())
    }

    /// Move messages and run timers for `ms` of virtual time, in 10 ms steps.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            for _ in 0..8 {
                let mut moved = false;
                while let Some(t) = self.a.poll_transmit() {
                    assert_eq!(t.to, "bob");
                    moved = true;
                    if !t.for_device(BOB) {
                        continue; // to bob's other devices: none here
                    }
                    if !self.cut && !self.rng.gen_bool(self.loss) {
                        let (now, unix) = (self.now, self.unix());
                        self.b
                            .handle_message(now, unix, "alice", ALICE, unix, &t.bytes);
                    }
                }
                while let Some(t) = self.b.poll_transmit() {
                    assert_eq!(t.to, "alice");
                    assert_eq!(t.devices, Target::Only(ALICE));
                    moved = true;
                    if !self.cut && !self.rng.gen_bool(self.loss) {
                        let (now, unix) = (self.now, self.unix());
                        self.a.handle_message(now, unix, "bob", BOB, unix, &t.bytes);
                    }
                }
                if !moved {
                    break;
                }
            }
            self.ev_a.extend(std::iter::from_fn(|| self.a.poll_event()));
            self.ev_b.extend(std::iter::from_fn(|| self.b.poll_event()));
            self.now += 10;
            if self.a.poll_timeout().is_some_and(|t| t <= self.now) {
                self.a.handle_timeout(self.now);
            }
            if self.b.poll_timeout().is_some_and(|t| t <= self.now) {
                self.b.handle_timeout(self.now);
            }
        }
    }

    fn ended(ev: &[CallEvent]) -> Option<EndReason> {
        ev.iter().find_map(|e| match e {
            CallEvent::Ended { reason, .. } => Some(*reason),
            _ => None,
        })
    }
}

const ID: CallId = 0x1234;
/// The devices of the two-party tests.
const ALICE: DeviceKey = [0xa; 32];
const BOB: DeviceKey = [0xb; 32];

#[test]
fn full_call_with_mute_hold_and_hangup_over_a_lossy_carrier() {
    for seed in 0..20 {
        let mut p = Pair::new(0.2, seed);
        p.a.invite(p.now, "bob", ID, [1; 16]).unwrap();
        p.run(6_000);
        assert!(
            p.ev_b.contains(&CallEvent::Incoming {
                id: ID,
                peer: "alice".into()
            }),
            "seed {seed}"
        );
        assert!(
            p.ev_a.contains(&CallEvent::Ringing { id: ID }),
            "seed {seed}: {:?}",
            p.ev_a
        );
        assert_eq!(p.b.state(ID), Some(CallState::Incoming));
        p.b.accept(p.now, ID, [2; 16]).unwrap();
        p.run(3_000);
        let want = |side| CallEvent::Connected {
            id: ID,
            peer: if side == Side::Caller { "bob" } else { "alice" }.into(),
            side,
            caller_nonce: [1; 16],
            callee_nonce: [2; 16],
        };
        assert!(
            p.ev_a.contains(&want(Side::Caller)),
            "seed {seed}: {:?}",
            p.ev_a
        );
        assert!(p.ev_b.contains(&want(Side::Callee)), "seed {seed}");
        p.a.media_flowing(p.now, ID);
        p.b.media_flowing(p.now, ID);
        p.a.set_mute(p.now, ID, true).unwrap();
        p.b.set_hold(p.now, ID, true).unwrap();
        p.run(5_000);
        assert!(
            p.ev_b.contains(&CallEvent::RemoteMute {
                id: ID,
                muted: true
            }),
            "seed {seed}"
        );
        assert!(
            p.ev_a.contains(&CallEvent::RemoteHold {
                id: ID,
                on_hold: true
            }),
            "seed {seed}"
        );
        // Exactly one of each, though retransmitted.
        assert_eq!(
            p.ev_b
                .iter()
                .filter(|e| matches!(e, CallEvent::RemoteMute { .. }))
                .count(),
            1
        );
        p.b.hangup(p.now, ID).unwrap();
        p.run(8_000);
        assert_eq!(
            Pair::ended(&p.ev_b),
            Some(EndReason::HungUp { by_us: true })
        );
        assert_eq!(
            Pair::ended(&p.ev_a),
            Some(EndReason::HungUp { by_us: false }),
            "seed {seed}"
        );
        // Everything acknowledged: nothing left to re-send.
        p.run(40_000);
        assert_eq!(p.a.poll_timeout(), None, "seed {seed}");
        assert_eq!(p.b.poll_timeout(), None, "seed {seed}");
    }
}

#[test]
fn declined() {
    let mut p = Pair::new(0.0, 1);
    p.a.invite(p.now, "bob", ID, [1; 16]).unwrap();
    p.run(100);
    p.b.decline(p.now, ID).unwrap();
    p.run(100);
    assert_eq!(
        Pair::ended(&p.ev_a),
        Some(EndReason::Declined { by_us: false })
    );
    assert_eq!(
        Pair::ended(&p.ev_b),
        Some(EndReason::Declined { by_us: true })
    );
}

#[test]
fn busy_when_in_another_call() {
    let mut p = Pair::new(0.0, 1);
    p.b.invite(p.now, "carol", 99, [3; 16]).unwrap();
    // b's invite to carol goes nowhere in this harness; drop it.
    while p.b.poll_transmit().is_some() {}
    p.a.invite(p.now, "bob", ID, [1; 16]).unwrap();
    // Run briefly (b's own invite to carol would be re-sent to "carol").
    let m = p.a.poll_transmit().unwrap().bytes;
    p.b.handle_message(p.now, p.unix(), "alice", ALICE, p.unix(), &m);
    let busy = p.b.poll_transmit().unwrap();
    assert_eq!(
        (busy.to.as_str(), busy.devices),
        ("alice", Target::Only(ALICE))
    );
    p.a.handle_message(p.now, p.unix(), "bob", BOB, p.unix(), &busy.bytes);
    assert_eq!(
        Pair::ended(&std::iter::from_fn(|| p.a.poll_event()).collect::<Vec<_>>()),
        Some(EndReason::Busy)
    );
    assert_eq!(p.b.stats().busy_sent, 1);
    assert!(
        matches!(p.a.invite(p.now, "bob", 7, [0; 16]), Ok(7)),
        "a is free again"
    );
    assert_eq!(p.b.invite(p.now, "dave", 8, [0; 16]), Err(CallError::Busy));
}

#[test]
fn caller_cancels_while_ringing() {
    let mut p = Pair::new(0.0, 1);
    p.a.invite(p.now, "bob", ID, [1; 16]).unwrap();
    p.run(100);
    p.a.hangup(p.now, ID).unwrap();
    p.run(100);
    assert_eq!(
        Pair::ended(&p.ev_a),
        Some(EndReason::Cancelled { by_us: true })
    );
    assert_eq!(
        Pair::ended(&p.ev_b),
        Some(EndReason::Cancelled { by_us: false })
    );
    assert_eq!(
        p.b.accept(p.now, ID, [2; 16]),
        Err(CallError::WrongState(ID))
    );
}

#[test]
fn no_answer_after_the_ring_timeout() {
    let mut p = Pair::new(0.0, 1);
    p.a.invite(p.now, "bob", ID, [1; 16]).unwrap();
    p.run(59_000);
    assert_eq!(Pair::ended(&p.ev_a), None);
    p.run(2_000);
    assert_eq!(Pair::ended(&p.ev_a), Some(EndReason::NoAnswer));
    assert!(matches!(
        Pair::ended(&p.ev_b),
        Some(EndReason::NoAnswer | EndReason::Cancelled { by_us: false })
    ));
}

#[test]
fn unreachable_callee_is_no_response() {
    let mut p = Pair::new(0.0, 1);
    p.cut = true;
    p.a.invite(p.now, "bob", ID, [1; 16]).unwrap();
    p.run(9_000);
    assert_eq!(Pair::ended(&p.ev_a), None);
    p.run(2_000);
    assert_eq!(Pair::ended(&p.ev_a), Some(EndReason::NoResponse));
    assert!(p.a.stats().retransmits >= 4);
    assert_eq!(
        EndReason::NoResponse.to_string(),
        "the other side could not be reached"
    );
}

#[test]
fn no_media_after_accept_fails_the_call() {
    let mut p = Pair::new(0.0, 1);
    p.a.invite(p.now, "bob", ID, [1; 16]).unwrap();
    p.run(100);
    p.b.accept(p.now, ID, [2; 16]).unwrap();
    p.run(11_000);
    assert_eq!(Pair::ended(&p.ev_a), Some(EndReason::MediaFailed));
    assert!(matches!(
        Pair::ended(&p.ev_b),
        Some(EndReason::MediaFailed | EndReason::HungUp { by_us: false })
    ));
}

#[test]
fn strangers_and_garbage_are_counted_drops() {
    let mut p = Pair::new(0.0, 1);
    p.a.invite(p.now, "bob", ID, [1; 16]).unwrap();
    p.run(100);
    // Mallory tries to hang up alice's call with bob.
    p.a.handle_message(
        p.now,
        p.unix(),
        "mallory",
        [0xee; 32],
        p.unix(),
        &Msg::Decline.encode(ID),
    );
    assert_eq!(p.a.state(ID), Some(CallState::Ringing));
    assert_eq!(p.a.stats().wrong_peer, 1);
    p.a.handle_message(p.now, p.unix(), "bob", BOB, p.unix(), &[1, 2, 3]);
    let hangup = Msg::Hangup.encode(777);
    p.a.handle_message(p.now, p.unix(), "bob", BOB, p.unix(), &hangup);
    assert_eq!(p.a.stats().malformed, 1);
    assert_eq!(p.a.stats().unknown_call, 1);
    for len in 0..40 {
        let mut rng = StdRng::seed_from_u64(len);
        for _ in 0..200 {
            let b: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            p.b.handle_message(p.now, p.unix(), "alice", ALICE, p.unix(), &b);
        }
    }
}

#[test]
fn unreachable_callee_ends_the_invitation_at_once() {
    let mut p = Pair::new(0.0, 9);
    p.cut = true;
    p.a.invite(p.now, "bob", ID, [1; 16]).unwrap();
    p.run(100);
    p.a.unreachable(p.now, ID);
    p.run(10);
    assert_eq!(Pair::ended(&p.ev_a), Some(EndReason::NoResponse));
    // Nothing more is re-sent to a user the overlay cannot reach.
    let sent = p.a.stats().retransmits;
    p.run(5_000);
    assert_eq!(p.a.stats().retransmits, sent);
    // Once ringing, the overlay's word no longer ends the call.
    let mut q = Pair::new(0.0, 10);
    q.a.invite(q.now, "bob", ID, [1; 16]).unwrap();
    q.run(100);
    q.a.unreachable(q.now, ID);
    assert_eq!(q.a.state(ID), Some(CallState::Ringing));
}

#[test]
fn log_lines_name_the_event_without_nonces() {
    let e = CallEvent::Connected {
        id: 7,
        peer: "bob".into(),
        side: Side::Caller,
        caller_nonce: [0xab; 16],
        callee_nonce: [0xcd; 16],
    };
    assert_eq!(e.to_string(), "connecting as Caller");
}

#[test]
fn an_audio_device_failure_ends_the_call_blaming_the_device() {
    let mut p = Pair::new(0.0, 1);
    p.a.invite(p.now, "bob", ID, [1; 16]).unwrap();
    p.run(100);
    p.b.accept(p.now, ID, [2; 16]).unwrap();
    p.run(100);
    p.a.audio_failed(p.now, ID);
    p.run(1_000);
    assert_eq!(Pair::ended(&p.ev_a), Some(EndReason::AudioFailed));
    assert_eq!(EndReason::AudioFailed.code(), "audio_failed");
    assert_eq!(
        Pair::ended(&p.ev_b),
        Some(EndReason::HungUp { by_us: false })
    );
    let m = EndReason::AudioFailed.to_string();
    assert!(m.contains("audio device") && !m.contains("network"), "{m}");
}

/// Issue 14.11: a captured Invite replayed to a callee that restarted
/// (a fresh core, no memory of the call) must not ring once it is older
/// than the ring timeout; a fresh one, or one from a caller whose clock is
/// a little off, still rings.
#[test]
fn a_replayed_invitation_older_than_the_ring_timeout_is_dropped() {
    let cfg = CallConfig::default();
    let invite = Msg::Invite { nonce: [7; 16] }.encode(ID);
    let sent = 1_000_000;
    let incoming = |core: &mut CallCore| {
        std::iter::from_fn(|| core.poll_event()).any(|e| matches!(e, CallEvent::Incoming { .. }))
    };
    // The callee after a restart, the replay arriving two minutes later
    // (by the wall clock; its monotonic clock starts anywhere).
    let at = |ms: u64| (Millis(5), UnixMillis(ms));
    let mut b = CallCore::new(cfg.clone());
    let (now, unix) = at(sent + 120_000);
    b.handle_message(now, unix, "alice", ALICE, UnixMillis(sent), &invite);
    assert!(!incoming(&mut b), "a two-minute-old invitation rang");
    assert_eq!(b.stats().stale_invites, 1);
    assert_eq!(b.current(), None);
    assert!(
        b.poll_transmit().is_none(),
        "a stale invitation was answered"
    );
    // Just inside the window (ring timeout plus the skew allowance).
    let mut b = CallCore::new(cfg.clone());
    let (now, unix) = at(sent + cfg.ring_timeout_ms + cfg.invite_skew_ms);
    b.handle_message(now, unix, "alice", ALICE, UnixMillis(sent), &invite);
    assert!(incoming(&mut b));
    // A caller whose clock is ahead of ours: the age is never negative.
    let mut b = CallCore::new(cfg.clone());
    let (now, unix) = at(sent);
    b.handle_message(
        now,
        unix,
        "alice",
        ALICE,
        UnixMillis(sent + 20_000),
        &invite,
    );
    assert!(incoming(&mut b));
    assert_eq!(b.stats().stale_invites, 0);
    // The age is judged on the wall clock alone: a node whose monotonic
    // time has run far from it (its wall clock was stepped since it
    // started) still rings for a fresh invitation.
    let mut b = CallCore::new(cfg);
    b.handle_message(
        Millis(sent + 3_600_000),
        UnixMillis(sent + 1_000),
        "alice",
        ALICE,
        UnixMillis(sent),
        &invite,
    );
    assert!(incoming(&mut b));
    assert_eq!(b.stats().stale_invites, 0);
}

/// Issue 17: bob calls alice, who is online on several devices; every
/// device has its own core, and bob's messages to no device in particular
/// reach all of them.
struct Devices {
    bob: CallCore,
    alice: Vec<(DeviceKey, CallCore)>,
    now: Millis,
    rng: StdRng,
    loss: f64,
    ev_bob: Vec<CallEvent>,
    ev_alice: Vec<Vec<(Millis, CallEvent)>>,
    /// Alice's devices tell each other of their calls (their account is
    /// set).
    own_sync: bool,
}

const DESK: DeviceKey = [1; 32];
const LAPTOP: DeviceKey = [2; 32];
const PHONE: DeviceKey = [3; 32];

impl Devices {
    fn new(names: &[(&str, DeviceKey)], loss: f64, seed: u64) -> Self {
        let alice = names
            .iter()
            .map(|&(name, key)| {
                let mut c = CallCore::new(CallConfig::default());
                c.set_device_name(name);
                (key, c)
            })
            .collect();
        Devices {
            bob: CallCore::new(CallConfig::default()),
            alice,
            now: Millis(1_000),
            rng: StdRng::seed_from_u64(seed),
            loss,
            ev_bob: Vec::new(),
            ev_alice: vec![Vec::new(); names.len()],
            own_sync: false,
        }
    }

    /// With alice's devices telling each other of their calls.
    fn synced(names: &[(&str, DeviceKey)], loss: f64, seed: u64) -> Self {
        let mut d = Devices::new(names, loss, seed);
        for (_, c) in &mut d.alice {
            c.set_account("Alice");
        }
        d.own_sync = true;
        d
    }

    fn core(&mut self, key: DeviceKey) -> &mut CallCore {
        &mut self
            .alice
            .iter_mut()
            .find(|(k, _)| *k == key)
            .expect("a device of alice")
            .1
    }

    fn events(&self, key: DeviceKey) -> &[(Millis, CallEvent)] {
        let i = self.alice.iter().position(|(k, _)| *k == key).unwrap();
        &self.ev_alice[i]
    }

    fn ended(&self, key: DeviceKey) -> Option<(Millis, EndReason)> {
        self.events(key).iter().find_map(|(t, e)| match e {
            CallEvent::Ended { reason, .. } => Some((*t, *reason)),
            _ => None,
        })
    }

    /// How call `id` ended on `key`.
    fn ended_call(&self, key: DeviceKey, id: CallId) -> Option<EndReason> {
        self.events(key).iter().find_map(|(_, e)| match e {
            CallEvent::Ended { reason, id: i } if *i == id => Some(*reason),
            _ => None,
        })
    }

    fn delivered(&mut self) -> bool {
        !self.rng.gen_bool(self.loss)
    }

    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            let (now, unix) = (self.now, UnixMillis(self.now.get()));
            for _ in 0..8 {
                let mut moved = false;
                while let Some(t) = self.bob.poll_transmit() {
                    assert_eq!(t.to, "alice");
                    moved = true;
                    for i in 0..self.alice.len() {
                        let key = self.alice[i].0;
                        if t.for_device(key) && self.delivered() {
                            let core = &mut self.alice[i].1;
                            core.handle_message(now, unix, "bob", BOB, unix, &t.bytes);
                        }
                    }
                }
                for i in 0..self.alice.len() {
                    let key = self.alice[i].0;
                    while let Some(t) = self.alice[i].1.poll_transmit() {
                        if t.to == "alice" && self.own_sync {
                            // To alice's other devices (never itself).
                            moved = true;
                            for j in (0..self.alice.len()).filter(|&j| j != i) {
                                if t.for_device(self.alice[j].0) && self.delivered() {
                                    let core = &mut self.alice[j].1;
                                    core.handle_message(now, unix, "alice", key, unix, &t.bytes);
                                }
                            }
                            continue;
                        }
                        if t.to != "bob" {
                            continue; // a call of its own, to no one here
                        }
                        assert_eq!(t.devices, Target::Only(BOB));
                        moved = true;
                        if self.delivered() {
                            self.bob
                                .handle_message(now, unix, "alice", key, unix, &t.bytes);
                        }
                    }
                }
                if !moved {
                    break;
                }
            }
            self.ev_bob
                .extend(std::iter::from_fn(|| self.bob.poll_event()));
            for (i, (_, c)) in self.alice.iter_mut().enumerate() {
                self.ev_alice[i].extend(std::iter::from_fn(|| c.poll_event()).map(|e| (now, e)));
            }
            self.now += 10;
            let now = self.now;
            if self.bob.poll_timeout().is_some_and(|t| t <= now) {
                self.bob.handle_timeout(now);
            }
            for (_, c) in &mut self.alice {
                if c.poll_timeout().is_some_and(|t| t <= now) {
                    c.handle_timeout(now);
                }
            }
        }
    }

    fn connected(ev: &[CallEvent]) -> usize {
        ev.iter()
            .filter(|e| matches!(e, CallEvent::Connected { .. }))
            .count()
    }
}

#[test]
fn every_device_rings_and_the_first_answer_wins() {
    for seed in 0..20 {
        // Both ring (the overlay retries each device's copy of the
        // invitation until delivered), then the answer and the rest go
        // over a lossy carrier.
        let loss = if seed == 0 { 0.0 } else { 0.2 };
        let mut d = Devices::new(&[("desk", DESK), ("laptop", LAPTOP)], 0.0, seed);
        d.bob.invite(d.now, "alice", ID, [1; 16]).unwrap();
        d.run(200);
        d.loss = loss;
        for key in [DESK, LAPTOP] {
            assert_eq!(
                d.core(key).state(ID),
                Some(CallState::Incoming),
                "seed {seed}"
            );
        }
        assert_eq!(d.bob.state(ID), Some(CallState::Ringing), "seed {seed}");
        let answered = d.now;
        d.core(LAPTOP).accept(answered, ID, [2; 16]).unwrap();
        d.run(if loss == 0.0 { 1_000 } else { 8_000 });
        // The caller is in the call with the laptop, told by its name.
        assert_eq!(d.bob.state(ID), Some(CallState::Connecting), "seed {seed}");
        assert_eq!(d.bob.device(ID), Some(LAPTOP));
        assert_eq!(d.bob.answered_on(ID), Some(DeviceName::new("laptop")));
        assert_eq!(Devices::connected(&d.ev_bob), 1);
        // The desk stopped ringing, saying where the call went (within a
        // second when nothing is lost).
        let (at, reason) = d.ended(DESK).expect("the desk stopped ringing");
        assert_eq!(
            reason,
            EndReason::AnsweredElsewhere {
                device: DeviceName::new("laptop")
            }
        );
        assert_eq!(reason.to_string(), "answered on laptop");
        assert_eq!(reason.code(), "answered_elsewhere");
        if loss == 0.0 {
            assert!(at.since(answered) < 1_000, "{} ms", at.since(answered));
        }
        let now = d.now;
        assert_eq!(
            d.core(DESK).accept(now, ID, [3; 16]),
            Err(CallError::WrongState(ID))
        );
        // Media, hang-up: with the laptop alone.
        d.bob.media_flowing(d.now, ID);
        let now = d.now;
        d.core(LAPTOP).media_flowing(now, ID);
        d.bob.hangup(d.now, ID).unwrap();
        d.run(8_000);
        assert_eq!(
            d.ended(LAPTOP).map(|e| e.1),
            Some(EndReason::HungUp { by_us: false }),
            "seed {seed}"
        );
        assert_eq!(d.ended(DESK).map(|e| e.1), Some(reason));
        // Everything acknowledged.
        d.run(40_000);
        assert_eq!(d.bob.poll_timeout(), None, "seed {seed}");
    }
}

#[test]
fn a_late_second_answer_is_refused_cleanly() {
    // (The harness moves the laptop's messages first.)
    let mut d = Devices::new(&[("laptop", LAPTOP), ("desk", DESK)], 0.0, 1);
    d.bob.invite(d.now, "alice", ID, [1; 16]).unwrap();
    d.run(200);
    // Both answer at once: the laptop's Accept reaches bob first.
    let now = d.now;
    d.core(LAPTOP).accept(now, ID, [2; 16]).unwrap();
    let now = d.now;
    d.core(DESK).accept(now, ID, [3; 16]).unwrap();
    d.run(1_000);
    assert_eq!(d.bob.device(ID), Some(LAPTOP));
    assert_eq!(Devices::connected(&d.ev_bob), 1, "one media session");
    assert_eq!(d.bob.stats().late_answers, 1);
    // The desk had answered (it was connecting) and is told.
    assert_eq!(
        d.ended(DESK).map(|e| e.1),
        Some(EndReason::AnsweredElsewhere {
            device: DeviceName::new("laptop")
        })
    );
    assert_eq!(d.core(LAPTOP).state(ID), Some(CallState::Connecting));
    // The desk's hang-up crossing our word does not end the call.
    d.bob.media_flowing(d.now, ID);
    d.run(1_000);
    assert_eq!(d.bob.state(ID), Some(CallState::Active));
}

#[test]
fn one_device_declining_leaves_the_others_ringing() {
    let mut d = Devices::new(
        &[("desk", DESK), ("laptop", LAPTOP), ("phone", PHONE)],
        0.0,
        1,
    );
    d.bob.invite(d.now, "alice", ID, [1; 16]).unwrap();
    d.run(200);
    let now = d.now;
    d.core(DESK).decline(now, ID).unwrap();
    d.run(1_000);
    assert_eq!(d.bob.state(ID), Some(CallState::Ringing));
    assert_eq!(d.core(LAPTOP).state(ID), Some(CallState::Incoming));
    let now = d.now;
    d.core(PHONE).decline(now, ID).unwrap();
    d.run(1_000);
    assert_eq!(d.bob.state(ID), Some(CallState::Ringing));
    // The last one declines: the call was declined.
    let now = d.now;
    d.core(LAPTOP).decline(now, ID).unwrap();
    d.run(1_000);
    assert_eq!(
        Pair::ended(&d.ev_bob),
        Some(EndReason::Declined { by_us: false })
    );
    for key in [DESK, LAPTOP, PHONE] {
        assert_eq!(
            d.ended(key).map(|e| e.1),
            Some(EndReason::Declined { by_us: true })
        );
    }
}

#[test]
fn a_busy_device_and_a_declining_one() {
    // The desk is in another call: it answers busy; the laptop rings on.
    let mut d = Devices::new(&[("desk", DESK), ("laptop", LAPTOP)], 0.0, 1);
    let now = d.now;
    d.core(DESK).invite(now, "carol", 99, [9; 16]).unwrap();
    while d.core(DESK).poll_transmit().is_some() {}
    d.bob.invite(d.now, "alice", ID, [1; 16]).unwrap();
    // The carrier knows alice has two devices online.
    d.bob.expect_devices(ID, 2);
    d.run(1_000);
    assert_eq!(d.bob.state(ID), Some(CallState::Ringing));
    assert_eq!(d.core(LAPTOP).state(ID), Some(CallState::Incoming));
    let now = d.now;
    d.core(LAPTOP).decline(now, ID).unwrap();
    d.run(1_000);
    assert_eq!(
        Pair::ended(&d.ev_bob),
        Some(EndReason::Declined { by_us: false })
    );
    // Every device busy: busy.
    let mut d = Devices::new(&[("desk", DESK), ("laptop", LAPTOP)], 0.0, 2);
    for key in [DESK, LAPTOP] {
        let now = d.now;
        d.core(key).invite(now, "carol", 99, [9; 16]).unwrap();
        while d.core(key).poll_transmit().is_some() {}
    }
    d.bob.invite(d.now, "alice", ID, [1; 16]).unwrap();
    d.run(1_000);
    assert_eq!(Pair::ended(&d.ev_bob), Some(EndReason::Busy));
}

#[test]
fn the_caller_hanging_up_stops_every_device() {
    let mut d = Devices::new(&[("desk", DESK), ("laptop", LAPTOP)], 0.0, 1);
    d.bob.invite(d.now, "alice", ID, [1; 16]).unwrap();
    d.run(200);
    d.bob.hangup(d.now, ID).unwrap();
    d.run(1_000);
    for key in [DESK, LAPTOP] {
        assert_eq!(
            d.ended(key).map(|e| e.1),
            Some(EndReason::Cancelled { by_us: false })
        );
    }
    // The same before any device rang (the cancel goes to every device).
    let mut d = Devices::new(&[("desk", DESK), ("laptop", LAPTOP)], 0.0, 2);
    d.bob.invite(d.now, "alice", ID, [1; 16]).unwrap();
    let invite = d.bob.poll_transmit().unwrap();
    assert_eq!(
        invite.devices,
        Target::Every,
        "the invitation rings every device"
    );
    d.bob.hangup(d.now, ID).unwrap();
    let cancel = d.bob.poll_transmit().unwrap();
    assert_eq!(cancel.devices, Target::Every);
}

const MOVED: CallId = 0x5678;

/// Bob calls alice, her desk answers and the call is active; the laptop
/// has heard of it.
fn active_on_the_desk(loss: f64, seed: u64) -> Devices {
    let mut d = Devices::synced(&[("desk", DESK), ("laptop", LAPTOP)], 0.0, seed);
    d.bob.invite(d.now, "alice", ID, [1; 16]).unwrap();
    d.run(200);
    let now = d.now;
    d.core(DESK).accept(now, ID, [2; 16]).unwrap();
    d.run(1_000);
    d.bob.media_flowing(d.now, ID);
    let now = d.now;
    d.core(DESK).media_flowing(now, ID);
    d.loss = loss;
    d.run(if loss == 0.0 { 200 } else { 8_000 });
    d
}

fn took_over(ev: &[CallEvent]) -> Vec<(CallId, CallId, DeviceName)> {
    ev.iter()
        .filter_map(|e| match e {
            CallEvent::Replacing {
                id,
                replaces,
                device,
                peer,
            } => {
                assert_eq!(peer, "alice");
                Some((*id, *replaces, *device))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_call_moves_to_another_device_of_the_same_user() {
    let mut taken = 0;
    for seed in 0..10 {
        let loss = if seed == 0 { 0.0 } else { 0.2 };
        let mut d = active_on_the_desk(loss, seed);
        // The laptop knows the desk's call (the desk's note is sent once:
        // without loss, it came).
        let laptop_events: Vec<CallEvent> =
            d.events(LAPTOP).iter().map(|(_, e)| e.clone()).collect();
        if loss == 0.0 {
            assert!(laptop_events.contains(&CallEvent::OnOtherDevice {
                id: ID,
                peer: "bob".into(),
                device: DeviceName::new("desk"),
                on: true,
            }));
        }
        if d.core(LAPTOP).elsewhere().is_none() {
            continue; // the note was lost
        }
        let el = d.core(LAPTOP).elsewhere().cloned().unwrap();
        assert_eq!((el.call, el.peer_device, el.device), (ID, BOB, DESK));
        assert_eq!(el.peer, "bob");
        let now = d.now;
        assert_eq!(
            d.core(LAPTOP).take_over(now, MOVED, [4; 16]),
            Ok("bob".to_owned())
        );
        d.run(if loss == 0.0 { 200 } else { 8_000 });
        // Bob is asked to take the new leg, from the laptop; the call in
        // progress is still the old one.
        assert_eq!(
            took_over(&d.ev_bob),
            vec![(MOVED, ID, DeviceName::new("laptop"))],
            "seed {seed}"
        );
        assert_eq!(d.bob.current(), Some(ID));
        assert_eq!(d.bob.replaces(MOVED), Some(ID));
        assert_eq!(d.bob.device(MOVED), Some(LAPTOP));
        d.bob.accept(d.now, MOVED, [5; 16]).unwrap();
        d.run(if loss == 0.0 { 200 } else { 8_000 });
        assert_eq!(
            d.core(LAPTOP).state(MOVED),
            Some(CallState::Connecting),
            "seed {seed}"
        );
        assert!(d.events(LAPTOP).iter().any(|(_, e)| matches!(
            e,
            CallEvent::Connected { id: MOVED, side: Side::Caller, caller_nonce, callee_nonce, .. }
                if *caller_nonce == [4; 16] && *callee_nonce == [5; 16]
        )));
        // Nobody else of alice's was told anything about the new leg.
        assert_eq!(d.core(DESK).state(MOVED), None);
        // The old leg goes on until the new one has audio.
        assert_eq!(d.bob.state(ID), Some(CallState::Active));
        assert_eq!(d.core(DESK).state(ID), Some(CallState::Active));
        let moved_at = d.now;
        d.bob.media_flowing(d.now, MOVED);
        let now = d.now;
        d.core(LAPTOP).media_flowing(now, MOVED);
        d.run(if loss == 0.0 { 200 } else { 8_000 });
        let to_laptop = EndReason::Moved {
            device: DeviceName::new("laptop"),
        };
        assert_eq!(d.bob.state(ID), Some(CallState::Ended(to_laptop)));
        assert_eq!(d.bob.current(), Some(MOVED));
        let reason = d.ended_call(DESK, ID).expect("the desk's leg ended");
        let at = d
            .events(DESK)
            .iter()
            .find(|(_, e)| matches!(e, CallEvent::Ended { id: ID, .. }))
            .map(|(t, _)| *t)
            .unwrap();
        assert_eq!(reason, to_laptop, "seed {seed}");
        assert_eq!(reason.to_string(), "moved to laptop");
        assert_eq!(reason.code(), "moved");
        if loss == 0.0 {
            assert!(at.since(moved_at) < 100, "{} ms", at.since(moved_at));
            // The desk knows the call is on the laptop now.
            assert_eq!(d.core(DESK).elsewhere().map(|e| e.call), Some(MOVED));
        }
        // Hang-up: with the laptop alone.
        d.bob.hangup(d.now, MOVED).unwrap();
        d.run(8_000);
        assert_eq!(
            d.ended_call(LAPTOP, MOVED),
            Some(EndReason::HungUp { by_us: false }),
            "seed {seed}"
        );
        if loss == 0.0 {
            assert_eq!(d.core(DESK).elsewhere(), None, "the laptop said it ended");
        }
        d.run(40_000);
        assert_eq!(d.bob.poll_timeout(), None, "seed {seed}");
        taken += 1;
    }
    assert!(taken >= 5, "{taken} of 10 notes came");
}

#[test]
fn a_take_over_from_another_user_or_the_same_device_is_refused() {
    let mut d = active_on_the_desk(0.0, 1);
    let (now, unix) = (d.now, UnixMillis(d.now.get()));
    let take = |replaces| {
        Msg::Replace {
            nonce: [6; 16],
            replaces,
            device: DeviceName::new("mallory-phone"),
        }
        .encode(MOVED)
    };
    // Mallory names bob's call with alice: refused, and told so.
    let mallory: DeviceKey = [0xee; 32];
    d.bob
        .handle_message(now, unix, "mallory", mallory, unix, &take(ID));
    let t = d.bob.poll_transmit().expect("an answer");
    assert_eq!(t.to, "mallory");
    assert_eq!(t.devices, Target::Only(mallory));
    assert_eq!(Msg::decode(&t.bytes), Ok((MOVED, Msg::Decline)));
    // The desk (already in the call) cannot take it again; a call bob
    // does not have cannot be taken.
    d.bob
        .handle_message(now, unix, "alice", DESK, unix, &take(ID));
    d.bob
        .handle_message(now, unix, "alice", LAPTOP, unix, &take(ID + 1));
    assert_eq!(d.bob.stats().refused_takes, 3);
    assert!(took_over(&std::iter::from_fn(|| d.bob.poll_event()).collect::<Vec<_>>()).is_empty());
    assert_eq!(d.bob.state(MOVED), None);
    assert_eq!(d.bob.current(), Some(ID));
    assert_eq!(d.bob.state(ID), Some(CallState::Active));
    // A note about calls from another user's device is not taken as ours.
    let note = Msg::OnDevice {
        on: true,
        peer_device: [0xee; 32],
        peer: DeviceName::new("mallory"),
        device: DeviceName::new("x"),
    }
    .encode(77);
    let before = d.core(LAPTOP).elsewhere().cloned();
    d.core(LAPTOP)
        .handle_message(now, unix, "mallory", mallory, unix, &note);
    assert_eq!(d.core(LAPTOP).elsewhere().cloned(), before);
    assert_eq!(d.core(LAPTOP).stats().refused_takes, 1);
}

#[test]
fn a_take_over_of_a_call_that_ended_is_refused() {
    let mut d = active_on_the_desk(0.0, 2);
    let now = d.now;
    assert_eq!(
        d.core(DESK).take_over(now, MOVED, [4; 16]),
        Err(CallError::Busy),
        "the desk is in the call"
    );
    // Bob hangs up; the laptop's take-over crosses the desk's note that
    // the call ended.
    d.bob.hangup(d.now, ID).unwrap();
    let now = d.now;
    d.core(LAPTOP).take_over(now, MOVED, [4; 16]).unwrap();
    d.run(2_000);
    assert_eq!(
        d.core(LAPTOP).state(MOVED),
        Some(CallState::Ended(EndReason::TakeRefused))
    );
    assert_eq!(d.bob.state(MOVED), None);
    assert_eq!(d.bob.stats().refused_takes, 1);
    // Nothing left to take.
    let now = d.now;
    assert_eq!(
        d.core(LAPTOP).take_over(now, MOVED + 1, [4; 16]),
        Err(CallError::NothingToTake)
    );
    d.run(40_000);
    assert_eq!(d.bob.poll_timeout(), None);
    assert_eq!(d.core(LAPTOP).poll_timeout(), None);
}

#[test]
fn hanging_up_during_a_move_ends_both_legs() {
    let mut d = active_on_the_desk(0.0, 3);
    let now = d.now;
    d.core(LAPTOP).take_over(now, MOVED, [4; 16]).unwrap();
    d.run(200);
    d.bob.accept(d.now, MOVED, [5; 16]).unwrap();
    d.run(200);
    // Bob hangs up before the new leg has audio: both legs end.
    d.bob.hangup(d.now, ID).unwrap();
    d.run(1_000);
    assert_eq!(d.bob.current(), None);
    assert_eq!(
        d.ended(DESK).map(|e| e.1),
        Some(EndReason::HungUp { by_us: false })
    );
    assert_eq!(
        d.ended_call(LAPTOP, MOVED),
        Some(EndReason::HungUp { by_us: false })
    );
}

#[test]
fn two_devices_taking_the_same_call_make_one_move() {
    let mut d = Devices::synced(
        &[("desk", DESK), ("laptop", LAPTOP), ("phone", PHONE)],
        0.0,
        4,
    );
    d.bob.invite(d.now, "alice", ID, [1; 16]).unwrap();
    d.run(200);
    let now = d.now;
    d.core(DESK).accept(now, ID, [2; 16]).unwrap();
    d.run(500);
    d.bob.media_flowing(d.now, ID);
    let now = d.now;
    d.core(DESK).media_flowing(now, ID);
    d.run(200);
    // Both other devices take it at once: the laptop's reaches bob first.
    let now = d.now;
    d.core(LAPTOP).take_over(now, MOVED, [4; 16]).unwrap();
    d.core(PHONE).take_over(now, MOVED + 1, [4; 16]).unwrap();
    d.run(500);
    assert_eq!(
        took_over(&d.ev_bob),
        vec![(MOVED, ID, DeviceName::new("laptop"))]
    );
    assert_eq!(d.bob.stats().refused_takes, 1);
    assert_eq!(
        d.core(PHONE).state(MOVED + 1),
        Some(CallState::Ended(EndReason::TakeRefused))
    );
}
