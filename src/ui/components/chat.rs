//! The chat pane: the conversation with one contact (history and new
//! messages with their delivery state) and the box to type in.
//!
//! The box is `ratatui-textarea`'s editor: a key or a paste costs time in
//! proportion to the text, never more, and it holds several lines (Alt+Enter
//! or Shift+Enter starts a new one; a bracketed paste arrives whole, its
//! line breaks included). Enter sends; a text over the node's
//! [`MAX_MESSAGE_BYTES`] goes as several messages, cut at line breaks or
//! spaces, and the box says so before it is sent.
//!
//! The history scrolls: PageUp/PageDown by a page, Home/End to the oldest
//! and newest (while the box is empty; ctrl+Home/ctrl+End always). Messages
//! not from today carry their date; leading spaces and blank lines stay.

use super::{Component, Ctx, Msg, when, wrap};
use crate::node::api::{Command, ContactState, GroupCommand, MAX_MESSAGE_BYTES, MessageState};
use crate::overlay::Status;
use crate::ui::keys::Action;
use ratatui::Frame;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui_textarea::{TextArea, WrapMode};
use std::cell::Cell;

/// The most rows the box grows to (it scrolls beyond).
const MAX_INPUT_ROWS: u16 = 6;

#[derive(Debug)]
pub struct ChatPane {
    pub peer: Option<String>,
    /// The draft being typed.
    pub input: TextArea<'static>,
    /// History lines scrolled back from the newest (0: following new
    /// messages); clamped to the history when drawn.
    scroll: Cell<usize>,
    /// Rows of history last drawn: a page for PageUp/PageDown.
    page: Cell<u16>,
}

impl Default for ChatPane {
    fn default() -> Self {
        ChatPane {
            peer: None,
            input: new_input(),
            scroll: Cell::new(0),
            page: Cell::new(10),
        }
    }
}

fn new_input() -> TextArea<'static> {
    let mut t = TextArea::default();
    t.set_wrap_mode(WrapMode::WordOrGlyph);
    t.set_cursor_line_style(Style::default());
    t
}

/// `text` cut into pieces of at most `max` bytes, at the last line break
/// or else space of each piece when one lies in its second half (the
/// break itself is dropped), else at a character boundary.
pub fn split_message(text: &str, max: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let head = &rest[..cut];
        let brk = head
            .rfind('\n')
            .filter(|&i| i >= max / 2)
            .or_else(|| head.rfind(' ').filter(|&i| i >= max / 2));
        match brk {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + 1..];
            }
            None => {
                parts.push(head);
                rest = &rest[cut..];
            }
        }
    }
    if !rest.is_empty() {
        parts.push(rest);
    }
    parts
}

impl ChatPane {
    /// The draft as it would be sent: trailing white space and leading
    /// blank lines dropped, leading spaces of its first line kept.
    pub fn draft(&self) -> String {
        let lines = self.input.lines();
        let first = lines
            .iter()
            .position(|l| !l.trim().is_empty())
            .unwrap_or(lines.len());
        lines[first..].join("\n").trim_end().to_owned()
    }

    /// Size of the draft in bytes, without building it (cheap per frame).
    fn draft_len(&self) -> usize {
        let lines = self.input.lines();
        lines.iter().map(|l| l.len()).sum::<usize>() + lines.len() - 1
    }

    /// Back to the newest messages (a new conversation, a message sent).
    pub fn follow(&self) {
        self.scroll.set(0);
    }

    /// Scroll keys: whether `key` was one.
    fn scroll_key(&self, key: &KeyEvent) -> bool {
        let page = self.page.get().saturating_sub(1).max(1) as usize;
        let whole = key.modifiers.contains(KeyModifiers::CONTROL) || self.input.is_empty();
        let s = self.scroll.get();
        let to = match key.code {
            KeyCode::PageUp => s.saturating_add(page),
            KeyCode::PageDown => s.saturating_sub(page),
            KeyCode::Home if whole => usize::MAX,
            KeyCode::End if whole => 0,
            _ => return false,
        };
        self.scroll.set(to);
        true
    }

    pub fn on_key(&mut self, key: &KeyEvent) -> Option<Msg> {
        if self.scroll_key(key) {
            return None;
        }
        let newline = key
            .modifiers
            .intersects(KeyModifiers::ALT | KeyModifiers::SHIFT);
        if key.code == KeyCode::Enter && newline {
            self.input.insert_newline();
            return None;
        }
        if key.code == KeyCode::Enter {
            let to = self.peer.clone()?;
            let text = self.draft();
            if text.is_empty() {
                return None;
            }
            self.input = new_input();
            self.follow();
            let sends = split_message(&text, MAX_MESSAGE_BYTES)
                .into_iter()
                .map(|t| match to.strip_prefix('#') {
                    Some(group) => Command::Group(GroupCommand::Send {
                        group: group.to_owned(),
                        text: t.to_owned(),
                    }),
                    None => Command::SendMessage {
                        to: to.clone(),
                        text: t.to_owned(),
                    },
                })
                .collect();
            return Some(Msg::SendAll(sends));
        }
        self.input.input(*key);
        None
    }

