//! The screen's parts, each drawing itself from the view model and turning
//! keys into [`Msg`]s for the [`crate::ui::App`] (the component pattern of
//! ratatui's component template and gitui).

pub mod buddies;
pub mod call;
pub mod chat;
pub mod devices;
pub mod files;
pub mod group;
pub mod help;
pub mod login;
pub mod nat;
pub mod search;

use super::keys::KeyMap;
use super::model::Model;
use crate::node::api::Command;
use crate::time::UnixMillis;
use ratatui::Frame;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use unicode_width::UnicodeWidthChar;

/// What a component asks of the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Send(Command),
    /// Send these in order (a long message in parts).
    SendAll(Vec<Command>),
    /// Close the window the key came from.
    Close,
    /// Ask `question` (y/n) first; send `commands` on yes.
    Confirm {
        question: String,
        commands: Vec<Command>,
    },
}

/// What a component draws from.
pub struct Ctx<'a> {
    pub model: &'a Model,
    pub keys: &'a KeyMap,
    pub focused: bool,
    /// The chat box has the focus: hints name keys that work while typing.
    pub typing: bool,
}

impl Ctx<'_> {
    /// The key to show for `action`: while typing, one that is no text.
    pub fn key(&self, action: super::keys::Action) -> String {
        if self.typing {
            self.keys.first_non_text(action)
        } else {
            self.keys.first(action)
        }
    }
}

/// A part of the screen.
pub trait Component {
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx);
}

/// A one-line text field.
#[derive(Debug, Default, Clone)]
pub struct TextInput {
    pub value: String,
    /// Cursor position in characters.
    cursor: usize,
    /// Show `*` instead of the text.
    pub masked: bool,
    /// The most bytes the value may hold (0: no limit).
    limit: usize,
}

impl TextInput {
    pub fn masked() -> Self {
        TextInput {
            masked: true,
            ..Default::default()
        }
    }

    /// A field that holds at most `bytes` bytes (a key past it is ignored).
    pub fn limited(bytes: usize) -> Self {
        TextInput {
            limit: bytes,
            ..Default::default()
        }
    }

    pub fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.value)
    }

    pub fn set(&mut self, s: &str) {
        self.value = s.to_owned();
        self.cursor = self.value.chars().count();
    }

    fn byte_at(&self, chars: usize) -> usize {
        self.value
            .char_indices()
            .nth(chars)
            .map(|(i, _)| i)
            .unwrap_or(self.value.len())
    }

    /// Edit with `key`; returns whether the key was used.
    pub fn on_key(&mut self, key: &KeyEvent) -> bool {
        let len = self.value.chars().count();
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('u') if ctrl => {
                self.take();
            }
            KeyCode::Char(c) if self.limit > 0 && self.value.len() + c.len_utf8() > self.limit => {}
            KeyCode::Char(c) if !ctrl && !key.modifiers.contains(KeyModifiers::ALT) => {
                let at = self.byte_at(self.cursor);
                self.value.insert(at, c);
                self.cursor += 1;
            }
            KeyCode::Backspace if self.cursor > 0 => {
                self.cursor -= 1;
                let at = self.byte_at(self.cursor);
                self.value.remove(at);
            }
            KeyCode::Delete if self.cursor < len => {
                let at = self.byte_at(self.cursor);
                self.value.remove(at);
            }
            KeyCode::Left => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::Right => self.cursor = (self.cursor + 1).min(len),
            KeyCode::Home => self.cursor = 0,
            KeyCode::End => self.cursor = len,
            KeyCode::Backspace | KeyCode::Delete => {}
            _ => return false,
        }
        true
    }

    /// The visible part for `width` columns, and the cursor's column in it.
    pub fn view(&self, width: u16) -> (String, u16) {
        let shown: Vec<char> = if self.masked {
            vec!['*'; self.value.chars().count()]
        } else {
            self.value.chars().collect()
        };
        let width = width.max(1) as usize;
        // Scroll so the cursor stays in view.
        let mut start = 0;
        let col = |from: usize, to: usize| -> usize {
            shown[from..to].iter().map(|c| c.width().unwrap_or(0)).sum()
        };
        while col(start, self.cursor) >= width {
            start += 1;
        }
        let mut end = start;
        while end < shown.len() && col(start, end + 1) <= width {
            end += 1;
        }
        (
            shown[start..end].iter().collect(),
            col(start, self.cursor) as u16,
        )
    }

    /// Draw the field on one line; with `focused`, place the cursor.
    pub fn draw(&self, f: &mut Frame, area: Rect, focused: bool) {
        let (text, cursor) = self.view(area.width);
        f.render_widget(Line::from(Span::raw(text)), area);
        if focused {
            f.set_cursor_position((area.x + cursor.min(area.width.saturating_sub(1)), area.y));
        }
    }
}

