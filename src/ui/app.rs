//! The App: owns the view model and the components, routes keys to the
//! component that has the focus, turns what they ask for into node
//! [`Command`]s, and lays the screen out for the terminal's size.

use super::components::buddies::{BuddyList, status_mark};
use super::components::call::{CallPanel, IncomingPrompt};
use super::components::chat::ChatPane;
use super::components::devices::DevicesWindow;
use super::components::files::{FilesWindow, PathFor, PathPrompt};
use super::components::group::{GroupDialog, PickFor};
use super::components::help::Help;
use super::components::login::LoginForm;
use super::components::nat::NatPanel;
use super::components::search::SearchBox;
use super::components::{Component, Ctx, Msg, TextInput, clock};
use super::keys::{Action, KeyMap};
use super::model::{Level, Model};
use crate::node::api::{
    CallState, Command, ContactState, Event, GroupCommand, GroupEntry, LoginState,
};
use crate::overlay::Status;
use crate::time::UnixMillis;
use ratatui::Frame;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use std::cell::Cell;
use std::collections::BTreeSet;

/// Below this size the full layout does not fit: one pane at a time.
const FULL_WIDTH: u16 = 72;
const FULL_HEIGHT: u16 = 22;
/// Below this size nothing useful fits.
const MIN_WIDTH: u16 = 24;
const MIN_HEIGHT: u16 = 6;
/// How long a notification stays in the footer.
const NOTICE_MS: u64 = 8_000;
/// The longest mood message (the presence record's limit).
const MAX_MOOD_BYTES: usize = 255;

/// A question on screen, waiting for y or n.
#[derive(Debug, Clone, PartialEq)]
enum Question {
    /// Block, remove, unblock and add: y or Enter sends the commands, any
    /// other key drops them.
    Commands(String, Vec<Command>),
    /// Quit during a call: y, Enter or the quit key again quits; n or Esc
    /// cancels (other keys are ignored, so a stray key keeps the call).
    Quit(String),
}

