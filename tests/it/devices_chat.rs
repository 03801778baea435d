//! One account on two devices (issue 17): alice logs in on a second
//! machine (its own data directory, device key and certificate); bob's
//! contact request and messages reach each of her devices exactly once,
//! and she shows online to bob while either device runs.

use crate::common::procs::{Network, Proc};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

/// The texts of the messages from `from` that `p` shows within `window`.
fn messages(p: &Proc, from: &str, window: Duration) -> Vec<String> {
    let deadline = Instant::now() + window;
    let mut got = Vec::new();
    while let Ok(l) = p
        .lines
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&l)
            && v["event"] == "message"
            && v["from"] == from
        {
            got.push(v["text"].as_str().unwrap_or_default().to_owned());
        }
    }
    got
}

/// alice's status in bob's contact list, once it says `want` (or `T`
/// passes).
fn alice_shows(bob: &mut Proc, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + T;
    loop {
        bob.say("contacts");
        let c = bob.wait_json(T, |v| v["event"] == "contacts");
        let alice = c["contacts"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["user"] == "alice").cloned())
            .unwrap_or_default();
        if alice["status"] == want || Instant::now() > deadline {
            return alice;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn messages_reach_both_devices_exactly_once() {
    let _turn = scenario!();
    let net = Network::start();
    let (_supernodes, all) = net.two_supernodes(&["alice", "bob"]);
    net.login_device("alice", "alice-laptop");
    // Each of alice's devices starts through a different supernode.
    let mut desk = net.headless("alice", &all[..1], &[]);
    let mut laptop = net.headless("alice-laptop", &all[1..], &[]);
    let mut bob = net.headless("bob", &all, &[]);
    desk.wait_json(T, |v| v["event"] == "published");
    laptop.wait_json(T, |v| v["event"] == "published");
    bob.wait_json(T, |v| v["event"] == "published");

    // bob asks alice; the request reaches both devices, and each takes
    // him as a contact (contact lists follow the account in a later step).
    bob.say("add alice hi, it's bob");
    for p in [&mut desk, &mut laptop] {
        let r = p.wait_json(T, |v| v["event"] == "contact_request");
        assert_eq!(r["from"], "bob");
        p.say("accept bob");
        p.wait_json(T, |v| v["event"] == "contact_added" && v["user"] == "bob");
    }
    bob.wait_json(T, |v| v["event"] == "contact_added" && v["user"] == "alice");
    let v = alice_shows(&mut bob, "online");
    assert_eq!(v["status"], "online", "{v}");

    let texts = ["one", "two", "three"];
    for t in texts {
        bob.say(&format!("msg alice {t}"));
        // Acknowledged end to end (by the first device to have it).
        let q = bob.wait_json(T, |v| v["event"] == "message_queued");
        bob.wait_json(T, |v| v["event"] == "message_acked" && v["id"] == q["id"]);
    }
    // Each device shows each message exactly once (and nothing more
    // comes while bob's retries and acknowledgements settle).
    for p in [&desk, &laptop] {
        let mut got = messages(p, "bob", Duration::from_secs(8));
        got.sort();
        let mut want: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{}", p.name);
    }

    // One device quits: alice still shows online to bob.
    laptop.quit(T);
    std::thread::sleep(Duration::from_secs(2));
    let v = alice_shows(&mut bob, "online");
    assert_eq!(v["status"], "online", "{v}");
    desk.quit(T);
    let v = alice_shows(&mut bob, "offline");
    assert_eq!(v["status"], "offline", "{v}");
    bob.quit(T);
}
