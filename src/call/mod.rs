//! Call signalling, sans-IO and transport-agnostic: bytes in from a
//! verified peer (a sealed envelope through the supernodes, or the peer
//! link), bytes out addressed to a peer by username. The driver picks the
//! carrier; the core only needs messages to arrive *sometimes*: it
//! retransmits until acknowledged and gives up on a timeout with a clear
//! reason.
//!
//! ```text
//! caller                              callee
//! Invite{nonce_c}  ---------------->           (Incoming)
//!          (Ringing) <-------------  Ringing
//!                                    accept():
//!        (Connected) <-------------  Accept{nonce_e}   (Connected)
//! Ack(Accept)      ---------------->
//! Mute/Hold/Hangup <--------------> Ack(...)
//! ```
//!
//! - Every step has a timeout: no Ringing within `invite_timeout_ms` ends
//!   the call as [`EndReason::NoResponse`]; no answer within
//!   `ring_timeout_ms` as [`EndReason::NoAnswer`] (the caller cancels);
//!   no media within `connect_timeout_ms` of Accept as
//!   [`EndReason::MediaFailed`].
//! - Invite is re-sent until Ringing (or an answer); Accept, Decline,
//!   Busy, Cancel, Hangup, Mute and Hold until their Ack, with backoff.
//!   Duplicates are answered again, never acted on twice; ended calls are
//!   remembered for a while so late retransmissions still get their Ack.
//! - An Invite while another call is up is answered Busy.
//! - When both sides are connected, [`CallEvent::Connected`] carries the
//!   call id and both nonces: the media keys come from the peer link's
//!   exporter with that context ([`crate::media::MediaKeys::export_context`]).
//!
//! Devices (issue 17): a user may be online on several devices, each
//! named here by its [`DeviceKey`]; a [`Transmit`] names the devices it is
//! for ([`Target`]). The Invite goes to every device of the callee; each
//! rings and says so. The first Accept wins: the call is with that device
//! from then on (every later message goes to it alone), and the others
//! are told [`Msg::AnsweredElsewhere`] with the answering device's name
//! (once to all but the answering one, and until acknowledged to each
//! that rang), and stop ringing ([`EndReason::AnsweredElsewhere`]); so is
//! a device whose Accept or Ringing comes late. A device that declines
//! (or is busy) stops ringing alone: the call ends as declined (or busy)
//! when no device rings any more and as many refused as the callee has
//! devices online (the driver says how many: [`CallCore::expect_devices`]).
//! A caller who hangs up before an answer cancels every device. The
//! callee's messages go to the caller's device that invited.
//!
//! Moving a call between one's devices (issue 17): a device whose call
//! becomes active tells its account's other devices
//! ([`Msg::OnDevice`], again when it ends; [`CallEvent::OnOtherDevice`]
//! there), so each knows the call it may take. [`CallCore::take_over`]
//! on one of them sends the peer's device in that call a
//! [`Msg::Replace`]: a new leg (a call of its own, which we place) that
//! names the call it replaces. The peer takes it only from a device of
//! the same user as the replaced call's peer (the carrier verified the
//! sender's certificate), for its call in progress, and from another
//! device than the one in it; anything else is answered Decline (the
//! taker ends [`EndReason::TakeRefused`]). Taken, the new leg rings
//! nobody: [`CallEvent::Replacing`] asks the driver to answer it at once,
//! and once its media flows the old leg ends ([`EndReason::Moved`]) and
//! its device is told [`Msg::Moved`] with the taker's name.

pub mod history;
pub mod msg;

pub use msg::{Msg, MsgError};

use crate::media::Side;
use crate::time::{Millis, UnixMillis};
use std::collections::{BTreeMap, VecDeque};

pub type CallId = u64;

/// One device of a user, as the carrier names it (its x25519 key).
pub type DeviceKey = [u8; 32];

pub use msg::DeviceName;

/// Which of the peer's devices a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every device of theirs.
    Every,
    /// This device.
    Only(DeviceKey),
    /// Every device but this one (the one that answered).
    Except(DeviceKey),
}

impl From<Option<DeviceKey>> for Target {
    fn from(d: Option<DeviceKey>) -> Self {
        d.map_or(Target::Every, Target::Only)
    }
}

/// A message for the carrier to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The user.
    pub to: String,
    /// Their devices it is for.
    pub devices: Target,
    pub bytes: Vec<u8>,
}

