//! A busy callee: bob is in a call with alice when carol calls him.
//! carol's call ends at once with reason "busy" (exit status 1) and the
//! call between alice and bob goes on.

use crate::common::calls::*;
use std::time::Duration;

#[test]
fn a_second_caller_gets_busy() {
    let _turn = scenario!();
    let net = CallNet::start(&["alice", "bob", "carol"]);
    let bob = net.client("bob", NULL_AUDIO, &["--auto-answer"]);
    let mut alice = net.client("alice", NULL_AUDIO, &["--call", "bob"]);
    state(&alice, "active");
    state(&bob, "active");
    let mut carol = net.client("carol", NULL_AUDIO, &["--call", "bob"]);
    let t0 = std::time::Instant::now();
    let e = ended(&carol);
    assert_eq!(e["reason"], "busy", "{e}");
    assert_eq!(e["message"], "the other side is busy in another call");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "busy took {:?}",
        t0.elapsed()
    );
    assert_eq!(net.exit_code(&mut carol, Duration::from_secs(10)), 1);
    // alice's call still carries audio.
    let s = alice.wait_json(T, |v| v["event"] == "call_stats" && !v["rtt_ms"].is_null());
    assert!(s["packets_received"].as_u64().unwrap() > 0, "{s}");
    alice.say("hangup");
    assert_eq!(ended(&bob)["reason"], "hung_up");
    assert_eq!(net.exit_code(&mut alice, Duration::from_secs(10)), 0);
}
