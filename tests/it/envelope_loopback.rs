//! Sealed envelopes between real processes on loopback: an authority, two
//! supernodes, alice and bob headless. alice's envelope reaches bob with
//! her name verified; bob quits, alice's next envelope is stored on bob's
//! owners, and bob gets it when he starts again.

use crate::common::procs::Network;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

#[test]
fn envelope_online_then_stored_for_offline_user() {
    let _turn = scenario!();
    let net = Network::start();
    let (_supernodes, all) = net.two_supernodes(&["alice", "bob"]);

    let mut alice = net.headless("alice", &all, &[]);
    let mut bob = net.headless("bob", &all, &[]);
    alice.wait_json(T, |v| v["event"] == "published");
    bob.wait_json(T, |v| v["event"] == "published");

    alice.say("envelope bob hello bob");
    let got = bob.wait_json(T, |v| v["event"] == "envelope");
    assert_eq!(got["from"], "alice", "{got}");
    assert_eq!(got["payload"], "hello bob");
    let r = alice.wait_json(T, |v| v["event"] == "envelope_result");
    assert_eq!(r["result"], "delivered", "{r}");
    assert_eq!(r["id"], got["id"]);

    // bob leaves; the next envelope waits for him.
    bob.say("quit");
    // stdin closed too, so that the process can end.
    bob.stdin.take();
    let deadline = std::time::Instant::now() + T;
    while bob.child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "bob did not quit");
        std::thread::sleep(Duration::from_millis(50));
    }
    alice.say("envelope bob while you were out");
    let r = alice.wait_json(T, |v| v["event"] == "envelope_result");
    assert_eq!(r["result"], "stored", "{r}");

    let bob = net.headless("bob", &all, &[]);
    let got = bob.wait_json(T, |v| v["event"] == "envelope");
    assert_eq!(got["from"], "alice");
    assert_eq!(got["payload"], "while you were out");
    assert_eq!(got["id"], r["id"]);
    alice.say("quit");
}
