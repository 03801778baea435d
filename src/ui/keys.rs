//! Keybindings: the actions of the UI and the keys bound to them (from the
//! `[keys]` section of the config), matched against terminal key events.

use crate::config::{KeyChord, KeyName, KeysSection};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key can ask the UI to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Help,
    Search,
    NextPane,
    OpenChat,
    Back,
    Call,
    AcceptCall,
    DeclineCall,
    HangUp,
    Mute,
    Hold,
    TakeCall,
    ConferenceAdd,
    Mark,
    Conference,
    MuteOther,
    CycleStatus,
    StatusMessage,
    AcceptContact,
    RemoveContact,
    BlockContact,
    SendFile,
    Files,
    NewGroup,
    GroupInvite,
    GroupRemove,
    GroupRename,
    GroupLeave,
    Devices,
}

impl Action {
    /// What the help overlay says the action does.
    pub fn describe(self) -> &'static str {
        match self {
            Action::Quit => "quit natter",
            Action::Help => "show or hide this help",
            Action::Search => "find a user (Enter again adds them, with a greeting)",
            Action::NextPane => "switch between contacts and chat",
            Action::OpenChat => "chat with the selected contact",
            Action::Back => "close a window, leave the chat input",
            Action::Call => "call the selected contact",
            Action::AcceptCall => "answer an incoming call, or join a conference",
            Action::DeclineCall => "refuse an incoming call or conference",
            Action::HangUp => "hang up, or leave the conference",
            Action::Mute => "mute or unmute the microphone (call or conference)",
            Action::Hold => "put the call on hold or resume it",
            Action::TakeCall => "take the call on your other device: it moves here",
            Action::ConferenceAdd => "add the selected contact to the call: a conference",
            Action::Mark => "mark the selected contact for a conference, or unmark",
            Action::Conference => "start a conference: marked contacts, or the group",
            Action::MuteOther => "mute or unmute the selected conference participant",
            Action::CycleStatus => "cycle status: online, away, do not disturb, invisible",
            Action::StatusMessage => "set your mood message (shown to contacts)",
            Action::AcceptContact => "accept the selected contact request",
            Action::RemoveContact => "remove the contact (asks first; declines a request)",
            Action::BlockContact => "block the contact (asks first), or unblock a blocked one",
            Action::SendFile => "send the contact a file (Tab completes the path)",
            Action::Files => "file transfers: answer offers, see progress, stop one",
            Action::NewGroup => "new group: its name; the marked contacts are invited",
            Action::GroupInvite => "invite a contact into the selected group",
            Action::GroupRemove => "remove a member from the group (admins; asks first)",
            Action::GroupRename => "rename the selected group",
            Action::GroupLeave => "leave the selected group (asks first)",
            Action::Devices => "your devices: see where you are logged in, revoke one",
        }
    }
}

/// Every action with its keys, in help order.
#[derive(Debug, Clone)]
pub struct KeyMap {
    pub bindings: Vec<(Action, Vec<KeyChord>)>,
}

impl Default for KeyMap {
    fn default() -> Self {
        KeyMap::from_config(&KeysSection::default())
    }
}

impl KeyMap {
    pub fn from_config(k: &KeysSection) -> Self {
        let b = |a: Action, l: &crate::config::KeyList| (a, l.0.clone());
        KeyMap {
            bindings: vec![
                b(Action::Help, &k.help),
                b(Action::Quit, &k.quit),
                b(Action::Search, &k.search),
                b(Action::NextPane, &k.next_pane),
                b(Action::OpenChat, &k.open_chat),
                b(Action::Back, &k.back),
                b(Action::CycleStatus, &k.cycle_status),
                b(Action::StatusMessage, &k.status_message),
                b(Action::Call, &k.call),
                b(Action::AcceptCall, &k.accept_call),
                b(Action::DeclineCall, &k.decline_call),
                b(Action::HangUp, &k.hang_up),
                b(Action::Mute, &k.mute),
                b(Action::Hold, &k.hold),
                b(Action::TakeCall, &k.take_call),
                b(Action::ConferenceAdd, &k.conference_add),
                b(Action::Mark, &k.mark),
                b(Action::Conference, &k.conference),
                b(Action::MuteOther, &k.mute_other),
                b(Action::AcceptContact, &k.accept_contact),
                b(Action::RemoveContact, &k.remove_contact),
                b(Action::BlockContact, &k.block_contact),
                b(Action::SendFile, &k.send_file),
                b(Action::Files, &k.files),
                b(Action::NewGroup, &k.new_group),
                b(Action::GroupInvite, &k.group_invite),
                b(Action::GroupRemove, &k.group_remove),
                b(Action::GroupRename, &k.group_rename),
                b(Action::GroupLeave, &k.group_leave),
                b(Action::Devices, &k.devices),
            ],
        }
    }

