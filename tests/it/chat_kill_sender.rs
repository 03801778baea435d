//! The sender is SIGKILLed mid-send, twice: once right after the message
//! entered its outbox, once right after the recipient showed it (before or
//! after the acknowledgement came back). After each restart the outbox is
//! sent again; the recipient shows each message exactly once and the
//! sender's history ends with both acknowledged.

use crate::common::procs::{Network, Proc};
use serde_json::Value;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// Every JSON line the process printed so far, without waiting.
fn drain(p: &Proc, into: &mut Vec<Value>) {
    while let Ok(l) = p.lines.try_recv() {
        if let Ok(v) = serde_json::from_str(&l) {
            into.push(v);
        }
    }
}

/// Wait for a JSON line matching `pred`, keeping every line seen.
fn wait_keep(p: &Proc, seen: &mut Vec<Value>, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let l = p
            .lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{}: nothing matching within {T:?}: {seen:?}", p.name));
        if let Ok(v) = serde_json::from_str::<Value>(&l) {
            seen.push(v.clone());
            if pred(&v) {
                return v;
            }
        }
    }
}

/// Ask for the history with `peer` until every outgoing message is acked.
fn wait_all_acked(p: &mut Proc, peer: &str, n: usize) -> Value {
    let deadline = Instant::now() + T;
    loop {
        p.say(&format!("history {peer}"));
        let h = p.wait_json(T, |v| v["event"] == "history");
        let msgs = h["messages"].as_array().unwrap();
        if msgs.len() == n && msgs.iter().all(|m| m["acked"] == true) {
            return h;
        }
        assert!(Instant::now() < deadline, "not all acknowledged: {h}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn sender_killed_mid_send_delivers_once() {
    let _turn = scenario!();
    let net = Network::start();
    let (_supernodes, all) = net.two_supernodes(&["alice", "bob"]);
    let mut bob_seen = Vec::new();
    let bob = net.headless("bob", &all, &[]);
    wait_keep(&bob, &mut bob_seen, |v| v["event"] == "published");
    let mut alice = net.headless("alice", &all, &[]);
    alice.wait_json(T, |v| v["event"] == "published");

    // 1: killed as soon as the message is in the outbox.
    alice.say("msg bob first");
    alice.wait_json(T, |v| v["event"] == "message_queued");
    alice.kill();
    let mut alice = net.headless("alice", &all, &[]);
    wait_keep(&bob, &mut bob_seen, |v| {
        v["event"] == "message" && v["text"] == "first"
    });
    wait_all_acked(&mut alice, "bob", 1);

    // 2: killed as soon as bob shows the message.
    alice.say("msg bob second");
    wait_keep(&bob, &mut bob_seen, |v| {
        v["event"] == "message" && v["text"] == "second"
    });
    alice.kill();
    let mut alice = net.headless("alice", &all, &[]);
    alice.wait_json(T, |v| v["event"] == "published");
    let h = wait_all_acked(&mut alice, "bob", 2);
    assert_eq!(h["messages"][0]["text"], "first");
    assert_eq!(h["messages"][1]["text"], "second");

    // Whatever was resent, bob showed each message once.
    drain(&bob, &mut bob_seen);
    let shown: Vec<&str> = bob_seen
        .iter()
        .filter(|v| v["event"] == "message")
        .map(|v| v["text"].as_str().unwrap())
        .collect();
    assert_eq!(shown, ["first", "second"], "{bob_seen:?}");
    let mut bob = bob;
    bob.say("history alice");
    let h = bob.wait_json(T, |v| v["event"] == "history");
    assert_eq!(h["messages"].as_array().unwrap().len(), 2, "{h}");
    alice.say("quit");
}
