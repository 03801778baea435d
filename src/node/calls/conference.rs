//! Conferences on a client node: carries [`ConferenceCore`] messages in
//! sealed envelopes (kind [`ENVELOPE_CONFERENCE`]), keeps peer links to
//! every other participant (the member whose name sorts first opens each,
//! so two never race), and runs the conference media ([`crate::media::mixer`]):
//! one audio device for the conference's whole life and a leg per peer
//! the core wants ([`ConferenceCore::legs`]), keyed from the peer link
//! with the leg's context. Legs are re-pointed when the core's mixer
//! changes; a leg whose link is not up yet is started when it is.
//!
//! A part of the calls sub-driver ([`super::Calls`] owns one
//! [`ConfNode`] while a conference runs): it hands over conference
//! commands, envelopes, media datagrams from a participant's path and the
//! conference media task's messages.

use super::{CallOptions, CallUpdate, CallsEvent, Ctx, MediaEnd, MediaMsg};
use crate::clock::Clock;
use crate::conference::uplink::UplinkEstimator;
use crate::conference::{ConfConfig, ConfEvent, ConfId, ConfState, ConferenceCore, Member, Reach};
use crate::ice::{IceSessions, Path};
use crate::media::audio;
use crate::media::audio::Chime;
use crate::media::mixer::{self, MixCommand, MixEvent, MixTransport, Mixer};
use crate::media::packet::EXPORT_LABEL;
use crate::media::{MediaKeys, MediaSession, MediaStats, Side};
use crate::overlay::EnvelopeId;
use crate::overlay::envelope::kind::CONFERENCE;
use crate::time::Millis;
use rand::RngCore;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The envelope kind of conference signalling (the range 80-95).
pub const ENVELOPE_CONFERENCE: u8 = CONFERENCE;

/// What the node's owner asks of the conference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfCommand {
    /// Start a conference with these users (the lead wires "start from a
    /// group" onto this list).
    Start { users: Vec<String> },
    /// Invite a user into the running conference; during a 1:1 call, turn
    /// it into a conference of three.
    Add { user: String },
    /// Join the conference we are invited to.
    Accept,
    /// Leave (or decline).
    Leave,
    /// Mute ourselves (`None`: toggle).
    Mute { on: Option<bool> },
    /// Mute another participant (the starter only).
    MuteOther { user: String, on: bool },
}

impl ConfCommand {
    /// A short name for error events, as [`crate::node::api::Command::name`]
    /// names the front end's command.
    pub fn name(&self) -> &'static str {
        match self {
            ConfCommand::Start { .. } => "conference start",
            ConfCommand::Add { .. } => "conference add",
            ConfCommand::Accept => "conference accept",
            ConfCommand::Leave => "conference leave",
            ConfCommand::Mute { .. } => "conference mute",
            ConfCommand::MuteOther { .. } => "conference mute other",
        }
    }
}

/// What the node reports about a conference (inside [`CallUpdate`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ConfUpdate {
    Event(ConfEvent),
    /// A leg's media statistics (at the mixer: per participant).
    Stats {
        id: ConfId,
        peer: String,
        stats: Box<MediaStats>,
        path: Option<Path>,
    },
    /// The conference media stopped: its totals.
    MediaEnded {
        id: ConfId,
        stats: Option<mixer::MixStats>,
    },
}

/// The conference's media task, seen from the node.
struct ConfMedia {
    commands: mpsc::Sender<MixCommand>,
    incoming: Option<mpsc::Sender<(String, Vec<u8>)>>,
    forwarder: JoinHandle<()>,
    /// Running legs and their key context.
    legs: BTreeMap<String, [u8; 40]>,
    /// Peers left out of the mix (muted by the starter).
    excluded: BTreeSet<String>,
    muted: bool,
}

/// One conference on the node; see the [module docs](self).
pub struct ConfNode {
    core: ConferenceCore,
    media: Option<ConfMedia>,
    /// The media task ended; the driver drops this once it also did.
    finished: bool,
    /// Our envelopes in flight, so their outcomes are consumed here.
    sent: BTreeSet<EnvelopeId>,
}

impl std::fmt::Debug for ConfNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfNode")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

