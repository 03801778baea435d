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
    CycleStatus,
    StatusMessage,
    AcceptContact,
    RemoveContact,
    BlockContact,
    SendFile,
    Files,
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
            Action::AcceptCall => "answer an incoming call",
            Action::DeclineCall => "refuse an incoming call",
            Action::HangUp => "hang up",
            Action::Mute => "mute or unmute the microphone",
            Action::Hold => "put the call on hold or resume it",
            Action::CycleStatus => "cycle status: online, away, do not disturb, invisible",
            Action::StatusMessage => "set your mood message (shown to contacts)",
            Action::AcceptContact => "accept the selected contact request",
            Action::RemoveContact => "remove the contact (asks first; declines a request)",
            Action::BlockContact => "block the contact (asks first), or unblock a blocked one",
            Action::SendFile => "send the contact a file (Tab completes the path)",
            Action::Files => "file transfers: answer offers, see progress, stop one",
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
                b(Action::AcceptContact, &k.accept_contact),
                b(Action::RemoveContact, &k.remove_contact),
                b(Action::BlockContact, &k.block_contact),
                b(Action::SendFile, &k.send_file),
                b(Action::Files, &k.files),
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
