//! The adaptive jitter buffer: holds received frames until their playout
//! time, and decides per playout slot what to play (the frame, an FEC
//! recovery from the next packet, or concealment).
//!
//! How it sizes itself, in the receiver's clock:
//! - Each arriving frame `k` gives `r = arrival - k * frame_ms`. Its
//!   *base* is the running minimum of `r`, allowed to creep up by
//!   [`JitterConfig::drift_per_s`] so it follows a sender whose clock is
//!   slower than ours (and a faster one pulls it down at once). `d = r -
//!   base` is the frame's network jitter, free of clock drift.
//! - The *target* is a high quantile of `d` over the last
//!   [`JitterConfig::window_ms`], plus a small margin: one burst raises it
//!   at once, and it shrinks again when the burst leaves the window.
//! - At each playout slot the *delay* is `now - (next * frame_ms + base)`:
//!   how much later than a zero-jitter frame we play. A missing frame
//!   while the delay is under the target is waited for (concealment
//!   without advancing: the buffer stretches); once over it, it is lost
//!   (FEC from the next packet if there, else concealment).
//! - The delay of played frames, smoothed, minus the target is the
//!   [`excess`](JitterBuffer::excess_ms): the playout side
//!   ([`super::tsm`]) shortens or lengthens the decoded audio by pitch
//!   periods (freely in pauses) to bring it to zero, and reports what it
//!   did with [`shifted`](JitterBuffer::shifted). No frame is dropped to
//!   lower the delay.
//! - After a loss the target grows, for a window, by as many frames as
//!   the longest run of losses seen (at most [`JitterConfig::max_loss_headroom_ms`]),
//!   so the packet after a lost run has usually arrived when the lost
//!   frames' slots come: FEC recovers a frame from its successor, DRED
//!   from any later packet up to a second on.
//!
//! Together these absorb clock drift: a faster sender piles frames up and
//! the audio is shortened; a slower one runs the buffer short and it is
//! lengthened (or, when a frame is missing, stretched by concealment), so
//! the delay never grows through a long call.

use crate::time::Millis;
use std::collections::{BTreeMap, VecDeque};

#[derive(Debug, Clone, PartialEq)]
pub struct JitterConfig {
    /// Lowest target delay, ms.
    pub min_ms: f64,
    /// Highest target delay, ms: later frames are lost.
    pub max_ms: f64,
    /// How long jitter measurements are remembered.
    pub window_ms: u64,
    /// Share of frames the target must cover (0-1).
    pub quantile: f64,
    /// Added to the quantile, ms.
    pub margin_ms: f64,
    /// How fast the base may rise (sender clock slower than ours), in ms
    /// per second: the largest clock skew absorbed without loss.
    pub drift_per_s: f64,
    /// Weight of each played frame's delay in the smoothed delay (0-1).
    pub smoothing: f64,
    /// Most delay added after losses so that a run of lost frames can be
    /// rebuilt from the packet after it, ms.
    pub max_loss_headroom_ms: f64,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            min_ms: 0.0,
            max_ms: 400.0,
            window_ms: 8_000,
            quantile: 0.995,
            margin_ms: 3.0,
            drift_per_s: 3.0,
            smoothing: 0.05,
            max_loss_headroom_ms: 100.0,
        }
    }
}

/// What to play in one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Nothing received yet: silence.
    Silence,
    /// Decode this frame.
    Frame(Vec<u8>),
    /// The frame is lost; recover it from the FEC data of the next one
    /// (which stays queued and is played next).
    Recover(Vec<u8>),
    /// The frame and the next are lost; rebuild it from the DRED data of
    /// a later packet, `back` frames after it (which stays queued).
    Dred { later: Vec<u8>, back: u64 },
    /// Lost with nothing to recover from, or waited for: conceal.
    Conceal,
}

