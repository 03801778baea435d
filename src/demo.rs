//! `natter demo`: the embedded default network, needing no config and no
//! sound card. On loopback, in this process, it starts a login authority,
//! two supernodes, an echo contact (`echo123`), a talking contact
//! (`carol`) and a chat bot (`bot`), logs the local user (`you`) in and
//! opens the softphone.
//!
//! The contacts are client runtimes driven through the node API like the
//! TUI: they answer chat and accept contact requests; echo123 answers
//! every call and conference and plays back what it hears (like
//! `--headless --echo`), carol answers them too and talks (a tone), so a
//! conference with both is a three-party call; the bot declines calls.
//! Without a sound card the local user's calls use the tone generator and
//! the null device, and the screen says so.

use anyhow::{Context, Result, bail};
use natter::authority::{AuthorityServer, Policy, Store};
use natter::call::CallConfig;
use natter::clock::{Clock, SystemClock};
use natter::conference::{ConfEvent, LeftReason};
use natter::config::{Config, HostPort};
use natter::identity::{AuthorityKey, Role, Username};
use natter::media::MediaConfig;
use natter::media::audio::DeviceSpec;
use natter::node::api::{
    CallState, Command, ConferenceUpdate, ContactState, Event, LoginState, MessageState,
};
use natter::node::calls::CallOptions;
use natter::node::client::{self, ClientHandle, ClientSettings};
use natter::node::driver::OverlayNode;
use natter::node::{AuthorityConnection, DeviceFiles};
use natter::overlay::{ClientConfig, Status};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PASSWORD: &str = "demo-password";

/// A new file (or directory) in the temp dir named `natter-demo-PID` plus
/// `ext`, private to us (0600, or 0700 for a directory). It is created,
/// never opened: a name someone else made first (a symlink planted in
/// /tmp, say) is skipped for one with a random suffix.
fn create_private(ext: &str, dir: bool) -> Result<(PathBuf, Option<std::fs::File>)> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let pid = std::process::id();
    for attempt in 0..16 {
        let name = match attempt {
            0 => format!("natter-demo-{pid}{ext}"),
            _ => format!("natter-demo-{pid}-{:08x}{ext}", rand::random::<u32>()),
        };
        let path = std::env::temp_dir().join(name);
        let made = if dir {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&path)
                .map(|()| None)
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map(Some)
        };
        match made {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }
    bail!("could not create a private natter-demo{ext} in the temp dir")
}

/// The demo's log: outside its data dir, so it survives the exit; new and
/// private to us. Both `demo` and `demo --once` log there.
pub fn create_log() -> Result<(PathBuf, std::fs::File)> {
    let (path, file) = create_private(".log", false)?;
    Ok((path, file.context("the log file")?))
}

struct Network {
    dir: PathBuf,
    authority: HostPort,
    key: [u8; 32],
    supernodes: Vec<SocketAddr>,
    /// Keep the supernodes' tasks (and sockets) alive.
    _nodes: Vec<OverlayNode>,
}

