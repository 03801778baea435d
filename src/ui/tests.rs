//! Every screen and state of the UI, drawn on ratatui's `TestBackend` from
//! events fed into the App (no network), and compared with the snapshots
//! in `src/ui/snapshots/`; and the commands keys turn into.

use super::{App, KeyMap};
use crate::group::Refusal;
use crate::node::api::{
    AttachedSupernode, AudioFallback, AudioStatus, CallInfo, CallState, CallStats, ChatMessage,
    Command, ContactState, ErrorReason, Event, LoginState, LookupResult, MediaPath, MessageState,
    NatStatus, Presence,
};
use crate::overlay::Status;
use crate::time::UnixMillis;
use insta::assert_snapshot;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// 2023-11-14 22:13:20 UTC.
const NOW: UnixMillis = UnixMillis(1_700_000_000_000);

fn draw(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| app.render(f)).unwrap();
    t.backend().to_string()
}

fn key(app: &mut App, code: KeyCode) {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
}

fn typed(app: &mut App, s: &str) {
    for c in s.chars() {
        key(app, KeyCode::Char(c));
    }
}

fn sn(port: u16, primary: bool) -> AttachedSupernode {
    AttachedSupernode {
        addr: ([127, 0, 0, 1], port).into(),
        primary,
        observed: ([127, 0, 0, 1], 40000).into(),
    }
}

fn presence(user: &str, status: Status, message: &str) -> Event {
    Event::Presence(Presence {
        username: user.into(),
        status,
        message: message.into(),
        last_seen: None,
    })
}

fn first_run() -> App {
    let mut app = App::new(KeyMap::default());
    app.tick(NOW);
    app.handle_event(Event::Audio(AudioStatus {
        input: "tone".into(),
        output: "null".into(),
        fallback: Some(AudioFallback::NoSoundCard),
    }));
    app.handle_event(Event::Nat(NatStatus {
        note: Some("NAT type detection not available yet".into()),
        ..Default::default()
    }));
    app.handle_event(Event::Login(LoginState::NeedCredentials {
        username: None,
        error: None,
    }));
    app
}

/// Logged in as "you" with three contacts, two supernodes, NAT unknown.
fn logged_in() -> App {
    let mut app = first_run();
    app.handle_event(Event::Login(LoginState::LoggedIn {
        username: "you".into(),
        until: NOW.secs().get() + 86_400,
        role: crate::node::api::Role::User,
    }));
    app.handle_event(Event::Supernodes {
        attached: vec![sn(7710, true), sn(7711, false)],
    });
    app.handle_event(Event::Nat(NatStatus {
        public_addr: Some(([127, 0, 0, 1], 40000).into()),
        note: Some("NAT type detection not available yet".into()),
        ..Default::default()
    }));
    for c in ["bot", "echo123", "carol"] {
        app.handle_event(Event::Contact {
            username: c.into(),
            state: ContactState::Authorized,
        });
    }
    app.handle_event(presence("echo123", Status::Online, "echo test: call me"));
    app.handle_event(presence("bot", Status::Away, "I answer chat"));
    app.handle_event(presence("carol", Status::Offline, ""));
    // Notifications from logging in have expired.
    app.tick(NOW + 60_000);
    app.take_commands();
    app
}

fn msg(
    id: u128,
    peer: &str,
    outgoing: bool,
    text: &str,
    at: UnixMillis,
    state: MessageState,
) -> Event {
    Event::Message(ChatMessage {
        id,
        peer: peer.into(),
        outgoing,
        text: text.into(),
        sent_at: at,
        state,
    })
}

fn call(id: u64, state: CallState, answered_at: Option<UnixMillis>) -> Event {
    Event::Call(CallInfo {
        id,
        peer: "echo123".into(),
        outgoing: true,
        state,
        muted: false,
        held: false,
        remote_held: false,
        answered_at,
    })
}

#[test]
fn login_screen() {
    let mut app = first_run();
    assert_snapshot!("login_first_run", draw(&app, 80, 24));
    typed(&mut app, "alice");
    key(&mut app, KeyCode::Tab);
    typed(&mut app, "secret-pw");
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Right);
    assert_snapshot!("login_register_filled", draw(&app, 80, 24));
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_commands(),
        vec![Command::Register {
            username: "alice".into(),
            password: "secret-pw".into()
        }]
    );
    app.handle_event(Event::Login(LoginState::LoggingIn {
        username: "alice".into(),
    }));
    assert_snapshot!("login_in_progress", draw(&app, 80, 24));
    app.handle_event(Event::Login(LoginState::NeedCredentials {
        username: Some("alice".into()),
        error: Some("invalid username or password".into()),
    }));
    assert_snapshot!("login_failed", draw(&app, 80, 24));
}

#[test]
fn buddy_list_with_presence() {
    let mut app = logged_in();
    assert_snapshot!("buddy_list", draw(&app, 100, 30));
    // Presence changes move the marks; a request shows as pending.
    app.handle_event(presence("carol", Status::DoNotDisturb, "in a meeting"));
    app.handle_event(Event::ContactRequest {
        from: "dave".into(),
        greeting: "hi, it's dave".into(),
    });
    assert!(app.take_bell(), "a contact request rings the bell");
    assert_snapshot!("buddy_list_request", draw(&app, 100, 30));
    // Select dave (the last: requests come under the contacts) and accept.
    key(&mut app, KeyCode::End);
    key(&mut app, KeyCode::Char('a'));
    assert_eq!(
        app.take_commands(),
        vec![Command::AcceptContact {
            username: "dave".into()
        }]
    );
    key(&mut app, KeyCode::Char('s'));
    assert_eq!(
        app.take_commands(),
        vec![Command::SetStatus {
            status: Status::Away,
            message: String::new()
        }]
    );
    app.handle_event(Event::OwnStatus {
        status: Status::Away,
        message: "back soon".into(),
        auto: false,
    });
    assert!(draw(&app, 100, 30).contains("you ◐ away · back soon"));
}

#[test]
fn user_search() {
    let mut app = logged_in();
    key(&mut app, KeyCode::Char('/'));
    typed(&mut app, "Dave");
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_commands(),
        vec![Command::SearchUser {
            username: "dave".into()
        }]
    );
    assert_snapshot!("search_pending", draw(&app, 100, 30));
    app.handle_event(Event::Lookup {
        username: "dave".into(),
        result: LookupResult::Online {
            status: Status::Online,
            message: "hello".into(),
        },
        record: None,
    });
    // The input is case-folded on search; type it lower case to match.
    for _ in 0..4 {
        key(&mut app, KeyCode::Backspace);
    }
    typed(&mut app, "dave");
    assert_snapshot!("search_found", draw(&app, 100, 30));
    // Enter again asks for a greeting (a suggested one, editable), sent
    // with the request.
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.take_commands(), vec![]);
    app.handle_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    typed(&mut app, "hi dave, it's you from the conference");
    assert_snapshot!("search_greeting", draw(&app, 100, 30));
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_commands(),
        vec![Command::AddContact {
            username: "dave".into(),
            greeting: "hi dave, it's you from the conference".into()
        }]
    );
    // A name that cannot be a username is refused on the spot: nothing
    // is looked up, and the line says why until the name is edited.
    key(&mut app, KeyCode::Char('/'));
    typed(&mut app, "bad name!");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.take_commands(), vec![]);
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("not a username"), "{screen}");
    assert!(!screen.contains("looking up"), "{screen}");
    key(&mut app, KeyCode::Backspace);
    assert!(!draw(&app, 100, 30).contains("not a username"));
    key(&mut app, KeyCode::Esc);
    // An answer for an old name goes once the name is edited.
    key(&mut app, KeyCode::Char('/'));
    typed(&mut app, "zed");
    key(&mut app, KeyCode::Enter);
    app.take_commands();
    assert!(draw(&app, 100, 30).contains("looking up zed"));
    typed(&mut app, "a");
    assert!(!draw(&app, 100, 30).contains("looking up zed"));
    key(&mut app, KeyCode::Esc);
    // Not found.
    key(&mut app, KeyCode::Char('/'));
    typed(&mut app, "nobody");
    key(&mut app, KeyCode::Enter);
    app.handle_event(Event::Lookup {
        username: "nobody".into(),
        result: LookupResult::NotFound,
        record: None,
    });
    assert_snapshot!("search_not_found", draw(&app, 100, 30));
    key(&mut app, KeyCode::Esc);
    assert!(!draw(&app, 100, 30).contains("Find a user"));
    // A user whose status is for contacts only: found, and can be added.
    key(&mut app, KeyCode::Char('/'));
    typed(&mut app, "erin");
    key(&mut app, KeyCode::Enter);
    app.handle_event(Event::Lookup {
        username: "erin".into(),
        result: LookupResult::Private,
        record: None,
    });
    assert_snapshot!("search_private", draw(&app, 100, 30));
    app.take_commands();
    key(&mut app, KeyCode::Enter);
    // The greeting may be left empty.
    app.handle_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_commands(),
        vec![Command::AddContact {
            username: "erin".into(),
            greeting: String::new()
        }]
    );
}

