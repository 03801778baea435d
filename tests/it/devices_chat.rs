//! One account on two devices (issue 17): alice logs in on a second
//! machine (its own data directory, device key and certificate); bob's
//! contact request and messages reach each of her devices exactly once,
//! and she shows online to bob while either device runs; accepting or
//! blocking him on one device does it on both. What she sends
//! from one device shows on the other as sent, once and in order (also
//! when that one was offline), and reading on one device reads on both.
//! A third device added later takes the history from one of the others.

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

/// Two supernodes; alice on her desk (through the first) and her laptop
/// (through the second), bob through both; all three published.
fn desk_laptop_bob(net: &Network) -> ([Proc; 2], Vec<String>, [Proc; 3]) {
    let (supernodes, all) = net.two_supernodes(&["alice", "bob"]);
    net.login_device("alice", "alice-laptop");
    let ps = [
        net.headless("alice", &all[..1], &[]),
        net.headless("alice-laptop", &all[1..], &[]),
        net.headless("bob", &all, &[]),
    ];
    for p in &ps {
        p.wait_json(T, |v| v["event"] == "published");
    }
    (supernodes, all, ps)
}

#[test]
fn messages_reach_both_devices_exactly_once() {
    let _turn = scenario!();
    let net = Network::start();
    // Each of alice's devices starts through a different supernode.
    let (_supernodes, _, [mut desk, mut laptop, mut bob]) = desk_laptop_bob(&net);

    // bob asks alice; the request reaches both devices. She accepts on
    // the desk, and the laptop takes him as a contact too: the contact
    // list follows the account.
    bob.say("add alice hi, it's bob");
    for p in [&mut desk, &mut laptop] {
        let r = p.wait_json(T, |v| v["event"] == "contact_request");
        assert_eq!(r["from"], "bob");
    }
    desk.say("accept bob");
    for p in [&mut desk, &mut laptop] {
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

    // Blocked on the laptop: blocked on the desk, which then drops what
    // bob sends.
    laptop.say("block bob");
    for p in [&mut laptop, &mut desk] {
        p.wait_json(T, |v| v["event"] == "contact_blocked" && v["user"] == "bob");
    }
    bob.say("msg alice are you there?");
    assert!(messages(&desk, "bob", Duration::from_secs(4)).is_empty());
    laptop.say("unblock bob");
    desk.wait_json(T, |v| {
        v["event"] == "contact_unblocked" && v["user"] == "bob"
    });

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

/// The texts of the `event` events (`message_synced`: field `to`;
/// `message`: field `from`) naming `peer` that `p` shows within `window`.
fn events_with(p: &Proc, event: &str, field: &str, peer: &str, window: Duration) -> Vec<String> {
    let deadline = Instant::now() + window;
    let mut got = Vec::new();
    while let Ok(l) = p
        .lines
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&l)
            && v["event"] == event
            && v[field] == peer
        {
            got.push(v["text"].as_str().unwrap_or_default().to_owned());
        }
    }
    got
}

/// `p`'s history with `with`: (id, outgoing, text, read) of each message,
/// and the unread count.
fn history(p: &mut Proc, with: &str) -> (Vec<(String, bool, String, bool)>, u64) {
    p.say(&format!("history {with}"));
    let h = p.wait_json(T, |v| v["event"] == "history" && v["with"] == with);
    let msgs = h["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{h}"))
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap_or_default().to_owned(),
                m["outgoing"].as_bool().unwrap_or_default(),
                m["text"].as_str().unwrap_or_default().to_owned(),
                m["read"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    (msgs, h["unread"].as_u64().unwrap_or_else(|| panic!("{h}")))
}

/// Send `text` to `to` and wait for the recipient's acknowledgement.
fn send_acked(p: &mut Proc, to: &str, text: &str) {
    p.say(&format!("msg {to} {text}"));
    let q = p.wait_json(T, |v| v["event"] == "message_queued");
    p.wait_json(T, |v| v["event"] == "message_acked" && v["id"] == q["id"]);
}

