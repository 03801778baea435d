//! Issue 13 ("the softphone's first hour") in a real terminal: the TUI of
//! `alice` under tmux, on an authority and a supernode running as
//! processes of their own, with headless users on the other side.

use crate::common::procs::{Network, Proc};
use crate::common::tmux::{Tmux, cpu_percent, tui_command};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// alice's TUI (100x30) and headless `others`, all attached to one
/// supernode and published.
pub(crate) fn start(tag: &str, others: &[&str]) -> Option<(Network, Proc, Tmux, Vec<Proc>)> {
    let net = Network::start();
    net.account("sn1", true);
    net.account("alice", false);
    for u in others {
        net.account(u, false);
    }
    let (sn, addr) = net.supernode("sn1", &[]);
    let bootstrap = vec![addr];
    let t = Tmux::start(tag, 100, 30, &tui_command(&net, "alice", &bootstrap))?;
    t.wait("alice logged in and attached", T, |s| {
        s.contains("alice ● online") && s.contains("⇄ 1 supernode")
    });
    // Headless users with null audio devices (they may call).
    let cfg = net.config_with_overlay("others.toml", crate::common::calls::NULL_AUDIO);
    let procs = others
        .iter()
        .map(|u| {
            let p = net.headless_with(u, &cfg, &bootstrap, &[]);
            p.wait_json(T, |v| v["event"] == "published");
            p
        })
        .collect();
    Some((net, sn, t, procs))
}

/// Make `a` and alice contacts: `a` asks, alice accepts in the TUI.
pub(crate) fn befriend(t: &Tmux, a: &mut Proc, name: &str) {
    a.say(&format!("add alice hi from {name}"));
    t.wait("the request", T, |s| {
        s.contains(&format!("{name} wants to add you"))
    });
    t.keys(&["Home"]);
    t.text("a");
    a.wait_json(T, |v| v["event"] == "contact_added" && v["user"] == "alice");
    t.wait("the contact online", T, |s| {
        s.contains(&format!("● {name}"))
    });
}

/// Bug 1: a 10,000-character paste is in the box within a second, the
/// process goes back to idle, and Enter sends it as three messages that
/// arrive whole. Keystroke-to-screen latency with 4,000 characters in
/// the box is measured through tmux.
#[test]
fn paste_of_10000_characters() {
    let _turn = scenario!();
    let Some((_net, _sn, t, mut others)) = start("paste", &["bob"]) else {
        return;
    };
    let bob = &mut others[0];
    befriend(&t, bob, "bob");
    t.keys(&["Enter"]);
    t.wait("the chat with bob", T, |s| s.contains("Chat with bob"));
    let pid = t.pid();
    let idle_before = cpu_percent(pid, Duration::from_secs(2));

    // 4,000 characters, then keys one at a time: each is on the screen
    // (the byte count above the box) before the next is sent.
    let text: String = (0..800).map(|i| format!("p{:03} ", i % 1000)).collect();
    t.paste(&text);
    t.wait("4,000 characters in the box", T, |s| {
        s.contains(" 4000/4000 bytes ")
    });
    let mut lat = Vec::new();
    for n in 4001..=4020 {
        let sent = Instant::now();
        t.text("z");
        let want = format!(" {n} bytes: over");
        t.wait_every("the key on the screen", T, Duration::from_millis(1), |s| {
            s.contains(&want)
        });
        lat.push(sent.elapsed());
    }
    lat.sort();
    let cpu_draft = cpu_percent(pid, Duration::from_secs(3));

    // 10,000 characters more, pasted after them.
    let started_cpu = crate::common::tmux::cpu_ms(pid);
    let big: String = (0..2000).map(|i| format!("w{:03} ", i % 1000)).collect();
    let pasted = Instant::now();
    t.paste(&big);
    t.wait_every("the paste in the box", T, Duration::from_millis(5), |s| {
        s.contains("14020 bytes: over the 4000-byte limit, sent as 4+ messages")
    });
    let arrived = pasted.elapsed();
    let paste_cpu = crate::common::tmux::cpu_ms(pid) - started_cpu;
    let idle_after = cpu_percent(pid, Duration::from_secs(3));
    eprintln!(
        "idle TUI {idle_before:.1} % of a core; with a 4,000-char draft {cpu_draft:.1} %; \
         key to screen with 4,000 chars: median {:?}, max {:?} (tmux round trip included); \
         10,000-char paste on screen after {arrived:?} ({paste_cpu} ms CPU), then {idle_after:.1} %",
        lat[lat.len() / 2],
        lat[lat.len() - 1]
    );
    assert!(arrived < Duration::from_secs(1), "{arrived:?}");
    assert!(idle_after < 5.0, "not back to idle: {idle_after:.1} %");
    assert!(lat[lat.len() / 2] < Duration::from_millis(100), "{lat:?}");

    t.keys(&["Enter"]);
    t.wait("the split notice", T, |s| {
        s.contains("long message sent as 4 messages")
    });
    let mut got = Vec::new();
    for _ in 0..4 {
        let m = bob.wait_json(T, |v| v["event"] == "message");
        got.push(m["text"].as_str().unwrap().to_owned());
    }
    assert!(got.iter().all(|p| p.len() <= 4000));
    let all = format!("{text}{}{big}", "z".repeat(20));
    assert_eq!(got.join(" "), all.trim_end());
    t.wait("the delivery marks", T, |s| s.contains('✓'));
}