#[test]
fn chat_pane_with_history() {
    let mut app = logged_in();
    // echo123 is second in the list.
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_commands(),
        vec![
            Command::LoadHistory {
                with: "echo123".into(),
                before: None,
                limit: 200
            },
            Command::MarkRead {
                with: "echo123".into()
            }
        ]
    );
    app.handle_event(Event::History {
        with: "echo123".into(),
        messages: vec![
            ChatMessage {
                id: 1,
                peer: "echo123".into(),
                outgoing: true,
                text: "hello from yesterday".into(),
                sent_at: NOW - 86_400_000,
                state: MessageState::Delivered,
            },
            ChatMessage {
                id: 2,
                peer: "echo123".into(),
                outgoing: false,
                text: "hello from yesterday".into(),
                sent_at: NOW - 86_399_000,
                state: MessageState::Received,
            },
        ],
        unread: 0,
    });
    typed(&mut app, "is anyone there? q");
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_commands(),
        vec![Command::SendMessage {
            to: "echo123".into(),
            text: "is anyone there? q".into()
        }],
        "plain keys such as q are text in the chat input"
    );
    app.handle_event(msg(
        3,
        "echo123",
        true,
        "is anyone there? q",
        NOW,
        MessageState::Sending,
    ));
    app.handle_event(msg(
        4,
        "echo123",
        false,
        "a long answer that does not fit on one line of the chat pane and has to wrap onto the next",
        NOW + 1000,
        MessageState::Received,
    ));
    assert!(app.take_bell(), "an incoming message rings the bell");
    app.handle_event(Event::MessageState {
        peer: "echo123".into(),
        id: 3,
        state: MessageState::Delivered,
    });
    assert_snapshot!("chat", draw(&app, 100, 30));
    // What came in while the chat was open is read, as the store has it.
    let states: Vec<_> = app.model.chats["echo123"]
        .iter()
        .filter(|m| !m.outgoing)
        .map(|m| (m.id, m.state.clone()))
        .collect();
    assert_eq!(
        states,
        vec![(2, MessageState::Read), (4, MessageState::Read)]
    );
    // A message from someone else while this chat is open counts as unread.
    app.handle_event(msg(
        5,
        "bot",
        false,
        "psst",
        NOW + 2000,
        MessageState::Received,
    ));
    key(&mut app, KeyCode::Esc);
    assert_snapshot!("chat_unread_elsewhere", draw(&app, 100, 30));
}

#[test]
fn incoming_call_prompt() {
    let mut app = logged_in();
    app.handle_event(Event::Call(CallInfo {
        id: 7,
        peer: "bot".into(),
        outgoing: false,
        state: CallState::Incoming,
        muted: false,
        held: false,
        remote_held: false,
        answered_at: None,
    }));
    assert!(app.take_bell(), "an incoming call rings the bell");
    assert_snapshot!("incoming_call", draw(&app, 100, 30));
    // The prompt is modal: other keys do nothing.
    key(&mut app, KeyCode::Char('c'));
    assert!(app.take_commands().is_empty());
    key(&mut app, KeyCode::Char('y'));
    assert_eq!(app.take_commands(), vec![Command::AcceptCall { call: 7 }]);
    key(&mut app, KeyCode::Char('n'));
    assert_eq!(app.take_commands(), vec![Command::DeclineCall { call: 7 }]);
}

#[test]
fn in_call_with_stats() {
    let mut app = logged_in();
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Char('c'));
    assert_eq!(
        app.take_commands(),
        vec![Command::Call {
            username: "echo123".into()
        }]
    );
    app.handle_event(call(9, CallState::Ringing, None));
    assert_snapshot!("call_ringing", draw(&app, 100, 30));
    app.handle_event(call(9, CallState::Active, Some(NOW)));
    app.handle_event(Event::CallStats {
        call: 9,
        stats: CallStats {
            rtt_ms: Some(42),
            loss_pct: 1.5,
            jitter_ms: 3.25,
            mic_level: 0.5,
            path: MediaPath::Relayed {
                supernode: ([127, 0, 0, 1], 7711).into(),
            },
            codec: "opus 48 kHz".into(),
            packets_sent: 4150,
            packets_received: 4101,
            media: Box::new(crate::media::MediaStats {
                quality: crate::media::quality::Line {
                    rtt_ms: Some(42.0),
                    loss_percent: 1.5,
                    jitter_ms: 3.25,
                    buffer_ms: 40.0,
                    frame_ms: 20.0,
                }
                .quality(),
                processing: crate::media::processing::ProcessingStats {
                    stages: crate::media::processing::Stages {
                        echo_cancellation: true,
                        noise_suppression: true,
                        auto_gain: false,
                    },
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        },
    });
    app.tick(NOW + 83_000);
    assert_snapshot!("call_active", draw(&app, 100, 30));
    // At 80x24 the panel keeps RTT, loss, jitter and the path.
    let small = draw(&app, 80, 24);
    assert_snapshot!("call_active_80x24", small);
    for want in [
        "rtt 42 ms",
        "loss 1.5 %",
        "jitter 3.2 ms",
        "path relayed through",
    ] {
        assert!(small.contains(want), "{want}:\n{small}");
    }
    key(&mut app, KeyCode::Char('m'));
    key(&mut app, KeyCode::Char('o'));
    assert_eq!(
        app.take_commands(),
        vec![
            Command::Mute {
                call: 9,
                muted: true
            },
            Command::Hold {
                call: 9,
                held: true
            }
        ]
    );
    app.handle_event(Event::Call(CallInfo {
        id: 9,
        peer: "echo123".into(),
        outgoing: true,
        state: CallState::Active,
        muted: true,
        held: true,
        remote_held: false,
        answered_at: Some(NOW),
    }));
    app.handle_event(Event::CallStats {
        call: 9,
        stats: CallStats {
            rtt_ms: Some(8),
            loss_pct: 0.0,
            jitter_ms: 0.5,
            mic_level: 0.9,
            path: MediaPath::Direct {
                remote: ([127, 0, 0, 1], 40001).into(),
            },
            codec: "opus 48 kHz".into(),
            packets_sent: 4150,
            packets_received: 4101,
            ..Default::default()
        },
    });
    app.tick(NOW + 3_725_000);
    assert_snapshot!("call_muted_held_direct", draw(&app, 100, 30));
    key(&mut app, KeyCode::Char('x'));
    assert_eq!(app.take_commands(), vec![Command::HangUp { call: 9 }]);
    app.handle_event(call(
        9,
        CallState::Ended {
            reason: crate::node::api::EndReason::HungUp { by_us: true },
            detail: None,
        },
        Some(NOW),
    ));
    assert_snapshot!("call_ended", draw(&app, 100, 30));
}

#[test]
fn nat_panel_measured() {
    let mut app = logged_in();
    app.handle_event(Event::Nat(NatStatus {
        mapping: Some("endpoint-independent (EIM)".into()),
        filtering: Some("address and port-dependent (APDF)".into()),
        public_addr: Some(([198, 51, 100, 11], 40000).into()),
        udp_blocked: false,
        unreachable: false,
        note: None,
    }));
    app.handle_event(Event::Supernodes {
        attached: vec![sn(7711, true)],
    });
    assert_snapshot!("nat_panel", draw(&app, 100, 30));
    app.handle_event(Event::Supernodes { attached: vec![] });
    app.handle_event(Event::Nat(NatStatus {
        udp_blocked: true,
        note: Some("calls are relayed over TCP".into()),
        ..Default::default()
    }));
    assert_snapshot!("nat_panel_blocked", draw(&app, 100, 30));
    // The only supernode is down: not "UDP blocked" (issue 13.12).
    app.handle_event(Event::Nat(NatStatus {
        unreachable: true,
        note: Some("no supernode answered: they may be down".into()),
        ..Default::default()
    }));
    let screen = draw(&app, 100, 30);
    assert!(!screen.contains("blocked"), "{screen}");
    assert_snapshot!("nat_panel_unreachable", screen);
}

#[test]
fn help_overlay() {
    let mut app = logged_in();
    key(&mut app, KeyCode::Char('?'));
    assert_snapshot!("help", draw(&app, 100, 30));
    // Taller than the screen: the arrows scroll it down to its last line.
    assert!(!draw(&app, 100, 30).contains("[keys] section"));
    for _ in 0..10 {
        key(&mut app, KeyCode::Down);
    }
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("[keys] section"), "{screen}");
    assert!(screen.contains("leave the selected group"), "{screen}");
    key(&mut app, KeyCode::Esc);
    assert!(!draw(&app, 100, 30).contains("Help: keys"));
    // Rebound keys show in the help.
    let cfg = crate::config::Config::parse(
        "[keys]\nhelp = \"f2\"\nhang_up = [\"ctrl+e\", \"x\"]\n",
        "t.toml".as_ref(),
    )
    .unwrap();
    let mut app2 = App::new(KeyMap::from_config(&cfg.keys));
    app2.handle_event(Event::Login(LoginState::LoggedIn {
        username: "you".into(),
        until: 0,
        role: crate::node::api::Role::User,
    }));
    app2.handle_event(Event::Supernodes { attached: vec![] });
    app2.handle_key(KeyEvent::new(KeyCode::F(2), KeyModifiers::NONE));
    let screen = draw(&app2, 100, 30);
    assert!(screen.contains("ctrl+e, x"), "{screen}");
}

#[test]
fn notifications() {
    let mut app = logged_in();
    key(&mut app, KeyCode::Char('c'));
    app.handle_event(Event::Error {
        command: "call".into(),
        reason: ErrorReason::Failed,
        message: "calls not available yet".into(),
    });
    assert_snapshot!("notice_error", draw(&app, 100, 30));
    app.handle_event(Event::Notice {
        text: "dave added".into(),
    });
    assert!(draw(&app, 100, 30).contains("dave added"));
    // Notices leave the footer after a while; key hints come back.
    app.tick(NOW + 120_000);
    assert!(draw(&app, 100, 30).contains("c call"));
}

#[test]
fn small_terminal_after_resize() {
    let mut app = logged_in();
    let mut t = Terminal::new(TestBackend::new(100, 30)).unwrap();
    t.draw(|f| app.render(f)).unwrap();
    t.backend_mut().resize(44, 14);
    t.draw(|f| app.render(f)).unwrap();
    assert_snapshot!("small_contacts", t.backend().to_string());
    key(&mut app, KeyCode::Enter);
    app.handle_event(msg(1, "bot", false, "hi", NOW, MessageState::Received));
    t.draw(|f| app.render(f)).unwrap();
    assert_snapshot!("small_chat", t.backend().to_string());
    key(&mut app, KeyCode::Esc);
    app.handle_event(call(3, CallState::Active, Some(NOW)));
    app.handle_event(Event::CallStats {
        call: 3,
        stats: CallStats {
            rtt_ms: Some(42),
            loss_pct: 0.0,
            jitter_ms: 1.5,
            mic_level: 0.25,
            path: MediaPath::Direct {
                remote: ([127, 0, 0, 1], 40001).into(),
            },
            codec: "opus 48 kHz".into(),
            packets_sent: 3250,
            packets_received: 3249,
            ..Default::default()
        },
    });
    app.tick(NOW + 65_000);
    t.draw(|f| app.render(f)).unwrap();
    assert_snapshot!("small_call", t.backend().to_string());
    // Shorter: the panel takes the body and drops the path and the
    // statistics before the keys and the audio devices.
    t.backend_mut().resize(44, 9);
    t.draw(|f| app.render(f)).unwrap();
    let screen = t.backend().to_string();
    assert_snapshot!("small_call_short", screen);
    for kept in ["in call with echo123", "x hang up", "audio in"] {
        assert!(screen.contains(kept), "{kept} in\n{screen}");
    }
    assert!(!screen.contains("path "), "{screen}");
    t.backend_mut().resize(20, 4);
    t.draw(|f| app.render(f)).unwrap();
    assert_snapshot!("tiny", t.backend().to_string());
    // And back to full size.
    t.backend_mut().resize(100, 30);
    t.draw(|f| app.render(f)).unwrap();
    assert!(t.backend().to_string().contains("Network"));
}

#[test]
fn quit_sends_quit_once() {
    let mut app = logged_in();
    key(&mut app, KeyCode::Char('q'));
    app.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert!(app.quitting());
    assert_eq!(app.take_commands(), vec![Command::Quit]);
    // ctrl+c quits from the login form too.
    let mut app = first_run();
    typed(&mut app, "q");
    assert!(!app.quitting(), "q is text in the login form");
    app.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert_eq!(app.take_commands(), vec![Command::Quit]);
}

/// Open the chat with echo123 (the third contact), history asked.
fn chat_with_echo() -> App {
    let mut app = logged_in();
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    app.take_commands();
    app
}

fn sent_texts(app: &mut App) -> Vec<String> {
    app.take_commands()
        .into_iter()
        .map(|c| match c {
            Command::SendMessage { to, text } => {
                assert_eq!(to, "echo123");
                text
            }
            other => panic!("not a message: {other:?}"),
        })
        .collect()
}

/// Issue 13, bug 1: a 10,000-character paste, then keys typed into the
/// box with a frame drawn after each, cost time in proportion to the text
/// (the old field laid the whole text out again per column: minutes).
#[test]
fn long_paste_is_linear_and_sent_in_parts() {
    let mut app = chat_with_echo();
    let words: String = (0..2000).map(|i| format!("w{:03} ", i % 1000)).collect();
    assert_eq!(words.len(), 10_000);
    let started = std::time::Instant::now();
    app.handle_paste(&words);
    let mut t = Terminal::new(TestBackend::new(100, 30)).unwrap();
    t.draw(|f| app.render(f)).unwrap();
    let pasted = started.elapsed();
    let started = std::time::Instant::now();
    for _ in 0..100 {
        key(&mut app, KeyCode::Char('x'));
        t.draw(|f| app.render(f)).unwrap();
    }
    let per_key = started.elapsed() / 100;
    eprintln!("paste of 10,000 chars drawn in {pasted:?}; a key with a frame: {per_key:?}");
    // Generous bounds (a loaded debug build): the old field took seconds
    // per key at this length.
    assert!(pasted < std::time::Duration::from_secs(1), "{pasted:?}");
    assert!(
        per_key < std::time::Duration::from_millis(50),
        "{per_key:?}"
    );
    let screen = t.backend().to_string();
    assert!(
        screen.contains("10100 bytes: over the 4000-byte limit, sent as 3+ messages"),
        "{screen}"
    );
    key(&mut app, KeyCode::Enter);
    let parts = sent_texts(&mut app);
    assert_eq!(parts.len(), 3, "{parts:?}");
    assert!(parts.iter().all(|p| p.len() <= 4000));
    // Cut at spaces: nothing lost but the spaces cut at.
    assert_eq!(parts.join(" "), format!("{}{}", words, "x".repeat(100)));
    let screen = draw(&app, 100, 30);
    assert!(
        screen.contains("long message sent as 3 messages (at most 4000 bytes each)"),
        "{screen}"
    );
}

/// Alt+Enter and Shift+Enter start a new line; a multi-line paste is one
/// message; leading spaces stay.
#[test]
fn multi_line_messages() {
    let mut app = chat_with_echo();
    typed(&mut app, "  first");
    app.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT));
    typed(&mut app, "second");
    app.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::SHIFT));
    app.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::SHIFT));
    typed(&mut app, "fourth");
    assert_snapshot!("chat_multi_line_draft", draw(&app, 100, 30));
    key(&mut app, KeyCode::Enter);
    assert_eq!(sent_texts(&mut app), vec!["  first\nsecond\n\nfourth"]);
    // A terminal's paste has carriage returns for line breaks.
    app.handle_paste("one\r\ntwo\rthree\n");
    key(&mut app, KeyCode::Enter);
    assert_eq!(sent_texts(&mut app), vec!["one\ntwo\nthree"]);
    app.handle_event(msg(
        7,
        "echo123",
        false,
        "  indented\n\nafter a blank line",
        NOW + 60_000,
        MessageState::Received,
    ));
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("echo123:   indented"), "{screen}");
    assert!(screen.contains("│after a blank line"), "{screen}");
}

