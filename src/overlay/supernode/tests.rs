//! The directory's digests, in the simulator: steady state costs one
//! small exchange per (home, owner) pair, a record an owner lost is put
//! back by the next round, and a record whose owners all die is re-homed.

use super::*;
use crate::sim::{Node, Overlay, OverlaySpec};

fn overlay(supernodes: usize, clients: usize) -> Overlay {
    let spec = OverlaySpec {
        seed: 15,
        supernodes,
        clients,
        converged: true,
        client_spread_ms: 5_000,
        ..Default::default()
    };
    let mut o = Overlay::build(&spec);
    o.sim.keep_events = false;
    // Attach, publish, and let the first rounds repair what arrived out
    // of order while everyone started at once.
    o.sim.run_for(40_000);
    o
}

fn sn_mut(o: &mut Overlay, s: usize) -> &mut SupernodeCore {
    match o.sim.node_mut(s) {
        Node::Supernode(sn) => sn,
        Node::Client(_) => panic!("not a supernode"),
    }
}

/// (directory bytes sent, digest repairs, Checks' worth of store
/// timeouts) summed over the supernodes.
fn totals(o: &Overlay) -> (u64, u64, u64) {
    o.supernodes.iter().fold((0, 0, 0), |t, &s| {
        let st = o.sim.supernode(s).unwrap().stats();
        (
            t.0 + st.directory_bytes_sent,
            t.1 + st.digest_repairs,
            t.2 + st.digests_sent,
        )
    })
}

/// How many of `name`'s owners (by the ring) hold its record.
fn holders(o: &Overlay, name: &str) -> usize {
    o.supernodes
        .iter()
        .filter(|&&s| o.sim.is_alive(s) && o.sim.supernode(s).unwrap().holds(name).is_some())
        .count()
}

#[test]
fn steady_state_is_one_digest_per_owner_and_nothing_to_repair() {
    let mut o = overlay(8, 800);
    // Everyone published and is held three times.
    for i in 0..800 {
        assert!(holders(&o, &Overlay::username(i)) >= 3, "user {i}");
    }
    // Each client has a primary and a backup home; only the primary
    // claims its record at the owners.
    for &s in &o.supernodes {
        let sn = o.sim.supernode(s).unwrap();
        let backups = sn.clients.values().filter(|c| !c.primary).count();
        assert!(backups > 0, "every client's backup is elsewhere?");
        assert!(
            sn.clients
                .values()
                .all(|c| c.primary || c.owners.is_empty())
        );
        for (name, h) in &sn.records {
            assert!(h.claims.len() <= 1, "{name} claimed by {:?}", h.claims);
        }
    }
    let before = totals(&o);
    o.sim.run_for(10_000);
    let after = totals(&o);
    let (bytes, repairs, digests) = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
    assert_eq!(repairs, 0, "nothing differs in steady state");
    // Two rounds; each supernode is a home for some records at each of
    // the other seven.
    assert!((2 * 8..=2 * 8 * 7).contains(&digests), "{digests} digests");
    // Nothing but digests and their (empty) answers: no Check, no Store.
    // A home holds some 40-80 records at each owner here, so its digests
    // are split in 2 to 8 parts, not the finest 64.
    let most = digests * (3 + 13 * 8 + 3);
    assert!(bytes <= most, "{bytes} B for {digests} digests");
    // Per-record checks cost ~50 B per record and owner per round: 800
    // users x 2 homes x 3 owners x 2 rounds x 50 B = 480 KB here.
    assert!(bytes < 480_000 / 10, "{bytes} B");
}