/// What [`ConfNode`] needs from the calls sub-driver.
pub struct ConfCx<'a, 'b> {
    pub cx: &'a mut Ctx<'b>,
    pub opts: &'a CallOptions,
    pub clock: &'a Arc<dyn Clock>,
    pub media_tx: &'a mpsc::Sender<MediaMsg>,
    pub connects: &'a mut Vec<String>,
    pub events: &'a mut VecDeque<CallsEvent>,
    /// Our measured uplink, fed with every leg's statistics.
    pub uplink: &'a mut UplinkEstimator,
}

impl ConfCx<'_, '_> {
    /// Now on the node's timeline, as the conference core takes it.
    fn now(&self) -> Millis {
        self.cx.now
    }
}

/// Our member entry: a fresh nonce, the reach our NAT detection found,
/// the uplink measured so far.
fn me(cx: &mut Ctx<'_>, uplink_kbps: u32) -> Member {
    let mut nonce = [0u8; 16];
    cx.rng.fill_bytes(&mut nonce);
    let reach = match cx.nat {
        None => Reach::Cone,
        Some(r) if r.udp_blocked => Reach::RelayOnly,
        Some(r) => match r.mapping {
            crate::nat::Mapping::NoNat => Reach::Public,
            crate::nat::Mapping::EndpointIndependent | crate::nat::Mapping::Unknown => Reach::Cone,
            _ => Reach::Symmetric,
        },
    };
    Member {
        name: cx.client.username().to_owned(),
        nonce,
        uplink_kbps,
        reach,
        muted: false,
    }
}

impl ConfNode {
    pub fn id(&self) -> ConfId {
        self.core.id()
    }

    /// Whether `user` is in the conference we started or joined (they
    /// may have our ICE candidates, as a call's peer may).
    pub fn agreed_with(&self, user: &str) -> bool {
        self.core.state() == ConfState::Joined
            && self
                .core
                .members()
                .any(|m| m.name.eq_ignore_ascii_case(user))
    }

    pub fn running(&self) -> bool {
        !matches!(self.core.state(), ConfState::Ended(_)) || !self.finished
    }

    /// Start a conference with `users`.
    pub fn start(users: &[String], replaces: u64, c: &mut ConfCx<'_, '_>) -> Result<Self, String> {
        let me = me(c.cx, c.uplink.kbps());
        let mut users: Vec<String> = users.iter().map(|u| u.to_ascii_lowercase()).collect();
        users.sort();
        users.dedup();
        users.retain(|u| *u != me.name);
        if users.is_empty() {
            return Err("a conference needs someone else".into());
        }
        let id = c.cx.rng.next_u64();
        let core = ConferenceCore::start(ConfConfig::default(), id, me, &users, replaces, c.now())
            .map_err(|e| e.to_string())?;
        let mut n = ConfNode {
            core,
            media: None,
            finished: false,
            sent: BTreeSet::new(),
        };
        n.drive(c);
        Ok(n)
    }

    /// An invitation envelope; `accept` answers it at once.
    pub fn invited(
        from: &str,
        payload: &[u8],
        accept: impl FnOnce(u64) -> bool,
        c: &mut ConfCx<'_, '_>,
    ) -> Option<Self> {
        let me = me(c.cx, c.uplink.kbps());
        let core = ConferenceCore::invited(ConfConfig::default(), me, from, payload, c.now())?;
        let mut n = ConfNode {
            core,
            media: None,
            finished: false,
            sent: BTreeSet::new(),
        };
        if accept(n.core.replaces())
            && let Err(e) = n.core.accept(c.now())
        {
            tracing::warn!("conference: {e}");
        }
        n.drive(c);
        Some(n)
    }

