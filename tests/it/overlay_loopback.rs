//! Processes on loopback: an authority, three supernodes, alice and bob
//! headless. bob finds alice; alice changes her status and bob sees it;
//! alice's primary supernode is killed and within 10 s she is re-attached,
//! found again, and her record kept its status.

use crate::common::procs::Network;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

#[test]
fn find_watch_and_survive_supernode_loss() {
    let _turn = scenario!();
    let net = Network::start();
    net.accounts(&[
        ("sn1", true),
        ("sn2", true),
        ("sn3", true),
        ("alice", false),
        ("bob", false),
    ]);
    let (mut sn1, a1) = net.supernode("sn1", &[]);
    let (mut sn2, a2) = net.supernode("sn2", std::slice::from_ref(&a1));
    let (mut sn3, a3) = net.supernode("sn3", std::slice::from_ref(&a1));
    let all = vec![a1.clone(), a2.clone(), a3.clone()];

    // Public presence: this test is about the directory record itself
    // (by default only authorized contacts see the status).
    let mut alice = net.headless("alice", &all, &["--public-presence"]);
    let primary =
        alice.wait_json(T, |v| v["event"] == "attached" && v["primary"] == true)["supernode"]
            .as_str()
            .unwrap()
            .to_owned();
    alice.wait_json(T, |v| v["event"] == "published");

    let mut bob = net.headless("bob", &all, &["--watch", "alice"]);
    bob.wait_json(T, |v| v["event"] == "published");
    bob.say("lookup alice");
    let found = bob.wait_json(T, |v| v["event"] == "lookup");
    assert_eq!(found["result"], "online", "{found}");
    assert_eq!(found["status"], "online");
    assert!(
        found["supernodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == primary.as_str()),
        "{found}"
    );

    // alice changes her status; bob's watch reports it.
    alice.say("status away gone fishing");
    let seen = bob.wait_json(T, |v| {
        v["event"] == "presence" && v["user"] == "alice" && v["status"] == "away"
    });
    assert_eq!(seen["message"], "gone fishing");

    // Kill alice's primary supernode.
    let killed_at = Instant::now();
    for (p, a) in [(&mut sn1, &a1), (&mut sn2, &a2), (&mut sn3, &a3)] {
        if *a == primary {
            p.kill();
        }
    }
    alice.wait_json(Duration::from_secs(10), |v| {
        v["event"] == "detached" && v["supernode"] == primary.as_str()
    });
    // Re-attached to a live supernode and republished.
    alice.wait_json(Duration::from_secs(10), |v| v["event"] == "published");
    let reattached = killed_at.elapsed();
    assert!(
        reattached < Duration::from_secs(10),
        "re-attached after {reattached:?}"
    );

    // Still found, through live supernodes only, with her status intact.
    let mut ok = None;
    while killed_at.elapsed() < Duration::from_secs(10) {
        bob.say("lookup alice");
        let r = bob.wait_json(T, |v| v["event"] == "lookup");
        let names_dead = r["supernodes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s == primary.as_str()));
        if r["result"] == "online" && !names_dead {
            ok = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let r = ok.unwrap_or_else(|| panic!("alice not found through live supernodes within 10 s"));
    assert_eq!(r["status"], "away", "{r}");
    assert_eq!(r["message"], "gone fishing");
    eprintln!(
        "re-attached and found {:?} after the kill",
        killed_at.elapsed()
    );

    alice.say("quit");
    bob.say("quit");
}