    /// The action `key` asks for. While a text field has the focus
    /// (`typing`), only keys that cannot be text count.
    pub fn action(&self, key: &KeyEvent, typing: bool) -> Option<Action> {
        self.bindings.iter().find_map(|(a, chords)| {
            chords
                .iter()
                .any(|c| (!typing || !is_text(c)) && matches(c, key))
                .then_some(*a)
        })
    }

    /// Whether `key` is bound to `action`, text keys included (for modal
    /// prompts that take no text).
    pub fn is(&self, action: Action, key: &KeyEvent) -> bool {
        self.bindings
            .iter()
            .any(|(a, chords)| *a == action && chords.iter().any(|c| matches(c, key)))
    }

    /// The first key of `action` that works while typing (else the first
    /// key), for hints in the chat ("ctrl+x hang up").
    pub fn first_non_text(&self, action: Action) -> String {
        self.bindings
            .iter()
            .find(|(a, _)| *a == action)
            .and_then(|(_, c)| c.iter().find(|c| !is_text(c)).or(c.first()))
            .map(|c| c.to_string())
            .unwrap_or_else(|| "(unbound)".into())
    }

    /// The first key of `action`, for hints ("c call").
    pub fn first(&self, action: Action) -> String {
        self.bindings
            .iter()
            .find(|(a, _)| *a == action)
            .and_then(|(_, c)| c.first())
            .map(|c| c.to_string())
            .unwrap_or_else(|| "(unbound)".into())
    }
}

/// Keys a text field would take as input.
fn is_text(c: &KeyChord) -> bool {
    !c.ctrl
        && !c.alt
        && matches!(
            c.key,
            KeyName::Char(_)
                | KeyName::Enter
                | KeyName::Backspace
                | KeyName::Delete
                | KeyName::Left
                | KeyName::Right
                | KeyName::Home
                | KeyName::End
        )
}

