//! Conference calls, sans-IO: who takes part, which participant mixes,
//! joins and leaves, and the mixer's failover. Signalling bytes in from a
//! verified user (a sealed envelope), bytes out addressed to users, events
//! and the next timer out; the driver feeds what the media legs hear.
//!
//! One participant's node mixes (as classic Skype's did): every other
//! participant has one media leg, to the mixer; the mixer has one leg per
//! participant and sends each the mix of everyone else. Each leg is an
//! ordinary encrypted media stream under keys exported from the pairwise
//! peer link, with the context [`LegSpec::context`] (conference id, the
//! mixer's and the participant's join nonces), so no signalling round trip
//! is needed to re-point legs.
//!
//! - **Mixer choice** ([`rank`]): a participant reachable only through a
//!   relay ([`Reach::RelayOnly`]) comes after every directly reachable one,
//!   then better NAT classes, then more uplink, then the name: every node
//!   computes the same order from the same roster. The starter mixes at
//!   first; when a member who ranks in a better reach class (or has twice
//!   the uplink) joins, the mixer hands over. The uplink is measured
//!   ([`uplink`]) and re-announced when it changes
//!   ([`ConferenceCore::set_uplink`]): a mixer whose uplink fills up hands
//!   over to one with twice as much.
//! - **Roster**: a joiner sends [`ConfMsg::Join`] to every member; the mixer
//!   answers with [`ConfMsg::Roster`] (and repeats it every
//!   [`ConfConfig::roster_interval_ms`]). A roster with a newer mixer epoch
//!   wins; at equal epochs the better-ranked mixer's.
//! - **Failover**: a participant that hears nothing from the mixer for
//!   [`ConfConfig::mixer_timeout_ms`] (or gets its Leave) drops it, bumps
//!   the epoch and takes the first of [`rank`] of those left as mixer, as
//!   every other participant does at about the same time; the new mixer
//!   broadcasts its roster, which also re-points stragglers. The mixer
//!   drops a participant silent for [`ConfConfig::participant_timeout_ms`].
//!   A dropped mixer that was only stalled (a loaded machine) still sends
//!   its old roster: the new mixer answers with its own, and the old one
//!   joins again as a new member (a nonce derived from its old one).
//! - **Mute**: anyone mutes themselves; the starter may mute others (the
//!   target's node mutes its microphone, the mixer leaves it out).
//! - A member who left or died stays in [`ConferenceCore::gone`] (name
//!   and join nonce) so an old roster cannot bring it back; a rejoin comes
//!   with a fresh nonce, hence fresh leg keys.

pub mod msg;
pub mod uplink;

pub use msg::ConfMsg;

use crate::time::Millis;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub type ConfId = u64;

/// The join nonce for coming back after the others dropped us at mixer
/// epoch `epoch`: unique per epoch and as unguessable as the old one.
fn rejoin_nonce(old: &[u8; 16], epoch: u32) -> [u8; 16] {
    use blake2::{Blake2s256, Digest};
    let mut h = Blake2s256::new();
    h.update(b"natter conference rejoin");
    h.update(old);
    h.update(epoch.to_be_bytes());
    let mut n = [0u8; 16];
    n.copy_from_slice(&h.finalize()[..16]);
    n
}

/// Classic Skype's limit, and ours.
pub const MAX_PARTICIPANTS: usize = 25;

/// How others reach a participant, best first (from its NAT detection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reach {
    /// No NAT: a public address.
    Public = 0,
    /// Endpoint-independent mapping (or not measured yet).
    Cone = 1,
    /// Address(-port)-dependent mapping: direct paths are hit and miss.
    Symmetric = 2,
    /// UDP blocked: reachable only through a relay.
    RelayOnly = 3,
}