fn texts(h: &[(String, bool, String, bool)]) -> Vec<(bool, &str)> {
    h.iter().map(|m| (m.1, m.2.as_str())).collect()
}

/// Jami's paired devices do not see their own sent messages (jami#6):
/// here alice's laptop shows what she sent from her desk, once and in
/// order, also what was sent while the laptop was off; both show bob's
/// reply once; reading on the desk reads on the laptop.
#[test]
fn sent_messages_and_read_state_follow_the_account() {
    let _turn = scenario!();
    let net = Network::start();
    let (_supernodes, all, [mut desk, mut laptop, mut bob]) = desk_laptop_bob(&net);

    let first = ["one", "two", "three"];
    for t in first {
        send_acked(&mut desk, "bob", t);
    }
    assert_eq!(messages(&bob, "alice", Duration::from_secs(3)), first);
    // Each once (the desk may have looked its devices up before the
    // laptop was in the directory: what found it alone comes late, so
    // the order is the history's, below).
    let mut synced = events_with(
        &laptop,
        "message_synced",
        "to",
        "bob",
        Duration::from_secs(3),
    );
    synced.sort();
    let mut want = first.map(String::from);
    want.sort();
    assert_eq!(synced, want, "the laptop shows each once");
    let (h, _) = history(&mut laptop, "bob");
    assert_eq!(
        texts(&h),
        first.iter().map(|t| (true, *t)).collect::<Vec<_>>()
    );

    // bob's reply reaches both devices once.
    send_acked(&mut bob, "alice", "back at you");
    for p in [&desk, &laptop] {
        assert_eq!(
            messages(p, "bob", Duration::from_secs(3)),
            ["back at you"],
            "{}",
            p.name
        );
    }

    // The laptop is off while the desk sends two more.
    laptop.quit(T);
    let more = ["four", "five"];
    for t in more {
        send_acked(&mut desk, "bob", t);
    }
    let mut laptop = net.headless("alice-laptop", &all[1..], &[]);
    assert_eq!(
        events_with(
            &laptop,
            "message_synced",
            "to",
            "bob",
            Duration::from_secs(10)
        ),
        more,
        "caught up on return, once, in order"
    );

    // The same history on both devices; bob's reply unread on both.
    let (h_desk, unread_desk) = history(&mut desk, "bob");
    let (h_laptop, unread_laptop) = history(&mut laptop, "bob");
    let want: Vec<(bool, &str)> = vec![
        (true, "one"),
        (true, "two"),
        (true, "three"),
        (false, "back at you"),
        (true, "four"),
        (true, "five"),
    ];
    assert_eq!(texts(&h_desk), want);
    assert_eq!(texts(&h_laptop), want);
    let ids =
        |h: &[(String, bool, String, bool)]| h.iter().map(|m| m.0.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&h_desk), ids(&h_laptop));
    assert_eq!((unread_desk, unread_laptop), (1, 1));
    // bob's acknowledgements reach both devices: every message sent shows
    // acknowledged on each (the laptop's came from the mailbox for the
    // last two, in either order with the copies).
    for p in [&mut desk, &mut laptop] {
        p.say("history bob");
        let h = p.wait_json(T, |v| v["event"] == "history" && v["with"] == "bob");
        for m in h["messages"].as_array().unwrap() {
            if m["outgoing"] == true {
                assert_eq!(m["acked"], true, "{}: {h}", p.name);
            }
        }
    }

    // Read on the desk: read on the laptop.
    desk.say("read bob");
    let r = desk.wait_json(T, |v| v["event"] == "chat_read");
    assert_eq!(
        (r["with"].as_str(), r["unread"].as_u64()),
        (Some("bob"), Some(0)),
        "{r}"
    );
    let r = laptop.wait_json(T, |v| v["event"] == "chat_read");
    assert_eq!(
        (r["with"].as_str(), r["unread"].as_u64()),
        (Some("bob"), Some(0)),
        "{r}"
    );
    let (h, unread) = history(&mut laptop, "bob");
    assert_eq!(unread, 0);
    assert!(h[3].3, "bob's reply shows read: {h:?}");

    laptop.quit(T);
    desk.quit(T);
    bob.quit(T);
}

