//! A session that starts relayed (direct UDP between the two clients is
//! blocked) moves to a direct path once the block is lifted, on both
//! sides, without a gap: application datagrams sent every 20 ms over the
//! selected path all arrive, across the switch. In-process NAT simulator,
//! seeded, virtual time.

use natter::ice::PathKind;
use natter::sim::ice::{Env, SimOptions, run_pair};
use natter::time::Millis;

fn contiguous(v: &[u64]) -> bool {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.dedup();
    s.len() == v.len() && s.iter().enumerate().all(|(i, &x)| x == i as u64 + 1)
}

#[test]
fn relayed_call_moves_to_direct_without_a_gap() {
    let _turn = scenario!();
    for (seed, (a, b)) in [
        (Env::PortRestricted, Env::FullCone),
        (Env::RestrictedCone, Env::PortRestricted),
        (Env::Public, Env::Symmetric),
    ]
    .into_iter()
    .enumerate()
    {
        let lift = 6_000;
        let o = run_pair(
            a,
            b,
            SimOptions {
                seed: 40 + seed as u64,
                block_direct_until: Some(lift),
                app_interval_ms: Some(20),
                run_after_connect_ms: 1_000,
                limit_ms: 20_000,
                ..SimOptions::default()
            },
        );
        let name = format!("{} -> {}", a.name(), b.name());
        for i in 0..2 {
            let (first, _) = o.connected[i]
                .unwrap_or_else(|| panic!("{name}: side {i} never connected: {:?}", o.failed));
            assert!(
                matches!(first.kind(), PathKind::Relayed { .. }),
                "{name}: side {i} started on {first}"
            );
            let (at, to) = o.path_changes[i]
                .last()
                .copied()
                .unwrap_or_else(|| panic!("{name}: side {i} never changed path"));
            assert!(to.is_direct(), "{name}: side {i} moved to {to}");
            // Within one re-probe interval of the lift.
            assert!(
                at >= Millis(1_000 + lift) && at <= Millis(1_000 + lift + 4_000 + 1_000),
                "{name}: at {at}"
            );
            println!(
                "{name}: side {i} relayed -> direct at {} ms after the lift",
                at.since(Millis(1_000)) - lift
            );
        }
        assert!(o.direct(), "{name}: {:?}", o.final_path);
        for i in 0..2 {
            let got = &o.app_received[1 - i];
            assert!(
                contiguous(got),
                "{name}: datagrams from side {i} missing: {:?}",
                got
            );
            // All but those still in flight at the end arrived.
            assert!(
                got.len() as u64 + 3 >= o.app_sent[i],
                "{name}: {} of {}",
                got.len(),
                o.app_sent[i]
            );
            assert!(o.app_sent[i] > 200);
        }
    }
}
