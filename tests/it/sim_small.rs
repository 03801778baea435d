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
