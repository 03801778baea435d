//! A session on a direct pair loses it (direct UDP between the two clients
//! is blocked after they connected): instead of failing when consent runs
//! out, both sides re-check the other pairs and move to the relay, and
//! application datagrams flow again over it. In-process NAT simulator,
//! seeded, virtual time.

use natter::ice::PathKind;
use natter::sim::ice::{Env, SimOptions, run_pair};
use natter::time::Millis;

#[test]
fn a_dead_direct_pair_falls_back_to_the_relay() {
    let _turn = scenario!();
    for (seed, (a, b)) in [
        (Env::FullCone, Env::PortRestricted),
        (Env::Public, Env::RestrictedCone),
    ]
    .into_iter()
    .enumerate()
    {
        let block = 3_000;
        let o = run_pair(
            a,
            b,
            SimOptions {
                seed: 700 + seed as u64,
                block_direct_from: Some(block),
                app_interval_ms: Some(20),
                run_after_connect_ms: 16_000,
                limit_ms: 30_000,
                ..SimOptions::default()
            },
        );
        let name = format!("{} -> {}", a.name(), b.name());
        // Connected directly first.
        for i in 0..2 {
            let (p, _) = o.connected[i].expect("connected");
            assert_eq!(p.kind(), PathKind::Direct, "{name}: side {i} first path");
            assert!(
                o.failed[i].is_none(),
                "{name}: side {i} failed: {:?}",
                o.failed[i]
            );
        }
        // Then moved to the relay, well before consent (15 s) ran out.
        let call_at = Millis(1_000);
        for i in 0..2 {
            let (at, to) = o.path_changes[i]
                .iter()
                .find(|(_, p)| !p.is_direct())
                .copied()
                .unwrap_or_else(|| panic!("{name}: side {i} never left the dead pair: {o:?}"));
            let after = at - call_at - block;
            assert!(
                after < 12_000,
                "{name}: side {i} moved {after} ms after the block"
            );
            assert!(
                matches!(to.kind(), PathKind::Relayed { .. }),
                "{name}: {to}"
            );
            let last = o.final_path[i].expect("a final path");
            assert!(!last.is_direct(), "{name}: side {i} ended on {last}");
        }
        // Datagrams sent over the relay arrive: the last second of the run
        // lost nothing.
        for i in 0..2 {
            let sent = o.app_sent[1 - i];
            let tail: Vec<u64> = (sent.saturating_sub(40)..=sent.saturating_sub(5)).collect();
            let got = &o.app_received[i];
            let missing: Vec<&u64> = tail.iter().filter(|s| !got.contains(s)).collect();
            assert!(
                missing.is_empty(),
                "{name}: side {i} missed {missing:?} of the last datagrams"
            );
        }
        assert!(o.relay_forwarded > 0, "{name}");
    }
}
