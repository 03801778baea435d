//! The December 2010 scenario in the simulator: 40% of the supernodes die
//! at once. Every online user must be findable again within 10 s of
//! simulated time, no supernode may ever hold more clients than its limit,
//! and no lookup may return a forged or stale record.

use natter::sim::{Overlay, OverlaySpec};

fn scale() -> (usize, usize) {
    // NATTER_SIM_SCALE=small for quick local runs; CI runs the full size.
    match std::env::var("NATTER_SIM_SCALE").as_deref() {
        Ok("small") => (100, 10_000),
        Ok("medium") => (300, 30_000),
        _ => (1_000, 100_000),
    }
}

#[test]
fn forty_percent_supernode_loss() {
    let _turn = scenario!();
    let (sns, users) = scale();
    let mut spec = OverlaySpec {
        seed: 2010,
        supernodes: sns,
        clients: users,
        ..Default::default()
    };
    // Tight capacity: 2 attachments per user must fit in the survivors.
    spec.supernode.max_clients = (users * 2 * 10) / (sns * 6) * 12 / 10;
    spec.join_spread_ms = 10_000;
    spec.client_spread_ms = 20_000;
    let max = spec.supernode.max_clients;
    let mut o = Overlay::build(&spec);
    // Every user is asked at once, at exactly +10 s.
    o.full_check_batch = users;
    let t = std::time::Instant::now();
    let rep = o.blackout(60_000, 0.4, 1_000, 10);
    eprintln!(
        "{sns} supernodes, {users} users, {:.1} s wall",
        t.elapsed().as_secs_f64()
    );
    for (s, f) in &rep.found_by_second {
        eprintln!("  +{s:2} s: {:.2}% of the sample found", f * 100.0);
    }
    eprintln!(
        "full check at +{} s: {:?}",
        rep.full_check_at_s,
        (
            rep.full.online,
            rep.full.offline,
            rep.full.not_found,
            rep.full.failed,
            rep.full.unreachable
        )
    );
    eprintln!(
        "missing: {:?}",
        &rep.full.missing[..rep.full.missing.len().min(10)]
    );
    eprintln!(
        "max clients on one supernode: {} (limit {max})",
        rep.max_clients_seen
    );
    assert_eq!(
        rep.full_check_started_ms, 10_000,
        "the full check starts 10 s after the loss"
    );
    assert_eq!(
        rep.full.online, users,
        "every online user found 10 s after the loss"
    );
    assert_eq!(
        rep.full.unreachable, 0,
        "every record names a live supernode"
    );
    assert!(rep.max_clients_seen <= max as u64);
    assert_eq!(rep.forged_or_stale_answers, 0);
}
