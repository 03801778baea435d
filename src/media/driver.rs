//! The thin tokio driver of a [`MediaSession`]: every 5 ms it moves
//! captured audio from the device ring through the microphone path's
//! [`Processor`] (fed with what the output really played, from the
//! reference ring) into the session (which encodes it), tops the playback
//! ring up to a small lead from the session (which decodes), runs the
//! session's timers, and moves datagrams between the session and its
//! transport. Codec and processing work happen here, never on the audio
//! thread.
//!
//! The transport is a pair of channels, so the same driver serves a
//! socket of its own ([`udp_transport`]) or the node's one socket, where
//! the node hands over what [`crate::wire::stun::classify`] files as media
//! and sends go out on the path ICE chose (direct or through a TURN
//! relay).
//!
//! With `[media.impair]` (benchmarks) the driver impairs its own sending:
//! datagrams are dropped or held to their due time (at tick resolution).

use super::audio::{AudioError, AudioIo};
use super::impair::WireImpairment;
use super::processing::Processor;
use super::session::{MediaEvent, MediaSession, MediaStats};
use crate::clock::Clock;
use crate::time::Millis;
use crate::wire::stun::{Datagram, classify};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Driver tick.
const TICK: Duration = Duration::from_millis(5);
/// Decoded audio kept queued for the device ahead of its reads, samples
/// (15 ms): covers the device's 10 ms reads plus a tick of scheduling.
pub const PLAYBACK_LEAD: usize = 720;

/// Datagrams to and from the peer.
#[derive(Debug)]
pub struct MediaTransport {
    pub outgoing: mpsc::Sender<Vec<u8>>,
    pub incoming: mpsc::Receiver<Vec<u8>>,
}

/// A transport over a UDP socket of its own, talking to `peer`: a task
/// receives (media datagrams only, from anyone: authenticity is the
/// session's job) and one sends.
pub fn udp_transport(socket: Arc<UdpSocket>, peer: SocketAddr) -> (MediaTransport, JoinHandle<()>) {
    let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(1024);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(1024);
    let rx_sock = socket.clone();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            tokio::select! {
                // Errors (ICMP port unreachable on Linux) are skipped.
                r = rx_sock.recv_from(&mut buf) => if let Ok((n, _)) = r
                    && classify(&buf[..n]) == Datagram::Media
                    && in_tx.try_send(buf[..n].to_vec()).is_err()
                    && in_tx.is_closed()
                {
                    break;
                },
                d = out_rx.recv() => match d {
                    Some(d) => { let _ = socket.send_to(&d, peer).await; }
                    None => break,
                },
            }
        }
    });
    (
        MediaTransport {
            outgoing: out_tx,
            incoming: in_rx,
        },
        task,
    )
}

#[derive(Debug)]
pub enum MediaCommand {
    Mute(bool),
    Hold(bool),
    /// End the media; the driver returns its final stats.
    Stop,
    /// End the media but keep its audio devices open: they go to the
    /// sender (the leg that took the call over, [`spawn_after`]); the
    /// driver returns its final stats.
    Handover(tokio::sync::oneshot::Sender<AudioIo>),
}

/// Datagrams held back by [`WireImpairment`], released at their due
/// time (to the driver's tick).
#[derive(Debug, Default)]
struct Held {
    /// (due, arrival order, datagram), earliest first.
    queue: std::collections::BinaryHeap<std::cmp::Reverse<(Millis, u64, Vec<u8>)>>,
    /// Arrival counter: equal due times keep their order.
    serial: u64,
}

impl Held {
    fn new() -> Self {
        Held::default()
    }

    fn hold(&mut self, due: Millis, d: Vec<u8>) {
        self.serial += 1;
        self.queue.push(std::cmp::Reverse((due, self.serial, d)));
    }

    fn due(&mut self, now: Millis) -> Option<Vec<u8>> {
        if self.queue.peek().is_some_and(|p| p.0.0 <= now) {
            self.queue.pop().map(|p| p.0.2)
        } else {
            None
        }
    }
}

/// A running media driver.
#[derive(Debug)]
pub struct MediaHandle {
    pub commands: mpsc::Sender<MediaCommand>,
    pub events: mpsc::Receiver<MediaEvent>,
    pub task: JoinHandle<Result<MediaStats, AudioError>>,
}

impl MediaHandle {
    /// Stop and wait for the final stats (the audio devices are closed,
    /// recordings finalised).
    pub async fn stop(self) -> Result<MediaStats, AudioError> {
        let _ = self.commands.send(MediaCommand::Stop).await;
        self.task.await.map_err(|_| AudioError::Thread)?
    }
}

/// Run `session` with `audio` over `transport` until stopped or the
/// transport closes.
pub fn spawn(
    session: MediaSession,
    audio: AudioIo,
    transport: MediaTransport,
    clock: Arc<dyn Clock>,
) -> MediaHandle {
    spawn_after(session, async { Ok(audio) }, transport, clock)
}

