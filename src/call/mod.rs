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

pub mod history;
pub mod msg;

pub use msg::{Msg, MsgError};

use crate::media::Side;
use crate::time::{Millis, UnixMillis};
use std::collections::{BTreeMap, VecDeque};

pub type CallId = u64;

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
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
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
        })
    }
}

impl EndReason {
    /// A short stable name, for JSON events.
    pub fn code(&self) -> &'static str {
        match self {
            EndReason::HungUp { .. } => "hung_up",
            EndReason::Declined { .. } => "declined",
            EndReason::Busy => "busy",
            EndReason::Cancelled { .. } => "cancelled",
            EndReason::NoAnswer => "no_answer",
            EndReason::NoResponse => "no_response",
            EndReason::MediaFailed => "media_failed",
            EndReason::AudioFailed => "audio_failed",
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
            | CallEvent::Ended { id, .. } => *id,
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
}

/// A message we re-send until acknowledged.
#[derive(Debug, Clone)]
struct Pending {
    msg: Msg,
    sent: u32,
    next_at: Millis,
}

#[derive(Debug, Clone)]
struct Call {
    peer: String,
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
}

#[derive(Debug)]
pub struct CallCore {
    config: CallConfig,
    calls: BTreeMap<CallId, Call>,
    transmits: VecDeque<(String, Vec<u8>)>,
    events: VecDeque<CallEvent>,
    stats: CallStats,
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
        }
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
        self.calls
            .iter()
            .find(|(_, c)| !matches!(c.state, CallState::Ended(_)))
            .map(|(&id, _)| id)
    }

    fn send(&mut self, peer: &str, id: CallId, m: Msg) {
        if self.transmits.len() < MAX_QUEUE {
            self.transmits.push_back((peer.to_owned(), m.encode(id)));
        }
    }

    /// Send `m` now and re-send it until acknowledged.
    fn send_reliable(&mut self, now: Millis, id: CallId, m: Msg) {
        let retry = self.config.retransmit_ms;
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        // A newer Mute replaces an older one (likewise Hold).
        c.pending.retain(|p| p.msg.kind() != m.kind());
        c.pending.push(Pending {
            msg: m,
            sent: 1,
            next_at: now + retry,
        });
        let peer = c.peer.clone();
        self.send(&peer, id, m);
    }

    fn end(&mut self, now: Millis, id: CallId, reason: EndReason) {
        if let Some(c) = self.calls.get_mut(&id) {
            if matches!(c.state, CallState::Ended(_)) {
                return;
            }
            c.state = CallState::Ended(reason);
            // Keep re-sending the final message (if any) while lingering.
            c.pending
                .retain(|p| matches!(p.msg, Msg::Hangup | Msg::Cancel | Msg::Decline | Msg::Busy));
            c.deadline = now + self.config.linger_ms;
            self.events.push_back(CallEvent::Ended { id, reason });
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
        self.calls.insert(
            id,
            Call {
                peer: peer.to_owned(),
                state: CallState::Inviting,
                caller_nonce: nonce,
                callee_nonce: [0; 16],
                deadline: now + self.config.invite_timeout_ms,
                pending: Vec::new(),
                muted: false,
                on_hold: false,
                remote_muted: false,
                remote_hold: false,
            },
        );
        self.send_reliable(now, id, Msg::Invite { nonce });
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
        self.send_reliable(now, id, Msg::Accept { nonce });
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
                self.send_reliable(now, id, Msg::Cancel);
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
    pub fn media_flowing(&mut self, _now: Millis, id: CallId) {
        if let Some(c) = self.calls.get_mut(&id)
            && c.state == CallState::Connecting
        {
            c.state = CallState::Active;
            // An active call has no step to time out (the media session
            // watches the path).
            c.deadline = Millis::MAX;
            // Media proves the peer has our Accept.
            c.pending.retain(|p| !matches!(p.msg, Msg::Accept { .. }));
            self.events.push_back(CallEvent::Active { id });
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

    /// A message from `from` (a verified username), which its sender made
    /// at `sent` (the signed creation time of the envelope that carried
    /// it, on the sender's wall clock). Bad input is a counted drop, and so
    /// is an Invite older than the ring timeout by our wall clock `unix`:
    /// the caller has given up on it by then, so it can only be a replay
    /// (the in-memory duplicate check does not survive a restart; this one
    /// needs no memory) or hopelessly late.
    pub fn handle_message(
        &mut self,
        now: Millis,
        unix: UnixMillis,
        from: &str,
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
        if let Some(c) = self.calls.get(&id)
            && c.peer != from
        {
            self.stats.wrong_peer += 1;
            return;
        }
        if let Msg::Ack { kind, flag } = m {
            if let Some(c) = self.calls.get_mut(&id) {
                c.pending
                    .retain(|p| !(p.msg.kind() == kind && p.msg.flag() == flag));
            } else {
                self.stats.unknown_call += 1;
            }
            return;
        }
        let Some(state) = self.state(id) else {
            match m {
                Msg::Invite { nonce } => self.on_invite(now, from, id, nonce),
                // The call is long gone: acknowledge final messages so the
                // peer stops re-sending.
                Msg::Hangup | Msg::Cancel | Msg::Decline | Msg::Busy => {
                    self.stats.unknown_call += 1;
                    self.send(
                        from,
                        id,
                        Msg::Ack {
                            kind: m.kind(),
                            flag: false,
                        },
                    );
                }
                _ => self.stats.unknown_call += 1,
            }
            return;
        };
        let ack = Msg::Ack {
            kind: m.kind(),
            flag: m.flag(),
        };
        use CallState as S;
        match (state, m) {
            (S::Incoming, Msg::Invite { .. }) => {
                self.stats.duplicates += 1;
                self.send(from, id, Msg::Ringing);
            }
            (S::Inviting, Msg::Ringing) => {
                let ring = self.config.ring_timeout_ms;
                if let Some(c) = self.calls.get_mut(&id) {
                    c.state = S::Ringing;
                    c.deadline = now + ring;
                    c.pending.retain(|p| !matches!(p.msg, Msg::Invite { .. }));
                }
                self.events.push_back(CallEvent::Ringing { id });
            }
            (S::Ringing, Msg::Ringing) => self.stats.duplicates += 1,
            (S::Inviting | S::Ringing, Msg::Accept { nonce }) => {
                let connect = self.config.connect_timeout_ms;
                let Some(c) = self.calls.get_mut(&id) else {
                    return;
                };
                c.state = S::Connecting;
                c.callee_nonce = nonce;
                c.deadline = now + connect;
                c.pending.retain(|p| !matches!(p.msg, Msg::Invite { .. }));
                let ev = CallEvent::Connected {
                    id,
                    peer: c.peer.clone(),
                    side: Side::Caller,
                    caller_nonce: c.caller_nonce,
                    callee_nonce: nonce,
                };
                self.send(from, id, ack);
                self.events.push_back(ev);
            }
            (S::Connecting | S::Active, Msg::Accept { .. }) => {
                self.stats.duplicates += 1;
                self.send(from, id, ack);
            }
            (S::Inviting | S::Ringing, Msg::Decline) => {
                self.send(from, id, ack);
                self.end(now, id, EndReason::Declined { by_us: false });
            }
            (S::Inviting | S::Ringing, Msg::Busy) => {
                self.send(from, id, ack);
                self.end(now, id, EndReason::Busy);
            }
            (S::Incoming | S::Connecting, Msg::Cancel) => {
                self.send(from, id, ack);
                self.end(now, id, EndReason::Cancelled { by_us: false });
            }
            (S::Connecting | S::Active, Msg::Hangup) => {
                self.send(from, id, ack);
                self.end(now, id, EndReason::HungUp { by_us: false });
            }
            (S::Connecting | S::Active, Msg::Mute { on }) => {
                self.send(from, id, ack);
                if let Some(c) = self.calls.get_mut(&id)
                    && c.remote_muted != on
                {
                    c.remote_muted = on;
                    self.events
                        .push_back(CallEvent::RemoteMute { id, muted: on });
                }
            }
            (S::Connecting | S::Active, Msg::Hold { on }) => {
                self.send(from, id, ack);
                if let Some(c) = self.calls.get_mut(&id)
                    && c.remote_hold != on
                {
                    c.remote_hold = on;
                    self.events
                        .push_back(CallEvent::RemoteHold { id, on_hold: on });
                }
            }
            (S::Ended(_), Msg::Hangup | Msg::Cancel | Msg::Decline | Msg::Busy) => {
                // Crossed with ours, or a retransmission: acknowledge.
                self.stats.duplicates += 1;
                self.send(from, id, ack);
            }
            _ => self.stats.duplicates += 1,
        }
    }

    fn on_invite(&mut self, now: Millis, from: &str, id: CallId, nonce: [u8; 16]) {
        if self.current().is_some() {
            self.stats.busy_sent += 1;
            self.send(from, id, Msg::Busy);
            return;
        }
        self.gc();
        if self.calls.len() >= MAX_CALLS {
            self.stats.busy_sent += 1;
            self.send(from, id, Msg::Busy);
            return;
        }
        self.calls.insert(
            id,
            Call {
                peer: from.to_owned(),
                state: CallState::Incoming,
                caller_nonce: nonce,
                callee_nonce: [0; 16],
                deadline: now + self.config.ring_timeout_ms,
                pending: Vec::new(),
                muted: false,
                on_hold: false,
                remote_muted: false,
                remote_hold: false,
            },
        );
        self.send(from, id, Msg::Ringing);
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

    pub fn poll_transmit(&mut self) -> Option<(String, Vec<u8>)> {
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
                        self.send_reliable(now, id, Msg::Cancel);
                        self.end(now, id, EndReason::NoResponse);
                    }
                    CallState::Ringing => {
                        self.send_reliable(now, id, Msg::Cancel);
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
                resend.push(p.msg);
                p.next_at = now + retry.saturating_mul(1 << p.sent.min(2));
                p.sent += 1;
            }
            for m in resend {
                self.stats.retransmits += 1;
                self.send(&peer, id, m);
            }
        }
    }
}

#[cfg(test)]
mod tests;