/// Counters, for stats events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JitterStats {
    pub played: u64,
    pub fec_recovered: u64,
    /// Lost frames rebuilt from a later packet's DRED data (counted by
    /// the decoding side).
    pub dred_recovered: u64,
    pub concealed: u64,
    /// Concealment slots inserted while waiting for a late frame.
    pub stretched: u64,
    /// Audio removed (accelerate) and added (expand) by time-scale
    /// modification to follow the target, ms.
    pub accelerated_ms: f64,
    pub expanded_ms: f64,
    /// Frames that arrived after their slot.
    pub late: u64,
    /// Frames dropped because the buffer was full.
    pub overflow: u64,
    /// Current target and delay, ms.
    pub target_ms: f64,
    pub delay_ms: f64,
}

#[derive(Debug)]
pub struct JitterBuffer {
    config: JitterConfig,
    frame_ms: f64,
    frames: BTreeMap<u64, Vec<u8>>,
    /// Next frame to play; `None` before the first frame.
    next: Option<u64>,
    base: Option<f64>,
    last_arrival: Millis,
    /// (arrival, d) of recent frames.
    history: VecDeque<(Millis, f64)>,
    target: f64,
    /// Until when the target carries loss headroom, and how many frames.
    fec_headroom_until: Millis,
    headroom_frames: u64,
    /// Frames lost in a row so far.
    lost_run: u64,
    /// Delay of played frames, smoothed (ms); `None` before the first.
    smoothed: Option<f64>,
    stats: JitterStats,
}

impl JitterBuffer {
    pub fn new(config: JitterConfig, frame_ms: f64) -> Self {
        let target = config.min_ms.max(frame_ms).min(config.max_ms);
        JitterBuffer {
            config,
            frame_ms: frame_ms.max(1.0),
            frames: BTreeMap::new(),
            next: None,
            base: None,
            last_arrival: Millis::ZERO,
            history: VecDeque::new(),
            target,
            fec_headroom_until: Millis::ZERO,
            headroom_frames: 0,
            lost_run: 0,
            smoothed: None,
            stats: JitterStats {
                target_ms: target,
                ..Default::default()
            },
        }
    }

    pub fn stats(&self) -> &JitterStats {
        &self.stats
    }

    pub fn frame_ms(&self) -> f64 {
        self.frame_ms
    }

    /// The target from measured jitter (without FEC headroom).
    pub fn target_ms(&self) -> f64 {
        self.target
    }

    fn effective_target(&self, now: Millis) -> f64 {
        let headroom = if now < self.fec_headroom_until {
            (self.headroom_frames as f64 * self.frame_ms).min(self.config.max_loss_headroom_ms)
        } else {
            0.0
        };
        (self.target + headroom).min(self.config.max_ms)
    }

    fn capacity(&self) -> u64 {
        ((self.config.max_ms / self.frame_ms).ceil() as u64).max(4) * 2
    }

    /// Forget everything (after a hold, or a new stream).
    pub fn reset(&mut self) {
        self.frames.clear();
        self.next = None;
        self.base = None;
        self.history.clear();
        self.smoothed = None;
    }

    /// Smoothed delay minus the target, ms: positive when the audio
    /// should be shortened, negative when lengthened.
    pub fn excess_ms(&self) -> f64 {
        self.smoothed
            .map_or(0.0, |d| d - self.stats.target_ms.max(self.config.min_ms))
    }

    /// The playout side shortened (negative) or lengthened the audio by
    /// `ms`: later frames will play that much earlier or later.
    pub fn shifted(&mut self, ms: f64) {
        if let Some(d) = self.smoothed.as_mut() {
            *d += ms;
        }
        if ms < 0.0 {
            self.stats.accelerated_ms -= ms;
        } else {
            self.stats.expanded_ms += ms;
        }
    }

