//! Setup time per cell of the 6x6 NAT matrix in the in-process simulator
//! (20 ms one-way delay, 0-5 ms jitter, 60 ms per signalling leg), over
//! many seeds: median and 95th percentile from the call to both sides
//! having a path, the share of direct outcomes, and checks sent.
//! `cargo bench --bench ice_matrix [seeds]` (default 50). The real-NAT
//! figures come from `lab/ice-matrix.sh`.

use natter::sim::ice::{Env, SimOptions, run_pair};

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    if v.is_empty() {
        return 0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let seeds: u64 = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    println!(
        "ice_matrix: {seeds} seeds per cell; cells: direct share, setup p50/p95 ms, checks per side p50"
    );
    let mut cases: Vec<(Env, Env)> = Vec::new();
    for a in Env::MATRIX {
        for b in Env::MATRIX {
            cases.push((a, b));
        }
    }
    cases.push((Env::SymmetricSequential, Env::PortRestricted));
    cases.push((Env::PortRestricted, Env::SymmetricSequential));
    cases.push((Env::SymmetricSequential, Env::SymmetricSequential));
    for (a, b) in cases {
        let mut setup = Vec::new();
        let mut checks = Vec::new();
        let (mut direct, mut failed) = (0, 0);
        for s in 0..seeds {
            let o = run_pair(
                a,
                b,
                SimOptions {
                    seed: s * 7919 + 1,
                    ..SimOptions::default()
                },
            );
            match o.setup_ms() {
                Some(ms) if o.both_connected() => setup.push(ms),
                _ => failed += 1,
            }
            if o.direct() {
                direct += 1;
            }
            checks.push(o.checks_sent[0]);
        }
        println!(
            "{:>11} -> {:<11} direct {:>3}%  setup p50 {:>5} p95 {:>5}  checks {:>4}  failed {}",
            a.name(),
            b.name(),
            direct * 100 / seeds,
            pct(&mut setup.clone(), 0.5),
            pct(&mut setup, 0.95),
            pct(&mut checks, 0.5),
            failed
        );
    }
}
