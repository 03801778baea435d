//! Nobody answers: bob's client rings but bob does nothing. alice's
//! `[call] ring_timeout` (2 s here) ends the call with reason "no_answer"
//! on both sides, and alice exits with status 1. A call to a user who is
//! not online ends at once with "no_response".

use crate::common::calls::*;
use std::time::{Duration, Instant};

#[test]
fn an_unanswered_call_times_out() {
    let _turn = scenario!();
    let net = CallNet::start(&["alice", "bob", "carol"]);
    let quick = format!("{NULL_AUDIO}[call]\nring_timeout = \"2s\"\n");
    let bob = net.client("bob", NULL_AUDIO, &[]);
    let mut alice = net.client("alice", &quick, &["--call", "bob"]);
    state(&alice, "ringing");
    let t0 = Instant::now();
    state(&bob, "incoming");
    let e = ended(&alice);
    assert_eq!(e["reason"], "no_answer", "{e}");
    let waited = t0.elapsed();
    assert!(
        waited > Duration::from_millis(1500) && waited < Duration::from_secs(6),
        "no answer after {waited:?}"
    );
    let e = ended(&bob);
    assert!(
        e["reason"] == "cancelled" || e["reason"] == "no_answer",
        "bob: {e}"
    );
    assert_eq!(net.exit_code(&mut alice, Duration::from_secs(10)), 1);

    // carol has an account but is not online.
    let mut alice = net.client("alice", &quick, &["--call", "carol"]);
    let e = ended(&alice);
    assert_eq!(e["reason"], "no_response", "{e}");
    assert!(e["detail"].is_string(), "the overlay's answer: {e}");
    assert_eq!(net.exit_code(&mut alice, Duration::from_secs(10)), 1);
}