impl Network {
    fn settings(&self, user: &str, contacts: &[&str]) -> ClientSettings {
        let (media, call) = (MediaConfig::default(), CallConfig::default());
        let calls = if user == "echo123" {
            CallOptions::echo(DeviceSpec::Null, media, call)
        } else if user == "carol" {
            // Talks (a tone, C5) and hears nothing: answers everything.
            CallOptions {
                input: DeviceSpec::Tone { hz: CAROL_HZ },
                output: DeviceSpec::Null,
                media,
                call,
                auto_answer: true,
                ringback: false,
                ringtone: false,
            }
        } else {
            // The runtime swaps in tone and null without a sound card.
            CallOptions {
                input: DeviceSpec::Default,
                output: DeviceSpec::Default,
                media,
                call,
                auto_answer: false,
                // Only the demo's user hears rings; the bots' would sound
                // on the same speakers.
                ringback: !contacts.is_empty(),
                ringtone: !contacts.is_empty(),
            }
        };
        ClientSettings {
            data_dir: self.dir.join(user),
            authority: self.authority.clone().into(),
            authority_key: self.key,
            bootstrap: self.supernodes.clone(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            overlay: ClientConfig::default(),
            renew_before_secs: 4 * 3600,
            contacts: contacts.iter().map(|c| c.to_string()).collect(),
            // The bots never go away; the user does after 5 idle minutes.
            away_after_ms: if contacts.is_empty() { 0 } else { 300_000 },
            public_presence: false,
            paths: Default::default(),
            calls: Some(calls),
            user: None,
            nat: Some(Default::default()),
            watch: Vec::new(),
            files: Default::default(),
            volunteer: None,
        }
    }
}

/// Authority and two supernodes on loopback.
async fn start_network(dir: &Path) -> Result<Network> {
    let key = AuthorityKey::generate(&mut rand::rngs::OsRng);
    let db = dir.join("authority/authority.db");
    let store = Store::open(&db)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut policy = Policy::default();
    // Everyone registers from 127.0.0.1 here.
    policy.throttle.registrations_per_hour = 0;
    let server = AuthorityServer::bind(
        "127.0.0.1:0".parse()?,
        key.clone(),
        store,
        policy,
        clock.clone(),
        256,
    )
    .await?;
    let authority = HostPort {
        host: "127.0.0.1".into(),
        port: server.local_addr().port(),
    };
    let public = key.public();
    tokio::spawn(server.run(std::future::pending()));

    // Supernode accounts get their role straight in the database (the
    // authority keeps it open too: SQLite in WAL mode allows that).
    let admin = Store::open(&db)?;
    let config = Config::default();
    let account = |name: &'static str| {
        let (authority, clock, admin) = (&authority, clock.clone(), &admin);
        async move {
            let files = DeviceFiles::new(&dir.join(name));
            let (device, _) = files.identity()?;
            let mut c =
                AuthorityConnection::connect(authority, public, &device, clock.clone()).await?;
            c.register(name, PASSWORD).await?;
            admin.set_role(&Username::parse(name)?, Role::Supernode)?;
            let mut c = AuthorityConnection::connect(authority, public, &device, clock).await?;
            let cert = c.login(name, PASSWORD).await?;
            Ok::<_, anyhow::Error>((name, device, cert))
        }
    };
    let accounts = tokio::try_join!(account("sn1"), account("sn2"))?;
    let mut supernodes = Vec::new();
    let mut nodes = Vec::new();
    for (name, device, cert) in [accounts.0, accounts.1] {
        let (node, addr, _) = crate::supernode::start(
            &config,
            &device,
            &cert,
            public,
            "127.0.0.1:0".parse()?,
            supernodes.clone(),
            None,
        )
        .await?;
        tracing::info!(%addr, "demo supernode {name}");
        supernodes.push(addr);
        nodes.push(node);
    }
    Ok(Network {
        dir: dir.to_owned(),
        authority,
        key: public,
        supernodes,
        _nodes: nodes,
    })
}

/// Register and log `user` in; wait until logged in.
async fn log_in(c: &mut ClientHandle, user: &str) -> Result<()> {
    c.commands
        .send(Command::Register {
            username: user.into(),
            password: PASSWORD.into(),
        })
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ev = tokio::time::timeout_at(deadline, c.events.recv())
            .await
            .with_context(|| format!("{user} did not log in within 20 s"))?;
        match ev {
            Some(Event::Login(LoginState::LoggedIn { .. })) => return Ok(()),
            Some(Event::Login(LoginState::NeedCredentials { error: Some(e), .. })) => {
                bail!("{user} could not log in: {e}")
            }
            Some(_) => {}
            None => bail!("{user}'s runtime stopped"),
        }
    }
}

/// What carol says into calls: a tone (C5), Hz.
const CAROL_HZ: f32 = 523.25;

/// What a demo contact says back.
fn reply(user: &str, text: &str) -> String {
    match user {
        "echo123" => text.to_owned(),
        "carol" => "I talk on calls: call me, or start a conference with echo123 and me \
                    (space marks each of us, C starts it)."
            .into(),
        _ => match text.trim().to_ascii_lowercase().as_str() {
            "help" | "?" => "Say anything and I answer. Try: time, help.".into(),
            "time" => {
                let now = SystemClock.unix_secs().get();
                format!("It is {} UTC.", natter::identity::cert::fmt_time(now))
            }
            "hi" | "hello" | "hey" => "Hello! I am the demo chat bot.".into(),
            _ => format!(
                "You said \"{}\" ({} characters).",
                text.trim(),
                text.chars().count()
            ),
        },
    }
}