impl Transmit {
    /// Whether device `d` of the peer should have it.
    pub fn for_device(&self, d: DeviceKey) -> bool {
        match self.devices {
            Target::Every => true,
            Target::Only(x) => x == d,
            Target::Except(x) => x != d,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallConfig {
    pub invite_timeout_ms: u64,
    pub ring_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// First retransmission delay; doubles up to 4 times this.
    pub retransmit_ms: u64,
    /// Ended calls are remembered this long, to re-acknowledge.
    pub linger_ms: u64,
    /// Clock difference tolerated between caller and callee when judging
    /// an invitation's age: an Invite sent more than `ring_timeout_ms`
    /// plus this long ago is a replay (or hopelessly late) and is dropped.
    pub invite_skew_ms: u64,
}

impl Default for CallConfig {
    fn default() -> Self {
        CallConfig {
            invite_timeout_ms: 10_000,
            ring_timeout_ms: 60_000,
            connect_timeout_ms: 10_000,
            retransmit_ms: 500,
            linger_ms: 30_000,
            invite_skew_ms: 30_000,
        }
    }
}

/// Why a call ended, for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// Another device of ours answered this call first (it named itself
    /// `device`).
    AnsweredElsewhere { device: DeviceName },
    /// A side hung up after the call was connected.
    HungUp { by_us: bool },
    /// The callee declined.
    Declined { by_us: bool },
    /// The callee was in another call.
    Busy,
    /// The caller gave up before an answer.
    Cancelled { by_us: bool },
    /// Rang for the whole ring timeout.
    NoAnswer,
    /// The other side never acknowledged the invitation.
    NoResponse,
    /// Connected, but no media arrived (or it stopped).
    MediaFailed,
    /// Our audio device could not be opened, or failed during the call:
    /// the device, not the network.
    AudioFailed,
    /// The call moved to the device `device` of the user in it (ours,
    /// taken from this one; or theirs, taken from the device we talked
    /// to): this leg is over, the call goes on there.
    Moved { device: DeviceName },
    /// Our take-over of a call on another of our devices was refused (the
    /// call ended, or the peer's device did not have it).
    TakeRefused,
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EndReason::AnsweredElsewhere { device } if device.is_empty() => {
                "answered on another device"
            }
            EndReason::AnsweredElsewhere { device } => return write!(f, "answered on {device}"),
            EndReason::HungUp { by_us: true } => "you hung up",
            EndReason::HungUp { by_us: false } => "the other side hung up",
            EndReason::Declined { by_us: true } => "you declined the call",
            EndReason::Declined { by_us: false } => "the call was declined",
            EndReason::Busy => "the other side is busy in another call",
            EndReason::Cancelled { by_us: true } => "you cancelled the call",
            EndReason::Cancelled { by_us: false } => "the caller cancelled",
            EndReason::NoAnswer => "no answer",
            EndReason::NoResponse => "the other side could not be reached",
            EndReason::MediaFailed => "no audio could be exchanged (the network path failed)",
            EndReason::AudioFailed => "the audio device failed",
            EndReason::Moved { device } if device.is_empty() => "moved to another device",
            EndReason::Moved { device } => return write!(f, "moved to {device}"),
            EndReason::TakeRefused => "the call could not be taken over (it has ended)",
        })
    }
}

impl EndReason {
    /// A short stable name, for JSON events.
    pub fn code(&self) -> &'static str {
        match self {
            EndReason::AnsweredElsewhere { .. } => "answered_elsewhere",
            EndReason::HungUp { .. } => "hung_up",
            EndReason::Declined { .. } => "declined",
            EndReason::Busy => "busy",
            EndReason::Cancelled { .. } => "cancelled",
            EndReason::NoAnswer => "no_answer",
            EndReason::NoResponse => "no_response",
            EndReason::MediaFailed => "media_failed",
            EndReason::AudioFailed => "audio_failed",
            EndReason::Moved { .. } => "moved",
            EndReason::TakeRefused => "take_refused",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// Outgoing, waiting for Ringing.
    Inviting,
    /// Outgoing, the callee is ringing.
    Ringing,
    /// Incoming, waiting for our answer.
    Incoming,
    /// Accepted, waiting for media.
    Connecting,
    Active,
    Ended(EndReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    Incoming {
        id: CallId,
        peer: String,
    },
    /// Our callee's phone is ringing.
    Ringing {
        id: CallId,
    },
    /// Both sides agreed: start media with these parameters.
    Connected {
        id: CallId,
        peer: String,
        side: Side,
        caller_nonce: [u8; 16],
        callee_nonce: [u8; 16],
    },
    /// Media is flowing (the driver told us).
    Active {
        id: CallId,
    },
    RemoteMute {
        id: CallId,
        muted: bool,
    },
    RemoteHold {
        id: CallId,
        on_hold: bool,
    },
    Ended {
        id: CallId,
        reason: EndReason,
    },
    /// A device of the peer's user asks to take over our call `replaces`
    /// with this new leg `id` (from their device named `device`): answer
    /// it ([`CallCore::accept`]) and it replaces that call once its media
    /// flows.
    Replacing {
        id: CallId,
        peer: String,
        replaces: CallId,
        device: DeviceName,
    },
    /// Another device of ours (named `device`) has call `id` with `peer`
    /// up (`on`), or no longer: the call [`CallCore::take_over`] takes.
    OnOtherDevice {
        id: CallId,
        peer: String,
        device: DeviceName,
        on: bool,
    },
}

impl CallEvent {
    /// The call this event is about.
    pub fn id(&self) -> CallId {
        match self {
            CallEvent::Incoming { id, .. }
            | CallEvent::Ringing { id }
            | CallEvent::Connected { id, .. }
            | CallEvent::Active { id }
            | CallEvent::RemoteMute { id, .. }
            | CallEvent::RemoteHold { id, .. }
            | CallEvent::Ended { id, .. }
            | CallEvent::Replacing { id, .. }
            | CallEvent::OnOtherDevice { id, .. } => *id,
        }
    }
}

/// For logs: what happened, without the key-derivation nonces.
impl std::fmt::Display for CallEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallEvent::Incoming { peer, .. } => write!(f, "incoming from {peer}"),
            CallEvent::Ringing { .. } => f.write_str("ringing"),
            CallEvent::Connected { side, .. } => write!(f, "connecting as {side:?}"),
            CallEvent::Active { .. } => f.write_str("active"),
            CallEvent::RemoteMute { muted, .. } => write!(f, "remote muted: {muted}"),
            CallEvent::RemoteHold { on_hold, .. } => write!(f, "remote on hold: {on_hold}"),
            CallEvent::Ended { reason, .. } => write!(f, "ended: {reason}"),
            CallEvent::Replacing {
                replaces, device, ..
            } => write!(f, "taking over call {replaces:016x} from {device}"),
            CallEvent::OnOtherDevice {
                peer, device, on, ..
            } => {
                write!(f, "call with {peer} on our {device}: {on}")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no call {0:x}")]
    NoSuchCall(CallId),
    #[error("already in a call")]
    Busy,
    #[error("call {0:x} cannot do that in its current state")]
    WrongState(CallId),
    #[error("no call on your other devices to take")]
    NothingToTake,
}

/// Counters of what the core dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallStats {
    pub malformed: u64,
    /// Messages about a call from someone who is not its peer.
    pub wrong_peer: u64,
    pub unknown_call: u64,
    pub duplicates: u64,
    pub retransmits: u64,
    pub busy_sent: u64,
    /// Invitations older than the ring timeout (replays after a restart,
    /// or stored and delivered too late to answer).
    pub stale_invites: u64,
    /// Answers that came after another device of the callee had answered
    /// (that device was told the call was answered elsewhere).
    pub late_answers: u64,
    /// Take-overs refused (no such call of ours with that user, from the
    /// device already in it, or one already being taken), and own-device
    /// notes from another user.
    pub refused_takes: u64,
}

/// A message we re-send until acknowledged.
#[derive(Debug, Clone)]
struct Pending {
    msg: Msg,
    /// The peer's device it is for (`None`: every device; the first Ack
    /// from any of them ends it).
    device: Option<DeviceKey>,
    sent: u32,
    next_at: Millis,
}

/// What one of the callee's devices did with our invitation (caller side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rung {
    /// It rings.
    Ringing,
    /// It declined (`busy`: it was in another call).
    Refused { busy: bool },
    /// It answered: the call is with it.
    Answered,
    /// Told the call was answered on another device.
    Told,
    /// Told to stop: it rang or answered after our call had ended
    /// unanswered.
    Cancelled,
}

