//! The conference core in virtual time: a handful of cores exchanging
//! their messages directly; legs "hear" each other while both ends live.

use super::*;

fn member(name: &str, reach: Reach, uplink_kbps: u32) -> Member {
    let mut nonce = [0u8; 16];
    nonce[..name.len().min(16)].copy_from_slice(&name.as_bytes()[..name.len().min(16)]);
    Member {
        name: name.into(),
        nonce,
        uplink_kbps,
        reach,
        muted: false,
    }
}

/// Cores by name; `dead` ones neither send nor receive; `busy` ones (in
/// a call elsewhere) answer invitations with Busy.
struct Net {
    cores: BTreeMap<String, ConferenceCore>,
    profiles: BTreeMap<String, Member>,
    dead: BTreeSet<String>,
    /// Cores whose timers fire this many ms late (a loaded machine).
    late: BTreeMap<String, u64>,
    /// Cores already in a call: they answer invitations busy.
    busy: BTreeSet<String>,
    events: Vec<(String, ConfEvent)>,
    now: Millis,
}

impl Net {
    fn new(people: &[Member]) -> Net {
        Net {
            cores: BTreeMap::new(),
            profiles: people.iter().map(|m| (m.name.clone(), m.clone())).collect(),
            dead: BTreeSet::new(),
            late: BTreeMap::new(),
            busy: BTreeSet::new(),
            events: Vec::new(),
            now: Millis::ZERO,
        }
    }

    fn start(&mut self, who: &str, users: &[&str]) {
        let users: Vec<String> = users.iter().map(|s| s.to_string()).collect();
        let c = ConferenceCore::start(
            ConfConfig::default(),
            77,
            self.profiles[who].clone(),
            &users,
            0,
            self.now,
        )
        .unwrap();
        self.cores.insert(who.into(), c);
        self.pump();
    }

    /// Deliver every message (auto-accepting invitations) until quiet.
    fn pump(&mut self) {
        loop {
            let mut msgs = Vec::new();
            for (n, c) in &mut self.cores {
                while let Some((to, b)) = c.poll_transmit() {
                    if !self.dead.contains(n) {
                        msgs.push((n.clone(), to, b));
                    }
                }
                while let Some(e) = c.poll_event() {
                    self.events.push((n.clone(), e));
                }
            }
            if msgs.is_empty() {
                break;
            }
            let mut replies = Vec::new();
            for (from, to, b) in msgs {
                if self.dead.contains(&to) {
                    continue;
                }
                if self.busy.contains(&to) {
                    if let Some(r) = ConferenceCore::busy_reply(&b) {
                        replies.push((to, from, r));
                    }
                    continue;
                }
                match self.cores.get_mut(&to) {
                    Some(c) if !matches!(c.state(), ConfState::Ended(_)) => {
                        c.handle_message(self.now, &from, &b)
                    }
                    _ => {
                        let me = self.profiles[&to].clone();
                        if let Some(mut c) =
                            ConferenceCore::invited(ConfConfig::default(), me, &from, &b, self.now)
                        {
                            c.accept(self.now).unwrap();
                            self.cores.insert(to, c);
                        }
                    }
                }
            }
            for (from, to, b) in replies {
                if let Some(c) = self.cores.get_mut(&to) {
                    c.handle_message(self.now, &from, &b);
                }
            }
        }
    }

    /// Advance time in 100 ms steps; live legs hear each other.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 100;
            let live: BTreeSet<String> = self
                .cores
                .iter()
                .filter(|(n, c)| !self.dead.contains(*n) && c.state() == ConfState::Joined)
                .map(|(n, _)| n.clone())
                .collect();
            for (n, c) in &mut self.cores {
                if self.dead.contains(n) {
                    continue;
                }
                for l in c.legs() {
                    // A leg carries audio only when the other end runs it too.
                    if live.contains(&l.peer) {
                        c.heard(&l.peer, self.now);
                    }
                }
                let late = self.late.get(n).copied().unwrap_or(0);
                if c.poll_timeout().is_some_and(|t| t + late <= self.now) {
                    c.handle_timeout(self.now);
                }
            }
            self.pump();
        }
    }

    fn live_mixers(&self) -> BTreeSet<String> {
        self.cores
            .iter()
            .filter(|(n, c)| !self.dead.contains(*n) && c.state() == ConfState::Joined)
            .map(|(_, c)| c.mixer().to_owned())
            .collect()
    }
}

