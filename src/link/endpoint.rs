//! The link state machine: handshakes, sessions and their timers, keyed by
//! local index, with a per-address view for sending.

use super::packet::{COOKIE, EPHEMERAL, Packet};
use super::replay::ReplayWindow;
use super::{
    CertRejection, CloseReason, LinkConfig, LinkError, LinkEvent, LinkStats, MAX_PAYLOAD, PROLOGUE,
    PeerId, Transmit,
};
use crate::crypto::channel::{ChannelError, ChannelHandshake, Step};
use crate::crypto::noise::StatelessTransport;
use crate::identity::{Certificate, DeviceIdentity};
use crate::limits::{Shares, SourceKey, log_worthy};
use crate::time::{Millis, UnixSecs};
use rand::{CryptoRng, RngCore};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// Sessions stop sending long before the Noise nonce space (2^64 - 1)
/// could run out; the window check rejects anything above it too.
const MAX_COUNTER: u64 = 1 << 60;

/// RENEWs sent per session after our certificate changes (the first at
/// once, the rest on the keepalive timer), against loss.
const RENEW_SENDS: u32 = 3;

/// A cookie is good in the time bucket it was made in and the next.
const COOKIE_BUCKET_MS: u64 = 120_000;

/// Our handshake, waiting for RESP.
struct Initiating {
    hs: ChannelHandshake,
    ephemeral: [u8; EPHEMERAL],
    packet: Vec<u8>,
    sent: u32,
    next_at: Millis,
}

/// Their handshake, answered with RESP and waiting for FIN.
struct Responding {
    hs: ChannelHandshake,
    peer_index: u32,
    peer_ephemeral: [u8; EPHEMERAL],
    packet: Vec<u8>,
    deadline: Millis,
}

struct Session {
    peer_index: u32,
    /// The handshake's exporter secret, for [`LinkEndpoint::export`].
    exporter: [u8; 32],
    transport: StatelessTransport,
    peer: Certificate,
    id: PeerId,
    next_counter: u64,
    replay: ReplayWindow,
    last_sent: Millis,
    last_recv: Millis,
    initiator: bool,
    /// The initiator saw authenticated DATA (the responder always has).
    confirmed: bool,
    /// The FIN datagram: the initiator re-sends it until confirmed, the
    /// responder recognises duplicates of it.
    fin: Vec<u8>,
    /// Responder only: the INIT this session answered, to ignore late
    /// duplicates of it.
    peer_ephemeral: [u8; EPHEMERAL],
    fin_sent: u32,
    next_fin_at: Millis,
    /// RENEWs still to send carrying our renewed certificate (0: the peer
    /// has the one we use), and when the next is due.
    renew_left: u32,
    next_renew_at: Millis,
    /// When the peer's certificate runs out on our timeline, as its
    /// `not_after` stood from the wall clock at the handshake or renewal:
    /// only a wake-up for [`LinkEndpoint::poll_timeout`]; the expiry itself
    /// is judged on the wall clock.
    expires_at: Millis,
}

enum State {
    Initiating(Box<Initiating>),
    Responding(Box<Responding>),
    Established(Box<Session>),
}

struct Slot {
    addr: SocketAddr,
    state: State,
}

/// What we hold for one remote address. Exists only while one of its
/// fields is set, so the map is bounded by the slots.
#[derive(Default)]
struct Peer {
    current: Option<u32>,
    initiator: Option<u32>,
    responder: Option<u32>,
    queue: VecDeque<Vec<u8>>,
    /// The user asked for a session (connect or send) and has none yet:
    /// its failure is reported with `Closed`.
    wanted: bool,
}

impl Peer {
    fn is_empty(&self) -> bool {
        self.current.is_none()
            && self.initiator.is_none()
            && self.responder.is_none()
            && self.queue.is_empty()
    }
}

/// A sans-IO secure-link endpoint; see the [module docs](super).
pub struct LinkEndpoint {
    device: DeviceIdentity,
    cert: Certificate,
    authority: [u8; 32],
    config: LinkConfig,
    slots: HashMap<u32, Slot>,
    peers: HashMap<SocketAddr, Peer>,
    established: usize,
    /// Handshakes in flight, ours (`Initiating`) and theirs (`Responding`):
    /// budgeted apart so strangers cannot starve ours.
    initiating: usize,
    responding: usize,
    /// Half-open handshakes per source, against `max_half_open_per_address`.
    half_open: Shares<SourceKey>,
    /// Established sessions per source and per account (supernodes
    /// exempt), against `max_sessions_per_address` / `_per_account`.
    sessions_by_source: Shares<SourceKey>,
    sessions_by_account: Shares<String>,
    /// Key of the cookie MAC, drawn from the caller's RNG on first use.
    cookie_secret: Option<[u8; 32]>,
    /// Other nodes a BUSY reply names (set by the overlay).
    busy_hint: Vec<SocketAddr>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<LinkEvent>,
    stats: LinkStats,
}

impl std::fmt::Debug for LinkEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkEndpoint")
            .field("username", &self.cert.username)
            .field("established", &self.established)
            .field("initiating", &self.initiating)
            .field("responding", &self.responding)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn seed<R: RngCore + CryptoRng>(rng: &mut R) -> [u8; 32] {
    let mut s = [0u8; 32];
    rng.fill_bytes(&mut s);
    s
}

/// When `peer` runs out on our timeline, seen from `now` and the wall
/// clock `unix`.
fn expiry(now: Millis, unix: UnixSecs, peer: &Certificate) -> Millis {
    now + peer
        .not_after
        .saturating_sub(unix.get())
        .saturating_mul(1000)
}