#[test]
fn a_record_an_owner_lost_is_back_after_one_round() {
    let mut o = overlay(8, 400);
    let name = Overlay::username(17);
    let owner = *o
        .supernodes
        .iter()
        .find(|&&s| o.sim.supernode(s).unwrap().holds(&name).is_some())
        .unwrap();
    // The owner forgets the record (and nothing else tells it).
    let sn = sn_mut(&mut o, owner);
    let key = sn
        .records
        .range(user_range(&name))
        .map(|(k, _)| k.clone())
        .next()
        .unwrap();
    let h = sn.records.remove(&key).unwrap();
    for &(home, seq) in &h.claims {
        claim_sum(&mut sn.claim_sums, home, h.key, seq, false);
    }
    assert!(o.sim.supernode(owner).unwrap().holds(&name).is_none());
    let repairs0 = totals(&o).1;
    o.sim.run_for(6_000);
    assert!(
        o.sim.supernode(owner).unwrap().holds(&name).is_some(),
        "the digest found the difference and the home sent the record again"
    );
    let repaired = totals(&o).1 - repairs0;
    // One bucket at each of the record's homes (two attachments).
    assert!((1..=2).contains(&repaired), "{repaired} buckets repaired");
}

/// Every live supernode's index of its clients by record name says what
/// its client table says.
fn assert_client_index(o: &Overlay) {
    for &s in &o.supernodes {
        let Some(sn) = o.sim.supernode(s) else {
            continue;
        };
        let mut want: HashMap<String, Vec<SocketAddr>> = HashMap::new();
        for (a, c) in &sn.clients {
            want.entry(c.record_name.clone()).or_default().push(*a);
        }
        let mut got = sn.by_record.clone();
        for v in want.values_mut().chain(got.values_mut()) {
            v.sort();
        }
        assert_eq!(got, want, "supernode {s}");
    }
}

#[test]
fn a_stale_claim_is_dropped_by_the_repair() {
    // An owner counts a claim its home no longer makes (a lost Unclaim):
    // the digests differ and the repair leaves the owner's sums equal to
    // the home's again, so the next round has nothing to repair.
    let mut o = overlay(8, 400);
    // A home and one of the owners it sends digests to.
    let home = o.supernodes[1];
    let home_id = o.sim.supernode(home).unwrap().me;
    let owner_id = o
        .sim
        .supernode(home)
        .unwrap()
        .clients
        .values()
        .flat_map(|c| c.owners.iter().copied())
        .find(|id| *id != home_id)
        .unwrap();
    let owner = *o
        .supernodes
        .iter()
        .find(|&&s| o.sim.supernode(s).unwrap().me == owner_id)
        .unwrap();
    let sn = sn_mut(&mut o, owner);
    // A record the owner holds that this home does not claim.
    let h = sn
        .records
        .values_mut()
        .find(|h| h.claims.iter().all(|(id, _)| *id != home_id))
        .unwrap();
    h.claims.push((home_id, h.seq));
    let (key, seq) = (h.key, h.seq);
    claim_sum(&mut sn.claim_sums, home_id, key, seq, true);
    let repairs0 = totals(&o).1;
    o.sim.run_for(5_000);
    let first = totals(&o).1 - repairs0;
    assert_eq!(first, 1, "the one bucket repaired");
    o.sim.run_for(5_000);
    assert_eq!(totals(&o).1 - repairs0, first, "and then equal");
    assert_client_index(&o);
}

#[test]
fn records_whose_owners_all_die_are_rehomed_within_ten_seconds() {
    let mut o = overlay(12, 300);
    // A user whose two supernodes are not among its three owners.
    let ids: Vec<(u64, usize)> = o
        .supernodes
        .iter()
        .map(|&s| (o.sim.supernode(s).unwrap().me, s))
        .collect();
    let owners_of = |name: &str| -> Vec<usize> {
        let key = user_key(name);
        let mut ring = ids.clone();
        ring.sort_unstable_by_key(|(id, _)| id.wrapping_sub(key));
        ring[..3].iter().map(|(_, s)| *s).collect()
    };
    let (name, owners) = (0..300)
        .find_map(|i| {
            let name = Overlay::username(i);
            let owners = owners_of(&name);
            let homes: Vec<usize> = o
                .sim
                .client(o.clients[i])
                .unwrap()
                .attached()
                .filter_map(|a| o.sim.index_of(&a))
                .collect();
            (homes.len() == 2 && homes.iter().all(|h| !owners.contains(h)))
                .then_some((name, owners))
        })
        .expect("a user away from its owners");
    for &s in &owners {
        o.sim.kill(s);
    }
    let mut at = None;
    for t in 1..=10 {
        o.sim.run_for(1_000);
        if holders(&o, &name) >= 1 {
            at = Some(t);
            break;
        }
    }
    assert!(at.is_some(), "re-homed within 10 s");
    o.sim.run_for(10_000);
    assert!(holders(&o, &name) >= 3, "and on three live owners again");
    // Clients of the dead supernodes attached elsewhere.
    assert_client_index(&o);
}

