//! The overlay at scale in the simulator: lookup success and hops, time to
//! recover from 40% supernode loss, membership and refresh traffic per
//! supernode, memory per stored record and per attached client.
//! Run: `cargo bench --bench overlay_sim -- [supernodes] [users]`
//! (default 10000 1000000: about 1.5 hours of one core and 15 GB of
//! memory on the CI machine). Directory traffic in steady state, with
//! every refresh round in the window (`NATTER_SIM_STEPS=1` prints each
//! 30 s of it):
//! `NATTER_SIM_SETTLE_S=120 NATTER_SIM_WINDOW_S=720 cargo bench --bench
//! overlay_sim -- 3 300000`.

use natter::sim::{Overlay, OverlaySpec, percentile};
use std::time::Instant;

/// (VmRSS, VmHWM) of this process in KiB; zeros where /proc is missing.
fn rss_kib() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    // `cargo test --all-targets` runs benches without `--bench`: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `cargo bench`");
        return;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let sns: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let users: usize = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let mut spec = OverlaySpec {
        seed: 7,
        supernodes: sns,
        clients: users,
        converged: true,
        client_spread_ms: 20_000,
        ..Default::default()
    };
    spec.supernode.max_clients = ((users * 2 * 10) / (sns * 6)).max(4) * 12 / 10;
    // Full-membership syncs are for repairing partitions: at 10,000
    // members one is 200 KB, so they run rarely.
    spec.supernode.membership.sync_period_ms = 300_000;
    let wall = Instant::now();
    let rss0 = rss_kib().0;
    let mut o = Overlay::build(&spec);
    o.sim.keep_events = false;
    o.sim.keep_supernode_events = false;
    let rss_built = rss_kib().0;
    eprintln!(
        "built {sns} supernodes and {users} users in {:.0} s, RSS {} MiB",
        wall.elapsed().as_secs_f64(),
        rss_built / 1024
    );
    o.sim.run_for(30_000);
    let rss_warm = rss_kib().0;
    // NATTER_SIM_SETTLE_S: more time before the window. Clients started
    // together push their refreshes together (every 360 s from ~390 s);
    // a window from 150 s of a multiple of 360 s takes in whole rounds.
    let settle_s: u64 = std::env::var("NATTER_SIM_SETTLE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    o.sim.run_for(settle_s * 1000);
    eprintln!(
        "warm after {:.0} s wall, RSS {} MiB",
        wall.elapsed().as_secs_f64(),
        rss_warm / 1024
    );

    // Steady state: traffic over a window (10 s, or NATTER_SIM_WINDOW_S:
    // 720 s, with NATTER_SIM_SETTLE_S=120, takes in two rounds of every
    // client's record refresh reaching its owners), then lookups.
    let window_s: u64 = std::env::var("NATTER_SIM_WINDOW_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let before: Vec<(u64, u64)> = o
        .supernodes
        .iter()
        .map(|&s| {
            let sn = o.sim.supernode(s).unwrap();
            (
                sn.membership_stats().bytes_sent,
                sn.stats().directory_bytes_sent,
            )
        })
        .collect();
    // What the directory did in the window, summed over supernodes.
    let counts = |o: &Overlay| -> [u64; 7] {
        o.supernodes.iter().fold([0; 7], |mut t, &s| {
            let st = o.sim.supernode(s).unwrap().stats();
            for (x, v) in t.iter_mut().zip([
                st.digests_sent,
                st.digest_repairs,
                st.digest_in_flight,
                st.refreshes_held,
                st.refreshes_sent,
                st.refreshes_unapplied,
                st.store_timeouts,
            ]) {
                *x += v;
            }
            t
        })
    };
    let counts0 = counts(&o);
    o.sim.keep_events = false;
    let mut last = counts0;
    for step in 0..window_s.div_ceil(30) {
        o.sim.run_for(30_000.min(window_s * 1000 - step * 30_000));
        let c = counts(&o);
        if std::env::var_os("NATTER_SIM_STEPS").is_some() {
            eprintln!(
                "  +{:>3} s: repaired {} in flight {} sent {} held {}",
                (step + 1) * 30,
                c[1] - last[1],
                c[2] - last[2],
                c[4] - last[4],
                c[3] - last[3]
            );
        }
        last = c;
    }
    let counts1 = counts(&o);
    let d: Vec<u64> = counts1.iter().zip(counts0).map(|(a, b)| a - b).collect();
    let (mut member_bytes, mut dir_bytes) = (0u64, 0u64);
    for (k, &s) in o.supernodes.iter().enumerate() {
        let sn = o.sim.supernode(s).unwrap();
        member_bytes += sn.membership_stats().bytes_sent - before[k].0;
        dir_bytes += sn.stats().directory_bytes_sent - before[k].1;
    }
    let (mut rec_mem, mut recs, mut cl_mem, mut cls) = (0usize, 0usize, 0usize, 0usize);
    for &s in &o.supernodes {
        let sn = o.sim.supernode(s).unwrap();
        let (r, c) = sn.memory_estimate();
        rec_mem += r;
        cl_mem += c;
        recs += sn.record_count();
        cls += sn.client_count();
    }
    let q0: u64 = o
        .supernodes
        .iter()
        .map(|&s| o.sim.supernode(s).unwrap().stats().queries_sent)
        .sum();
    o.sim.keep_events = true;
    let n = 20_000.min(users);
    let askers = o.attached_clients();
    let pairs: Vec<(usize, usize)> = (0..n)
        .map(|i| (askers[(i * 7919) % askers.len()], (i * 104_729) % users))
        .collect();
    let mut steady = o.lookups(&pairs, 10_000, 2_000);
    let q1: u64 = o
        .supernodes
        .iter()
        .map(|&s| o.sim.supernode(s).unwrap().stats().queries_sent)
        .sum();

    println!("overlay simulation: {sns} supernodes, {users} users (seed 7)");
    println!("steady state over {window_s} s, from {} s:", 30 + settle_s);
    println!(
        "  membership traffic per supernode: {:.0} B/s",
        member_bytes as f64 / window_s as f64 / sns as f64
    );
    println!(
        "  directory/refresh traffic per supernode: {:.0} B/s",
        dir_bytes as f64 / window_s as f64 / sns as f64
    );
    println!(
        "  directory and membership traffic per user: {:.4} B/s",
        (dir_bytes + member_bytes) as f64 / window_s as f64 / users as f64
    );
    println!(
        "  digests {}, buckets repaired {}, differing only by claims in flight {}; \
         refreshes held {}, sent {}, not applied {}; store timeouts {}",
        d[0], d[1], d[2], d[3], d[4], d[5], d[6]
    );
    println!(
        "  memory per stored record: {} B ({recs} records)",
        rec_mem / recs.max(1)
    );
    println!(
        "  memory per attached client: {} B ({cls} attachments)",
        cl_mem / cls.max(1)
    );
    println!(
        "lookups: {n} asked, {:.3}% found online, {:.2} supernode hops per lookup, latency p50 {} ms p99 {} ms",
        100.0 * steady.online as f64 / n as f64,
        (q1 - q0) as f64 / n as f64,
        percentile(&mut steady.latencies_ms, 50.0),
        percentile(&mut steady.latencies_ms, 99.0)
    );

    let rep = o.blackout(0, 0.4, 2_000, 10);
    println!("40% supernode loss ({} killed):", rep.killed);
    for (s, f) in &rep.found_by_second {
        println!(
            "  +{s:2} s: {:.2}% of a 2,000-user sample found via a live supernode",
            f * 100.0
        );
    }
    println!(
        "  sample fully recovered after: {}",
        rep.sample_recovered_after_s
            .map_or("not within the window".into(), |s| format!("{s} s"))
    );
    println!(
        "  every user at +{} s: {} online of {} ({} not found, {} failed, {} naming only dead supernodes)",
        rep.full_check_at_s,
        rep.full.online,
        users,
        rep.full.not_found,
        rep.full.failed,
        rep.full.unreachable
    );
    println!(
        "  (asked in batches of {}: the first at +{} ms after the kill, the last at +{} ms; {} ms of simulated time in all)",
        o.full_check_batch,
        rep.full_check_started_ms,
        rep.full_check_last_batch_ms,
        rep.full_check_took_ms
    );
    let (r, p) = (rep.reattach_ms, rep.republish_ms);
    println!(
        "  users that lost both supernodes: {}; attached again after p50 {} ms, p99 {} ms, max {} ms; \
         republished after p50 {} ms, p99 {} ms, max {} ms ({} not yet)",
        rep.lost_both, r.0, r.1, r.2, p.0, p.1, p.2, rep.never_republished
    );
    let o = rep.orphan_republish_ms;
    println!(
        "  of them, records whose 3 owners all died: {}; republished after p50 {} ms, p99 {} ms, max {} ms",
        rep.orphaned_records, o.0, o.1, o.2
    );
    for d in &rep.diagnostics {
        println!("  {d}");
    }
    println!(
        "  most clients on one supernode: {} (limit {})",
        rep.max_clients_seen, spec.supernode.max_clients
    );
    println!("  forged or stale answers: {}", rep.forged_or_stale_answers);
    let (rss_end, peak) = rss_kib();
    println!(
        "process memory: start {} MiB, built {} MiB, warm {} MiB, end {} MiB, peak {} MiB",
        rss0 / 1024,
        rss_built / 1024,
        rss_warm / 1024,
        rss_end / 1024,
        peak / 1024
    );
    // Building holds the membership tables (sns^2 entries) and the
    // unattached client cores; warming up adds what each user costs once
    // attached and published (3 stored records, 2 attachments, caches).
    println!(
        "  added per user while warming up: {} B; built per supernode and user: {} B \
         ({} membership entries)",
        rss_warm.saturating_sub(rss_built) * 1024 / users.max(1) as u64,
        rss_built.saturating_sub(rss0) * 1024 / (sns + users).max(1) as u64,
        sns * sns
    );
    println!(
        "wall time: {:.0} s; simulated events: {}",
        wall.elapsed().as_secs_f64(),
        rep.sim_stats.events_processed
    );
}
