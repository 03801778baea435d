//! Call progress tones on the output device. alice calls bob, who does not
//! answer; both record what their output played. While bob's phone rings,
//! alice hears the ring-back (425 Hz, 1 s on, 4 s off) and bob the
//! ringtone (400 + 450 Hz, 0.4 s on, 0.2 s off, 0.4 s on); both stop when
//! the call ends. With `[call] ringback = false` and `ringtone = false`
//! nothing is played, so nothing is recorded.

use crate::common::calls::*;
use crate::common::media::{dominant_hz, goertzel_share, heard, sound_runs};
use std::path::Path;
use std::time::Duration;

const MS: usize = 48;

/// alice calls bob, who does not answer, each recording its output to
/// the given file; returns once alice's ring timeout ended the call.
fn unanswered_call(net: &CallNet, alice_toml: &str, bob_toml: &str, a_wav: &Path, b_wav: &Path) {
    let bob = net.client("bob", bob_toml, &["--record", b_wav.to_str().unwrap()]);
    let mut alice = net.client(
        "alice",
        alice_toml,
        &["--call", "bob", "--record", a_wav.to_str().unwrap()],
    );
    state(&alice, "ringing");
    state(&bob, "incoming");
    assert_eq!(ended(&alice)["reason"], "no_answer");
    ended(&bob);
    assert_eq!(net.exit_code(&mut alice, Duration::from_secs(10)), 1);
}

#[test]
fn ring_back_and_ringtone_play_while_the_callee_rings() {
    let _turn = scenario!();
    let net = CallNet::start(&["alice", "bob"]);
    let (a_wav, b_wav) = (net.path("alice.wav"), net.path("bob.wav"));
    unanswered_call(&net, "[call]\nring_timeout = \"3s\"\n", "", &a_wav, &b_wav);

    // alice: one 1 s burst of 425 Hz, then silence to the end.
    let a = heard(&a_wav);
    let r = sound_runs(&a, 301);
    eprintln!("alice's ring-back runs (ms): {r:?}");
    assert!((980..=1_020).contains(&r[0]), "a 1 s burst: {r:?}");
    assert!(r.len() == 2 && r[1] >= 1_000, "then silence: {r:?}");
    let burst = &a[100 * MS..900 * MS];
    assert_eq!(dominant_hz(burst, 300, 600), 425);
    assert!(goertzel_share(burst, 425.0) > 0.9);

    // bob: the double ring, both tones in each burst.
    let b = heard(&b_wav);
    let r = sound_runs(&b, 301);
    eprintln!("bob's ringtone runs (ms): {r:?}");
    assert!(r.len() >= 3, "{r:?}");
    assert!((380..=420).contains(&r[0]), "first ring 0.4 s: {r:?}");
    assert!((180..=220).contains(&r[1]), "gap 0.2 s: {r:?}");
    assert!((380..=420).contains(&r[2]), "second ring 0.4 s: {r:?}");
    for burst in [&b[20 * MS..380 * MS], &b[620 * MS..980 * MS]] {
        let (lo, hi) = (goertzel_share(burst, 400.0), goertzel_share(burst, 450.0));
        assert!(lo > 0.3 && hi > 0.3, "400 Hz {lo:.2}, 450 Hz {hi:.2}");
        assert!(goertzel_share(burst, 425.0) < 0.05);
    }

    // Turned off: no device is opened, no recording written.
    let (a2, b2) = (net.path("alice2.wav"), net.path("bob2.wav"));
    let quiet = "[call]\nringback = false\nringtone = false\nring_timeout = \"2s\"\n";
    unanswered_call(&net, quiet, quiet, &a2, &b2);
    assert!(
        !a2.exists() && !b2.exists(),
        "nothing played, nothing recorded"
    );
}