// Several devices of one user (issue 17).

use crate::overlay::{ClientEvent, LookupOutcome};
use crate::sim::{NodeEvent, sn_addr};
use rand::SeedableRng;

const TEST_KIND: u8 = crate::overlay::envelope::kind::TEST;

fn client_mut(o: &mut Overlay, i: usize) -> &mut crate::overlay::ClientCore {
    o.sim.client_mut(i).unwrap()
}

/// Run for `ms`, collecting clients' events.
fn run(o: &mut Overlay, log: &mut Vec<(usize, ClientEvent)>, ms: u64) {
    let until = o.sim.now + ms;
    while o.sim.now < until {
        o.sim.run_for(50);
        for (_, node, e) in o.sim.take_events() {
            if let NodeEvent::Client(c) = e {
                log.push((node, c));
            }
        }
    }
}

fn lookup(
    o: &mut Overlay,
    log: &mut Vec<(usize, ClientEvent)>,
    who: usize,
    name: &str,
) -> LookupOutcome {
    let now = o.sim.now;
    let qid = client_mut(o, who).lookup(now, name);
    o.sim.touched(who);
    run(o, log, 2_000);
    log.iter()
        .find_map(|(n, e)| match e {
            ClientEvent::Lookup {
                qid: q, outcome, ..
            } if *n == who && *q == qid => Some(outcome.clone()),
            _ => None,
        })
        .expect("lookup answered")
}

fn send(o: &mut Overlay, from: usize, to: &str, payload: &[u8]) -> crate::overlay::EnvelopeId {
    let (now, unix) = (o.sim.now, o.sim.unix());
    let mut rng = rand::rngs::StdRng::seed_from_u64(payload.len() as u64 + now.get());
    let id = client_mut(o, from).send_envelope(now, unix, &mut rng, to, TEST_KIND, payload, true);
    o.sim.touched(from);
    id
}

/// How many envelopes with `payload` node `n` received.
fn got(log: &[(usize, ClientEvent)], n: usize, payload: &[u8]) -> usize {
    log.iter()
        .filter(|(i, e)| {
            *i == n && matches!(e, ClientEvent::Envelope { payload: p, .. } if p == payload)
        })
        .count()
}

fn set_status(o: &mut Overlay, i: usize, s: Status) {
    client_mut(o, i).set_status(s, "");
    o.sim.touched(i);
}

