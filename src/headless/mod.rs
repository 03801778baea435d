//! `natter --headless`: a front end for scripts over the node API, like
//! the TUI. Lines on stdin become [`Command`]s ([`parse`]); the client
//! runtime's [`Event`]s become lines or JSON objects on stdout
//! ([`render`]). The driver here logs in (a password from stdin when the
//! data dir holds no certificate), sends what the flags ask for once
//! online, and aims call verbs at the current call.

mod metrics;
mod parse;
mod render;
mod setup;

pub use setup::{CallFlags, Headless};

use anyhow::{Result, bail};
use natter::clock::{Clock, SystemClock};
use natter::config::Config;
use natter::node::api::{CallId, CallInfo, CallState, Command, Event, LoginState, OverlayEvent};
use natter::node::client::{self, ClientHandle};
use parse::{CallVerb, Input};
use render::Rendered;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub async fn run(config: &Config, data_dir: &Path, h: Headless) -> Result<()> {
    let settings = setup::settings(config, data_dir, &h).await?;
    // First of all: the schema scripts are reading.
    print(h.json, Some(render::hello()));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let counters = match config.metrics.listen {
        Some(addr) => Some(metrics::serve(addr).await?),
        None => None,
    };
    let mut rt = client::spawn(settings, clock);
    let (password, mut lines) = stdin_lines(h.password_stdin).await?;
    let mut s = Session::new(h, password);
    // Polled once only: a finished future must not be polled again.
    let mut stop = Box::pin(crate::shutdown_signal());
    let mut stopping = false;
    loop {
        let hangup = s.hangup_at.map(|(t, _)| t);
        tokio::select! {
            _ = &mut stop, if !stopping => {
                stopping = true;
                s.send(&rt, Command::Quit).await;
            }
            _ = sleep_until(hangup), if hangup.is_some() => s.hang_up_now(&rt).await,
            Some(line) = lines.recv() => s.line(&rt, &line).await,
            ev = rt.events.recv() => match ev {
                None | Some(Event::Stopped) => break,
                Some(e) => {
                    if let Some(c) = &counters {
                        c.lock().unwrap_or_else(|p| p.into_inner()).observe(&e);
                    }
                    s.event(&rt, e).await?
                }
            },
        }
    }
    let _ = (&mut rt.task).await;
    s.outcome()
}

/// Standard input, a line at a time, through one reader: with
/// `--password-stdin` the first line is the password and the lines after
/// it are commands, as without it.
async fn stdin_lines(password_stdin: bool) -> Result<(Option<String>, mpsc::Receiver<String>)> {
    let (tx, mut rx) = mpsc::channel::<String>(64);
    tokio::spawn(async move {
        let mut r = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(l)) = r.next_line().await {
            if tx.send(l).await.is_err() {
                break;
            }
        }
    });
    if !password_stdin {
        return Ok((None, rx));
    }
    match rx.recv().await {
        Some(line) if !line.is_empty() => Ok((Some(line), rx)),
        _ => bail!("--password-stdin: no password on the first line of standard input"),
    }
}

/// An event on stdout: its JSON object with `--json`, else its line
/// (events with no JSON object are for people only).
fn print(json: bool, r: Option<Rendered>) {
    use std::io::Write;
    let Some(r) = r else { return };
    if json && r.json.is_null() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = if json {
        writeln!(out, "{}", r.json)
    } else {
        writeln!(out, "{}", r.line)
    };
    let _ = out.flush();
}

async fn sleep_until(t: Option<Instant>) {
    tokio::time::sleep_until(t.unwrap_or_else(Instant::now)).await
}

/// What the driver keeps: the flags still to act on, the calls it has
/// seen (for call verbs and `--call`), and how the scripted call went.
struct Session {
    h: Headless,
    password: Option<String>,
    logged_in: bool,
    online: bool,
    calls: HashMap<CallId, CallInfo>,
    /// The call the call verbs act on: the newest one not ended.
    current: Option<CallId>,
    /// The call `--call` placed.
    ours: Option<CallId>,
    hangup_at: Option<(Instant, CallId)>,
    connected: bool,
    /// Our call ended after media flowed: stop once its final report (a
    /// complete recording) is out.
    stop_after_final: Option<CallId>,
    ended: Option<String>,
    /// Commands read from stdin before we were online, sent once we are
    /// (a script may type them while login and attachment go on).
    early: Vec<Command>,
    /// `revoke-device DEVICE` was typed: the next line is the password.
    revoke: Option<String>,
}

