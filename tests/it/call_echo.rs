//! A call to the echo test contact (Skype's echo123): `natter --headless
//! --echo` answers every call and plays back what it hears. alice calls it
//! with a 1 kHz sine (`--play tone:1000`) and records: the recording holds
//! her own tone, at its frequency, delayed by the round trip through both
//! media pipelines.

use crate::common::calls::*;
use crate::common::media::{dominant_hz, goertzel_share};
use crate::common::procs;
use std::time::Duration;

#[test]
fn the_echo_contact_plays_back_what_it_hears() {
    let _turn = scenario!();
    let net = CallNet::start(&["alice", "echo123"]);
    let alice_wav = net.path("alice.wav");
    let echo = net.client("echo123", "", &["--echo"]);
    let mut alice = net.client(
        "alice",
        "",
        &[
            "--call",
            "echo123",
            "--play",
            "tone:1000",
            "--record",
            alice_wav.to_str().unwrap(),
            "--hangup-after",
            "4",
        ],
    );
    state(&echo, "incoming");
    state(&echo, "active");
    state(&alice, "active");
    let e = ended(&alice);
    assert_eq!(e["reason"], "hung_up", "{e}");
    assert_eq!(ended(&echo)["reason"], "hung_up");
    assert_eq!(net.exit_code(&mut alice, Duration::from_secs(10)), 0);
    // The echo contact stays up for the next caller.
    assert!(echo_is_running(&mut { echo }));

    // alice's tone and her recording start together (one audio device
    // pair, paced by one clock), so the echo starts after the round trip:
    // both encoders and jitter buffers and the echo contact's own delay.
    let s = natter::media::audio::read_wav(&alice_wav).unwrap();
    assert!(s.len() >= 48_000 * 3, "{} samples", s.len());
    let first = s
        .iter()
        .position(|x| x.unsigned_abs() > 2_000)
        .expect("an echo");
    let delay_ms = first as f64 / 48.0;
    eprintln!("echo heard {delay_ms:.0} ms after the call's audio started");
    assert!(
        (20.0..1500.0).contains(&delay_ms),
        "echo after {delay_ms} ms"
    );
    assert_tone("alice.wav", &s[first..], 1000.0, 1.0);
    let steady = &s[first + 9_600..first + 9_600 + 48_000];
    assert!(goertzel_share(steady, 1000.0) > 0.8);
    assert_eq!(dominant_hz(steady, 900, 1100), 1000);
}

fn echo_is_running(p: &mut procs::Proc) -> bool {
    p.child.try_wait().unwrap().is_none()
}