    pub fn command(&mut self, cmd: ConfCommand, c: &mut ConfCx<'_, '_>) -> Result<(), String> {
        let now = c.now();
        let r = match cmd {
            ConfCommand::Start { .. } => Err("a conference is running already".to_owned()),
            ConfCommand::Add { user } => self
                .core
                .invite(now, &user.to_ascii_lowercase())
                .map_err(|e| e.to_string()),
            ConfCommand::Accept => self.core.accept(now).map_err(|e| e.to_string()),
            ConfCommand::Leave => {
                self.core.leave(now);
                Ok(())
            }
            ConfCommand::Mute { on } => {
                let on = on.unwrap_or(!self.core.self_muted());
                self.core.mute_self(on).map_err(|e| e.to_string())
            }
            ConfCommand::MuteOther { user, on } => self
                .core
                .mute_other(&user.to_ascii_lowercase(), on)
                .map_err(|e| e.to_string()),
        };
        self.drive(c);
        r
    }

    pub fn on_envelope(&mut self, from: &str, payload: &[u8], c: &mut ConfCx<'_, '_>) {
        self.core.handle_message(c.now(), from, payload);
        self.drive(c);
    }

    pub fn poll_timeout(&self) -> Option<Millis> {
        self.core.poll_timeout()
    }

    pub fn handle_timeout(&mut self, c: &mut ConfCx<'_, '_>) {
        if self.core.poll_timeout().is_some_and(|t| t <= c.now()) {
            self.core.handle_timeout(c.now());
        }
        self.drive(c);
    }

    /// Move the core's messages into envelopes, report its events, and
    /// bring links and legs to what it wants.
    pub fn drive(&mut self, c: &mut ConfCx<'_, '_>) {
        self.flush(c);
        while let Some(e) = self.core.poll_event() {
            self.on_event(&e, c.opts.ringtone);
            if matches!(e, ConfEvent::Levels { .. }) {
                tracing::trace!("{e:?}");
            } else {
                tracing::info!(conference = format!("{:016x}", self.core.id()), "{e:?}");
            }
            c.events
                .push_back(CallsEvent::Update(CallUpdate::Conference(
                    ConfUpdate::Event(e),
                )));
        }
        // Links: the member whose name sorts first opens each.
        let me = self.core.me().to_owned();
        for other in self.core.others() {
            if other > me && super::link_to(c.cx, &other).is_none() {
                c.connects.push(other);
            }
        }
        self.sync_media(c);
    }

    /// The core's messages into envelopes.
    fn flush(&mut self, c: &mut ConfCx<'_, '_>) {
        while let Some((to, bytes)) = self.core.poll_transmit() {
            let id = c.cx.client.send_envelope(
                c.now(),
                c.cx.unix,
                c.cx.rng,
                &to,
                ENVELOPE_CONFERENCE,
                &bytes,
                false,
            );
            // Every envelope gets an outcome; this only bounds a bug.
            if self.sent.len() >= 4096 {
                self.sent.clear();
            }
            self.sent.insert(id);
        }
    }

    /// The outcome of an envelope: true when it was ours.
    pub fn on_outcome(&mut self, id: &EnvelopeId) -> bool {
        self.sent.remove(id)
    }

    /// The 1:1 call this conference replaced, once we joined.
    pub fn replaced_call(&self) -> Option<u64> {
        (self.core.state() == ConfState::Joined && self.core.replaces() != 0)
            .then(|| self.core.replaces())
    }

    fn on_event(&mut self, e: &ConfEvent, chimes: bool) {
        let me = self.core.me().to_owned();
        let we_mix = self.core.we_mix();
        let Some(m) = &mut self.media else { return };
        match e {
            // Someone else came or went: a chime (the media runs only once
            // we joined, so those already there when we join make none).
            ConfEvent::Joined { name, .. } if chimes && *name != me => {
                let _ = m.commands.try_send(MixCommand::Chime(Chime::Joined));
            }
            ConfEvent::Left { name, .. } if chimes && *name != me => {
                let _ = m.commands.try_send(MixCommand::Chime(Chime::Left));
            }
            ConfEvent::Muted { name, on, .. } if *name == me => {
                m.muted = *on;
                let _ = m.commands.try_send(MixCommand::Mute(*on));
            }
            ConfEvent::Muted { name, on, .. } if we_mix => {
                if *on {
                    m.excluded.insert(name.clone());
                } else {
                    m.excluded.remove(name);
                }
                let _ = m.commands.try_send(MixCommand::Exclude {
                    peer: name.clone(),
                    on: *on,
                });
            }
            _ => {}
        }
    }