impl Question {
    fn text(&self) -> &str {
        match self {
            Question::Commands(q, _) | Question::Quit(q) => q,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Contacts,
    Chat,
}

pub struct App {
    pub model: Model,
    keys: KeyMap,
    focus: Focus,
    help: bool,
    login: LoginForm,
    buddies: BuddyList,
    chat: ChatPane,
    search: SearchBox,
    outbox: Vec<Command>,
    quit: bool,
    /// Conversations whose history was asked for.
    history_asked: BTreeSet<String>,
    /// A question on screen, waiting for y or n.
    confirm: Option<Question>,
    /// The mood message dialog, when open: the text being written.
    mood: Option<TextInput>,
    /// The transfers window.
    files: FilesWindow,
    /// Asking for the path of a file to send, when open.
    send_prompt: Option<PathPrompt>,
    /// The account's devices window.
    devices: DevicesWindow,
    /// A group dialog (new group, rename, invite, remove), when open.
    group_dialog: Option<GroupDialog>,
    /// Lines the help overlay is scrolled down (when it does not fit;
    /// clamped when drawn).
    help_scroll: Cell<u16>,
}

impl App {
    pub fn new(keys: KeyMap) -> Self {
        App {
            model: Model::default(),
            keys,
            focus: Focus::Contacts,
            help: false,
            login: LoginForm::new(),
            buddies: BuddyList::default(),
            chat: ChatPane::default(),
            search: SearchBox::default(),
            outbox: Vec::new(),
            quit: false,
            history_asked: BTreeSet::new(),
            confirm: None,
            mood: None,
            files: FilesWindow::default(),
            send_prompt: None,
            devices: DevicesWindow::default(),
            group_dialog: None,
            help_scroll: Cell::new(0),
        }
    }

    pub fn focus(&self) -> Focus {
        self.focus
    }

    /// Commands to send to the node, in order.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.outbox)
    }

    /// Whether to ring the terminal bell (once per request).
    pub fn take_bell(&mut self) -> bool {
        std::mem::take(&mut self.model.bell)
    }

    /// The user asked to quit (a [`Command::Quit`] is in the outbox).
    pub fn quitting(&self) -> bool {
        self.quit
    }

    /// Move the display clock on to the wall clock's `now` (dates and
    /// timers are drawn from it).
    pub fn tick(&mut self, now: UnixMillis) {
        self.model.now = now;
    }

    pub fn handle_event(&mut self, e: Event) {
        match &e {
            Event::Login(LoginState::NeedCredentials { username, .. }) => {
                self.login.suggest(username.as_deref())
            }
            Event::Login(LoginState::LoggingIn { username }) => self.login.suggest(Some(username)),
            _ => {}
        }
        if matches!(&e, Event::Login(LoginState::LoggedIn { .. })) && !self.model.logged_in() {
            self.send(Command::CallHistory { limit: 50 });
        }
        // A revoked device shows as revoked in the open window.
        if matches!(&e, Event::DeviceRevoked { .. }) && self.devices.open {
            self.send(Command::Devices);
        }
        let first_contact = matches!(&e, Event::Contact { .. }) && self.model.contacts.is_empty();
        // A message that arrives in the open chat is read as it shows.
        let read = match &e {
            Event::Message(m) if !m.outgoing && self.model.chat_open.as_ref() == Some(&m.peer) => {
                Some(m.peer.clone())
            }
            _ => None,
        };
        // History taken from another of our devices: a conversation
        // already loaded is loaded again (merged by id).
        if let Event::HistorySynced { with, .. } = &e
            && self.history_asked.contains(with)
        {
            self.send(Command::LoadHistory {
                with: with.clone(),
                before: None,
                limit: 200,
            });
        }
        self.model.apply(e);
        if let Some(with) = read {
            self.model.mark_read(&with);
            self.send(Command::MarkRead { with });
        }
        if first_contact {
            self.buddies = BuddyList::default();
        }
        // A group we left or were removed from closes.
        let gone = self.chat.peer.as_deref().and_then(|p| {
            let id = p.strip_prefix('#')?;
            let joined = self.model.groups.get(id).is_some_and(|g| g.entry.joined);
            (!joined).then(|| p.to_owned())
        });
        if let Some(peer) = gone {
            self.close_chat(&peer);
        }
    }

    fn send(&mut self, c: Command) {
        self.outbox.push(c);
    }

    fn msg(&mut self, m: Option<Msg>) {
        match m {
            Some(Msg::Send(c)) => self.send(c),
            Some(Msg::SendAll(cs)) => {
                if cs.len() > 1 {
                    self.model.notify(
                        Level::Info,
                        format!(
                            "long message sent as {} messages (at most {} bytes each)",
                            cs.len(),
                            crate::node::api::MAX_MESSAGE_BYTES
                        ),
                    );
                }
                self.outbox.extend(cs);
            }
            Some(Msg::Confirm { question, commands }) => {
                self.confirm = Some(Question::Commands(question, commands))
            }
            Some(Msg::Close) | None => {}
        }
    }

    /// The call that quitting would end (ringing or on), if any.
    fn live_call(&self) -> Option<&crate::node::api::CallInfo> {
        self.model
            .current_call()
            .filter(|c| !matches!(c.state, CallState::Ended { .. }))
    }

    /// Quit, asking first while a call is on.
    fn ask_quit(&mut self) {
        let question = self.live_call().map(|c| match c.state {
            CallState::Incoming => format!("{} is calling you. Quit and refuse the call?", c.peer),
            _ => format!("You are in a call with {}. Quit and hang up?", c.peer),
        });
        let question = question.or_else(|| {
            self.model.live_conference().map(|c| {
                format!(
                    "You are in a conference with {} others. Quit and leave it?",
                    c.participants.len().saturating_sub(1)
                )
            })
        });
        match question {
            Some(q) => self.confirm = Some(Question::Quit(q)),
            None => self.do_quit(),
        }
    }

    fn do_quit(&mut self) {
        if !self.quit {
            self.quit = true;
            self.send(Command::Quit);
        }
    }

    pub fn handle_key(&mut self, key: KeyEvent) {
        if key.kind != KeyEventKind::Press {
            return;
        }
        let ctrl_c = key.code == KeyCode::Char('c') && key.modifiers == KeyModifiers::CONTROL;
        if !self.model.logged_in() {
            // The form takes every key; ctrl+c (or the quit binding if it is
            // not text) still quits.
            if ctrl_c || self.keys.action(&key, true) == Some(Action::Quit) {
                return self.do_quit();
            }
            let busy = matches!(self.model.login, Some(LoginState::LoggingIn { .. }));
            if !busy {
                let m = self.login.on_key(&key);
                self.msg(m);
            }
            return;
        }
        if self.help {
            if ctrl_c {
                return self.ask_quit();
            }
            // The arrows scroll a help taller than the screen; any other
            // key closes it.
            let s = self.help_scroll.get();
            match key.code {
                KeyCode::Down | KeyCode::Char('j') => self.help_scroll.set(s.saturating_add(1)),
                KeyCode::Up | KeyCode::Char('k') => self.help_scroll.set(s.saturating_sub(1)),
                KeyCode::PageDown => self.help_scroll.set(s.saturating_add(10)),
                KeyCode::PageUp => self.help_scroll.set(s.saturating_sub(10)),
                _ => self.help = false,
            }
            return;
        }
        if let Some(Question::Quit(q)) = self.confirm.take_if(|q| matches!(q, Question::Quit(_))) {
            let yes = matches!(key.code, KeyCode::Char('y' | 'Y') | KeyCode::Enter)
                || self.keys.is(Action::Quit, &key);
            let no = matches!(key.code, KeyCode::Char('n' | 'N') | KeyCode::Esc);
            if yes {
                self.do_quit();
            } else if !no {
                self.confirm = Some(Question::Quit(q));
            }
            return;
        }
        if let Some(Question::Commands(_, commands)) = self.confirm.take() {
            if ctrl_c {
                return self.ask_quit();
            }
            if matches!(key.code, KeyCode::Char('y' | 'Y') | KeyCode::Enter) {
                for c in commands {
                    if let Command::RemoveContact { username }
                    | Command::BlockContact { username } = &c
                    {
                        let username = username.clone();
                        self.close_chat(&username);
                    }
                    if let Command::Group(GroupCommand::Leave { group }) = &c {
                        self.close_chat(&Model::group_key(group));
                    }
                    self.send(c);
                }
            }
            return;
        }
        // The incoming-call prompt is modal: its keys work even as text.
        if let Some(call) = self.model.incoming_call().map(|c| c.id) {
            if self.keys.is(Action::AcceptCall, &key) {
                return self.send(Command::AcceptCall { call });
            }
            if self.keys.is(Action::DeclineCall, &key) {
                return self.send(Command::DeclineCall { call });
            }
            if ctrl_c {
                return self.ask_quit();
            }
            return;
        }
        // So is a conference invitation's.
        if self.model.conference_invite().is_some() {
            if self.keys.is(Action::AcceptCall, &key) {
                return self.send(Command::ConferenceAccept);
            }
            if self.keys.is(Action::DeclineCall, &key) {
                return self.send(Command::ConferenceLeave);
            }
            if ctrl_c {
                return self.ask_quit();
            }
            return;
        }
        if let Some(mut input) = self.mood.take() {
            match key.code {
                _ if ctrl_c => return self.ask_quit(),
                KeyCode::Esc => {}
                KeyCode::Enter => {
                    let status = self.model.own_status.as_ref().map(|s| s.0);
                    self.send(Command::SetStatus {
                        status: status.unwrap_or(Status::Online),
                        message: input.value.trim().to_owned(),
                    });
                }
                _ => {
                    input.on_key(&key);
                    self.mood = Some(input);
                }
            }
            return;
        }
        if let Some(mut dialog) = self.group_dialog.take() {
            if ctrl_c {
                self.group_dialog = Some(dialog);
                return self.ask_quit();
            }
            match dialog.on_key(&key) {
                None => self.group_dialog = Some(dialog),
                Some(Msg::Close) => {}
                Some(m) => {
                    if let Msg::Send(Command::Group(GroupCommand::Create { .. })) = &m {
                        // The marked contacts are invited: unmarked.
                        self.buddies.marked.clear();
                    }
                    self.msg(Some(m));
                }
            }
            return;
        }
        if let Some(mut prompt) = self.send_prompt.take() {
            if ctrl_c {
                self.send_prompt = Some(prompt);
                return self.ask_quit();
            }
            match prompt.on_key(&key) {
                Some(Msg::Close) => {}
                Some(m) => self.msg(Some(m)),
                None => self.send_prompt = Some(prompt),
            }
            return;
        }
        if self.files.open {
            if ctrl_c {
                return self.ask_quit();
            }
            let m = self.files.on_key(&key, &self.model);
            self.msg(m);
            return;
        }
        if self.devices.open {
            if ctrl_c {
                return self.ask_quit();
            }
            let m = self.devices.on_key(&key, &self.model);
            self.msg(m);
            return;
        }
        if self.search.open {
            if ctrl_c {
                return self.ask_quit();
            }
            let m = self.search.on_key(&key, &self.model);
            self.msg(m);
            return;
        }
        let typing = self.focus == Focus::Chat;
        match self.keys.action(&key, typing) {
            Some(a) => self.action(a),
            None if typing => {
                let m = self.chat.on_key(&key);
                self.msg(m);
            }
            None => {
                self.buddies.on_key(&key, &self.model);
            }
        }
    }

    /// Text pasted into the terminal (bracketed paste): into the chat box
    /// when it has the focus, else into the open text field.
    pub fn handle_paste(&mut self, text: &str) {
        if !self.model.logged_in()
            || self.help
            || self.confirm.is_some()
            || self.model.incoming_call().is_some()
            || self.model.conference_invite().is_some()
        {
            return;
        }
        if let Some(d) = &mut self.group_dialog {
            if let Some(input) = d.input() {
                for c in text.lines().next().unwrap_or("").chars() {
                    input.on_key(&KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
                }
            }
            return;
        }
        if self.devices.open {
            if let Some(p) = &mut self.devices.prompt {
                for c in text.lines().next().unwrap_or("").chars() {
                    p.input
                        .on_key(&KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
                }
            }
            return;
        }
        let field = match (
            &mut self.mood,
            &mut self.send_prompt,
            &mut self.files.prompt,
        ) {
            (Some(input), _, _) => Some(input),
            (None, Some(p), _) => Some(&mut p.input),
            (None, None, Some(p)) if self.files.open => Some(&mut p.input),
            _ => None,
        };
        if let Some(input) = field {
            for c in text.lines().next().unwrap_or("").chars() {
                input.on_key(&KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
            }
            return;
        }
        if self.files.open {
            return;
        }
        if self.search.open {
            // A name has one line.
            let line = text.lines().next().unwrap_or("");
            for c in line.chars() {
                let m = self.search.on_key(
                    &KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE),
                    &self.model,
                );
                self.msg(m);
            }
            return;
        }
        if self.focus == Focus::Chat {
            self.chat.paste(text);
        }
    }

    /// The selected name and its contact state (`None`: a stranger).
    fn selected(&self) -> Option<(String, Option<ContactState>)> {
        self.buddies.selected(&self.model)
    }

    /// `name`'s missed calls are seen (the user turned to them).
    fn calls_seen(&mut self, name: &str) {
        let unseen = |c: &crate::node::api::CallRecord| c.peer == name && c.missed() && !c.seen;
        if self.model.call_log.iter().any(unseen) {
            self.send(Command::MarkCallsSeen {
                peer: Some(name.to_owned()),
            });
        }
    }

    /// Close the chat with `name` if it is open.
    fn close_chat(&mut self, name: &str) {
        if self.chat.peer.as_deref() == Some(name) {
            self.chat.peer = None;
            self.model.chat_open = None;
            self.focus = Focus::Contacts;
        }
    }

    fn open_chat(&mut self, name: String) {
        if let Some(c) = self.model.contacts.get_mut(&name) {
            c.unread = 0;
        }
        if let Some(id) = name.strip_prefix('#') {
            if let Some(g) = self.model.groups.get_mut(id) {
                g.unread = 0;
            }
            if self.history_asked.insert(name.clone()) {
                self.send(Command::Group(crate::node::api::GroupCommand::History {
                    group: id.to_owned(),
                    limit: 200,
                }));
            }
            self.model.chat_open = Some(name.clone());
            if self.chat.peer.as_deref() != Some(name.as_str()) {
                self.chat.follow();
            }
            self.chat.peer = Some(name);
            self.focus = Focus::Chat;
            return;
        }
        if let Some(n) = self.model.strangers.get_mut(&name) {
            *n = 0;
        }
        self.calls_seen(&name);
        if self.history_asked.insert(name.clone()) {
            self.send(Command::LoadHistory {
                with: name.clone(),
                before: None,
                limit: 200,
            });
        }
        // Read here: read on our other devices too.
        self.model.mark_read(&name);
        self.send(Command::MarkRead { with: name.clone() });
        self.model.chat_open = Some(name.clone());
        if self.chat.peer.as_deref() != Some(name.as_str()) {
            self.chat.follow();
        }
        self.chat.peer = Some(name);
        self.focus = Focus::Chat;
    }

    fn action(&mut self, a: Action) {
        let live_call = self.live_call().cloned();
        let in_conference = self.model.live_conference().is_some();
        // A group row takes only the chat key (and those not about the
        // selected row).
        let group = self.selected().is_some_and(|(n, _)| n.starts_with('#'));
        if group
            && matches!(
                a,
                Action::Call
                    | Action::ConferenceAdd
                    | Action::Mark
                    | Action::AcceptContact
                    | Action::RemoveContact
                    | Action::BlockContact
                    | Action::SendFile
            )
        {
            return;
        }
        match a {
            Action::Quit => self.ask_quit(),
            Action::Help => {
                self.help = true;
                self.help_scroll.set(0);
            }
            Action::Search => self.search.open(),
            Action::NextPane => {
                self.focus = match self.focus {
                    Focus::Contacts if self.chat.peer.is_some() => Focus::Chat,
                    _ => Focus::Contacts,
                }
            }
            Action::Back => self.focus = Focus::Contacts,
            Action::OpenChat => {
                if let Some((name, _)) = self.selected() {
                    self.open_chat(name);
                }
            }
            Action::Call => match self.selected() {
                Some((username, _)) if in_conference => self.model.notify(
                    Level::Error,
                    format!(
                        "you are in a conference: {} adds {username} to it",
                        self.keys.first(Action::ConferenceAdd)
                    ),
                ),
                _ if live_call.is_some() => self
                    .model
                    .notify(Level::Error, "hang up the current call first".into()),
                Some((username, Some(ContactState::Blocked))) => {
                    let unblock = self.keys.first(Action::BlockContact);
                    self.model.notify(
                        Level::Error,
                        format!("{username} is blocked: unblock them ({unblock}) to call"),
                    )
                }
                Some((username, _)) => {
                    self.calls_seen(&username);
                    self.send(Command::Call { username });
                }
                None => {}
            },
            Action::AcceptCall | Action::DeclineCall => {}
            Action::HangUp if in_conference => self.send(Command::ConferenceLeave),
            Action::SendFile => self.ask_file_to_send(),
            Action::Files => {
                self.send(Command::ListFiles);
                self.files.open(&self.model);
            }
            Action::TakeCall if live_call.is_some() || in_conference => self
                .model
                .notify(Level::Error, "hang up the current call first".into()),
            Action::TakeCall => self.send(Command::TakeCall),
            Action::Devices => {
                // Asked afresh each time: another device may have revoked one.
                self.model.devices = None;
                self.send(Command::Devices);
                self.devices.open();
            }
            Action::HangUp => {
                if let Some(c) = live_call {
                    self.send(Command::HangUp { call: c.id });
                }
            }
            Action::Mute if in_conference => {
                let muted = !self.model.conference_muted();
                self.send(Command::ConferenceMute { muted: Some(muted) })
            }
            Action::Mute => {
                if let Some(c) = live_call {
                    self.send(Command::Mute {
                        call: c.id,
                        muted: !c.muted,
                    });
                }
            }
            Action::Hold => {
                if let Some(c) = live_call {
                    self.send(Command::Hold {
                        call: c.id,
                        held: !c.held,
                    });
                }
            }
            Action::ConferenceAdd => self.conference_add(live_call.as_ref(), in_conference),
            Action::Mark => self.mark(),
            Action::Conference => self.start_conference(live_call.is_some(), in_conference),
            Action::MuteOther => self.mute_other(),
            Action::NewGroup => self.new_group(),
            Action::GroupInvite => self.group_invite(),
            Action::GroupRemove => self.group_remove(),
            Action::GroupRename => {
                if let Some(g) = self.group_target() {
                    self.group_dialog = Some(GroupDialog::rename(g.id, g.name));
                }
            }
            Action::GroupLeave => {
                if let Some(g) = self.group_target() {
                    self.confirm = Some(Question::Commands(
                        format!(
                            "Leave the group {}? You get none of its messages after this.",
                            g.name
                        ),
                        vec![Command::Group(GroupCommand::Leave { group: g.id })],
                    ));
                }
            }
            Action::CycleStatus => {
                let (status, message) = self
                    .model
                    .own_status
                    .clone()
                    .unwrap_or((Status::Online, String::new()));
                let next = match status {
                    Status::Online => Status::Away,
                    Status::Away => Status::DoNotDisturb,
                    Status::DoNotDisturb => Status::Invisible,
                    Status::Invisible | Status::Offline => Status::Online,
                };
                self.send(Command::SetStatus {
                    status: next,
                    message,
                });
            }
            Action::StatusMessage => {
                let mut input = TextInput::limited(MAX_MOOD_BYTES);
                if let Some((_, message)) = &self.model.own_status {
                    input.set(message);
                }
                self.mood = Some(input);
            }
            Action::AcceptContact => match self.selected() {
                Some((username, Some(ContactState::Pending))) => {
                    self.send(Command::AcceptContact { username })
                }
                // A stranger who wrote: ask them to be a contact.
                Some((username, None)) => self.send(Command::AddContact {
                    username,
                    greeting: String::new(),
                }),
                _ => {}
            },
            Action::RemoveContact => match self.selected() {
                Some((username, Some(ContactState::Pending))) => {
                    self.send(Command::DeclineContact { username })
                }
                // A stranger leaves the list (their messages stay in the
                // history; a new one brings them back).
                Some((username, None)) => {
                    self.close_chat(&username);
                    self.model.strangers.remove(&username);
                }
                Some((username, Some(_))) => {
                    self.confirm = Some(Question::Commands(
                        format!("Remove {username} from your contacts?"),
                        vec![Command::RemoveContact { username }],
                    ))
                }
                None => {}
            },
            Action::BlockContact => match self.selected() {
                Some((username, Some(ContactState::Blocked))) => {
                    self.send(Command::UnblockContact { username })
                }
                Some((username, _)) => {
                    self.confirm = Some(Question::Commands(
                        format!(
                            "Block {username}? They can no longer write to you, call you or add you."
                        ),
                        vec![Command::BlockContact { username }],
                    ))
                }
                None => {}
            },
        }
    }

    /// The selected row, when it is a contact one can call (not a
    /// request, a stranger or blocked); else why not, as a notice.
    fn callable(&mut self) -> Option<String> {
        match self.selected() {
            Some((name, Some(ContactState::Blocked))) => {
                let unblock = self.keys.first(Action::BlockContact);
                self.model.notify(
                    Level::Error,
                    format!("{name} is blocked: unblock them ({unblock}) first"),
                );
                None
            }
            Some((name, Some(ContactState::Pending) | None)) => {
                self.model
                    .notify(Level::Error, format!("{name} is not a contact yet"));
                None
            }
            Some((name, Some(_))) => Some(name),
            None => None,
        }
    }

    /// `+`: the selected contact joins the call (which becomes a
    /// conference) or the conference.
    fn conference_add(&mut self, live_call: Option<&crate::node::api::CallInfo>, conf: bool) {
        let answered = live_call.is_some_and(|c| c.state == CallState::Active);
        if !conf && !answered {
            let text = match live_call {
                Some(_) => "the call is not answered yet: add them once it is".to_owned(),
                None => format!(
                    "no call to add to: {} marks contacts, {} starts a conference with them",
                    self.keys.first(Action::Mark),
                    self.keys.first(Action::Conference)
                ),
            };
            return self.model.notify(Level::Error, text);
        }
        let Some(name) = self.callable() else { return };
        let already = self
            .model
            .live_conference()
            .is_some_and(|c| c.participants.contains_key(&name))
            || live_call.is_some_and(|c| c.peer == name && !conf);
        if already {
            return self
                .model
                .notify(Level::Error, format!("{name} is in the call already"));
        }
        self.model
            .notify(Level::Info, format!("inviting {name} into the conference…"));
        self.send(Command::ConferenceAdd { username: name });
    }

    /// Space: mark or unmark the selected contact for a conference.
    fn mark(&mut self) {
        let Some(name) = self.callable() else { return };
        if !self.buddies.marked.remove(&name) {
            self.buddies.marked.insert(name);
        }
        let n = self.buddies.marked.len();
        let text = match n {
            0 => "no contact marked".to_owned(),
            _ => format!(
                "{n} marked ({}): {} starts a conference with them",
                self.buddies
                    .marked
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                self.keys.first(Action::Conference)
            ),
        };
        self.model.notify(Level::Info, text);
    }

    /// `C`: a conference with the marked contacts (in a conference: they
    /// are added to it).
    fn start_conference(&mut self, call: bool, conf: bool) {
        let me = self.model.me().map(str::to_owned);
        // Nothing marked and a group selected: its members.
        let group = match self.selected() {
            Some((n, _)) if self.buddies.marked.is_empty() => n
                .strip_prefix('#')
                .and_then(|id| self.model.groups.get(id))
                .map(|g| g.entry.members.clone()),
            _ => None,
        };
        let from_group = group.is_some();
        let users: Vec<String> = group
            .unwrap_or_else(|| self.buddies.marked.iter().cloned().collect())
            .into_iter()
            .filter(|u| Some(u.as_str()) != me.as_deref())
            .filter(|u| from_group || self.model.contacts.contains_key(u))
            .collect();
        if users.is_empty() {
            return self.model.notify(
                Level::Error,
                format!(
                    "mark the contacts for the conference with {} first",
                    self.keys.first(Action::Mark)
                ),
            );
        }
        if call && !conf {
            return self.model.notify(
                Level::Error,
                format!(
                    "in a call: {} adds the selected contact to it",
                    self.keys.first(Action::ConferenceAdd)
                ),
            );
        }
        self.buddies.marked.clear();
        if conf {
            for username in users {
                self.send(Command::ConferenceAdd { username });
            }
        } else {
            self.model.notify(
                Level::Info,
                format!("starting a conference with {}…", users.join(", ")),
            );
            self.send(Command::ConferenceStart { users });
        }
    }

    /// The group the group keys act on: the open conversation's while
    /// typing in it, else the selected row's; else why none, as a notice.
    fn group_target(&mut self) -> Option<GroupEntry> {
        let open = match self.focus {
            Focus::Chat => self.chat.peer.clone(),
            Focus::Contacts => None,
        };
        let key = open
            .filter(|p| p.starts_with('#'))
            .or_else(|| self.selected().map(|(n, _)| n));
        let group = key
            .as_deref()
            .and_then(|k| k.strip_prefix('#'))
            .and_then(|id| self.model.groups.get(id))
            .filter(|g| g.entry.joined)
            .map(|g| g.entry.clone());
        if group.is_none() {
            self.model.notify(
                Level::Error,
                format!(
                    "select a group first (a # row); {} starts a new one",
                    self.keys.first(Action::NewGroup)
                ),
            );
        }
        group
    }

    /// `g`: the new group dialog; the marked contacts are invited.
    fn new_group(&mut self) {
        let invite: Vec<String> = self
            .buddies
            .marked
            .iter()
            .filter(|u| {
                self.model
                    .contacts
                    .get(*u)
                    .is_some_and(|c| c.state == ContactState::Authorized)
            })
            .cloned()
            .collect();
        self.group_dialog = Some(GroupDialog::create(invite));
    }

    /// `i`: pick a contact to invite into the group (authorized contacts
    /// who are not members).
    fn group_invite(&mut self) {
        let Some(g) = self.group_target() else { return };
        let choices: Vec<String> = self
            .model
            .contacts
            .iter()
            .filter(|(n, c)| c.state == ContactState::Authorized && !g.members.contains(n))
            .map(|(n, _)| n.clone())
            .collect();
        if choices.is_empty() {
            let text = if self.model.contacts.is_empty() {
                format!(
                    "no contacts to invite: {} finds a user",
                    self.keys.first(Action::Search)
                )
            } else {
                format!("all your contacts are in {} already", g.name)
            };
            return self.model.notify(Level::Error, text);
        }
        self.group_dialog = Some(GroupDialog::Pick {
            id: g.id,
            group: g.name,
            purpose: PickFor::Invite,
            choices,
            selected: 0,
        });
    }

    /// `r`: pick a member to remove (admins only; never the creator).
    fn group_remove(&mut self) {
        let Some(g) = self.group_target() else { return };
        let me = self.model.me().unwrap_or_default().to_owned();
        if !g.admins.contains(&me) {
            return self.model.notify(
                Level::Error,
                format!("only the admins of {} may remove members", g.name),
            );
        }
        let choices: Vec<String> = g
            .members
            .iter()
            .filter(|m| **m != me && **m != g.creator)
            .cloned()
            .collect();
        if choices.is_empty() {
            return self
                .model
                .notify(Level::Error, format!("nobody to remove from {}", g.name));
        }
        self.group_dialog = Some(GroupDialog::Pick {
            id: g.id,
            group: g.name,
            purpose: PickFor::Remove,
            choices,
            selected: 0,
        });
    }

    /// `M`: mute or unmute the selected contact in our conference.
    fn mute_other(&mut self) {
        let Some(c) = self.model.live_conference().cloned() else {
            return self
                .model
                .notify(Level::Error, "no conference: nobody to mute".into());
        };
        let Some((name, _)) = self.selected() else {
            return;
        };
        let Some(p) = c.participants.get(&name) else {
            return self
                .model
                .notify(Level::Error, format!("{name} is not in the conference"));
        };
        if !c.we_started {
            return self.model.notify(
                Level::Error,
                "only the one who started the conference may mute others".into(),
            );
        }
        self.send(Command::ConferenceMuteOther {
            username: name,
            muted: !p.muted,
        });
    }

    /// Open the path prompt for a file to the open chat's peer (while
    /// typing) or the selected contact; contacts only, as receivers take
    /// files from contacts only.
    fn ask_file_to_send(&mut self) {
        let to = match self.focus {
            Focus::Chat => self.chat.peer.clone(),
            Focus::Contacts => self.selected().map(|(name, _)| name),
        };
        let Some(to) = to else { return };
        let state = self.model.contacts.get(&to).map(|c| c.state);
        match state {
            Some(ContactState::Authorized) => {
                self.send_prompt = Some(PathPrompt::new(PathFor::Send { to }))
            }
            Some(ContactState::Blocked) => self.model.notify(
                Level::Error,
                format!("{to} is blocked: unblock them to send a file"),
            ),
            _ => self.model.notify(
                Level::Error,
                format!("{to} is not your contact yet: files go to contacts only"),
            ),
        }
    }

    /// The path being typed in the send prompt, while it is open.
    pub fn send_file_draft(&self) -> Option<&str> {
        self.send_prompt.as_ref().map(|p| p.input.value.as_str())
    }

    /// Whether the transfers window is open.
    pub fn files_open(&self) -> bool {
        self.files.open
    }

    pub fn devices_open(&self) -> bool {
        self.devices.open
    }

    pub fn render(&self, f: &mut Frame) {
        let area = f.area();
        if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
            let text = format!(
                "natter: enlarge the terminal ({}x{})",
                area.width, area.height
            );
            f.render_widget(
                Paragraph::new(text).wrap(ratatui::widgets::Wrap { trim: true }),
                area,
            );
            return;
        }
        let ctx = |focused| Ctx {
            model: &self.model,
            keys: &self.keys,
            focused,
            typing: self.focus == Focus::Chat
                && !self.help
                && !self.search.open
                && !self.files.open
                && self.send_prompt.is_none()
                && self.group_dialog.is_none(),
        };
        let [top, body, foot] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(area);
        self.title_bar(f, top);
        self.footer(f, foot);
        if !self.model.logged_in() {
            self.login.draw(f, body, &ctx(true));
            return;
        }
        let full = area.width >= FULL_WIDTH && area.height >= FULL_HEIGHT;
        if full {
            // The panels grow to the call panel's lines (a live call's
            // statistics) while the contacts and chat keep 10 rows.
            let want = CallPanel.wanted_height(&ctx(false), body.width / 2);
            let panels_h = want.clamp(8, body.height.saturating_sub(10).max(8));
            let [main, panels] =
                Layout::vertical([Constraint::Fill(1), Constraint::Length(panels_h)]).areas(body);
            let [list, chat] =
                Layout::horizontal([Constraint::Length(30), Constraint::Fill(1)]).areas(main);
            let [nat, call] =
                Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)]).areas(panels);
            self.buddies
                .draw(f, list, &ctx(self.focus == Focus::Contacts));
            self.chat.draw(f, chat, &ctx(self.focus == Focus::Chat));
            NatPanel.draw(f, nat, &ctx(false));
            CallPanel.draw(f, call, &ctx(false));
        } else {
            // One pane at a time, the call panel when a call is on.
            let live = self
                .model
                .current_call()
                .is_some_and(|c| !matches!(c.state, CallState::Ended { .. }));
            // The call panel as tall as its lines while 5 rows stay for the
            // pane (it drops its least needed lines to fit); on a very short
            // terminal it takes the body.
            let want = CallPanel.wanted_height(&ctx(false), body.width);
            let main = if live && body.height >= 11 {
                let h = want.min(body.height - 5);
                let [main, call] =
                    Layout::vertical([Constraint::Fill(1), Constraint::Length(h)]).areas(body);
                CallPanel.draw(f, call, &ctx(false));
                main
            } else if live {
                CallPanel.draw(f, body, &ctx(false));
                Rect::default()
            } else {
                body
            };
            if !main.is_empty() {
                match self.focus {
                    Focus::Contacts => self.buddies.draw(f, main, &ctx(true)),
                    Focus::Chat => self.chat.draw(f, main, &ctx(true)),
                }
            }
        }
        if self.search.open {
            self.search.draw(f, body, &ctx(true));
        }
        IncomingPrompt.draw(f, body, &ctx(true));
        if let Some(input) = &self.mood {
            draw_mood(f, body, input);
        }
        if self.files.open {
            self.files.draw(f, body, &ctx(true));
        }
        if self.devices.open {
            self.devices.draw(f, body, &ctx(true));
        }
        if let Some(p) = &self.send_prompt {
            p.draw_window(f, body);
        }
        if let Some(d) = &self.group_dialog {
            d.draw(f, body, &self.model);
        }
        if let Some(q) = &self.confirm {
            draw_confirm(f, body, q.text());
        }
        if self.help {
            Help {
                scroll: &self.help_scroll,
            }
            .draw(f, area, &ctx(true));
        }
    }

    /// The keys that apply to the selected row of the contact list.
    fn contact_hints(&self) -> String {
        let k = &self.keys;
        let key = |a| k.first(a);
        let general = format!(
            "{} find user · {} status · {} mood · {} quit",
            key(Action::Search),
            key(Action::CycleStatus),
            key(Action::StatusMessage),
            key(Action::Quit)
        );
        let specific = match self.selected() {
            None => String::new(),
            Some((n, _)) if n.starts_with('#') => {
                let me = self.model.me().unwrap_or_default();
                let admin = n
                    .strip_prefix('#')
                    .and_then(|id| self.model.groups.get(id))
                    .is_some_and(|g| g.entry.admins.iter().any(|a| a == me));
                let remove = if admin {
                    format!(" · {} remove", key(Action::GroupRemove))
                } else {
                    String::new()
                };
                format!(
                    "{} chat · {} conference · {} invite{remove} · {} rename · {} leave",
                    key(Action::OpenChat),
                    key(Action::Conference),
                    key(Action::GroupInvite),
                    key(Action::GroupRename),
                    key(Action::GroupLeave),
                )
            }
            Some((_, Some(ContactState::Pending))) => format!(
                "{} accept · {} decline · {} block · {} read",
                key(Action::AcceptContact),
                key(Action::RemoveContact),
                key(Action::BlockContact),
                key(Action::OpenChat)
            ),
            Some((_, None)) => format!(
                "{} read and answer · {} add · {} block · {} dismiss",
                key(Action::OpenChat),
                key(Action::AcceptContact),
                key(Action::BlockContact),
                key(Action::RemoveContact)
            ),
            Some((_, Some(ContactState::Blocked))) => format!(
                "{} unblock · {} remove",
                key(Action::BlockContact),
                key(Action::RemoveContact)
            ),
            Some(_) => format!(
                "{} chat · {} call · {} send file · {} remove · {} block",
                key(Action::OpenChat),
                key(Action::Call),
                key(Action::SendFile),
                key(Action::RemoveContact),
                key(Action::BlockContact)
            ),
        };
        let specific = if self.model.files.is_empty() {
            specific
        } else {
            format!("{specific} · {} files", key(Action::Files))
        };
        let call = self.call_hints(false);
        [call, specific, general]
            .into_iter()
            .filter(|s| !s.is_empty())
            .fold(String::new(), |acc, s| {
                if acc.is_empty() {
                    format!(" {s}")
                } else {
                    format!("{acc} · {s}")
                }
            })
    }

    /// The keys of the call on, if any: those that work while typing when
    /// `typing`.
    fn call_hints(&self, typing: bool) -> String {
        let key = |a| {
            if typing {
                self.keys.first_non_text(a)
            } else {
                self.keys.first(a)
            }
        };
        if let Some(c) = self.model.live_conference() {
            let mut h = format!(
                "{} leave · {} {} · {} add",
                key(Action::HangUp),
                key(Action::Mute),
                if self.model.conference_muted() {
                    "unmute"
                } else {
                    "mute"
                },
                key(Action::ConferenceAdd),
            );
            if c.we_started {
                h += &format!(" · {} mute them", key(Action::MuteOther));
            }
            return h;
        }
        let Some(c) = self.live_call() else {
            // Marked contacts wait for the conference key.
            let n = self.buddies.marked.len();
            if n > 0 && !typing {
                return format!(
                    "{} conference with {n} marked · {} group with them · {} mark",
                    key(Action::Conference),
                    key(Action::NewGroup),
                    key(Action::Mark)
                );
            }
            return String::new();
        };
        match c.state {
            // The prompt shows its own keys.
            CallState::Incoming => String::new(),
            CallState::Active => format!(
                "{} hang up · {} {} · {} {}",
                key(Action::HangUp),
                key(Action::Mute),
                if c.muted { "unmute" } else { "mute" },
                key(Action::Hold),
                if c.held { "resume" } else { "hold" },
            ),
            _ => format!("{} hang up", key(Action::HangUp)),
        }
    }

    /// A question waiting for y or n.
    pub fn confirming(&self) -> Option<&str> {
        self.confirm.as_ref().map(Question::text)
    }

    /// The mood message being written, while its dialog is open.
    pub fn mood_draft(&self) -> Option<&str> {
        self.mood.as_ref().map(|i| i.value.as_str())
    }

    fn title_bar(&self, f: &mut Frame, area: Rect) {
        let m = &self.model;
        let mut spans = vec![Span::raw(" natter ").bold().reversed()];
        if let Some(me) = m.me() {
            let (status, message) = m
                .own_status
                .clone()
                .unwrap_or((Status::Online, String::new()));
            let (mark, color) = status_mark(status);
            spans.push(Span::raw(format!(" {me} ")).bold());
            spans.push(Span::styled(mark, Style::new().fg(color)));
            spans.push(Span::raw(format!(" {}", status.name())));
            if !message.is_empty() {
                spans.push(Span::raw(format!(" · {message}")).dark_gray());
            }
            let missed = m.missed_unseen();
            if missed > 0 {
                spans.push(Span::raw(format!("  ☎ {missed} missed")).red().bold());
            }
            let (offers, moving) = (m.file_offers(), m.files_moving());
            if offers > 0 {
                let s = if offers == 1 { "" } else { "s" };
                spans.push(
                    Span::raw(format!("  ⇅ {offers} file{s} offered"))
                        .yellow()
                        .bold(),
                );
            } else if moving > 0 {
                let s = if moving == 1 { "" } else { "s" };
                spans.push(Span::raw(format!("  ⇅ {moving} file{s}")));
            }
            let n = m.supernodes.len();
            spans.push(Span::raw(format!(
                "  ⇄ {n} supernode{}",
                if n == 1 { "" } else { "s" }
            )));
            if n == 0 {
                spans.last_mut().unwrap().style = Style::new().yellow();
            }
        }
        spans.push(Span::raw(format!("  {} help", self.keys.first(Action::Help))).dark_gray());
        f.render_widget(Line::from(spans), area);
    }

    fn footer(&self, f: &mut Frame, area: Rect) {
        let m = &self.model;
        let recent = m.notices.back().filter(|n| m.now.since(n.at) < NOTICE_MS);
        let line = match recent {
            Some(n) => {
                let color = match n.level {
                    Level::Info => Color::Cyan,
                    Level::Alert => Color::Yellow,
                    Level::Error => Color::Red,
                };
                Line::from(vec![
                    Span::raw(format!(" {} ", clock(n.at))).dark_gray(),
                    Span::styled(n.text.clone(), Style::new().fg(color)),
                ])
            }
            None if !m.logged_in() => Line::from(" ctrl+c quits").dark_gray(),
            None => {
                let k = &self.keys;
                let hints = match self.focus {
                    Focus::Chat => {
                        let call = self.call_hints(true);
                        format!(
                            " {call}{}Enter send · alt+Enter new line · PgUp/PgDn scroll · {} back to contacts · {} help",
                            if call.is_empty() { "" } else { " · " },
                            k.first(Action::Back),
                            k.first(Action::Help)
                        )
                    }
                    Focus::Contacts => self.contact_hints(),
                };
                Line::from(hints).dark_gray()
            }
        };
        f.render_widget(line, area);
    }
}