impl Session {
    fn new(h: Headless, password: Option<String>) -> Self {
        Session {
            h,
            password,
            logged_in: false,
            online: false,
            calls: HashMap::new(),
            current: None,
            ours: None,
            hangup_at: None,
            connected: false,
            stop_after_final: None,
            ended: None,
            early: Vec::new(),
            revoke: None,
        }
    }

    async fn send(&self, rt: &ClientHandle, c: Command) {
        let _ = rt.commands.send(c).await;
    }

    fn print(&self, r: Option<Rendered>) {
        print(self.h.json, r)
    }

    async fn line(&mut self, rt: &ClientHandle, line: &str) {
        self.send(rt, Command::Activity).await;
        // The password `revoke-device` asked for: the line as it is.
        if let Some(device) = self.revoke.take() {
            let password = line.to_owned();
            return self
                .command(rt, Command::RevokeDevice { device, password })
                .await;
        }
        // The verb typed: errors name it.
        let word = line.split_whitespace().next().unwrap_or_default();
        let word = parse::find(word).map_or(word, |v| v.word);
        match parse::parse(line) {
            Ok(Input::Renamed { command, old, new }) => {
                self.print(render::renamed(word, old, new));
                self.command(rt, command).await
            }
            Ok(Input::Command(c)) => self.command(rt, c).await,
            Ok(Input::Call(verb)) => self.call_verb(rt, word, verb).await,
            Ok(Input::RevokeDevice { device }) => {
                self.print(render::password_wanted(word, &device));
                self.revoke = Some(device);
            }
            Ok(Input::Help) => self.print(render::help()),
            Ok(Input::Nothing) => {}
            Err(e) => self.print(render::error(word, e.code(), &e.to_string())),
        }
    }

    /// A command from stdin: sent now, or once online.
    async fn command(&mut self, rt: &ClientHandle, c: Command) {
        if !self.online && c != Command::Quit {
            self.early.push(c)
        } else {
            self.send(rt, c).await
        }
    }

    async fn call_verb(&mut self, rt: &ClientHandle, word: &str, verb: CallVerb) {
        let Some(info) = self.current.and_then(|id| self.calls.get(&id)) else {
            return self.print(render::error(word, "no_call", "no call"));
        };
        let call = info.id;
        let c = match verb {
            CallVerb::Answer => Command::AcceptCall { call },
            CallVerb::Decline => Command::DeclineCall { call },
            CallVerb::HangUp => Command::HangUp { call },
            CallVerb::Mute(on) => Command::Mute {
                call,
                muted: on.unwrap_or(!info.muted),
            },
            CallVerb::Hold(on) => Command::Hold {
                call,
                held: on.unwrap_or(!info.held),
            },
        };
        self.send(rt, c).await
    }

    async fn hang_up_now(&mut self, rt: &ClientHandle) {
        if let Some((_, call)) = self.hangup_at.take() {
            self.send(rt, Command::HangUp { call }).await
        }
    }

    async fn event(&mut self, rt: &ClientHandle, e: Event) -> Result<()> {
        if let Event::Login(LoginState::NeedCredentials { error, .. }) = &e {
            return self.log_in(rt, error.as_deref()).await;
        }
        match &e {
            Event::Call(info) => self.call(rt, info.clone()).await,
            Event::CallStats { call, stats } => {
                self.print(render::call_stats(*call, stats));
                if stats.last && self.stop_after_final == Some(*call) {
                    self.send(rt, Command::Quit).await;
                }
            }
            Event::CallRemote { call, change } => {
                let peer = self.calls.get(call).map(|c| c.peer.clone());
                let peer = peer.unwrap_or_default();
                self.print(render::call_remote(*call, &peer, *change));
            }
            _ => {
                self.print(render::event(&e));
                self.after(rt, &e).await;
            }
        }
        Ok(())
    }