/// Issue 13, bug 3: a message from someone not in the list shows under
/// "requests and strangers", where it is read, answered, and the writer
/// added or blocked; the hint line names the keys for that row.
#[test]
fn stranger_message_read_answered_added_blocked() {
    let mut app = logged_in();
    app.handle_event(msg(
        9,
        "erin",
        false,
        "hi, we met at the conference",
        NOW + 50_000,
        MessageState::Received,
    ));
    app.tick(NOW + 60_000);
    let screen = draw(&app, 100, 30);
    assert!(
        screen.contains("message from erin (not a contact"),
        "{screen}"
    );
    app.tick(NOW + 120_000);
    key(&mut app, KeyCode::End);
    assert_snapshot!("buddy_list_stranger", draw(&app, 100, 30));
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_commands(),
        vec![
            Command::LoadHistory {
                with: "erin".into(),
                before: None,
                limit: 200
            },
            Command::MarkRead {
                with: "erin".into()
            }
        ]
    );
    let screen = draw(&app, 100, 30);
    assert!(
        screen.contains("Chat with erin (not a contact)"),
        "{screen}"
    );
    assert!(
        screen.contains("erin: hi, we met at the conference"),
        "{screen}"
    );
    assert!(!screen.contains("wrote to you (1)"), "read: {screen}");
    typed(&mut app, "hello erin");
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_commands(),
        vec![Command::SendMessage {
            to: "erin".into(),
            text: "hello erin".into()
        }]
    );
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('a'));
    assert_eq!(
        app.take_commands(),
        vec![Command::AddContact {
            username: "erin".into(),
            greeting: String::new()
        }]
    );
    key(&mut app, KeyCode::Char('b'));
    assert_eq!(app.take_commands(), vec![], "block asks first");
    assert_snapshot!("confirm_block", draw(&app, 100, 30));
    key(&mut app, KeyCode::Char('y'));
    assert_eq!(
        app.take_commands(),
        vec![Command::BlockContact {
            username: "erin".into()
        }]
    );
    app.handle_event(Event::Contact {
        username: "erin".into(),
        state: ContactState::Blocked,
    });
    let screen = draw(&app, 100, 30);
    assert!(!screen.contains("Requests and strangers"), "{screen}");
    assert!(screen.contains("erin (blocked)"), "{screen}");
}