/// Devices one call remembers at most (a flood of Ringing from many
/// devices cannot grow it).
const MAX_DEVICES: usize = 16;

#[derive(Debug, Clone)]
struct Call {
    peer: String,
    /// We placed it.
    outgoing: bool,
    state: CallState,
    caller_nonce: [u8; 16],
    callee_nonce: [u8; 16],
    /// When the current step times out.
    deadline: Millis,
    pending: Vec<Pending>,
    muted: bool,
    on_hold: bool,
    /// What the peer last told us, so a retransmission is no new event.
    remote_muted: bool,
    remote_hold: bool,
    /// The peer's device the call is with: for the callee, the caller's
    /// device that invited; for the caller, the device that answered
    /// (`None` until one did).
    device: Option<DeviceKey>,
    /// Caller side: the answering device's name, for the others.
    answered_on: DeviceName,
    /// Caller side: the callee's devices that answered the invitation,
    /// and how (at most [`MAX_DEVICES`]).
    devices: Vec<(DeviceKey, Rung)>,
    /// Caller side: how many devices the callee has online, as the
    /// carrier last said (0: unknown). Refusals end the call only once
    /// this many devices refused (and none rings), so a device that is
    /// busy does not end the call before another's Ringing comes.
    expected: usize,
    /// A leg that takes over this call (ours: the call on our other
    /// device; theirs: our call with their other device).
    replaces: Option<CallId>,
    /// A leg that replaces one of ours: the taking device's name.
    taker: DeviceName,
}

impl Call {
    fn new(peer: &str, state: CallState, caller_nonce: [u8; 16], deadline: Millis) -> Self {
        Call {
            peer: peer.to_owned(),
            outgoing: state == CallState::Inviting,
            state,
            caller_nonce,
            callee_nonce: [0; 16],
            deadline,
            pending: Vec::new(),
            muted: false,
            on_hold: false,
            remote_muted: false,
            remote_hold: false,
            device: None,
            answered_on: DeviceName::EMPTY,
            devices: Vec::new(),
            expected: 0,
            replaces: None,
            taker: DeviceName::EMPTY,
        }
    }

    /// What `device` did, if it answered the invitation at all.
    fn rung(&self, device: &DeviceKey) -> Option<Rung> {
        self.devices
            .iter()
            .find(|(d, _)| d == device)
            .map(|&(_, r)| r)
    }

    /// Record what `device` did (within the bound).
    fn set_rung(&mut self, device: DeviceKey, r: Rung) {
        if let Some(e) = self.devices.iter_mut().find(|(d, _)| *d == device) {
            e.1 = r;
        } else if self.devices.len() < MAX_DEVICES {
            self.devices.push((device, r));
        }
    }
}

#[derive(Debug)]
pub struct CallCore {
    config: CallConfig,
    calls: BTreeMap<CallId, Call>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<CallEvent>,
    stats: CallStats,
    /// How this device names itself, in our Accepts.
    device_name: DeviceName,
    /// Our username: our other devices' notes come from it, ours go to it
    /// (empty: none are sent or taken).
    account: String,
    /// The call up on another device of ours, as it last said.
    elsewhere: Option<Elsewhere>,
}

/// A call up on another device of ours ([`Msg::OnDevice`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elsewhere {
    pub call: CallId,
    pub peer: String,
    /// The peer's device in that call.
    pub peer_device: DeviceKey,
    /// Our device that has it, and its name.
    pub device: DeviceKey,
    pub name: DeviceName,
}

/// Bounds on remembered calls and queues: a flood of invites cannot grow
/// the core without limit.
const MAX_CALLS: usize = 64;
const MAX_QUEUE: usize = 1024;

impl CallCore {
    pub fn new(config: CallConfig) -> Self {
        CallCore {
            config,
            calls: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: CallStats::default(),
            device_name: DeviceName::EMPTY,
            account: String::new(),
            elsewhere: None,
        }
    }

    /// Our username: our active calls are announced to our other devices
    /// under it, and their announcements are taken only from it.
    pub fn set_account(&mut self, username: &str) {
        self.account = username.to_ascii_lowercase();
    }

    /// The call up on another device of ours, if one said so.
    pub fn elsewhere(&self) -> Option<&Elsewhere> {
        self.elsewhere.as_ref()
    }

    /// The call that leg `id` takes over, if it is one.
    pub fn replaces(&self, id: CallId) -> Option<CallId> {
        self.calls.get(&id).and_then(|c| c.replaces)
    }