#[test]
fn five_join_and_agree_on_the_mixer_and_roster() {
    let people: Vec<Member> = ["ann", "bob", "cat", "dan", "eve"]
        .iter()
        .map(|n| member(n, Reach::Cone, 1000))
        .collect();
    let mut net = Net::new(&people);
    net.start("ann", &["bob", "cat", "dan", "eve"]);
    net.run(500);
    assert_eq!(net.cores.len(), 5);
    for c in net.cores.values() {
        assert_eq!(c.state(), ConfState::Joined);
        assert_eq!(c.mixer(), "ann");
        assert_eq!(c.members().count(), 5, "{}", c.me());
    }
    // The mixer runs a leg to each; the others one, to the mixer.
    assert_eq!(net.cores["ann"].legs().len(), 4);
    let bob = net.cores["bob"].legs();
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0].peer, "ann");
    assert!(!bob[0].we_mix);
    // Both ends of a leg derive the same key context.
    let ann_bob = net.cores["ann"]
        .legs()
        .into_iter()
        .find(|l| l.peer == "bob")
        .unwrap();
    assert_eq!(ann_bob.context, bob[0].context);
    assert_ne!(
        ann_bob.context,
        net.cores["cat"].legs()[0].context,
        "legs have keys of their own"
    );
}

#[test]
fn the_mixer_dies_and_everyone_picks_the_same_next_one_in_time() {
    let people = vec![
        member("ann", Reach::Cone, 1000),
        member("bob", Reach::RelayOnly, 50_000),
        member("cat", Reach::Cone, 800),
        member("dan", Reach::Public, 300),
        member("eve", Reach::Cone, 800),
    ];
    let mut net = Net::new(&people);
    net.start("ann", &["bob", "cat", "dan", "eve"]);
    net.run(3_000);
    // dan is public: the starter (cone) hands over to it.
    assert_eq!(net.live_mixers(), BTreeSet::from(["dan".to_owned()]));
    let killed_at = net.now;
    net.dead.insert("dan".into());
    // cat's timers run late: the new mixer's roster reaches it first.
    net.late.insert("cat".into(), 500);
    net.events.clear();
    net.run(2_000);
    // The relay-only bob, with the most uplink, is not picked: ann (cone,
    // 1000 kbit/s) is; cat and eve tie on reach and uplink, so the name
    // would decide between them.
    assert_eq!(net.live_mixers(), BTreeSet::from(["ann".to_owned()]));
    let switched = net
        .events
        .iter()
        .filter(|(_, e)| matches!(e, ConfEvent::MixerChanged { mixer, failover: true, .. } if mixer == "ann"))
        .count();
    // Every survivor calls it a failover, whether its own silence timer
    // or the new mixer's roster told it first.
    assert_eq!(switched, 4, "{:?}", net.events);
    assert!(net.now - killed_at <= 2_000);
    for (n, c) in &net.cores {
        if n != "dan" {
            assert_eq!(c.members().count(), 4, "{n}");
            assert!(c.members().all(|m| m.name != "dan"));
        }
    }
    // A participant who leaves is out of the mixer's legs at once.
    net.cores.get_mut("eve").unwrap().leave(net.now);
    net.pump();
    assert!(net.cores["ann"].legs().iter().all(|l| l.peer != "eve"));
    assert_eq!(net.cores["eve"].legs(), vec![]);
}

#[test]
fn ranking_puts_relay_only_last_and_breaks_ties_by_name() {
    let a = member("zed", Reach::RelayOnly, 99_999);
    let b = member("bob", Reach::Symmetric, 10);
    let c = member("amy", Reach::Cone, 500);
    let d = member("abe", Reach::Cone, 500);
    let r: Vec<&str> = rank([&a, &b, &c, &d])
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(r, ["abe", "amy", "bob", "zed"]);
}

