//! A chat message to a user who is offline waits on their directory
//! owners and is delivered when they come back, then acknowledged end to
//! end; it is in both histories (SQLite files that outlive the process).

use crate::common::procs::Network;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

#[test]
fn message_waits_for_offline_recipient() {
    let _turn = scenario!();
    let net = Network::start();
    let (_supernodes, all) = net.two_supernodes(&["alice", "bob"]);
    let mut alice = net.headless("alice", &all, &[]);
    let mut bob = net.headless("bob", &all, &[]);
    alice.wait_json(T, |v| v["event"] == "published");
    bob.wait_json(T, |v| v["event"] == "published");
    bob.quit(T);

    alice.say("msg bob see you tomorrow");
    let q = alice.wait_json(T, |v| v["event"] == "message_queued");
    let s = alice.wait_json(T, |v| v["event"] == "message_status");
    assert_eq!(s["status"], "stored", "{s}");
    assert_eq!(s["id"], q["id"]);

    let mut bob = net.headless("bob", &all, &[]);
    let m = bob.wait_json(T, |v| v["event"] == "message");
    assert_eq!(m["from"], "alice");
    assert_eq!(m["text"], "see you tomorrow");
    assert_eq!(m["id"], q["id"]);
    let a = alice.wait_json(T, |v| v["event"] == "message_acked");
    assert_eq!(a["id"], q["id"]);

    // The history outlives the process.
    bob.quit(T);
    let mut bob = net.headless("bob", &all, &[]);
    bob.say("history alice");
    let h = bob.wait_json(T, |v| v["event"] == "history");
    let msgs = h["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "{h}");
    assert_eq!(msgs[0]["text"], "see you tomorrow");
    bob.quit(T);
    alice.quit(T);
}
