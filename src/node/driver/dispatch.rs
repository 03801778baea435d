//! Which sub-driver consumes what the overlay client reports.
//!
//! Envelopes are routed by kind through one table, [`ROUTES`]: chat,
//! contacts and group chat kinds to messaging, call signalling to the calls, ICE offers
//! and answers to the peers sub-driver, file signalling to the files. A kind not in the table, or whose
//! consumer this node does not run (a node without chat, without calls),
//! goes to the node's owner as [`Event::Client`](super::Event::Client)
//! (the headless `envelope` command's test kind does).
//!
//! An envelope's outcome (delivered, stored, failed) goes back to the
//! sub-driver that sent it: each keeps the ids of its own envelopes, and
//! they are asked in [`ROUTES`] order; one nobody claims goes to the
//! owner. Other overlay events are not consumed here: chat and contacts
//! watch some of them on the way (our record published, a watched user's
//! record), the peers sub-driver others when they are delivered.

use super::client::ClientDriver;
use super::peers::Cx;
use crate::group::wire as group;
use crate::ice::offer::{ENVELOPE_ANSWER, ENVELOPE_OFFER};
use crate::node::calls::ENVELOPE_CALL;
use crate::node::calls::conference::ENVELOPE_CONFERENCE;
use crate::overlay::envelope::{EnvelopeOutcome, kind};
use crate::overlay::{ClientEvent, EnvelopeId};
use crate::time::Millis;
use crate::transfer::Standing;
use crate::transfer::wire as transfer;

/// A sub-driver that consumes envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumer {
    /// Chat and contacts (`node::messaging`).
    Messaging,
    /// Call signalling (`node::calls`).
    Calls,
    /// ICE offers and answers (the peers sub-driver).
    Peers,
    /// File transfer signalling (`node::files`).
    Files,
    /// Conference signalling (`node::calls::conference`, inside the calls).
    Conference,
}

/// Envelope kind -> its consumer. Kinds not listed go to the owner.
pub const ROUTES: &[(u8, Consumer)] = &[
    (kind::CHAT, Consumer::Messaging),
    (kind::CHAT_ACK, Consumer::Messaging),
    (kind::CHAT_SENT, Consumer::Messaging),
    (kind::CHAT_READ, Consumer::Messaging),
    (kind::CHAT_HISTORY_ASK, Consumer::Messaging),
    (kind::CHAT_HISTORY, Consumer::Messaging),
    (kind::CONTACT, Consumer::Messaging),
    (kind::CONTACT_SYNC, Consumer::Messaging),
    (kind::PRESENCE, Consumer::Messaging),
    (group::kind::GROUP, Consumer::Messaging),
    (group::kind::GROUP_ACK, Consumer::Messaging),
    (group::kind::GROUP_ASK, Consumer::Messaging),
    (ENVELOPE_CALL, Consumer::Calls),
    (ENVELOPE_OFFER, Consumer::Peers),
    (ENVELOPE_ANSWER, Consumer::Peers),
    (transfer::kind::OFFER, Consumer::Files),
    (transfer::kind::ANSWER, Consumer::Files),
    (transfer::kind::CANCEL, Consumer::Files),
    (transfer::kind::DONE, Consumer::Files),
    (ENVELOPE_CONFERENCE, Consumer::Conference),
];

/// The consumer of envelope kind `k`, if any.
pub fn consumer(k: u8) -> Option<Consumer> {
    ROUTES.iter().find(|(r, _)| *r == k).map(|&(_, c)| c)
}

impl ClientDriver {
    /// Hand one overlay event to its consumer; what nobody consumed comes
    /// back, for the owner.
    pub(super) fn route(&mut self, now: Millis, e: ClientEvent) -> Option<ClientEvent> {
        let consumed = match &e {
            ClientEvent::Envelope {
                from,
                kind,
                payload,
                created_ms,
                ..
            } => match consumer(*kind) {
                Some(c) => self.envelope(now, c, (from, *kind, payload), *created_ms),
                None => false,
            },
            ClientEvent::EnvelopeDelivered { id } => {
                self.outcome(now, id, EnvelopeOutcome::Delivered)
            }
            ClientEvent::EnvelopeStored { id } => self.outcome(now, id, EnvelopeOutcome::Stored),
            ClientEvent::EnvelopeFailed { id, reason } => {
                self.outcome(now, id, EnvelopeOutcome::Failed(reason.clone()))
            }
            other => {
                if let Some(m) = &mut self.messaging {
                    let unix = self.base.clock.unix();
                    m.observe(now, unix, other, &mut self.core, &mut self.base.rng);
                }
                false
            }
        };
        (!consumed).then_some(e)
    }