#[test]
fn two_devices_are_found_merged_and_both_get_envelopes() {
    let mut o = overlay(8, 2);
    o.sim.keep_events = true;
    o.sim.keep_supernode_events = false;
    let bob = o.clients[0];
    // alice on two devices, attached to different supernodes.
    let a1 = o.add_device("alice", vec![sn_addr(1)], 101);
    let a2 = o.add_device("alice", vec![sn_addr(6)], 102);
    let mut log = Vec::new();
    run(&mut o, &mut log, 8_000);
    let p1 = o.sim.client(a1).unwrap().primary();
    let p2 = o.sim.client(a2).unwrap().primary();
    assert!(p1.is_some() && p2.is_some() && p1 != p2, "{p1:?} {p2:?}");
    // Each owner holds both device records.
    let owners = o
        .supernodes
        .iter()
        .filter(|&&s| o.sim.supernode(s).unwrap().device_records("alice") == 2)
        .count();
    assert!(owners >= 3, "{owners} owners hold both devices");

    // A lookup answers both; presence merges them.
    client_mut(&mut o, bob).watch("alice");
    o.sim.touched(bob);
    set_status(&mut o, a1, Status::Away);
    set_status(&mut o, a2, Status::DoNotDisturb);
    run(&mut o, &mut log, 3_000);
    let out = lookup(&mut o, &mut log, bob, "alice");
    let LookupOutcome::Online(r) = out else {
        panic!("{out:?}")
    };
    assert_eq!(r.status, Status::Away, "the most available device speaks");
    assert_eq!(o.sim.client(bob).unwrap().known_devices("alice").len(), 2);
    // Invisible counts as offline to others: the other device speaks.
    set_status(&mut o, a1, Status::Invisible);
    run(&mut o, &mut log, 3_000);
    let out = lookup(&mut o, &mut log, bob, "alice");
    assert!(
        matches!(&out, LookupOutcome::Online(r) if r.status == Status::DoNotDisturb),
        "{out:?}"
    );
    set_status(&mut o, a1, Status::Online);
    run(&mut o, &mut log, 3_000);

    // An envelope reaches both devices, and bob hears of it once.
    let id = send(&mut o, bob, "alice", b"hello alice");
    run(&mut o, &mut log, 4_000);
    assert_eq!(got(&log, a1, b"hello alice"), 1);
    assert_eq!(got(&log, a2, b"hello alice"), 1);
    let outcomes: Vec<&ClientEvent> = log
        .iter()
        .filter(|(n, e)| {
            *n == bob
                && matches!(e, ClientEvent::EnvelopeDelivered { id: i }
                    | ClientEvent::EnvelopeStored { id: i }
                    | ClientEvent::EnvelopeFailed { id: i, .. } if *i == id)
        })
        .map(|(_, e)| e)
        .collect();
    assert_eq!(outcomes, vec![&ClientEvent::EnvelopeDelivered { id }]);

    // One device leaves: alice stays online, and the envelope sent now
    // reaches the other at once and the returning one from the mailbox.
    let (now, unix) = (o.sim.now, o.sim.unix());
    client_mut(&mut o, a2).shutdown(now, unix);
    o.sim.touched(a2);
    run(&mut o, &mut log, 1_000);
    o.sim.kill(a2);
    run(&mut o, &mut log, 2_000);
    // Watching: a device going offline leaves alice online.
    let watched = log.iter().rev().find_map(|(n, e)| match e {
        ClientEvent::PresenceChanged { online, record } if *n == bob => {
            Some((*online, record.cert.ed25519))
        }
        _ => None,
    });
    let a1_key = o.sim.client(a1).unwrap().certificate().ed25519;
    assert_eq!(watched, Some((true, a1_key)), "merged: alice online on a1");
    let out = lookup(&mut o, &mut log, bob, "alice");
    assert!(matches!(out, LookupOutcome::Online(_)), "{out:?}");
    let id2 = send(&mut o, bob, "alice", b"while one was out");
    run(&mut o, &mut log, 4_000);
    assert_eq!(got(&log, a1, b"while one was out"), 1);
    assert_eq!(got(&log, a2, b"while one was out"), 0);
    assert!(
        log.iter()
            .any(|(n, e)| *n == bob && *e == ClientEvent::EnvelopeDelivered { id: id2 })
    );
    let restarted = o.sim.client(a2).unwrap().restarted(o.sim.now);
    o.sim
        .replace(a2, crate::sim::Node::Client(Box::new(restarted)));
    run(&mut o, &mut log, 12_000);
    assert_eq!(got(&log, a2, b"while one was out"), 1, "from the mailbox");
    assert_eq!(got(&log, a1, b"while one was out"), 1, "exactly once");
    assert_eq!(got(&log, a2, b"hello alice"), 1, "exactly once");
}