    /// Open the media when we join, close it when we leave; legs as the
    /// core wants them.
    fn sync_media(&mut self, c: &mut ConfCx<'_, '_>) {
        match self.core.state() {
            ConfState::Joined if self.media.is_none() && !self.finished => {
                if let Err(e) = self.start_media(c) {
                    tracing::warn!("conference audio: {e}");
                    c.events.push_back(CallsEvent::Failed {
                        command: "conference",
                        error: format!("conference audio: {e}"),
                    });
                    self.core.leave(c.now());
                    self.finished = true;
                    self.flush(c);
                    return;
                }
            }
            ConfState::Ended(_) => {
                self.stop_media();
                return;
            }
            _ => {}
        }
        let Some(m) = &mut self.media else { return };
        let want = self.core.legs();
        let names: BTreeSet<&str> = want.iter().map(|l| l.peer.as_str()).collect();
        let stale: Vec<String> = m
            .legs
            .keys()
            .filter(|p| !names.contains(p.as_str()))
            .cloned()
            .collect();
        for p in stale {
            m.legs.remove(&p);
            let _ = m.commands.try_send(MixCommand::RemoveLeg(p));
        }
        for l in want {
            if m.legs.get(&l.peer) == Some(&l.context) {
                continue;
            }
            let Some(path) = super::link_to(c.cx, &l.peer) else {
                if l.peer.as_str() > self.core.me() {
                    c.connects.push(l.peer.clone());
                }
                continue;
            };
            let Some((secret, _)) = c.cx.link.export(path.remote, EXPORT_LABEL, &l.context) else {
                continue;
            };
            let side = if l.we_mix { Side::Caller } else { Side::Callee };
            let keys = MediaKeys::derive(&secret, side);
            let mut cfg = c.opts.media.clone();
            // Liveness is the conference core's business.
            cfg.timeout_ms = u64::MAX / 4;
            match MediaSession::new(cfg, &keys, c.cx.rng.next_u32(), c.clock.now()) {
                Ok(s) => {
                    tracing::info!(peer = %l.peer, %path, we_mix = l.we_mix, "conference leg");
                    m.legs.insert(l.peer.clone(), l.context);
                    let _ = m.commands.try_send(MixCommand::AddLeg {
                        peer: l.peer.clone(),
                        session: Box::new(s),
                    });
                    if m.excluded.contains(&l.peer) {
                        let _ = m.commands.try_send(MixCommand::Exclude {
                            peer: l.peer.clone(),
                            on: true,
                        });
                    }
                }
                Err(e) => tracing::warn!("conference leg: {e}"),
            }
        }
    }

