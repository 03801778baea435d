//! The chat view drawn from real events: an authority and two supernodes
//! (processes), `you` as the in-process client runtime behind the TUI's
//! [`App`], and `bot` as a headless natter on the other end. bot asks
//! `you` to be a contact and `you` accepts with a key (the request is a
//! snapshot too), opens the chat with keys, sends a
//! message, which bot acknowledges and answers; the screen is drawn on
//! ratatui's `TestBackend` and compared with a snapshot. Then `you`'s
//! runtime stops and starts again: opening the chat loads the
//! conversation from the SQLite history, delivery marks included. Last,
//! bot quits: the next message is stored for it (its mark says so) and
//! delivered, then acknowledged, when bot starts again; a message to bot
//! once blocked is refused with one clear error.
//!
//! Only the clock times in the chat lines vary between runs; they are
//! masked before the comparison.

use crate::common::procs::Network;
use insta::assert_snapshot;
use natter::clock::{Clock, SystemClock};
use natter::config::{Config, HostPort};
use natter::node::api::{Command, ContactState, MessageState};
use natter::node::client::{self, ClientHandle, ClientSettings};
use natter::overlay::Status;
use natter::ui::{App, KeyMap};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::sync::Arc;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

/// The one-pane layout (narrower than the full one): title bar, the chat,
/// footer; nothing that carries ports or measured times.
fn draw(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(60, 14)).unwrap();
    t.draw(|f| app.render(f)).unwrap();
    mask_clock(&t.backend().to_string())
}