#[test]
fn mute_of_others_only_by_the_starter_and_rosters_do_not_revive_the_dead() {
    let people: Vec<Member> = ["ann", "bob", "cat"]
        .iter()
        .map(|n| member(n, Reach::Cone, 100))
        .collect();
    let mut net = Net::new(&people);
    net.start("ann", &["bob", "cat"]);
    net.run(300);
    assert_eq!(
        net.cores.get_mut("bob").unwrap().mute_other("cat", true),
        Err(ConfError::NotStarter)
    );
    net.cores
        .get_mut("ann")
        .unwrap()
        .mute_other("cat", true)
        .unwrap();
    net.pump();
    assert!(net.cores["cat"].self_muted());
    assert_eq!(net.cores["bob"].muted(), vec!["cat".to_owned()]);
    // A forged mute from bob is ignored.
    let forged = ConfMsg::Mute {
        target: "cat".into(),
        on: false,
    }
    .encode(77);
    let now = net.now;
    net.cores
        .get_mut("cat")
        .unwrap()
        .handle_message(now, "bob", &forged);
    assert!(net.cores["cat"].self_muted());
    // bob leaves; a stale roster naming him does not bring him back.
    let stale = net.cores["ann"].roster().encode(77);
    net.cores.get_mut("bob").unwrap().leave(now);
    net.pump();
    net.cores
        .get_mut("cat")
        .unwrap()
        .handle_message(now, "ann", &stale);
    assert!(net.cores["cat"].members().all(|m| m.name != "bob"));
    // The last other one leaving ends it for who is left alone.
    net.cores.get_mut("cat").unwrap().leave(now);
    net.pump();
    assert_eq!(
        net.cores["ann"].state(),
        ConfState::Ended(ConfEndReason::Alone)
    );
}

#[test]
fn a_full_conference_refuses_more() {
    let users: Vec<String> = (0..24).map(|i| format!("u{i:02}")).collect();
    let me = member("ann", Reach::Cone, 1);
    let mut c = ConferenceCore::start(ConfConfig::default(), 1, me, &users, 0, Millis(0)).unwrap();
    assert_eq!(c.invite(Millis(0), "one_more"), Err(ConfError::Full));
    let users: Vec<String> = (0..25).map(|i| format!("u{i:02}")).collect();
    let me = member("ann", Reach::Cone, 1);
    assert_eq!(
        ConferenceCore::start(ConfConfig::default(), 1, me, &users, 0, Millis(0)).err(),
        Some(ConfError::Full)
    );
}

#[test]
fn a_busy_invitee_is_shown_busy_not_timed_out() {
    let people: Vec<Member> = ["ann", "bob", "cat"]
        .iter()
        .map(|n| member(n, Reach::Cone, 1000))
        .collect();
    let mut net = Net::new(&people);
    net.busy.insert("cat".into());
    net.start("ann", &["bob", "cat"]);
    // At once, not after the invitation's minute.
    let busy: Vec<&(String, ConfEvent)> = net
        .events
        .iter()
        .filter(|(_, e)| {
            matches!(e, ConfEvent::Left { name, reason: LeftReason::Busy, .. } if name == "cat")
        })
        .collect();
    assert_eq!(busy.len(), 1, "{:?}", net.events);
    assert_eq!(busy[0].0, "ann");
    assert_eq!(net.now, Millis::ZERO);
    // The others carry on; cat is no member and no longer awaited.
    net.run(5_000);
    for n in ["ann", "bob"] {
        let c = &net.cores[n];
        assert_eq!(c.state(), ConfState::Joined, "{n}");
        let names: Vec<&str> = c.members().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["ann", "bob"], "{n}");
    }
    assert!(net.cores["ann"].pending.is_empty());
    // A Busy from one never invited changes nothing.
    let before = net.events.len();
    let b = ConfMsg::Busy.encode(77);
    net.cores
        .get_mut("ann")
        .unwrap()
        .handle_message(net.now, "dan", &b);
    net.pump();
    assert_eq!(net.events.len(), before);
}

#[test]
fn a_conference_whose_only_invitee_is_busy_ends() {
    let people: Vec<Member> = ["ann", "bob"]
        .iter()
        .map(|n| member(n, Reach::Cone, 1000))
        .collect();
    let mut net = Net::new(&people);
    net.busy.insert("bob".into());
    net.start("ann", &["bob"]);
    assert_eq!(
        net.cores["ann"].state(),
        ConfState::Ended(ConfEndReason::Alone)
    );
    // Only Invites get a busy reply.
    assert!(ConferenceCore::busy_reply(&ConfMsg::Leave.encode(77)).is_none());
    assert!(ConferenceCore::busy_reply(b"junk").is_none());
}