impl LinkEndpoint {
    /// `cert` must certify `device`'s keys; `authority` is the pinned
    /// authority ed25519 key peers' certificates are checked against.
    pub fn new(
        device: DeviceIdentity,
        cert: Certificate,
        authority: [u8; 32],
        config: LinkConfig,
    ) -> Result<Self, LinkError> {
        check_ours(&device, &cert)?;
        Ok(LinkEndpoint {
            device,
            cert,
            authority,
            half_open: Shares::new(config.max_half_open_per_address.max(1)),
            sessions_by_source: Shares::new(config.max_sessions_per_address.max(1)),
            sessions_by_account: Shares::new(config.max_sessions_per_account.max(1)),
            config: config.sanitized(),
            slots: HashMap::new(),
            peers: HashMap::new(),
            established: 0,
            initiating: 0,
            responding: 0,
            cookie_secret: None,
            busy_hint: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: LinkStats::default(),
        })
    }

    /// Use a renewed certificate for handshakes from now on, and send it
    /// over every live session (RENEW, from the next
    /// [`LinkEndpoint::handle_timeout`]), so peers keep the sessions past
    /// the old certificate's expiry.
    pub fn set_certificate(&mut self, cert: Certificate) -> Result<(), LinkError> {
        check_ours(&self.device, &cert)?;
        self.cert = cert;
        for slot in self.slots.values_mut() {
            if let State::Established(s) = &mut slot.state {
                s.renew_left = RENEW_SENDS;
                s.next_renew_at = Millis::ZERO;
            }
        }
        Ok(())
    }

    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// The verified certificate of the established session at `addr`.
    pub fn peer(&self, addr: SocketAddr) -> Option<&Certificate> {
        match &self.slots.get(&self.peers.get(&addr)?.current?)?.state {
            State::Established(s) if s.confirmed => Some(&s.peer),
            _ => None,
        }
    }

    /// Key material for another protocol bound to the established session
    /// at `addr` (TLS-exporter style): the same 32 bytes on both sides for
    /// the same `label` and `context`, unknown to anyone else, and
    /// independent for different labels or contexts. Media keys come from
    /// here. Also returns whether we initiated the session.
    pub fn export(
        &self,
        addr: SocketAddr,
        label: &[u8],
        context: &[u8],
    ) -> Option<([u8; 32], bool)> {
        use blake2::digest::{KeyInit, Mac};
        match &self.slots.get(&self.peers.get(&addr)?.current?)?.state {
            State::Established(s) if s.confirmed => {
                let mut m = <blake2::Blake2sMac256 as KeyInit>::new_from_slice(&s.exporter).ok()?;
                m.update(&(label.len() as u32).to_be_bytes());
                m.update(label);
                m.update(context);
                Some((m.finalize().into_bytes().into(), s.initiator))
            }
            _ => None,
        }
    }

