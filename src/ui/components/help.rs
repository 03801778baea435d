//! The help overlay: every action and the keys bound to it, from the
//! config's `[keys]` section. Taller than the screen, it scrolls (↑/↓).

use super::{Component, Ctx, centered};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Stylize;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use std::cell::Cell;

#[derive(Debug)]
pub struct Help<'a> {
    /// Lines scrolled down from the top; drawing clamps it to the rows
    /// that do not fit.
    pub scroll: &'a Cell<u16>,
}

impl Component for Help<'_> {
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        let mut lines: Vec<Line> = ctx
            .keys
            .bindings
            .iter()
            .map(|(a, chords)| {
                let keys = if chords.is_empty() {
                    "(unbound)".to_owned()
                } else {
                    chords
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                Line::from(vec![
                    Span::raw(format!(" {keys:<14}")).cyan().bold(),
                    Span::raw(a.describe()),
                ])
            })
            .collect();
        lines.push(Line::from(" ↑/↓ or j/k    move in the contact list").dark_gray());
        lines.push(
            Line::from(" plain keys act when no text field has the focus, ctrl keys always")
                .dark_gray(),
        );
        lines.push(Line::from(" keys are set in the [keys] section of natter.toml").dark_gray());
        let h = lines.len() as u16 + 2;
        let area = centered(area, 72, h);
        // Rows that do not fit: the arrows scroll them into view.
        let hidden = h.saturating_sub(area.height);
        let scroll = self.scroll.get().min(hidden);
        self.scroll.set(scroll);
        let title = if hidden > 0 {
            " Help: keys (↑/↓ scroll) "
        } else {
            " Help: keys "
        };
        f.render_widget(Clear, area);
        f.render_widget(
            Paragraph::new(lines)
                .scroll((scroll, 0))
                .block(Block::bordered().title(title.bold())),
            area,
        );
    }
}