/// An envelope to our own username goes to our other devices, never back
/// to the sender; a user's only device hears it delivered (to nobody) and
/// seals nothing (issue 17: sent-message copies).
#[test]
fn an_envelope_to_ourselves_reaches_our_other_devices_only() {
    let mut o = overlay(8, 2);
    o.sim.keep_events = true;
    o.sim.keep_supernode_events = false;
    let bob = o.clients[0];
    let a1 = o.add_device("alice", vec![sn_addr(1)], 101);
    let a2 = o.add_device("alice", vec![sn_addr(6)], 102);
    let mut log = Vec::new();
    run(&mut o, &mut log, 8_000);
    let id = send(&mut o, a1, "Alice", b"sent by me");
    run(&mut o, &mut log, 4_000);
    assert_eq!(got(&log, a2, b"sent by me"), 1);
    assert_eq!(got(&log, a1, b"sent by me"), 0, "not to the sender");
    assert!(
        log.iter()
            .any(|(n, e)| *n == a1 && *e == ClientEvent::EnvelopeDelivered { id })
    );

    // bob has one device: nothing to copy, delivered at once.
    let sent_before = o.sim.client(bob).unwrap().stats.envelopes_sent;
    let me = Overlay::username(0);
    let id = send(&mut o, bob, &me, b"to my other devices");
    run(&mut o, &mut log, 4_000);
    assert_eq!(got(&log, bob, b"to my other devices"), 0);
    assert!(
        log.iter()
            .any(|(n, e)| *n == bob && *e == ClientEvent::EnvelopeDelivered { id })
    );
    assert_eq!(
        o.sim.client(bob).unwrap().stats.envelopes_sent,
        sent_before,
        "nothing sealed"
    );
}

/// Two devices of one account starting together: the first looked its
/// own devices up before the second was in the directory (it has one
/// device, itself), so what it sends its account meanwhile finds it
/// alone. Once the second is heard from, those envelopes reach it, once
/// each (in any order: the network keeps none); one that found it alone
/// longer ago than
/// `ALONE_KEEP_MS` does not.
#[test]
fn envelopes_that_found_us_alone_reach_a_device_that_came_with_us() {
    use crate::overlay::client::ALONE_KEEP_MS;
    let mut o = overlay(8, 1);
    o.sim.keep_events = true;
    o.sim.keep_supernode_events = false;
    let a1 = o.add_device("alice", vec![sn_addr(1)], 101);
    let mut log = Vec::new();
    run(&mut o, &mut log, 8_000);
    send(&mut o, a1, "alice", b"long ago");
    run(&mut o, &mut log, ALONE_KEEP_MS + 1_000);
    send(&mut o, a1, "alice", b"first, alone");
    run(&mut o, &mut log, 2_000);

    let a2 = o.add_device("alice", vec![sn_addr(6)], 102);
    run(&mut o, &mut log, 4_000);
    // a1's list of its devices (looked up 2 s before a2 came) says alone.
    send(&mut o, a1, "alice", b"second, alone");
    run(&mut o, &mut log, 2_000);
    assert_eq!(got(&log, a2, b"second, alone"), 0, "not yet heard from a2");
    assert_eq!(o.sim.client(a1).unwrap().stats.envelopes_late_copies, 0);

    send(&mut o, a2, "alice", b"hello from a2");
    run(&mut o, &mut log, 4_000);
    assert_eq!(got(&log, a1, b"hello from a2"), 1);
    assert_eq!(
        (
            got(&log, a2, b"long ago"),
            got(&log, a2, b"first, alone"),
            got(&log, a2, b"second, alone")
        ),
        (0, 1, 1)
    );
    assert_eq!(o.sim.client(a1).unwrap().stats.envelopes_late_copies, 2);
    // The late copies report nothing to a1's caller; a new envelope
    // goes to a2 at once, and nothing is sent twice.
    send(&mut o, a1, "alice", b"after");
    run(&mut o, &mut log, 4_000);
    assert_eq!(got(&log, a2, b"after"), 1);
    assert_eq!(got(&log, a2, b"first, alone"), 1);
    assert_eq!(got(&log, a1, b"first, alone"), 0);
}

