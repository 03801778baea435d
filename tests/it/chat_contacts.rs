//! Contacts and chat between real processes on loopback: alice asks bob,
//! bob accepts; each sees the other's status (bob's "do not disturb" set
//! before accepting reaches alice only once she is authorized) and they
//! chat with end-to-end acknowledgements kept in SQLite. carol is no
//! contact: a lookup shows her neither bob's status nor message; alice
//! declines her; bob blocks her and her message never reaches his history.

use crate::common::procs::Network;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

#[test]
fn request_accept_chat_decline_block() {
    let _turn = scenario!();
    let net = Network::start();
    let (_supernodes, all) = net.two_supernodes(&["alice", "bob", "carol"]);
    let mut alice = net.headless("alice", &all, &[]);
    let mut bob = net.headless("bob", &all, &[]);
    let mut carol = net.headless("carol", &all, &[]);
    for p in [&alice, &bob, &carol] {
        p.wait_json(T, |v| v["event"] == "published");
    }

    // Authorization.
    alice.say("add bob hi bob, it's alice");
    let r = bob.wait_json(T, |v| v["event"] == "contact_request");
    assert_eq!(r["from"], "alice");
    assert_eq!(r["greeting"], "hi bob, it's alice");
    bob.say("status dnd in a meeting");
    bob.wait_json(T, |v| v["event"] == "status" && v["status"] == "dnd");
    bob.say("accept alice");
    bob.wait_json(T, |v| v["event"] == "contact_added" && v["user"] == "alice");
    alice.wait_json(T, |v| v["event"] == "contact_added" && v["user"] == "bob");
    let p = alice.wait_json(T, |v| {
        v["event"] == "contact_presence" && v["user"] == "bob"
    });
    assert_eq!(p["status"], "dnd", "{p}");
    assert_eq!(p["message"], "in a meeting");
    let p = bob.wait_json(T, |v| {
        v["event"] == "contact_presence" && v["user"] == "alice"
    });
    assert_eq!(p["status"], "online", "{p}");
    alice.say("contacts");
    let c = alice.wait_json(T, |v| v["event"] == "contacts");
    assert_eq!(c["contacts"][0]["user"], "bob", "{c}");
    assert_eq!(c["contacts"][0]["state"], "authorized");
    assert_eq!(c["contacts"][0]["status"], "dnd");

    // Chat, acknowledged end to end, in the history.
    alice.say("msg bob hello bob");
    let m = bob.wait_json(T, |v| v["event"] == "message");
    assert_eq!(m["from"], "alice");
    assert_eq!(m["text"], "hello bob");
    let a = alice.wait_json(T, |v| v["event"] == "message_acked");
    assert_eq!(a["id"], m["id"]);
    bob.say("msg alice hi alice");
    let m2 = alice.wait_json(T, |v| v["event"] == "message");
    assert_eq!(m2["text"], "hi alice");
    alice.say("history bob");
    let h = alice.wait_json(T, |v| v["event"] == "history");
    let msgs = h["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "{h}");
    assert_eq!(msgs[0]["text"], "hello bob");
    assert_eq!(msgs[0]["outgoing"], true);
    assert_eq!(msgs[0]["acked"], true);
    assert_eq!(msgs[1]["text"], "hi alice");
    assert_eq!(msgs[1]["outgoing"], false);

    // carol, a stranger, sees neither bob's status nor his message.
    carol.say("lookup bob");
    let l = carol.wait_json(T, |v| v["event"] == "lookup");
    // Online but private: no "offline, last seen <now>" (issue 13.9).
    assert_eq!(l["result"], "private", "{l}");
    assert!(l.get("last_seen").is_none(), "{l}");
    assert_ne!(l["status"], "dnd");
    assert_eq!(l["message"], "");

    // carol asks alice; alice declines.
    carol.say("add alice please");
    alice.wait_json(T, |v| {
        v["event"] == "contact_request" && v["from"] == "carol"
    });
    alice.say("refuse carol");
    let d = carol.wait_json(T, |v| v["event"] == "contact_declined");
    assert_eq!(d["user"], "alice");
    assert_eq!(d["by_us"], false);

    // bob blocks carol: her message reaches his device and is dropped.
    bob.say("block carol");
    bob.wait_json(T, |v| v["event"] == "contact_blocked");
    carol.say("msg bob let me in");
    let s = carol.wait_json(T, |v| {
        v["event"] == "message_status" && v["status"] == "delivered"
    });
    assert_eq!(s["to"], "bob");
    bob.say("history carol");
    let h = bob.wait_json(T, |v| v["event"] == "history");
    assert_eq!(h["messages"].as_array().unwrap().len(), 0, "{h}");
    // And her request is ignored.
    carol.say("add bob");
    carol.say("contacts");
    carol.wait_json(T, |v| v["event"] == "contacts");
    bob.say("contacts");
    let c = bob.wait_json(T, |v| v["event"] == "contacts");
    let carol_row = c["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["user"] == "carol")
        .cloned()
        .unwrap();
    assert_eq!(carol_row["blocked"], true);
    assert_eq!(carol_row["state"], "none");
    for p in [&mut alice, &mut bob, &mut carol] {
        p.say("quit");
    }
}

/// Issue 13, bug 5: a message to a user who does not exist ends with a
/// final `failed` status ("no such user") instead of being retried for
/// ever.
#[test]
fn message_to_no_such_user_gives_up() {
    let _turn = scenario!();
    let net = Network::start();
    let (_supernodes, all) = net.two_supernodes(&["alice"]);
    let mut alice = net.headless("alice", &all, &[]);
    alice.wait_json(T, |v| v["event"] == "published");
    alice.say("msg ghost hello?");
    let f = alice.wait_json(T, |v| {
        v["event"] == "message_status" && v["status"] == "failed"
    });
    assert_eq!(f["to"], "ghost", "{f}");
    assert!(
        f["error"].as_str().unwrap_or("").contains("no such user"),
        "{f}"
    );
    // It stays in the history (never acknowledged); the chat core's unit
    // test checks that nothing is sent again.
    alice.say("history ghost");
    let h = alice.wait_json(T, |v| v["event"] == "history");
    assert_eq!(h["messages"][0]["text"], "hello?", "{h}");
    assert_eq!(h["messages"][0]["acked"], false, "{h}");
}
