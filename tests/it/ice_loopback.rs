//! Processes on loopback: an authority, two supernodes, alice and bob
//! headless. alice and bob become contacts, alice runs `connect bob`; the
//! ICE offer and answer travel in
//! sealed envelopes through the supernodes; both report `peer_connected`
//! over a direct path with the certificate of the user they meant, and a
//! setup time. carol, a stranger to bob, gets no answer: bob holds her
//! offer and gives her none of his addresses (issue 14.10).

use crate::common::procs::Network;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

#[test]
fn two_headless_clients_connect_directly() {
    let _turn = scenario!();
    let net = Network::start();
    let (_supernodes, all) = net.two_supernodes(&["alice", "bob", "carol"]);
    let mut alice = net.headless("alice", &all, &[]);
    let mut bob = net.headless("bob", &all, &[]);
    let mut carol = net.headless("carol", &all, &[]);
    alice.wait_json(T, |v| v["event"] == "published");
    bob.wait_json(T, |v| v["event"] == "published");
    carol.wait_json(T, |v| v["event"] == "published");

    // Only contacts get each other's candidates (issue 14.10).
    alice.say("add bob hi bob");
    bob.wait_json(T, |v| v["event"] == "contact_request");
    bob.say("accept alice");
    alice.wait_json(T, |v| v["event"] == "contact_added" && v["user"] == "bob");
    bob.wait_json(T, |v| v["event"] == "contact_added" && v["user"] == "alice");

    alice.say("connect bob");
    // The offer and the answer travel in sealed envelopes through the
    // supernodes; the events show them.
    let offer = alice.wait_json(T, |v| v["event"] == "ice_offer");
    assert_eq!(offer["to"], "bob");
    let answer = bob.wait_json(T, |v| v["event"] == "ice_answer");
    assert_eq!(answer["to"], "alice");

    let a = alice.wait_json(T, |v| {
        v["event"] == "peer_connected" || v["event"] == "peer_failed"
    });
    assert_eq!(a["event"], "peer_connected", "{a}");
    assert_eq!(a["user"], "bob");
    assert_eq!(a["path"], "direct", "{a}");
    assert!(a["setup_ms"].as_u64().unwrap() < 5_000, "{a}");
    let b = bob.wait_json(T, |v| {
        v["event"] == "peer_connected" || v["event"] == "peer_failed"
    });
    assert_eq!(b["event"], "peer_connected", "{b}");
    assert_eq!(b["user"], "alice");
    assert_eq!(b["path"], "direct");

    // A user who is not online: a clear failure.
    alice.say("connect nobody");
    let f = alice.wait_json(T, |v| v["event"] == "peer_failed");
    assert_eq!(f["user"], "nobody");
    assert_eq!(f["reason"], "not found", "{f}");

    // A stranger's offer is held unanswered: carol's connection fails
    // (before issue 14.10, bob answered with his addresses and connected).
    carol.say("connect bob");
    let offer = carol.wait_json(T, |v| v["event"] == "ice_offer");
    assert_eq!(offer["to"], "bob");
    let c = carol.wait_json(Duration::from_secs(90), |v| {
        v["event"] == "peer_connected" || v["event"] == "peer_failed"
    });
    assert_eq!(c["event"], "peer_failed", "a stranger got through: {c}");

    // A garbled offer is an error line, not a crash.
    bob.say("ice-offer alice zz");
    bob.wait_json(T, |v| v["event"] == "error");
}