/// Issue 17, a device added later: our records of our own devices,
/// cached before it came, lack it. Once it is heard from they are looked
/// up again, so our copies reach it; an envelope to it alone finds it
/// after one fresh lookup.
#[test]
fn a_device_added_later_gets_our_copies() {
    use crate::overlay::Devices;
    let mut o = overlay(8, 1);
    o.sim.keep_events = true;
    o.sim.keep_supernode_events = false;
    let a1 = o.add_device("alice", vec![sn_addr(1)], 101);
    let a2 = o.add_device("alice", vec![sn_addr(6)], 102);
    let mut log = Vec::new();
    run(&mut o, &mut log, 8_000);
    send(&mut o, a1, "alice", b"before");
    run(&mut o, &mut log, 4_000);
    assert_eq!(got(&log, a2, b"before"), 1);

    let a3 = o.add_device("alice", vec![sn_addr(3)], 103);
    run(&mut o, &mut log, 4_000);
    send(&mut o, a3, "alice", b"hello from the new one");
    run(&mut o, &mut log, 4_000);
    assert_eq!(got(&log, a1, b"hello from the new one"), 1);
    send(&mut o, a1, "alice", b"after");
    run(&mut o, &mut log, 4_000);
    assert_eq!((got(&log, a2, b"after"), got(&log, a3, b"after")), (1, 1));

    let a4 = o.add_device("alice", vec![sn_addr(5)], 104);
    run(&mut o, &mut log, 4_000);
    let k4 = o.sim.client(a4).unwrap().certificate().x25519;
    let (now, unix) = (o.sim.now, o.sim.unix());
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    client_mut(&mut o, a1).send_envelope_to(
        now,
        unix,
        &mut rng,
        ("alice", Devices::Only(k4)),
        TEST_KIND,
        b"to the fourth alone",
        false,
    );
    o.sim.touched(a1);
    run(&mut o, &mut log, 4_000);
    assert_eq!(got(&log, a4, b"to the fourth alone"), 1);
    assert_eq!(got(&log, a2, b"to the fourth alone"), 0);
}

#[test]
fn a_users_device_records_are_capped_and_the_newest_win() {
    let mut o = overlay(8, 1);
    o.sim.keep_events = true;
    o.sim.keep_supernode_events = false;
    let asker = o.clients[0];
    let mut devices = Vec::new();
    for i in 0..(MAX_DEVICES + 2) {
        devices.push(o.add_device("carol", vec![sn_addr(i % 8)], 200 + i as u64));
        o.sim.run_for(300);
    }
    let mut log = Vec::new();
    run(&mut o, &mut log, 10_000);
    let held: Vec<usize> = o
        .supernodes
        .iter()
        .map(|&s| o.sim.supernode(s).unwrap().device_records("carol"))
        .collect();
    assert!(held.iter().all(|&n| n <= MAX_DEVICES), "{held:?}");
    assert!(
        held.iter().filter(|&&n| n == MAX_DEVICES).count() >= 3,
        "{held:?}"
    );
    let capped: u64 = o
        .supernodes
        .iter()
        .map(|&s| o.sim.supernode(s).unwrap().stats().records_over_device_cap)
        .sum();
    assert!(capped > 0);
    let out = lookup(&mut o, &mut log, asker, "carol");
    assert!(matches!(out, LookupOutcome::Online(_)), "{out:?}");
    assert_eq!(
        o.sim.client(asker).unwrap().known_devices("carol").len(),
        MAX_DEVICES
    );
}