#[test]
fn a_measured_uplink_moves_the_mixer_only_when_clearly_better() {
    let people: Vec<Member> = ["ann", "bob", "cat"]
        .iter()
        .map(|n| member(n, Reach::Cone, 0))
        .collect();
    let mut net = Net::new(&people);
    net.start("ann", &["bob", "cat"]);
    net.run(500);
    assert_eq!(net.live_mixers(), BTreeSet::from(["ann".to_owned()]));
    let set = |net: &mut Net, who: &str, kbps: u32| {
        let now = net.now;
        net.cores.get_mut(who).unwrap().set_uplink(now, kbps);
        net.pump();
        net.run(500);
    };
    // A member measures before the mixer did: the mixer is not judged by
    // an uplink it has not measured yet.
    set(&mut net, "cat", 64);
    assert_eq!(net.live_mixers(), BTreeSet::from(["ann".to_owned()]));
    // The mixer measures its own: still the best.
    set(&mut net, "ann", 96);
    assert_eq!(net.live_mixers(), BTreeSet::from(["ann".to_owned()]));
    // bob measured ten times as much: ann hands over, and every roster
    // carries bob's figure.
    set(&mut net, "bob", 1024);
    assert_eq!(net.live_mixers(), BTreeSet::from(["bob".to_owned()]));
    for (n, c) in &net.cores {
        let bob = c.members().find(|m| m.name == "bob").unwrap();
        assert_eq!(bob.uplink_kbps, 1024, "{n}");
    }
    // cat has more, but not twice bob's: no handover (no flapping).
    set(&mut net, "cat", 1536);
    assert_eq!(net.live_mixers(), BTreeSet::from(["bob".to_owned()]));
    // bob's uplink fills up (congestion caps it): cat is now clearly
    // better and takes over; nobody calls it a failover.
    net.events.clear();
    set(&mut net, "bob", 256);
    assert_eq!(net.live_mixers(), BTreeSet::from(["cat".to_owned()]));
    assert!(
        net.events.iter().all(|(_, e)| !matches!(
            e,
            ConfEvent::MixerChanged { failover: true, .. }
        ) && !matches!(e, ConfEvent::Left { .. })),
        "{:?}",
        net.events
    );
    for c in net.cores.values() {
        assert_eq!(c.members().count(), 3);
    }
}

/// The mixer's machine stalls past the others' timeout (a loaded laptop):
/// they drop it and move on; when it runs again its roster is answered
/// with theirs, and it comes back as a participant with a fresh nonce
/// instead of mixing for nobody and ending alone.
#[test]
fn a_mixer_that_stalled_past_the_timeout_comes_back_as_a_participant() {
    let people = vec![
        member("ann", Reach::Cone, 1000),
        member("bob", Reach::Cone, 1000),
        member("cat", Reach::Cone, 1000),
        member("dan", Reach::Cone, 1000),
    ];
    let mut net = Net::new(&people);
    net.start("ann", &["bob", "cat", "dan"]);
    net.run(3_000);
    assert_eq!(net.live_mixers(), BTreeSet::from(["ann".to_owned()]));
    let old_nonce = net.cores["ann"].me.nonce;
    // ann neither runs nor is heard for 1.5 s: past the mixer timeout,
    // short of the participants'.
    net.dead.insert("ann".into());
    net.run(1_500);
    net.dead.remove("ann");
    net.run(3_000);
    assert_eq!(net.live_mixers(), BTreeSet::from(["bob".to_owned()]));
    for (n, c) in &net.cores {
        assert_eq!(c.state(), ConfState::Joined, "{n}");
        let names: Vec<&str> = c.members().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["ann", "bob", "cat", "dan"], "{n}");
    }
    let ann = &net.cores["ann"];
    assert_ne!(ann.me.nonce, old_nonce, "a fresh nonce, fresh leg keys");
    assert!(net.cores.values().all(|c| {
        c.members()
            .any(|m| m.name == "ann" && m.nonce == ann.me.nonce)
    }));
    assert_eq!(ann.legs().len(), 1, "one leg, to the new mixer");
    assert_eq!(ann.legs()[0].peer, "bob");
}
