//! Calls on a client node: carries [`CallCore`] messages between users in
//! sealed envelopes (kind [`ENVELOPE_CALL`], through the supernodes, so
//! the callee needs no peer link to ring), asks the client driver for a
//! peer connection when we call someone (ICE, then a link session over
//! the chosen path), and once both sides agree starts the call's
//! [`MediaSession`] under keys exported from that link session, its
//! datagrams on the node's main socket over the path ICE chose.
//!
//! It is a sub-driver of the client driver (`node::driver`), which owns
//! one when the node is started with call options: the driver hands over
//! call commands ([`CallCommand`]), call envelopes (its dispatcher's
//! table routes kind [`ENVELOPE_CALL`] here) and their outcomes, peer
//! events, media datagrams ([`Calls::media_datagram`]) and the media
//! tasks' messages ([`Calls::media_rx`]), sends what [`Calls::on_media`]
//! returns, and reports the [`CallsEvent`]s.
//! Audio and codec work stay in the media driver's task and the audio
//! thread (lock-free rings); nothing here blocks.
//!
//! Devices (issue 17): an invitation rings every device of the callee
//! (the core's transmits name the device, or none for all). The peer
//! link must end at the device that answers: when the callee is known to
//! have several devices, ICE waits for the answer; otherwise it starts
//! with the invitation as before, and a link that turns out to end at
//! another device than the one that answered is dropped and made again.
//! While a call is on, the overlay's single-device envelopes (ICE) to the
//! peer go to the call's device ([`ClientCore::pin_device`]).
//!
//! Moving a call between our devices (issue 17, see [`crate::call`]): the
//! taking device ([`CallCommand::Take`]) places the new leg to the peer's
//! device in the call and connects to it (ICE, a link); the peer answers
//! the leg at once, waits for that link (the peer's ICE session with us
//! follows the taker's offer, so the old leg's path is gone from then
//! on), and starts the new leg's media on the old one's audio devices,
//! handed over ([`MediaCommand::Handover`]): a recording goes on in one
//! file, and a sound card is not closed and opened again.

pub mod conference;

use super::peer::PeerEvent;
use crate::call::{
    CallConfig, CallCore, CallEvent, CallId, CallState, DeviceKey, Target, Transmit,
};
use crate::clock::Clock;
use crate::conference::uplink::UplinkEstimator;
use crate::ice::{IceSessions, Path};
use crate::link::LinkEndpoint;
use crate::media::audio::{self, AudioError, AudioIo, Cadence, DeviceSpec, RingKind};
use crate::media::driver::{self, MediaCommand, MediaTransport};
use crate::media::packet::EXPORT_LABEL;
use crate::media::{MediaConfig, MediaEvent, MediaKeys, MediaSession, MediaStats, Side};
use crate::overlay::envelope::kind::CALL_FIRST;
use crate::overlay::{ClientCore, Devices, EnvelopeId};
use crate::time::{Millis, UnixMillis, earliest};
use conference::{ConfCommand, ConfCx, ConfNode, ConfUpdate};
use rand::RngCore;
use rand::rngs::StdRng;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The envelope kind of call signalling (one of the call range 16-31).
pub const ENVELOPE_CALL: u8 = CALL_FIRST;

/// How a node takes part in calls.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// Capture device ([`DeviceSpec::Echo`] for the echo test contact).
    pub input: DeviceSpec,
    /// Playback device; a `file:` recording is written afresh per call.
    pub output: DeviceSpec,
    pub media: MediaConfig,
    pub call: CallConfig,
    /// Answer every incoming call at once.
    pub auto_answer: bool,
    /// Play the ring-back tone on `output` while the callee rings.
    pub ringback: bool,
    /// Play a ringtone on `output` while an incoming call rings.
    pub ringtone: bool,
}

impl CallOptions {
    /// The echo test contact (Skype's echo123): answers every call and
    /// plays back what it hears; `output` may record it (file or null).
    pub fn echo(output: DeviceSpec, media: MediaConfig, call: CallConfig) -> Self {
        CallOptions {
            input: DeviceSpec::Echo,
            output,
            media,
            call,
            auto_answer: true,
            ringback: false,
            ringtone: false,
        }
    }
}

/// What the node's owner asks of the calls; `call: None` means the call
/// in progress.
#[derive(Debug)]
pub enum CallCommand {
    /// Call a user; the call's id (or why not) comes back on `reply`, its
    /// states as [`CallUpdate`]s.
    Call {
        username: String,
        reply: Option<tokio::sync::oneshot::Sender<Result<CallId, String>>>,
    },
    /// Answer an incoming call.
    Accept {
        call: Option<CallId>,
    },
    Decline {
        call: Option<CallId>,
    },
    /// End a call in any state: cancel, decline or hang up.
    HangUp {
        call: Option<CallId>,
    },
    /// Mute our microphone (`on: None`: toggle).
    Mute {
        call: Option<CallId>,
        on: Option<bool>,
    },
    /// Put the call on hold (`on: None`: toggle).
    Hold {
        call: Option<CallId>,
        on: Option<bool>,
    },
    /// Take over the call up on another device of ours; the new call's id
    /// (or why not) comes back on `reply`.
    Take {
        reply: Option<tokio::sync::oneshot::Sender<Result<CallId, String>>>,
    },
    /// A conference command (`node::calls::conference`).
    Conference(ConfCommand),
}

/// What the calls report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallsEvent {
    Update(CallUpdate),
    /// A command could not be carried out, or a call's audio failed.
    Failed {
        /// The command's name ([`CallCommand::name`]; `call` when a
        /// call's audio failed, `conference` for a conference's).
        command: &'static str,
        error: String,
    },
}

impl CallCommand {
    /// A short name for error events, as [`crate::node::api::Command::name`]
    /// names the front end's command.
    pub fn name(&self) -> &'static str {
        match self {
            CallCommand::Call { .. } => "call",
            CallCommand::Accept { .. } => "accept call",
            CallCommand::Decline { .. } => "decline call",
            CallCommand::HangUp { .. } => "hang up",
            CallCommand::Mute { .. } => "mute",
            CallCommand::Hold { .. } => "hold",
            CallCommand::Take { .. } => "take call",
            CallCommand::Conference(c) => c.name(),
        }
    }
}