/// Issue 17, calls: envelopes to every device, to one device or to all
/// but one, whatever their kind; a pinned device takes the single-device
/// kinds (calls, ICE) whoever wrote last.
#[test]
fn envelopes_to_chosen_devices_and_a_pinned_one() {
    use crate::overlay::Devices;
    use crate::overlay::envelope::kind;
    let mut o = overlay(8, 2);
    o.sim.keep_events = true;
    o.sim.keep_supernode_events = false;
    let bob = o.clients[0];
    let a1 = o.add_device("alice", vec![sn_addr(1)], 101);
    let a2 = o.add_device("alice", vec![sn_addr(6)], 102);
    let mut log = Vec::new();
    run(&mut o, &mut log, 8_000);
    let key = |o: &Overlay, i: usize| o.sim.client(i).unwrap().certificate().x25519;
    let (k1, k2) = (key(&o, a1), key(&o, a2));
    let to = |o: &mut Overlay, devices: Devices, k: u8, payload: &[u8]| {
        let (now, unix) = (o.sim.now, o.sim.unix());
        let mut rng = rand::rngs::StdRng::seed_from_u64(payload.len() as u64 + now.get());
        let id = client_mut(o, bob).send_envelope_to(
            now,
            unix,
            &mut rng,
            ("alice", devices),
            k,
            payload,
            false,
        );
        o.sim.touched(bob);
        id
    };
    // A call kind to every device, to one, to all but one.
    to(&mut o, Devices::Every, kind::CALL_FIRST, b"invite");
    run(&mut o, &mut log, 3_000);
    assert_eq!(got(&log, a1, b"invite"), 1);
    assert_eq!(got(&log, a2, b"invite"), 1);
    to(
        &mut o,
        Devices::Only(k2),
        kind::CALL_FIRST,
        b"to the laptop",
    );
    to(
        &mut o,
        Devices::Except(k2),
        kind::CALL_FIRST,
        b"not the laptop",
    );
    run(&mut o, &mut log, 3_000);
    assert_eq!(
        (
            got(&log, a1, b"to the laptop"),
            got(&log, a2, b"to the laptop")
        ),
        (0, 1)
    );
    assert_eq!(
        (
            got(&log, a1, b"not the laptop"),
            got(&log, a2, b"not the laptop")
        ),
        (1, 0)
    );
    // A device alice does not have: the envelope fails (after one
    // fresh lookup of her devices).
    let id = to(&mut o, Devices::Only([9; 32]), kind::CALL_FIRST, b"nobody");
    run(&mut o, &mut log, 1_000);
    assert!(
        log.iter().any(|(n, e)| *n == bob
            && matches!(e, ClientEvent::EnvelopeFailed { id: i, .. } if *i == id)),
        "no such device"
    );
    // Pinned: an ICE envelope goes to the pinned device, then (unpinned)
    // to the one that last wrote to us.
    let (now, unix) = (o.sim.now, o.sim.unix());
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let bob_name = o.sim.client(bob).unwrap().username().to_owned();
    client_mut(&mut o, a2).send_envelope(
        now,
        unix,
        &mut rng,
        &bob_name,
        kind::CALL_FIRST,
        b"hi bob",
        false,
    );
    o.sim.touched(a2);
    run(&mut o, &mut log, 2_000);
    client_mut(&mut o, bob).pin_device("alice", Some(k1));
    to(&mut o, Devices::ByKind, kind::ICE_FIRST, b"ice pinned");
    run(&mut o, &mut log, 2_000);
    assert_eq!(
        (got(&log, a1, b"ice pinned"), got(&log, a2, b"ice pinned")),
        (1, 0)
    );
    client_mut(&mut o, bob).pin_device("alice", None);
    to(&mut o, Devices::ByKind, kind::ICE_FIRST, b"ice unpinned");
    run(&mut o, &mut log, 2_000);
    assert_eq!(
        (
            got(&log, a1, b"ice unpinned"),
            got(&log, a2, b"ice unpinned")
        ),
        (0, 1)
    );
}