    /// Take over the call up on another device of ours: a new leg `id`
    /// (fresh `nonce`) to the peer's device in it, which replaces it.
    /// Returns the peer.
    pub fn take_over(
        &mut self,
        now: Millis,
        id: CallId,
        nonce: [u8; 16],
    ) -> Result<String, CallError> {
        if self.current().is_some() {
            return Err(CallError::Busy);
        }
        let el = self.elsewhere.take().ok_or(CallError::NothingToTake)?;
        self.gc();
        let mut c = Call::new(
            &el.peer,
            CallState::Inviting,
            nonce,
            now + self.config.invite_timeout_ms,
        );
        c.device = Some(el.peer_device);
        c.replaces = Some(el.call);
        c.expected = 1;
        self.calls.insert(id, c);
        let m = Msg::Replace {
            nonce,
            replaces: el.call,
            device: self.device_name,
        };
        self.send_reliable(now, id, m);
        Ok(el.peer)
    }

    /// Tell our other devices that call `id` is up (or over).
    fn announce(&mut self, id: CallId, on: bool) {
        let Some(c) = self.calls.get(&id) else {
            return;
        };
        let (Some(peer_device), false) = (c.device, self.account.is_empty()) else {
            return;
        };
        let m = Msg::OnDevice {
            on,
            peer_device,
            peer: DeviceName::new(&c.peer),
            device: self.device_name,
        };
        let own = self.account.clone();
        self.send(&own, Target::Every, id, m);
    }

    /// A note from another device of ours (`from` must be our account).
    fn on_own_device(&mut self, from: &str, device: DeviceKey, id: CallId, m: Msg) {
        let Msg::OnDevice {
            on,
            peer_device,
            peer,
            device: name,
        } = m
        else {
            return;
        };
        if self.account.is_empty() || from != self.account {
            self.stats.refused_takes += 1;
            return;
        }
        if on {
            self.elsewhere = Some(Elsewhere {
                call: id,
                peer: peer.as_str().to_ascii_lowercase(),
                peer_device,
                device,
                name,
            });
        } else if self.elsewhere.as_ref().is_some_and(|e| e.call == id) {
            self.elsewhere = None;
        } else {
            return;
        }
        self.events.push_back(CallEvent::OnOtherDevice {
            id,
            peer: peer.as_str().to_ascii_lowercase(),
            device: name,
            on,
        });
    }

    /// A leg `id` from `from`'s device `device` that takes over our call
    /// `replaces`: taken (to be answered) only for our call in progress
    /// with that same user, from another of their devices; else declined.
    fn on_replace(
        &mut self,
        now: Millis,
        (from, device): (&str, DeviceKey),
        id: CallId,
        nonce: [u8; 16],
        replaces: CallId,
        name: DeviceName,
    ) {
        // One take-over at a time: a second device taking the same call
        // meanwhile is refused (else it would become a second call).
        let taken = self.calls.values().any(|c| {
            c.replaces == Some(replaces) && !c.outgoing && !matches!(c.state, CallState::Ended(_))
        });
        let ok = !taken
            && self.current() == Some(replaces)
            && self.calls.get(&replaces).is_some_and(|c| {
                c.peer == from
                    && c.device.is_some_and(|d| d != device)
                    && matches!(c.state, CallState::Connecting | CallState::Active)
            });
        if !ok {
            self.stats.refused_takes += 1;
            tracing::info!(call = id, peer = from, "take-over refused");
            self.send(from, Some(device), id, Msg::Decline);
            return;
        }
        self.gc();
        let mut c = Call::new(
            from,
            CallState::Incoming,
            nonce,
            now + self.config.connect_timeout_ms,
        );
        c.device = Some(device);
        c.replaces = Some(replaces);
        c.taker = name;
        self.calls.insert(id, c);
        self.events.push_back(CallEvent::Replacing {
            id,
            peer: from.to_owned(),
            replaces,
            device: name,
        });
    }

    /// How this device names itself (its name in the account's device
    /// list): our Accepts carry it, so the caller can tell our other
    /// devices where the call was answered.
    pub fn set_device_name(&mut self, name: &str) {
        self.device_name = DeviceName::new(name);
    }

    /// The peer's device call `id` is with: the caller's device that
    /// invited us, or the callee's device that answered our call (`None`
    /// before an answer).
    pub fn device(&self, id: CallId) -> Option<DeviceKey> {
        self.calls.get(&id).and_then(|c| c.device)
    }

    /// The callee of our call `id` has `n` devices online, as the carrier
    /// knows now (it learns them when it seals the invitation).
    pub fn expect_devices(&mut self, id: CallId, n: usize) {
        if let Some(c) = self.calls.get_mut(&id)
            && c.outgoing
        {
            c.expected = n.min(MAX_DEVICES);
        }
    }

    /// The name of the callee's device that answered our call `id` (empty
    /// when it gave none, or before an answer).
    pub fn answered_on(&self, id: CallId) -> Option<DeviceName> {
        self.calls.get(&id).map(|c| c.answered_on)
    }

    pub fn stats(&self) -> &CallStats {
        &self.stats
    }

    pub fn state(&self, id: CallId) -> Option<CallState> {
        self.calls.get(&id).map(|c| c.state)
    }

    pub fn peer(&self, id: CallId) -> Option<&str> {
        self.calls.get(&id).map(|c| c.peer.as_str())
    }

    /// The call that is up or being set up, if any.
    pub fn current(&self) -> Option<CallId> {
        // A leg that takes over a call still up is not the call yet.
        let live = |id: &CallId| {
            self.calls
                .get(id)
                .is_some_and(|c| !matches!(c.state, CallState::Ended(_)))
        };
        self.calls
            .iter()
            .find(|(_, c)| {
                !matches!(c.state, CallState::Ended(_)) && !c.replaces.as_ref().is_some_and(live)
            })
            .map(|(&id, _)| id)
    }