    /// A frame with extended sequence number `k` arrived at `now`.
    pub fn push(&mut self, now: Millis, k: u64, frame_ms: f64, payload: Vec<u8>) {
        if frame_ms >= 1.0 && (frame_ms - self.frame_ms).abs() > 0.01 {
            // The sender changed its frame size: restart the timeline.
            self.frame_ms = frame_ms;
            self.reset();
        }
        let r = now.get() as f64 - k as f64 * self.frame_ms;
        let base = match self.base {
            None => r,
            Some(b) => {
                let crept =
                    b + now.since(self.last_arrival) as f64 * self.config.drift_per_s / 1000.0;
                r.min(crept)
            }
        };
        self.base = Some(base);
        self.last_arrival = now;
        self.history.push_back((now, r - base));
        while self
            .history
            .front()
            .is_some_and(|&(t, _)| t + self.config.window_ms < now)
        {
            self.history.pop_front();
        }
        self.update_target();
        if let Some(next) = self.next {
            if k < next {
                self.stats.late += 1;
                return;
            }
            if k >= next + self.capacity() {
                // Far ahead (the sender paused, or we fell far behind):
                // start over from here.
                self.stats.overflow += self.frames.len() as u64;
                self.frames.clear();
                self.next = None;
            }
        }
        if self.frames.len() as u64 >= self.capacity() {
            self.stats.overflow += 1;
            return;
        }
        self.frames.insert(k, payload);
    }

    fn update_target(&mut self) {
        let mut d: Vec<f64> = self.history.iter().map(|&(_, d)| d).collect();
        if d.is_empty() {
            return;
        }
        let i = ((d.len() - 1) as f64 * self.config.quantile).round() as usize;
        let (_, q, _) = d.select_nth_unstable_by(i, |a, b| a.total_cmp(b));
        self.target = (*q + self.config.margin_ms)
            .max(self.config.min_ms)
            .min(self.config.max_ms);
    }

    fn delay(&self, now: Millis, next: u64) -> f64 {
        let now = now.get() as f64;
        now - (next as f64 * self.frame_ms + self.base.unwrap_or(now))
    }

    /// What to play in the slot that starts at `now`.
    pub fn pop(&mut self, now: Millis) -> Playout {
        let target = self.effective_target(now);
        self.stats.target_ms = target;
        let next = match self.next {
            Some(n) => n,
            None => {
                let Some((&first, _)) = self.frames.first_key_value() else {
                    return Playout::Silence;
                };
                // Start once the first frame has waited out the target.
                if self.delay(now, first) < target {
                    return Playout::Silence;
                }
                self.next = Some(first);
                first
            }
        };
        let delay = self.delay(now, next);
        self.stats.delay_ms = delay;
        if let Some(p) = self.frames.remove(&next) {
            let a = self.config.smoothing.clamp(0.01, 1.0);
            self.smoothed = Some(self.smoothed.map_or(delay, |d| d + a * (delay - d)));
            self.next = Some(next + 1);
            self.lost_run = 0;
            self.stats.played += 1;
            return Playout::Frame(p);
        }
        if delay < target && delay < self.config.max_ms {
            // Probably late, not lost: wait one slot for it.
            self.next = Some(next);
            self.stats.stretched += 1;
            return Playout::Conceal;
        }
        self.next = Some(next + 1);
        self.lost_run += 1;
        if now >= self.fec_headroom_until {
            self.headroom_frames = 0;
        }
        self.headroom_frames = self.headroom_frames.max(self.lost_run);
        self.fec_headroom_until = now + self.config.window_ms;
        if let Some(p) = self.frames.get(&(next + 1)) {
            self.stats.fec_recovered += 1;
            return Playout::Recover(p.clone());
        }
        // DRED reaches about a second back.
        let reach = (1000.0 / self.frame_ms) as u64;
        if let Some((&k, p)) = self.frames.range(next + 2..=next + reach).next() {
            self.stats.concealed += 1;
            return Playout::Dred {
                later: p.clone(),
                back: k - next,
            };
        }
        self.stats.concealed += 1;
        Playout::Conceal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Sender frames every `20 / (1 + skew)` ms of our clock, with
    /// uniform jitter; we pop every 20 ms, less or more when the playout
    /// side follows the excess (as time-scale modification would in
    /// pauses: up to 10 ms a frame once it passes +8 or -4 ms). Returns
    /// (delays of played frames over time, stats).
    fn run(
        secs: u64,
        skew: f64,
        jitter_ms: f64,
        loss: f64,
        seed: u64,
    ) -> (Vec<(u64, f64)>, JitterStats) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut jb = JitterBuffer::new(JitterConfig::default(), 20.0);
        // One second more than we play, so the stream never runs dry.
        let frames = (secs + 1) * 50;
        let mut arrivals: Vec<(u64, u64)> = Vec::new();
        for k in 0..frames {
            let sent = k as f64 * 20.0 / (1.0 + skew);
            let a = sent + 40.0 + rng.gen_range(0.0..=jitter_ms);
            if !rng.gen_bool(loss) {
                arrivals.push((a as u64, k));
            }
        }
        arrivals.sort();
        let mut out = Vec::new();
        let mut i = 0;
        let mut t = 5;
        let mut carry = 0.0;
        while t < secs * 1000 {
            while i < arrivals.len() && arrivals[i].0 <= t {
                let k = arrivals[i].1;
                jb.push(Millis(arrivals[i].0), k, 20.0, k.to_be_bytes().to_vec());
                i += 1;
            }
            if let Playout::Frame(p) = jb.pop(Millis(t)) {
                let k = u64::from_be_bytes(p.try_into().unwrap());
                let sent = k as f64 * 20.0 / (1.0 + skew);
                out.push((t, t as f64 - sent));
                let e = jb.excess_ms();
                if !(-4.0..=8.0).contains(&e) {
                    let shift = (-e).clamp(-10.0, 10.0);
                    jb.shifted(shift);
                    carry += shift;
                }
            }
            let step = 20.0 + carry;
            carry = step - step.round();
            t += step.round().max(1.0) as u64;
        }
        (out, jb.stats().clone())
    }

