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
    /// Contacts marked for a conference (shown with a ✚).
    pub marked: std::collections::BTreeSet<String>,
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

/// A row of the list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Row<'m> {
    Contact(&'m String, &'m Contact),
    /// The heading of the requests and strangers below it.
    Heading,
    /// Someone not in the list who wrote to us, with their unread count.
    Stranger(&'m String, usize),
    /// A group we are in, by id.
    Group(&'m String, &'m crate::ui::model::group::GroupView),
}

/// What is selected: a name, and its contact state (`None`: a stranger).
pub type Selected = (String, Option<ContactState>);

/// The rows in order: contacts, our groups, then (under a heading)
/// contact requests and strangers who wrote.
pub fn rows(model: &Model) -> Vec<Row<'_>> {
    let pending = |c: &Contact| c.state == ContactState::Pending;
    let mut rows: Vec<Row> = model
        .contacts
        .iter()
        .filter(|(_, c)| !pending(c))
        .map(|(n, c)| Row::Contact(n, c))
        .collect();
    rows.extend(
        model
            .groups
            .iter()
            .filter(|(_, g)| g.entry.joined)
            .map(|(id, g)| Row::Group(id, g)),
    );
    let requests = model.contacts.iter().filter(|(_, c)| pending(c));
    let strangers = model.strangers.iter().map(|(n, u)| Row::Stranger(n, *u));
    let others: Vec<Row> = requests
        .map(|(n, c)| Row::Contact(n, c))
        .chain(strangers)
        .collect();
    if !others.is_empty() {
        rows.push(Row::Heading);
        rows.extend(others);
    }
    rows
}

impl BuddyList {
    fn index(&self, rows: &[Row]) -> Option<usize> {
        let n = rows.len();
        if n == 0 {
            return None;
        }
        let i = self.selected.min(n - 1);
        // Never the heading: the row after it (there always is one).
        Some(if rows[i] == Row::Heading { i + 1 } else { i })
    }

    pub fn selected(&self, model: &Model) -> Option<Selected> {
        let rows = rows(model);
        match rows.get(self.index(&rows)?)? {
            Row::Contact(n, c) => Some(((*n).clone(), Some(c.state))),
            Row::Stranger(n, _) => Some(((*n).clone(), None)),
            Row::Group(id, _) => Some((Model::group_key(id), None)),
            Row::Heading => None,
        }
    }

    pub fn select(&mut self, model: &Model, name: &str) {
        let found = rows(model).iter().position(|r| match r {
            Row::Contact(n, _) | Row::Stranger(n, _) => *n == name,
            Row::Group(id, _) => Model::group_key(id) == name,
            Row::Heading => false,
        });
        if let Some(i) = found {
            self.selected = i;
        }
    }

    /// Move the selection; returns whether the key was used.
    pub fn on_key(&mut self, key: &KeyEvent, model: &Model) -> bool {
        let rows = rows(model);
        let n = rows.len();
        let cur = self.index(&rows).unwrap_or(0);
        let heading = |i: usize| rows.get(i) == Some(&Row::Heading);
        self.selected = match key.code {
            KeyCode::Up | KeyCode::Char('k') => {
                let i = cur.saturating_sub(1);
                if heading(i) { i.saturating_sub(1) } else { i }
            }
            KeyCode::Down | KeyCode::Char('j') => {
                let i = (cur + 1).min(n.saturating_sub(1));
                if heading(i) { i + 1 } else { i }
            }
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
        let rows = rows(model);
        if rows.is_empty() {
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
        let unread = |n: usize| Span::raw(format!(" ({n})")).yellow().bold();
        let items: Vec<ListItem> = rows
            .iter()
            .map(|row| match row {
                Row::Heading => {
                    ListItem::new(Line::from("Requests and strangers").bold().dark_gray())
                }
                Row::Stranger(name, n) => {
                    let mut spans = vec![
                        Span::raw("✉ ").yellow(),
                        Span::raw((*name).clone()),
                        Span::raw(" wrote to you").dark_gray(),
                    ];
                    if *n > 0 {
                        spans.push(unread(*n));
                    }
                    ListItem::new(Line::from(spans))
                }
                Row::Group(_, g) => {
                    let mut spans = vec![
                        Span::raw("# ").cyan(),
                        Span::raw(g.entry.name.clone()),
                        Span::raw(format!(" · {} members", g.entry.members.len())).dark_gray(),
                    ];
                    if g.unread > 0 {
                        spans.push(unread(g.unread));
                    }
                    ListItem::new(Line::from(spans))
                }
                Row::Contact(name, c) => {
                    let (mark, color) = status_mark(c.status());
                    let mut spans = vec![
                        Span::styled(format!("{mark} "), Style::new().fg(color)),
                        Span::raw((*name).clone()),
                    ];
                    if self.marked.contains(*name) {
                        spans.push(Span::raw(" ✚").cyan().bold());
                    }
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
                        spans.push(unread(c.unread));
                    }
                    let mut lines = vec![Line::from(spans)];
                    // A request's greeting, under the name.
                    if let Some(g) = c.greeting.as_ref().filter(|g| !g.is_empty())
                        && c.state == ContactState::Pending
                    {
                        lines.push(Line::from(format!("  “{g}”")).italic().dark_gray());
                    }
                    ListItem::new(lines)
                }
            })
            .collect();
        let mut state = ListState::default().with_selected(self.index(&rows));
        let list = List::new(items)
            .block(block)
            .highlight_symbol("▶")
            .highlight_style(Style::new().reversed());
        f.render_stateful_widget(list, area, &mut state);
    }
}
