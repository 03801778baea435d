//! The account's devices window: every device the account logged in on
//! (name, id, last seen, this one and revoked ones marked), as the
//! authority lists them; a selected device is revoked after the account's
//! password (a masked prompt) and a y/n question.

use super::{Component, Ctx, Msg, TextInput, centered, when};
use crate::node::api::{Command, DeviceInfo};
use crate::ui::model::Model;
use ratatui::Frame;
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

/// Asking for the password to revoke one device.
#[derive(Debug)]
pub struct RevokePrompt {
    /// The device to revoke.
    pub device: DeviceInfo,
    /// The account's password (masked).
    pub input: TextInput,
}

impl RevokePrompt {
    fn new(device: DeviceInfo) -> Self {
        RevokePrompt {
            device,
            input: TextInput::masked(),
        }
    }

    /// Enter asks the y/n question with the revoke command; Esc cancels.
    fn on_key(&mut self, key: &KeyEvent) -> Option<Msg> {
        match key.code {
            KeyCode::Esc => Some(Msg::Close),
            KeyCode::Enter if self.input.value.is_empty() => None,
            KeyCode::Enter => {
                let d = &self.device;
                let question = if d.this_device {
                    format!(
                        "{} ({}) is THIS device: natter stops working here until you log in again. Revoke it?",
                        d.name, d.id
                    )
                } else {
                    format!(
                        "Revoke {} ({})? It can no longer log in or reach the network.",
                        d.name, d.id
                    )
                };
                Some(Msg::Confirm {
                    question,
                    commands: vec![Command::RevokeDevice {
                        device: d.id.clone(),
                        password: self.input.take(),
                    }],
                })
            }
            _ => {
                self.input.on_key(key);
                None
            }
        }
    }

    fn draw(&self, f: &mut Frame, area: Rect) {
        let r = centered(area, 60.min(area.width), 6);
        f.render_widget(Clear, r);
        let title = format!(" Revoke {} ", self.device.name);
        let block = Block::bordered()
            .title(title.bold())
            .border_style(Style::new().red());
        let inner = block.inner(r);
        f.render_widget(block, r);
        let [what, field, _, hint] = Layout::vertical([Constraint::Length(1); 4]).areas(inner);
        f.render_widget(Line::from("Your account's password:"), what);
        self.input.draw(f, field, true);
        f.render_widget(Line::from("Enter revoke · Esc cancel").dark_gray(), hint);
    }
}

/// The devices window.
#[derive(Debug, Default)]
pub struct DevicesWindow {
    pub open: bool,
    /// The selected row (in the authority's order).
    selected: usize,
    /// Asking for the password, when open.
    pub prompt: Option<RevokePrompt>,
}

impl DevicesWindow {
    /// Open on the first row (the list itself is asked for by the app).
    pub fn open(&mut self) {
        self.open = true;
        self.selected = 0;
        self.prompt = None;
    }

    fn rows(model: &Model) -> &[DeviceInfo] {
        model.devices.as_deref().unwrap_or_default()
    }

    fn row<'m>(&self, model: &'m Model) -> Option<&'m DeviceInfo> {
        let rows = Self::rows(model);
        rows.get(self.selected.min(rows.len().saturating_sub(1)))
    }

    pub fn on_key(&mut self, key: &KeyEvent, model: &Model) -> Option<Msg> {
        if let Some(mut p) = self.prompt.take() {
            return match p.on_key(key) {
                Some(Msg::Close) => None,
                Some(m) => Some(m),
                None => {
                    self.prompt = Some(p);
                    None
                }
            };
        }
        let n = Self::rows(model).len();
        match key.code {
            KeyCode::Esc | KeyCode::Char('q') => {
                self.open = false;
                Some(Msg::Close)
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.selected = self.selected.min(n.saturating_sub(1)).saturating_sub(1);
                None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(n.saturating_sub(1));
                None
            }
            KeyCode::Char('r') | KeyCode::Delete => {
                let d = self.row(model).filter(|d| d.revoked_at.is_none())?;
                self.prompt = Some(RevokePrompt::new(d.clone()));
                None
            }
            _ => None,
        }
    }

    /// The keys for the selected row.
    fn hints(&self, model: &Model) -> &'static str {
        match self.row(model) {
            Some(d) if d.revoked_at.is_none() => "r revoke · ↑↓ select · Esc close",
            _ => "↑↓ select · Esc close",
        }
    }
}

/// The two lines of one device.
fn row_lines(d: &DeviceInfo, selected: bool, model: &Model) -> [Line<'static>; 2] {
    let at = |t: crate::time::UnixSecs| when(crate::time::UnixMillis(t.get() * 1000), model.now);
    let mut first = vec![
        Span::raw(if selected { "▶ " } else { "  " }),
        Span::raw(d.name.clone()).bold(),
        Span::raw(format!("  {}", d.id)).dark_gray(),
    ];
    if d.this_device {
        first.push(Span::raw("  (this device)").green());
    }
    if selected {
        for s in &mut first {
            s.style = s.style.reversed();
        }
    }
    let second = match d.revoked_at {
        Some(t) => Line::from(format!("    revoked {}", at(t))).red(),
        None => Line::from(format!(
            "    last seen {} · first {}",
            at(d.last_seen),
            at(d.first_seen)
        ))
        .dark_gray(),
    };
    [Line::from(first), second]
}

impl Component for DevicesWindow {
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        let rows = Self::rows(ctx.model);
        let w = 72.min(area.width);
        let h = (rows.len().max(1) as u16 * 2 + 4).min(area.height);
        let r = centered(area, w, h);
        f.render_widget(Clear, r);
        let title = match ctx.model.me() {
            Some(me) => format!(" Devices of {me} "),
            None => " Devices ".to_owned(),
        };
        let block = Block::bordered()
            .title(title.bold())
            .border_style(Style::new().cyan());
        let inner = block.inner(r);
        f.render_widget(block, r);
        let [list, _, hint] = Layout::vertical([
            Constraint::Fill(1),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .areas(inner);
        let selected = self.selected.min(rows.len().saturating_sub(1));
        let lines: Vec<Line> = if ctx.model.devices.is_none() {
            vec![Line::from("Asking the authority…").dark_gray()]
        } else {
            let fit = (list.height as usize / 2).max(1);
            let start = selected.saturating_sub(fit - 1);
            rows.iter()
                .enumerate()
                .skip(start)
                .take(fit)
                .flat_map(|(i, d)| row_lines(d, i == selected, ctx.model))
                .collect()
        };
        f.render_widget(Paragraph::new(lines), list);
        f.render_widget(Line::from(self.hints(ctx.model)).dark_gray(), hint);
        if let Some(p) = &self.prompt {
            p.draw(f, area);
        }
    }
}