    fn mean_between(v: &[(u64, f64)], from: u64, to: u64) -> f64 {
        let s: Vec<f64> = v
            .iter()
            .filter(|(t, _)| (from..to).contains(t))
            .map(|x| x.1)
            .collect();
        s.iter().sum::<f64>() / s.len() as f64
    }

    #[test]
    fn steady_network_plays_every_frame_with_little_delay() {
        let (v, s) = run(20, 0.0, 0.0, 0.0, 1);
        assert!(v.len() >= 990, "{}", v.len());
        assert_eq!((s.concealed, s.fec_recovered, s.late), (0, 0, 0));
        // 40 ms network + at most a frame and the margin.
        let d = mean_between(&v, 2_000, 20_000);
        assert!(d < 40.0 + 20.0 + 3.0, "{d}");
    }

    #[test]
    fn jitter_is_absorbed_and_lost_frames_recovered() {
        let (v, s) = run(60, 0.0, 30.0, 0.05, 2);
        let d = mean_between(&v, 10_000, 60_000);
        // Network, jitter, loss headroom (runs of two frames happen at 5 %
        // loss), the adjustment band.
        assert!(d < 40.0 + 30.0 + 40.0 + 25.0, "delay {d}");
        assert!(s.fec_recovered > 100, "{s:?}");
        assert!(s.concealed < s.fec_recovered / 4, "{s:?}");
        // Few frames arrive too late for their slot.
        assert!(s.late < 30, "{s:?}");
    }

    #[test]
    fn target_shrinks_when_the_network_calms() {
        let mut jb = JitterBuffer::new(JitterConfig::default(), 20.0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for k in 0..500u64 {
            jb.push(Millis(k * 20 + rng.gen_range(0..80)), k, 20.0, vec![]);
        }
        let high = jb.target_ms();
        assert!(high > 60.0, "{high}");
        for k in 500..1500u64 {
            jb.push(Millis(k * 20 + 1), k, 20.0, vec![]);
        }
        assert!(jb.target_ms() < 10.0, "{}", jb.target_ms());
    }

    #[test]
    fn clock_drift_either_way_keeps_the_delay_flat() {
        for skew in [0.001, -0.001] {
            let (v, s) = run(300, skew, 10.0, 0.0, 4);
            let early = mean_between(&v, 5_000, 15_000);
            let late = mean_between(&v, 290_000, 300_000);
            assert!(late <= early + 5.0, "skew {skew}: {early} -> {late} {s:?}");
            assert!(s.concealed + s.stretched < 20, "skew {skew}: {s:?}");
            // 0.1 % of 300 s is 300 ms to take out or put in.
            let moved = s.accelerated_ms + s.expanded_ms;
            assert!((200.0..2_000.0).contains(&moved), "skew {skew}: {s:?}");
        }
    }
}