/// Issue 13, bug 7: block and remove ask first; a blocked contact is
/// unblocked with the block key; searching a blocked user offers to
/// unblock and add them.
#[test]
fn block_and_remove_ask_and_unblock() {
    let mut app = logged_in();
    // bot is first: remove, refused, then confirmed.
    key(&mut app, KeyCode::Char('d'));
    assert!(draw(&app, 100, 30).contains("Remove bot from your contacts?"));
    key(&mut app, KeyCode::Char('n'));
    assert_eq!(app.take_commands(), vec![]);
    assert!(!draw(&app, 100, 30).contains("Remove bot"));
    key(&mut app, KeyCode::Char('d'));
    key(&mut app, KeyCode::Char('y'));
    assert_eq!(
        app.take_commands(),
        vec![Command::RemoveContact {
            username: "bot".into()
        }]
    );
    // carol (second): blocked after the question, then unblocked.
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Char('b'));
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_commands(),
        vec![Command::BlockContact {
            username: "carol".into()
        }]
    );
    app.handle_event(Event::Contact {
        username: "carol".into(),
        state: ContactState::Blocked,
    });
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("b unblock · d remove"), "{screen}");
    key(&mut app, KeyCode::Char('b'));
    assert_eq!(
        app.take_commands(),
        vec![Command::UnblockContact {
            username: "carol".into()
        }]
    );
    // Found by search while blocked: Enter again offers unblock and add.
    key(&mut app, KeyCode::Char('/'));
    typed(&mut app, "carol");
    key(&mut app, KeyCode::Enter);
    app.take_commands();
    app.handle_event(Event::Lookup {
        username: "carol".into(),
        result: LookupResult::Offline {
            last_seen: Some(NOW.secs().get()),
        },
        record: None,
    });
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("Enter again offers to unblock"), "{screen}");
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.confirming(),
        Some("carol is blocked. Unblock and add them?")
    );
    key(&mut app, KeyCode::Char('y'));
    assert_eq!(
        app.take_commands(),
        vec![
            Command::UnblockContact {
                username: "carol".into()
            },
            Command::AddContact {
                username: "carol".into(),
                greeting: String::new()
            }
        ]
    );
}

/// Chat scrollback: PageUp/PageDown, Home/End (while the box is empty);
/// messages not from today carry their date.
#[test]
fn chat_scrollback_and_dates() {
    let mut app = chat_with_echo();
    let day = 86_400_000;
    let messages = (0..60u64)
        .map(|i| ChatMessage {
            id: i as u128 + 100,
            peer: "echo123".into(),
            outgoing: i % 2 == 0,
            text: format!("line {i:02}"),
            // Two days ago, then today for the last ten.
            sent_at: if i < 50 {
                NOW - 2 * day + i * 60_000
            } else {
                NOW + i * 1000
            },
            state: if i % 2 == 0 {
                MessageState::Delivered
            } else {
                MessageState::Received
            },
        })
        .collect();
    app.handle_event(Event::History {
        with: "echo123".into(),
        messages,
        unread: 0,
    });
    let screen = draw(&app, 100, 30);
    assert!(
        screen.contains("line 59") && !screen.contains("line 40"),
        "{screen}"
    );
    assert!(
        screen.contains("22:14 echo123: line 59"),
        "today: time only\n{screen}"
    );
    key(&mut app, KeyCode::PageUp);
    let screen = draw(&app, 100, 30);
    assert!(
        !screen.contains("line 59") && screen.contains("line 40"),
        "{screen}"
    );
    assert!(screen.contains("lines below · End: newest"), "{screen}");
    key(&mut app, KeyCode::Home);
    assert_snapshot!("chat_scrolled_to_oldest", draw(&app, 100, 30));
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("2023-11-12 22:13 you: line 00"), "{screen}");
    key(&mut app, KeyCode::PageDown);
    assert!(draw(&app, 100, 30).contains("line 15"));
    key(&mut app, KeyCode::End);
    assert!(draw(&app, 100, 30).contains("line 59"));
    // With a draft, Home and End move in it; ctrl+Home still scrolls.
    typed(&mut app, "draft");
    key(&mut app, KeyCode::Home);
    assert!(draw(&app, 100, 30).contains("line 59"));
    app.handle_key(KeyEvent::new(KeyCode::Home, KeyModifiers::CONTROL));
    assert!(draw(&app, 100, 30).contains("line 00"));
}

/// Missed calls and the call history: an unanswered call stays in the
/// title and the call panel as missed until the user turns to the caller
/// (opening the chat marks it seen); an ended call shows its duration.
#[test]
fn missed_calls_and_history() {
    use crate::node::api::{CallRecord, EndReason};
    let mut app = first_run();
    app.handle_event(Event::Login(LoginState::LoggedIn {
        username: "you".into(),
        until: NOW.secs().get() + 86_400,
        role: crate::node::api::Role::User,
    }));
    assert_eq!(
        app.take_commands(),
        vec![Command::CallHistory { limit: 50 }],
        "the history is asked for at login"
    );
    for c in ["bot", "carol"] {
        app.handle_event(Event::Contact {
            username: c.into(),
            state: ContactState::Authorized,
        });
    }
    let answered = CallRecord {
        peer: "bot".into(),
        outgoing: true,
        started_at: NOW - 2 * 86_400_000,
        answered_at: Some(NOW - 2 * 86_400_000 + 5_000),
        ended_at: NOW - 2 * 86_400_000 + 65_000,
        reason: EndReason::HungUp { by_us: true },
        seen: true,
        conference: Vec::new(),
    };
    app.handle_event(Event::CallHistory {
        calls: vec![answered],
    });
    // carol calls; nobody answers; she gives up.
    app.handle_event(Event::Call(CallInfo {
        id: 4,
        peer: "carol".into(),
        outgoing: false,
        state: CallState::Incoming,
        muted: false,
        held: false,
        remote_held: false,
        answered_at: None,
    }));
    app.handle_event(Event::CallLogged(CallRecord {
        peer: "carol".into(),
        outgoing: false,
        started_at: NOW - 30_000,
        answered_at: None,
        ended_at: NOW,
        reason: EndReason::Cancelled { by_us: false },
        seen: false,
        conference: Vec::new(),
    }));
    app.handle_event(Event::Call(CallInfo {
        id: 4,
        peer: "carol".into(),
        outgoing: false,
        state: CallState::Ended {
            reason: EndReason::Cancelled { by_us: false },
            detail: None,
        },
        muted: false,
        held: false,
        remote_held: false,
        answered_at: None,
    }));
    app.tick(NOW + 60_000);
    assert_snapshot!("missed_call", draw(&app, 100, 30));
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("☎ 1 missed"), "{screen}");
    assert!(
        screen.contains("✗ missed call from carol at 22:12"),
        "{screen}"
    );
    assert!(
        screen.contains("↗ bot at 2023-11-12 22:13, 01:00"),
        "{screen}"
    );
    // Opening carol's chat marks her missed call seen.
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    let cmds = app.take_commands();
    assert!(
        cmds.contains(&Command::MarkCallsSeen {
            peer: Some("carol".into())
        }),
        "{cmds:?}"
    );
}

#[test]
fn five_party_conference_panel() {
    use crate::conference::{ConfEvent, LeftReason};
    use crate::node::api::ConferenceUpdate;
    let mut app = logged_in();
    let me = app.model.me().unwrap().to_owned();
    let ev = |e: ConfEvent| Event::Conference(ConferenceUpdate::Changed(e));
    app.handle_event(ev(ConfEvent::Joined {
        id: 5,
        name: me.clone(),
    }));
    for n in ["bob", "carol", "dave", "erin", "frank"] {
        app.handle_event(ev(ConfEvent::Joined {
            id: 5,
            name: n.into(),
        }));
    }
    app.handle_event(ev(ConfEvent::Left {
        id: 5,
        name: "frank".into(),
        reason: LeftReason::Left,
    }));
    app.handle_event(ev(ConfEvent::MixerChanged {
        id: 5,
        mixer: me.clone(),
        epoch: 1,
        failover: false,
    }));
    app.handle_event(ev(ConfEvent::Muted {
        id: 5,
        name: "dave".into(),
        on: true,
        by: me.clone(),
    }));
    app.handle_event(ev(ConfEvent::Levels {
        id: 5,
        levels: vec![
            (me.clone(), 3),
            ("bob".into(), 200),
            ("carol".into(), 90),
            ("dave".into(), 0),
            ("erin".into(), 10),
        ],
    }));
    assert!(app.model.bell, "joins and leaves ring the bell");
    let screen = draw(&app, 100, 30);
    assert!(
        screen.contains("conference · 5 participants · mixed by you"),
        "{screen}"
    );
    assert!(
        app.model
            .notices
            .iter()
            .any(|n| n.text == "frank left the conference (left)"),
        "{:?}",
        app.model.notices
    );
    assert!(screen.contains("you muted dave"), "{screen}");
    assert_snapshot!("conference_five_party", screen);
}

fn ctrl(app: &mut App, c: char) {
    app.handle_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL));
}

/// The chat with echo123 open (the last contact) and a call with them
/// on: the call keys with ctrl act while a draft is in the box, which
/// keeps it.
#[test]
fn call_keys_while_typing() {
    let mut app = logged_in();
    key(&mut app, KeyCode::End);
    key(&mut app, KeyCode::Enter);
    app.take_commands();
    app.handle_event(call(9, CallState::Active, Some(NOW)));
    app.tick(NOW + 65_000);
    typed(&mut app, "I'm muting for a sec");
    ctrl(&mut app, 't');
    assert_eq!(
        app.take_commands(),
        vec![Command::Mute {
            call: 9,
            muted: true
        }]
    );
    ctrl(&mut app, 'o');
    assert_eq!(
        app.take_commands(),
        vec![Command::Hold {
            call: 9,
            held: true
        }]
    );
    // Plain m and o are text while typing.
    typed(&mut app, "mo");
    assert_eq!(app.take_commands(), vec![]);
    assert_snapshot!("chat_in_call_hints", draw(&app, 100, 30));
    ctrl(&mut app, 'x');
    assert_eq!(app.take_commands(), vec![Command::HangUp { call: 9 }]);
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_commands(),
        vec![Command::SendMessage {
            to: "echo123".into(),
            text: "I'm muting for a secmo".into()
        }]
    );
    // An incoming call is answered (or refused) with ctrl keys too.
    app.handle_event(Event::Call(CallInfo {
        id: 10,
        peer: "bot".into(),
        outgoing: false,
        state: CallState::Incoming,
        muted: false,
        held: false,
        remote_held: false,
        answered_at: None,
    }));
    ctrl(&mut app, 'n');
    assert_eq!(app.take_commands(), vec![Command::DeclineCall { call: 10 }]);
    ctrl(&mut app, 'y');
    assert_eq!(app.take_commands(), vec![Command::AcceptCall { call: 10 }]);
    // Quitting while it rings asks too.
    ctrl(&mut app, 'c');
    assert_eq!(
        app.confirming(),
        Some("bot is calling you. Quit and refuse the call?")
    );
}