    fn start_media(&mut self, c: &mut ConfCx<'_, '_>) -> Result<(), String> {
        let io = audio::open(&c.opts.input, &c.opts.output).map_err(|e| e.to_string())?;
        let mixer = Mixer::new(c.opts.media.clone()).map_err(|e| e.to_string())?;
        let (in_tx, in_rx) = mpsc::channel(1024);
        let (out_tx, mut out_rx) = mpsc::channel::<(String, Vec<u8>)>(1024);
        let mut h = mixer::spawn(
            mixer,
            io,
            MixTransport {
                outgoing: out_tx,
                incoming: in_rx,
            },
            c.clock.clone(),
        );
        let tx = c.media_tx.clone();
        let mut events = std::mem::replace(&mut h.events, mpsc::channel(1).1);
        let task = h.task;
        let forwarder = tokio::spawn(async move {
            let (mut out_open, mut ev_open) = (true, true);
            while out_open || ev_open {
                tokio::select! {
                    p = out_rx.recv(), if out_open => match p {
                        Some((peer, p)) => { let _ = tx.send(MediaMsg::ConfOut(peer, p)).await; }
                        None => out_open = false,
                    },
                    e = events.recv(), if ev_open => match e {
                        Some(e) => { let _ = tx.send(MediaMsg::ConfEvent(e)).await; }
                        None => ev_open = false,
                    },
                }
            }
            let r = match task.await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(MediaEnd::Audio(e)),
                Err(e) => Err(MediaEnd::Task(e.to_string())),
            };
            let _ = tx.send(MediaMsg::ConfEnded(r)).await;
        });
        let muted = self.core.self_muted();
        if muted {
            let _ = h.commands.try_send(MixCommand::Mute(true));
        }
        self.media = Some(ConfMedia {
            commands: h.commands,
            incoming: Some(in_tx),
            forwarder,
            legs: BTreeMap::new(),
            excluded: BTreeSet::new(),
            muted,
        });
        Ok(())
    }

    fn stop_media(&mut self) {
        if let Some(m) = &mut self.media
            && m.incoming.is_some()
        {
            m.incoming = None;
            let _ = m.commands.try_send(MixCommand::Stop);
        }
        if self.media.is_none() {
            self.finished = true;
        }
    }

    /// A media datagram from `from`: true when it came on one of our legs'
    /// paths (and went to that leg).
    pub fn media_datagram(&mut self, from: SocketAddr, d: &[u8], ice: &IceSessions) -> bool {
        let Some(m) = &self.media else { return false };
        let Some(tx) = &m.incoming else { return false };
        let Some(peer) = m
            .legs
            .keys()
            .find(|p| ice.selected(p).is_some_and(|s| s.remote == from))
        else {
            return false;
        };
        let _ = tx.try_send((peer.clone(), d.to_vec()));
        true
    }

    /// Where a leg's datagram goes.
    pub fn path_to(&self, peer: &str, ice: &IceSessions) -> Option<Path> {
        let m = self.media.as_ref()?;
        m.incoming.as_ref()?;
        ice.selected(peer)
    }

    /// A message from the conference media task.
    pub fn on_mix(&mut self, e: MixEvent, c: &mut ConfCx<'_, '_>) {
        match e {
            MixEvent::Levels { legs, mic } => {
                let mut levels = vec![(self.core.me().to_owned(), mic)];
                for l in &legs {
                    if l.heard_any {
                        self.core.heard(&l.peer, l.last_received);
                    }
                    levels.push((l.peer.clone(), l.level));
                }
                self.core.set_levels(c.now(), levels);
            }
            MixEvent::Leg { peer, event } => {
                if let crate::media::MediaEvent::Stats(stats) = event {
                    c.uplink.report(
                        c.now(),
                        &peer,
                        stats.bytes_sent,
                        stats.remote_loss_percent,
                        stats.rtt_ms,
                    );
                    self.core.set_uplink(c.now(), c.uplink.kbps());
                    let path = c.cx.ice.selected(&peer);
                    c.events
                        .push_back(CallsEvent::Update(CallUpdate::Conference(
                            ConfUpdate::Stats {
                                id: self.core.id(),
                                peer,
                                stats,
                                path,
                            },
                        )));
                }
            }
        }
        self.drive(c);
    }

    /// The media task ended (stopped, or its device failed).
    pub fn media_ended(&mut self, r: Result<mixer::MixStats, MediaEnd>, c: &mut ConfCx<'_, '_>) {
        self.media = None;
        self.finished = true;
        let stats = match r {
            Ok(s) => Some(s),
            Err(e) => {
                c.events.push_back(CallsEvent::Failed {
                    command: "conference",
                    error: format!("conference audio: {e}"),
                });
                None
            }
        };
        c.events
            .push_back(CallsEvent::Update(CallUpdate::Conference(
                ConfUpdate::MediaEnded {
                    id: self.core.id(),
                    stats,
                },
            )));
        if !matches!(self.core.state(), ConfState::Ended(_)) {
            self.core.leave(c.now());
        }
        self.drive(c);
    }

    /// Leave now (the node stops).
    pub fn leave(&mut self, c: &mut ConfCx<'_, '_>) {
        self.core.leave(c.now());
        self.drive(c);
    }

    /// Stop the media and wait for its end (the recording complete).
    pub async fn shutdown(&mut self, rx: &mut mpsc::Receiver<MediaMsg>) {
        self.stop_media();
        let Some(m) = self.media.take() else { return };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(MediaMsg::ConfEnded(_))) => break,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    m.forwarder.abort();
                    break;
                }
            }
        }
        self.finished = true;
    }
}
