//! A declined call: bob's client rings (no auto-answer) and bob types
//! `decline`; alice's `--call` ends with reason "declined" and exits with
//! status 1, and bob can still answer the next call by typing `answer`,
//! mute it (alice hears of it) and hang up.

use crate::common::calls::*;
use std::time::Duration;

#[test]
fn the_callee_declines_then_answers_the_next_call() {
    let _turn = scenario!();
    let net = CallNet::start(&["alice", "bob"]);
    let mut bob = net.client("bob", NULL_AUDIO, &[]);
    let mut alice = net.client("alice", NULL_AUDIO, &["--call", "bob"]);
    state(&alice, "ringing");
    let inc = state(&bob, "incoming");
    assert_eq!(inc["peer"], "alice");
    bob.say("decline");
    let e = ended(&alice);
    assert_eq!(e["reason"], "declined", "{e}");
    assert_eq!(e["message"], "the call was declined");
    let e = ended(&bob);
    assert_eq!(e["message"], "you declined the call", "{e}");
    // The scripted call never connected: status 1.
    assert_eq!(net.exit_code(&mut alice, Duration::from_secs(10)), 1);

    // The same client answers from stdin; then bob hangs up.
    let mut alice = net.client("alice", NULL_AUDIO, &["--call", "bob"]);
    state(&bob, "incoming");
    bob.say("answer");
    state(&bob, "active");
    state(&alice, "active");
    // Mute travels as call signalling too.
    bob.say("mute");
    let m = alice.wait_json(T, |v| v["event"] == "call_remote");
    assert_eq!(m["muted"], true, "{m}");
    bob.say("hangup");
    assert_eq!(ended(&alice)["message"], "the other side hung up");
    assert_eq!(net.exit_code(&mut alice, Duration::from_secs(10)), 0);
}