impl Reach {
    pub fn from_u8(v: u8) -> Option<Reach> {
        Some(match v {
            0 => Reach::Public,
            1 => Reach::Cone,
            2 => Reach::Symmetric,
            3 => Reach::RelayOnly,
            _ => return None,
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            Reach::Public => "public",
            Reach::Cone => "cone",
            Reach::Symmetric => "symmetric",
            Reach::RelayOnly => "relay_only",
        }
    }
}

/// One participant, as the roster carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// Random per join: part of the leg keys' context, so a rejoin never
    /// reuses a key.
    pub nonce: [u8; 16],
    /// Measured (or configured) uplink, kbit/s; 0 when unknown.
    pub uplink_kbps: u32,
    pub reach: Reach,
    pub muted: bool,
}

/// The mixer order: every node sorts the same roster the same way.
pub fn rank<'a>(members: impl IntoIterator<Item = &'a Member>) -> Vec<&'a Member> {
    let mut v: Vec<&Member> = members.into_iter().collect();
    v.sort_by(|a, b| rank_key(a).cmp(&rank_key(b)));
    v
}

fn rank_key(m: &Member) -> (bool, Reach, std::cmp::Reverse<u32>, &str) {
    (
        m.reach == Reach::RelayOnly,
        m.reach,
        std::cmp::Reverse(m.uplink_kbps),
        &m.name,
    )
}