#[test]
fn in_flight_changes_explain_a_digest_and_nothing_else_does() {
    let h = |k, s| claim_hash(k, s);
    let ours = (3u32, h(1, 10) ^ h(2, 20) ^ h(3, 31));
    // The owner has not seen our push of 3 at seq 31 yet (it holds 30).
    let push = Inflight {
        bucket: 0,
        before: Some(h(3, 30)),
        after: Some(h(3, 31)),
    };
    let owner = (3, h(1, 10) ^ h(2, 20) ^ h(3, 30));
    assert!(explained(ours, owner, &[push]));
    // Nor our unclaim of 4.
    let unclaim = Inflight {
        bucket: 0,
        before: Some(h(4, 40)),
        after: None,
    };
    assert!(explained(ours, (4, owner.1 ^ h(4, 40)), &[push, unclaim]));
    assert!(explained(ours, (4, ours.1 ^ h(4, 40)), &[push, unclaim]));
    assert!(explained(ours, ours, &[push, unclaim]));
    // A record the owner lost is not explained by anything in flight.
    assert!(!explained(ours, (2, h(1, 10) ^ h(2, 20)), &[push, unclaim]));
    assert!(!explained(ours, owner, &[]));
    // Too many changes at once: repaired rather than searched.
    let many = vec![push; MAX_INFLIGHT_PER_BUCKET + 1];
    assert!(!explained(ours, ours, &many));
    // A burst: 30 refreshes and 2 unclaims in flight, of which the owner
    // has seen every third.
    let mut changes = Vec::new();
    let (mut ours, mut theirs) = ((2u32, h(90, 1) ^ h(91, 1)), (2u32, h(90, 1) ^ h(91, 1)));
    for k in 0..30u64 {
        let (old, new) = (h(k, 1), h(k, 2));
        ours = (ours.0 + 1, ours.1 ^ new);
        theirs = (theirs.0 + 1, theirs.1 ^ if k % 3 == 0 { new } else { old });
        changes.push(Inflight {
            bucket: 0,
            before: Some(old),
            after: Some(new),
        });
    }
    for k in [90, 91] {
        ours = (ours.0 - 1, ours.1 ^ h(k, 1));
        changes.push(Inflight {
            bucket: 0,
            before: Some(h(k, 1)),
            after: None,
        });
    }
    // The owner has not seen the first unclaim.
    theirs = (theirs.0 - 1, theirs.1 ^ h(91, 1));
    assert!(explained(ours, theirs, &changes));
    // The same, but the owner also lost a record.
    assert!(!explained(
        ours,
        (theirs.0 - 1, theirs.1 ^ h(5, 2)),
        &changes
    ));
    assert!(!explained(
        ours,
        (theirs.0 - 1, theirs.1 ^ h(5, 1)),
        &changes
    ));
    // The right hash with the wrong count.
    assert!(!explained(ours, (theirs.0 + 1, theirs.1), &changes));
}

/// Status changes pushed all the time (so claims are in flight whenever a
/// digest goes out) and refreshes every 10 s, for ten minutes: no digest
/// is repaired, refreshes reach the owners as deltas only when the
/// owners' copy is about to run out, and every owner shows every user
/// online all along.
#[test]
fn refreshes_go_as_deltas_and_claims_in_flight_are_not_repaired() {
    let spec = OverlaySpec {
        seed: 16,
        supernodes: 8,
        clients: 400,
        converged: true,
        client_spread_ms: 5_000,
        client: crate::overlay::client::ClientConfig {
            refresh_ms: 10_000,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut o = Overlay::build(&spec);
    o.sim.keep_events = false;
    o.sim.run_for(40_000);
    let stat = |o: &Overlay, f: fn(&SupernodeStats) -> u64| -> u64 {
        o.supernodes
            .iter()
            .map(|&s| f(o.sim.supernode(s).unwrap().stats()))
            .sum()
    };
    let repairs0 = stat(&o, |s| s.digest_repairs);
    let mut n = 0usize;
    for step in 0..6_000u64 {
        // A status change every 100 ms among 40 users, each pushed at once.
        let i = o.clients[(step as usize * 7919) % 40];
        n += 1;
        client_mut(&mut o, i).set_status(Status::Online, &format!("m{n}"));
        o.sim.touched(i);
        o.sim.run_for(100);
        if step % 100 == 99 {
            let secs = o.sim.unix().secs();
            for &s in &o.supernodes {
                let sn = o.sim.supernode(s).unwrap();
                for (name, h) in &sn.records {
                    let rec = PresenceRecord::decode(&h.bytes).unwrap();
                    assert!(
                        rec.is_online(secs),
                        "{name} shown offline at {s} at {secs:?}"
                    );
                }
            }
        }
    }
    let repairs = stat(&o, |s| s.digest_repairs) - repairs0;
    let in_flight = stat(&o, |s| s.digest_in_flight);
    let held = stat(&o, |s| s.refreshes_held);
    let sent = stat(&o, |s| s.refreshes_sent);
    let unapplied = stat(&o, |s| s.refreshes_unapplied);
    assert_eq!(
        repairs, 0,
        "{in_flight} buckets differed by claims in flight; held {held}, sent {sent}, \
         unapplied {unapplied}"
    );
    assert!(
        in_flight > 0,
        "no digest crossed a push: the test shows nothing"
    );
    assert!(sent > 0 && held > 10 * sent, "held {held}, sent {sent}");
    assert_eq!(unapplied, 0);
}