/// Quitting during a call asks first: n or Esc keeps the call, y or the
/// quit key again quits; with no call q quits at once.
#[test]
fn quit_during_a_call_asks_first() {
    let mut app = logged_in();
    app.handle_event(call(9, CallState::Active, Some(NOW)));
    key(&mut app, KeyCode::Char('q'));
    assert!(!app.quitting());
    assert_eq!(
        app.confirming(),
        Some("You are in a call with echo123. Quit and hang up?")
    );
    assert_snapshot!("confirm_quit", draw(&app, 100, 30));
    // A stray key keeps the question; n answers it.
    key(&mut app, KeyCode::Char('j'));
    assert!(app.confirming().is_some());
    key(&mut app, KeyCode::Char('n'));
    assert_eq!(app.confirming(), None);
    ctrl(&mut app, 'c');
    key(&mut app, KeyCode::Esc);
    assert!(!app.quitting());
    assert_eq!(app.take_commands(), vec![]);
    // From the chat box too (ctrl+c), then q again quits.
    key(&mut app, KeyCode::Enter);
    app.take_commands();
    ctrl(&mut app, 'c');
    assert!(app.confirming().is_some());
    key(&mut app, KeyCode::Char('q'));
    assert!(app.quitting());
    assert_eq!(app.take_commands(), vec![Command::Quit]);

    let mut app = logged_in();
    app.handle_event(call(9, CallState::Active, Some(NOW)));
    key(&mut app, KeyCode::Char('q'));
    key(&mut app, KeyCode::Char('y'));
    assert_eq!(app.take_commands(), vec![Command::Quit]);
    // An ended call asks nothing.
    let mut app = logged_in();
    app.handle_event(call(
        9,
        CallState::Ended {
            reason: crate::node::api::EndReason::HungUp { by_us: true },
            detail: None,
        },
        Some(NOW),
    ));
    key(&mut app, KeyCode::Char('q'));
    assert_eq!(app.confirming(), None);
    assert_eq!(app.take_commands(), vec![Command::Quit]);
}

/// A blocked contact can't be called: the footer says why and how.
#[test]
fn blocked_contact_cannot_be_called() {
    let mut app = logged_in();
    app.handle_event(Event::Contact {
        username: "carol".into(),
        state: ContactState::Blocked,
    });
    // bot, carol, echo123: carol is the second.
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Char('c'));
    assert_eq!(app.take_commands(), vec![]);
    let screen = draw(&app, 100, 30);
    assert!(
        screen.contains("carol is blocked: unblock them (b) to call"),
        "{screen}"
    );
}

/// One name per status: "do not disturb" in the title bar and the help,
/// never "busy" or "dnd".
#[test]
fn status_names() {
    for (s, name) in [
        (Status::Online, "online"),
        (Status::Away, "away"),
        (Status::DoNotDisturb, "do not disturb"),
        (Status::Invisible, "invisible"),
        (Status::Offline, "offline"),
    ] {
        assert_eq!(s.name(), name);
    }
    let mut app = logged_in();
    app.handle_event(Event::OwnStatus {
        status: Status::DoNotDisturb,
        message: String::new(),
        auto: false,
    });
    app.handle_event(presence("carol", Status::DoNotDisturb, ""));
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("you ⊘ do not disturb"), "{screen}");
    key(&mut app, KeyCode::Char('?'));
    let help = draw(&app, 100, 30);
    assert!(
        help.contains("online, away, do not disturb, invisible"),
        "{help}"
    );
    for screen in [screen, help] {
        assert!(
            !screen.contains("busy") && !screen.contains("dnd"),
            "{screen}"
        );
    }
}

/// The mood message: S opens a dialog with the current one, Enter
/// publishes it with the current status; contacts' moods show next to
/// their names.
#[test]
fn mood_message_set_from_the_ui() {
    let mut app = logged_in();
    app.handle_event(Event::OwnStatus {
        status: Status::Away,
        message: "lunch".into(),
        auto: false,
    });
    app.handle_key(KeyEvent::new(KeyCode::Char('S'), KeyModifiers::SHIFT));
    assert_eq!(app.mood_draft(), Some("lunch"));
    for _ in 0..5 {
        key(&mut app, KeyCode::Backspace);
    }
    typed(&mut app, "back at 3, call me");
    assert_snapshot!("mood_dialog", draw(&app, 100, 30));
    // Plain keys are text here: q and c do nothing else.
    assert!(!app.quitting());
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_commands(),
        vec![Command::SetStatus {
            status: Status::Away,
            message: "back at 3, call me".into()
        }]
    );
    assert_eq!(app.mood_draft(), None);
    // Esc leaves it as it was; the field holds at most 255 bytes.
    app.handle_key(KeyEvent::new(KeyCode::Char('S'), KeyModifiers::SHIFT));
    app.handle_paste(&"x".repeat(300));
    assert_eq!(
        app.mood_draft().map(str::len),
        Some(255 + "lunch".len() - 5)
    );
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.take_commands(), vec![]);
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("echo123 · echo test"), "{screen}");
}

/// The footer lists the keys of what is selected: a request's accept,
/// decline and block; during a call, the call keys first.
#[test]
fn hint_line_follows_the_selection() {
    let mut app = logged_in();
    app.handle_event(Event::ContactRequest {
        from: "dave".into(),
        greeting: "hi, it's dave".into(),
    });
    app.tick(NOW + 120_000);
    key(&mut app, KeyCode::End);
    let screen = draw(&app, 100, 30);
    assert!(
        screen.contains(" a accept · d decline · b block · enter read"),
        "{screen}"
    );
    // Read: the request's greeting opens the conversation.
    key(&mut app, KeyCode::Enter);
    assert_snapshot!("chat_request_greeting", draw(&app, 100, 30));
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Home);
    let screen = draw(&app, 100, 30);
    assert!(
        screen.contains(" enter chat · c call · f send file · d remove · b block"),
        "{screen}"
    );
    app.handle_event(call(9, CallState::Active, Some(NOW)));
    app.tick(NOW + 240_000);
    assert_snapshot!("contacts_in_call_hints", draw(&app, 100, 30));
}

fn conf(e: crate::conference::ConfEvent) -> Event {
    Event::Conference(crate::node::api::ConferenceUpdate::Changed(e))
}

/// In a call with echo123, `+` on bot makes it a conference; the panel
/// shows the conference's keys; `m` mutes us, `M` (we started it) mutes
/// the selected participant, `x` leaves.
#[test]
fn a_call_becomes_a_conference_with_the_keys() {
    use crate::conference::{ConfEvent, LeftReason};
    let mut app = logged_in();
    app.handle_event(call(9, CallState::Active, Some(NOW)));
    // `+` during a 1:1 call: the selected contact (bot, the first) joins.
    key(&mut app, KeyCode::Home);
    key(&mut app, KeyCode::Char('+'));
    assert_eq!(
        app.take_commands(),
        vec![Command::ConferenceAdd {
            username: "bot".into()
        }]
    );
    let screen = draw(&app, 100, 30);
    assert!(
        screen.contains("inviting bot into the conference"),
        "{screen}"
    );
    // The node makes it a conference of three, started by us.
    for n in ["you", "echo123", "bot"] {
        app.handle_event(conf(ConfEvent::Joined {
            id: 7,
            name: n.into(),
        }));
    }
    app.handle_event(conf(ConfEvent::MixerChanged {
        id: 7,
        mixer: "you".into(),
        epoch: 1,
        failover: false,
    }));
    // The 1:1 call it replaced ends.
    app.handle_event(call(
        9,
        CallState::Ended {
            reason: crate::call::EndReason::HungUp { by_us: true },
            detail: Some("it became a conference".into()),
        },
        Some(NOW),
    ));
    assert!(app.model.bell, "a join rings");
    let view = app.model.live_conference().unwrap();
    assert!(view.we_started);
    // Mute ourselves, and back.
    key(&mut app, KeyCode::Char('m'));
    assert_eq!(
        app.take_commands(),
        vec![Command::ConferenceMute { muted: Some(true) }]
    );
    app.handle_event(conf(ConfEvent::Muted {
        id: 7,
        name: "you".into(),
        on: true,
        by: "you".into(),
    }));
    key(&mut app, KeyCode::Char('m'));
    assert_eq!(
        app.take_commands(),
        vec![Command::ConferenceMute { muted: Some(false) }]
    );
    // `M` on bot (still selected): the starter mutes them.
    app.handle_key(KeyEvent::new(KeyCode::Char('M'), KeyModifiers::SHIFT));
    assert_eq!(
        app.take_commands(),
        vec![Command::ConferenceMuteOther {
            username: "bot".into(),
            muted: true
        }]
    );
    app.handle_event(conf(ConfEvent::Muted {
        id: 7,
        name: "bot".into(),
        on: true,
        by: "you".into(),
    }));
    // `c` does not call from a conference; carol is not in it to mute.
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Char('c'));
    app.handle_key(KeyEvent::new(KeyCode::Char('M'), KeyModifiers::SHIFT));
    assert_eq!(app.take_commands(), vec![]);
    assert!(
        draw(&app, 100, 30).contains("carol is not in the conference"),
        "{}",
        draw(&app, 100, 30)
    );
    app.tick(NOW + 70_000);
    let screen = draw(&app, 100, 30);
    for want in [
        "conference · 3 participants · mixed by you",
        "m unmute · + add · x leave · M mute selected",
        "x leave · m unmute · + add · M mute them",
        "[muted]",
    ] {
        assert!(screen.contains(want), "{want}:\n{screen}");
    }
    assert_snapshot!("conference_from_a_call", screen);
    // Quitting asks first; `x` leaves.
    key(&mut app, KeyCode::Char('q'));
    assert_eq!(
        app.confirming(),
        Some("You are in a conference with 2 others. Quit and leave it?")
    );
    key(&mut app, KeyCode::Char('n'));
    key(&mut app, KeyCode::Char('x'));
    assert_eq!(app.take_commands(), vec![Command::ConferenceLeave]);
    app.handle_event(conf(ConfEvent::Left {
        id: 7,
        name: "bot".into(),
        reason: LeftReason::Left,
    }));
    assert!(draw(&app, 100, 30).contains("bot left the conference (left)"));
}