    /// Text pasted into the box (bracketed paste): inserted whole, its
    /// line breaks as new lines.
    pub fn paste(&mut self, text: &str) {
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        self.input.insert_str(text);
    }

    /// Rows the box wants for `width` columns (its wrapped lines).
    fn input_rows(&self, width: u16) -> u16 {
        let w = width.max(1) as usize;
        let rows: usize = self
            .input
            .lines()
            .iter()
            .map(|l| {
                unicode_width::UnicodeWidthStr::width(l.as_str())
                    .div_ceil(w)
                    .max(1)
            })
            .sum();
        rows.min(MAX_INPUT_ROWS as usize) as u16
    }
}

impl Component for ChatPane {
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        let model = ctx.model;
        let border = if ctx.focused {
            Style::new().cyan()
        } else {
            Style::new()
        };
        let Some(peer) = &self.peer else {
            let block = Block::bordered().title(" Chat ").border_style(border);
            let inner = block.inner(area);
            f.render_widget(block, area);
            let hint = format!(
                "Select a contact and press {} to chat, {} to call.",
                ctx.keys.first(Action::OpenChat),
                ctx.keys.first(Action::Call)
            );
            let lines: Vec<Line> = wrap(&hint, inner.width as usize)
                .into_iter()
                .map(|l| Line::from(l).dark_gray())
                .collect();
            f.render_widget(Paragraph::new(lines), inner);
            return;
        };
        let group = peer.strip_prefix('#').and_then(|id| model.groups.get(id));
        let status = model
            .contacts
            .get(peer)
            .map(|c| c.status().name())
            .unwrap_or("not a contact");
        let title = match group {
            Some(g) => format!(
                " Group {} ({} members) ",
                g.entry.name,
                g.entry.members.len()
            ),
            None => format!(" Chat with {peer} ({status}) "),
        };
        let block = Block::bordered().title(title).border_style(border);
        let inner = block.inner(area);
        f.render_widget(block, area);
        // The box grows with its text, leaving the history at least 2 rows.
        let rows = self
            .input_rows(inner.width.saturating_sub(2))
            .min(inner.height.saturating_sub(3))
            .max(1);
        let [history, rule, input] = Layout::vertical([
            Constraint::Fill(1),
            Constraint::Length(1),
            Constraint::Length(rows),
        ])
        .areas(inner);
        // Newest at the bottom: lay out every message, show the tail.
        let me = model.me().unwrap_or("you");
        let mut lines: Vec<Line> = Vec::new();
        // A request opens with its greeting.
        if let Some(c) = model.contacts.get(peer)
            && c.state == ContactState::Pending
        {
            let said = match c.greeting.as_deref() {
                Some(g) if !g.is_empty() => format!(": “{g}”"),
                _ => String::new(),
            };
            let text = format!("{peer} wants to add you as a contact{said}");
            for l in wrap(&text, history.width as usize) {
                lines.push(Line::from(l).yellow());
            }
        }
        if let Some(g) = group {
            group_lines(g, model, history.width as usize, &mut lines);
        }
        for m in model.chats.get(peer).map(|v| v.as_slice()).unwrap_or(&[]) {
            let who = if m.outgoing { me } else { peer.as_str() };
            let mark = match &m.state {
                MessageState::Sending | MessageState::Arrived => " …",
                MessageState::Stored => " (stored)",
                MessageState::Retrying(_) => " (retrying)",
                MessageState::Delivered => " ✓",
                MessageState::Failed(_) => " ✗",
                MessageState::Received | MessageState::Read => "",
            };
            let head = format!("{} {who}: ", when(m.sent_at, model.now));
            let body = format!("{head}{}{mark}", m.text);
            let name_style = if m.outgoing {
                Style::new().cyan()
            } else {
                Style::new().magenta()
            };
            for (i, l) in body
                .split('\n')
                .flat_map(|p| wrap(p, history.width as usize))
                .enumerate()
            {
                if i == 0 && l.starts_with(&head) {
                    let (h, rest) = l.split_at(head.len());
                    lines.push(Line::from(vec![
                        Span::styled(h.to_owned(), name_style),
                        Span::raw(rest.to_owned()),
                    ]));
                } else {
                    lines.push(Line::from(l));
                }
            }
        }
        if lines.is_empty() {
            lines.push(Line::from("No messages yet.").dark_gray());
        }
        // The page that ends `scroll` lines above the newest.
        let height = history.height as usize;
        self.page.set(history.height);
        let scroll = self.scroll.get().min(lines.len().saturating_sub(height));
        self.scroll.set(scroll);
        let end = lines.len() - scroll;
        lines.truncate(end);
        let skip = end.saturating_sub(height);
        f.render_widget(Paragraph::new(lines.split_off(skip)), history);
        // The rule above the box says when the draft is long.
        let len = self.draft_len();
        let note = if len > MAX_MESSAGE_BYTES {
            let n = len.div_ceil(MAX_MESSAGE_BYTES);
            format!(" {len} bytes: over the {MAX_MESSAGE_BYTES}-byte limit, sent as {n}+ messages ")
        } else if len > MAX_MESSAGE_BYTES / 2 {
            format!(" {len}/{MAX_MESSAGE_BYTES} bytes ")
        } else if scroll > 0 {
            format!(" {scroll} lines below · End: newest ")
        } else {
            String::new()
        };
        let dashes = (rule.width as usize).saturating_sub(note.chars().count() + 2);
        let mut rule_line = vec![Span::raw(format!("──{note}")).dark_gray()];
        if len > MAX_MESSAGE_BYTES {
            rule_line[0] = Span::raw("──").dark_gray();
            rule_line.push(Span::raw(note).yellow());
        }
        rule_line.push(Span::raw("─".repeat(dashes)).dark_gray());
        f.render_widget(Line::from(rule_line), rule);
        let [prompt, field] =
            Layout::horizontal([Constraint::Length(2), Constraint::Fill(1)]).areas(input);
        f.render_widget(Span::raw("> ").bold(), prompt);
        if ctx.focused {
            f.render_widget(&self.input, field);
        } else if !self.input.is_empty() {
            // No cursor drawn in a box that has not the focus.
            let mut t = self.input.clone();
            t.set_cursor_style(Style::default());
            f.render_widget(&t, field);
        } else {
            f.render_widget(
                Span::raw(format!("{} to type", ctx.keys.first(Action::OpenChat))).dark_gray(),
                field,
            );
        }
    }
}

