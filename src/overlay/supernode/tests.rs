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
    let before = totals(&o);
    o.sim.run_for(10_000);
    let after = totals(&o);
    let (bytes, repairs, digests) = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
    assert_eq!(repairs, 0, "nothing differs in steady state");
    // Two rounds; each supernode is a home for some records at each of
    // the other seven.
    assert!((2 * 8..=2 * 8 * 7).contains(&digests), "{digests} digests");
    // Nothing but digests and their (empty) answers: no Check, no Store.
    let most = digests * (2 + 13 * DIGEST_BUCKETS as u64 + 2);
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
    let h = sn.records.remove(&name).unwrap();
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
}
