//! First run: the register / log in form, and the login progress.

use super::{Component, Ctx, Msg, TextInput, centered};
use crate::node::api::{Command, LoginState};
use ratatui::Frame;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

#[derive(Debug, Default)]
pub struct LoginForm {
    pub user: TextInput,
    pub pass: TextInput,
    /// 0 username, 1 password, 2 the log in / register choice.
    field: usize,
    pub register: bool,
    prefilled: bool,
}

impl LoginForm {
    pub fn new() -> Self {
        LoginForm {
            pass: TextInput::masked(),
            ..Default::default()
        }
    }

    /// Fill the username the runtime suggests, once.
    pub fn suggest(&mut self, username: Option<&str>) {
        if let Some(u) = username
            && !self.prefilled
            && self.user.value.is_empty()
        {
            self.user.set(u);
            self.field = 1;
        }
        self.prefilled = true;
    }

    pub fn on_key(&mut self, key: &KeyEvent) -> Option<Msg> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Tab | KeyCode::Down => self.field = (self.field + 1) % 3,
            KeyCode::BackTab | KeyCode::Up => self.field = (self.field + 2) % 3,
            KeyCode::Char('r') if ctrl => self.register = !self.register,
            KeyCode::Left | KeyCode::Right | KeyCode::Char(' ') if self.field == 2 => {
                self.register = !self.register
            }
            KeyCode::Enter => {
                let username = self.user.value.trim().to_ascii_lowercase();
                if username.is_empty() {
                    self.field = 0;
                    return None;
                }
                if self.pass.value.is_empty() {
                    self.field = 1;
                    return None;
                }
                let password = self.pass.take();
                return Some(Msg::Send(if self.register {
                    Command::Register { username, password }
                } else {
                    Command::Login { username, password }
                }));
            }
            _ => {
                match self.field {
                    0 => self.user.on_key(key),
                    1 => self.pass.on_key(key),
                    _ => false,
                };
            }
        }
        None
    }
}

impl Component for LoginForm {
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        let box_area = centered(area, 56, 12);
        f.render_widget(Clear, box_area);
        let title = if self.register {
            " natter: create an account "
        } else {
            " natter: log in "
        };
        let block = Block::bordered().title(title.bold());
        let inner = block.inner(box_area);
        f.render_widget(block, box_area);
        let [intro, _, user, pass, choice, _, status, hint] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(2),
            Constraint::Length(1),
        ])
        .areas(inner);
        f.render_widget(
            Line::from("Log in to your account, or register a new one."),
            intro,
        );
        let busy = matches!(ctx.model.login, Some(LoginState::LoggingIn { .. }));
        let field = |f: &mut Frame, area: Rect, label: &str, input: &TextInput, i: usize| {
            let [l, v] =
                Layout::horizontal([Constraint::Length(11), Constraint::Fill(1)]).areas(area);
            let style = if self.field == i {
                Style::new().bold()
            } else {
                Style::new()
            };
            f.render_widget(Span::styled(label.to_owned(), style), l);
            f.render_widget(Span::raw("[").dark_gray(), v);
            let inner = Rect {
                x: v.x + 1,
                width: v.width.saturating_sub(2),
                ..v
            };
            input.draw(f, inner, self.field == i && !busy);
            f.render_widget(
                Span::raw("]").dark_gray(),
                Rect {
                    x: v.right().saturating_sub(1),
                    width: 1,
                    ..v
                },
            );
        };
        field(f, user, "Username", &self.user, 0);
        field(f, pass, "Password", &self.pass, 1);
        let mark = |on: bool| if on { "(•)" } else { "( )" };
        let choice_style = if self.field == 2 {
            Style::new().bold()
        } else {
            Style::new()
        };
        f.render_widget(
            Line::from(vec![
                Span::styled("Action     ", choice_style),
                Span::raw(format!("{} log in   ", mark(!self.register))),
                Span::raw(format!("{} register", mark(self.register))),
            ]),
            choice,
        );
        let text = match &ctx.model.login {
            None => Line::from("starting…").dark_gray(),
            Some(LoginState::LoggingIn { username }) => {
                Line::from(format!("talking to the authority as {username}…")).yellow()
            }
            Some(LoginState::NeedCredentials { error: Some(e), .. }) => {
                Line::from(format!("✗ {e}")).red()
            }
            _ => Line::default(),
        };
        f.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), status);
        f.render_widget(
            Line::from("Tab next field · ←/→ log in or register · Enter go").dark_gray(),
            hint,
        );
    }
}