/// Bug 3: erin, no contact of alice's, writes; alice finds her under
/// "requests and strangers", reads the message and answers it.
#[test]
fn stranger_message_read_and_answered() {
    let _turn = scenario!();
    let Some((_net, _sn, t, mut others)) = start("stranger", &["erin"]) else {
        return;
    };
    let erin = &mut others[0];
    erin.say("msg alice hello alice, it's erin");
    t.wait("the stranger's entry", T, |s| {
        s.contains("Requests and strangers") && s.contains("✉ erin wrote to you (1)")
    });
    t.keys(&["End", "Enter"]);
    t.wait("her message", T, |s| {
        s.contains("Chat with erin (not a contact)") && s.contains("erin: hello alice, it's erin")
    });
    t.text("hello erin");
    t.keys(&["Enter"]);
    let m = erin.wait_json(T, |v| v["event"] == "message");
    assert_eq!(m["from"], "alice");
    assert_eq!(m["text"], "hello erin");
    t.wait("the answer delivered", T, |s| {
        s.contains("alice: hello erin ✓")
    });
    // Add her from there: she gets the request.
    t.keys(&["Escape"]);
    t.text("a");
    let r = erin.wait_json(T, |v| v["event"] == "contact_request");
    assert_eq!(r["from"], "alice");
    t.wait("erin asked", T, |s| s.contains("erin (asked)"));
}

/// Bug 7: blocking asks first, and a blocked contact is unblocked in the
/// TUI (the block key again).
#[test]
fn block_asks_then_unblock() {
    let _turn = scenario!();
    let Some((_net, _sn, t, mut others)) = start("unblock", &["bob"]) else {
        return;
    };
    let bob = &mut others[0];
    befriend(&t, bob, "bob");
    t.text("b");
    t.wait("the question", T, |s| s.contains("Block bob?"));
    t.text("n");
    t.wait("the question gone", T, |s| !s.contains("Block bob?"));
    assert!(!t.screen().contains("(blocked)"));
    t.text("b");
    t.wait("the question", T, |s| s.contains("Block bob?"));
    t.text("y");
    t.wait("bob blocked", T, |s| {
        s.contains("bob (blocked)") && s.contains("b unblock")
    });
    t.text("b");
    t.wait("bob unblocked", T, |s| {
        !s.contains("(blocked)") && s.contains(" bob") && s.contains("b block")
    });
    // Unblocked, his messages come through again.
    bob.say("msg alice back again");
    t.wait("his message", T, |s| s.contains("bob (1)"));
}