/// Whether `best` is enough better than the mixer `cur` to hand over to:
/// a better reach class, or twice the uplink when the mixer's is known (a
/// mixer that has not measured its own yet is not judged by it).
fn clearly_better(best: &Member, cur: &Member) -> bool {
    best.reach < cur.reach
        || (best.reach == cur.reach
            && cur.uplink_kbps > 0
            && best.uplink_kbps >= cur.uplink_kbps.saturating_mul(2))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfConfig {
    /// No audio from the mixer this long: it is gone.
    pub mixer_timeout_ms: u64,
    /// A leg just (re)started gets this long before silence counts.
    pub leg_grace_ms: u64,
    /// The mixer drops a participant silent this long.
    pub participant_timeout_ms: u64,
    /// The mixer repeats its roster this often.
    pub roster_interval_ms: u64,
    /// The mixer sends levels at most this often.
    pub levels_interval_ms: u64,
    /// An invitation not answered in this time is forgotten.
    pub invite_timeout_ms: u64,
}

impl Default for ConfConfig {
    fn default() -> Self {
        ConfConfig {
            mixer_timeout_ms: 1_200,
            leg_grace_ms: 2_500,
            participant_timeout_ms: 3_000,
            roster_interval_ms: 2_000,
            levels_interval_ms: 250,
            invite_timeout_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfState {
    /// Invited, waiting for our answer.
    Invited,
    Joined,
    Ended(ConfEndReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfEndReason {
    /// We left (or declined).
    Left,
    /// Everyone else left.
    Alone,
}

impl ConfEndReason {
    pub fn code(self) -> &'static str {
        match self {
            ConfEndReason::Left => "left",
            ConfEndReason::Alone => "alone",
        }
    }
}

/// Why a participant is no longer in the conference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeftReason {
    /// It said so.
    Left,
    /// Its audio stopped (a mixer that died, a participant the mixer lost).
    TimedOut,
    /// The mixer's roster no longer has it.
    Dropped,
    /// Invited, it answered that it is in a call or another conference.
    Busy,
}

impl LeftReason {
    pub fn code(self) -> &'static str {
        match self {
            LeftReason::Left => "left",
            LeftReason::TimedOut => "timed_out",
            LeftReason::Dropped => "dropped",
            LeftReason::Busy => "busy",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfEvent {
    /// `from` invites us into conference `id` with these members.
    Incoming {
        id: ConfId,
        from: String,
        members: Vec<String>,
        replaces: u64,
    },
    /// A participant joined (ourselves included).
    Joined {
        id: ConfId,
        name: String,
    },
    Left {
        id: ConfId,
        name: String,
        reason: LeftReason,
    },
    /// Another participant mixes now (`failover`: the old one vanished).
    MixerChanged {
        id: ConfId,
        mixer: String,
        epoch: u32,
        failover: bool,
    },
    /// `name` is muted or unmuted (by itself or by the starter `by`).
    Muted {
        id: ConfId,
        name: String,
        on: bool,
        by: String,
    },
    /// Levels (0-255) per participant, as the mixer measured them.
    Levels {
        id: ConfId,
        levels: Vec<(String, u8)>,
    },
    Ended {
        id: ConfId,
        reason: ConfEndReason,
    },
}

/// One media leg we should run: to `peer`, keyed with `context`; the
/// mixer's side is the media [`crate::media::Side::Caller`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegSpec {
    pub peer: String,
    pub context: [u8; 40],
    pub we_mix: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfError {
    #[error("the conference is full ({MAX_PARTICIPANTS} participants)")]
    Full,
    #[error("{0} is already in the conference")]
    AlreadyIn(String),
    #[error("only the one who started the conference may mute others")]
    NotStarter,
    #[error("{0} is not in the conference")]
    NotIn(String),
    #[error("the conference is not running")]
    NotRunning,
}

/// Tracking of one leg: when it (re)started and when it last heard audio.
#[derive(Debug, Clone, Copy)]
struct LegTrack {
    /// When the leg started (its grace runs from here).
    since: Millis,
    /// When it last received audio, if ever.
    heard: Option<Millis>,
}

/// One conference as one participant sees it; see the [module docs](self).
#[derive(Debug)]
pub struct ConferenceCore {
    cfg: ConfConfig,
    id: ConfId,
    /// Our member entry (kept also in `members` while joined).
    me: Member,
    /// Who started it: the only one who may mute others.
    starter: String,
    state: ConfState,
    /// Current participants, ourselves included.
    members: BTreeMap<String, Member>,
    /// Who mixes, and the generation of that choice (newer wins).
    mixer: String,
    epoch: u32,
    /// Departed (name, nonce): an old roster cannot bring them back.
    gone: BTreeSet<(String, [u8; 16])>,
    /// Invited, not joined yet, until when we wait for them.
    pending: BTreeMap<String, Millis>,
    /// The legs we run, by peer.
    legs: BTreeMap<String, LegTrack>,
    /// The 1:1 call this conference replaced, if any.
    replaces: u64,
    /// When the mixer next repeats the roster (a lost one is healed).
    next_roster: Millis,
    /// When the mixer next sends the levels it measured.
    next_levels: Millis,
    /// Levels measured at the mixer, to send at the next levels tick.
    levels: Option<Vec<(String, u8)>>,
    transmits: VecDeque<(String, Vec<u8>)>,
    events: VecDeque<ConfEvent>,
}

impl ConferenceCore {
    /// Start conference `id` as its first member and mixer, inviting `users`.
    pub fn start(
        cfg: ConfConfig,
        id: ConfId,
        me: Member,
        users: &[String],
        replaces: u64,
        now: Millis,
    ) -> Result<Self, ConfError> {
        if users.len() + 1 > MAX_PARTICIPANTS {
            return Err(ConfError::Full);
        }
        let mut c = ConferenceCore::blank(cfg, id, me.clone(), me.name.clone(), now);
        c.replaces = replaces;
        c.state = ConfState::Joined;
        c.mixer = me.name.clone();
        c.epoch = 1;
        c.members.insert(me.name.clone(), me.clone());
        c.event(ConfEvent::Joined {
            id,
            name: me.name.clone(),
        });
        // Who mixes, from the start (front ends show it).
        c.event(ConfEvent::MixerChanged {
            id,
            mixer: me.name.clone(),
            epoch: 1,
            failover: false,
        });
        for u in users {
            c.invite(now, u)?;
        }
        c.sync_legs(now);
        Ok(c)
    }

    fn blank(cfg: ConfConfig, id: ConfId, me: Member, starter: String, now: Millis) -> Self {
        ConferenceCore {
            next_roster: now + cfg.roster_interval_ms,
            next_levels: now,
            cfg,
            id,
            me,
            starter,
            state: ConfState::Invited,
            members: BTreeMap::new(),
            mixer: String::new(),
            epoch: 0,
            gone: BTreeSet::new(),
            pending: BTreeMap::new(),
            legs: BTreeMap::new(),
            replaces: 0,
            levels: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// An invitation from `from`: a core in [`ConfState::Invited`] (and
    /// its [`ConfEvent::Incoming`]), or `None` when it is not an Invite.
    pub fn invited(
        cfg: ConfConfig,
        me: Member,
        from: &str,
        bytes: &[u8],
        now: Millis,
    ) -> Option<Self> {
        let (
            id,
            ConfMsg::Invite {
                starter,
                epoch,
                mixer,
                replaces,
                members,
            },
        ) = ConfMsg::decode(bytes).ok()?
        else {
            return None;
        };
        if !members.iter().any(|m| m.name == from) || members.iter().any(|m| m.name == me.name) {
            return None;
        }
        let mut c = ConferenceCore::blank(cfg, id, me, starter, now);
        c.epoch = epoch;
        c.mixer = mixer;
        c.replaces = replaces;
        c.members = members.into_iter().map(|m| (m.name.clone(), m)).collect();
        c.event(ConfEvent::Incoming {
            id,
            from: from.to_owned(),
            members: c.members.keys().cloned().collect(),
            replaces,
        });
        Some(c)
    }

    /// The reply to `bytes` from a node that is busy (in a call or
    /// another conference): a Busy for the conference an Invite names;
    /// `None` for anything else.
    pub fn busy_reply(bytes: &[u8]) -> Option<Vec<u8>> {
        match ConfMsg::decode(bytes).ok()? {
            (id, ConfMsg::Invite { .. }) => Some(ConfMsg::Busy.encode(id)),
            _ => None,
        }
    }

    pub fn id(&self) -> ConfId {
        self.id
    }
    pub fn state(&self) -> ConfState {
        self.state
    }
    pub fn me(&self) -> &str {
        &self.me.name
    }
    pub fn starter(&self) -> &str {
        &self.starter
    }
    pub fn mixer(&self) -> &str {
        &self.mixer
    }
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
    pub fn replaces(&self) -> u64 {
        self.replaces
    }
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }
    pub fn gone(&self) -> impl Iterator<Item = &(String, [u8; 16])> {
        self.gone.iter()
    }
    pub fn we_mix(&self) -> bool {
        self.state == ConfState::Joined && self.mixer == self.me.name
    }
    fn joined(&self) -> bool {
        self.state == ConfState::Joined
    }

    /// The media legs we should run now.
    pub fn legs(&self) -> Vec<LegSpec> {
        if !self.joined() {
            return Vec::new();
        }
        let Some(mixer) = self.members.get(&self.mixer) else {
            return Vec::new();
        };
        let spec = |p: &Member| LegSpec {
            peer: p.name.clone(),
            context: crate::media::MediaKeys::export_context(self.id, &mixer.nonce, &p.nonce),
            we_mix: true,
        };
        if self.we_mix() {
            self.members
                .values()
                .filter(|m| m.name != self.me.name)
                .map(spec)
                .collect()
        } else {
            vec![LegSpec {
                peer: mixer.name.clone(),
                context: crate::media::MediaKeys::export_context(
                    self.id,
                    &mixer.nonce,
                    &self.me.nonce,
                ),
                we_mix: false,
            }]
        }
    }

    /// Members other than us (the node keeps peer links to all of them,
    /// for a fast failover).
    pub fn others(&self) -> Vec<String> {
        self.members
            .keys()
            .filter(|n| **n != self.me.name)
            .cloned()
            .collect()
    }

    /// Muted members (the mixer leaves them out).
    pub fn muted(&self) -> Vec<String> {
        self.members
            .values()
            .filter(|m| m.muted)
            .map(|m| m.name.clone())
            .collect()
    }

    pub fn poll_transmit(&mut self) -> Option<(String, Vec<u8>)> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ConfEvent> {
        self.events.pop_front()
    }

    fn event(&mut self, e: ConfEvent) {
        self.events.push_back(e);
    }

    fn send(&mut self, to: &str, m: &ConfMsg) {
        self.transmits.push_back((to.to_owned(), m.encode(self.id)));
    }

    fn broadcast(&mut self, m: &ConfMsg) {
        let bytes = m.encode(self.id);
        for n in self.others() {
            self.transmits.push_back((n, bytes.clone()));
        }
    }

    fn roster(&self) -> ConfMsg {
        ConfMsg::Roster {
            epoch: self.epoch,
            mixer: self.mixer.clone(),
            members: self.members.values().cloned().collect(),
        }
    }

    /// Invite `user` (any member may).
    pub fn invite(&mut self, now: Millis, user: &str) -> Result<(), ConfError> {
        if !self.joined() {
            return Err(ConfError::NotRunning);
        }
        if self.members.contains_key(user) {
            return Err(ConfError::AlreadyIn(user.to_owned()));
        }
        if self.members.len() + self.pending.len() >= MAX_PARTICIPANTS {
            return Err(ConfError::Full);
        }
        self.pending
            .insert(user.to_owned(), now + self.cfg.invite_timeout_ms);
        let m = ConfMsg::Invite {
            starter: self.starter.clone(),
            epoch: self.epoch,
            mixer: self.mixer.clone(),
            replaces: self.replaces,
            members: self.members.values().cloned().collect(),
        };
        self.send(user, &m);
        Ok(())
    }

    /// Answer our invitation: join.
    pub fn accept(&mut self, now: Millis) -> Result<(), ConfError> {
        if self.state != ConfState::Invited {
            return Err(ConfError::NotRunning);
        }
        if self.members.len() >= MAX_PARTICIPANTS {
            return Err(ConfError::Full);
        }
        self.state = ConfState::Joined;
        let me = self.me.clone();
        self.members.insert(me.name.clone(), me.clone());
        self.broadcast(&ConfMsg::Join { member: me.clone() });
        for n in self.members.keys().filter(|n| **n != me.name) {
            self.events.push_back(ConfEvent::Joined {
                id: self.id,
                name: n.clone(),
            });
        }
        self.event(ConfEvent::Joined {
            id: self.id,
            name: me.name,
        });
        // Who mixes as the invitation said (a roster corrects it).
        self.event(ConfEvent::MixerChanged {
            id: self.id,
            mixer: self.mixer.clone(),
            epoch: self.epoch,
            failover: false,
        });
        self.sync_legs(now);
        Ok(())
    }

    /// Leave (or decline the invitation).
    pub fn leave(&mut self, now: Millis) {
        if matches!(self.state, ConfState::Ended(_)) {
            return;
        }
        self.broadcast(&ConfMsg::Leave);
        self.end(now, ConfEndReason::Left);
    }

    fn end(&mut self, now: Millis, reason: ConfEndReason) {
        self.state = ConfState::Ended(reason);
        self.sync_legs(now);
        self.event(ConfEvent::Ended {
            id: self.id,
            reason,
        });
    }

    /// Mute ourselves.
    pub fn mute_self(&mut self, on: bool) -> Result<(), ConfError> {
        let me = self.me.name.clone();
        self.set_muted(&me, on, &me);
        self.broadcast(&ConfMsg::Mute { target: me, on });
        Ok(())
    }

    /// Mute another participant (the starter only).
    pub fn mute_other(&mut self, target: &str, on: bool) -> Result<(), ConfError> {
        if self.starter != self.me.name {
            return Err(ConfError::NotStarter);
        }
        if !self.members.contains_key(target) {
            return Err(ConfError::NotIn(target.to_owned()));
        }
        let me = self.me.name.clone();
        self.set_muted(target, on, &me);
        self.broadcast(&ConfMsg::Mute {
            target: target.to_owned(),
            on,
        });
        Ok(())
    }

    /// Our measured uplink is now `kbps` ([`uplink::UplinkEstimator`]):
    /// the mixer learns it (a Join again, or our roster when we mix), and
    /// a mixer hands over to a member now clearly better than itself.
    pub fn set_uplink(&mut self, now: Millis, kbps: u32) {
        if self.me.uplink_kbps == kbps {
            return;
        }
        self.me.uplink_kbps = kbps;
        if !self.joined() {
            // Our Join will carry it.
            return;
        }
        // The roster changes only by the mixer's word, so that every node
        // ranks the same figures at a failover.
        if self.we_mix() {
            if let Some(m) = self.members.get_mut(&self.me.name) {
                m.uplink_kbps = kbps;
            }
            let best = rank(self.members.values())[0].clone();
            if best.name != self.me.name && clearly_better(&best, &self.me) {
                self.set_mixer(best.name, self.epoch + 1, false);
            }
            let r = self.roster();
            self.broadcast(&r);
            self.next_roster = now + self.cfg.roster_interval_ms;
        } else {
            let mixer = self.mixer.clone();
            self.send(
                &mixer,
                &ConfMsg::Join {
                    member: self.me.clone(),
                },
            );
        }
        self.sync_legs(now);
    }

    /// Whether we are muted (by ourselves or the starter).
    pub fn self_muted(&self) -> bool {
        self.me.muted
    }

    fn set_muted(&mut self, name: &str, on: bool, by: &str) {
        if name == self.me.name {
            self.me.muted = on;
        }
        if let Some(m) = self.members.get_mut(name)
            && m.muted != on
        {
            m.muted = on;
            self.events.push_back(ConfEvent::Muted {
                id: self.id,
                name: name.to_owned(),
                on,
                by: by.to_owned(),
            });
        }
    }

    /// The mixer's levels (0-255 per participant, ourselves included),
    /// from the media; sent on at most every `levels_interval_ms`.
    pub fn set_levels(&mut self, now: Millis, levels: Vec<(String, u8)>) {
        if self.we_mix() {
            self.levels = Some(levels);
            if now >= self.next_levels {
                self.send_levels(now);
            }
        }
    }

    fn send_levels(&mut self, now: Millis) {
        if let Some(levels) = self.levels.take() {
            self.next_levels = now + self.cfg.levels_interval_ms;
            self.broadcast(&ConfMsg::Levels {
                levels: levels.clone(),
            });
            self.event(ConfEvent::Levels {
                id: self.id,
                levels,
            });
        }
    }

    /// The media leg to `peer` last received audio at `at`.
    pub fn heard(&mut self, peer: &str, at: Millis) {
        if let Some(l) = self.legs.get_mut(peer) {
            l.heard = Some(l.heard.map_or(at, |h| h.max(at)));
        }
    }

    /// A message from `from` (a verified user) for this conference.
    pub fn handle_message(&mut self, now: Millis, from: &str, bytes: &[u8]) {
        let Ok((id, m)) = ConfMsg::decode(bytes) else {
            return;
        };
        if id != self.id || matches!(self.state, ConfState::Ended(_)) {
            return;
        }
        match m {
            // A second invitation (someone else added us too): nothing new.
            ConfMsg::Invite { .. } => {}
            ConfMsg::Join { member } if member.name == from => self.on_join(now, member),
            ConfMsg::Join { .. } => {}
            ConfMsg::Roster {
                epoch,
                mixer,
                members,
                // From the mixer, or the old mixer handing over.
            } if mixer == from || from == self.mixer => {
                self.on_roster(now, from, epoch, mixer, members)
            }
            ConfMsg::Roster { .. } => {}
            ConfMsg::Leave => {
                self.pending.remove(from);
                self.remove(now, from, LeftReason::Left);
            }
            ConfMsg::Mute { target, on } if from == target || from == self.starter => {
                self.set_muted(&target, on, from)
            }
            ConfMsg::Mute { .. } => {}
            ConfMsg::Levels { levels } if from == self.mixer && self.joined() => {
                self.event(ConfEvent::Levels {
                    id: self.id,
                    levels,
                });
            }
            ConfMsg::Levels { .. } => {}
            // Only one we invited and who has not joined may be busy.
            ConfMsg::Busy if self.pending.remove(from).is_some() => {
                self.event(ConfEvent::Left {
                    id: self.id,
                    name: from.to_owned(),
                    reason: LeftReason::Busy,
                });
                self.check_alone(now);
            }
            ConfMsg::Busy => {}
        }
        self.sync_legs(now);
    }

    fn on_join(&mut self, now: Millis, member: Member) {
        if self.gone.contains(&(member.name.clone(), member.nonce)) {
            return;
        }
        self.pending.remove(&member.name);
        let name = member.name.clone();
        let new = self.members.insert(name.clone(), member).is_none();
        if new && self.joined() {
            self.event(ConfEvent::Joined {
                id: self.id,
                name: name.clone(),
            });
        }
        if self.we_mix() {
            let best = rank(self.members.values())[0].clone();
            if best.name != self.me.name && clearly_better(&best, &self.me) {
                self.set_mixer(best.name, self.epoch + 1, false);
            }
            let r = self.roster();
            self.broadcast(&r);
            self.next_roster = now + self.cfg.roster_interval_ms;
        } else if self.joined() {
            // The joiner may know an old mixer (us, or one we followed):
            // our roster points it on.
            let r = self.roster();
            self.send(&name, &r);
        }
    }

    fn on_roster(
        &mut self,
        now: Millis,
        from: &str,
        epoch: u32,
        mixer: String,
        members: Vec<Member>,
    ) {
        let newer = epoch > self.epoch
            || (epoch == self.epoch
                && mixer != self.mixer
                && match (self.members.get(&mixer), self.members.get(&self.mixer)) {
                    (Some(a), Some(b)) => rank_key(a) < rank_key(b),
                    (Some(_), None) => true,
                    _ => false,
                });
        if !(newer || (epoch == self.epoch && mixer == self.mixer)) {
            // A mixer we dropped as silent still mixes (its machine
            // stalled past our timeout): our roster tells it.
            if self.we_mix() && epoch < self.epoch && self.gone.iter().any(|(n, _)| n == from) {
                let r = self.roster();
                self.send(from, &r);
            }
            return;
        }
        let mut next: BTreeMap<String, Member> = members
            .into_iter()
            .filter(|m| !self.gone.contains(&(m.name.clone(), m.nonce)))
            .map(|m| (m.name.clone(), m))
            .collect();
        if self.joined() && newer && !next.contains_key(&self.me.name) {
            // The others dropped us (silent too long) and moved on: our
            // old nonce is gone for them, so we come back as a new
            // member with a fresh one (fresh leg keys too).
            self.me.nonce = rejoin_nonce(&self.me.nonce, epoch);
            tracing::info!(conference = self.id, mixer = %mixer, "dropped by the others: joining again");
        }
        if self.joined() {
            let known = next
                .get(&self.me.name)
                .is_some_and(|m| m.nonce == self.me.nonce);
            if !known || from != mixer {
                // The mixer has not got our Join yet (or a handover told
                // us of a mixer that may not know us).
                self.send(
                    &mixer,
                    &ConfMsg::Join {
                        member: self.me.clone(),
                    },
                );
            }
            // Ourselves as we are, but our uplink as the mixer last heard
            // it (every node ranks the same figures).
            let mut mine = self.me.clone();
            if let Some(r) = next.get(&self.me.name).filter(|m| m.nonce == self.me.nonce) {
                mine.uplink_kbps = r.uplink_kbps;
            }
            next.insert(self.me.name.clone(), mine);
        }
        let old: Vec<String> = self.members.keys().cloned().collect();
        for n in &old {
            if !next.contains_key(n) {
                self.events.push_back(ConfEvent::Left {
                    id: self.id,
                    name: n.clone(),
                    reason: LeftReason::Dropped,
                });
            }
        }
        for n in next.keys() {
            self.pending.remove(n);
            if !self.members.contains_key(n) && self.joined() {
                self.events.push_back(ConfEvent::Joined {
                    id: self.id,
                    name: n.clone(),
                });
            }
        }
        // The old mixer missing from the new mixer's roster vanished (a
        // clean leave would have moved us on already): a failover, even
        // when the roster beats our own silence timer.
        let vanished = self.members.contains_key(&self.mixer) && !next.contains_key(&self.mixer);
        self.members = next;
        if mixer != self.mixer || epoch != self.epoch {
            self.set_mixer(mixer, epoch, vanished);
        }
        self.check_alone(now);
    }

    fn set_mixer(&mut self, mixer: String, epoch: u32, failover: bool) {
        let changed = mixer != self.mixer;
        self.mixer = mixer;
        self.epoch = epoch;
        if changed {
            self.events.push_back(ConfEvent::MixerChanged {
                id: self.id,
                mixer: self.mixer.clone(),
                epoch,
                failover,
            });
        }
    }

    /// `name` is gone: out of the roster; a departed mixer is replaced by
    /// the first of the ranking.
    fn remove(&mut self, now: Millis, name: &str, reason: LeftReason) {
        let Some(m) = self.members.remove(name) else {
            return;
        };
        self.gone.insert((m.name.clone(), m.nonce));
        self.legs.remove(name);
        self.event(ConfEvent::Left {
            id: self.id,
            name: name.to_owned(),
            reason,
        });
        if name == self.mixer {
            if let Some(next) = rank(self.members.values()).first().map(|m| m.name.clone()) {
                self.set_mixer(next, self.epoch + 1, reason == LeftReason::TimedOut);
            }
            if self.we_mix() {
                let r = self.roster();
                self.broadcast(&r);
                self.next_roster = now + self.cfg.roster_interval_ms;
            }
        } else if self.we_mix() {
            let r = self.roster();
            self.broadcast(&r);
        }
        self.check_alone(now);
    }

    fn check_alone(&mut self, now: Millis) {
        if self.joined() && self.members.len() <= 1 && self.pending.is_empty() {
            self.end(now, ConfEndReason::Alone);
        }
    }

    /// Keep `legs` to what [`Self::legs`] wants; a new leg starts its grace.
    fn sync_legs(&mut self, now: Millis) {
        let want: BTreeSet<String> = self.legs().into_iter().map(|l| l.peer).collect();
        self.legs.retain(|p, _| want.contains(p));
        for p in want {
            self.legs.entry(p).or_insert(LegTrack {
                since: now,
                heard: None,
            });
        }
    }

    /// When a leg's silence would count: its last audio plus the timeout,
    /// or the grace after its start.
    fn leg_deadline(&self, l: &LegTrack) -> Millis {
        let timeout = if self.we_mix() {
            self.cfg.participant_timeout_ms
        } else {
            self.cfg.mixer_timeout_ms
        };
        let grace = l.since + self.cfg.leg_grace_ms.max(timeout);
        match l.heard {
            Some(h) => (h + timeout).max(l.since + timeout),
            None => grace,
        }
    }

    pub fn poll_timeout(&self) -> Option<Millis> {
        if !self.joined() {
            return None;
        }
        let legs = self.legs.values().map(|l| self.leg_deadline(l)).min();
        let roster = self.we_mix().then_some(self.next_roster);
        let levels = (self.we_mix() && self.levels.is_some()).then_some(self.next_levels);
        let pending = self.pending.values().min().copied();
        [legs, roster, levels, pending].into_iter().flatten().min()
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        if !self.joined() {
            return;
        }
        if self.we_mix() && now >= self.next_roster {
            let r = self.roster();
            self.broadcast(&r);
            self.next_roster = now + self.cfg.roster_interval_ms;
        }
        if self.we_mix() && self.levels.is_some() && now >= self.next_levels {
            self.send_levels(now);
        }
        self.pending.retain(|_, until| *until > now);
        let silent: Vec<String> = self
            .legs
            .iter()
            .filter(|(_, l)| self.leg_deadline(l) <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for p in silent {
            tracing::info!(conference = self.id, peer = %p, "no audio: gone");
            self.remove(now, &p, LeftReason::TimedOut);
        }
        self.check_alone(now);
        self.sync_legs(now);
    }
}

#[cfg(test)]
mod tests;