/// Space marks contacts, `C` starts a conference with them; without
/// marks or a call the keys say what to do.
#[test]
fn marked_contacts_start_a_conference() {
    let mut app = logged_in();
    key(&mut app, KeyCode::Char('C'));
    key(&mut app, KeyCode::Char('+'));
    assert_eq!(app.take_commands(), vec![]);
    let screen = draw(&app, 100, 30);
    assert!(
        screen.contains("no call to add to: space marks contacts, C starts a conference"),
        "{screen}"
    );
    // Mark bot and echo123 (the first and the last), and carol, then
    // unmark carol.
    key(&mut app, KeyCode::Home);
    key(&mut app, KeyCode::Char(' '));
    key(&mut app, KeyCode::End);
    key(&mut app, KeyCode::Char(' '));
    key(&mut app, KeyCode::Up);
    key(&mut app, KeyCode::Char(' '));
    key(&mut app, KeyCode::Char(' '));
    let screen = draw(&app, 100, 30);
    assert!(
        screen.contains("2 marked (bot, echo123): C starts a conference with them"),
        "{screen}"
    );
    app.tick(NOW + 70_000);
    let screen = draw(&app, 100, 30);
    assert!(
        screen.contains("bot ✚") && screen.contains("echo123 ✚"),
        "{screen}"
    );
    assert!(!screen.contains("carol ✚"), "{screen}");
    assert!(screen.contains("C conference with 2 marked"), "{screen}");
    assert_snapshot!("conference_marked_contacts", screen);
    key(&mut app, KeyCode::Char('C'));
    assert_eq!(
        app.take_commands(),
        vec![Command::ConferenceStart {
            users: vec!["bot".into(), "echo123".into()]
        }]
    );
    // The marks are used up.
    key(&mut app, KeyCode::Char('C'));
    assert_eq!(app.take_commands(), vec![]);
}

/// An invitation is a modal prompt: y joins, n declines; an invitee
/// may not mute others, and is told who muted them.
#[test]
fn a_conference_invitation_is_answered_with_y_or_n() {
    use crate::conference::ConfEvent;
    let mut app = logged_in();
    app.handle_event(conf(ConfEvent::Incoming {
        id: 8,
        from: "carol".into(),
        members: vec!["bot".into(), "carol".into()],
        replaces: 0,
    }));
    assert!(app.model.bell);
    let screen = draw(&app, 100, 30);
    assert!(
        screen.contains("carol invites you to a conference"),
        "{screen}"
    );
    assert!(screen.contains("with bot"), "{screen}");
    assert!(screen.contains("y join   ·   n decline"), "{screen}");
    assert_snapshot!("conference_invitation", screen);
    // Other keys do nothing while it waits; pastes are dropped.
    key(&mut app, KeyCode::Char('c'));
    app.handle_paste("hello");
    assert_eq!(app.take_commands(), vec![]);
    key(&mut app, KeyCode::Char('n'));
    assert_eq!(app.take_commands(), vec![Command::ConferenceLeave]);
    key(&mut app, KeyCode::Char('y'));
    assert_eq!(app.take_commands(), vec![Command::ConferenceAccept]);
    for n in ["bot", "carol", "you"] {
        app.handle_event(conf(ConfEvent::Joined {
            id: 8,
            name: n.into(),
        }));
    }
    assert!(app.model.conference_invite().is_none());
    assert!(!app.model.live_conference().unwrap().we_started);
    // bot is selected first: only the starter may mute them.
    key(&mut app, KeyCode::Home);
    app.handle_key(KeyEvent::new(KeyCode::Char('M'), KeyModifiers::SHIFT));
    assert_eq!(app.take_commands(), vec![]);
    assert!(
        draw(&app, 100, 30).contains("only the one who started the conference may mute others")
    );
    app.handle_event(conf(ConfEvent::Muted {
        id: 8,
        name: "you".into(),
        on: true,
        by: "carol".into(),
    }));
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("carol muted you"), "{screen}");
    assert!(!screen.contains("M mute selected"), "{screen}");
    assert!(screen.contains("m unmute · + add · x leave"), "{screen}");
}

/// Issue 16: a group in the contact list with its unread count, and its
/// conversation with the members' presence and join and leave lines.
#[test]
fn group_chat() {
    use crate::node::api::{GroupChange, GroupChatMessage, GroupCommand, GroupEntry, GroupUpdate};
    let mut app = logged_in();
    let id = "00112233445566778899aabbccddeeff";
    let entry = |members: &[&str]| GroupEntry {
        id: id.into(),
        name: "lunch".into(),
        creator: "carol".into(),
        admins: vec!["carol".into()],
        members: members.iter().map(|m| m.to_string()).collect(),
        joined: true,
    };
    let change = |members: &[&str], by: &str, change| {
        Event::Group(GroupUpdate::Change {
            group: entry(members),
            by: by.into(),
            change,
        })
    };
    let gmsg = |from: &str, seq: u64, text: &str, at: UnixMillis| {
        Event::Group(GroupUpdate::Message(GroupChatMessage {
            group: id.into(),
            from: from.into(),
            seq,
            text: text.into(),
            sent_at: at,
            outgoing: from == "you",
        }))
    };
    app.handle_event(change(
        &["carol", "echo123", "you"],
        "carol",
        GroupChange::Joined,
    ));
    app.handle_event(gmsg("carol", 1, "noon at the usual place?", NOW - 5000));
    app.handle_event(gmsg("echo123", 1, "yes", NOW - 4000));
    app.handle_event(change(
        &["bot", "carol", "echo123", "you"],
        "carol",
        GroupChange::Added("bot".into()),
    ));
    app.handle_event(change(
        &["bot", "carol", "you"],
        "echo123",
        GroupChange::Left("echo123".into()),
    ));
    assert!(app.take_bell());
    assert_snapshot!("group_in_list", draw(&app, 100, 30));
    // The group is after the three contacts.
    for _ in 0..3 {
        key(&mut app, KeyCode::Down);
    }
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_commands(),
        vec![Command::Group(GroupCommand::History {
            group: id.into(),
            limit: 200
        })]
    );
    typed(&mut app, "see you there");
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_commands(),
        vec![Command::Group(GroupCommand::Send {
            group: id.into(),
            text: "see you there".into()
        })]
    );
    app.handle_event(gmsg("you", 1, "see you there", NOW));
    assert_snapshot!("group_chat", draw(&app, 100, 30));
    // C on the group (nothing marked) starts a conference with its
    // members.
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('C'));
    assert_eq!(
        app.take_commands(),
        vec![Command::ConferenceStart {
            users: vec!["bot".into(), "carol".into()]
        }]
    );
}