/// What the node reports about calls (the driver's `Event::Call`).
#[derive(Debug, Clone, PartialEq)]
pub enum CallUpdate {
    /// Our call to `peer` is being set up; `id` names it in commands.
    Dialing { id: CallId, peer: String },
    /// A state change from call signalling. `detail` says more about why
    /// a call ended, when the node knows (e.g. the overlay's answer).
    State {
        event: CallEvent,
        peer: String,
        detail: Option<String>,
    },
    /// Media statistics, every report interval; `last` once the media
    /// stopped (a recording is then complete).
    Stats {
        id: CallId,
        peer: String,
        stats: Box<MediaStats>,
        path: Option<Path>,
        /// Media bitrate since the previous report (over the whole call
        /// in the final one), kbit/s, packet headers included.
        bitrate: Bitrate,
        last: bool,
    },
    /// A conference changed (`node::calls::conference`).
    Conference(ConfUpdate),
    /// Our microphone is now muted (or not): the mute command was applied.
    Muted { id: CallId, muted: bool },
    /// The call is now on hold (or not) on our side: the hold command was
    /// applied.
    Held { id: CallId, held: bool },
}

/// Sent and received media bitrate, kbit/s.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bitrate {
    pub sent_kbps: f64,
    pub received_kbps: f64,
}

// The node's events are Eq; the statistics' floats are finite (counters and
// their ratios), so equality is total on them.
impl Eq for CallUpdate {}

/// Messages from a call's media tasks to the node driver.
#[derive(Debug)]
pub enum MediaMsg {
    /// A datagram to send to the peer.
    Out(CallId, Vec<u8>),
    Event(CallId, MediaEvent),
    /// The media driver ended (devices closed, recording finalised).
    Ended(CallId, Result<Box<MediaStats>, MediaEnd>),
    /// A conference leg's datagram for `peer`.
    ConfOut(String, Vec<u8>),
    ConfEvent(crate::media::mixer::MixEvent),
    /// The conference media ended.
    ConfEnded(Result<crate::media::mixer::MixStats, MediaEnd>),
}

/// Why a call's media driver stopped by itself.
#[derive(Debug, thiserror::Error)]
pub enum MediaEnd {
    /// The audio device failed (its reason is the device's).
    #[error("audio device: {0}")]
    Audio(#[from] AudioError),
    /// The media task panicked or was cancelled.
    #[error("media task: {0}")]
    Task(String),
}

/// Why a call's media could not start.
#[derive(Debug)]
enum StartFailure {
    /// Opening the audio devices failed: the device's fault.
    Audio(AudioError),
    /// No path or keys for the media (the network's side).
    Media(String),
}

/// The driver's state the call layer works with.
pub struct Ctx<'a> {
    pub now: Millis,
    pub client: &'a mut ClientCore,
    pub link: &'a LinkEndpoint,
    pub ice: &'a IceSessions,
    pub rng: &'a mut StdRng,
    /// Our last NAT detection (a conference's mixer choice uses it).
    pub nat: Option<&'a crate::nat::NatReport>,
    /// The wall clock, which dates envelopes.
    pub unix: crate::time::UnixMillis,
}

/// A call whose media runs (or is stopping).
struct Media {
    peer: String,
    commands: mpsc::Sender<MediaCommand>,
    incoming: Option<mpsc::Sender<Vec<u8>>>,
    forwarder: JoinHandle<()>,
    held: bool,
    remote_held: bool,
    muted: bool,
    /// When the media started, and (ms, bytes sent, bytes received) at
    /// the last report: the bitrate of the stats events.
    started: Millis,
    last_bytes: (Millis, u64, u64),
    /// Its audio devices went to the leg that took the call over: its
    /// end is no hang-up.
    handed_over: bool,
}

impl Media {
    /// The bitrate since the last report (`whole`: since the start).
    fn bitrate(&mut self, now: Millis, s: &MediaStats, whole: bool) -> Bitrate {
        let (t0, tx0, rx0) = if whole {
            (self.started, 0, 0)
        } else {
            self.last_bytes
        };
        self.last_bytes = (now, s.bytes_sent, s.bytes_received);
        let ms = now.since(t0).max(1) as f64;
        // bytes * 8 / ms = kbit/s
        Bitrate {
            sent_kbps: s.bytes_sent.saturating_sub(tx0) as f64 * 8.0 / ms,
            received_kbps: s.bytes_received.saturating_sub(rx0) as f64 * 8.0 / ms,
        }
    }
}

/// Agreed by signalling, waiting for the peer link to carry media.
#[derive(Debug, Clone)]
struct Waiting {
    peer: String,
    side: Side,
    caller_nonce: [u8; 16],
    callee_nonce: [u8; 16],
    /// The peer's device the link must end at (the callee's device that
    /// answered our call); `None`: any of the peer's.
    device: Option<DeviceKey>,
    /// A link that ended at another device was dropped and asked for
    /// again (once per call).
    reconnected: bool,
}

/// Counters of what the call layer dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallNodeStats {
    /// Media datagrams for no running call (or from another address).
    pub media_unrouted: u64,
    /// Media datagrams dropped because the media task was behind.
    pub media_overflow: u64,
    /// Outgoing media with no path to the peer.
    pub media_no_path: u64,
    /// Call invitations from users we blocked, dropped unanswered (the
    /// caller hears it ring out, as for a user who is away).
    pub invites_blocked: u64,
}