    fn send(&mut self, peer: &str, devices: impl Into<Target>, id: CallId, m: Msg) {
        if self.transmits.len() < MAX_QUEUE {
            self.transmits.push_back(Transmit {
                to: peer.to_owned(),
                devices: devices.into(),
                bytes: m.encode(id),
            });
        }
    }

    /// Send `m` now, to the device the call is with (every device of the
    /// peer before one answered), and re-send it until acknowledged.
    fn send_reliable(&mut self, now: Millis, id: CallId, m: Msg) {
        let device = self.calls.get(&id).and_then(|c| c.device);
        self.send_reliable_to(now, id, device, m);
    }

    /// Send `m` now to `device` (`None`: every device of the peer) and
    /// re-send it until acknowledged.
    fn send_reliable_to(&mut self, now: Millis, id: CallId, device: Option<DeviceKey>, m: Msg) {
        let retry = self.config.retransmit_ms;
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        // A newer Mute replaces an older one (likewise Hold).
        c.pending
            .retain(|p| p.msg.kind() != m.kind() || p.device != device);
        c.pending.push(Pending {
            msg: m,
            device,
            sent: 1,
            next_at: now + retry,
        });
        let peer = c.peer.clone();
        self.send(&peer, device, id, m);
    }

    /// Cancel our unanswered call `id` on every device that may ring: until
    /// acknowledged on each that rang (and did not refuse), or on some
    /// device when none rang yet; and once on every device, for one whose
    /// Ringing we did not get.
    fn cancel_devices(&mut self, now: Millis, id: CallId) {
        let Some(c) = self.calls.get(&id) else {
            return;
        };
        let ringing: Vec<DeviceKey> = c
            .devices
            .iter()
            .filter(|(_, r)| *r == Rung::Ringing)
            .map(|&(d, _)| d)
            .collect();
        if c.devices.is_empty() {
            // (A take-over leg is with one device from the start.)
            let device = c.device;
            self.send_reliable_to(now, id, device, Msg::Cancel);
            return;
        }
        let peer = c.peer.clone();
        self.send(&peer, Target::Every, id, Msg::Cancel);
        for d in ringing {
            self.send_reliable_to(now, id, Some(d), Msg::Cancel);
        }
    }