/// The y/n window of a question, centred in `area`.
fn draw_confirm(f: &mut Frame, area: Rect, question: &str) {
    use super::components::{centered, wrap};
    use ratatui::widgets::{Block, Clear};
    let w = 50.min(area.width);
    let text = wrap(question, w.saturating_sub(2) as usize);
    let h = text.len() as u16 + 4;
    let r = centered(area, w, h);
    f.render_widget(Clear, r);
    let block = Block::bordered()
        .title(" Confirm ".bold())
        .border_style(Style::new().yellow());
    let inner = block.inner(r);
    f.render_widget(block, r);
    let mut lines: Vec<Line> = text.into_iter().map(Line::from).collect();
    lines.push(Line::from(""));
    lines.push(Line::from("y yes · n no").dark_gray());
    f.render_widget(Paragraph::new(lines), inner);
}

/// The mood message dialog, centred in `area`.
fn draw_mood(f: &mut Frame, area: Rect, input: &TextInput) {
    use super::components::centered;
    use ratatui::widgets::{Block, Clear};
    let r = centered(area, 52.min(area.width), 6);
    f.render_widget(Clear, r);
    let block = Block::bordered().title(" Mood message ".bold());
    let inner = block.inner(r);
    f.render_widget(block, r);
    let [field, note, _, hint] = Layout::vertical([Constraint::Length(1); 4]).areas(inner);
    input.draw(f, field, true);
    f.render_widget(
        Line::from("Your contacts see it next to your name.").dark_gray(),
        note,
    );
    f.render_widget(
        Line::from("Enter set (empty clears) · Esc cancel").dark_gray(),
        hint,
    );
}
