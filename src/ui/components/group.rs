//! Group dialogs: found a group (its name; the contacts marked with space
//! are invited), rename one, and pick a contact to invite into one or a
//! member to remove from it. While a dialog is open the App gives it every
//! key; what the user settles on comes back as a [`Msg`] (a remove asks
//! first).

use super::{Msg, TextInput, centered, wrap};
use crate::node::api::{Command, GroupCommand, MAX_GROUP_NAME_BYTES};
use crate::overlay::Status;
use crate::ui::model::Model;
use ratatui::Frame;
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

/// Rows of choices a picker shows at once (it scrolls beyond).
const PICK_ROWS: usize = 10;
/// The dialogs' width.
const WIDTH: u16 = 52;

/// What a picker's choice is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickFor {
    /// Invite the contact picked.
    Invite,
    /// Remove the member picked (after a yes).
    Remove,
}

/// A group dialog on screen.
#[derive(Debug, Clone)]
pub enum GroupDialog {
    /// A new group: its name, and the contacts it will invite.
    Create {
        name: TextInput,
        invite: Vec<String>,
        /// Why Enter did not create it (an empty name).
        error: Option<&'static str>,
    },
    /// A new name for the group `id`, now called `old`.
    Rename {
        id: String,
        old: String,
        name: TextInput,
        error: Option<&'static str>,
    },
    /// Pick one of `choices` for the group `id` (called `group`).
    Pick {
        id: String,
        group: String,
        purpose: PickFor,
        choices: Vec<String>,
        /// Index of the highlighted choice.
        selected: usize,
    },
}

/// The name field's share of a key: typing goes into `name` (and clears
/// `error`); Enter gives the trimmed name, or sets `empty` as the error.
fn entered_name<'a>(
    name: &'a mut TextInput,
    error: &mut Option<&'static str>,
    key: &KeyEvent,
    empty: &'static str,
) -> Option<&'a str> {
    if key.code != KeyCode::Enter {
        name.on_key(key);
        *error = None;
        return None;
    }
    let n = name.value.trim();
    if n.is_empty() {
        *error = Some(empty);
        return None;
    }
    Some(n)
}

impl GroupDialog {
    /// The dialog that founds a group inviting `invite`.
    pub fn create(invite: Vec<String>) -> Self {
        GroupDialog::Create {
            name: TextInput::limited(MAX_GROUP_NAME_BYTES),
            invite,
            error: None,
        }
    }

    /// The dialog that renames the group `id`, now called `old`.
    pub fn rename(id: String, old: String) -> Self {
        let mut name = TextInput::limited(MAX_GROUP_NAME_BYTES);
        name.set(&old);
        GroupDialog::Rename {
            id,
            old,
            name,
            error: None,
        }
    }

    /// The dialog's text field, if it has one (for pastes).
    pub fn input(&mut self) -> Option<&mut TextInput> {
        match self {
            GroupDialog::Create { name, .. } | GroupDialog::Rename { name, .. } => Some(name),
            GroupDialog::Pick { .. } => None,
        }
    }

    /// Handle `key`: `None` keeps the dialog open; any `Some` closes it
    /// ([`Msg::Close`]: cancelled).
    pub fn on_key(&mut self, key: &KeyEvent) -> Option<Msg> {
        if key.code == KeyCode::Esc {
            return Some(Msg::Close);
        }
        match self {
            GroupDialog::Create {
                name,
                invite,
                error,
            } => {
                let n = entered_name(name, error, key, "give the group a name")?;
                Some(Msg::Send(Command::Group(GroupCommand::Create {
                    name: n.to_owned(),
                    members: invite.clone(),
                })))
            }
            GroupDialog::Rename {
                id,
                old,
                name,
                error,
            } => {
                let n = entered_name(name, error, key, "a group needs a name")?;
                if n == old.as_str() {
                    return Some(Msg::Close);
                }
                Some(Msg::Send(Command::Group(GroupCommand::Rename {
                    group: id.clone(),
                    name: n.to_owned(),
                })))
            }
            GroupDialog::Pick {
                id,
                group,
                purpose,
                choices,
                selected,
            } => {
                let last = choices.len().saturating_sub(1);
                match key.code {
                    KeyCode::Up | KeyCode::Char('k') => *selected = selected.saturating_sub(1),
                    KeyCode::Down | KeyCode::Char('j') => *selected = (*selected + 1).min(last),
                    KeyCode::Home => *selected = 0,
                    KeyCode::End => *selected = last,
                    KeyCode::Enter => {
                        let user = choices.get(*selected)?.clone();
                        let group_id = id.clone();
                        return Some(match purpose {
                            PickFor::Invite => Msg::Send(Command::Group(GroupCommand::Invite {
                                group: group_id,
                                user,
                            })),
                            PickFor::Remove => Msg::Confirm {
                                question: format!(
                                    "Remove {user} from the group {group}? They get none of its messages after this."
                                ),
                                commands: vec![Command::Group(GroupCommand::Remove {
                                    group: group_id,
                                    user,
                                })],
                            },
                        });
                    }
                    _ => {}
                }
                None
            }
        }
    }