    /// Tell `device`, which rang for our call `id` but did not get it,
    /// that it was answered elsewhere (once).
    fn tell_answered(&mut self, now: Millis, id: CallId, device: DeviceKey) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.device == Some(device) || c.rung(&device) == Some(Rung::Told) {
            return;
        }
        c.set_rung(device, Rung::Told);
        let m = Msg::AnsweredElsewhere {
            device: c.answered_on,
        };
        self.send_reliable_to(now, id, Some(device), m);
    }

    fn end(&mut self, now: Millis, id: CallId, reason: EndReason) {
        if let Some(c) = self.calls.get_mut(&id) {
            if matches!(c.state, CallState::Ended(_)) {
                return;
            }
            let was_active = c.state == CallState::Active;
            c.state = CallState::Ended(reason);
            // Keep re-sending the final message (if any) while lingering.
            c.pending.retain(|p| {
                matches!(
                    p.msg,
                    Msg::Hangup
                        | Msg::Cancel
                        | Msg::Decline
                        | Msg::Busy
                        | Msg::AnsweredElsewhere { .. }
                        | Msg::Moved { .. }
                )
            });
            c.deadline = now + self.config.linger_ms;
            self.events.push_back(CallEvent::Ended { id, reason });
            if was_active {
                self.announce(id, false);
            }
            // A leg taking this call over goes with it when we end it
            // ourselves before it took over.
            let takers: Vec<CallId> = self
                .calls
                .iter()
                .filter(|(_, t)| t.replaces == Some(id) && !t.outgoing)
                .filter(|(_, t)| !matches!(t.state, CallState::Ended(_)))
                .map(|(&t, _)| t)
                .collect();
            if matches!(
                reason,
                EndReason::HungUp { by_us: true } | EndReason::AudioFailed
            ) {
                for t in takers {
                    // Not answered yet: refused; answered: hung up.
                    let m = match self.state(t) {
                        Some(CallState::Incoming) => Msg::Decline,
                        _ => Msg::Hangup,
                    };
                    self.send_reliable(now, t, m);
                    self.end(now, t, reason);
                }
            }
        }
    }

    /// Call `peer`. `id` and `nonce` are fresh random values from the
    /// driver.
    pub fn invite(
        &mut self,
        now: Millis,
        peer: &str,
        id: CallId,
        nonce: [u8; 16],
    ) -> Result<CallId, CallError> {
        if self.current().is_some() {
            return Err(CallError::Busy);
        }
        self.gc();
        let deadline = now + self.config.invite_timeout_ms;
        self.calls
            .insert(id, Call::new(peer, CallState::Inviting, nonce, deadline));
        // To every device of the callee.
        self.send_reliable_to(now, id, None, Msg::Invite { nonce });
        Ok(id)
    }

    /// Answer an incoming call; `nonce` is fresh and random.
    pub fn accept(&mut self, now: Millis, id: CallId, nonce: [u8; 16]) -> Result<(), CallError> {
        let c = self.calls.get_mut(&id).ok_or(CallError::NoSuchCall(id))?;
        if c.state != CallState::Incoming {
            return Err(CallError::WrongState(id));
        }
        c.state = CallState::Connecting;
        c.callee_nonce = nonce;
        c.deadline = now + self.config.connect_timeout_ms;
        let ev = CallEvent::Connected {
            id,
            peer: c.peer.clone(),
            side: Side::Callee,
            caller_nonce: c.caller_nonce,
            callee_nonce: nonce,
        };
        let device = self.device_name;
        self.send_reliable(now, id, Msg::Accept { nonce, device });
        self.events.push_back(ev);
        Ok(())
    }

    pub fn decline(&mut self, now: Millis, id: CallId) -> Result<(), CallError> {
        let c = self.calls.get(&id).ok_or(CallError::NoSuchCall(id))?;
        if c.state != CallState::Incoming {
            return Err(CallError::WrongState(id));
        }
        self.send_reliable(now, id, Msg::Decline);
        self.end(now, id, EndReason::Declined { by_us: true });
        Ok(())
    }

    /// End the call whatever its state: cancel an unanswered invitation,
    /// decline a ringing one, hang up a connected one.
    pub fn hangup(&mut self, now: Millis, id: CallId) -> Result<(), CallError> {
        let c = self.calls.get(&id).ok_or(CallError::NoSuchCall(id))?;
        match c.state {
            CallState::Inviting | CallState::Ringing => {
                self.cancel_devices(now, id);
                self.end(now, id, EndReason::Cancelled { by_us: true });
            }
            CallState::Incoming => return self.decline(now, id),
            CallState::Connecting | CallState::Active => {
                self.send_reliable(now, id, Msg::Hangup);
                self.end(now, id, EndReason::HungUp { by_us: true });
            }
            CallState::Ended(_) => return Err(CallError::WrongState(id)),
        }
        Ok(())
    }

    fn connected(&self, id: CallId) -> Result<(), CallError> {
        match self.calls.get(&id).map(|c| c.state) {
            None => Err(CallError::NoSuchCall(id)),
            Some(CallState::Connecting | CallState::Active) => Ok(()),
            Some(_) => Err(CallError::WrongState(id)),
        }
    }

    pub fn set_mute(&mut self, now: Millis, id: CallId, on: bool) -> Result<(), CallError> {
        self.connected(id)?;
        if let Some(c) = self.calls.get_mut(&id) {
            c.muted = on;
        }
        self.send_reliable(now, id, Msg::Mute { on });
        Ok(())
    }

    pub fn set_hold(&mut self, now: Millis, id: CallId, on: bool) -> Result<(), CallError> {
        self.connected(id)?;
        if let Some(c) = self.calls.get_mut(&id) {
            c.on_hold = on;
        }
        self.send_reliable(now, id, Msg::Hold { on });
        Ok(())
    }

    /// The media session saw the peer's first packets.
    pub fn media_flowing(&mut self, now: Millis, id: CallId) {
        if let Some(c) = self.calls.get_mut(&id)
            && c.state == CallState::Connecting
        {
            c.state = CallState::Active;
            // An active call has no step to time out (the media session
            // watches the path).
            c.deadline = Millis::MAX;
            // Media proves the peer has our Accept.
            c.pending.retain(|p| !matches!(p.msg, Msg::Accept { .. }));
            let (replaces, taker) = (c.replaces.filter(|_| !c.outgoing), c.taker);
            self.events.push_back(CallEvent::Active { id });
            self.announce(id, true);
            // A leg that takes over our call has audio: the old one ends,
            // and its device is told where the call went.
            if let Some(old) = replaces
                && self.connected(old).is_ok()
            {
                self.send_reliable(now, old, Msg::Moved { device: taker });
                self.end(now, old, EndReason::Moved { device: taker });
            }
        }
    }

    /// Our invitation cannot reach the peer (the overlay says they are
    /// offline or unknown): end it now rather than at the invite timeout.
    pub fn unreachable(&mut self, now: Millis, id: CallId) {
        if self.state(id) == Some(CallState::Inviting) {
            if let Some(c) = self.calls.get_mut(&id) {
                c.pending.clear();
            }
            self.end(now, id, EndReason::NoResponse);
        }
    }

    /// The media session timed out: the path is gone.
    pub fn media_failed(&mut self, now: Millis, id: CallId) {
        if self.connected(id).is_ok() {
            self.send_reliable(now, id, Msg::Hangup);
            self.end(now, id, EndReason::MediaFailed);
        }
    }

    /// Our audio device failed (could not open, or stopped): the call
    /// ends, and the peer is told we hung up.
    pub fn audio_failed(&mut self, now: Millis, id: CallId) {
        if self.connected(id).is_ok() {
            self.send_reliable(now, id, Msg::Hangup);
            self.end(now, id, EndReason::AudioFailed);
        }
    }

    /// A message from `from` (a verified username) on their device
    /// `device`, which its sender made at `sent` (the signed creation time
    /// of the envelope that carried it, on the sender's wall clock). Bad
    /// input is a counted drop, and so is an Invite older than the ring
    /// timeout by our wall clock `unix`: the caller has given up on it by
    /// then, so it can only be a replay (the in-memory duplicate check
    /// does not survive a restart; this one needs no memory) or hopelessly
    /// late.
    pub fn handle_message(
        &mut self,
        now: Millis,
        unix: UnixMillis,
        from: &str,
        device: DeviceKey,
        sent: UnixMillis,
        bytes: &[u8],
    ) {
        let Ok((id, m)) = Msg::decode(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        if matches!(m, Msg::Invite { .. })
            && unix.since(sent) > self.config.ring_timeout_ms + self.config.invite_skew_ms
        {
            self.stats.stale_invites += 1;
            tracing::info!(
                call = id,
                peer = from,
                age_ms = unix.since(sent),
                "stale call invitation dropped"
            );
            return;
        }
        if matches!(m, Msg::OnDevice { .. }) {
            return self.on_own_device(from, device, id, m);
        }
        if let Some(c) = self.calls.get(&id)
            && (c.peer != from || (!c.outgoing && c.device != Some(device)))
        {
            // Another user, or (for a call to us) another device of the
            // caller than the one that invited.
            self.stats.wrong_peer += 1;
            return;
        }
        let dev = Some(device);
        if let Msg::Ack { kind, flag } = m {
            if let Some(c) = self.calls.get_mut(&id) {
                c.pending.retain(|p| {
                    !(p.msg.kind() == kind
                        && p.msg.flag() == flag
                        && p.device.is_none_or(|d| d == device))
                });
            } else {
                self.stats.unknown_call += 1;
            }
            return;
        }
        let ack = Msg::Ack {
            kind: m.kind(),
            flag: m.flag(),
        };
        let Some(c) = self.calls.get(&id) else {
            match m {
                Msg::Invite { nonce } => self.on_invite(now, from, device, id, nonce),
                Msg::Replace {
                    nonce,
                    replaces,
                    device: name,
                } => self.on_replace(now, (from, device), id, nonce, replaces, name),
                // The call is long gone: acknowledge final messages so the
                // peer stops re-sending.
                Msg::Hangup
                | Msg::Cancel
                | Msg::Decline
                | Msg::Busy
                | Msg::Moved { .. }
                | Msg::AnsweredElsewhere { .. } => {
                    self.stats.unknown_call += 1;
                    self.send(from, dev, id, ack);
                }
                _ => self.stats.unknown_call += 1,
            }
            return;
        };
        let state = c.state;
        if c.outgoing && c.device.is_some_and(|d| d != device) {
            return self.on_other_device(now, from, device, id, m);
        }
        use CallState as S;
        match (state, m) {
            (S::Incoming, Msg::Invite { .. }) => {
                self.stats.duplicates += 1;
                self.send(from, dev, id, Msg::Ringing);
            }
            // The take-over's answer, crossing its retransmission, goes
            // again with ours.
            (_, Msg::Replace { .. }) => self.stats.duplicates += 1,
            // Our take-over was refused.
            (S::Inviting | S::Ringing, Msg::Decline | Msg::Busy)
                if self.calls.get(&id).is_some_and(|c| c.replaces.is_some()) =>
            {
                self.send(from, dev, id, ack);
                self.end(now, id, EndReason::TakeRefused);
            }
            (S::Connecting | S::Active, Msg::Moved { device: name }) => {
                self.send(from, dev, id, ack);
                self.end(now, id, EndReason::Moved { device: name });
            }
            (S::Inviting | S::Ringing, Msg::Ringing) => {
                let ring = self.config.ring_timeout_ms;
                let Some(c) = self.calls.get_mut(&id) else {
                    return;
                };
                // A device that refused before its Ringing came stays so.
                if c.rung(&device).is_none() {
                    c.set_rung(device, Rung::Ringing);
                }
                if state == S::Ringing {
                    self.stats.duplicates += 1;
                    return;
                }
                c.state = S::Ringing;
                c.deadline = now + ring;
                c.pending
                    .retain(|p| !matches!(p.msg, Msg::Invite { .. } | Msg::Replace { .. }));
                self.events.push_back(CallEvent::Ringing { id });
            }
            (
                S::Inviting | S::Ringing,
                Msg::Accept {
                    nonce,
                    device: name,
                },
            ) => {
                // The first answer wins: the call is with this device.
                let connect = self.config.connect_timeout_ms;
                let Some(c) = self.calls.get_mut(&id) else {
                    return;
                };
                c.state = S::Connecting;
                c.callee_nonce = nonce;
                c.deadline = now + connect;
                c.device = dev;
                c.answered_on = name;
                c.set_rung(device, Rung::Answered);
                c.pending
                    .retain(|p| !matches!(p.msg, Msg::Invite { .. } | Msg::Replace { .. }));
                let taking = c.replaces.is_some();
                let others: Vec<DeviceKey> = c
                    .devices
                    .iter()
                    .filter(|(_, r)| *r == Rung::Ringing)
                    .map(|&(d, _)| d)
                    .collect();
                let ev = CallEvent::Connected {
                    id,
                    peer: c.peer.clone(),
                    side: Side::Caller,
                    caller_nonce: c.caller_nonce,
                    callee_nonce: nonce,
                };
                self.send(from, dev, id, ack);
                // Every other device stops ringing: until acknowledged on
                // each we know rang, and once on all (one whose Ringing we
                // did not get). A take-over rang none.
                if !taking {
                    let told = Msg::AnsweredElsewhere { device: name };
                    self.send(from, Target::Except(device), id, told);
                }
                for d in others {
                    self.tell_answered(now, id, d);
                }
                self.events.push_back(ev);
            }
            (S::Connecting | S::Active, Msg::Accept { .. }) => {
                self.stats.duplicates += 1;
                self.send(from, dev, id, ack);
            }
            (S::Inviting | S::Ringing, Msg::Decline | Msg::Busy) => {
                // This device stops ringing; the call ends when every
                // device that rang refused it.
                self.send(from, dev, id, ack);
                let Some(c) = self.calls.get_mut(&id) else {
                    return;
                };
                let busy = m == Msg::Busy;
                c.set_rung(device, Rung::Refused { busy });
                let refused = c
                    .devices
                    .iter()
                    .filter(|(_, r)| matches!(r, Rung::Refused { .. }))
                    .count();
                if c.devices.iter().any(|(_, r)| *r == Rung::Ringing) || refused < c.expected {
                    return;
                }
                let declined = c
                    .devices
                    .iter()
                    .any(|(_, r)| *r == Rung::Refused { busy: false });
                let reason = if declined {
                    EndReason::Declined { by_us: false }
                } else {
                    EndReason::Busy
                };
                self.end(now, id, reason);
            }
            (S::Incoming | S::Connecting, Msg::AnsweredElsewhere { device: name })
                if !self.calls.get(&id).is_some_and(|c| c.outgoing) =>
            {
                self.send(from, dev, id, ack);
                self.end(now, id, EndReason::AnsweredElsewhere { device: name });
            }
            (S::Incoming | S::Connecting, Msg::Cancel) => {
                self.send(from, dev, id, ack);
                self.end(now, id, EndReason::Cancelled { by_us: false });
            }
            (S::Connecting | S::Active, Msg::Hangup) => {
                self.send(from, dev, id, ack);
                self.end(now, id, EndReason::HungUp { by_us: false });
            }
            (S::Connecting | S::Active, Msg::Mute { on }) => {
                self.send(from, dev, id, ack);
                if let Some(c) = self.calls.get_mut(&id)
                    && c.remote_muted != on
                {
                    c.remote_muted = on;
                    self.events
                        .push_back(CallEvent::RemoteMute { id, muted: on });
                }
            }
            (S::Connecting | S::Active, Msg::Hold { on }) => {
                self.send(from, dev, id, ack);
                if let Some(c) = self.calls.get_mut(&id)
                    && c.remote_hold != on
                {
                    c.remote_hold = on;
                    self.events
                        .push_back(CallEvent::RemoteHold { id, on_hold: on });
                }
            }
            (
                S::Ended(_),
                Msg::Hangup
                | Msg::Cancel
                | Msg::Decline
                | Msg::Busy
                | Msg::Moved { .. }
                | Msg::AnsweredElsewhere { .. },
            ) => {
                // Crossed with ours, or a retransmission: acknowledge.
                self.stats.duplicates += 1;
                self.send(from, dev, id, ack);
            }
            (S::Ended(_), Msg::Ringing | Msg::Accept { .. })
                if self.calls.get(&id).is_some_and(|c| {
                    c.outgoing && c.device.is_none() && c.rung(&device) != Some(Rung::Cancelled)
                }) =>
            {
                // Our call ended unanswered and this device rings (or
                // answers) late: it must stop.
                if let Some(c) = self.calls.get_mut(&id) {
                    c.set_rung(device, Rung::Cancelled);
                }
                self.send_reliable_to(now, id, dev, Msg::Cancel);
            }
            _ => self.stats.duplicates += 1,
        }
    }

    /// A message about our call `id`, answered on another device than
    /// `device`: that device did not get the call.
    fn on_other_device(&mut self, now: Millis, from: &str, device: DeviceKey, id: CallId, m: Msg) {
        match m {
            Msg::Ringing => self.tell_answered(now, id, device),
            Msg::Accept { .. } => {
                // A late answer: refused, never a second media session.
                self.stats.late_answers += 1;
                self.tell_answered(now, id, device);
            }
            // It declined, or hung up while it waited for media, crossing
            // our word that the call was answered elsewhere: acknowledged,
            // and our call goes on.
            Msg::Decline
            | Msg::Busy
            | Msg::Hangup
            | Msg::Mute { .. }
            | Msg::Hold { .. }
            | Msg::Moved { .. } => {
                let ack = Msg::Ack {
                    kind: m.kind(),
                    flag: m.flag(),
                };
                self.send(from, Some(device), id, ack);
            }
            _ => self.stats.duplicates += 1,
        }
    }

    fn on_invite(
        &mut self,
        now: Millis,
        from: &str,
        device: DeviceKey,
        id: CallId,
        nonce: [u8; 16],
    ) {
        let dev = Some(device);
        if self.current().is_some() {
            self.stats.busy_sent += 1;
            self.send(from, dev, id, Msg::Busy);
            return;
        }
        self.gc();
        if self.calls.len() >= MAX_CALLS {
            self.stats.busy_sent += 1;
            self.send(from, dev, id, Msg::Busy);
            return;
        }
        let mut c = Call::new(
            from,
            CallState::Incoming,
            nonce,
            now + self.config.ring_timeout_ms,
        );
        c.device = dev;
        self.calls.insert(id, c);
        self.send(from, dev, id, Msg::Ringing);
        self.events.push_back(CallEvent::Incoming {
            id,
            peer: from.to_owned(),
        });
    }

    /// Forget ended calls past their linger time (and the oldest ended
    /// ones beyond the bound).
    fn gc(&mut self) {
        while self.calls.len() >= MAX_CALLS {
            let Some(old) = self
                .calls
                .iter()
                .filter(|(_, c)| matches!(c.state, CallState::Ended(_)))
                .min_by_key(|(_, c)| c.deadline)
                .map(|(&id, _)| id)
            else {
                break;
            };
            self.calls.remove(&old);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Millis> {
        self.calls
            .values()
            .flat_map(|c| std::iter::once(c.deadline).chain(c.pending.iter().map(|p| p.next_at)))
            .min()
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        for id in ids {
            let Some(c) = self.calls.get(&id) else {
                continue;
            };
            if now >= c.deadline {
                match c.state {
                    CallState::Inviting => {
                        // Tell the peer, in case only its answers got lost.
                        self.cancel_devices(now, id);
                        self.end(now, id, EndReason::NoResponse);
                    }
                    CallState::Ringing => {
                        self.cancel_devices(now, id);
                        self.end(now, id, EndReason::NoAnswer);
                    }
                    CallState::Incoming => self.end(now, id, EndReason::NoAnswer),
                    CallState::Connecting => self.media_failed(now, id),
                    CallState::Active => {}
                    CallState::Ended(_) => {
                        self.calls.remove(&id);
                        continue;
                    }
                }
            }
            let retry = self.config.retransmit_ms;
            let Some(c) = self.calls.get_mut(&id) else {
                continue;
            };
            let peer = c.peer.clone();
            let mut resend = Vec::new();
            for p in c.pending.iter_mut().filter(|p| p.next_at <= now) {
                resend.push((p.msg, p.device));
                p.next_at = now + retry.saturating_mul(1 << p.sent.min(2));
                p.sent += 1;
            }
            for (m, device) in resend {
                self.stats.retransmits += 1;
                self.send(&peer, device, id, m);
            }
        }
    }
}

#[cfg(test)]
mod tests;
