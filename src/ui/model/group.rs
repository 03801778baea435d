//! Group chats as the screen shows them, built from [`GroupUpdate`]s:
//! each group's members, its conversation with join and leave lines, and
//! its unread count.

use super::{Level, Model};
use crate::node::api::{GroupChange, GroupChatMessage, GroupEntry, GroupUpdate};

/// Lines kept per group on screen.
const MAX_LINES: usize = 500;

/// One line of a group conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupLine {
    Message(GroupChatMessage),
    /// A join, leave, removal or rename, as text.
    Change(String),
}

/// A group on screen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupView {
    pub entry: GroupEntry,
    pub lines: Vec<GroupLine>,
    /// Messages not seen yet (the group is not the open conversation).
    pub unread: usize,
}

/// The text of a change line.
pub fn change_text(by: &str, change: &GroupChange) -> String {
    match change {
        GroupChange::Created => format!("{by} created the group"),
        GroupChange::Joined => "you joined".to_owned(),
        GroupChange::Added(u) => format!("{u} joined (added by {by})"),
        GroupChange::Left(u) => format!("{u} left"),
        GroupChange::Removed(u) => format!("{u} was removed by {by}"),
        GroupChange::Renamed(n) => format!("{by} renamed the group to {n}"),
        GroupChange::Admin(u) => format!("{u} is an admin now"),
    }
}

/// The status line's text for a change that we made (the result of a
/// group key) or that removed us; `None` for others' changes, which the
/// conversation shows.
pub fn change_notice(me: &str, group: &str, by: &str, change: &GroupChange) -> Option<String> {
    let who = |u: &str| {
        if u == me {
            "you".to_owned()
        } else {
            u.to_owned()
        }
    };
    let text = match change {
        GroupChange::Removed(u) if u == me => format!("you were removed from {group} by {by}"),
        _ if by != me => return None,
        GroupChange::Created => format!("you created the group {group}"),
        GroupChange::Joined => return None,
        GroupChange::Added(u) => format!("{u} is in {group} now (you invited them)"),
        GroupChange::Left(u) => format!("{} left {group}", who(u)),
        GroupChange::Removed(u) => format!("you removed {u} from {group}"),
        GroupChange::Renamed(n) => format!("you renamed the group to {n}"),
        GroupChange::Admin(u) => format!("{u} is an admin of {group} now"),
    };
    Some(text)
}

impl GroupView {
    fn push(&mut self, l: GroupLine) {
        self.lines.push(l);
        if self.lines.len() > MAX_LINES {
            self.lines.drain(..self.lines.len() - MAX_LINES);
        }
    }
}

impl Model {
    /// The key of a group's conversation in [`Model::chat_open`].
    pub fn group_key(id: &str) -> String {
        format!("#{id}")
    }

    pub(super) fn group(&mut self, u: GroupUpdate) {
        match u {
            GroupUpdate::Change { group, by, change } => {
                if change == GroupChange::Joined {
                    self.notify(Level::Alert, format!("you are in the group {}", group.name));
                    self.bell = true;
                }
                let me = self.me().unwrap_or_default();
                if let Some(text) = change_notice(me, &group.name, &by, &change) {
                    let removed = matches!(&change, GroupChange::Removed(u) if u == me);
                    self.bell |= removed;
                    let level = if removed { Level::Alert } else { Level::Info };
                    self.notify(level, text);
                }
                let v = self.groups.entry(group.id.clone()).or_default();
                v.entry = group;
                v.push(GroupLine::Change(change_text(&by, &change)));
            }
            GroupUpdate::Message(m) => {
                let open = self.chat_open.as_deref() == Some(Model::group_key(&m.group).as_str());
                let v = self.groups.entry(m.group.clone()).or_default();
                if !m.outgoing && !open {
                    v.unread += 1;
                    self.bell = true;
                }
                v.push(GroupLine::Message(m));
            }
            GroupUpdate::History { group, messages } => {
                let v = self.groups.entry(group.id.clone()).or_default();
                v.entry = group;
                for m in messages {
                    let l = GroupLine::Message(m);
                    if !v.lines.contains(&l) {
                        v.push(l);
                    }
                }
            }
            GroupUpdate::List(list) => {
                for g in list {
                    let id = g.id.clone();
                    self.groups.entry(id).or_default().entry = g;
                }
            }
            GroupUpdate::InviteDropped { from, .. } => self.notify(
                Level::Info,
                format!("dropped a group invitation from {from}, who is not a contact"),
            ),
            GroupUpdate::Acked { .. } => {}
        }
    }
}