/// [`spawn`], with the audio devices once `audio` has them (handed over
/// by another media driver, [`MediaCommand::Handover`]).
pub fn spawn_after(
    session: MediaSession,
    audio: impl std::future::Future<Output = Result<AudioIo, AudioError>> + Send + 'static,
    transport: MediaTransport,
    clock: Arc<dyn Clock>,
) -> MediaHandle {
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let (ev_tx, ev_rx) = mpsc::channel(256);
    let span = tracing::info_span!("media", ssrc = session.ssrc());
    let task = tokio::spawn(tracing::Instrument::instrument(
        async move {
            let audio = audio.await?;
            run(session, audio, transport, clock, cmd_rx, ev_tx).await
        },
        span,
    ));
    MediaHandle {
        commands: cmd_tx,
        events: ev_rx,
        task,
    }
}

async fn run(
    mut session: MediaSession,
    mut audio: AudioIo,
    mut transport: MediaTransport,
    clock: Arc<dyn Clock>,
    mut commands: mpsc::Receiver<MediaCommand>,
    events: mpsc::Sender<MediaEvent>,
) -> Result<MediaStats, AudioError> {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cap = vec![0i16; super::audio::RING_SAMPLES];
    let mut play = vec![0i16; super::audio::RING_SAMPLES];
    let mut reference = vec![0i16; super::audio::RING_SAMPLES];
    let stages = session.config().processing.stages(audio.input_sound_card);
    let mut processor = stages.any().then(|| Processor::new(stages));
    tracing::info!(?stages, "microphone processing");
    // Drop whatever the device captured (and played) before the call.
    while audio.capture.pop().is_ok() {}
    while audio.reference.pop().is_ok() {}
    let mut dropped_out = 0u64;
    let mut handover = None;
    let mut impair = session
        .config()
        .impair
        .map(|c| (WireImpairment::new(c), Held::new()));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = clock.now();
                // The far end as played first: its echo is in the capture.
                let r = drain(&mut audio.reference, &mut reference);
                let n = drain(&mut audio.capture, &mut cap);
                match processor.as_mut() {
                    Some(p) => {
                        p.push_reference(&reference[..r]);
                        let out = p.process_capture(&cap[..n]);
                        if !out.is_empty() {
                            session.push_capture(now, out);
                        }
                    }
                    None if n > 0 => session.push_capture(now, &cap[..n]),
                    None => {}
                }
                let queued = super::audio::RING_SAMPLES - audio.playback.slots();
                if queued < PLAYBACK_LEAD {
                    let want = PLAYBACK_LEAD - queued;
                    session.pull_playback(now, &mut play[..want]);
                    if let Ok(mut chunk) = audio.playback.write_chunk(want) {
                        let (a, b) = chunk.as_mut_slices();
                        let la = a.len();
                        a.copy_from_slice(&play[..la]);
                        b.copy_from_slice(&play[la..want]);
                        chunk.commit_all();
                    }
                }
                if session.poll_timeout().is_some_and(|t| t <= now) {
                    session.handle_timeout(now);
                }
                if let Some((_, held)) = impair.as_mut() {
                    while let Some(p) = held.due(now) {
                        if transport.outgoing.try_send(p).is_err() {
                            dropped_out += 1;
                        }
                    }
                }
            }
            d = transport.incoming.recv() => match d {
                Some(d) => session.handle_datagram(clock.now(), &d),
                None => break,
            },
            c = commands.recv() => match c {
                Some(MediaCommand::Mute(m)) => session.set_muted(m),
                Some(MediaCommand::Hold(h)) => session.set_hold(h),
                Some(MediaCommand::Stop) | None => break,
                Some(MediaCommand::Handover(to)) => {
                    handover = Some(to);
                    break;
                }
            },
        }
        while let Some(p) = session.poll_transmit() {
            let p = match impair.as_mut() {
                Some((wire, held)) => match wire.decide() {
                    None => continue,
                    Some(0) => p,
                    Some(ms) => {
                        held.hold(clock.now() + ms, p);
                        continue;
                    }
                },
                None => p,
            };
            if transport.outgoing.try_send(p).is_err() {
                dropped_out += 1;
            }
        }
        while let Some(mut e) = session.poll_event() {
            if let (MediaEvent::Stats(s), Some(p)) = (&mut e, &processor) {
                s.processing = p.stats();
            }
            // A slow consumer loses stats events, never audio.
            let _ = events.try_send(e);
        }
    }
    if dropped_out > 0 {
        tracing::warn!(dropped_out, "media transport was full");
    }
    let mut stats = session.stats();
    if let Some(p) = &processor {
        stats.processing = p.stats();
    }
    match handover {
        // The other driver gone: the devices close here.
        Some(to) => {
            if let Err(audio) = to.send(audio) {
                audio.close()?;
            }
        }
        None => audio.close()?,
    }
    Ok(stats)
}

/// Move everything in `ring` into `buf` (a ring's capacity); returns how
/// many samples.
fn drain(ring: &mut rtrb::Consumer<i16>, buf: &mut [i16]) -> usize {
    let n = ring.slots();
    if n > 0
        && let Ok(chunk) = ring.read_chunk(n)
    {
        let (a, b) = chunk.as_slices();
        buf[..a.len()].copy_from_slice(a);
        buf[a.len()..a.len() + b.len()].copy_from_slice(b);
        chunk.commit_all();
    }
    n
}
