//! A playout delay change cannot be heard: a continuous 440 Hz tone goes
//! from one media session core to another in virtual time; the network
//! jitters up to 80 ms for the first 2 s, then is calm, so once the jitter
//! window forgets the start the jitter buffer's target falls and the
//! playout delay follows it down, in the middle of the tone (no pause to
//! hide in). The change must leave no discontinuity: the largest
//! sample-to-sample step of what B plays stays within the tone's own.

use natter::media::audio::Tone;
use natter::media::{MediaConfig, MediaKeys, MediaSession, Side};
use natter::time::Millis;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BinaryHeap;

const CALL_MS: u64 = 16_000;

fn max_step(s: &[i16]) -> i32 {
    s.windows(2)
        .map(|w| (w[1] as i32 - w[0] as i32).abs())
        .max()
        .unwrap_or(0)
}

#[test]
fn a_delay_change_leaves_no_discontinuity_in_a_tone() {
    let _turn = scenario!();
    let secret = [9u8; 32];
    let config = MediaConfig::default();
    let mut a = MediaSession::new(
        config.clone(),
        &MediaKeys::derive(&secret, Side::Caller),
        1,
        Millis::ZERO,
    )
    .unwrap();
    let mut b = MediaSession::new(
        config,
        &MediaKeys::derive(&secret, Side::Callee),
        2,
        Millis::ZERO,
    )
    .unwrap();
    let amplitude = 0.3;
    let mut tone = Tone::new(440.0, amplitude);
    let mut rng = StdRng::seed_from_u64(12);
    // (arrival ms, serial, datagram), earliest first.
    let mut net: BinaryHeap<std::cmp::Reverse<(u64, u64, Vec<u8>)>> = BinaryHeap::new();
    let mut serial = 0;
    let mut played = Vec::new();
    let mut chunk = [0i16; 480];
    let mut delays = Vec::new();
    let mut at3 = None;
    for t in 0..CALL_MS {
        while net.peek().is_some_and(|p| p.0.0 <= t) {
            let std::cmp::Reverse((_, _, d)) = net.pop().unwrap();
            b.handle_datagram(Millis(t), &d);
        }
        if t % 10 == 0 {
            tone.fill(&mut chunk);
            a.push_capture(Millis(t), &chunk);
            b.pull_playback(Millis(t), &mut chunk);
            played.extend_from_slice(&chunk);
            if t % 1000 == 0 {
                delays.push(b.stats().jitter_buffer.delay_ms);
            }
            if t == 3_000 {
                at3 = Some(b.stats().jitter_buffer);
            }
        }
        for s in [&mut a, &mut b] {
            if s.poll_timeout().is_some_and(|d| d <= Millis(t)) {
                s.handle_timeout(Millis(t));
            }
            while s.poll_event().is_some() {}
        }
        while let Some(d) = a.poll_transmit() {
            let jitter = if t < 2_000 { rng.gen_range(0..=80) } else { 0 };
            serial += 1;
            net.push(std::cmp::Reverse((t + 20 + jitter, serial, d)));
        }
        while b.poll_transmit().is_some() {}
    }
    let jb = b.stats().jitter_buffer;
    eprintln!("delay by second: {delays:?}; {jb:?}");
    // The delay did change, by time-scale modification alone.
    let (before, after) = (delays[8], delays[15]);
    assert!(
        before - after >= 20.0,
        "delay {before} ms at 8 s, {after} ms at 15 s"
    );
    assert!(jb.accelerated_ms >= 20.0, "{jb:?}");
    // Nothing concealed or late once the network calmed.
    let at3 = at3.unwrap();
    assert_eq!(
        (jb.concealed, jb.late, jb.stretched),
        (at3.concealed, at3.late, at3.stretched),
        "{jb:?}"
    );
    // A 440 Hz sine of this amplitude moves at most 2 pi f A / fs per
    // sample; Opus' coding noise adds a little (measured on the steady
    // seconds before the change), never a jump.
    let own = (std::f64::consts::TAU * 440.0 / 48_000.0 * amplitude as f64 * 32767.0) as i32;
    let steady = max_step(&played[3 * 48_000..8 * 48_000]);
    assert!(
        steady <= own + own / 5,
        "steady tone steps {steady}, own {own}"
    );
    let changed = max_step(&played[8 * 48_000..]);
    assert!(
        changed <= steady + steady / 20,
        "largest step {changed} after the change, {steady} before (tone's own {own})"
    );
}
