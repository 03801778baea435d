//! The conference as the TUI shows it: participants with their level
//! meter, speaking indicator, mute and who mixes; joins and leaves as
//! notices and the terminal bell (the node also plays a short chime in
//! the conference audio). Built from
//! [`Event::Conference`](crate::node::api::Event::Conference) only.

use super::{Level, Model};
use crate::conference::{ConfEvent, ConfId};
use crate::node::api::ConferenceUpdate;
use std::collections::BTreeMap;

/// A level (0-255) at or above this is speech: the speaking indicator.
pub const SPEAKING_LEVEL: u8 = 16;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Participant {
    /// Last level the mixer measured, 0-255.
    pub level: u8,
    pub muted: bool,
    /// Round-trip time of our leg with them (mixer only), ms.
    pub rtt_ms: Option<u32>,
}

impl Participant {
    pub fn speaking(&self) -> bool {
        !self.muted && self.level >= SPEAKING_LEVEL
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConferenceView {
    pub id: ConfId,
    /// Invited by, while the invitation waits for an answer.
    pub invited_by: Option<String>,
    /// Who else the invitation names (while it waits).
    pub invited_with: Vec<String>,
    /// We started it (our own join came with no invitation): we may mute
    /// others.
    pub we_started: bool,
    pub participants: BTreeMap<String, Participant>,
    pub mixer: String,
    /// Ended: kept on screen until the next one.
    pub ended: bool,
}

impl ConferenceView {
    /// Joined (not just invited) and not ended.
    pub fn joined(&self) -> bool {
        !self.ended && self.invited_by.is_none()
    }
}

impl Model {
    /// The conference we are in, if any (not one we are invited to).
    pub fn live_conference(&self) -> Option<&ConferenceView> {
        self.conference.as_ref().filter(|c| c.joined())
    }

    /// The conference invitation waiting for our answer, if any.
    pub fn conference_invite(&self) -> Option<&ConferenceView> {
        self.conference
            .as_ref()
            .filter(|c| !c.ended && c.invited_by.is_some())
    }

    /// Whether we are muted in the conference we are in.
    pub fn conference_muted(&self) -> bool {
        let me = self.me();
        self.live_conference()
            .and_then(|c| me.and_then(|m| c.participants.get(m)))
            .is_some_and(|p| p.muted)
    }

    /// Apply a conference update to the view.
    pub fn conference(&mut self, u: ConferenceUpdate) {
        let e = match u {
            ConferenceUpdate::Changed(e) => e,
            ConferenceUpdate::Stats { peer, stats, .. } => {
                if let Some(p) = self
                    .conference
                    .as_mut()
                    .and_then(|c| c.participants.get_mut(&peer))
                {
                    p.rtt_ms = stats.rtt_ms;
                }
                return;
            }
            ConferenceUpdate::MediaEnded { .. } => return,
        };
        match e {
            ConfEvent::Incoming {
                id, from, members, ..
            } => {
                self.notify(
                    Level::Alert,
                    format!(
                        "{from} invites you to a conference with {}",
                        members.join(", ")
                    ),
                );
                self.bell = true;
                self.conference = Some(ConferenceView {
                    id,
                    invited_by: Some(from),
                    invited_with: members,
                    ..Default::default()
                });
            }
            ConfEvent::Joined { id, name } => {
                let me = self.me().map(str::to_owned);
                let c = self.conference.get_or_insert_with(|| ConferenceView {
                    id,
                    ..Default::default()
                });
                if c.id != id || c.ended {
                    *c = ConferenceView {
                        id,
                        ..Default::default()
                    };
                }
                // Our own join before any invitation: we started it.
                if c.participants.is_empty()
                    && c.invited_by.is_none()
                    && me.as_deref() == Some(name.as_str())
                {
                    c.we_started = true;
                }
                c.invited_by = None;
                c.invited_with.clear();
                c.participants.entry(name.clone()).or_default();
                if me.as_deref() != Some(name.as_str()) {
                    self.notify(Level::Info, format!("{name} joined the conference"));
                    self.bell = true;
                }
            }
            ConfEvent::Left { name, reason, .. } => {
                if let Some(c) = &mut self.conference {
                    c.participants.remove(&name);
                }
                self.notify(
                    Level::Info,
                    format!(
                        "{name} left the conference ({})",
                        reason.code().replace('_', " ")
                    ),
                );
                self.bell = true;
            }
            ConfEvent::MixerChanged {
                mixer, failover, ..
            } => {
                if failover {
                    self.notify(Level::Info, format!("{mixer} mixes the conference now"));
                }
                if let Some(c) = &mut self.conference {
                    c.mixer = mixer;
                }
            }
            ConfEvent::Muted { name, on, by, .. } => {
                if let Some(p) = self
                    .conference
                    .as_mut()
                    .and_then(|c| c.participants.get_mut(&name))
                {
                    p.muted = on;
                }
                // Muted by the starter: say who did it to whom.
                if by != name {
                    let me = self.me().map(str::to_owned);
                    let who = |n: &str| {
                        if me.as_deref() == Some(n) {
                            "you".to_owned()
                        } else {
                            n.to_owned()
                        }
                    };
                    let what = if on { "muted" } else { "unmuted" };
                    self.notify(Level::Info, format!("{} {what} {}", who(&by), who(&name)));
                }
            }
            ConfEvent::Levels { levels, .. } => {
                if let Some(c) = &mut self.conference {
                    for (n, l) in levels {
                        if let Some(p) = c.participants.get_mut(&n) {
                            p.level = l;
                        }
                    }
                }
            }
            ConfEvent::Ended { reason, .. } => {
                if let Some(c) = &mut self.conference {
                    c.ended = true;
                }
                self.notify(
                    Level::Info,
                    format!("the conference ended ({})", reason.code()),
                );
            }
        }
    }
}
