//! The NAT status panel: mapping and filtering behaviour, our public
//! address and the supernodes we are attached to.

use super::{Component, Ctx};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

#[derive(Debug, Default)]
pub struct NatPanel;

impl Component for NatPanel {
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        let m = ctx.model;
        let row = |k: &str, v: String, style: Style| {
            Line::from(vec![
                Span::raw(format!("{k:<11}")).bold(),
                Span::styled(v, style),
            ])
        };
        let unknown = |v: &Option<String>| {
            v.clone()
                .map(|s| (s, Style::new()))
                .unwrap_or(("not measured".into(), Style::new().dark_gray()))
        };
        let mut lines = Vec::new();
        if m.nat.udp_blocked {
            lines.push(row("UDP", "blocked".into(), Style::new().red()));
        }
        let (map, s1) = unknown(&m.nat.mapping);
        lines.push(row("mapping", map, s1));
        let (filt, s2) = unknown(&m.nat.filtering);
        lines.push(row("filtering", filt, s2));
        lines.push(row(
            "public",
            m.nat
                .public_addr
                .map(|a| a.to_string())
                .unwrap_or_else(|| "unknown".into()),
            Style::new(),
        ));
        if m.supernodes.is_empty() {
            let (text, style) = if m.nat.unreachable {
                ("unreachable (down?)", Style::new().red())
            } else {
                ("none attached", Style::new().yellow())
            };
            lines.push(row("supernodes", text.into(), style));
        }
        for s in &m.supernodes {
            let role = if s.primary { "primary" } else { "backup" };
            lines.push(row(role, s.addr.to_string(), Style::new()));
        }
        if let Some(n) = &m.nat.note {
            lines.push(Line::from(n.clone()).dark_gray());
        }
        let block = Block::bordered().title(" Network ");
        f.render_widget(
            Paragraph::new(lines).block(block).wrap(Wrap { trim: true }),
            area,
        );
    }
}