/// Calls on one client node; see the [module docs](self).
pub struct Calls {
    core: CallCore,
    opts: CallOptions,
    clock: Arc<dyn Clock>,
    media: HashMap<CallId, Media>,
    waiting: HashMap<CallId, Waiting>,
    /// Our call envelopes whose failure ends an invitation.
    invites: HashMap<EnvelopeId, CallId>,
    /// Other call envelopes in flight, so their outcomes are consumed.
    sent: HashMap<EnvelopeId, Millis>,
    /// Why calls ended, when the node knows more than the core.
    details: HashMap<CallId, String>,
    /// Users the driver should open a peer connection to.
    connects: Vec<String>,
    /// Users whose peer connection the driver should drop and open again
    /// (it ended at another device of theirs than the call's).
    reconnects: Vec<String>,
    events: VecDeque<CallsEvent>,
    media_tx: mpsc::Sender<MediaMsg>,
    /// The ring-back or ringtone playing, if any.
    ringer: Option<Ringer>,
    /// The media tasks' messages: the driver receives them and hands each
    /// to [`Calls::on_media`].
    pub media_rx: mpsc::Receiver<MediaMsg>,
    stats: CallNodeStats,
    /// The conference we take part in, if any.
    conf: Option<ConfNode>,
    /// Our uplink as the media we sent measured it (1:1 calls and
    /// conference legs): the conference's mixer ranking.
    uplink: UplinkEstimator,
}

impl std::fmt::Debug for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls")
            .field("core", &self.core)
            .field("media", &self.media.keys().collect::<Vec<_>>())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// A ring playing on the output device: samples are written ahead of the
/// device by [`RING_LEAD_MS`], topped up every [`RING_FILL_MS`] from the
/// driver's timer (the ring buffer never blocks).
struct Ringer {
    call: CallId,
    io: AudioIo,
    cadence: Cadence,
    started: Millis,
    next_fill: Millis,
}

const RING_LEAD_MS: u64 = 100;
const RING_FILL_MS: u64 = 20;

impl Ringer {
    fn fill(&mut self, now: Millis) {
        let due = (now.since(self.started) + RING_LEAD_MS) * audio::SAMPLE_RATE as u64 / 1000;
        let want = due.saturating_sub(self.cadence.position()) as usize;
        let n = want.min(self.io.playback.slots());
        for _ in 0..n {
            // `slots` said there is room.
            let _ = self.io.playback.push(self.cadence.next_sample());
        }
        self.next_fill = now + RING_FILL_MS;
    }
}

fn fresh_nonce(rng: &mut StdRng) -> [u8; 16] {
    let mut n = [0u8; 16];
    rng.fill_bytes(&mut n);
    n
}

impl Calls {
    pub fn new(opts: CallOptions, clock: Arc<dyn Clock>) -> Self {
        let (media_tx, media_rx) = mpsc::channel(1024);
        Calls {
            core: CallCore::new(opts.call.clone()),
            opts,
            clock,
            media: HashMap::new(),
            waiting: HashMap::new(),
            invites: HashMap::new(),
            sent: HashMap::new(),
            details: HashMap::new(),
            connects: Vec::new(),
            reconnects: Vec::new(),
            events: VecDeque::new(),
            media_tx,
            media_rx,
            ringer: None,
            stats: CallNodeStats::default(),
            conf: None,
            uplink: UplinkEstimator::new(),
        }
    }

    pub fn stats(&self) -> &CallNodeStats {
        &self.stats
    }

    /// The call in progress, if any.
    pub fn current(&self) -> Option<CallId> {
        self.core.current()
    }

    pub fn poll_event(&mut self) -> Option<CallsEvent> {
        self.events.pop_front()
    }

    fn update(&mut self, u: CallUpdate) {
        self.events.push_back(CallsEvent::Update(u));
    }

    /// Users to open a peer connection to (the driver looks them up and
    /// runs ICE unless a connection exists or is under way).
    pub fn take_connects(&mut self) -> Vec<String> {
        std::mem::take(&mut self.connects)
    }

    /// Users whose peer connection should be dropped (its ICE session and
    /// link) and opened again.
    pub fn take_reconnects(&mut self) -> Vec<String> {
        std::mem::take(&mut self.reconnects)
    }

    /// How this device names itself (in the account's device list): our
    /// answers carry it, for the caller to tell our other devices.
    pub fn set_device_name(&mut self, name: &str) {
        self.core.set_device_name(name);
    }

    /// Our username: our calls are announced to our other devices, and
    /// theirs taken from it.
    pub fn set_account(&mut self, username: &str) {
        self.core.set_account(username);
    }

    pub fn poll_timeout(&self) -> Option<Millis> {
        let ring = self.ringer.as_ref().map(|r| r.next_fill);
        let conf = self.conf.as_ref().and_then(|c| c.poll_timeout());
        earliest(earliest(self.core.poll_timeout(), ring), conf)
    }

    pub fn handle_timeout(&mut self, cx: &mut Ctx<'_>) {
        if self.core.poll_timeout().is_some_and(|t| t <= cx.now) {
            self.core.handle_timeout(cx.now);
        }
        if let Some(r) = self.ringer.as_mut().filter(|r| r.next_fill <= cx.now) {
            r.fill(cx.now);
        }
        self.with_conf(cx, |c, x| c.handle_timeout(x));
        self.drive(cx);
    }

    /// Start the ring-back (our callee rings) or the ringtone (a call for
    /// us rings) on the output device, unless configured off. A device
    /// that cannot open only costs the tone.
    fn start_ring(&mut self, id: CallId, kind: RingKind, now: Millis) {
        let wanted = match kind {
            RingKind::Back => self.opts.ringback,
            RingKind::Incoming => self.opts.ringtone,
        };
        if !wanted || self.ringer.as_ref().is_some_and(|r| r.call == id) {
            return;
        }
        self.close_ring();
        match audio::open(&DeviceSpec::Null, &self.opts.output) {
            Ok(io) => {
                let mut r = Ringer {
                    call: id,
                    io,
                    cadence: Cadence::new(kind),
                    started: now,
                    next_fill: now,
                };
                r.fill(now);
                self.ringer = Some(r);
            }
            Err(e) => tracing::warn!(call = id, "no {kind:?} ring: {e}"),
        }
    }

    /// Stop call `id`'s ring (closing the device before media opens it).
    fn stop_ring(&mut self, id: CallId) {
        if self.ringer.as_ref().is_some_and(|r| r.call == id) {
            self.close_ring();
        }
    }

