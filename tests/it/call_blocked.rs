//! A blocked user's calls don't ring: bob blocks carol, carol calls him
//! and her call ends as for a user who can't be reached ("no_response":
//! bob never says it rings) while bob's node drops each invitation,
//! counted in its log, and never shows an incoming call; bob's own call
//! to carol is refused with the reason. alice, not blocked, gets through
//! right after; once bob unblocks carol, her call rings again.

use crate::common::calls::*;
use std::time::Duration;

/// The drop count bob's node logged last (0 when none).
fn dropped(log: &std::path::Path) -> u64 {
    let raw = std::fs::read_to_string(log).unwrap_or_default();
    // Without colour codes, should the log have them.
    let mut text = String::new();
    let mut esc = false;
    for c in raw.chars() {
        match c {
            '\x1b' => esc = true,
            'm' if esc => esc = false,
            _ if esc => {}
            _ => text.push(c),
        }
    }
    text.lines()
        .filter(|l| l.contains("call invite from a blocked user dropped") && l.contains("carol"))
        .filter_map(|l| l.split("dropped=").nth(1))
        .filter_map(|n| n.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn a_blocked_users_invites_are_dropped() {
    let _turn = scenario!();
    let net = CallNet::start(&["alice", "bob", "carol"]);
    let quick = format!("{NULL_AUDIO}[call]\nring_timeout = \"2s\"\n");
    let mut bob = net.client("bob", NULL_AUDIO, &[]);
    bob.say("block carol");
    bob.wait_json(T, |v| {
        v["event"] == "contact_blocked" && v["user"] == "carol"
    });

    let mut carol = net.client("carol", &quick, &["--call", "bob"]);
    let e = ended(&carol);
    assert_eq!(e["reason"], "no_response", "{e}");
    assert_eq!(net.exit_code(&mut carol, Duration::from_secs(10)), 1);
    let log = net.path("bob.log");
    assert!(dropped(&log) >= 1, "bob's log:\n{}", net.log_tail("bob"));

    // bob can't call carol either while she is blocked: the node says why.
    bob.say("call carol");
    let e = bob.wait_json(T, |v| v["event"] == "error");
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains("carol is blocked: unblock them to call")),
        "{e}"
    );

    // The next call bob sees is alice's: carol's never reached him.
    let mut alice = net.client("alice", &quick, &["--call", "bob"]);
    let inc = state(&bob, "incoming");
    assert_eq!(inc["peer"], "alice", "{inc}");
    ended(&alice);
    ended(&bob);
    assert_eq!(net.exit_code(&mut alice, Duration::from_secs(10)), 1);

    // Unblocked, carol's call rings.
    bob.say("unblock carol");
    let mut carol = net.client("carol", &quick, &["--call", "bob"]);
    let inc = state(&bob, "incoming");
    assert_eq!(inc["peer"], "carol", "{inc}");
    ended(&carol);
    assert_eq!(net.exit_code(&mut carol, Duration::from_secs(10)), 1);
}
