//! The softphone in a real terminal: `natter demo` under tmux, driven with
//! send-keys and read with capture-pane. It waits for the demo contacts
//! online, survives resizing, removes the chat bot and adds it back
//! through user search, chats, calls the echo contact, hangs up and quits;
//! then the terminal must be clean: main screen, cursor shown, cooked
//! mode, nothing of the TUI left.
//!
//! The chat is real: the message goes end to end encrypted through the
//! supernodes to the bot's runtime, whose answer is drawn below it, and
//! the delivery mark appears once the bot acknowledged it. So is the
//! call: echo123 answers it and plays our audio back; the call panel's
//! timer and packet counters must move, the RTT and the path show, the
//! microphone meter shows our tone until we mute, and hanging up ends it.

use crate::common::tmux::{Tmux, has_tmux, online};
use std::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

#[test]
fn demo_in_a_real_terminal() {
    let _turn = scenario!();
    if !has_tmux() {
        eprintln!("SKIPPED tui_tmux: tmux is not installed (apt-get install -y tmux)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = Tmux {
        socket: format!("natter-test-{}", std::process::id()),
    };
    let bin = env!("CARGO_BIN_EXE_natter");
    // A plain shell, so that the terminal's state after natter exits can
    // be checked from inside it.
    let shell = format!("env PS1='$ ' TMPDIR='{}' /bin/sh", dir.path().display());
    let out = t.cmd(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "natter",
        "-x",
        "100",
        "-y",
        "30",
        &shell,
    ]);
    assert!(out.status.success(), "tmux new-session: {out:?}");
    t.wait("the shell prompt", T, |s| s.contains('$'));
    t.text(&format!("{bin} demo"));
    t.keys(&["Enter"]);

    // Start-up: the buddy list with both demo contacts online.
    let started = Instant::now();
    // The TUI's title bar is its first line.
    t.wait("the first screen", T, |s| s.starts_with(" natter "));
    let first = started.elapsed();
    let s = t.wait("the contacts online", T, |s| {
        online(s, "echo123") && online(s, "bot") && online(s, "carol")
    });
    eprintln!(
        "first screen after {first:?}, contacts online after {:?}",
        started.elapsed()
    );
    assert!(s.contains("⇄ 2 supernodes"), "{s}");
    assert!(s.contains("Network") && s.contains("primary"), "{s}");
    if !Path::new("/dev/snd").exists() {
        assert!(s.contains("no sound card"), "{s}");
    }

    // Resizing: a small terminal gets the one-pane layout, and back.
    t.cmd(&["resize-window", "-t", "natter", "-x", "50", "-y", "14"]);
    t.wait("the small layout", T, |s| {
        !s.contains("Network") && s.contains("Contacts (3)")
    });
    t.cmd(&["resize-window", "-t", "natter", "-x", "100", "-y", "30"]);
    t.wait("the full layout again", T, |s| s.contains("Network"));

    // Help overlay.
    t.text("?");
    t.wait("the help overlay", T, |s| s.contains("Help: keys"));
    t.text("?");
    t.wait("the help closed", T, |s| !s.contains("Help: keys"));

    // Remove the bot (it is selected first), then find and add it again.
    t.text("d");
    t.wait("the question", T, |s| {
        s.contains("Remove bot from your contacts?")
    });
    t.text("y");
    t.wait("bot removed", T, |s| s.contains("Contacts (2)"));
    t.text("/");
    t.wait("the search window", T, |s| s.contains("Find a user"));
    t.text("bot");
    t.keys(&["Enter"]);
    t.wait("bot found", T, |s| s.contains("bot exists"));
    t.keys(&["Enter"]);
    // The greeting step: the suggested greeting goes with the request.
    t.wait("the greeting", T, |s| {
        s.contains("Add bot") && s.contains("Greeting:")
    });
    t.keys(&["Enter"]);
    t.wait("bot added and online", T, |s| {
        s.contains("Contacts (3)") && online(s, "bot") && !s.contains("Find a user")
    });

    // Chat with the bot.
    t.keys(&["Home", "Enter"]);
    t.wait("the chat with bot", T, |s| s.contains("Chat with bot"));
    t.text("hello");
    let sent = Instant::now();
    t.keys(&["Enter"]);
    // The bot's answer travels back through the supernodes as a sealed
    // envelope and is rendered under our message.
    let s = t.wait("the bot's answer", T, |s| {
        s.contains("bot: Hello! I am the demo chat bot.")
    });
    let answered = sent.elapsed();
    let mine = s.find("you: hello").expect("our message on screen");
    let theirs = s.find("bot: Hello!").unwrap();
    assert!(
        mine < theirs,
        "the answer is drawn below the question:\n{s}"
    );
    // Our message gets its mark once the bot's device acknowledged it.
    t.wait("the delivery mark", T, |s| s.contains("you: hello ✓"));
    t.text("time");
    t.keys(&["Enter"]);
    t.wait("the second answer", T, |s| {
        s.contains("you: time") && s.contains("bot: It is ")
    });
    eprintln!("chat round trip to the bot (Enter to its answer on screen): {answered:?}");
    t.keys(&["Escape"]);
    t.wait("focus back on the contacts", T, |s| {
        s.contains("enter to type")
    });

    // Call the echo contact: it answers at once and plays our audio (the
    // tone generator, without a sound card) back to us.
    t.keys(&["End"]);
    let dialed = Instant::now();
    t.text("c");
    let s = t.wait("the call to be active", T, |s| {
        s.contains("in call with echo123 ") || s.contains("not available")
    });
    let setup = dialed.elapsed();
    assert!(s.contains("in call with echo123 "), "{s}");
    // The timer, and the mic line's packet counters `↑sent ↓received`.
    let timer = |s: &str| {
        s.lines()
            .find_map(|l| l.split("in call with echo123 ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_owned)
    };
    let packets = |s: &str| -> Option<(u64, u64)> {
        let r = s.lines().find_map(|l| l.split('↑').nth(1))?;
        let (up, down) = r.split_once(" ↓")?;
        let down = down.split_whitespace().next()?.trim_end_matches('│');
        Some((up.parse().ok()?, down.parse().ok()?))
    };
    let rtt_measured = |s: &str| {
        s.lines().any(|l| {
            l.split("rtt ")
                .nth(1)
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
    };
    let s1 = t.wait("the echo coming back, its RTT and path", T, |s| {
        packets(s).is_some_and(|(_, down)| down > 0)
            && rtt_measured(s)
            && s.contains("path direct to 127.0.0.1:")
    });
    let (t1, p1) = (timer(&s1), packets(&s1).unwrap());
    let s2 = t.wait("the timer and the counters to move", T, |s| {
        timer(s).is_some_and(|t| Some(t) != t1)
            && packets(s).is_some_and(|(up, down)| up > p1.0 && down > p1.1)
    });
    eprintln!(
        "call active on screen {setup:?} after the key; timer {} -> {}, packets {:?} -> {:?}",
        t1.unwrap_or_default(),
        timer(&s2).unwrap_or_default(),
        p1,
        packets(&s2).unwrap()
    );
    // The meter shows the tone we send; muted, it falls silent with the
    // next report.
    let mic = |s: &str| s.lines().find(|l| l.contains("mic  ")).map(str::to_owned);
    assert!(mic(&s2).is_some_and(|l| l.contains('▮')), "{s2}");
    t.text("m");
    t.wait("muted, the meter silent", T, |s| {
        s.contains("[muted]") && mic(s).is_some_and(|l| !l.contains('▮'))
    });
    t.text("x");
    t.wait("the call to end", T, |s| {
        s.contains("call with echo123 ended: you hung up")
    });

    // Quit: the shell is back and the terminal is as it was.
    t.text("q");
    let s = t.wait("natter to exit", T, |s| s.contains("natter demo stopped"));
    assert!(!s.contains("Contacts ("), "TUI left on the screen:\n{s}");
    assert!(!s.contains('│'), "TUI left on the screen:\n{s}");
    assert_eq!(
        t.format("#{alternate_on}"),
        "0",
        "still on the alternate screen"
    );
    assert_eq!(t.format("#{cursor_flag}"), "1", "cursor left hidden");
    t.wait("the shell prompt", T, |s| {
        s.lines().rev().find(|l| !l.trim().is_empty()) == Some("$")
    });
    // In raw mode Enter would not end the line: the answer proves cooked
    // mode and echo are back.
    t.text("stty -a | grep -qe -icanon -e '-echo ' && echo TTY-RAW || echo TTY-COOKED");
    t.keys(&["Enter"]);
    let s = t.wait("the shell's answer", T, |s| {
        s.lines().any(|l| l == "TTY-COOKED" || l == "TTY-RAW")
    });
    assert!(s.lines().any(|l| l == "TTY-COOKED"), "{s}");
    // Nothing but the demo's own lines was written to the terminal.
    let stray: Vec<&str> = s
        .lines()
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with('$')
                && !l.starts_with("natter demo stopped")
                && *l != "TTY-COOKED"
        })
        .collect();
    assert!(
        stray.is_empty(),
        "stray output on the terminal: {stray:?}\n{s}"
    );
}