/// A demo contact: logs in, sets its status, then answers.
async fn start_contact(net: &Network, user: &'static str, message: &str) -> Result<()> {
    let mut c = client::spawn(net.settings(user, &[]), Arc::new(SystemClock));
    log_in(&mut c, user).await?;
    c.commands
        .send(Command::SetStatus {
            status: Status::Online,
            message: message.into(),
        })
        .await?;
    tokio::spawn(async move {
        let ClientHandle {
            commands,
            mut events,
            task: _task,
        } = c;
        while let Some(e) = events.recv().await {
            let answer =
                match e {
                    Event::Message(m) if m.state == MessageState::Received => {
                        Command::SendMessage {
                            to: m.peer,
                            text: reply(user, &m.text),
                        }
                    }
                    Event::ContactRequest { from, .. } => Command::AcceptContact { username: from },
                    Event::Contact {
                        username,
                        state: ContactState::Pending,
                    } => Command::AcceptContact { username },
                    // echo123 answers by itself (auto-answer); the bot is no
                    // one to talk to.
                    Event::Call(call) if user == "bot" && call.state == CallState::Incoming => {
                        Command::DeclineCall { call: call.id }
                    }
                    // The contacts are there for the user: a conference they
                    // left (or lost) is over for them too, so that they do not
                    // talk on to each other (and stay busy).
                    Event::Conference(ConferenceUpdate::Changed(ConfEvent::Left {
                        name, ..
                    })) if name == "you" => Command::ConferenceLeave,
                    Event::Conference(ConferenceUpdate::Changed(ConfEvent::Incoming {
                        ..
                    })) if user == "bot" => Command::ConferenceLeave,
                    Event::Error {
                        command, message, ..
                    } => {
                        tracing::info!("demo contact {user}: {command}: {message}");
                        continue;
                    }
                    Event::Stopped => break,
                    _ => continue,
                };
            if commands.send(answer).await.is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// Run the demo; `log` is where [`create_log`] put its log.
pub async fn run(once: bool, keys: natter::ui::KeyMap, started: Instant, log: &Path) -> Result<()> {
    let (dir, _) = create_private("", true)?;
    let r = run_in(&dir, once, keys, started, log).await;
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// The whole demo network, with `you` registered and logged in (so the
/// runtime starts online) and `you`'s runtime started.
async fn bring_up(dir: &Path, started: Instant) -> Result<(Network, ClientHandle)> {
    let net = start_network(dir).await?;
    let register_you = async {
        let files = DeviceFiles::new(&dir.join("you"));
        let (device, _) = files.identity()?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let mut c =
            AuthorityConnection::connect(&net.authority, net.key, &device, clock.clone()).await?;
        c.register("you", PASSWORD).await?;
        let mut c = AuthorityConnection::connect(&net.authority, net.key, &device, clock).await?;
        files.save_certificate(&c.login("you", PASSWORD).await?)?;
        Ok::<_, anyhow::Error>(())
    };
    tokio::try_join!(
        start_contact(&net, "echo123", "echo test: call me, or say something"),
        start_contact(
            &net,
            "carol",
            "talks: call me, or a conference with echo123"
        ),
        start_contact(&net, "bot", "chat bot: say hi"),
        register_you,
    )?;
    tracing::info!(ms = started.elapsed().as_millis() as u64, "demo network up");
    let you = client::spawn(
        net.settings("you", &["echo123", "carol", "bot"]),
        Arc::new(SystemClock),
    );
    Ok((net, you))
}

/// Open the TUI at once and bring the network up behind it: the screen
/// shows the login in progress meanwhile.
async fn run_tui(dir: &Path, keys: natter::ui::KeyMap, started: Instant, log: &Path) -> Result<()> {
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::channel::<Command>(64);
    let (ev_tx, ev_rx) = tokio::sync::mpsc::channel::<Event>(1024);
    let dir = dir.to_owned();
    let bridge = tokio::spawn(async move {
        let _ = ev_tx.send(Event::Audio(client::audio_status())).await;
        let _ = ev_tx
            .send(Event::Login(LoginState::LoggingIn {
                username: "you".into(),
            }))
            .await;
        let (_net, mut you) = match bring_up(&dir, started).await {
            Ok(x) => x,
            Err(e) => {
                let _ = ev_tx
                    .send(Event::Login(LoginState::NeedCredentials {
                        username: Some("you".into()),
                        error: Some(format!("the demo network did not start: {e:#}")),
                    }))
                    .await;
                while let Some(c) = cmd_rx.recv().await {
                    if c == Command::Quit {
                        break;
                    }
                }
                let _ = ev_tx.send(Event::Stopped).await;
                return;
            }
        };
        loop {
            tokio::select! {
                c = cmd_rx.recv() => {
                    let c = c.unwrap_or(Command::Quit);
                    if you.commands.send(c).await.is_err() {
                        break;
                    }
                }
                e = you.events.recv() => {
                    let Some(e) = e else { break };
                    let stopped = e == Event::Stopped;
                    let _ = ev_tx.send(e).await;
                    if stopped {
                        break;
                    }
                }
            }
        }
    });
    let app = natter::ui::App::new(keys);
    let r = natter::ui::terminal::run(app, cmd_tx, ev_rx, Some(log), started).await;
    bridge.abort();
    r?;
    println!("natter demo stopped (log: {})", log.display());
    Ok(())
}

async fn run_in(
    dir: &Path,
    once: bool,
    keys: natter::ui::KeyMap,
    started: Instant,
    log: &Path,
) -> Result<()> {
    if !once {
        return run_tui(dir, keys, started, log).await;
    }
    let (net, mut you) = bring_up(dir, started).await?;
    println!(
        "natter demo: authority on {}, supernodes on {:?}",
        net.authority, net.supernodes
    );
    // --once: check what the TUI would show, then stop.
    let mut online = std::collections::BTreeSet::new();
    let mut seen = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while online.len() < 3 {
        let ev = tokio::time::timeout_at(deadline, you.events.recv())
            .await
            .context("the demo contacts did not come online within 30 s")?;
        match ev {
            Some(Event::Login(LoginState::LoggedIn { username, .. })) => {
                println!("  logged in as {username}")
            }
            Some(Event::Login(LoginState::NeedCredentials { error: Some(e), .. })) => {
                bail!("logging in failed: {e}")
            }
            Some(Event::Supernodes { attached }) => {
                // The whole list comes each time: print each one once.
                for a in attached {
                    if !seen.insert(a.addr) {
                        continue;
                    }
                    println!(
                        "  attached to {} ({})",
                        a.addr,
                        if a.primary { "primary" } else { "backup" }
                    );
                }
            }
            Some(Event::Audio(a)) => {
                println!("  audio: in {}, out {}", a.input, a.output);
                if let Some(n) = a.fallback {
                    println!("  {n}");
                }
            }
            Some(Event::Presence(p)) if p.status != Status::Offline => {
                if online.insert(p.username.clone()) {
                    println!("  {} is online: {}", p.username, p.message);
                }
            }
            Some(_) => {}
            None => bail!("the runtime stopped"),
        }
    }
    // A chat with each contact: the message round trip (sent to their
    // answer received) and the end-to-end acknowledgement.
    for (peer, text) in [("bot", "hi"), ("echo123", "ping")] {
        chat_round_trip(&mut you, peer, text).await?;
    }
    call_echo(&mut you).await?;
    conference(&mut you).await?;
    you.commands.send(Command::Quit).await?;
    while let Some(e) = you.events.recv().await {
        if e == Event::Stopped {
            break;
        }
    }
    println!("natter demo: ready in {} ms", started.elapsed().as_millis());
    println!("natter demo: log in {}", log.display());
    Ok(())
}

/// Send `text` to `peer` and wait for its acknowledgement and an answer;
/// print how long each took.
async fn chat_round_trip(you: &mut ClientHandle, peer: &str, text: &str) -> Result<()> {
    let sent = Instant::now();
    you.commands
        .send(Command::SendMessage {
            to: peer.into(),
            text: text.into(),
        })
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut id = None;
    let (mut acked, mut answer) = (None, None);
    while acked.is_none() || answer.is_none() {
        let ev = tokio::time::timeout_at(deadline, you.events.recv())
            .await
            .with_context(|| format!("{peer} did not answer within 20 s"))?;
        match ev {
            Some(Event::Message(m)) if m.peer == peer && m.outgoing && m.text == text => {
                id = Some(m.id)
            }
            Some(Event::MessageState {
                peer: p,
                id: i,
                state: MessageState::Delivered,
            }) if p == peer && Some(i) == id => acked = Some(sent.elapsed()),
            Some(Event::Message(m))
                if m.peer == peer && m.state == MessageState::Received && answer.is_none() =>
            {
                answer = Some((sent.elapsed(), m.text))
            }
            Some(Event::Error {
                command, message, ..
            }) => bail!("{command}: {message}"),
            Some(_) => {}
            None => bail!("the runtime stopped"),
        }
    }
    let (rtt, reply) = answer.unwrap();
    println!(
        "  {peer} answered \"{reply}\" in {} ms (acknowledged in {} ms)",
        rtt.as_millis(),
        acked.unwrap().as_millis()
    );
    Ok(())
}

/// A conference with carol and echo123: both join, carol is heard (her
/// level at the mixer, us), then we leave; prints how long each took.
async fn conference(you: &mut ClientHandle) -> Result<()> {
    let started = Instant::now();
    you.commands
        .send(Command::ConferenceStart {
            users: vec!["carol".into(), "echo123".into()],
        })
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut joined = std::collections::BTreeMap::new();
    let mut busy = 0;
    let heard = loop {
        let ev = tokio::time::timeout_at(deadline, you.events.recv())
            .await
            .context("the conference with carol and echo123 did not carry carol within 20 s")?;
        match ev {
            Some(Event::Conference(ConferenceUpdate::Changed(e))) => match e {
                ConfEvent::Joined { name, .. } => {
                    joined.insert(name, started.elapsed());
                }
                // echo123 may still be ending the call before: ask again.
                ConfEvent::Left {
                    name,
                    reason: LeftReason::Busy,
                    ..
                } if busy < 5 => {
                    busy += 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    you.commands
                        .send(Command::ConferenceAdd { username: name })
                        .await?;
                }
                ConfEvent::Left { name, reason, .. } => {
                    bail!("{name} left the conference ({})", reason.code())
                }
                ConfEvent::Ended { reason, .. } => {
                    bail!("the conference ended ({})", reason.code())
                }
                ConfEvent::Levels { levels, .. }
                    if levels.iter().any(|(n, l)| {
                        n == "carol" && *l >= natter::ui::model::conference::SPEAKING_LEVEL
                    }) =>
                {
                    break started.elapsed();
                }
                _ => {}
            },
            Some(Event::Error {
                command, message, ..
            }) => bail!("{command}: {message}"),
            Some(_) => {}
            None => bail!("the runtime stopped"),
        }
    };
    let ms = |u: &str| joined.get(u).map_or(0, |d| d.as_millis());
    println!(
        "  conference with carol and echo123: they joined after {} and {} ms, carol heard after {} ms",
        ms("carol"),
        ms("echo123"),
        heard.as_millis()
    );
    you.commands.send(Command::ConferenceLeave).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ev = tokio::time::timeout_at(deadline, you.events.recv())
            .await
            .context("the conference did not end within 20 s")?;
        match ev {
            Some(Event::Conference(ConferenceUpdate::Changed(ConfEvent::Ended { .. }))) => break,
            Some(_) => {}
            None => bail!("the runtime stopped"),
        }
    }
    Ok(())
}

/// Call echo123, wait until the call is active, its echo comes back and
/// the RTT is measured (the second report), hang up; print how long each
/// took.
async fn call_echo(you: &mut ClientHandle) -> Result<()> {
    let dialed = Instant::now();
    you.commands
        .send(Command::Call {
            username: "echo123".into(),
        })
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut id = None;
    let mut active = None;
    let mut echoed = None;
    let stats = loop {
        let ev = tokio::time::timeout_at(deadline, you.events.recv())
            .await
            .context("the call to echo123 did not carry audio within 20 s")?;
        match ev {
            Some(Event::Call(c)) if c.peer == "echo123" => {
                id = Some(c.id);
                match c.state {
                    CallState::Active => {
                        active.get_or_insert(dialed.elapsed());
                    }
                    CallState::Ended { reason, detail } => bail!(
                        "the call to echo123 ended: {}",
                        CallState::end_text(&reason, &detail)
                    ),
                    _ => {}
                }
            }
            Some(Event::CallStats { call, stats })
                if Some(call) == id && active.is_some() && stats.packets_received > 0 =>
            {
                echoed.get_or_insert(dialed.elapsed());
                if stats.rtt_ms.is_some() {
                    break stats;
                }
            }
            Some(Event::Error {
                command, message, ..
            }) => bail!("{command}: {message}"),
            Some(_) => {}
            None => bail!("the runtime stopped"),
        }
    };
    let id = id.unwrap_or_default();
    you.commands.send(Command::HangUp { call: id }).await?;
    loop {
        let ev = tokio::time::timeout_at(deadline, you.events.recv())
            .await
            .context("the call to echo123 did not end within 20 s")?;
        match ev {
            Some(Event::Call(c)) if c.id == id && matches!(c.state, CallState::Ended { .. }) => {
                break;
            }
            Some(_) => {}
            None => bail!("the runtime stopped"),
        }
    }
    println!(
        "  echo123 answered the call: active in {} ms, its echo reported after {} ms, \
         rtt {} ms ({} packets back)",
        active.unwrap_or_default().as_millis(),
        echoed.unwrap_or_default().as_millis(),
        stats.rtt_ms.unwrap_or_default(),
        stats.packets_received,
    );
    Ok(())
}
