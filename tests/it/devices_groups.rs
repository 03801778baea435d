//! One account on two devices, group chat (issue 17): alice on her desk
//! and her laptop (each through its own supernode), bob on one device. A
//! group alice creates on the desk is on the laptop too; bob's messages
//! and those alice sends from the desk show on both of her devices,
//! each exactly once and in the order they were sent (the desk's own on
//! the laptop as alice's, outgoing); bob shows them all once too.

use crate::common::procs::{Network, Proc};
use serde_json::Value;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// The `group_message` events `p` prints until `n` came (or `within`
/// passes), then for `quiet` more.
fn group_messages(p: &Proc, n: usize, within: Duration, quiet: Duration) -> Vec<Value> {
    let mut got = Vec::new();
    let deadline = Instant::now() + within;
    let mut until = deadline;
    while let Ok(l) = p
        .lines
        .recv_timeout(until.saturating_duration_since(Instant::now()))
    {
        if let Ok(v) = serde_json::from_str::<Value>(&l)
            && v["event"] == "group_message"
        {
            got.push(v);
            if got.len() == n {
                until = Instant::now() + quiet;
            }
        }
    }
    got
}

fn texts(msgs: &[Value]) -> Vec<(String, String, bool)> {
    msgs.iter()
        .map(|m| {
            (
                m["from"].as_str().unwrap_or_default().to_owned(),
                m["text"].as_str().unwrap_or_default().to_owned(),
                m["outgoing"].as_bool().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn devices_groups_follow_the_account() {
    let _turn = scenario!();
    let net = Network::start();
    let (_supernodes, all) = net.two_supernodes(&["alice", "bob"]);
    net.login_device("alice", "alice-laptop");
    let mut desk = net.headless("alice", &all[..1], &[]);
    let mut laptop = net.headless("alice-laptop", &all[1..], &[]);
    let mut bob = net.headless("bob", &all, &[]);
    for p in [&desk, &laptop, &bob] {
        p.wait_json(T, |v| v["event"] == "published");
    }
    // bob is alice's contact (the invitation must come from one).
    bob.say("add alice hi, it's bob");
    desk.wait_json(T, |v| v["event"] == "contact_request");
    desk.say("accept bob");
    for p in [&mut desk, &mut laptop] {
        p.wait_json(T, |v| v["event"] == "contact_added" && v["user"] == "bob");
    }
    bob.wait_json(T, |v| v["event"] == "contact_added" && v["user"] == "alice");

    // Created on the desk: on the laptop too, with bob in it.
    desk.say("group create fam bob");
    let created = desk.wait_json(T, |v| {
        v["event"] == "group_change" && v["change"] == "created"
    });
    let gid = created["group"].as_str().unwrap().to_owned();
    let two = |v: &Value| {
        v["event"] == "group_change"
            && v["group"] == gid.as_str()
            && v["members"].as_array().is_some_and(|m| m.len() == 2)
    };
    for p in [&desk, &laptop, &bob] {
        let v = p.wait_json(T, two);
        assert_eq!(v["name"], "fam", "{}: {v}", p.name);
        assert_eq!(
            v["members"],
            serde_json::json!(["alice", "bob"]),
            "{}",
            p.name
        );
    }
    laptop.say("groups");
    let g = laptop.wait_json(T, |v| v["event"] == "groups");
    assert_eq!(g["groups"][0]["id"], gid.as_str(), "{g}");
    assert_eq!(g["groups"][0]["joined"], true, "{g}");

    // bob and the desk take turns; each message shows on both of alice's
    // devices (and bob's) before the next is sent.
    let mut ps = [desk, laptop, bob];
    let (desk, laptop, bob) = (0, 1, 2);
    let order = [
        (bob, "b1"),
        (desk, "d1"),
        (bob, "b2"),
        (desk, "d2"),
        (bob, "b3"),
    ];
    let mut want: Vec<(String, String, bool)> = Vec::new();
    for (i, text) in order {
        ps[i].say(&format!("group msg fam {text}"));
        let from = if i == bob { "bob" } else { "alice" };
        want.push((from.to_owned(), text.to_owned(), from == "alice"));
        for q in &ps {
            let v = q.wait_json(T, |v| v["event"] == "group_message" && v["text"] == text);
            assert_eq!(v["from"], from, "{}: {v}", q.name);
        }
    }
    // Nothing more comes (no copy twice) while retries and
    // acknowledgements settle; alice's two histories hold the same
    // messages in the same order.
    for p in &ps {
        let extra = group_messages(p, 0, Duration::from_secs(6), Duration::ZERO);
        assert!(extra.is_empty(), "{}: {extra:?}", p.name);
    }
    let mut histories = Vec::new();
    for i in [desk, laptop] {
        ps[i].say("group history fam 50");
        let h = ps[i].wait_json(T, |v| v["event"] == "group_history");
        let got = texts(h["messages"].as_array().unwrap());
        let mut sorted = got.clone();
        sorted.sort();
        let mut w = want.clone();
        w.sort();
        assert_eq!(sorted, w, "{}: {h}", ps[i].name);
        histories.push(got);
    }
    let by_text =
        |h: &[(String, String, bool)]| -> Vec<String> { h.iter().map(|m| m.1.clone()).collect() };
    assert_eq!(by_text(&histories[0]), by_text(&histories[1]));

    // The laptop sends too: the desk (as alice's, outgoing) and bob show
    // it once.
    ps[laptop].say("group msg fam l1");
    for q in &ps {
        let v = q.wait_json(T, |v| v["event"] == "group_message" && v["text"] == "l1");
        assert_eq!(v["from"], "alice", "{}", q.name);
        assert_eq!(v["outgoing"], q.name != "bob", "{}: {v}", q.name);
    }
    for p in &ps {
        let extra = group_messages(p, 0, Duration::from_secs(4), Duration::ZERO);
        assert!(extra.is_empty(), "{}: {extra:?}", p.name);
    }
    for p in &mut ps {
        p.quit(T);
    }
}
