//! User search: a name typed in a small window, the directory's answer,
//! and adding a found user as a contact with a greeting they see with the
//! request.

use super::{Component, Ctx, Msg, TextInput, centered, wrap};
use crate::node::api::{Command, ContactState, LookupResult, check_username};
use crate::ui::model::Model;
use ratatui::Frame;
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Stylize;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

#[derive(Debug, Default)]
pub struct SearchBox {
    pub open: bool,
    pub input: TextInput,
    /// The name last searched for.
    asked: Option<String>,
    /// Why the name typed is no username (nothing was looked up).
    invalid: Option<String>,
    /// Adding a found user: their name and the greeting being written.
    greeting: Option<(String, TextInput)>,
}

/// The longest greeting (the contact request's limit).
const MAX_GREETING_BYTES: usize = 255;

impl SearchBox {
    pub fn open(&mut self) {
        self.open = true;
        self.input.take();
        self.asked = None;
        self.invalid = None;
        self.greeting = None;
    }

    /// The greeting being written, once a found user is being added.
    pub fn greeting(&self) -> Option<&str> {
        self.greeting.as_ref().map(|(_, g)| g.value.as_str())
    }

    pub fn on_key(&mut self, key: &KeyEvent, model: &Model) -> Option<Msg> {
        if let Some((name, mut text)) = self.greeting.take() {
            return match key.code {
                KeyCode::Esc => {
                    self.open = false;
                    Some(Msg::Close)
                }
                KeyCode::Enter => {
                    self.open = false;
                    Some(Msg::Send(Command::AddContact {
                        username: name,
                        greeting: text.value.trim().to_owned(),
                    }))
                }
                _ => {
                    text.on_key(key);
                    self.greeting = Some((name, text));
                    None
                }
            };
        }
        match key.code {
            KeyCode::Esc => {
                self.open = false;
                Some(Msg::Close)
            }
            KeyCode::Enter => {
                let name = self.input.value.trim().to_ascii_lowercase();
                if name.is_empty() {
                    return None;
                }
                if let Err(why) = check_username(&name) {
                    self.asked = None;
                    self.invalid = Some(why);
                    return None;
                }
                let found = matches!(
                    model.lookups.get(&name),
                    Some(
                        LookupResult::Online { .. }
                            | LookupResult::Offline { .. }
                            | LookupResult::Private
                    )
                );
                let blocked = model
                    .contacts
                    .get(&name)
                    .is_some_and(|c| c.state == ContactState::Blocked);
                if found && blocked && self.asked.as_deref() == Some(name.as_str()) {
                    self.open = false;
                    return Some(Msg::Confirm {
                        question: format!("{name} is blocked. Unblock and add them?"),
                        commands: vec![
                            Command::UnblockContact {
                                username: name.clone(),
                            },
                            Command::AddContact {
                                username: name,
                                greeting: String::new(),
                            },
                        ],
                    });
                }
                if found && self.asked.as_deref() == Some(name.as_str()) {
                    // Then the greeting, sent with the request.
                    let mut text = TextInput::limited(MAX_GREETING_BYTES);
                    text.set(&format!("Hi {name}, please add me to your contacts."));
                    self.greeting = Some((name, text));
                    return None;
                }
                self.asked = Some(name.clone());
                Some(Msg::Send(Command::SearchUser { username: name }))
            }
            _ => {
                self.input.on_key(key);
                self.invalid = None;
                None
            }
        }
    }
}

impl SearchBox {
    /// The greeting step: who is added, and the text they will see.
    fn draw_greeting(&self, f: &mut Frame, area: Rect, name: &str, text: &TextInput) {
        let area = centered(area, 52, 8);
        f.render_widget(Clear, area);
        let block = Block::bordered().title(format!(" Add {name} ").bold());
        let inner = block.inner(area);
        f.render_widget(block, area);
        let [label, field, _, note, hint] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(inner);
        f.render_widget(Line::from("Greeting:").bold(), label);
        text.draw(f, field, true);
        let lines: Vec<Line> = wrap(
            &format!("{name} sees it with your request."),
            note.width as usize,
        )
        .into_iter()
        .map(|l| Line::from(l).dark_gray())
        .collect();
        f.render_widget(Paragraph::new(lines), note);
        f.render_widget(
            Line::from("Enter send request · Esc cancel").dark_gray(),
            hint,
        );
    }
}