    /// Addresses with an established session.
    pub fn sessions(&self) -> impl Iterator<Item = (SocketAddr, &Certificate)> + '_ {
        self.slots.values().filter_map(|slot| match &slot.state {
            State::Established(s) if s.confirmed => Some((slot.addr, &s.peer)),
            _ => None,
        })
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// Start a handshake with `addr` unless a session or a handshake with
    /// it (either way round) already exists.
    pub fn connect<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        addr: SocketAddr,
        rng: &mut R,
    ) -> Result<(), LinkError> {
        if let Some(p) = self.peers.get_mut(&addr) {
            if p.current.is_some() {
                return Ok(());
            }
            if p.initiator.is_some() || p.responder.is_some() {
                p.wanted = true;
                return Ok(());
            }
        }
        self.initiate(now, addr, rng)
    }

    /// Send `payload` to `addr`: at once when a session is up, else queued
    /// (bounded) behind a handshake this starts.
    pub fn send<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        addr: SocketAddr,
        payload: &[u8],
        rng: &mut R,
    ) -> Result<(), LinkError> {
        if payload.is_empty() {
            return Err(LinkError::Empty);
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(LinkError::TooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        if let Some(idx) = self.peers.get(&addr).and_then(|p| p.current) {
            self.send_data(now, idx, payload, true);
            return Ok(());
        }
        let limit = self.config.max_queued_per_peer;
        if self.peers.get(&addr).map_or(0, |p| p.queue.len()) >= limit {
            self.stats.queue_full += 1;
            return Err(LinkError::QueueFull { addr, limit });
        }
        self.connect(now, addr, rng)?;
        match self.peers.get_mut(&addr) {
            Some(p) if p.queue.len() < limit => p.queue.push_back(payload.to_vec()),
            _ => {
                self.stats.queue_full += 1;
                return Err(LinkError::QueueFull { addr, limit });
            }
        }
        Ok(())
    }

    /// Drop everything held for `addr`. The peer is not told; its side
    /// closes when idle.
    pub fn close(&mut self, _now: Millis, addr: SocketAddr) {
        let Some(p) = self.peers.remove(&addr) else {
            return;
        };
        for idx in [p.current, p.initiator, p.responder].into_iter().flatten() {
            self.remove_slot(idx);
        }
        self.stats.queue_dropped += p.queue.len() as u64;
        self.push_event(LinkEvent::Closed {
            addr,
            reason: CloseReason::Local,
        });
    }

    /// Other nodes to name in BUSY replies when there is no room here
    /// (at most [`crate::wire::addr::MAX_ADDRS`] are sent).
    pub fn set_busy_hint(&mut self, others: Vec<SocketAddr>) {
        self.busy_hint = others;
    }

    /// The next time [`LinkEndpoint::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.slots
            .values()
            .map(|slot| match &slot.state {
                State::Initiating(i) => i.next_at,
                State::Responding(r) => r.deadline,
                State::Established(s) => {
                    let resend = if s.confirmed {
                        s.last_sent.saturating_add(self.config.keepalive_ms)
                    } else {
                        s.next_fin_at
                    };
                    let renew = if s.confirmed && s.renew_left > 0 {
                        s.next_renew_at
                    } else {
                        Millis::MAX
                    };
                    resend
                        .min(renew)
                        .min(s.last_recv.saturating_add(self.config.idle_timeout_ms))
                        .min(s.expires_at)
                }
            })
            .min()
    }

    /// Run the timers due at `now`: retransmissions, keepalives, and
    /// the timeouts of handshakes and idle sessions; a session whose peer
    /// certificate has run out at `unix` (the wall clock) ends.
    pub fn handle_timeout<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        unix: UnixSecs,
        rng: &mut R,
    ) {
        let due: Vec<u32> = self
            .slots
            .iter()
            .filter(|(_, slot)| match &slot.state {
                State::Initiating(i) => now >= i.next_at,
                State::Responding(r) => now >= r.deadline,
                State::Established(_) => true,
            })
            .map(|(&idx, _)| idx)
            .collect();
        for idx in due {
            self.slot_timeout(now, unix, idx, rng);
        }
    }

    /// Feed one received datagram at `now`; certificates in it are judged
    /// at `unix` (the wall clock). Never panics; what cannot be used is
    /// counted in [`LinkStats`] and dropped.
    pub fn handle_datagram<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        unix: UnixSecs,
        from: SocketAddr,
        bytes: &[u8],
        rng: &mut R,
    ) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += bytes.len() as u64;
        let Ok(packet) = Packet::decode(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        match packet {
            Packet::Init {
                sender,
                ephemeral,
                cookie,
            } => self.on_init(now, unix, from, sender, ephemeral, cookie, rng),
            Packet::Cookie { receiver, cookie } => self.on_cookie(now, from, receiver, cookie),
            Packet::Resp {
                sender,
                receiver,
                msg,
            } => self.on_resp(now, unix, from, sender, receiver, msg),
            Packet::Fin { receiver, msg } => self.on_fin(now, unix, from, receiver, msg, bytes),
            Packet::Data {
                receiver,
                counter,
                ciphertext,
            } => self.on_data(now, from, receiver, counter, ciphertext),
            Packet::Renew {
                receiver,
                counter,
                ciphertext,
            } => self.on_renew(now, unix, receiver, counter, ciphertext),
            Packet::Busy { receiver, .. } => {
                let others = packet.busy_others();
                self.on_busy(from, receiver, others)
            }
        }
    }

    // ---- handshake ------------------------------------------------------

    fn initiate<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        addr: SocketAddr,
        rng: &mut R,
    ) -> Result<(), LinkError> {
        if self.initiating >= self.config.max_handshakes {
            self.stats.too_many_handshakes += 1;
            return Err(LinkError::TooManyHandshakes {
                limit: self.config.max_handshakes,
            });
        }
        if self.established >= self.config.max_sessions {
            self.stats.too_many_sessions += 1;
            return Err(LinkError::TooManySessions {
                limit: self.config.max_sessions,
            });
        }
        let (hs, msg1) = ChannelHandshake::initiate_with(
            &self.device,
            &self.cert,
            self.authority,
            PROLOGUE,
            Some(seed(rng)),
        )?;
        let Ok(ephemeral) = <[u8; EPHEMERAL]>::try_from(msg1.as_slice()) else {
            return Err(ChannelError::OutOfOrder.into());
        };
        let idx = self.alloc_index(rng);
        let Ok(packet) = (Packet::Init {
            sender: idx,
            ephemeral,
            cookie: None,
        })
        .encode() else {
            return Err(ChannelError::OutOfOrder.into());
        };
        self.push_transmit(addr, packet.clone());
        self.insert_slot(
            idx,
            Slot {
                addr,
                state: State::Initiating(Box::new(Initiating {
                    hs,
                    ephemeral,
                    packet,
                    sent: 1,
                    next_at: now.saturating_add(self.config.retry_delay_ms(0)),
                })),
            },
        );
        let p = self.peers.entry(addr).or_default();
        p.initiator = Some(idx);
        p.wanted = true;
        self.stats.handshakes_initiated += 1;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn on_init<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        unix: UnixSecs,
        from: SocketAddr,
        sender: u32,
        ephemeral: [u8; EPHEMERAL],
        cookie: Option<[u8; COOKIE]>,
        rng: &mut R,
    ) {
        let (current, initiator, responder) = match self.peers.get(&from) {
            Some(p) => (p.current, p.initiator, p.responder),
            None => (None, None, None),
        };
        // A retransmitted INIT we are answering: re-send the same RESP.
        if let Some(r) = responder
            && let Some(Slot {
                state: State::Responding(resp),
                ..
            }) = self.slots.get_mut(&r)
            && resp.peer_index == sender
            && resp.peer_ephemeral == ephemeral
        {
            resp.deadline = now.saturating_add(self.config.handshake_timeout_ms());
            let packet = resp.packet.clone();
            self.stats.duplicate_handshakes += 1;
            self.push_transmit(from, packet);
            return;
        }
        // A late copy of the INIT that made the current session.
        if let Some(c) = current
            && let Some(Slot {
                state: State::Established(s),
                ..
            }) = self.slots.get(&c)
            && !s.initiator
            && s.peer_index == sender
            && s.peer_ephemeral == ephemeral
        {
            self.stats.duplicate_handshakes += 1;
            return;
        }
        // Simultaneous open: the larger ephemeral key wins.
        if let Some(i) = initiator
            && let Some(Slot {
                state: State::Initiating(ours),
                ..
            }) = self.slots.get(&i)
        {
            if ours.ephemeral == ephemeral {
                // Our own INIT reflected back at us.
                self.stats.malformed += 1;
                return;
            }
            self.stats.simultaneous_open += 1;
            if ours.ephemeral > ephemeral {
                return;
            }
            // Theirs wins: ours is abandoned, the queue and `wanted`
            // stay for the session this INIT will make.
            self.remove_slot(i);
            if let Some(p) = self.peers.get_mut(&from) {
                p.initiator = None;
            }
        }
        // Under load, no state before the sender proves it receives here.
        if self.responding >= self.config.cookie_after_half_open {
            let secret = *self.cookie_secret.get_or_insert_with(|| seed(rng));
            let bucket = now.get() / COOKIE_BUCKET_MS;
            let valid = cookie.is_some_and(|c| {
                [bucket, bucket.saturating_sub(1)]
                    .iter()
                    .any(|&b| cookie_mac(&secret, b, from, sender, &ephemeral) == c)
            });
            if !valid {
                if cookie.is_some() {
                    self.stats.cookies_invalid += 1;
                    if log_worthy(self.stats.cookies_invalid) {
                        tracing::warn!(%from, count = self.stats.cookies_invalid, "link: INIT with an invalid cookie dropped");
                    }
                }
                self.stats.cookies_sent += 1;
                if log_worthy(self.stats.cookies_sent) {
                    tracing::info!(
                        half_open = self.responding,
                        count = self.stats.cookies_sent,
                        "link: under load, answering INITs with cookies"
                    );
                }
                let c = cookie_mac(&secret, bucket, from, sender, &ephemeral);
                if let Ok(p) = (Packet::Cookie {
                    receiver: sender,
                    cookie: c,
                })
                .encode()
                {
                    self.push_transmit(from, p);
                }
                return;
            }
        }
        // A full table: say so at once (no state kept), naming others.
        if self.established >= self.config.max_sessions && current.is_none() {
            self.stats.too_many_sessions += 1;
            self.send_busy(from, sender);
            return;
        }
        // One source holds at most its share of half-open handshakes (a
        // new INIT from the same address replaces its own, below).
        let key = SourceKey::of(from.ip());
        if responder.is_none() && self.half_open.get(&key) >= self.half_open.cap {
            self.stats.half_open_per_address += 1;
            if log_worthy(self.stats.half_open_per_address) {
                tracing::warn!(source = %key, count = self.stats.half_open_per_address, "link: INIT refused, source holds its half-open share");
            }
            return;
        }
        // A new INIT from this address supersedes its older attempt.
        if let Some(r) = responder {
            self.remove_slot(r);
            if let Some(p) = self.peers.get_mut(&from) {
                p.responder = None;
            }
        }
        if self.responding >= self.config.max_handshakes {
            self.stats.too_many_handshakes += 1;
            if log_worthy(self.stats.too_many_handshakes) {
                tracing::warn!(%from, count = self.stats.too_many_handshakes, "link: INIT refused, handshake table full");
            }
            self.fail_if_stranded(from, CloseReason::Timeout);
            return;
        }
        let step = ChannelHandshake::respond_with(
            &self.device,
            &self.cert,
            self.authority,
            PROLOGUE,
            Some(seed(rng)),
        )
        .and_then(|mut hs| Ok((hs.read_finished(unix, &ephemeral)?, hs)));
        let (msg2, hs) = match step {
            Ok((Step::Send(msg2), hs)) => (msg2, hs),
            _ => {
                self.stats.handshake_failed += 1;
                self.fail_if_stranded(from, CloseReason::Timeout);
                return;
            }
        };
        let idx = self.alloc_index(rng);
        let Ok(packet) = (Packet::Resp {
            sender: idx,
            receiver: sender,
            msg: &msg2,
        })
        .encode() else {
            self.stats.handshake_failed += 1;
            self.fail_if_stranded(from, CloseReason::Timeout);
            return;
        };
        self.push_transmit(from, packet.clone());
        self.insert_slot(
            idx,
            Slot {
                addr: from,
                state: State::Responding(Box::new(Responding {
                    hs,
                    peer_index: sender,
                    peer_ephemeral: ephemeral,
                    packet,
                    deadline: now.saturating_add(self.config.handshake_timeout_ms()),
                })),
            },
        );
        self.peers.entry(from).or_default().responder = Some(idx);
    }

    /// The responder wants proof we receive here: repeat our INIT with it.
    fn on_cookie(&mut self, now: Millis, from: SocketAddr, receiver: u32, cookie: [u8; COOKIE]) {
        let Some(Slot {
            addr,
            state: State::Initiating(init),
        }) = self.slots.get_mut(&receiver)
        else {
            self.stats.unknown_session += 1;
            return;
        };
        if *addr != from {
            self.stats.unknown_session += 1;
            return;
        }
        let Ok(packet) = (Packet::Init {
            sender: receiver,
            ephemeral: init.ephemeral,
            cookie: Some(cookie),
        })
        .encode() else {
            return;
        };
        // Retransmissions carry it too; the timer restarts from here.
        init.packet = packet.clone();
        init.next_at = now.saturating_add(self.config.retry_delay_ms(init.sent.saturating_sub(1)));
        self.stats.cookies_received += 1;
        self.push_transmit(from, packet);
    }

    fn on_resp(
        &mut self,
        now: Millis,
        unix: UnixSecs,
        from: SocketAddr,
        sender: u32,
        receiver: u32,
        msg: &[u8],
    ) {
        let Some(slot) = self.slots.get_mut(&receiver) else {
            self.stats.unknown_session += 1;
            return;
        };
        if slot.addr != from {
            self.stats.unknown_session += 1;
            return;
        }
        let init = match &mut slot.state {
            State::Initiating(init) => init,
            State::Established(s) if s.initiator && s.peer_index == sender => {
                // Our FIN was lost and the responder re-sent RESP on a
                // duplicate INIT: FIN again.
                self.stats.duplicate_handshakes += 1;
                if !s.confirmed {
                    let fin = s.fin.clone();
                    self.push_transmit(from, fin);
                }
                return;
            }
            _ => {
                self.stats.unknown_session += 1;
                return;
            }
        };
        let (msg3, finished) = match init.hs.read_finished(unix, msg) {
            Ok(Step::Done(Some(msg3), f)) => (msg3, f),
            Ok(_) => {
                self.stats.handshake_failed += 1;
                return;
            }
            Err(e) => {
                match CertRejection::of(&e) {
                    // A verified-but-refused certificate spends the
                    // handshake; Noise failures leave it intact (a forged
                    // RESP must not kill the genuine one).
                    Some(r) => {
                        self.stats.reject(r);
                        self.abandon_initiation(
                            receiver,
                            from,
                            CloseReason::CertificateRejected(r),
                        );
                    }
                    None => self.stats.handshake_failed += 1,
                }
                return;
            }
        };
        if self.established >= self.config.max_sessions {
            self.stats.too_many_sessions += 1;
            self.abandon_initiation(receiver, from, CloseReason::TooManySessions);
            return;
        }
        let Ok((peer, transport, exporter)) = finished.into_stateless_with_exporter() else {
            self.stats.handshake_failed += 1;
            self.abandon_initiation(receiver, from, CloseReason::Timeout);
            return;
        };
        let Ok(fin) = (Packet::Fin {
            receiver: sender,
            msg: &msg3,
        })
        .encode() else {
            self.stats.handshake_failed += 1;
            self.abandon_initiation(receiver, from, CloseReason::Timeout);
            return;
        };
        self.push_transmit(from, fin.clone());
        let expires_at = expiry(now, unix, &peer);
        let session = Session {
            exporter,
            peer_index: sender,
            transport,
            id: PeerId::of(&peer),
            peer,
            next_counter: 0,
            replay: ReplayWindow::default(),
            last_sent: now,
            last_recv: now,
            initiator: true,
            confirmed: false,
            fin,
            peer_ephemeral: [0; EPHEMERAL],
            fin_sent: 1,
            next_fin_at: now.saturating_add(self.config.retry_delay_ms(0)),
            renew_left: 0,
            next_renew_at: Millis::ZERO,
            expires_at,
        };
        self.install(now, receiver, from, session);
    }

    fn on_fin(
        &mut self,
        now: Millis,
        unix: UnixSecs,
        from: SocketAddr,
        receiver: u32,
        msg: &[u8],
        bytes: &[u8],
    ) {
        let Some(slot) = self.slots.get_mut(&receiver) else {
            self.stats.unknown_session += 1;
            return;
        };
        let resp = match &mut slot.state {
            State::Responding(resp) if slot.addr == from => resp,
            State::Established(s) if !s.initiator && s.fin == bytes => {
                // The initiator has not seen our ack yet: ack again (to
                // the session's address, not the datagram's source).
                self.stats.duplicate_handshakes += 1;
                self.send_data(now, receiver, &[], false);
                return;
            }
            _ => {
                self.stats.unknown_session += 1;
                return;
            }
        };
        let peer_index = resp.peer_index;
        let peer_ephemeral = resp.peer_ephemeral;
        let finished = match resp.hs.read_finished(unix, msg) {
            Ok(Step::Done(None, f)) => f,
            Ok(_) => {
                self.stats.handshake_failed += 1;
                return;
            }
            Err(e) => {
                if let Some(r) = CertRejection::of(&e) {
                    self.stats.reject(r);
                    self.abandon_response(receiver, from, CloseReason::CertificateRejected(r));
                } else {
                    self.stats.handshake_failed += 1;
                }
                return;
            }
        };
        let replacing = self.peers.get(&from).is_some_and(|p| p.current.is_some());
        if self.established >= self.config.max_sessions && !replacing {
            self.stats.too_many_sessions += 1;
            if log_worthy(self.stats.too_many_sessions) {
                tracing::warn!(%from, count = self.stats.too_many_sessions, "link: session refused, table full");
            }
            self.send_busy(from, peer_index);
            self.abandon_response(receiver, from, CloseReason::TooManySessions);
            return;
        }
        if !replacing {
            let key = SourceKey::of(from.ip());
            if self.sessions_by_source.get(&key) >= self.sessions_by_source.cap {
                self.stats.sessions_per_address += 1;
                if log_worthy(self.stats.sessions_per_address) {
                    tracing::warn!(source = %key, count = self.stats.sessions_per_address, "link: session refused, source holds its share");
                }
                self.send_busy(from, peer_index);
                self.abandon_response(receiver, from, CloseReason::TooManySessions);
                return;
            }
            if let Some(user) = account_key(&finished.peer)
                && self.sessions_by_account.get(&user) >= self.sessions_by_account.cap
            {
                self.stats.sessions_per_account += 1;
                if log_worthy(self.stats.sessions_per_account) {
                    tracing::warn!(%user, count = self.stats.sessions_per_account, "link: session refused, account holds its share");
                }
                self.send_busy(from, peer_index);
                self.abandon_response(receiver, from, CloseReason::TooManySessions);
                return;
            }
        }
        let Ok((peer, transport, exporter)) = finished.into_stateless_with_exporter() else {
            self.stats.handshake_failed += 1;
            self.abandon_response(receiver, from, CloseReason::Timeout);
            return;
        };
        let expires_at = expiry(now, unix, &peer);
        let session = Session {
            exporter,
            peer_index,
            transport,
            id: PeerId::of(&peer),
            peer,
            next_counter: 0,
            replay: ReplayWindow::default(),
            last_sent: now,
            last_recv: now,
            initiator: false,
            confirmed: true,
            fin: bytes.to_vec(),
            peer_ephemeral,
            fin_sent: 0,
            next_fin_at: Millis::ZERO,
            renew_left: 0,
            next_renew_at: Millis::ZERO,
            expires_at,
        };
        self.install(now, receiver, from, session);
    }

    /// Make `session` the current one at `addr`, replacing the handshake
    /// slot `idx` and anything older for that address.
    fn install(&mut self, now: Millis, idx: u32, addr: SocketAddr, session: Session) {
        self.remove_slot(idx);
        let responder = !session.initiator;
        let peer_cert = session.peer.clone();
        let new_key = session.id.ed25519;
        self.insert_slot(
            idx,
            Slot {
                addr,
                state: State::Established(Box::new(session)),
            },
        );
        let p = self.peers.entry(addr).or_default();
        let old = p.current.replace(idx);
        // Any other handshake with this address is moot now.
        let stale = [p.initiator.take(), p.responder.take()];
        p.wanted = false;
        for i in stale.into_iter().flatten().filter(|&i| i != idx) {
            self.remove_slot(i);
        }
        if let Some(old) = old.filter(|&o| o != idx) {
            let old_key = match self.remove_slot(old) {
                Some(Slot {
                    state: State::Established(s),
                    ..
                }) => Some(s.id.ed25519),
                _ => None,
            };
            self.stats.sessions_replaced += 1;
            if old_key != Some(new_key) {
                self.push_event(LinkEvent::Closed {
                    addr,
                    reason: CloseReason::Replaced,
                });
            }
        }
        if responder {
            self.stats.handshakes_completed += 1;
            self.push_event(LinkEvent::Established {
                addr,
                peer: peer_cert,
            });
            // The ack that confirms the session to the initiator.
            self.send_data(now, idx, &[], false);
        }
        self.flush_queue(now, addr, idx);
    }

    fn flush_queue(&mut self, now: Millis, addr: SocketAddr, idx: u32) {
        let queue = match self.peers.get_mut(&addr) {
            Some(p) => std::mem::take(&mut p.queue),
            None => return,
        };
        for msg in queue {
            // An unconfirmed initiator has just sent FIN: no FIN per message.
            self.send_data(now, idx, &msg, false);
        }
    }

    /// Our handshake failed for good: report it if the user wanted it.
    /// Tell the initiator of handshake `receiver` at `to` there is no
    /// room here, naming other nodes.
    fn send_busy(&mut self, to: SocketAddr, receiver: u32) {
        if let Ok(p) = Packet::encode_busy(receiver, &self.busy_hint) {
            self.stats.busy_sent += 1;
            self.push_transmit(to, p);
        }
    }

    /// The responder has no room for our handshake `receiver` (pending, or
    /// finished but not yet confirmed): give up on it now and pass on the
    /// nodes it named.
    fn on_busy(&mut self, from: SocketAddr, receiver: u32, others: Vec<SocketAddr>) {
        let ours = match self.slots.get(&receiver) {
            Some(Slot {
                addr,
                state: State::Initiating(_),
            }) => *addr == from,
            Some(Slot {
                addr,
                state: State::Established(s),
            }) => *addr == from && s.initiator && !s.confirmed,
            _ => false,
        };
        if !ours {
            self.stats.unknown_session += 1;
            return;
        }
        self.stats.busy_received += 1;
        self.push_event(LinkEvent::Busy { addr: from, others });
        if let Some(p) = self.peers.get_mut(&from) {
            if p.initiator == Some(receiver) {
                p.initiator = None;
            }
            if p.current == Some(receiver) {
                p.current = None;
            }
            p.wanted = true;
        }
        self.remove_slot(receiver);
        self.fail_if_stranded(from, CloseReason::TooManySessions);
    }

    fn abandon_initiation(&mut self, idx: u32, addr: SocketAddr, reason: CloseReason) {
        self.remove_slot(idx);
        if let Some(p) = self.peers.get_mut(&addr)
            && p.initiator == Some(idx)
        {
            p.initiator = None;
        }
        self.fail_if_stranded(addr, reason);
    }

    /// Their handshake failed: the slot goes; if we yielded our own to it,
    /// the wait is over too.
    fn abandon_response(&mut self, idx: u32, addr: SocketAddr, reason: CloseReason) {
        self.remove_slot(idx);
        if let Some(p) = self.peers.get_mut(&addr)
            && p.responder == Some(idx)
        {
            p.responder = None;
        }
        self.fail_if_stranded(addr, reason);
    }

    /// A wanted address with nothing left in flight: drop its queue and
    /// tell the user.
    fn fail_if_stranded(&mut self, addr: SocketAddr, reason: CloseReason) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        if p.current.is_some() || p.initiator.is_some() || p.responder.is_some() {
            return;
        }
        let wanted = std::mem::take(&mut p.wanted);
        let dropped = std::mem::take(&mut p.queue).len() as u64;
        self.stats.queue_dropped += dropped;
        self.peers.remove(&addr);
        if wanted {
            self.push_event(LinkEvent::Closed { addr, reason });
        }
    }

    // ---- data -----------------------------------------------------------

    fn on_data(
        &mut self,
        now: Millis,
        from: SocketAddr,
        receiver: u32,
        counter: u64,
        ciphertext: &[u8],
    ) {
        let Some(Slot {
            addr,
            state: State::Established(s),
        }) = self.slots.get_mut(&receiver)
        else {
            self.stats.unknown_session += 1;
            return;
        };
        if counter >= MAX_COUNTER || !s.replay.check(counter) {
            self.stats.replayed += 1;
            return;
        }
        let Ok(payload) = s.transport.decrypt(counter, ciphertext) else {
            self.stats.decrypt_failed += 1;
            return;
        };
        let (_, newest) = s.replay.accept(counter);
        s.last_recv = now;
        let addr = *addr;
        let id = s.id.clone();
        if !s.confirmed {
            s.confirmed = true;
            let peer = s.peer.clone();
            self.stats.handshakes_completed += 1;
            self.push_event(LinkEvent::Established { addr, peer });
        }
        let addr = if from != addr && newest {
            self.roam(now, receiver, addr, from, id.clone());
            from
        } else {
            addr
        };
        if payload.is_empty() {
            self.stats.keepalives_in += 1;
        } else {
            self.stats.messages_in += 1;
            self.push_event(LinkEvent::Message {
                addr,
                peer: id,
                payload,
            });
        }
    }

    /// The peer's renewed certificate over session `receiver`: taken when
    /// it is the same user, role and keys the handshake proved, valid now
    /// and newer; the session then lives until it expires.
    fn on_renew(
        &mut self,
        now: Millis,
        unix: UnixSecs,
        receiver: u32,
        counter: u64,
        ciphertext: &[u8],
    ) {
        let Some(Slot {
            state: State::Established(s),
            ..
        }) = self.slots.get_mut(&receiver)
        else {
            self.stats.unknown_session += 1;
            return;
        };
        if counter >= MAX_COUNTER || !s.replay.check(counter) {
            self.stats.replayed += 1;
            return;
        }
        let Ok(plain) = s.transport.decrypt(counter, ciphertext) else {
            self.stats.decrypt_failed += 1;
            return;
        };
        s.replay.accept(counter);
        s.last_recv = now;
        let ok = Certificate::decode(&plain).ok().filter(|c| {
            c.username == s.peer.username
                && c.role == s.peer.role
                && c.ed25519 == s.peer.ed25519
                && c.x25519 == s.peer.x25519
                && c.not_after > s.peer.not_after
                && c.verify(&self.authority, unix).is_ok()
        });
        match ok {
            Some(c) => {
                tracing::debug!(peer = %c.username, until = c.not_after, "peer certificate renewed");
                s.expires_at = expiry(now, unix, &c);
                s.peer = c;
                self.stats.certs_renewed += 1;
            }
            None => self.stats.renew_rejected += 1,
        }
    }

    /// Move session `idx` from `old` to `new` after authenticated traffic
    /// arrived from `new`.
    fn roam(&mut self, now: Millis, idx: u32, old: SocketAddr, new: SocketAddr, id: PeerId) {
        if let Some(p) = self.peers.get_mut(&old)
            && p.current == Some(idx)
        {
            p.current = None;
        }
        self.forget_if_empty(old);
        if let Some(slot) = self.slots.get_mut(&idx) {
            slot.addr = new;
            self.sessions_by_source.remove(&SourceKey::of(old.ip()));
            self.sessions_by_source.force_add(SourceKey::of(new.ip()));
        }
        let p = self.peers.entry(new).or_default();
        let displaced = p.current.replace(idx);
        let stale = p.initiator.take();
        p.wanted = false;
        if let Some(i) = stale {
            self.remove_slot(i);
        }
        if let Some(d) = displaced {
            self.remove_slot(d);
            self.stats.sessions_replaced += 1;
            self.push_event(LinkEvent::Closed {
                addr: new,
                reason: CloseReason::Replaced,
            });
        }
        self.stats.roamed += 1;
        self.push_event(LinkEvent::Roamed {
            from: old,
            to: new,
            peer: id,
        });
        self.flush_queue(now, new, idx);
    }

    /// Encrypt and queue one DATA on session `idx`; an unconfirmed
    /// initiator puts its FIN ahead when `fin_ahead`.
    fn send_data(&mut self, now: Millis, idx: u32, payload: &[u8], fin_ahead: bool) {
        self.send_sealed(now, idx, super::packet::KIND_DATA, payload, fin_ahead);
    }

    /// Our certificate over session `idx` (a RENEW).
    fn send_renew(&mut self, now: Millis, idx: u32) {
        let cert = self.cert.encode();
        self.send_sealed(now, idx, super::packet::KIND_RENEW, &cert, false);
    }

    /// DATA or RENEW: `payload` sealed under the session's next counter.
    fn send_sealed(&mut self, now: Millis, idx: u32, kind: u8, payload: &[u8], fin_ahead: bool) {
        let Some(Slot {
            addr,
            state: State::Established(s),
        }) = self.slots.get_mut(&idx)
        else {
            return;
        };
        let addr = *addr;
        if s.next_counter >= MAX_COUNTER {
            self.close_session(idx, CloseReason::Exhausted);
            return;
        }
        let counter = s.next_counter;
        let mut body = Vec::with_capacity(payload.len() + 32);
        body.extend_from_slice(&s.peer_index.to_be_bytes());
        body.extend_from_slice(&counter.to_be_bytes());
        if s.transport
            .encrypt_into(counter, payload, &mut body)
            .is_err()
        {
            return;
        }
        let Ok(frame) = crate::wire::Frame::encode(kind, &body) else {
            return;
        };
        s.next_counter += 1;
        s.last_sent = now;
        let fin = (fin_ahead && !s.confirmed).then(|| s.fin.clone());
        if let Some(fin) = fin {
            self.push_transmit(addr, fin);
        }
        if kind == super::packet::KIND_DATA {
            if payload.is_empty() {
                self.stats.keepalives_out += 1;
            } else {
                self.stats.messages_out += 1;
            }
        }
        self.push_transmit(addr, frame);
    }

    // ---- timers ---------------------------------------------------------

    fn slot_timeout<R: RngCore + CryptoRng>(
        &mut self,
        now: Millis,
        unix: UnixSecs,
        idx: u32,
        rng: &mut R,
    ) {
        let Some(slot) = self.slots.get_mut(&idx) else {
            return;
        };
        let addr = slot.addr;
        match &mut slot.state {
            State::Initiating(init) => {
                if init.sent < self.config.handshake_attempts {
                    init.next_at = now.saturating_add(self.config.retry_delay_ms(init.sent));
                    init.sent += 1;
                    let packet = init.packet.clone();
                    self.push_transmit(addr, packet);
                } else {
                    self.stats.handshake_timeouts += 1;
                    self.abandon_initiation(idx, addr, CloseReason::Timeout);
                }
            }
            State::Responding(_) => {
                self.stats.half_open_expired += 1;
                self.remove_slot(idx);
                let restart = match self.peers.get_mut(&addr) {
                    Some(p) => {
                        if p.responder == Some(idx) {
                            p.responder = None;
                        }
                        p.wanted && p.current.is_none() && p.initiator.is_none()
                    }
                    None => false,
                };
                // We yielded our handshake to theirs and theirs died: try
                // ours again rather than give up on the user's request.
                if restart && self.initiate(now, addr, rng).is_err() {
                    self.stats.handshake_timeouts += 1;
                    self.fail_if_stranded(addr, CloseReason::Timeout);
                }
                self.forget_if_empty(addr);
            }
            State::Established(s) => {
                if unix.get() >= s.peer.not_after {
                    self.close_session(idx, CloseReason::PeerCertificateExpired);
                } else if now >= s.last_recv.saturating_add(self.config.idle_timeout_ms) {
                    self.close_session(idx, CloseReason::Idle);
                } else if !s.confirmed {
                    if now >= s.next_fin_at {
                        if s.fin_sent < self.config.handshake_attempts {
                            s.next_fin_at =
                                now.saturating_add(self.config.retry_delay_ms(s.fin_sent));
                            s.fin_sent += 1;
                            let fin = s.fin.clone();
                            self.push_transmit(addr, fin);
                        } else {
                            self.stats.handshake_timeouts += 1;
                            self.close_session(idx, CloseReason::Timeout);
                        }
                    }
                } else if s.renew_left > 0 && now >= s.next_renew_at {
                    s.renew_left -= 1;
                    s.next_renew_at = now.saturating_add(self.config.keepalive_ms);
                    self.send_renew(now, idx);
                } else if now >= s.last_sent.saturating_add(self.config.keepalive_ms) {
                    self.send_data(now, idx, &[], false);
                }
            }
        }
    }

    fn close_session(&mut self, idx: u32, reason: CloseReason) {
        let Some(slot) = self.remove_slot(idx) else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&slot.addr)
            && p.current == Some(idx)
        {
            p.current = None;
        }
        self.forget_if_empty(slot.addr);
        self.push_event(LinkEvent::Closed {
            addr: slot.addr,
            reason,
        });
    }

    // ---- bookkeeping ----------------------------------------------------

    fn alloc_index<R: RngCore>(&self, rng: &mut R) -> u32 {
        // The slot count is bounded, so a free index is found quickly.
        loop {
            let i = rng.next_u32();
            if !self.slots.contains_key(&i) {
                return i;
            }
        }
    }

    fn insert_slot(&mut self, idx: u32, slot: Slot) {
        match &slot.state {
            State::Established(sess) => {
                self.established += 1;
                self.sessions_by_source
                    .force_add(SourceKey::of(slot.addr.ip()));
                if let Some(user) = account_key(&sess.peer) {
                    self.sessions_by_account.force_add(user);
                }
            }
            State::Initiating(_) => self.initiating += 1,
            State::Responding(_) => {
                self.responding += 1;
                // Checked against the cap by `on_init`; counted regardless.
                let key = SourceKey::of(slot.addr.ip());
                if !self.half_open.try_add(key) {
                    self.half_open.force_add(key);
                }
            }
        }
        if let Some(old) = self.slots.insert(idx, slot) {
            self.uncount(&old);
        }
    }

    fn remove_slot(&mut self, idx: u32) -> Option<Slot> {
        let slot = self.slots.remove(&idx)?;
        self.uncount(&slot);
        Some(slot)
    }

    fn uncount(&mut self, slot: &Slot) {
        match &slot.state {
            State::Established(sess) => {
                self.established -= 1;
                self.sessions_by_source
                    .remove(&SourceKey::of(slot.addr.ip()));
                if let Some(user) = account_key(&sess.peer) {
                    self.sessions_by_account.remove(&user);
                }
            }
            State::Initiating(_) => self.initiating -= 1,
            State::Responding(_) => {
                self.responding -= 1;
                self.half_open.remove(&SourceKey::of(slot.addr.ip()));
            }
        }
    }

    fn forget_if_empty(&mut self, addr: SocketAddr) {
        if self.peers.get(&addr).is_some_and(Peer::is_empty) {
            self.peers.remove(&addr);
        }
    }

    fn push_transmit(&mut self, dst: SocketAddr, bytes: Vec<u8>) {
        if self.transmits.len() >= self.config.max_pending_transmits {
            self.stats.transmits_dropped += 1;
            return;
        }
        self.stats.datagrams_out += 1;
        self.stats.bytes_out += bytes.len() as u64;
        self.transmits.push_back(Transmit { dst, bytes });
    }

    fn push_event(&mut self, event: LinkEvent) {
        if self.events.len() >= self.config.max_pending_events {
            self.stats.events_dropped += 1;
            return;
        }
        self.events.push_back(event);
    }
}