/// A rectangle of `w` x `h` centred in `area` (clipped to it).
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

/// `HH:MM` (UTC) of a wall-clock time.
pub fn clock(t: UnixMillis) -> String {
    let m = (t.get() / 60_000) % (24 * 60);
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// When a message was sent: `HH:MM` on the day of `now` (UTC), else
/// `YYYY-MM-DD HH:MM`.
pub fn when(at: UnixMillis, now: UnixMillis) -> String {
    const DAY: u64 = 86_400_000;
    if at.get() / DAY == now.get() / DAY {
        return clock(at);
    }
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(at.get().min(253_402_300_799_000));
    let date = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} {}", &date[..10], clock(at))
}

/// `MM:SS`, or `H:MM:SS` past an hour.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

/// Split `text` into lines of at most `width` columns, at spaces where
/// possible. Spaces at its start are kept (indented text stays indented).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out = Vec::new();
    let mut line = String::new();
    let mut w = 0;
    // Still in the spaces the text starts with.
    let mut leading = true;
    for (i, word) in text.split(' ').enumerate() {
        let ww: usize = word.chars().map(|c| c.width().unwrap_or(0)).sum();
        if i > 0 {
            if w > 0 && w + 1 + ww > width {
                out.push(std::mem::take(&mut line));
                w = 0;
            } else if w > 0 || leading {
                if w + 1 > width {
                    out.push(std::mem::take(&mut line));
                    w = 0;
                }
                line.push(' ');
                w += 1;
            }
        }
        leading &= word.is_empty();
        for c in word.chars() {
            let cw = c.width().unwrap_or(0);
            if w + cw > width {
                out.push(std::mem::take(&mut line));
                w = 0;
            }
            line.push(c);
            w += cw;
        }
    }
    out.push(line);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_input_edits_and_scrolls() {
        let mut t = TextInput::default();
        for c in "hello".chars() {
            t.on_key(&KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        }
        t.on_key(&KeyEvent::new(KeyCode::Left, KeyModifiers::NONE));
        t.on_key(&KeyEvent::new(KeyCode::Backspace, KeyModifiers::NONE));
        assert_eq!(t.value, "helo");
        let (shown, cur) = t.view(3);
        assert_eq!((shown.as_str(), cur), ("elo", 2));
        t.masked = true;
        assert_eq!(t.view(10).0, "****");
    }

    #[test]
    fn wrap_breaks_at_spaces_and_long_words() {
        assert_eq!(wrap("one two three", 7), vec!["one two", "three"]);
        assert_eq!(wrap("abcdefgh", 3), vec!["abc", "def", "gh"]);
        assert_eq!(wrap("", 3), vec![""]);
        assert_eq!(wrap("  indented text", 20), vec!["  indented text"]);
        assert_eq!(wrap("a  b", 20), vec!["a  b"]);
    }

    #[test]
    fn times() {
        let t = UnixMillis(3_723_000);
        assert_eq!(clock(t), "01:02");
        assert_eq!(when(t, UnixMillis(80_000_000)), "01:02");
        assert_eq!(when(t, UnixMillis(86_400_000)), "1970-01-01 01:02");
        assert_eq!(duration(61_000), "01:01");
        assert_eq!(duration(3_661_000), "1:01:01");
    }
}