    fn close_ring(&mut self) {
        let Some(r) = self.ringer.take() else {
            return;
        };
        // Closing joins the pacing thread (up to a 10 ms tick). A recording
        // must be complete before the call's media opens the same file, so
        // that case waits; a sound card closes off the driver's task.
        let file = matches!(self.opts.output, DeviceSpec::File(_));
        match tokio::runtime::Handle::try_current() {
            Ok(h) if !file => {
                h.spawn_blocking(move || drop(r.io));
            }
            _ => drop(r.io),
        }
    }

    fn target(&self, call: Option<CallId>) -> Result<CallId, String> {
        call.or_else(|| self.core.current())
            .ok_or_else(|| "no call in progress".to_owned())
    }

    /// Handle a call command; a failure comes out as [`CallsEvent::Failed`].
    pub fn command(&mut self, c: CallCommand, cx: &mut Ctx<'_>) {
        let now = cx.now;
        let command = c.name();
        let r: Result<(), String> = match c {
            CallCommand::Call { username, reply } => {
                let peer = username.to_ascii_lowercase();
                let id = cx.rng.next_u64();
                let nonce = fresh_nonce(cx.rng);
                let r = if peer == cx.client.username() {
                    Err("you cannot call yourself".to_owned())
                } else {
                    self.core
                        .invite(now, &peer, id, nonce)
                        .map_err(|e| e.to_string())
                };
                if r.is_ok() {
                    self.update(CallUpdate::Dialing {
                        id,
                        peer: peer.clone(),
                    });
                    // Connectivity checks run while it rings, unless the
                    // callee has several devices: then with the one that
                    // answers.
                    let devices = cx.client.reachable_devices(&peer);
                    self.core.expect_devices(id, devices);
                    if devices <= 1 {
                        self.connects.push(peer);
                    }
                }
                let r2 = r.clone().map(|_| id);
                if let Some(reply) = reply {
                    let _ = reply.send(r2);
                }
                r.map(|_| ())
            }
            CallCommand::Accept { call } => self.target(call).and_then(|id| {
                let nonce = fresh_nonce(cx.rng);
                self.core.accept(now, id, nonce).map_err(|e| e.to_string())
            }),
            CallCommand::Decline { call } => self
                .target(call)
                .and_then(|id| self.core.decline(now, id).map_err(|e| e.to_string())),
            CallCommand::HangUp { call } => self
                .target(call)
                .and_then(|id| self.core.hangup(now, id).map_err(|e| e.to_string())),
            CallCommand::Mute { call, on } => self.target(call).and_then(|id| {
                let on = on.unwrap_or_else(|| !self.media.get(&id).is_some_and(|m| m.muted));
                self.core.set_mute(now, id, on).map_err(|e| e.to_string())?;
                if let Some(m) = self.media.get_mut(&id) {
                    m.muted = on;
                    let _ = m.commands.try_send(MediaCommand::Mute(on));
                }
                self.events
                    .push_back(CallsEvent::Update(CallUpdate::Muted { id, muted: on }));
                Ok(())
            }),
            CallCommand::Hold { call, on } => self.target(call).and_then(|id| {
                let on = on.unwrap_or_else(|| !self.media.get(&id).is_some_and(|m| m.held));
                self.core.set_hold(now, id, on).map_err(|e| e.to_string())?;
                if let Some(m) = self.media.get_mut(&id) {
                    m.held = on;
                    let _ = m
                        .commands
                        .try_send(MediaCommand::Hold(m.held || m.remote_held));
                }
                self.events
                    .push_back(CallsEvent::Update(CallUpdate::Held { id, held: on }));
                Ok(())
            }),
            CallCommand::Take { reply } => {
                let id = cx.rng.next_u64();
                let nonce = fresh_nonce(cx.rng);
                let r = match self.core.elsewhere().map(|e| e.peer_device) {
                    Some(device) => self
                        .core
                        .take_over(now, id, nonce)
                        .map(|peer| (peer, device))
                        .map_err(|e| e.to_string()),
                    None => Err(crate::call::CallError::NothingToTake.to_string()),
                };
                if let Ok((peer, device)) = &r {
                    self.update(CallUpdate::Dialing {
                        id,
                        peer: peer.clone(),
                    });
                    // ICE and the link to the peer's device in the call,
                    // now: the move waits for them.
                    cx.client.pin_device(peer, Some(*device));
                    self.connects.push(peer.clone());
                }
                if let Some(reply) = reply {
                    let _ = reply.send(r.clone().map(|_| id));
                }
                r.map(|_| ())
            }
            CallCommand::Conference(c) => self.conference_command(c, cx),
        };
        if let Err(error) = r {
            self.events.push_back(CallsEvent::Failed { command, error });
        }
        self.drive(cx);
    }

    /// Move the core's messages into envelopes and act on its events.
    pub fn drive(&mut self, cx: &mut Ctx<'_>) {
        while let Some(Transmit { to, devices, bytes }) = self.core.poll_transmit() {
            let invite = matches!(
                crate::call::Msg::decode(&bytes),
                Ok((_, crate::call::Msg::Invite { .. }))
            );
            let devices = match devices {
                Target::Every => Devices::Every,
                Target::Only(d) => Devices::Only(d),
                Target::Except(d) => Devices::Except(d),
            };
            let id = cx.client.send_envelope_to(
                cx.now,
                cx.unix,
                cx.rng,
                (&to, devices),
                ENVELOPE_CALL,
                &bytes,
                false,
            );
            match crate::call::Msg::decode(&bytes) {
                Ok((call, _)) if invite => {
                    self.invites.insert(id, call);
                }
                _ => {
                    self.sent.insert(id, cx.now);
                }
            }
        }
        // Every envelope gets an outcome; this only bounds a bug.
        if self.sent.len() + self.invites.len() > 4096 {
            self.sent.clear();
            self.invites.clear();
        }
        while let Some(e) = self.core.poll_event() {
            self.on_call_event(e, cx);
        }
        let mut ready = Vec::new();
        for (&id, w) in self.waiting.iter_mut() {
            match link_device(cx, &w.peer) {
                Some(d) if w.device.is_none_or(|x| x == d) => ready.push(id),
                Some(_) if !w.reconnected => {
                    tracing::info!(call = id, peer = %w.peer, "the peer link ends at another device than the one that answered: connecting again");
                    w.reconnected = true;
                    self.reconnects.push(w.peer.clone());
                }
                _ => {}
            }
        }
        for id in ready {
            if let Some(w) = self.waiting.remove(&id) {
                self.start_media(id, w, cx);
            }
        }
        // Starting media may have failed and ended a call.
        while let Some(e) = self.core.poll_event() {
            self.on_call_event(e, cx);
        }
        // A conference that replaced our 1:1 call ends it once joined.
        if let Some(id) = self.conf.as_ref().and_then(|c| c.replaced_call())
            && self.core.current() == Some(id)
        {
            self.details.insert(id, "it became a conference".to_owned());
            let _ = self.core.hangup(cx.now, id);
            while let Some(e) = self.core.poll_event() {
                self.on_call_event(e, cx);
            }
        }
        if self.conf.as_ref().is_some_and(|c| !c.running()) {
            self.conf = None;
        }
    }