/// Issue 16, groups from the TUI: `g` founds a group with the marked
/// contacts, and on its row `i` invites, `r` removes (after a yes), `R`
/// renames and `L` leaves (after a yes); results and the node's errors
/// show in the status line.
#[test]
fn group_management() {
    use crate::node::api::{GroupChange, GroupCommand, GroupEntry, GroupUpdate};
    let mut app = logged_in();
    let g = |c| Command::Group(c);
    let id = "00112233445566778899aabbccddeeff";
    let entry = |name: &str, creator: &str, members: &[&str]| GroupEntry {
        id: id.into(),
        name: name.into(),
        creator: creator.into(),
        admins: vec![creator.into()],
        members: members.iter().map(|m| m.to_string()).collect(),
        joined: members.contains(&"you"),
    };
    let change = |group: GroupEntry, by: &str, change| {
        Event::Group(GroupUpdate::Change {
            group,
            by: by.into(),
            change,
        })
    };
    // Mark carol and echo123 (bot, carol, echo123), then g.
    key(&mut app, KeyCode::Home);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Char(' '));
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Char(' '));
    app.tick(NOW + 70_000);
    assert!(draw(&app, 100, 30).contains("g group with them"));
    key(&mut app, KeyCode::Char('g'));
    // An empty name is refused in the dialog.
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.take_commands(), vec![]);
    assert!(draw(&app, 100, 30).contains("give the group a name"));
    typed(&mut app, "lunch crew");
    assert_snapshot!("group_new_dialog", draw(&app, 100, 30));
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_commands(),
        vec![g(GroupCommand::Create {
            name: "lunch crew".into(),
            members: vec!["carol".into(), "echo123".into()],
        })]
    );
    // The dialog closed and the marks went with it.
    let screen = draw(&app, 100, 30);
    assert!(!screen.contains("New group"), "{screen}");
    assert!(!screen.contains("✚"), "{screen}");
    // Esc cancels a dialog without a command.
    key(&mut app, KeyCode::Char('g'));
    typed(&mut app, "x");
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.take_commands(), vec![]);
    assert!(!draw(&app, 100, 30).contains("New group"));
    // The node's answers: the result in the status line.
    app.handle_event(change(
        entry("lunch crew", "you", &["you"]),
        "you",
        GroupChange::Created,
    ));
    assert!(draw(&app, 100, 30).contains("you created the group lunch crew"));
    app.handle_event(change(
        entry("lunch crew", "you", &["carol", "you"]),
        "you",
        GroupChange::Added("carol".into()),
    ));
    app.handle_event(change(
        entry("lunch crew", "you", &["carol", "echo123", "you"]),
        "you",
        GroupChange::Added("echo123".into()),
    ));
    assert!(draw(&app, 100, 30).contains("echo123 is in lunch crew now (you invited them)"));
    // On a contact's row the group keys say what they need.
    key(&mut app, KeyCode::Char('i'));
    assert_eq!(app.take_commands(), vec![]);
    assert!(draw(&app, 100, 30).contains("select a group first (a # row); g starts a new one"));
    // The group's row, after the three contacts, lists its keys.
    key(&mut app, KeyCode::End);
    app.tick(NOW + 90_000);
    let screen = draw(&app, 100, 30);
    assert!(
        screen.contains("enter chat · C conference · i invite · r remove · R rename · L leave"),
        "{screen}"
    );
    // i: the contacts not in it; Enter invites the one highlighted.
    key(&mut app, KeyCode::Char('i'));
    assert_snapshot!("group_invite_picker", draw(&app, 100, 30));
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_commands(),
        vec![g(GroupCommand::Invite {
            group: id.into(),
            user: "bot".into()
        })]
    );
    // The node's typed refusal shows as an alert, not an error.
    app.handle_event(Event::Error {
        command: "group invite".into(),
        reason: ErrorReason::Group(Refusal::AlreadyMember),
        message: "bot is already a member".into(),
    });
    assert!(draw(&app, 100, 30).contains("group invite: bot is already a member"));
    assert_eq!(
        app.model.notices.back().map(|n| n.level),
        Some(super::model::Level::Alert)
    );
    // r: the members but us and the creator; the second, after a yes.
    key(&mut app, KeyCode::Char('r'));
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.take_commands(), vec![]);
    assert_snapshot!("group_remove_confirm", draw(&app, 100, 30));
    key(&mut app, KeyCode::Char('n'));
    assert_eq!(app.take_commands(), vec![]);
    key(&mut app, KeyCode::Char('r'));
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Char('y'));
    assert_eq!(
        app.take_commands(),
        vec![g(GroupCommand::Remove {
            group: id.into(),
            user: "echo123".into()
        })]
    );
    app.handle_event(change(
        entry("lunch crew", "you", &["carol", "you"]),
        "you",
        GroupChange::Removed("echo123".into()),
    ));
    assert!(draw(&app, 100, 30).contains("you removed echo123 from lunch crew"));
    // R: the name to edit; the same name sends nothing.
    app.handle_key(KeyEvent::new(KeyCode::Char('R'), KeyModifiers::SHIFT));
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.take_commands(), vec![]);
    app.handle_key(KeyEvent::new(KeyCode::Char('R'), KeyModifiers::SHIFT));
    app.handle_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    app.handle_paste("dinner\nignored");
    assert_snapshot!("group_rename_dialog", draw(&app, 100, 30));
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_commands(),
        vec![g(GroupCommand::Rename {
            group: id.into(),
            name: "dinner".into()
        })]
    );
    app.handle_event(change(
        entry("dinner", "you", &["carol", "you"]),
        "you",
        GroupChange::Renamed("dinner".into()),
    ));
    assert!(draw(&app, 100, 30).contains("you renamed the group to dinner"));
    // L: leave, after a yes; the open conversation closes.
    key(&mut app, KeyCode::Enter);
    app.take_commands();
    key(&mut app, KeyCode::Esc);
    app.handle_key(KeyEvent::new(KeyCode::Char('L'), KeyModifiers::SHIFT));
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("Leave the group dinner?"), "{screen}");
    key(&mut app, KeyCode::Char('y'));
    assert_eq!(
        app.take_commands(),
        vec![g(GroupCommand::Leave { group: id.into() })]
    );
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("Select a contact and press"), "{screen}");
    app.handle_event(change(
        entry("dinner", "you", &["carol"]),
        "you",
        GroupChange::Left("you".into()),
    ));
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("you left dinner"), "{screen}");
    assert!(!screen.contains("# dinner"), "{screen}");
}

/// Group keys a member who is no admin may not use, and being removed.
#[test]
fn group_management_not_admin() {
    use crate::node::api::{GroupChange, GroupCommand, GroupEntry, GroupUpdate};
    let mut app = logged_in();
    let id = "ffeeddccbbaa99887766554433221100";
    let entry = |members: &[&str]| GroupEntry {
        id: id.into(),
        name: "book club".into(),
        creator: "carol".into(),
        admins: vec!["carol".into()],
        members: members.iter().map(|m| m.to_string()).collect(),
        joined: members.contains(&"you"),
    };
    let all = ["bot", "carol", "echo123", "you"];
    app.handle_event(Event::Group(GroupUpdate::Change {
        group: entry(&all),
        by: "carol".into(),
        change: GroupChange::Joined,
    }));
    app.tick(NOW + 90_000);
    key(&mut app, KeyCode::End);
    // No remove key on the row of a group we do not administer.
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("i invite · R rename"), "{screen}");
    key(&mut app, KeyCode::Char('r'));
    assert_eq!(app.take_commands(), vec![]);
    assert!(draw(&app, 100, 30).contains("only the admins of book club may remove members"));
    // Every contact is in it already: nobody to invite.
    key(&mut app, KeyCode::Char('i'));
    assert_eq!(app.take_commands(), vec![]);
    assert!(draw(&app, 100, 30).contains("all your contacts are in book club already"));
    // Open the conversation; carol removes us: it closes, and we are told.
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_commands(),
        vec![Command::Group(GroupCommand::History {
            group: id.into(),
            limit: 200
        })]
    );
    app.take_bell();
    app.handle_event(Event::Group(GroupUpdate::Change {
        group: entry(&["bot", "carol", "echo123"]),
        by: "carol".into(),
        change: GroupChange::Removed("you".into()),
    }));
    assert!(app.take_bell());
    assert_eq!(app.focus(), super::app::Focus::Contacts);
    let screen = draw(&app, 100, 30);
    assert!(
        screen.contains("you were removed from book club by carol"),
        "{screen}"
    );
    assert!(!screen.contains("# book club"), "{screen}");
    // Others' changes stay in the conversation, out of the status line.
    app.tick(NOW + 200_000);
    app.handle_event(Event::Group(GroupUpdate::Change {
        group: entry(&["bot", "carol"]),
        by: "carol".into(),
        change: GroupChange::Removed("echo123".into()),
    }));
    assert!(!draw(&app, 100, 30).contains("removed"));
}

fn file_event(e: crate::node::api::FileEvent) -> Event {
    Event::File(e)
}

/// Offers, a transfer in progress and ended ones, in the transfers window;
/// an offer is accepted into the downloads folder with F, Enter, Enter,
/// and one in progress stops only after a yes.
#[test]
fn file_transfers_window() {
    use crate::node::api::{FileEvent, FileFailure, FileProgress};
    let mut app = logged_in();
    app.handle_event(file_event(FileEvent::Offering {
        id: 1,
        peer: "carol".into(),
        name: "holiday.mp4".into(),
        size: 48_000_000,
    }));
    app.handle_event(file_event(FileEvent::Started {
        id: 1,
        peer: "carol".into(),
        outgoing: true,
        resumed_from: 0,
    }));
    app.handle_event(file_event(FileEvent::Progress(FileProgress {
        id: 1,
        peer: "carol".into(),
        outgoing: true,
        done: 30_000_000,
        size: 48_000_000,
        rate: 2_400_000,
        eta_ms: Some(7_500),
        wire_bytes: 30_100_000,
    })));
    app.handle_event(file_event(FileEvent::Offering {
        id: 2,
        peer: "bot".into(),
        name: "notes.txt".into(),
        size: 1_200,
    }));
    app.handle_event(file_event(FileEvent::Failed {
        id: 2,
        peer: "bot".into(),
        outgoing: true,
        reason: FileFailure::Declined,
    }));
    app.tick(NOW + 61_000);
    app.handle_event(file_event(FileEvent::Offered {
        id: 3,
        peer: "echo123".into(),
        name: "report.pdf".into(),
        size: 2_100_000,
    }));
    assert!(app.take_bell(), "an offer rings the bell");
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("⇅ 1 file offered"), "{screen}");
    assert!(
        screen.contains("echo123 offers you report.pdf (2.1 MB)"),
        "{screen}"
    );
    app.take_commands();
    key(&mut app, KeyCode::Char('F'));
    assert_eq!(app.take_commands(), vec![Command::ListFiles]);
    assert!(app.files_open());
    assert_snapshot!("files_window", draw(&app, 100, 30));
    // The offer is selected first: Enter asks where, Enter again takes
    // the downloads folder.
    key(&mut app, KeyCode::Enter);
    assert_snapshot!("files_save_prompt", draw(&app, 100, 30));
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_commands(),
        vec![Command::AcceptFile { id: 3, path: None }]
    );
    // Down to the upload in progress: c asks first.
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Char('c'));
    assert_eq!(
        app.confirming(),
        Some("Stop holiday.mp4 to carol?"),
        "{}",
        draw(&app, 100, 30)
    );
    key(&mut app, KeyCode::Char('y'));
    assert_eq!(app.take_commands(), vec![Command::CancelFile { id: 1 }]);
    key(&mut app, KeyCode::Esc);
    assert!(!app.files_open());
    // The saved file says where it went.
    app.handle_event(file_event(FileEvent::Completed {
        id: 3,
        peer: "echo123".into(),
        outgoing: false,
        path: "/home/you/.local/share/natter/downloads/report.pdf".into(),
        size: 2_100_000,
        wire_bytes: 2_100_000,
    }));
    let screen = draw(&app, 100, 30);
    assert!(
        screen.contains(
            "report.pdf from echo123 saved to /home/you/.local/share/natter/downloads/report.pdf"
        ),
        "{screen}"
    );
}

