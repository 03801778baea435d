//! Processes on loopback: an authority, two supernodes running TURN relays
//! (one group secret), alice and bob headless with `relay_only` (they offer
//! relayed candidates only, as if no direct path could work). alice attaches
//! and reaches her relay over TCP (`force_tcp`, the UDP-blocked client);
//! bob over UDP. Each client gets credentials from its supernode through
//! the overlay, allocates, and `connect bob` comes up over the relays with
//! the peer link (its handshake) through them.

use crate::common::procs::{Network, Proc};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// A supernode whose TURN relay shares the group's secret.
fn supernode(net: &Network, name: &str, bootstrap: &[String]) -> (Proc, String) {
    let cfg = net.config_with_overlay(
        &format!("{name}.toml"),
        "[relay]\nsecret = \"relayed-test-secret\"\nports = \"0\"\nallow_loopback_peers = true\n",
    );
    net.supernode_with(name, &cfg, bootstrap)
}

#[test]
fn relay_only_clients_connect_through_the_supernode_relays() {
    let _turn = scenario!();
    let net = Network::start();
    net.accounts(&[
        ("sn1", true),
        ("sn2", true),
        ("alice", false),
        ("bob", false),
    ]);
    let (_sn1, a1) = supernode(&net, "sn1", &[]);
    let (_sn2, a2) = supernode(&net, "sn2", std::slice::from_ref(&a1));
    // alice over TCP only (overlay and relay), bob over UDP; both attach
    // to one supernode each, so the offer crosses the overlay.
    let alice_cfg =
        net.config_with_overlay("alice.toml", "force_tcp = true\n[nat]\nrelay_only = true\n");
    let bob_cfg = net.config_with_overlay("bob.toml", "[nat]\nrelay_only = true\n");
    let mut alice = net.headless_with("alice", &alice_cfg, std::slice::from_ref(&a1), &[]);
    let mut bob = net.headless_with("bob", &bob_cfg, std::slice::from_ref(&a2), &[]);
    alice.wait_json(T, |v| v["event"] == "published");
    bob.wait_json(T, |v| v["event"] == "published");

    // Only contacts get each other's candidates (issue 14.10).
    alice.say("add bob hi bob");
    bob.wait_json(T, |v| v["event"] == "contact_request");
    bob.say("accept alice");
    alice.wait_json(T, |v| v["event"] == "contact_added" && v["user"] == "bob");
    bob.wait_json(T, |v| v["event"] == "contact_added" && v["user"] == "alice");

    alice.say("connect bob");
    let mut paths = Vec::new();
    for (p, peer) in [(&alice, "bob"), (&bob, "alice")] {
        let v = p.wait_json(T, |v| {
            v["event"] == "peer_connected" || v["event"] == "peer_failed"
        });
        assert_eq!(v["event"], "peer_connected", "{v}");
        assert_eq!(v["user"], peer, "{v}");
        assert_eq!(v["path"], "relayed", "{v}");
        paths.push(v);
    }
    // alice's relay is her supernode's (reached over TCP); bob's is his.
    assert_eq!(paths[0]["local_kind"], "relay", "{}", paths[0]);
    assert_eq!(paths[1]["local_kind"], "relay", "{}", paths[1]);
    assert!(
        paths[0]["setup_ms"].as_u64().unwrap() < 10_000,
        "{}",
        paths[0]
    );

    alice.say("quit");
    bob.say("quit");
    // alice's overlay and relay traffic went over TCP.
    let log = std::fs::read_to_string(net.dir.path().join("alice.log")).unwrap();
    assert!(log.contains("over TCP"), "alice never used TCP:\n{log}");
    assert!(log.contains("relayed candidate"), "{log}");
}