    /// Run `f` on the conference with what it needs.
    fn with_conf<R>(
        &mut self,
        cx: &mut Ctx<'_>,
        f: impl FnOnce(&mut ConfNode, &mut ConfCx<'_, '_>) -> R,
    ) -> Option<R> {
        let conf = self.conf.as_mut()?;
        let mut c = ConfCx {
            cx,
            opts: &self.opts,
            clock: &self.clock,
            media_tx: &self.media_tx,
            connects: &mut self.connects,
            events: &mut self.events,
            uplink: &mut self.uplink,
        };
        Some(f(conf, &mut c))
    }

    fn conf_cx<'a, 'b>(&'a mut self, cx: &'a mut Ctx<'b>) -> ConfCx<'a, 'b> {
        ConfCx {
            cx,
            opts: &self.opts,
            clock: &self.clock,
            media_tx: &self.media_tx,
            connects: &mut self.connects,
            events: &mut self.events,
            uplink: &mut self.uplink,
        }
    }

    /// A conference command: to the running conference, or one that
    /// starts one (`Add` during a 1:1 call makes it a conference of three).
    fn conference_command(&mut self, cmd: ConfCommand, cx: &mut Ctx<'_>) -> Result<(), String> {
        if let Some(r) = self.with_conf(cx, |c, x| c.command(cmd.clone(), x)) {
            return r;
        }
        let (users, replaces) = match cmd {
            ConfCommand::Start { users } => (users, 0),
            ConfCommand::Add { user } => {
                let id = self
                    .core
                    .current()
                    .ok_or("no call or conference to add to")?;
                if self.core.state(id) != Some(CallState::Active) {
                    return Err("the call is not answered yet".into());
                }
                let peer = self.core.peer(id).unwrap_or_default().to_owned();
                (vec![peer, user], id)
            }
            _ => return Err("no conference".into()),
        };
        let n = ConfNode::start(&users, replaces, &mut self.conf_cx(cx))?;
        self.conf = Some(n);
        Ok(())
    }

    /// A conference envelope from `from` (a verified user); `blocked`: we
    /// blocked them, so their invitation to a conference is dropped.
    pub fn on_conference_envelope(
        &mut self,
        from: &str,
        payload: &[u8],
        blocked: bool,
        cx: &mut Ctx<'_>,
    ) {
        let id = crate::conference::ConfMsg::decode(payload).map(|(id, _)| id);
        let current = self.core.current();
        let busy = match &self.conf {
            Some(c) => Ok(c.id()) != id,
            // In a 1:1 call that this conference does not replace.
            None => current.is_some_and(|call| {
                !matches!(
                    crate::conference::ConfMsg::decode(payload),
                    Ok((_, crate::conference::ConfMsg::Invite { replaces, .. })) if replaces == call
                )
            }),
        };
        match &self.conf {
            Some(c) if Ok(c.id()) == id => {
                self.with_conf(cx, |c, x| c.on_envelope(from, payload, x));
            }
            // Busy: the inviter shows us busy (an Invite only; the rest of
            // another conference's messages are dropped).
            _ if busy => {
                if let Some(reply) = crate::conference::ConferenceCore::busy_reply(payload) {
                    tracing::info!(%from, "conference invitation while busy: answered busy");
                    let id = cx.client.send_envelope(
                        cx.now,
                        cx.unix,
                        cx.rng,
                        from,
                        self::conference::ENVELOPE_CONFERENCE,
                        &reply,
                        false,
                    );
                    self.sent.insert(id, cx.now);
                }
            }
            Some(_) => {}
            None if blocked => self.blocked_invite(from),
            None => {
                let auto = self.opts.auto_answer;
                let n = ConfNode::invited(
                    from,
                    payload,
                    |replaces| auto || (replaces != 0 && current == Some(replaces)),
                    &mut self.conf_cx(cx),
                );
                self.conf = n;
            }
        }
        self.drive(cx);
    }