/// The account a session is charged to; supernodes are not charged.
fn account_key(peer: &Certificate) -> Option<String> {
    (peer.role != crate::identity::Role::Supernode).then(|| peer.username.clone())
}

/// The cookie for an INIT from `from` with index `sender` and key
/// `ephemeral`, in time bucket `bucket`.
fn cookie_mac(
    secret: &[u8; 32],
    bucket: u64,
    from: SocketAddr,
    sender: u32,
    ephemeral: &[u8; EPHEMERAL],
) -> [u8; COOKIE] {
    use blake2::digest::{KeyInit, Mac};
    let mut out = [0u8; COOKIE];
    let Ok(mut m) = <blake2::Blake2sMac256 as KeyInit>::new_from_slice(secret) else {
        return out;
    };
    m.update(&bucket.to_be_bytes());
    match from.ip().to_canonical() {
        std::net::IpAddr::V4(a) => m.update(&a.octets()),
        std::net::IpAddr::V6(a) => m.update(&a.octets()),
    }
    m.update(&from.port().to_be_bytes());
    m.update(&sender.to_be_bytes());
    m.update(ephemeral);
    out.copy_from_slice(&m.finalize().into_bytes()[..COOKIE]);
    // All zeros means "no cookie" on the wire.
    if out == [0; COOKIE] {
        out[0] = 1;
    }
    out
}

fn check_ours(device: &DeviceIdentity, cert: &Certificate) -> Result<(), LinkError> {
    if cert.x25519 != device.x25519_public() || cert.ed25519 != device.ed25519_public() {
        return Err(LinkError::NotOurCertificate);
    }
    Ok(())
}

#[cfg(test)]
impl LinkEndpoint {
    /// (established, handshakes in flight, peer entries), for tests.
    pub(super) fn counts(&self) -> (usize, usize, usize) {
        (
            self.established,
            self.initiating + self.responding,
            self.peers.len(),
        )
    }

    /// Present `cert` whatever it certifies: a thief's endpoint.
    pub(super) fn force_certificate(&mut self, cert: Certificate) {
        self.cert = cert;
    }

    /// (local index, peer index) of the current session at `addr`.
    pub(super) fn session_indexes(&self, addr: SocketAddr) -> Option<(u32, u32)> {
        let idx = self.peers.get(&addr)?.current?;
        match &self.slots.get(&idx)?.state {
            State::Established(s) => Some((idx, s.peer_index)),
            _ => None,
        }
    }
}