/// `p`'s history with `with` once it equals `want` (or `T` passes).
fn history_like(
    p: &mut Proc,
    with: &str,
    want: &(Vec<(String, bool, String, bool)>, u64),
) -> (Vec<(String, bool, String, bool)>, u64) {
    let deadline = Instant::now() + T;
    loop {
        let h = history(p, with);
        if &h == want || Instant::now() > deadline {
            return h;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Issue 17: chat sync with three devices, one offline for a while and
/// one added later. alice's desk and bob talk; her laptop is off for
/// part of it and catches up on return; then she logs in on a phone,
/// which takes the history from one of her other devices (sealed to it,
/// device to device). The three show the same conversation with bob:
/// every message exactly once, in the same order, with the same read
/// state.
#[test]
fn three_devices_one_offline_one_added_later() {
    let _turn = scenario!();
    let net = Network::start();
    let (_supernodes, all, [mut desk, mut laptop, mut bob]) = desk_laptop_bob(&net);
    // Contacts: bob follows alice's devices as they come and go.
    bob.say("add alice hi");
    desk.wait_json(T, |v| v["event"] == "contact_request");
    desk.say("accept bob");
    bob.wait_json(T, |v| v["event"] == "contact_added" && v["user"] == "alice");

    send_acked(&mut desk, "bob", "d1");
    send_acked(&mut bob, "alice", "b1");
    // The laptop is off while they go on; the desk reads.
    laptop.quit(T);
    for n in [2, 3] {
        send_acked(&mut desk, "bob", &format!("d{n}"));
        send_acked(&mut bob, "alice", &format!("b{n}"));
    }
    desk.say("read bob");
    desk.wait_json(T, |v| v["event"] == "chat_read");
    send_acked(&mut bob, "alice", "b4");

    let want = [
        (true, "d1"),
        (false, "b1"),
        (true, "d2"),
        (false, "b2"),
        (true, "d3"),
        (false, "b3"),
        (false, "b4"),
    ];
    let h_desk = history(&mut desk, "bob");
    assert_eq!(texts(&h_desk.0), want);
    assert_eq!(h_desk.1, 1, "b4 unread");

    // Back: the laptop catches up from the directory owners' mailboxes.
    let mut laptop = net.headless("alice-laptop", &all[1..], &[]);
    laptop.wait_json(T, |v| v["event"] == "published");
    let h_laptop = history_like(&mut laptop, "bob", &h_desk);
    assert_eq!(h_laptop, h_desk, "the laptop caught up");

    // A phone added later: its history comes from the desk or the laptop.
    net.login_device("alice", "alice-phone");
    let mut phone = net.headless("alice-phone", &all[..1], &[]);
    let synced = phone.wait_json(T, |v| v["event"] == "history_synced" && v["with"] == "bob");
    assert_eq!(
        (synced["added"].as_u64(), synced["unread"].as_u64()),
        (Some(want.len() as u64), Some(1)),
        "{synced}"
    );
    let h_phone = history(&mut phone, "bob");
    assert_eq!(h_phone, h_desk, "the same history, read state and order");
    let mut ids: Vec<&String> = h_phone.0.iter().map(|m| &m.0).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), want.len(), "each message once");
    // Nothing came twice on any device meanwhile.
    for p in [&mut desk, &mut laptop, &mut phone] {
        assert_eq!(history(p, "bob"), h_desk, "{}", p.name);
    }

    // What happens next reaches all three, once.
    send_acked(&mut bob, "alice", "b5");
    for p in [&desk, &laptop, &phone] {
        assert_eq!(
            messages(p, "bob", Duration::from_secs(3)),
            ["b5"],
            "{}",
            p.name
        );
    }
    let h = history(&mut desk, "bob");
    assert_eq!(h.0.len(), want.len() + 1);
    for p in [&mut laptop, &mut phone] {
        assert_eq!(history_like(p, "bob", &h), h, "{}", p.name);
    }

    phone.quit(T);
    laptop.quit(T);
    desk.quit(T);
    bob.quit(T);
}