    fn on_call_event(&mut self, e: CallEvent, cx: &mut Ctx<'_>) {
        let id = e.id();
        // (A call on another device of ours is not in our core.)
        let peer = match &e {
            CallEvent::OnOtherDevice { peer, .. } => peer.clone(),
            _ => self.core.peer(id).unwrap_or_default().to_owned(),
        };
        let mut detail = None;
        // Single-device envelopes (ICE) to the peer go to the call's
        // device while it is on.
        match &e {
            CallEvent::Incoming { .. }
            | CallEvent::Connected { .. }
            | CallEvent::Replacing { .. } => {
                cx.client.pin_device(&peer, self.core.device(id));
            }
            // Unless a leg that took this call over goes on with them.
            CallEvent::Ended { .. } => {
                let on = self.core.current().filter(|&c| c != id);
                let device = on
                    .filter(|&c| self.core.peer(c) == Some(peer.as_str()))
                    .and_then(|c| self.core.device(c));
                cx.client.pin_device(&peer, device);
            }
            _ => {}
        }
        match &e {
            CallEvent::Ringing { .. } => self.start_ring(id, RingKind::Back, cx.now),
            CallEvent::Incoming { .. } if !self.opts.auto_answer => {
                self.start_ring(id, RingKind::Incoming, cx.now)
            }
            CallEvent::Connected { .. } | CallEvent::Ended { .. } => self.stop_ring(id),
            _ => {}
        }
        match &e {
            CallEvent::Incoming { .. } if self.opts.auto_answer => {
                let nonce = fresh_nonce(cx.rng);
                if let Err(err) = self.core.accept(cx.now, id, nonce) {
                    tracing::warn!(call = id, "auto-answer: {err}");
                }
            }
            // A take-over of our call (the core checked it is from another
            // device of the same user): answered at once, it rings nobody.
            CallEvent::Replacing { .. } => {
                let nonce = fresh_nonce(cx.rng);
                if let Err(err) = self.core.accept(cx.now, id, nonce) {
                    tracing::warn!(call = id, "take-over: {err}");
                }
            }
            CallEvent::Connected {
                side,
                caller_nonce,
                callee_nonce,
                ..
            } => {
                let taking = self.core.replaces(id).is_some();
                let mut w = Waiting {
                    peer: peer.clone(),
                    side: *side,
                    caller_nonce: *caller_nonce,
                    callee_nonce: *callee_nonce,
                    device: match side {
                        Side::Caller => self.core.device(id),
                        Side::Callee if taking => self.core.device(id),
                        Side::Callee => None,
                    },
                    // A leg taking over a call from the peer's other
                    // device: the taker connects (our link to the old
                    // device stays until then).
                    reconnected: taking && *side == Side::Callee,
                };
                let linked = link_device(cx, &peer);
                // ICE under way since the invitation, to a device of a
                // callee with several: maybe not the one that answered.
                let guessed = *side == Side::Caller
                    && !taking
                    && cx.ice.started(&peer).is_some()
                    && cx.client.reachable_devices(&peer) > 1;
                if linked.is_some_and(|d| w.device.is_none_or(|x| x == d)) {
                    self.start_media(id, w, cx);
                } else if w.reconnected || (taking && cx.ice.started(&peer).is_some()) {
                    // A take-over: the taker's connection is under way.
                    self.waiting.insert(id, w);
                } else if linked.is_some() || (linked.is_none() && guessed) {
                    // Linked (or linking) to another device of the callee:
                    // again, to the one that answered.
                    tracing::info!(call = id, %peer, "answered on a device the peer link may not end at: connecting again");
                    w.reconnected = true;
                    self.reconnects.push(peer.clone());
                    self.waiting.insert(id, w);
                } else {
                    // The caller started ICE with the invitation; if that
                    // failed meanwhile, try again now the call is answered.
                    if *side == Side::Caller {
                        self.connects.push(peer.clone());
                    }
                    self.waiting.insert(id, w);
                }
            }
            CallEvent::RemoteHold { on_hold, .. } => {
                if let Some(m) = self.media.get_mut(&id) {
                    m.remote_held = *on_hold;
                    let _ = m
                        .commands
                        .try_send(MediaCommand::Hold(m.held || m.remote_held));
                }
            }
            CallEvent::Ended { .. } => {
                self.waiting.remove(&id);
                self.stop_media(id);
                detail = self.details.remove(&id);
            }
            _ => {}
        }
        tracing::info!(call = format!("{id:016x}"), %peer, "call {e}");
        self.update(CallUpdate::State {
            event: e,
            peer,
            detail,
        });
    }

    /// Start the media of call `id` over the peer link's path.
    fn start_media(&mut self, id: CallId, w: Waiting, cx: &mut Ctx<'_>) {
        match self.try_start_media(id, &w, cx) {
            Ok(()) => {}
            Err(StartFailure::Audio(e)) => {
                tracing::warn!(call = id, peer = %w.peer, "audio: {e}");
                self.details.insert(id, e.to_string());
                self.core.audio_failed(cx.now, id);
            }
            Err(StartFailure::Media(why)) => {
                tracing::warn!(call = id, peer = %w.peer, "media: {why}");
                self.details.insert(id, why);
                self.core.media_failed(cx.now, id);
            }
        }
    }

