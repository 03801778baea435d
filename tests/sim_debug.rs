use natter::sim::{Overlay, OverlaySpec};
#[test]
#[ignore]
fn debug_missing() {
    let (sns, users) = (100, 10_000);
    let mut spec = OverlaySpec {
        seed: 2010,
        supernodes: sns,
        clients: users,
        ..Default::default()
    };
    spec.supernode.max_clients = (users * 2 * 10) / (sns * 6) * 12 / 10;
    spec.join_spread_ms = 10_000;
    spec.client_spread_ms = 20_000;
    let mut o = Overlay::build(&spec);
    let rep = o.blackout(60_000, 0.4, 2_000, 10);
    for name in rep.full.missing.iter().take(4) {
        let k: usize = name[4..].parse().unwrap();
        let ci = o.clients[k];
        let c = o.sim.client(ci).unwrap();
        let att: Vec<_> = c
            .attached()
            .map(|a| (a, o.sim.is_alive(o.sim.index_of(&a).unwrap())))
            .collect();
        eprintln!(
            "{name}: attached {att:?} primary {:?} published_seq {} stats {:?}",
            c.primary(),
            c.published_seq(),
            c.stats
        );
        let key = natter::overlay::user_key(name);
        // owners by a live supernode's view
        let live = o
            .supernodes
            .iter()
            .copied()
            .find(|&s| o.sim.is_alive(s))
            .unwrap();
        let sn = o.sim.supernode(live).unwrap();
        let owners: Vec<_> = sn
            .membership()
            .ring_from(key)
            .take(6)
            .map(|(id, a)| (id, a, o.sim.is_alive(o.sim.index_of(&a).unwrap())))
            .collect();
        eprintln!("  owners by {live}'s view: {owners:?}");
        for (_, a, _) in owners {
            let i = o.sim.index_of(&a).unwrap();
            eprintln!(
                "   {a} holds: {:?}",
                o.sim.supernode(i).unwrap().holds(name)
            );
        }
    }
}