/// A group conversation: the members with their presence, then the
/// messages with join and leave lines.
fn group_lines(
    g: &crate::ui::model::group::GroupView,
    model: &crate::ui::model::Model,
    width: usize,
    lines: &mut Vec<Line<'static>>,
) {
    use crate::ui::model::group::GroupLine;
    let me = model.me().unwrap_or("you");
    let mut members = vec![Span::raw("members: ").dark_gray()];
    for m in &g.entry.members {
        let status = if m == me {
            model.own_status.as_ref().map_or(Status::Online, |s| s.0)
        } else {
            model
                .contacts
                .get(m)
                .map_or(Status::Offline, |c| c.status())
        };
        let (mark, color) = super::buddies::status_mark(status);
        members.push(Span::styled(format!("{mark} "), Style::new().fg(color)));
        let admin = if g.entry.admins.contains(m) { "*" } else { "" };
        members.push(Span::raw(format!("{m}{admin} ")));
    }
    lines.push(Line::from(members));
    for l in &g.lines {
        match l {
            GroupLine::Change(text) => {
                for w in wrap(&format!("— {text}"), width) {
                    lines.push(Line::from(w).dark_gray().italic());
                }
            }
            GroupLine::Message(m) => {
                let head = format!("{} {}: ", when(m.sent_at, model.now), m.from);
                let style = if m.outgoing {
                    Style::new().cyan()
                } else {
                    Style::new().magenta()
                };
                let body = format!("{head}{}", m.text);
                for (i, w) in body.split('\n').flat_map(|p| wrap(p, width)).enumerate() {
                    if i == 0 && w.starts_with(&head) {
                        let (h, rest) = w.split_at(head.len());
                        lines.push(Line::from(vec![
                            Span::styled(h.to_owned(), style),
                            Span::raw(rest.to_owned()),
                        ]));
                    } else {
                        lines.push(Line::from(w));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_prefers_line_breaks_then_spaces() {
        let text = format!("{}\n{}", "a".repeat(60), "b".repeat(30));
        assert_eq!(
            split_message(&text, 80),
            vec!["a".repeat(60), "b".repeat(30)]
        );
        let text = format!("{} {}", "a".repeat(50), "b".repeat(50));
        assert_eq!(
            split_message(&text, 80),
            vec!["a".repeat(50), "b".repeat(50)]
        );
        // No break in the second half: cut at a character boundary.
        let text = "é".repeat(50);
        let parts = split_message(&text, 15);
        assert!(parts.iter().all(|p| p.len() <= 15), "{parts:?}");
        assert_eq!(parts.concat(), text);
        assert_eq!(split_message("short", 80), vec!["short"]);
        assert!(split_message("", 80).is_empty());
    }

    #[test]
    fn every_part_fits() {
        let text = "word ".repeat(3000);
        let parts = split_message(&text, MAX_MESSAGE_BYTES);
        assert_eq!(parts.len(), 4);
        assert!(parts.iter().all(|p| p.len() <= MAX_MESSAGE_BYTES));
    }
}
