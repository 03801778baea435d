//! The call panel drawn from real events: an authority and two supernodes
//! (processes), `you` as the in-process client runtime behind the TUI's
//! [`App`], and `echo` as a headless natter with `--echo` (answers every
//! call and plays back what it hears). `you` calls echo: the panel shows
//! the running call with its measured RTT, path and packet counters
//! (snapshot), `x` hangs up. Then echo calls `you`: the incoming prompt
//! (snapshot), `y` answers, the call carries audio both ways, `x` ends it.
//!
//! Measured numbers (timer, counters, RTT, loss, jitter, ports) vary
//! between runs: every run of digits is masked before the comparison.

use crate::common::procs::Network;
use insta::assert_snapshot;
use natter::clock::{Clock, SystemClock};
use natter::config::{Config, HostPort};
use natter::node::api::{CallState, Command};
use natter::node::client::{self, ClientHandle, ClientSettings};
use natter::ui::{App, KeyMap};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::sync::Arc;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

/// The one-pane layout with the call panel under the main pane; numbers
/// masked (a run of digits becomes `#`, a run of spaces one space).
fn draw(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(60, 16)).unwrap();
    t.draw(|f| app.render(f)).unwrap();
    t.backend()
        .to_string()
        .lines()
        .map(mask)
        .collect::<Vec<_>>()
        .join("\n")
}

fn mask(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        let c = if c.is_ascii_digit() { '#' } else { c };
        if (c == '#' || c == ' ') && out.ends_with(c) {
            continue;
        }
        out.push(c);
    }
    out
}

fn key(app: &mut App, code: KeyCode) {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
}

/// Feed the runtime's events to the App and the App's commands to the
/// runtime until `done` holds for the App.
async fn pump(you: &mut ClientHandle, app: &mut App, what: &str, done: impl Fn(&App) -> bool) {
    let start = tokio::time::Instant::now();
    let deadline = start + T;
    loop {
        for c in app.take_commands() {
            you.commands.send(c).await.unwrap();
        }
        app.tick(SystemClock.unix());
        if done(app) {
            eprintln!("{what}: {:?}", start.elapsed());
            return;
        }
        match tokio::time::timeout_at(deadline, you.events.recv()).await {
            Ok(Some(e)) => app.handle_event(e),
            Ok(None) => panic!("the runtime stopped while waiting for {what}"),
            Err(_) => panic!(
                "waited {T:?} for {what}; the screen:\n{}",
                draw(app).replace("\" \"", "\"\n\"")
            ),
        }
    }
}

/// The live call is active, its echo is coming back and its RTT measured.
fn carrying_audio(a: &App) -> bool {
    a.model.current_call().is_some_and(|c| {
        c.state == CallState::Active
            && a.model
                .stats
                .get(&c.id)
                .is_some_and(|s| s.packets_received > 0 && s.rtt_ms.is_some())
    })
}

fn ended(a: &App) -> Option<String> {
    match &a.model.current_call()?.state {
        CallState::Ended { reason, detail } => Some(CallState::end_text(reason, detail)),
        _ => None,
    }
}

/// Move the App's clock past the notifications shown so far, so that the
/// footer shows its key hints.
fn expire_notices(app: &mut App) {
    app.tick(SystemClock.unix() + 60_000);
}

fn settings(config: &Config, net: &Network, boot: &[String]) -> ClientSettings {
    let boot: Vec<HostPort> = boot.iter().map(|b| b.parse().unwrap()).collect();
    let rt = tokio::runtime::Handle::current();
    let dir = net.data("you");
    tokio::task::block_in_place(|| {
        rt.block_on(ClientSettings::from_config(config, &dir, &boot, None))
    })
    .expect("the client config pins the authority key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_panel_from_real_events() {
    let _turn = scenario!();
    let net = Network::start();
    let (_supernodes, all) = net.two_supernodes(&["you", "echo"]);
    let mut echo = net.headless("echo", &all, &["--echo"]);
    echo.wait_json(T, |v| v["event"] == "published");

    let (config, _) = Config::load(Some(&net.client_config)).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut you = client::spawn(settings(&config, &net, &all), clock.clone());
    let mut app = App::new(KeyMap::default());
    pump(&mut you, &mut app, "login and attachment", |a| {
        a.model.logged_in() && a.model.supernodes.len() == 2
    })
    .await;
    // No sound card here: the runtime says which devices it uses.
    let audio = app.model.audio.clone().expect("the audio status");
    if !std::path::Path::new("/dev/snd").exists() {
        assert_eq!(
            (audio.input.as_str(), audio.output.as_str()),
            ("tone:440", "null")
        );
        assert!(
            audio
                .fallback
                .is_some_and(|n| n.to_string().contains("no sound card"))
        );
    }

    // Our call: the key presses are unit-tested (src/ui/tests.rs); echo is
    // no contact here, so the command goes to the runtime directly.
    let dialed = Instant::now();
    you.commands
        .send(Command::Call {
            username: "echo".into(),
        })
        .await
        .unwrap();
    pump(&mut you, &mut app, "our call active", |a| {
        a.model
            .current_call()
            .is_some_and(|c| c.state == CallState::Active)
    })
    .await;
    let setup = dialed.elapsed();
    pump(&mut you, &mut app, "the echo and its RTT", carrying_audio).await;
    eprintln!("call to echo active after {setup:?}");
    let call = app.model.current_call().unwrap().clone();
    assert!(call.outgoing && call.peer == "echo", "{call:?}");
    let first = app.model.stats[&call.id].clone();
    assert!(
        matches!(first.path, natter::node::api::MediaPath::Direct { .. }),
        "{first:?}"
    );
    // The tone is sent at a steady level; the meter shows it.
    assert!(first.mic_level > 0.05, "{first:?}");
    expire_notices(&mut app);
    assert_snapshot!("live_call_outgoing", draw(&app));
    // The counters move with the next report.
    pump(&mut you, &mut app, "the next report", |a| {
        a.model.stats[&call.id].packets_received > first.packets_received
    })
    .await;
    key(&mut app, KeyCode::Char('m'));
    pump(&mut you, &mut app, "muted, the meter silent", |a| {
        a.model.current_call().is_some_and(|c| c.muted)
    })
    .await;
    key(&mut app, KeyCode::Char('x'));
    pump(&mut you, &mut app, "our call ended", |a| ended(a).is_some()).await;
    assert_eq!(ended(&app).unwrap(), "you hung up");
    let e = tokio::task::block_in_place(|| {
        echo.wait_json(T, |v| v["event"] == "call_state" && v["state"] == "ended")
    });
    assert_eq!(e["reason"], "hung_up", "{e}");

    // echo calls us: the prompt, answered with `y`.
    echo.say("call you");
    pump(&mut you, &mut app, "the incoming call", |a| {
        a.model.incoming_call().is_some()
    })
    .await;
    expire_notices(&mut app);
    assert_snapshot!("live_call_incoming", draw(&app));
    key(&mut app, KeyCode::Char('y'));
    pump(
        &mut you,
        &mut app,
        "the echo's call carrying audio",
        carrying_audio,
    )
    .await;
    let call = app.model.current_call().unwrap().clone();
    assert!(!call.outgoing && call.peer == "echo", "{call:?}");
    key(&mut app, KeyCode::Char('x'));
    pump(&mut you, &mut app, "echo's call ended", |a| {
        ended(a).is_some()
    })
    .await;
    assert_eq!(ended(&app).unwrap(), "you hung up");

    you.commands.send(Command::Quit).await.unwrap();
    pump(&mut you, &mut app, "the runtime to stop", |a| {
        a.model.stopped
    })
    .await;
}