    fn try_start_media(
        &mut self,
        id: CallId,
        w: &Waiting,
        cx: &mut Ctx<'_>,
    ) -> Result<(), StartFailure> {
        let path = link_to(cx, &w.peer).ok_or(StartFailure::Media("no peer link".into()))?;
        let context = MediaKeys::export_context(id, &w.caller_nonce, &w.callee_nonce);
        let (secret, _) = cx
            .link
            .export(path.remote, EXPORT_LABEL, &context)
            .ok_or(StartFailure::Media("the peer link closed".into()))?;
        let keys = MediaKeys::derive(&secret, w.side);
        let now = self.clock.now();
        let session = MediaSession::new(self.opts.media.clone(), &keys, cx.rng.next_u32(), now)
            .map_err(|e| StartFailure::Media(format!("media: {e}")))?;
        // A leg that takes over our call: the old leg's audio devices
        // carry on here (opened afresh if that media is gone meanwhile).
        let old = self
            .core
            .replaces(id)
            .and_then(|old| self.media.get_mut(&old))
            .filter(|m| !m.handed_over);
        type Opening = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<AudioIo, AudioError>> + Send>,
        >;
        let io: Opening = match old {
            Some(m) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                // Its datagrams stop here: the new leg's path is the peer's.
                // (Its input stays open: closing it would end the driver
                // before it hands the devices over.)
                m.handed_over = true;
                let _ = m.commands.try_send(MediaCommand::Handover(tx));
                let (input, output) = (self.opts.input.clone(), self.opts.output.clone());
                Box::pin(async move {
                    match rx.await {
                        Ok(io) => Ok(io),
                        Err(_) => audio::open(&input, &output),
                    }
                })
            }
            None => {
                let io = audio::open(&self.opts.input, &self.opts.output)
                    .map_err(StartFailure::Audio)?;
                Box::pin(async move { Ok(io) })
            }
        };
        let (in_tx, in_rx) = mpsc::channel(512);
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(512);
        let mut h = driver::spawn_after(
            session,
            io,
            MediaTransport {
                outgoing: out_tx,
                incoming: in_rx,
            },
            self.clock.clone(),
        );
        let tx = self.media_tx.clone();
        let mut events = std::mem::replace(&mut h.events, mpsc::channel(1).1);
        let task = h.task;
        let forwarder = tokio::spawn(async move {
            let (mut out_open, mut ev_open) = (true, true);
            while out_open || ev_open {
                tokio::select! {
                    p = out_rx.recv(), if out_open => match p {
                        Some(p) => { let _ = tx.send(MediaMsg::Out(id, p)).await; }
                        None => out_open = false,
                    },
                    e = events.recv(), if ev_open => match e {
                        Some(e) => { let _ = tx.send(MediaMsg::Event(id, e)).await; }
                        None => ev_open = false,
                    },
                }
            }
            let r = match task.await {
                Ok(Ok(s)) => Ok(Box::new(s)),
                Ok(Err(e)) => Err(MediaEnd::Audio(e)),
                Err(e) => Err(MediaEnd::Task(e.to_string())),
            };
            let _ = tx.send(MediaMsg::Ended(id, r)).await;
        });
        tracing::info!(call = id, peer = %w.peer, %path, "media started");
        self.media.insert(
            id,
            Media {
                peer: w.peer.clone(),
                commands: h.commands,
                incoming: Some(in_tx),
                forwarder,
                held: false,
                remote_held: false,
                muted: false,
                started: now,
                last_bytes: (now, 0, 0),
                handed_over: false,
            },
        );
        Ok(())
    }

    fn stop_media(&mut self, id: CallId) {
        if let Some(m) = self.media.get_mut(&id) {
            // Closing its input ends the media driver too.
            m.incoming = None;
            let _ = m.commands.try_send(MediaCommand::Stop);
        }
    }

    /// Whether we are in a call with `user` that we placed or accepted
    /// (so they may have our ICE candidates).
    pub fn agreed_with(&self, user: &str) -> bool {
        if self.conf.as_ref().is_some_and(|c| c.agreed_with(user)) {
            return true;
        }
        self.core.current().is_some_and(|id| {
            self.core
                .peer(id)
                .is_some_and(|p| p.eq_ignore_ascii_case(user))
                && matches!(
                    self.core.state(id),
                    Some(
                        CallState::Inviting
                            | CallState::Ringing
                            | CallState::Connecting
                            | CallState::Active
                    )
                )
        })
    }

    /// A call envelope from `from` (a verified user) on their device
    /// `device` (its x25519 key), made at `created_ms`; `blocked`: we
    /// blocked them, so their invitations are dropped (the signalling of a
    /// call already on still passes, so it can end).
    pub fn on_envelope(
        &mut self,
        (from, device): (&str, DeviceKey),
        created_ms: u64,
        payload: &[u8],
        blocked: bool,
        cx: &mut Ctx<'_>,
    ) {
        let decoded = crate::call::Msg::decode(payload);
        let invite = matches!(decoded, Ok((_, crate::call::Msg::Invite { .. })));
        if blocked && invite {
            return self.blocked_invite(from);
        }
        // The invitation was sealed to every device of theirs by now: how
        // many there are (for a call of ours; others ignore it).
        if let Ok((id, _)) = decoded {
            self.core
                .expect_devices(id, cx.client.reachable_devices(from));
        }
        self.core.handle_message(
            cx.now,
            cx.unix,
            from,
            device,
            UnixMillis(created_ms),
            payload,
        );
        self.drive(cx);
    }

    /// Refuse to call `username`, whom we blocked (the caller's driver
    /// knows the contacts): a [`CallsEvent::Failed`] saying why.
    pub fn refuse_blocked(
        &mut self,
        username: &str,
        reply: Option<tokio::sync::oneshot::Sender<Result<CallId, String>>>,
    ) {
        let error = format!("{username} is blocked: unblock them to call");
        if let Some(reply) = reply {
            let _ = reply.send(Err(error.clone()));
        }
        self.events.push_back(CallsEvent::Failed {
            command: "call",
            error,
        });
    }

    /// Count and log an invitation (to a call or a conference) from a user
    /// we blocked, dropped unanswered.
    fn blocked_invite(&mut self, from: &str) {
        self.stats.invites_blocked += 1;
        tracing::info!(
            from,
            dropped = self.stats.invites_blocked,
            "call invite from a blocked user dropped"
        );
    }

    /// The outcome of an envelope; true when it was one of ours.
    pub fn on_envelope_outcome(
        &mut self,
        id: &EnvelopeId,
        failed: Option<&str>,
        cx: &mut Ctx<'_>,
    ) -> bool {
        if self.sent.remove(id).is_some() || self.conf.as_mut().is_some_and(|c| c.on_outcome(id)) {
            return true;
        }
        let Some(call) = self.invites.remove(id) else {
            return false;
        };
        if let Some(reason) = failed
            && self.core.state(call) == Some(CallState::Inviting)
        {
            self.details.insert(call, reason.to_owned());
            self.core.unreachable(cx.now, call);
            self.drive(cx);
        }
        true
    }

    /// A peer connection changed: a call waiting for it fails with it.
    pub fn on_peer(&mut self, e: &PeerEvent, cx: &mut Ctx<'_>) {
        if let PeerEvent::Failed { user, reason } = e {
            let ids: Vec<CallId> = self
                .waiting
                .iter()
                .filter(|(_, w)| w.peer == *user)
                .map(|(&id, _)| id)
                .collect();
            for id in ids {
                self.waiting.remove(&id);
                self.details
                    .insert(id, format!("no network path to {user}: {reason}"));
                self.core.media_failed(cx.now, id);
            }
        }
        self.drive(cx);
    }

    /// A media datagram from the network: to the running call whose path
    /// ends at `from` (the session authenticates it).
    pub fn media_datagram(&mut self, from: SocketAddr, d: &[u8], ice: &IceSessions) {
        let m = self.media.values().find(|m| {
            m.incoming.is_some()
                && !m.handed_over
                && ice.selected(&m.peer).is_some_and(|p| p.remote == from)
        });
        match m.and_then(|m| m.incoming.as_ref()) {
            Some(tx) => {
                if tx.try_send(d.to_vec()).is_err() {
                    self.stats.media_overflow += 1;
                }
            }
            None if self
                .conf
                .as_mut()
                .is_some_and(|c| c.media_datagram(from, d, ice)) => {}
            None => self.stats.media_unrouted += 1,
        }
    }

    /// A message from a media task; returns a datagram to send and the
    /// path to send it on.
    pub fn on_media(&mut self, msg: MediaMsg, cx: &mut Ctx<'_>) -> Option<(Path, Vec<u8>)> {
        match msg {
            MediaMsg::Out(id, bytes) => {
                let m = self.media.get(&id)?;
                m.incoming.as_ref()?;
                if m.handed_over {
                    return None;
                }
                match cx.ice.selected(&m.peer) {
                    Some(p) => return Some((p, bytes)),
                    None => self.stats.media_no_path += 1,
                }
            }
            MediaMsg::Event(id, e) => match e {
                MediaEvent::Flowing => self.core.media_flowing(cx.now, id),
                MediaEvent::Stats(stats) => {
                    let now = self.clock.now();
                    self.uplink.report(
                        now,
                        &format!("call:{id}"),
                        stats.bytes_sent,
                        stats.remote_loss_percent,
                        stats.rtt_ms,
                    );
                    if let Some(m) = self.media.get_mut(&id) {
                        let path = cx.ice.selected(&m.peer);
                        let peer = m.peer.clone();
                        let bitrate = m.bitrate(now, &stats, false);
                        self.update(CallUpdate::Stats {
                            id,
                            peer,
                            stats,
                            path,
                            bitrate,
                            last: false,
                        });
                    }
                }
                MediaEvent::Timeout { silent_ms } => {
                    self.details.insert(
                        id,
                        format!("no audio from the other side for {} s", silent_ms / 1000),
                    );
                    self.core.media_failed(cx.now, id);
                }
            },
            MediaMsg::ConfOut(peer, bytes) => {
                match self.conf.as_ref().and_then(|c| c.path_to(&peer, cx.ice)) {
                    Some(p) => return Some((p, bytes)),
                    None => self.stats.media_no_path += 1,
                }
            }
            MediaMsg::ConfEvent(e) => {
                self.with_conf(cx, |c, x| c.on_mix(e, x));
            }
            MediaMsg::ConfEnded(r) => {
                self.with_conf(cx, |c, x| c.media_ended(r, x));
            }
            MediaMsg::Ended(id, r) => {
                let m = self.media.remove(&id)?;
                let audio = matches!(r, Err(MediaEnd::Audio(_)));
                let handed_over = m.handed_over;
                self.media_ended(id, m, r);
                // The media stopped on its own: the audio device failed
                // (said as such), or the task did (hang up); or its
                // devices went to the leg that took the call over.
                if !handed_over
                    && matches!(
                        self.core.state(id),
                        Some(CallState::Connecting | CallState::Active)
                    )
                {
                    if audio {
                        self.core.audio_failed(cx.now, id);
                    } else {
                        let _ = self.core.hangup(cx.now, id);
                    }
                }
            }
        }
        self.drive(cx);
        None
    }

    /// A media task ended: its final stats (the whole call's bitrate,
    /// `last`), or the audio error that stopped it.
    fn media_ended(&mut self, id: CallId, mut m: Media, r: Result<Box<MediaStats>, MediaEnd>) {
        match r {
            Ok(stats) => self.update(CallUpdate::Stats {
                id,
                bitrate: m.bitrate(self.clock.now(), &stats, true),
                peer: m.peer,
                stats,
                path: None,
                last: true,
            }),
            Err(error) => {
                tracing::warn!(call = id, "media ended: {error}");
                if let MediaEnd::Audio(e) = &error {
                    self.details.insert(id, e.to_string());
                }
                self.events.push_back(CallsEvent::Failed {
                    command: "call",
                    error: format!("call audio: {error}"),
                });
            }
        }
    }

    /// Hang up whatever is in progress (the node is stopping).
    pub fn hangup_all(&mut self, cx: &mut Ctx<'_>) {
        if let Some(id) = self.core.current() {
            let _ = self.core.hangup(cx.now, id);
        }
        self.with_conf(cx, |c, x| c.leave(x));
        self.drive(cx);
    }

    /// Stop every media task and wait (a little) for them, so recordings
    /// are complete when the node stops.
    pub async fn shutdown(&mut self) {
        self.close_ring();
        let ids: Vec<CallId> = self.media.keys().copied().collect();
        for id in ids {
            self.stop_media(id);
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        while !self.media.is_empty() {
            match tokio::time::timeout_at(deadline, self.media_rx.recv()).await {
                Ok(Some(MediaMsg::Ended(id, r))) => {
                    if let Some(m) = self.media.remove(&id) {
                        self.media_ended(id, m, r);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        for (_, m) in self.media.drain() {
            m.forwarder.abort();
        }
        if let Some(c) = &mut self.conf {
            c.shutdown(&mut self.media_rx).await;
        }
    }
}

/// The path of an established peer link with `user`, if any.
pub(super) fn link_to(cx: &Ctx<'_>, user: &str) -> Option<Path> {
    let path = cx.ice.selected(user)?;
    let cert = cx.link.peer(path.remote)?;
    (cert.username == user).then_some(path)
}

/// The device (x25519 key) an established peer link with `user` ends at.
fn link_device(cx: &Ctx<'_>, user: &str) -> Option<DeviceKey> {
    let path = cx.ice.selected(user)?;
    let cert = cx.link.peer(path.remote)?;
    (cert.username == user).then_some(cert.x25519)
}