impl Component for SearchBox {
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        if let Some((name, text)) = &self.greeting {
            return self.draw_greeting(f, area, name, text);
        }
        let area = centered(area, 52, 8);
        f.render_widget(Clear, area);
        let block = Block::bordered().title(" Find a user ".bold());
        let inner = block.inner(area);
        f.render_widget(block, area);
        let [field, _, result, hint] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(inner);
        let [label, input] =
            Layout::horizontal([Constraint::Length(6), Constraint::Fill(1)]).areas(field);
        f.render_widget(Span::raw("Name: ").bold(), label);
        self.input.draw(f, input, true);
        // The answer for the name in the field: once it is edited, the
        // answer for the old name goes.
        let typed = self.input.value.trim().to_ascii_lowercase();
        let asked = self.asked.as_ref().filter(|n| **n == typed);
        let text: Line = match (asked, &self.invalid) {
            (_, Some(why)) => Line::from(format!("not a username: {why}")).red(),
            (None, None) => Line::from("Type a username and press Enter.").dark_gray(),
            (Some(name), None) => match ctx.model.lookups.get(name) {
                None => Line::from(format!("looking up {name}…")).yellow(),
                Some(LookupResult::Online { status, message }) => {
                    let (mark, color) = super::buddies::status_mark(*status);
                    let mut s = vec![
                        Span::raw(format!("{mark} ")).fg(color),
                        Span::raw(format!("{name} is {}", status.name())),
                    ];
                    if !message.is_empty() {
                        s.push(Span::raw(format!(" · {message}")).dark_gray());
                    }
                    Line::from(s)
                }
                Some(LookupResult::Offline {
                    last_seen: Some(seen),
                }) => Line::from(format!(
                    "○ {name} is offline, last seen {} UTC",
                    crate::identity::cert::fmt_time(*seen)
                )),
                Some(LookupResult::Offline { last_seen: None }) => {
                    Line::from(format!("○ {name} is offline"))
                }
                Some(LookupResult::Private) => {
                    Line::from(format!("◌ {name} exists (status shown to contacts only)"))
                }
                Some(LookupResult::NotFound) => Line::from(format!("{name}: no such user")).red(),
                Some(LookupResult::Failed(why)) => {
                    Line::from(format!("looking up {name} failed: {why}")).red()
                }
            },
        };
        let found = self.asked.as_ref().is_some_and(|n| {
            n == self.input.value.trim()
                && matches!(
                    ctx.model.lookups.get(n),
                    Some(
                        LookupResult::Online { .. }
                            | LookupResult::Offline { .. }
                            | LookupResult::Private
                    )
                )
        });
        let mut lines = vec![text];
        let known = ctx
            .model
            .contacts
            .get(self.asked.as_deref().unwrap_or(""))
            .map(|c| c.state);
        match known {
            _ if !found => {}
            None => lines.push(
                Line::from("Enter again writes a greeting and adds them as a contact.").cyan(),
            ),
            Some(ContactState::Blocked) => lines.push(
                Line::from("You blocked them: Enter again offers to unblock and add them.").cyan(),
            ),
            Some(_) => {}
        }
        let wrapped: Vec<Line> = lines
            .into_iter()
            .flat_map(|l| {
                let style = l.style;
                let text: String = l.spans.iter().map(|s| s.content.as_ref()).collect();
                if text.chars().count() <= result.width as usize {
                    vec![l]
                } else {
                    wrap(&text, result.width as usize)
                        .into_iter()
                        .map(|w| Line::from(w).style(style))
                        .collect()
                }
            })
            .collect();
        f.render_widget(Paragraph::new(wrapped), result);
        f.render_widget(Line::from("Enter search · Esc close").dark_gray(), hint);
    }
}