    /// What the flags ask for after an event: the initial status once
    /// logged in, the rest once online, stopping after `--lookup`.
    async fn after(&mut self, rt: &ClientHandle, e: &Event) {
        match e {
            Event::Login(LoginState::LoggedIn { .. }) if !self.logged_in => {
                self.logged_in = true;
                if let Some(status) = self.h.status {
                    let message = String::new();
                    self.send(rt, Command::SetStatus { status, message }).await;
                }
            }
            Event::Overlay(OverlayEvent::Published { .. }) if !self.online => {
                self.online = true;
                self.once_online(rt).await;
            }
            Event::Lookup { username, .. }
                if (self.h.lookup.as_deref()).is_some_and(|l| l.eq_ignore_ascii_case(username)) =>
            {
                self.send(rt, Command::Quit).await
            }
            _ => {}
        }
    }

    /// No usable certificate: log in with the password, once.
    async fn log_in(&mut self, rt: &ClientHandle, error: Option<&str>) -> Result<()> {
        if let Some(e) = error {
            bail!("{e}");
        }
        let Some(password) = self.password.take() else {
            bail!(
                "no valid certificate{} on this device: run `natter login USER` first (or pass --password-stdin)",
                self.h
                    .user
                    .as_ref()
                    .map(|u| format!(" for {u}"))
                    .unwrap_or_default()
            );
        };
        let Some(username) = self.h.user.clone() else {
            bail!("--user NAME is needed to log in");
        };
        self.send(rt, Command::Login { username, password }).await;
        Ok(())
    }

    /// Our record is in the directory: what the flags asked for.
    async fn once_online(&mut self, rt: &ClientHandle) {
        let h = &self.h;
        let mut todo: Vec<Command> = (h.add.iter())
            .map(|u| Command::AddContact {
                username: u.clone(),
                greeting: String::new(),
            })
            .chain(h.msg.iter().map(|(to, text)| Command::SendMessage {
                to: to.clone(),
                text: text.clone(),
            }))
            .collect();
        if let Some(u) = &h.lookup {
            todo.push(Command::SearchUser {
                username: u.clone(),
            });
        }
        if let Some(u) = &h.connect {
            todo.push(Command::Connect {
                username: u.clone(),
            });
        }
        if let Some(u) = &h.calls.call {
            todo.push(Command::Call {
                username: u.clone(),
            });
        }
        todo.append(&mut self.early);
        for c in todo {
            self.send(rt, c).await;
        }
    }

    /// A call changed: print its new state, follow `--call` and
    /// `--hangup-after`.
    async fn call(&mut self, rt: &ClientHandle, info: CallInfo) {
        let before = self.calls.insert(info.id, info.clone());
        // Our mute and hold, once the node applied them.
        if let Some(b) = &before {
            if b.muted != info.muted {
                self.print(render::call_muted(&info));
            }
            if b.held != info.held {
                self.print(render::call_held(&info));
            }
        }
        if before.is_some_and(|b| b.state == info.state) {
            return;
        }
        self.print(render::call_state(&info));
        let target = self.h.calls.call.as_deref();
        match &info.state {
            CallState::Dialing | CallState::Incoming => {
                self.current = Some(info.id);
                let mine = target.is_some_and(|t| t.eq_ignore_ascii_case(&info.peer));
                if info.outgoing && mine && self.ours.is_none() {
                    self.ours = Some(info.id);
                }
            }
            CallState::Active => {
                // (A call that took over another one is current from now.)
                self.current = Some(info.id);
                self.connected |= self.ours == Some(info.id);
                if let Some(d) = self.h.calls.hangup_after {
                    self.hangup_at = Some((Instant::now() + d, info.id));
                }
            }
            CallState::Ended { reason, detail } => {
                self.calls.remove(&info.id);
                if self.current == Some(info.id) {
                    self.current = None;
                }
                if self.hangup_at.is_some_and(|(_, c)| c == info.id) {
                    self.hangup_at = None;
                }
                if self.ours == Some(info.id) {
                    self.ended = Some(CallState::end_text(reason, detail));
                    if self.connected {
                        self.stop_after_final = Some(info.id);
                    } else {
                        self.send(rt, Command::Quit).await;
                    }
                }
            }
            CallState::Ringing | CallState::Connecting => {}
        }
    }

    /// How the run ends: an error when the `--call` call never connected.
    fn outcome(&self) -> Result<()> {
        if let Some(peer) = &self.h.calls.call
            && !self.connected
        {
            bail!(
                "the call to {peer} did not connect: {}",
                self.ended.as_deref().unwrap_or("natter stopped first")
            );
        }
        Ok(())
    }
}
