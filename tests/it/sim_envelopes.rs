//! Sealed envelopes through the simulated overlay: delivered to an online
//! user with the sender verified; stored on the owners for a user who left
//! cleanly or crashed, and delivered once when they come back (even after
//! an owner died meanwhile); unknown users and unstored envelopes to
//! offline users fail with a reason.

use natter::overlay::{ClientEvent, EnvelopeId};
use natter::sim::{Node, NodeEvent, Overlay, OverlaySpec};
use rand::SeedableRng;
use rand::rngs::StdRng;

const TEST_KIND: u8 = 250;

fn send(
    o: &mut Overlay,
    rng: &mut StdRng,
    from: usize,
    to: &str,
    payload: &[u8],
    store: bool,
) -> EnvelopeId {
    let i = o.clients[from];
    let (now, unix) = (o.sim.now, o.sim.unix());
    let id = o
        .sim
        .client_mut(i)
        .unwrap()
        .send_envelope(now, unix, rng, to, TEST_KIND, payload, store);
    o.sim.touched(i);
    id
}

/// Run until `pred` matches an event (returning it) or `ms` pass.
fn wait(
    o: &mut Overlay,
    log: &mut Vec<(usize, ClientEvent)>,
    ms: u64,
    mut pred: impl FnMut(usize, &ClientEvent) -> bool,
) -> Option<(usize, ClientEvent)> {
    let until = o.sim.now + ms;
    while o.sim.now < until {
        o.sim.run_for(50);
        for (_, node, e) in o.sim.take_events() {
            if let NodeEvent::Client(c) = e {
                log.push((node, c));
            }
        }
        if let Some(hit) = log.iter().find(|(n, e)| pred(*n, e)) {
            return Some(hit.clone());
        }
    }
    None
}

fn delivered_to(log: &[(usize, ClientEvent)], node: usize, want: &EnvelopeId) -> usize {
    log.iter()
        .filter(|(n, e)| *n == node && matches!(e, ClientEvent::Envelope { id, .. } if id == want))
        .count()
}

#[test]
fn envelopes_reach_online_offline_and_returning_users() {
    let _turn = scenario!();
    let spec = OverlaySpec {
        seed: 3,
        supernodes: 8,
        clients: 6,
        converged: true,
        client_spread_ms: 1_000,
        ..Default::default()
    };
    let mut o = Overlay::build(&spec);
    let mut rng = StdRng::seed_from_u64(1);
    let mut log = Vec::new();
    o.sim.run_for(10_000);
    o.sim.take_events();

    // Online: delivered, opened, sender verified.
    let id = send(&mut o, &mut rng, 0, "user1", b"hello bob", true);
    let c0 = o.clients[0];
    let c1 = o.clients[1];
    wait(&mut o, &mut log, 5_000, |n, e| {
        n == c0 && *e == ClientEvent::EnvelopeDelivered { id }
    })
    .expect("delivered");
    let got = log
        .iter()
        .find(|(n, e)| *n == c1 && matches!(e, ClientEvent::Envelope { id: i, .. } if *i == id));
    let Some((
        _,
        ClientEvent::Envelope {
            from,
            kind,
            payload,
            ..
        },
    )) = got
    else {
        panic!("user1 did not get the envelope: {log:?}");
    };
    assert_eq!(from.username, "user0");
    assert_eq!(*kind, TEST_KIND);
    assert_eq!(payload, b"hello bob");

    // user2 leaves cleanly; an envelope for them is stored.
    let c2 = o.clients[2];
    let (now, unix) = (o.sim.now, o.sim.unix());
    o.sim.client_mut(c2).unwrap().shutdown(now, unix);
    o.sim.touched(c2);
    o.sim.run_for(1_000);
    o.sim.kill(c2);
    o.sim.run_for(2_000);
    let stored = send(&mut o, &mut rng, 0, "user2", b"while you were out", true);
    wait(&mut o, &mut log, 5_000, |n, e| {
        n == c0 && *e == ClientEvent::EnvelopeStored { id: stored }
    })
    .unwrap_or_else(|| panic!("not stored: {log:?}"));
    let holders: Vec<usize> = o
        .supernodes
        .iter()
        .copied()
        .filter(|&s| o.sim.supernode(s).unwrap().mailbox_holds("user2", &stored))
        .collect();
    assert_eq!(holders.len(), 3, "kept by the three owners");
    // Without asking to be stored it fails, with the reason.
    let unstored = send(&mut o, &mut rng, 0, "user2", b"x", false);
    let (_, e) = wait(&mut o, &mut log, 5_000, |n, e| {
        n == c0 && matches!(e, ClientEvent::EnvelopeFailed { id, .. } if *id == unstored)
    })
    .expect("answered");
    assert!(format!("{e:?}").contains("offline"), "{e:?}");

    // One owner dies meanwhile; the mailbox survives on the others and
    // moves to the new owner.
    o.sim.kill(holders[0]);
    o.sim.run_for(20_000);
    let holders_now = o
        .supernodes
        .iter()
        .filter(|&&s| {
            o.sim.is_alive(s) && o.sim.supernode(s).unwrap().mailbox_holds("user2", &stored)
        })
        .count();
    assert_eq!(holders_now, 3, "re-replicated after an owner died");

    // user2 comes back: the owners push it at their first record.
    let restarted = o.sim.client(c2).unwrap().restarted(o.sim.now);
    o.sim.replace(c2, Node::Client(Box::new(restarted)));
    wait(&mut o, &mut log, 10_000, |n, e| {
        n == c2 && matches!(e, ClientEvent::Envelope { id, .. } if *id == stored)
    })
    .unwrap_or_else(|| panic!("not delivered on return: {log:?}"));
    // Acknowledged: the owners delete it, and it is reported once.
    o.sim.run_for(10_000);
    for (_, _, e) in o.sim.take_events() {
        if let NodeEvent::Client(c) = e {
            log.push((c2, c));
        }
    }
    assert_eq!(delivered_to(&log, c2, &stored), 1, "delivered exactly once");
    for &s in &o.supernodes {
        if o.sim.is_alive(s) {
            assert!(
                !o.sim.supernode(s).unwrap().mailbox_holds("user2", &stored),
                "supernode {s} still holds it"
            );
        }
    }

    // user3 crashes (no goodbye): the stale record still names its
    // supernodes; forwarding fails there and the envelope is stored.
    let c3 = o.clients[3];
    o.sim.kill(c3);
    o.sim.run_for(8_000);
    let crash = send(&mut o, &mut rng, 4, "user3", b"are you there?", true);
    let c4 = o.clients[4];
    wait(&mut o, &mut log, 8_000, |n, e| {
        n == c4 && *e == ClientEvent::EnvelopeStored { id: crash }
    })
    .unwrap_or_else(|| panic!("not stored for the crashed user: {log:?}"));
    let restarted = o.sim.client(c3).unwrap().restarted(o.sim.now);
    o.sim.replace(c3, Node::Client(Box::new(restarted)));
    wait(&mut o, &mut log, 10_000, |n, e| {
        n == c3 && matches!(e, ClientEvent::Envelope { id, .. } if *id == crash)
    })
    .unwrap_or_else(|| panic!("not delivered after the crash: {log:?}"));

    // Nobody by that name.
    let nobody = send(&mut o, &mut rng, 0, "nosuchuser", b"x", true);
    let (_, e) = wait(&mut o, &mut log, 6_000, |n, e| {
        n == c0 && matches!(e, ClientEvent::EnvelopeFailed { id, .. } if *id == nobody)
    })
    .expect("answered");
    assert!(format!("{e:?}").contains("no such user"), "{e:?}");
}
