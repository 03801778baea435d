//! A small simulated overlay: everyone attaches, publishes and is found.

use natter::sim::{Overlay, OverlaySpec};

#[test]
fn small_overlay_converges_and_finds_everyone() {
    let _turn = scenario!();
    let spec = OverlaySpec {
        supernodes: 12,
        clients: 200,
        ..Default::default()
    };
    let mut o = Overlay::build(&spec);
    o.sim.run_for(30_000);
    for &s in &o.supernodes {
        let sn = o.sim.supernode(s).unwrap();
        assert_eq!(
            sn.membership().alive_count(),
            11,
            "supernode {s} membership"
        );
    }
    let attached = o
        .clients
        .iter()
        .filter(|&&c| o.sim.client(c).unwrap().attached().count() == 2)
        .count();
    assert_eq!(attached, 200);
    let pairs: Vec<(usize, usize)> = (0..200).map(|i| (i, (i * 7 + 3) % 200)).collect();
    let rep = o.lookups(&pairs, 10_000, 2_000);
    assert_eq!(rep.online, 200, "{rep:?}");
    assert_eq!(rep.stale, 0);
}

#[test]
fn same_seed_same_run() {
    let _turn = scenario!();
    let run = || {
        let spec = OverlaySpec {
            seed: 9,
            supernodes: 8,
            clients: 100,
            ..Default::default()
        };
        let mut o = Overlay::build(&spec);
        o.sim.run_for(20_000);
        o.sim.kill(o.supernodes[0]);
        o.sim.run_for(10_000);
        (o.sim.stats(), o.sim.take_events())
    };
    assert_eq!(run(), run());
}

/// Issue 14.10: anyone may look a user up, so an invisible user's record
/// carries no address of theirs (a visible user's does).
#[test]
fn an_invisible_users_record_shows_no_address() {
    let _turn = scenario!();
    use natter::overlay::{ClientEvent, LookupOutcome, Status};
    use natter::sim::NodeEvent;
    let spec = OverlaySpec {
        seed: 4,
        supernodes: 4,
        clients: 4,
        ..Default::default()
    };
    let mut o = Overlay::build(&spec);
    o.sim.run_for(20_000);
    let (me, other) = (o.clients[0], o.clients[1]);
    let name = o.sim.client(me).unwrap().username().to_owned();
    let lan: std::net::SocketAddr = "192.168.1.20:40000".parse().unwrap();
    let look = |o: &mut Overlay| {
        let now = o.sim.now;
        let qid = o.sim.client_mut(other).unwrap().lookup(now, &name);
        o.sim.run_for(3_000);
        o.sim
            .take_events()
            .into_iter()
            .find_map(|(_, n, e)| match e {
                NodeEvent::Client(ClientEvent::Lookup {
                    qid: q,
                    outcome: LookupOutcome::Online(r) | LookupOutcome::Offline { record: r, .. },
                    ..
                }) if n == other && q == qid => Some(r.candidates.clone()),
                _ => None,
            })
            .expect("found")
    };
    o.sim.client_mut(me).unwrap().set_candidates(vec![lan]);
    o.sim.run_for(5_000);
    assert!(
        look(&mut o).contains(&lan),
        "control: a visible user's record"
    );
    o.sim
        .client_mut(me)
        .unwrap()
        .set_status(Status::Invisible, "");
    o.sim.run_for(5_000);
    assert_eq!(look(&mut o), vec![], "an invisible user's address leaked");
}
