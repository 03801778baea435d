//! The buddy list: contacts with their presence, requests and unread
//! counts; the selection picks whom to chat with or call.

use super::{Component, Ctx};
use crate::node::api::ContactState;
use crate::overlay::Status;
use crate::ui::keys::Action;
use crate::ui::model::{Contact, Model};
use ratatui::Frame;
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::Rect;
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, List, ListItem, ListState};

#[derive(Debug, Default)]
pub struct BuddyList {
    selected: usize,
}

/// The symbol and colour of a status.
pub fn status_mark(s: Status) -> (&'static str, Color) {
    match s {
        Status::Online => ("●", Color::Green),
        Status::Away => ("◐", Color::Yellow),
        Status::DoNotDisturb => ("⊘", Color::Red),
        Status::Invisible => ("◌", Color::DarkGray),
        Status::Offline => ("○", Color::DarkGray),
    }
}

pub fn status_name(s: Status) -> &'static str {
    match s {
        Status::Online => "online",
        Status::Away => "away",
        Status::DoNotDisturb => "do not disturb",
        Status::Invisible => "invisible",
        Status::Offline => "offline",
    }
}

impl BuddyList {
    pub fn selected<'m>(&self, model: &'m Model) -> Option<(&'m String, &'m Contact)> {
        let n = model.contacts.len();
        if n == 0 {
            return None;
        }
        model.contacts.iter().nth(self.selected.min(n - 1))
    }

    pub fn select(&mut self, model: &Model, name: &str) {
        if let Some(i) = model.contacts.keys().position(|k| k == name) {
            self.selected = i;
        }
    }

    /// Move the selection; returns whether the key was used.
    pub fn on_key(&mut self, key: &KeyEvent, model: &Model) -> bool {
        let n = model.contacts.len();
        let cur = self.selected.min(n.saturating_sub(1));
        self.selected = match key.code {
            KeyCode::Up | KeyCode::Char('k') => cur.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => (cur + 1).min(n.saturating_sub(1)),
            KeyCode::Home => 0,
            KeyCode::End => n.saturating_sub(1),
            _ => return false,
        };
        true
    }
}

impl Component for BuddyList {
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        let model = ctx.model;
        let border = if ctx.focused {
            Style::new().cyan()
        } else {
            Style::new()
        };
        let block = Block::bordered()
            .title(format!(" Contacts ({}) ", model.contacts.len()))
            .border_style(border);
        if model.contacts.is_empty() {
            let inner = block.inner(area);
            f.render_widget(block, area);
            let hint = format!(
                "No contacts yet. {} finds a user.",
                ctx.keys.first(Action::Search)
            );
            let lines: Vec<Line> = super::wrap(&hint, inner.width as usize)
                .into_iter()
                .map(|l| Line::from(l).dark_gray())
                .collect();
            f.render_widget(ratatui::widgets::Paragraph::new(lines), inner);
            return;
        }
        let items: Vec<ListItem> = model
            .contacts
            .iter()
            .map(|(name, c)| {
                let (mark, color) = status_mark(c.status());
                let mut spans = vec![
                    Span::styled(format!("{mark} "), Style::new().fg(color)),
                    Span::raw(name.clone()),
                ];
                let extra = match c.state {
                    ContactState::Pending => " wants to add you".to_owned(),
                    ContactState::Requested => " (asked)".to_owned(),
                    ContactState::Blocked => " (blocked)".to_owned(),
                    _ => match &c.presence {
                        Some(p) if !p.message.is_empty() => format!(" · {}", p.message),
                        _ => String::new(),
                    },
                };
                spans.push(Span::raw(extra).dark_gray());
                if c.unread > 0 {
                    spans.push(Span::raw(format!(" ({})", c.unread)).yellow().bold());
                }
                ListItem::new(Line::from(spans))
            })
            .collect();
        let mut state =
            ListState::default().with_selected(Some(self.selected.min(model.contacts.len() - 1)));
        let list = List::new(items)
            .block(block)
            .highlight_symbol("▶")
            .highlight_style(Style::new().reversed());
        f.render_stateful_widget(list, area, &mut state);
    }
}