/// `12:34` -> `hh:mm`, wherever a clock time is drawn.
fn mask_clock(s: &str) -> String {
    let c: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < c.len() {
        let is_time = i + 5 <= c.len()
            && c[i].is_ascii_digit()
            && c[i + 1].is_ascii_digit()
            && c[i + 2] == ':'
            && c[i + 3].is_ascii_digit()
            && c[i + 4].is_ascii_digit()
            && (i == 0 || !c[i - 1].is_ascii_digit());
        if is_time {
            out.push_str("hh:mm");
            i += 5;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn key(app: &mut App, code: KeyCode) {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
}

fn typed(app: &mut App, s: &str) {
    for ch in s.chars() {
        key(app, KeyCode::Char(ch));
    }
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

fn settings(config: &Config, net: &Network, boot: &[String]) -> ClientSettings {
    let boot: Vec<HostPort> = boot.iter().map(|b| b.parse().unwrap()).collect();
    let rt = tokio::runtime::Handle::current();
    let dir = net.data("you");
    tokio::task::block_in_place(|| {
        rt.block_on(ClientSettings::from_config(config, &dir, &boot, None))
    })
    .expect("the client config pins the authority key")
}

/// Move the App's clock past the notifications shown so far, so that the
/// footer shows its key hints.
fn expire_notices(app: &mut App) {
    let now = SystemClock.unix().max(app.model.now);
    app.tick(now + 60_000);
}

fn chat_with_bot(app: &App) -> &[natter::node::api::ChatMessage] {
    app.model
        .chats
        .get("bot")
        .map(|v| v.as_slice())
        .unwrap_or(&[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_view_from_real_events() {
    let _turn = scenario!();
    let net = Network::start();
    for (n, sn) in [("sn1", true), ("sn2", true), ("you", false), ("bot", false)] {
        net.account(n, sn);
    }
    let (_sn1, a1) = net.supernode("sn1", &[]);
    let (_sn2, a2) = net.supernode("sn2", std::slice::from_ref(&a1));
    let all = vec![a1, a2];
    let mut bot = net.headless("bot", &all, &[]);
    bot.wait_json(T, |v| v["event"] == "published");

    let (config, _) = Config::load(Some(&net.client_config)).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut you = client::spawn(settings(&config, &net, &all), clock.clone());
    let mut app = App::new(KeyMap::default());
    app.tick(clock.unix());

    // Logged in from the stored certificate; the request to bot goes out
    // once online and bot accepts it.
    // Logged in from the stored certificate. bot asks to be a contact;
    // the request shows in the buddy list and `a` accepts it.
    pump(&mut you, &mut app, "login and attachment", |a| {
        a.model.logged_in() && a.model.supernodes.len() == 2
    })
    .await;
    bot.say("add you hello from bot");
    pump(&mut you, &mut app, "bot's request", |a| {
        a.model
            .contacts
            .get("bot")
            .is_some_and(|c| c.state == ContactState::Pending)
    })
    .await;
    expire_notices(&mut app);
    assert_snapshot!("contact_request", draw(&app));
    key(&mut app, KeyCode::Char('a'));
    assert_eq!(
        app.take_commands(),
        vec![Command::AcceptContact {
            username: "bot".into()
        }]
    );
    you.commands
        .send(Command::AcceptContact {
            username: "bot".into(),
        })
        .await
        .unwrap();
    let r = tokio::task::block_in_place(|| bot.wait_json(T, |v| v["event"] == "contact_added"));
    assert_eq!(r["user"], "you", "{r}");
    pump(&mut you, &mut app, "bot online, two supernodes", |a| {
        a.model.supernodes.len() == 2
            && a.model
                .contacts
                .get("bot")
                .is_some_and(|c| c.status() == Status::Online)
    })
    .await;

    // Open the chat (bot is the only contact) and send.
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_commands(),
        vec![
            Command::LoadHistory {
                with: "bot".into(),
                before: None,
                limit: 200
            },
            Command::MarkRead { with: "bot".into() }
        ]
    );
    typed(&mut app, "hello bot, are you there?");
    let sent = Instant::now();
    key(&mut app, KeyCode::Enter);
    pump(&mut you, &mut app, "our message acknowledged", |a| {
        chat_with_bot(a)
            .iter()
            .any(|m| m.outgoing && m.state == MessageState::Delivered)
    })
    .await;
    let acked = sent.elapsed();
    let m = tokio::task::block_in_place(|| bot.wait_json(T, |v| v["event"] == "message"));
    assert_eq!(m["from"], "you", "{m}");
    assert_eq!(m["text"], "hello bot, are you there?");
    bot.say("msg you yes, loud and clear");
    pump(&mut you, &mut app, "bot's answer", |a| {
        chat_with_bot(a).iter().any(|m| !m.outgoing)
    })
    .await;
    let answered = sent.elapsed();
    eprintln!("acknowledged after {acked:?}, answered (headless bot) after {answered:?}");
    // Notifications of the exchange expire from the footer.
    expire_notices(&mut app);
    assert_snapshot!("live_chat", draw(&app));
    let live = chat_with_bot(&app).to_vec();
    assert_eq!(live.len(), 2, "{live:?}");

    // Restart: the conversation comes back from SQLite.
    you.commands.send(Command::Quit).await.unwrap();
    pump(&mut you, &mut app, "the runtime to stop", |a| {
        a.model.stopped
    })
    .await;
    let mut you = client::spawn(settings(&config, &net, &all), clock.clone());
    let mut app = App::new(KeyMap::default());
    app.tick(clock.unix());
    pump(&mut you, &mut app, "bot listed again", |a| {
        a.model.logged_in() && a.model.contacts.contains_key("bot")
    })
    .await;
    assert!(chat_with_bot(&app).is_empty());
    key(&mut app, KeyCode::Enter);
    pump(&mut you, &mut app, "the history", |a| {
        chat_with_bot(a).len() == 2
    })
    .await;
    // What was on screen, from the store (a sent message's time there is
    // the chat core's, a few ms off the runtime's report).
    let view = |v: &[natter::node::api::ChatMessage]| -> Vec<_> {
        v.iter()
            .map(|m| (m.id, m.outgoing, m.text.clone(), m.state.clone()))
            .collect()
    };
    assert_eq!(view(chat_with_bot(&app)), view(&live));
    pump(&mut you, &mut app, "bot online, two supernodes", |a| {
        a.model.supernodes.len() == 2
            && a.model
                .contacts
                .get("bot")
                .is_some_and(|c| c.status() == Status::Online)
    })
    .await;
    expire_notices(&mut app);
    assert_snapshot!("history_after_restart", draw(&app));

    // bot leaves: a message to it waits, sealed, on its directory owners
    // (drawn as stored) and is delivered when it comes back.
    bot.say("quit");
    bot.stdin.take();
    pump(&mut you, &mut app, "bot offline", |a| {
        a.model
            .contacts
            .get("bot")
            .is_some_and(|c| c.status() == Status::Offline)
    })
    .await;
    typed(&mut app, "see you later");
    key(&mut app, KeyCode::Enter);
    let later = |a: &App, state: MessageState| {
        chat_with_bot(a)
            .iter()
            .any(|m| m.text == "see you later" && m.state == state)
    };
    pump(&mut you, &mut app, "the message stored", |a| {
        later(a, MessageState::Stored)
    })
    .await;
    expire_notices(&mut app);
    assert_snapshot!("stored_for_offline_contact", draw(&app));
    // The old bot detached before it exited: a new one takes its data dir
    // (one natter per data dir) only once it is gone.
    tokio::task::block_in_place(|| {
        let gone = std::time::Instant::now() + T;
        while bot.child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < gone,
                "bot did not exit after quit"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    let bot = net.headless("bot", &all, &[]);
    pump(&mut you, &mut app, "the stored message acknowledged", |a| {
        later(a, MessageState::Delivered)
    })
    .await;
    let m = tokio::task::block_in_place(|| bot.wait_json(T, |v| v["event"] == "message"));
    assert_eq!(m["text"], "see you later", "{m}");
    expire_notices(&mut app);
    let s = draw(&app);
    assert!(s.contains("see you later ✓"), "{s}");

    // A message the node refuses (bot is blocked) is reported once, under
    // the command's name.
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('b'));
    // Blocking asks first.
    key(&mut app, KeyCode::Char('y'));
    pump(&mut you, &mut app, "bot blocked", |a| {
        a.model
            .contacts
            .get("bot")
            .is_some_and(|c| c.state == ContactState::Blocked)
    })
    .await;
    you.commands
        .send(Command::SendMessage {
            to: "bot".into(),
            text: "blocked".into(),
        })
        .await
        .unwrap();
    pump(&mut you, &mut app, "the refusal", |a| {
        a.model
            .notices
            .iter()
            .any(|n| n.text.starts_with("send message: "))
    })
    .await;
    you.commands.send(Command::Quit).await.unwrap();
    pump(&mut you, &mut app, "the runtime to stop", |a| {
        a.model.stopped
    })
    .await;
    let errors: Vec<_> = app
        .model
        .notices
        .iter()
        .filter(|n| n.level == natter::ui::model::Level::Error)
        .map(|n| n.text.clone())
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
}