/// f on a contact asks for a path; Tab completes from the disk; only a
/// readable file is offered; strangers and blocked contacts get none.
#[test]
fn send_file_prompt_completes_paths() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("minutes-march.txt"), b"x").unwrap();
    std::fs::write(dir.path().join("minutes-april.txt"), b"x").unwrap();
    let mut app = logged_in();
    // The list is sorted: bot, carol, echo123.
    key(&mut app, KeyCode::Char('f'));
    assert_eq!(app.send_file_draft(), Some(""));
    let base = format!("{}/min", dir.path().display());
    app.handle_paste(&base);
    key(&mut app, KeyCode::Tab);
    let shared = format!("{}/minutes-", dir.path().display());
    assert_eq!(app.send_file_draft(), Some(shared.as_str()));
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("Send a file to bot"), "{screen}");
    assert!(screen.contains("minutes-april.txt"), "{screen}");
    assert!(screen.contains("minutes-march.txt"), "{screen}");
    typed(&mut app, "m");
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Enter);
    let path = dir.path().join("minutes-march.txt").display().to_string();
    assert_eq!(
        app.take_commands(),
        vec![Command::SendFile {
            to: "bot".into(),
            path
        }]
    );
    assert_eq!(app.send_file_draft(), None);
    // A missing file is named, nothing is sent, Esc closes.
    key(&mut app, KeyCode::Char('f'));
    typed(&mut app, "/no/such/file.txt");
    key(&mut app, KeyCode::Enter);
    assert!(draw(&app, 100, 30).contains("can't read it: no such file"));
    assert!(app.take_commands().is_empty());
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.send_file_draft(), None);
    // While typing in a chat, ctrl+f sends to its peer.
    key(&mut app, KeyCode::Enter);
    app.handle_key(KeyEvent::new(KeyCode::Char('f'), KeyModifiers::CONTROL));
    assert!(draw(&app, 100, 30).contains("Send a file to bot"));
    key(&mut app, KeyCode::Esc);
    // A blocked contact gets no prompt.
    app.handle_event(Event::Contact {
        username: "bot".into(),
        state: ContactState::Blocked,
    });
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Home);
    key(&mut app, KeyCode::Char('f'));
    assert_eq!(app.send_file_draft(), None);
    assert!(draw(&app, 100, 30).contains("unblock them to send a file"));
}

/// Issue 17: a call that rang here and was answered on another device of
/// ours stops ringing with a notice naming that device.
#[test]
fn a_call_answered_on_another_device_says_where() {
    let mut app = logged_in();
    let mut incoming = |state| {
        app.handle_event(Event::Call(CallInfo {
            id: 12,
            peer: "bob".into(),
            outgoing: false,
            state,
            muted: false,
            held: false,
            remote_held: false,
            answered_at: None,
        }))
    };
    incoming(CallState::Incoming);
    incoming(CallState::Ended {
        reason: crate::node::api::EndReason::AnsweredElsewhere {
            device: crate::node::api::DeviceName::new("laptop"),
        },
        detail: None,
    });
    assert!(
        app.model
            .notices
            .iter()
            .any(|n| n.text == "call with bob ended: answered on laptop"),
        "{:?}",
        app.model.notices
    );
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("answered on laptop"), "{screen}");
}

fn devices_list() -> Event {
    use crate::node::api::DeviceInfo;
    use crate::time::UnixSecs;
    let secs = NOW.secs().get();
    Event::Devices(vec![
        DeviceInfo {
            id: "0123456789abcdef".into(),
            name: "laptop".into(),
            first_seen: UnixSecs(secs - 40 * 86_400),
            last_seen: UnixSecs(secs - 60),
            revoked_at: None,
            this_device: true,
        },
        DeviceInfo {
            id: "89abcdef01234567".into(),
            name: "phone".into(),
            first_seen: UnixSecs(secs - 10 * 86_400),
            last_seen: UnixSecs(secs - 3_600),
            revoked_at: None,
            this_device: false,
        },
        DeviceInfo {
            id: "fedcba9876543210".into(),
            name: "old-desktop".into(),
            first_seen: UnixSecs(secs - 400 * 86_400),
            last_seen: UnixSecs(secs - 200 * 86_400),
            revoked_at: Some(UnixSecs(secs - 100 * 86_400)),
            this_device: false,
        },
    ])
}

/// D asks the node for the account's devices and shows them: this one
/// and revoked ones marked.
#[test]
fn devices_window() {
    let mut app = logged_in();
    key(&mut app, KeyCode::Char('D'));
    assert_eq!(app.take_commands(), vec![Command::Devices]);
    assert!(app.devices_open());
    assert_snapshot!("devices_asking", draw(&app, 100, 30));
    app.handle_event(devices_list());
    assert_snapshot!("devices_window", draw(&app, 100, 30));
    // The help names the key.
    key(&mut app, KeyCode::Esc);
    assert!(!app.devices_open());
    key(&mut app, KeyCode::Char('?'));
    let help = draw(&app, 100, 60);
    assert!(
        help.contains("your devices: see where you are logged in"),
        "{help}"
    );
}

/// r on a device asks for the password (masked), then y/n; yes sends the
/// revocation, and its answer refreshes the list and shows in the status
/// line; a refusal shows there too.
#[test]
fn revoking_a_device_asks_the_password_then_confirms() {
    let mut app = logged_in();
    key(&mut app, KeyCode::Char('D'));
    app.handle_event(devices_list());
    app.take_commands();
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Char('r'));
    typed(&mut app, "s3cret pass");
    let screen = draw(&app, 100, 30);
    assert!(screen.contains("Revoke phone"), "{screen}");
    assert!(screen.contains("***********"), "{screen}");
    assert!(!screen.contains("s3cret"), "{screen}");
    assert_snapshot!("devices_revoke_password", screen);
    key(&mut app, KeyCode::Enter);
    assert!(app.take_commands().is_empty(), "nothing before the answer");
    assert_eq!(
        app.confirming(),
        Some("Revoke phone (89abcdef01234567)? It can no longer log in or reach the network.")
    );
    key(&mut app, KeyCode::Char('y'));
    assert_eq!(
        app.take_commands(),
        vec![Command::RevokeDevice {
            device: "89abcdef01234567".into(),
            password: "s3cret pass".into()
        }]
    );
    assert!(app.devices_open());
    app.handle_event(Event::DeviceRevoked {
        device: "89abcdef01234567".into(),
        message: "device phone revoked".into(),
    });
    assert_eq!(app.take_commands(), vec![Command::Devices]);
    assert!(draw(&app, 100, 30).contains("device phone revoked"));
    // A wrong password: the status line says so.
    app.handle_event(Event::Error {
        command: "revoke device".into(),
        reason: ErrorReason::Account(crate::node::api::AccountRefusal::WrongPassword),
        message: "invalid username or password".into(),
    });
    assert!(draw(&app, 100, 30).contains("revoke device: invalid username or password"));
    // A revoked device cannot be revoked again; n drops the question.
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Char('r'));
    assert!(!draw(&app, 100, 30).contains("Your account's password"));
    // This device: allowed (as `natter devices revoke` allows it), with
    // a warning in the question.
    key(&mut app, KeyCode::Home);
    key(&mut app, KeyCode::Up);
    key(&mut app, KeyCode::Up);
    key(&mut app, KeyCode::Char('r'));
    typed(&mut app, "pw");
    key(&mut app, KeyCode::Enter);
    assert!(
        app.confirming()
            .is_some_and(|q| q.contains("is THIS device")),
        "{:?}",
        app.confirming()
    );
    key(&mut app, KeyCode::Char('n'));
    assert!(app.take_commands().is_empty());
    // Esc in the prompt cancels without a question.
    key(&mut app, KeyCode::Char('r'));
    typed(&mut app, "pw");
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.confirming(), None);
    assert!(app.devices_open());
}

/// Issue 17: a notice says when another device of ours has a call, and T
/// takes it here (not while a call is up on this one).
#[test]
fn take_key_moves_the_call_from_another_device() {
    let mut app = logged_in();
    app.handle_event(Event::CallElsewhere {
        call: 5,
        peer: "bob".into(),
        device: "desk".into(),
        on: true,
    });
    assert!(
        app.model
            .notices
            .iter()
            .any(|n| n.text == "a call with bob is on desk"),
        "{:?}",
        app.model.notices
    );
    key(&mut app, KeyCode::Char('T'));
    assert_eq!(app.take_commands(), vec![Command::TakeCall]);
    key(&mut app, KeyCode::Char('?'));
    let help = draw(&app, 100, 60);
    assert!(
        help.contains("take the call on your other device"),
        "{help}"
    );
}