/// Chat scrollback in a real terminal: forty messages from bob, the
/// newest on screen; Home shows the oldest, End the newest again.
#[test]
fn chat_scrollback() {
    let _turn = scenario!();
    let Some((_net, _sn, t, mut others)) = start("scroll", &["bob"]) else {
        return;
    };
    let bob = &mut others[0];
    befriend(&t, bob, "bob");
    for i in 1..=40 {
        bob.say(&format!("msg alice line {i:02}"));
    }
    t.keys(&["Enter"]);
    let s = t.wait("the newest message", T, |s| s.contains("bob: line 40"));
    assert!(!s.contains("bob: line 01"), "{s}");
    t.keys(&["PageUp"]);
    t.wait("an older page", T, |s| {
        !s.contains("bob: line 40") && s.contains("lines below")
    });
    t.keys(&["Home"]);
    t.wait("the oldest message", T, |s| s.contains("bob: line 01"));
    t.keys(&["End"]);
    t.wait("the newest again", T, |s| {
        s.contains("bob: line 40") && !s.contains("bob: line 01")
    });
}

/// The call panel at 80x24 keeps RTT, loss, jitter and the path: the
/// demo, calling echo123 (it answers and plays our audio back).
#[test]
fn call_panel_at_80x24() {
    let _turn = scenario!();
    let dir = tempfile::tempdir().unwrap();
    let line = format!(
        "exec env TMPDIR='{}' {} demo",
        dir.path().display(),
        env!("CARGO_BIN_EXE_natter")
    );
    let Some(t) = Tmux::start("call80", 80, 24, &line) else {
        return;
    };
    t.wait("echo123 online", T, |s| {
        crate::common::tmux::online(s, "echo123")
    });
    t.keys(&["End"]);
    t.text("c");
    let s = t.wait("the call's statistics", T, |s| {
        s.contains("in call with echo123 ")
            && s.lines().any(|l| {
                l.split("rtt ")
                    .nth(1)
                    .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
            })
            && s.contains("loss ")
            && s.contains("jitter ")
            && s.contains("path direct to 127.0.0.1:")
    });
    eprintln!("{s}");
    t.text("x");
    t.wait("the call ended", T, |s| s.contains("ended: you hung up"));
}

/// Missed calls: bob calls, alice does not answer, bob hangs up. alice's
/// TUI shows the missed call (title and call panel) until she opens
/// bob's chat; both sides keep the call in `calls.db` (bob's headless
/// `calls` lists it).
#[test]
fn missed_call_history() {
    let _turn = scenario!();
    let Some((_net, _sn, t, mut others)) = start("missed", &["bob"]) else {
        return;
    };
    let bob = &mut others[0];
    befriend(&t, bob, "bob");
    bob.say("call alice");
    t.wait("the incoming call", T, |s| s.contains("bob is calling you"));
    bob.say("hangup");
    let s = t.wait("the missed call", T, |s| {
        s.contains("☎ 1 missed") && s.contains("✗ missed call from bob at ")
    });
    assert!(!s.contains("bob is calling you"), "{s}");
    bob.say("calls");
    let h = bob.wait_json(T, |v| v["event"] == "call_history");
    assert_eq!(h["calls"][0]["user"], "alice", "{h}");
    assert_eq!(h["calls"][0]["direction"], "outgoing", "{h}");
    assert_eq!(h["calls"][0]["answered_at"], serde_json::Value::Null, "{h}");
    // Seen once alice turns to bob.
    t.keys(&["Home", "Enter"]);
    t.wait("the missed call seen", T, |s| {
        !s.contains("☎ 1 missed") && s.contains("✗ missed call from bob")
    });
}

/// The figures of the chat box: keystroke-to-screen latency with a
/// 4,000-character draft in the box (each key's byte count on the screen
/// before the next key is sent; tmux's send-keys and capture-pane round
/// trip included), and the CPU the process uses idle with that draft.
#[test]
fn draft_latency_and_idle_cpu() {
    let _turn = scenario!();
    let Some((_net, _sn, t, mut others)) = start("latency", &["bob"]) else {
        return;
    };
    befriend(&t, &mut others[0], "bob");
    t.keys(&["Enter"]);
    t.wait("the chat with bob", T, |s| s.contains("Chat with bob"));
    let pid = t.pid();
    let text: String = (0..800).map(|i| format!("d{:03} ", i % 1000)).collect();
    t.paste(&text);
    t.wait("4,000 characters in the box", T, |s| {
        s.contains(" 4000/4000 bytes ")
    });
    let mut lat = Vec::new();
    for n in 4001..=4060 {
        let sent = Instant::now();
        t.text("z");
        let want = format!(" {n} bytes: over");
        t.wait_every("the key on the screen", T, Duration::from_millis(1), |s| {
            s.contains(&want)
        });
        lat.push(sent.elapsed());
    }
    lat.sort();
    let median = lat[lat.len() / 2];
    let p90 = lat[lat.len() * 9 / 10];
    // Idle, the draft still in the box.
    let idle = cpu_percent(pid, Duration::from_secs(5));
    eprintln!(
        "key to screen with a 4,000-char draft ({} keys): median {median:?}, p90 {p90:?}, \
         max {:?}; idle with the draft: {idle:.2} % of a core",
        lat.len(),
        lat[lat.len() - 1]
    );
    assert!(median < Duration::from_millis(100), "{lat:?}");
    assert!(idle < 2.0, "not idle with a long draft: {idle:.2} %");
}

