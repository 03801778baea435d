//! The call panel: the call's state and timer, mute and hold, the
//! microphone level meter, the estimated quality (MOS as bars) and the
//! voice processing on (EC echo cancellation, NS noise suppression, AGC
//! auto gain), live RTT/loss/jitter and the media path; and the
//! incoming-call prompt.

use super::{Component, Ctx, centered, duration, when};
use crate::node::api::{CallInfo, CallState, MediaPath};
use crate::time::UnixMillis;
use crate::ui::keys::Action;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

#[derive(Debug, Default)]
pub struct CallPanel;

/// A text meter of `width` cells for a level 0.0-1.0.
pub fn meter(level: f32, width: usize) -> String {
    let lit = ((level.clamp(0.0, 1.0) * width as f32).round() as usize).min(width);
    format!("{}{}", "▮".repeat(lit), "▯".repeat(width - lit))
}

pub fn state_text(c: &CallInfo, now: UnixMillis) -> (String, Color) {
    match &c.state {
        CallState::Dialing => (format!("calling {}…", c.peer), Color::Yellow),
        CallState::Ringing => (format!("ringing {}…", c.peer), Color::Yellow),
        CallState::Incoming => (format!("{} is calling you", c.peer), Color::Yellow),
        CallState::Connecting => (format!("connecting to {}…", c.peer), Color::Yellow),
        CallState::Active => {
            let t = c
                .answered_at
                .map(|a| duration(now.since(a)))
                .unwrap_or_default();
            (format!("in call with {} {t}", c.peer), Color::Green)
        }
        CallState::Ended { reason, detail } => (
            format!(
                "call with {} ended: {}",
                c.peer,
                CallState::end_text(reason, detail)
            ),
            Color::DarkGray,
        ),
    }
}

/// How much a line of the panel may be dropped when rows are short:
/// the state, the keys and the audio devices stay; the path goes first.
type Prio = u8;
const KEEP: Prio = 0;

