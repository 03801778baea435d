//! The chat pane: the conversation with one contact (history and new
//! messages with their delivery state) and the line to type in.

use super::{Component, Ctx, Msg, TextInput, clock, wrap};
use crate::node::api::{Command, MessageState};
use crate::ui::keys::Action;
use ratatui::Frame;
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

#[derive(Debug, Default)]
pub struct ChatPane {
    pub peer: Option<String>,
    pub input: TextInput,
}

impl ChatPane {
    pub fn on_key(&mut self, key: &KeyEvent) -> Option<Msg> {
        if key.code == KeyCode::Enter {
            let to = self.peer.clone()?;
            let text = self.input.value.trim().to_owned();
            if text.is_empty() {
                return None;
            }
            self.input.take();
            return Some(Msg::Send(Command::SendMessage { to, text }));
        }
        self.input.on_key(key);
        None
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
        let status = model
            .contacts
            .get(peer)
            .map(|c| super::buddies::status_name(c.status()))
            .unwrap_or("not a contact");
        let block = Block::bordered()
            .title(format!(" Chat with {peer} ({status}) "))
            .border_style(border);
        let inner = block.inner(area);
        f.render_widget(block, area);
        let [history, rule, input] = Layout::vertical([
            Constraint::Fill(1),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .areas(inner);
        // Newest at the bottom: lay out every message, show the tail.
        let me = model.me().unwrap_or("you");
        let mut lines: Vec<Line> = Vec::new();
        for m in model.chats.get(peer).map(|v| v.as_slice()).unwrap_or(&[]) {
            let who = if m.outgoing { me } else { peer.as_str() };
            let mark = match &m.state {
                MessageState::Sending | MessageState::Arrived => " …",
                MessageState::Stored => " (stored)",
                MessageState::Retrying(_) => " (retrying)",
                MessageState::Delivered => " ✓",
                MessageState::Failed(_) => " ✗",
                MessageState::Received => "",
            };
            let head = format!("{} {who}: ", clock(m.sent_at));
            let body = format!("{head}{}{mark}", m.text);
            let name_style = if m.outgoing {
                Style::new().cyan()
            } else {
                Style::new().magenta()
            };
            for (i, l) in wrap(&body, history.width as usize).into_iter().enumerate() {
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
        let skip = lines.len().saturating_sub(history.height as usize);
        f.render_widget(Paragraph::new(lines.split_off(skip)), history);
        f.render_widget(
            Line::from("─".repeat(rule.width as usize)).dark_gray(),
            rule,
        );
        let [prompt, field] =
            Layout::horizontal([Constraint::Length(2), Constraint::Fill(1)]).areas(input);
        f.render_widget(Span::raw("> ").bold(), prompt);
        if ctx.focused || !self.input.value.is_empty() {
            self.input.draw(f, field, ctx.focused);
        } else {
            f.render_widget(
                Span::raw(format!("{} to type", ctx.keys.first(Action::OpenChat))).dark_gray(),
                field,
            );
        }
    }
}
