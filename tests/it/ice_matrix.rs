//! The 6x6 matrix of client environments in the in-process NAT simulator:
//! every ordered pair (A calls B) must connect, directly unless a side has
//! UDP blocked or a symmetric NAT (random ports) meets a port-restricted
//! cone or another symmetric NAT; those relay. With a symmetric NAT that
//! allocates ports in sequence, port prediction makes the hard pairs
//! direct. Seeded, virtual time.

use natter::sim::ice::{Env, PairOutcome, SimOptions, run_pair};

fn cell(o: &PairOutcome) -> String {
    match (o.both_connected(), o.setup_ms()) {
        (true, Some(ms)) => format!("{} {}ms", if o.direct() { "direct" } else { "relay" }, ms),
        _ => format!("FAIL {:?}", o.failed),
    }
}

#[test]
fn all_36_pairs_connect_as_expected() {
    let _turn = scenario!();
    let mut table = String::from("A \\ B        ");
    for b in Env::MATRIX {
        table += &format!("{:>16}", b.name());
    }
    let mut wrong = Vec::new();
    for (i, a) in Env::MATRIX.into_iter().enumerate() {
        table += &format!("\n{:<12} ", a.name());
        for (j, b) in Env::MATRIX.into_iter().enumerate() {
            let o = run_pair(
                a,
                b,
                SimOptions {
                    seed: 100 + (i * 6 + j) as u64,
                    ..SimOptions::default()
                },
            );
            table += &format!("{:>16}", cell(&o));
            if !o.both_connected() || o.direct() != a.expect_direct(b) {
                wrong.push(format!(
                    "{} -> {}: {} {:?}",
                    a.name(),
                    b.name(),
                    cell(&o),
                    o.final_path
                ));
            }
            // Bounded: no attempt may send more than a few hundred checks.
            assert!(
                o.checks_sent.iter().all(|&n| n < 1000),
                "{:?}",
                o.checks_sent
            );
        }
    }
    println!("{table}");
    assert!(
        wrong.is_empty(),
        "wrong cells:\n{}\n{table}",
        wrong.join("\n")
    );
}

/// Port prediction: against a symmetric NAT whose ports follow each
/// other, the hard pairs go direct; against random ports they relay.
#[test]
fn port_prediction_wins_against_sequential_ports() {
    let _turn = scenario!();
    let cases = [
        (Env::SymmetricSequential, Env::PortRestricted),
        (Env::PortRestricted, Env::SymmetricSequential),
        (Env::SymmetricSequential, Env::SymmetricSequential),
        (Env::SymmetricSequential, Env::Symmetric),
    ];
    for (k, (a, b)) in cases.into_iter().enumerate() {
        let o = run_pair(
            a,
            b,
            SimOptions {
                seed: 7 + k as u64,
                ..SimOptions::default()
            },
        );
        println!(
            "{} -> {}: {} predicted {:?}",
            a.name(),
            b.name(),
            cell(&o),
            o.predicted
        );
        assert!(
            o.both_connected(),
            "{} -> {}: {:?}",
            a.name(),
            b.name(),
            o.failed
        );
        // Sequential against random: the random side cannot be predicted,
        // but the sequential side can be, which is not enough for APDF on
        // both ends.
        let expect_direct = b != Env::Symmetric;
        assert_eq!(
            o.direct(),
            expect_direct,
            "{} -> {}: {:?}",
            a.name(),
            b.name(),
            o.final_path
        );
        if expect_direct {
            assert!(o.predicted.iter().any(|&n| n > 0));
        }
    }
}

/// The matrix holds under 5% seeded loss, over several seeds.
#[test]
fn matrix_under_loss() {
    let _turn = scenario!();
    for seed in 0..3u64 {
        for a in Env::MATRIX {
            for b in Env::MATRIX {
                let o = run_pair(
                    a,
                    b,
                    SimOptions {
                        seed: 1000 + seed,
                        loss: 0.05,
                        ..SimOptions::default()
                    },
                );
                assert!(
                    o.both_connected(),
                    "seed {seed} {} -> {}: {:?}",
                    a.name(),
                    b.name(),
                    o.failed
                );
                assert_eq!(
                    o.direct(),
                    a.expect_direct(b),
                    "seed {seed} {} -> {}: {:?}",
                    a.name(),
                    b.name(),
                    o.final_path
                );
            }
        }
    }
}