impl CallPanel {
    /// The panel's lines, each with its priority (higher goes first).
    fn lines<'a>(&self, ctx: &Ctx<'a>) -> Vec<(Prio, Line<'a>)> {
        let m = ctx.model;
        let k = ctx.keys;
        let mut lines = Vec::new();
        if let Some(c) = m.conference.as_ref().filter(|c| !c.ended) {
            conference_lines(c, m.me(), &mut lines);
            if c.joined() {
                let mut keys = format!(
                    "{} {} · {} add · {} leave",
                    ctx.key(Action::Mute),
                    if m.conference_muted() {
                        "unmute"
                    } else {
                        "mute"
                    },
                    ctx.key(Action::ConferenceAdd),
                    ctx.key(Action::HangUp)
                );
                if c.we_started {
                    keys += &format!(" · {} mute selected", ctx.key(Action::MuteOther));
                }
                lines.push((KEEP, Line::from(keys).dark_gray()));
            }
        }
        match m
            .current_call()
            .filter(|_| m.conference.as_ref().is_none_or(|c| c.ended))
        {
            None if m.conference.as_ref().is_some_and(|c| !c.ended) => {}
            None => {
                lines.push((
                    KEEP,
                    Line::from(format!(
                        "No call. Select a contact and press {} to call.",
                        k.first(Action::Call)
                    ))
                    .dark_gray(),
                ));
            }
            Some(c) => {
                let (mut text, color) = state_text(c, m.now);
                // An ended call that was answered says how long it lasted.
                if matches!(c.state, CallState::Ended { .. })
                    && let Some(r) = m
                        .call_log
                        .first()
                        .filter(|r| r.peer == c.peer && r.answered_at == c.answered_at)
                    && r.answered_at.is_some()
                {
                    text = text.replacen(
                        " ended:",
                        &format!(" ended after {}:", duration(r.duration_ms())),
                        1,
                    );
                }
                let mut head = vec![Span::styled(text, Style::new().fg(color).bold())];
                let live = !matches!(c.state, CallState::Ended { .. });
                // An ended call is neither muted nor held any more.
                if live && c.muted {
                    head.push(Span::raw("  [muted]").red());
                }
                if live && c.held {
                    head.push(Span::raw("  [on hold]").yellow());
                }
                if live && c.remote_held {
                    head.push(Span::raw(format!("  [held by {}]", c.peer)).yellow());
                }
                lines.push((KEEP, Line::from(head)));
                if let Some(s) = m.stats.get(&c.id).filter(|_| live) {
                    let level = if c.muted { 0.0 } else { s.mic_level };
                    lines.push((
                        1,
                        Line::from(vec![
                            Span::raw("mic  ").bold(),
                            Span::raw(meter(level, 12)).green(),
                            Span::raw(format!("  {}", s.codec)).dark_gray(),
                            // Media packets sent and received: they move
                            // while the call carries audio.
                            Span::raw(format!(" ↑{} ↓{}", s.packets_sent, s.packets_received)),
                        ]),
                    ));
                    // The estimated quality as bars (no estimate yet: a
                    // MOS is at least 1), and the voice processing on:
                    // echo cancellation, noise suppression, auto gain.
                    let q = &s.media.quality;
                    let mut l = Vec::new();
                    if q.mos >= 1.0 {
                        let lit = q.bars.min(5) as usize;
                        let color = match q.bars {
                            4.. => Color::Green,
                            2..=3 => Color::Yellow,
                            _ => Color::Red,
                        };
                        l.push(Span::raw("quality ").bold());
                        l.push(Span::raw("▮".repeat(lit) + &"▯".repeat(5 - lit)).fg(color));
                        l.push(Span::raw(format!(" MOS {:.1}  ", q.mos)));
                    }
                    let st = s.media.processing.stages;
                    let on: Vec<&str> = [
                        (st.echo_cancellation, "EC"),
                        (st.noise_suppression, "NS"),
                        (st.auto_gain, "AGC"),
                    ]
                    .iter()
                    .filter(|(b, _)| *b)
                    .map(|(_, n)| *n)
                    .collect();
                    l.push(Span::raw("voice ").bold());
                    l.push(Span::raw(if on.is_empty() {
                        "unprocessed".to_owned()
                    } else {
                        on.join("·")
                    }));
                    lines.push((1, Line::from(l)));
                    lines.push((
                        2,
                        Line::from(vec![
                            Span::raw("rtt ").bold(),
                            Span::raw(
                                s.rtt_ms
                                    .map(|r| format!("{r} ms"))
                                    .unwrap_or_else(|| "–".into()),
                            ),
                            Span::raw("  loss ").bold(),
                            Span::raw(format!("{:.1} %", s.loss_pct)),
                            Span::raw("  jitter ").bold(),
                            Span::raw(format!("{:.1} ms", s.jitter_ms)),
                        ]),
                    ));
                    let path = match &s.path {
                        MediaPath::Unknown => "finding a path…".to_owned(),
                        MediaPath::Direct { remote } => format!("direct to {remote}"),
                        MediaPath::Relayed { supernode } => format!("relayed through {supernode}"),
                        MediaPath::RelayedTcp { supernode } => {
                            format!("relayed over TCP through {supernode}")
                        }
                    };
                    lines.push((
                        3,
                        Line::from(vec![Span::raw("path ").bold(), Span::raw(path)]),
                    ));
                }
                if live && c.state != CallState::Incoming {
                    // `+` is text while typing in the chat.
                    let add = if c.state == CallState::Active && !ctx.typing {
                        format!(" · {} add", ctx.key(Action::ConferenceAdd))
                    } else {
                        String::new()
                    };
                    lines.push((
                        KEEP,
                        Line::from(format!(
                            "{} mute · {} hold{add} · {} hang up",
                            ctx.key(Action::Mute),
                            ctx.key(Action::Hold),
                            ctx.key(Action::HangUp)
                        ))
                        .dark_gray(),
                    ));
                }
            }
        }
        // Recent calls while none is live: missed ones first to the eye.
        let live = m
            .current_call()
            .is_some_and(|c| !matches!(c.state, CallState::Ended { .. }));
        if !live {
            for r in m.call_log.iter().take(3) {
                let at = when(r.started_at, m.now);
                let line = if r.missed() {
                    let s = Line::from(format!("✗ missed call from {} at {at}", r.with_whom()));
                    if r.seen {
                        s.dark_gray()
                    } else {
                        s.red().bold()
                    }
                } else {
                    let arrow = if r.outgoing { "↗" } else { "↙" };
                    let how = match r.answered_at {
                        Some(_) => duration(r.duration_ms()),
                        None => "not answered".into(),
                    };
                    Line::from(format!("{arrow} {} at {at}, {how}", r.with_whom())).dark_gray()
                };
                lines.push((2, line));
            }
        }
        if let Some(a) = &m.audio {
            let mut l = vec![
                Span::raw("audio ").bold(),
                Span::raw(format!("in {} · out {}", a.input, a.output)),
            ];
            // The full note when there is room, i.e. no call on screen.
            match &a.fallback {
                Some(n) if m.current_call().is_none() => {
                    l.push(Span::raw(format!(" · {n}")).yellow())
                }
                Some(_) => l.push(Span::raw(" (no sound card)").yellow()),
                None => {}
            }
            lines.push((KEEP, Line::from(l)));
        }
        lines
    }

    /// Rows the panel needs at `width` to show every line, borders included.
    pub fn wanted_height(&self, ctx: &Ctx, width: u16) -> u16 {
        let inner = width.saturating_sub(2).max(1) as usize;
        let rows: usize = self.lines(ctx).iter().map(|(_, l)| rows_of(l, inner)).sum();
        rows as u16 + 2
    }
}

