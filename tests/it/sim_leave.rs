//! A supernode stopped cleanly (SIGTERM) leaves instead of vanishing: the
//! other supernodes learn at once that it is down, and each of its clients
//! is redirected, attaches to another live supernode and republishes
//! within 1 s (virtual time), so lookups asked then find it online. The
//! same run with the supernode crashed instead shows the difference: its
//! clients still count it as attached after 1 s (they notice only when
//! their keepalives time out).

use natter::sim::{Overlay, OverlaySpec};

/// (clients of the stopped supernode, how many of them are attached to
/// two live supernodes and have republished 1 s later, lookups of them
/// answered online, lookups asked).
fn run(clean: bool) -> (usize, usize, usize, usize) {
    let spec = OverlaySpec {
        seed: 31,
        supernodes: 12,
        clients: 200,
        ..Default::default()
    };
    let mut o = Overlay::build(&spec);
    o.sim.run_for(30_000);
    let gone = *o
        .supernodes
        .iter()
        .max_by_key(|&&s| o.sim.supernode(s).unwrap().client_count())
        .unwrap();
    let gone_addr = o.sim.addr(gone);
    let mine: Vec<(usize, u64)> = (0..o.clients.len())
        .filter_map(|k| {
            let c = o.sim.client(o.clients[k]).unwrap();
            c.attached()
                .any(|a| a == gone_addr)
                .then(|| (k, c.published_seq()))
        })
        .collect();
    if clean {
        o.sim.leave(gone);
    } else {
        o.sim.kill(gone);
    }
    o.sim.run_for(1_000);
    let moved = mine
        .iter()
        .filter(|&&(k, seq)| {
            let c = o.sim.client(o.clients[k]).unwrap();
            let live: Vec<_> = c
                .attached()
                .filter(|a| o.sim.index_of(a).is_some_and(|i| o.sim.is_alive(i)))
                .collect();
            live.len() == 2 && c.attached().count() == 2 && c.published_seq() > seq
        })
        .count();
    let askers = o.attached_clients();
    let pairs: Vec<(usize, usize)> = mine
        .iter()
        .enumerate()
        .map(|(j, &(k, _))| (askers[(j * 13 + 5) % askers.len()], k))
        .filter(|(a, k)| a != k)
        .collect();
    let rep = o.lookups(&pairs, 1_000, 0);
    (mine.len(), moved, rep.online, pairs.len())
}

#[test]
fn a_leaving_supernodes_clients_are_attached_elsewhere_within_a_second() {
    let _turn = scenario!();
    let (n, moved, online, asked) = run(true);
    assert!(n >= 10, "the busiest supernode had only {n} clients");
    assert_eq!(moved, n, "clients re-attached and republished within 1 s");
    assert_eq!(online, asked, "found online");

    let (n, moved, _, _) = run(false);
    assert!(
        moved < n / 2,
        "a crash is noticed later: {moved} of {n} moved in 1 s"
    );
}
