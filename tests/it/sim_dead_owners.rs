//! A lookup walks past more dead owners than it first asks. Ten
//! supernodes in a row on the ring die at a user's key; the user's
//! supernode learns it from its own timeouts and stores the record on the
//! next live members, but the asker's supernode still lists all ten as up
//! (nobody declares them down in this run). Its lookup must walk past the
//! ten to the record instead of answering "not found" after the first
//! seven (`replicas` + `query_extra`) time out. The same run with the walk
//! capped at seven fails, so the test can tell the two apart.

use natter::overlay::{MembershipConfig, user_key};
use natter::sim::{Overlay, OverlaySpec};

const DEAD: usize = 10;

/// (lookup outcome was Online, how long it took in ms).
fn run(query_max_asked: usize) -> (bool, u64) {
    let mut spec = OverlaySpec {
        seed: 77,
        supernodes: 200,
        clients: 200,
        converged: true,
        ..Default::default()
    };
    // Suspects stay up for the whole run: the dead remain in every ring.
    spec.supernode.membership = MembershipConfig {
        suspect_timeout_ms: 3_600_000,
        ..Default::default()
    };
    spec.supernode.query_max_asked = query_max_asked;
    let mut o = Overlay::build(&spec);
    o.sim.run_for(30_000);

    // Supernode ids on the ring, and sim index by id.
    let mut ring: Vec<(u64, usize)> = o
        .supernodes
        .iter()
        .map(|&s| (o.sim.supernode(s).unwrap().me, s))
        .collect();
    ring.sort_unstable();
    let successors = |key: u64| -> Vec<usize> {
        let start = ring.partition_point(|(id, _)| *id < key);
        (0..ring.len())
            .map(|j| ring[(start + j) % ring.len()].1)
            .collect()
    };
    let attached_to = |o: &Overlay, c: usize| -> Vec<usize> {
        o.sim
            .client(o.clients[c])
            .unwrap()
            .attached()
            .filter_map(|a| o.sim.index_of(&a))
            .collect()
    };
    // A target whose own supernodes are outside the ten that die.
    let (target, dead) = (0..o.clients.len())
        .find_map(|t| {
            let succ = successors(user_key(&Overlay::username(t)));
            let dead: Vec<usize> = succ[..DEAD].to_vec();
            let mine = attached_to(&o, t);
            (mine.len() == 2 && mine.iter().all(|s| !dead.contains(s))).then_some((t, succ))
        })
        .expect("some user's supernodes are away from its key");
    let (dead, live_owners) = (dead[..DEAD].to_vec(), dead[DEAD..DEAD + 3].to_vec());
    let name = Overlay::username(target);
    for &d in &dead {
        o.sim.kill(d);
    }
    // The target's supernodes re-check its record every few seconds and
    // move it past the owners that time out.
    let mut moved = false;
    for _ in 0..120 {
        o.sim.run_for(1_000);
        if live_owners
            .iter()
            .any(|&s| o.sim.supernode(s).unwrap().holds(&name).is_some())
        {
            moved = true;
            break;
        }
    }
    assert!(moved, "the record reached a live owner");
    let dead_ids: Vec<u64> = ring
        .iter()
        .filter(|(_, s)| dead.contains(s))
        .map(|(id, _)| *id)
        .collect();
    // An asker whose supernodes know nothing of the deaths: the
    // membership lists the ten as up and no timeout of their own hit them
    // (most supernodes never talk to this stretch of the ring).
    let now = o.sim.now;
    let ignorant = |o: &Overlay, s: usize| {
        let sn = o.sim.supernode(s).unwrap();
        !dead.contains(&s)
            && !live_owners.contains(&s)
            && dead_ids
                .iter()
                .all(|id| sn.membership().is_up(*id) && !sn.skips_unresponsive(*id, now))
    };
    let asker = (0..o.clients.len())
        .find(|&a| {
            let mine = attached_to(&o, a);
            a != target && mine.len() == 2 && mine.iter().all(|&s| ignorant(&o, s))
        })
        .expect("an asker whose supernodes have not noticed the deaths");
    let rep = o.lookups(&[(asker, target)], 10_000, 2_000);
    assert_eq!(rep.asked, 1);
    (
        rep.online == 1,
        rep.latencies_ms.first().copied().unwrap_or(0),
    )
}

#[test]
fn lookup_walks_past_ten_dead_owners() {
    let _turn = scenario!();
    let (found, ms) = run(24);
    eprintln!("walk up to 24: found {found} in {ms} ms");
    assert!(found, "found behind ten dead owners");
    assert!(ms <= 3_000, "within the query budget ({ms} ms)");
    let (found, ms) = run(7);
    eprintln!("walk capped at 7: found {found} after {ms} ms");
    assert!(!found, "capped at seven owners the lookup cannot get there");
}