    /// Draw the dialog centred in `area`.
    pub fn draw(&self, f: &mut Frame, area: Rect, model: &Model) {
        match self {
            GroupDialog::Create {
                name,
                invite,
                error,
            } => {
                let note = if invite.is_empty() {
                    "Nobody marked: mark contacts with space before, or invite them into the group later.".to_owned()
                } else {
                    format!("Invites {} (marked).", invite.join(", "))
                };
                draw_named(
                    f,
                    area,
                    " New group ",
                    name,
                    &note,
                    *error,
                    "Enter create · Esc cancel",
                );
            }
            GroupDialog::Rename {
                old, name, error, ..
            } => draw_named(
                f,
                area,
                &format!(" Rename {old} "),
                name,
                "Every member sees the new name.",
                *error,
                "Enter rename · Esc cancel",
            ),
            GroupDialog::Pick {
                group,
                purpose,
                choices,
                selected,
                ..
            } => {
                let (title, verb) = match purpose {
                    PickFor::Invite => (format!(" Invite into {group} "), "invite"),
                    PickFor::Remove => (format!(" Remove from {group} "), "remove"),
                };
                let rows = choices.len().min(PICK_ROWS);
                let r = centered(area, WIDTH.min(area.width), rows as u16 + 4);
                f.render_widget(Clear, r);
                let block = Block::bordered().title(title.bold());
                let inner = block.inner(r);
                f.render_widget(block, r);
                let [list, _, hint] = Layout::vertical([
                    Constraint::Fill(1),
                    Constraint::Length(1),
                    Constraint::Length(1),
                ])
                .areas(inner);
                // Scroll so the highlighted choice is in view.
                let first = (*selected + 1).saturating_sub(rows);
                let lines: Vec<Line> = choices
                    .iter()
                    .enumerate()
                    .skip(first)
                    .take(rows)
                    .map(|(i, name)| {
                        let status = model
                            .contacts
                            .get(name)
                            .map_or(Status::Offline, |c| c.status());
                        let (mark, color) = super::buddies::status_mark(status);
                        let line = Line::from(vec![
                            Span::raw(if i == *selected { "▶" } else { " " }),
                            Span::styled(format!("{mark} "), Style::new().fg(color)),
                            Span::raw(name.clone()),
                        ]);
                        if i == *selected {
                            line.reversed()
                        } else {
                            line
                        }
                    })
                    .collect();
                f.render_widget(Paragraph::new(lines), list);
                f.render_widget(
                    Line::from(format!("↑/↓ choose · Enter {verb} · Esc cancel")).dark_gray(),
                    hint,
                );
            }
        }
    }
}

/// A dialog with a name field, a note under it, an error and a hint line.
fn draw_named(
    f: &mut Frame,
    area: Rect,
    title: &str,
    field: &TextInput,
    note: &str,
    error: Option<&str>,
    hint: &str,
) {
    let w = WIDTH.min(area.width);
    let note = wrap(note, w.saturating_sub(2) as usize);
    let r = centered(area, w, note.len() as u16 + 6);
    f.render_widget(Clear, r);
    let block = Block::bordered().title(title.to_owned().bold());
    let inner = block.inner(r);
    f.render_widget(block, r);
    let [label, input, notes, err, hint_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(note.len() as u16),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(inner);
    f.render_widget(Line::from("Name:"), label);
    field.draw(f, input, true);
    let lines: Vec<Line> = note
        .into_iter()
        .map(|l| Line::from(l).dark_gray())
        .collect();
    f.render_widget(Paragraph::new(lines), notes);
    if let Some(e) = error {
        f.render_widget(Line::from(e.to_owned()).red(), err);
    }
    f.render_widget(Line::from(hint.to_owned()).dark_gray(), hint_area);
}