fn matches(c: &KeyChord, key: &KeyEvent) -> bool {
    let m = key.modifiers;
    if c.ctrl != m.contains(KeyModifiers::CONTROL) || c.alt != m.contains(KeyModifiers::ALT) {
        return false;
    }
    let code = match c.key {
        // Characters carry their shift in the character itself ('?', 'Q').
        KeyName::Char(ch) => {
            return match key.code {
                KeyCode::Char(k) if c.ctrl => k.eq_ignore_ascii_case(&ch),
                KeyCode::Char(k) => k == ch,
                _ => false,
            };
        }
        KeyName::F(n) => KeyCode::F(n),
        KeyName::Enter => KeyCode::Enter,
        KeyName::Esc => KeyCode::Esc,
        KeyName::Tab => KeyCode::Tab,
        KeyName::BackTab => KeyCode::BackTab,
        KeyName::Backspace => KeyCode::Backspace,
        KeyName::Delete => KeyCode::Delete,
        KeyName::Up => KeyCode::Up,
        KeyName::Down => KeyCode::Down,
        KeyName::Left => KeyCode::Left,
        KeyName::Right => KeyCode::Right,
        KeyName::Home => KeyCode::Home,
        KeyName::End => KeyCode::End,
        KeyName::PageUp => KeyCode::PageUp,
        KeyName::PageDown => KeyCode::PageDown,
    };
    key.code == code && (c.shift == m.contains(KeyModifiers::SHIFT) || code == KeyCode::BackTab)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, m: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, m)
    }

    #[test]
    fn plain_keys_yield_to_text_fields() {
        let k = KeyMap::default();
        let q = key(KeyCode::Char('q'), KeyModifiers::NONE);
        assert_eq!(k.action(&q, false), Some(Action::Quit));
        assert_eq!(k.action(&q, true), None);
        let cc = key(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(k.action(&cc, true), Some(Action::Quit));
        // '?' arrives shifted on most keyboards.
        let help = key(KeyCode::Char('?'), KeyModifiers::SHIFT);
        assert_eq!(k.action(&help, false), Some(Action::Help));
        let esc = key(KeyCode::Esc, KeyModifiers::NONE);
        assert_eq!(k.action(&esc, true), Some(Action::Back));
        let enter = key(KeyCode::Enter, KeyModifiers::NONE);
        assert_eq!(k.action(&enter, true), None);
        assert_eq!(k.action(&enter, false), Some(Action::OpenChat));
    }

    #[test]
    fn call_keys_work_while_typing() {
        let k = KeyMap::default();
        let ctrl = |c| key(KeyCode::Char(c), KeyModifiers::CONTROL);
        assert_eq!(k.action(&ctrl('y'), true), Some(Action::AcceptCall));
        assert_eq!(k.action(&ctrl('n'), true), Some(Action::DeclineCall));
        assert_eq!(k.action(&ctrl('x'), true), Some(Action::HangUp));
        assert_eq!(k.action(&ctrl('t'), true), Some(Action::Mute));
        assert_eq!(k.action(&ctrl('o'), true), Some(Action::Hold));
        // The plain letters stay text while typing.
        let m = key(KeyCode::Char('m'), KeyModifiers::NONE);
        assert_eq!(k.action(&m, true), None);
        assert_eq!(k.action(&m, false), Some(Action::Mute));
        // 'S' arrives shifted.
        let s = key(KeyCode::Char('S'), KeyModifiers::SHIFT);
        assert_eq!(k.action(&s, false), Some(Action::StatusMessage));
        assert_eq!(k.action(&s, true), None);
    }

    #[test]
    fn conference_keys() {
        let k = KeyMap::default();
        let shifted = |c| key(KeyCode::Char(c), KeyModifiers::SHIFT);
        let plain = |c| key(KeyCode::Char(c), KeyModifiers::NONE);
        // '+' arrives shifted on most keyboards, plain on a keypad.
        assert_eq!(k.action(&shifted('+'), false), Some(Action::ConferenceAdd));
        assert_eq!(k.action(&plain('+'), false), Some(Action::ConferenceAdd));
        assert_eq!(k.action(&plain(' '), false), Some(Action::Mark));
        assert_eq!(k.action(&shifted('C'), false), Some(Action::Conference));
        assert_eq!(k.action(&shifted('M'), false), Some(Action::MuteOther));
        // Text while typing; 'c' and 'm' stay call and mute.
        assert_eq!(k.action(&plain(' '), true), None);
        assert_eq!(k.action(&plain('c'), false), Some(Action::Call));
        assert_eq!(k.action(&plain('m'), false), Some(Action::Mute));
        assert_eq!(k.first(Action::Mark), "space");
    }

    #[test]
    fn group_keys() {
        let k = KeyMap::default();
        let plain = |c| key(KeyCode::Char(c), KeyModifiers::NONE);
        let shifted = |c| key(KeyCode::Char(c), KeyModifiers::SHIFT);
        assert_eq!(k.action(&plain('g'), false), Some(Action::NewGroup));
        assert_eq!(k.action(&plain('i'), false), Some(Action::GroupInvite));
        assert_eq!(k.action(&plain('r'), false), Some(Action::GroupRemove));
        assert_eq!(k.action(&shifted('R'), false), Some(Action::GroupRename));
        assert_eq!(k.action(&shifted('L'), false), Some(Action::GroupLeave));
        // Text while typing in the group's conversation.
        assert_eq!(k.action(&plain('i'), true), None);
        assert_eq!(k.action(&shifted('L'), true), None);
        // Every group action is in the help, with its key.
        for a in [
            Action::NewGroup,
            Action::GroupInvite,
            Action::GroupRemove,
            Action::GroupRename,
            Action::GroupLeave,
        ] {
            assert!(k.bindings.iter().any(|(b, c)| *b == a && !c.is_empty()));
        }
    }

    #[test]
    fn group_keys_rebind_and_conflict() {
        let text = "[keys]\ngroup_leave = \"ctrl+l\"\n";
        let cfg = crate::config::Config::parse(text, "x.toml".as_ref()).unwrap();
        let k = KeyMap::from_config(&cfg.keys);
        let cl = key(KeyCode::Char('l'), KeyModifiers::CONTROL);
        assert_eq!(k.action(&cl, true), Some(Action::GroupLeave));
        assert_eq!(k.first(Action::GroupLeave), "ctrl+l");
        // A group key that another action has is refused, at the group key.
        let e = crate::config::Config::parse("[keys]\ngroup_invite = \"c\"\n", "x.toml".as_ref())
            .unwrap_err()
            .to_string();
        assert!(e.contains("keys.group_invite"), "{e}");
        assert!(e.contains("call"), "{e}");
    }

    #[test]
    fn config_rebinds() {
        let cfg = crate::config::Config::parse("[keys]\nhang_up = \"ctrl+e\"\n", "x.toml".as_ref())
            .unwrap();
        let k = KeyMap::from_config(&cfg.keys);
        let ce = key(KeyCode::Char('e'), KeyModifiers::CONTROL);
        assert_eq!(k.action(&ce, true), Some(Action::HangUp));
        let x = key(KeyCode::Char('x'), KeyModifiers::NONE);
        assert_eq!(k.action(&x, false), None);
        assert_eq!(k.first(Action::HangUp), "ctrl+e");
    }
}