    /// An envelope for consumer `c`; false when this node does not run it.
    fn envelope(
        &mut self,
        now: Millis,
        c: Consumer,
        (from, kind, payload): crate::node::messaging::Envelope<'_>,
        created_ms: u64,
    ) -> bool {
        // Invitations from users we blocked are dropped (calls, conferences).
        let blocked = self
            .messaging
            .as_ref()
            .is_some_and(|m| m.is_blocked(&from.username));
        match c {
            Consumer::Messaging => match &mut self.messaging {
                Some(m) => {
                    let env = (from, kind, payload);
                    m.on_envelope(
                        now,
                        self.base.clock.unix(),
                        env,
                        &mut self.core,
                        &mut self.base.rng,
                    )
                }
                None => false,
            },
            Consumer::Calls => self
                .with_calls(|calls, cx| {
                    calls.on_envelope(
                        (&from.username, from.x25519),
                        created_ms,
                        payload,
                        blocked,
                        cx,
                    )
                })
                .is_some(),
            Consumer::Peers => {
                let allowed = self.may_have_candidates(&from.username);
                let mut cx = Cx {
                    now,
                    base: &mut self.base,
                    core: &mut self.core,
                };
                self.peers
                    .on_envelope(&mut cx, &from.username, kind, payload, allowed);
                self.peers_out();
                true
            }
            Consumer::Files => {
                let standing = self.standing(&from.username);
                self.with_files(now, |f, cx| {
                    f.on_envelope(&from.username, standing, (kind, payload), cx)
                })
                .is_some()
            }
            Consumer::Conference => self
                .with_calls(|calls, cx| {
                    calls.on_conference_envelope(&from.username, payload, blocked, cx)
                })
                .is_some(),
        }
    }

    /// An envelope's outcome, to the sub-driver that sent it; false when
    /// none did.
    fn outcome(&mut self, now: Millis, id: &EnvelopeId, o: EnvelopeOutcome) -> bool {
        let failed = match &o {
            EnvelopeOutcome::Failed(reason) => Some(reason.clone()),
            _ => None,
        };
        let failed = failed.as_deref();
        let mine = self
            .messaging
            .as_mut()
            .is_some_and(|m| m.on_outcome(now, id, o, &mut self.core))
            || self
                .with_calls(|c, cx| c.on_envelope_outcome(id, failed, cx))
                .unwrap_or(false)
            || self.peers.on_outcome(id, failed)
            || self
                .files
                .as_mut()
                .is_some_and(|f| f.on_outcome(id, failed));
        self.peers_out();
        mine
    }
}

impl ClientDriver {
    /// Whether `user` may have our ICE candidates (issue 14.10): a
    /// contact, the peer of a call we placed or accepted, a member of a
    /// conference we joined, or the peer of a file we offered or accepted.
    /// A node without messaging (no contact list: tools, tests) allows
    /// everyone.
    pub(super) fn may_have_candidates(&self, user: &str) -> bool {
        let contact = self.messaging.as_ref().is_none_or(|m| m.is_contact(user));
        contact
            || self.calls.as_ref().is_some_and(|c| c.agreed_with(user))
            || self.files.as_ref().is_some_and(|f| f.agreed_with(user))
    }

    /// How `user` stands to us by the contact list (a node without one
    /// takes everyone as a contact).
    pub(super) fn standing(&self, user: &str) -> Standing {
        match &self.messaging {
            None => Standing::Contact,
            Some(m) if m.is_blocked(user) => Standing::Blocked,
            Some(m) if m.is_contact(user) => Standing::Contact,
            Some(_) => Standing::Stranger,
        }
    }

    /// Answer held offers whose senders are allowed now; true if any.
    pub(super) fn release_held_offers(&mut self, now: Millis) -> bool {
        let senders = self.peers.held_senders(now);
        let mut any = false;
        for user in senders {
            if self.may_have_candidates(&user) {
                any = true;
                self.with_peers(now, |p, cx| p.release(cx, &user));
            }
        }
        any
    }
}
