//! Not part of CI: prints the state of users that were not found after the
//! supernode loss, for diagnosing the overlay. `NATTER_DEBUG_SEED=n`.
use natter::sim::{Overlay, OverlaySpec};
#[test]
#[ignore]
fn debug_missing() {
    let seed: u64 = std::env::var("NATTER_DEBUG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let (sns, users) = match std::env::var("NATTER_DEBUG_SCALE").as_deref() {
        Ok("full") => (1_000, 100_000),
        _ => (300, 30_000),
    };
    let mut spec = OverlaySpec {
        seed,
        supernodes: sns,
        clients: users,
        ..Default::default()
    };
    spec.supernode.max_clients = (users * 2 * 10) / (sns * 6) * 12 / 10;
    spec.join_spread_ms = 10_000;
    spec.client_spread_ms = 20_000;
    let mut o = Overlay::build(&spec);
    let rep = o.blackout(60_000, 0.4, 1_000, 10);
    eprintln!(
        "seed {seed}: {:?}",
        (
            rep.full.online,
            rep.full.not_found,
            rep.full.failed,
            rep.full.unreachable
        )
    );
    eprintln!("by second: {:?}", rep.found_by_second);
    for f in &rep.sample_failures {
        if f.0 >= 4 {
            eprintln!("  sample failure {f:?}");
        }
    }
    let mut names = rep.full.missing.clone();
    names.extend(rep.full.unreachable_users.iter().cloned());
    for name in names.iter().take(6) {
        let k: usize = name[4..].parse().unwrap();
        let ci = o.clients[k];
        let c = o.sim.client(ci).unwrap();
        let att: Vec<_> = c
            .attached()
            .map(|a| (a, o.sim.is_alive(o.sim.index_of(&a).unwrap())))
            .collect();
        eprintln!(
            "{name}: attached {att:?} primary {:?} published_seq {} (now {}) stats {:?}",
            c.primary(),
            c.published_seq(),
            o.sim.now,
            c.stats
        );
        let key = natter::overlay::user_key(name);
        let live = o
            .supernodes
            .iter()
            .copied()
            .find(|&s| o.sim.is_alive(s))
            .unwrap();
        let sn = o.sim.supernode(live).unwrap();
        for (id, a) in sn.membership().ring_from(key).take(8) {
            let i = o.sim.index_of(&a).unwrap();
            eprintln!(
                "   {id:016x} {a} alive {} holds {:?}",
                o.sim.is_alive(i),
                o.sim.supernode(i).unwrap().holds(name)
            );
        }
    }
}