/// The items of the first hour that go through the network: a greeting
/// written in the add dialog reaches carol, bob's greeting shows with
/// his request, alice's mood message reaches bob, and during bob's call
/// the ctrl keys answer and mute while a draft is in the chat box, while
/// quitting asks first (n keeps the call, ctrl+x hangs up).
#[test]
fn greeting_mood_and_call_keys_while_typing() {
    let _turn = scenario!();
    let Some((_net, _sn, t, mut others)) = start("mood", &["bob", "carol"]) else {
        return;
    };
    // bob's greeting, under his request.
    others[0].say("add alice hi alice, it's bob from work");
    t.wait("bob's greeting", T, |s| {
        s.contains("bob wants to add you") && s.contains("“hi alice, it's bob from work”")
    });
    t.keys(&["Home"]);
    t.text("a");
    others[0].wait_json(T, |v| v["event"] == "contact_added" && v["user"] == "alice");
    t.wait("bob online", T, |s| s.contains("● bob"));

    // alice adds carol with a greeting of her own.
    t.text("/carol");
    t.keys(&["Enter"]);
    t.wait("carol found", T, |s| {
        s.contains("Enter again writes a greeting")
    });
    t.keys(&["Enter"]);
    t.wait("the greeting step", T, |s| s.contains("Add carol"));
    t.keys(&["C-u"]);
    t.text("hi carol, alice here");
    t.keys(&["Enter"]);
    let r = others[1].wait_json(T, |v| v["event"] == "contact_request");
    assert_eq!(r["from"], "alice", "{r}");
    assert_eq!(r["greeting"], "hi carol, alice here", "{r}");

    // The mood message, published to bob.
    t.text("S");
    t.wait("the mood dialog", T, |s| s.contains("Mood message"));
    t.text("back at 3");
    t.keys(&["Enter"]);
    t.wait("alice's mood in the title", T, |s| {
        s.contains("alice ● online · back at 3")
    });
    let bob = &mut others[0];
    bob.wait_json(T, |v| {
        v["event"] == "contact_presence" && v["user"] == "alice" && v["message"] == "back at 3"
    });

    // bob calls while alice types to him: ctrl+y answers, ctrl+t mutes,
    // the draft stays.
    t.keys(&["Home", "Enter"]);
    t.wait("the chat with bob", T, |s| s.contains("Chat with bob"));
    t.text("a draft that stays");
    bob.say("call alice");
    t.wait("the incoming call", T, |s| s.contains("bob is calling you"));
    t.keys(&["C-y"]);
    bob.wait_json(T, |v| v["event"] == "call_state" && v["state"] == "active");
    t.wait("the call on", T, |s| {
        s.contains("in call with bob") && s.contains("ctrl+x hang up")
    });
    t.keys(&["C-t"]);
    let m = bob.wait_json(T, |v| v["event"] == "call_remote");
    assert_eq!(m["muted"], true, "{m}");
    // Quitting asks; n keeps the call.
    t.keys(&["C-c"]);
    t.wait("the question", T, |s| s.contains("Quit and hang up?"));
    t.text("n");
    let s = t.wait("the question gone", T, |s| !s.contains("Quit and hang up?"));
    assert!(s.contains("> a draft that stays"), "{s}");
    t.keys(&["C-x"]);
    let e = bob.wait_json(T, |v| v["event"] == "call_state" && v["state"] == "ended");
    assert_eq!(e["message"], "the other side hung up", "{e}");
}