/// The conference: a head line, then each participant with a speaking
/// dot, a level meter, mute and who mixes.
fn conference_lines<'a>(
    c: &crate::ui::model::conference::ConferenceView,
    me: Option<&str>,
    lines: &mut Vec<(Prio, Line<'a>)>,
) {
    if let Some(from) = &c.invited_by {
        lines.push((
            KEEP,
            Line::from(format!("{from} invites you to a conference"))
                .yellow()
                .bold(),
        ));
        return;
    }
    lines.push((
        KEEP,
        Line::from(format!(
            "conference · {} participants · mixed by {}",
            c.participants.len(),
            if Some(c.mixer.as_str()) == me {
                "you"
            } else {
                c.mixer.as_str()
            }
        ))
        .green()
        .bold(),
    ));
    for (name, p) in &c.participants {
        let dot = if p.speaking() {
            Span::raw("● ").green()
        } else {
            Span::raw("○ ").dark_gray()
        };
        let who = if Some(name.as_str()) == me {
            format!("{name} (you)")
        } else {
            name.clone()
        };
        let mut l = vec![
            dot,
            Span::raw(format!("{who:<16} ")),
            Span::raw(meter(f32::from(p.level) / 255.0, 10)),
        ];
        if p.muted {
            l.push(Span::raw("  [muted]").red());
        }
        if *name == c.mixer {
            l.push(Span::raw("  mixing").dark_gray());
        }
        lines.push((1, Line::from(l)));
    }
}

/// Terminal rows `line` takes when wrapped at `width` cells.
fn rows_of(line: &Line, width: usize) -> usize {
    line.width().div_ceil(width).max(1)
}

impl Component for CallPanel {
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        let block = Block::bordered().title(" Call ");
        let mut lines = self.lines(ctx);
        // Short of rows (a small terminal): drop the least needed lines,
        // so that the state, the keys and the devices stay in view.
        let inner = area.width.saturating_sub(2).max(1) as usize;
        let rows = area.height.saturating_sub(2) as usize;
        while lines.iter().map(|(_, l)| rows_of(l, inner)).sum::<usize>() > rows {
            let Some((i, _)) = lines
                .iter()
                .enumerate()
                .filter(|(_, (p, _))| *p > KEEP)
                .max_by_key(|(i, (p, _))| (*p, *i))
            else {
                break;
            };
            lines.remove(i);
        }
        let lines: Vec<Line> = lines.into_iter().map(|(_, l)| l).collect();
        f.render_widget(
            Paragraph::new(lines).block(block).wrap(Wrap { trim: true }),
            area,
        );
    }
}

/// The modal prompt for an incoming call or a conference invitation.
#[derive(Debug, Default)]
pub struct IncomingPrompt;

impl IncomingPrompt {
    fn conference(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        let Some(c) = ctx.model.conference_invite() else {
            return;
        };
        let from = c.invited_by.clone().unwrap_or_default();
        let me = ctx.model.me();
        let others: Vec<&str> = c
            .invited_with
            .iter()
            .map(String::as_str)
            .filter(|n| *n != from && Some(*n) != me)
            .collect();
        let with = if others.is_empty() {
            String::new()
        } else {
            format!("with {}", others.join(", "))
        };
        let w = 50.min(area.width);
        let area = centered(area, w, 6);
        f.render_widget(Clear, area);
        let block = Block::bordered()
            .title(" Conference ".bold())
            .border_style(Style::new().yellow());
        let lines = vec![
            Line::from(format!("{from} invites you to a conference"))
                .bold()
                .centered(),
            Line::from(with).centered(),
            Line::default(),
            Line::from(format!(
                "{} join   ·   {} decline",
                ctx.keys.first(Action::AcceptCall),
                ctx.keys.first(Action::DeclineCall)
            ))
            .centered(),
        ];
        f.render_widget(
            Paragraph::new(lines).block(block).wrap(Wrap { trim: true }),
            area,
        );
    }
}

impl Component for IncomingPrompt {
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        let Some(c) = ctx.model.incoming_call() else {
            return self.conference(f, area, ctx);
        };
        let area = centered(area, 44, 5);
        f.render_widget(Clear, area);
        let block = Block::bordered()
            .title(" Incoming call ".bold())
            .border_style(Style::new().yellow());
        let lines = vec![
            Line::from(format!("{} is calling you", c.peer))
                .bold()
                .centered(),
            Line::default(),
            Line::from(format!(
                "{} accept   ·   {} decline",
                ctx.keys.first(Action::AcceptCall),
                ctx.keys.first(Action::DeclineCall)
            ))
            .centered(),
        ];
        f.render_widget(Paragraph::new(lines).block(block), area);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn meter_scales_and_clamps() {
        assert_eq!(super::meter(0.5, 4), "▮▮▯▯");
        assert_eq!(super::meter(2.0, 3), "▮▮▮");
        assert_eq!(super::meter(-1.0, 2), "▯▯");
    }
}
