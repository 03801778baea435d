//! A conference from the softphone in a real terminal: `natter demo`
//! under tmux; space marks the demo's talking contact (carol) and the
//! echo contact, `C` starts a conference with them. Both join by
//! themselves; the call panel shows three participants, mixed by us,
//! with carol speaking (her tone) and echo123 speaking (our tone and
//! carol's, played back); `m` mutes us, `x` leaves, and the demo
//! contacts leave with us (the conference ends for everyone).

use crate::common::tmux::demo;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// The call panel's line of `name` shows it speaking: the dot lit and
/// its meter moving.
fn speaking(screen: &str, name: &str) -> bool {
    screen
        .lines()
        .filter_map(|l| l.split("││").nth(1))
        .any(|p| p.starts_with(&format!("● {name} ")) && p.contains('▮'))
}

#[test]
fn a_three_party_conference_with_the_demo_contacts() {
    let _turn = scenario!();
    let dir = tempfile::tempdir().unwrap();
    let Some(t) = demo("conf", 100, 30, dir.path()) else {
        return;
    };
    // bot, carol, echo123: mark the last two.
    t.mark_carol_and_echo();
    let dialed = Instant::now();
    t.text("C");
    let s = t.wait("three participants", T, |s| {
        s.contains("conference · 3 participants")
    });
    let joined = dialed.elapsed();
    assert!(s.contains("mixed by you"), "{s}");
    let s = t.wait("carol and echo123 heard", T, |s| {
        speaking(s, "carol") && speaking(s, "echo123")
    });
    let heard = dialed.elapsed();
    eprintln!("{s}");
    eprintln!(
        "conference from the key: three participants on screen after {joined:?}, \
         carol and echo123 speaking after {heard:?}"
    );
    assert!(
        s.contains("m mute · + add · x leave · M mute selected"),
        "{s}"
    );
    // Mute ourselves: the panel says so.
    t.text("m");
    t.wait("muted", T, |s| {
        s.lines()
            .any(|l| l.contains("you (you)") && l.contains("[muted]"))
    });
    // Leave: the conference ends for us, and the demo contacts leave it
    // too (a call to echo123 afterwards is not busy).
    t.text("x");
    t.wait("the conference ended", T, |s| {
        s.contains("the conference ended (left)")
    });
    t.keys(&["End"]);
    t.text("c");
    let s = t.wait("a call to echo123", T, |s| {
        s.contains("in call with echo123 ") || s.contains("ended:")
    });
    assert!(s.contains("in call with echo123 "), "{s}");
    t.text("x");
    t.wait("the call ended", T, |s| s.contains("ended: you hung up"));
    t.quit_demo();
}
