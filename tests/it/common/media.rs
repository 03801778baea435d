//! Helpers for the media tests: two media sessions on real loopback UDP
//! with an impairment proxy between them, and signal measurements.

use natter::clock::SystemClock;
use natter::media::audio::{self, DeviceSpec};
use natter::media::driver::{self, MediaHandle};
use natter::media::impair::{Impair, ImpairConfig};
use natter::media::{MediaConfig, MediaKeys, MediaSession, Side};
use natter::time::Millis;
use rand::RngCore;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

pub struct Call {
    pub a: MediaHandle,
    pub b: MediaHandle,
    pub impair: Impair,
    pub b_addr: SocketAddr,
    pub recording: std::path::PathBuf,
    /// Holds the recording until this is dropped.
    _dir: tempfile::TempDir,
}

/// A (caller) sends `input` to B (callee), which records to a WAV file;
/// B sends silence back. Both directions go through the proxy.
pub async fn call(
    input: DeviceSpec,
    impair: ImpairConfig,
    config: MediaConfig,
    tap: Option<mpsc::UnboundedSender<Vec<u8>>>,
) -> Call {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("b.wav");
    let sa = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let sb = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let (aa, ba) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
    let impair = Impair::start(aa, ba, impair, tap).await.unwrap();
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let sess_a = MediaSession::new(
        config.clone(),
        &MediaKeys::derive(&secret, Side::Caller),
        0xA,
        Millis::ZERO,
    )
    .unwrap();
    let sess_b = MediaSession::new(
        config,
        &MediaKeys::derive(&secret, Side::Callee),
        0xB,
        Millis::ZERO,
    )
    .unwrap();
    let io_a = audio::open(&input, &DeviceSpec::Null).unwrap();
    let io_b = audio::open(&DeviceSpec::Null, &DeviceSpec::File(recording.clone())).unwrap();
    let (ta, _) = driver::udp_transport(sa, impair.addr);
    let (tb, _) = driver::udp_transport(sb, impair.addr);
    let a = driver::spawn(sess_a, io_a, ta, Arc::new(SystemClock));
    let b = driver::spawn(sess_b, io_b, tb, Arc::new(SystemClock));
    Call {
        a,
        b,
        impair,
        b_addr: ba,
        recording,
        _dir: dir,
    }
}

/// Frequency of a steady tone from its rising zero crossings.
pub fn zero_crossing_hz(s: &[i16]) -> f64 {
    let c = s.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
    c as f64 * 48_000.0 / s.len() as f64
}

/// Power of `hz` in `s` (Goertzel), normalised by the signal's total
/// power: near 1 for a clean tone at `hz`.
pub fn goertzel_share(s: &[i16], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / 48_000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in s {
        let s0 = x as f64 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let p = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let total: f64 = s.iter().map(|&x| (x as f64) * (x as f64)).sum();
    // A pure sinusoid over N samples gives p = total * N / 2.
    p / (total * s.len() as f64 / 2.0)
}

/// The recording's samples from the first non-silent one on.
pub fn heard(path: &std::path::Path) -> Vec<i16> {
    let s = audio::read_wav(path).unwrap();
    let start = s
        .iter()
        .position(|&x| x.unsigned_abs() > 500)
        .unwrap_or(s.len());
    s[start..].to_vec()
}

/// The frequency in `lo..=hi` (1 Hz steps) carrying the most power.
pub fn dominant_hz(s: &[i16], lo: u32, hi: u32) -> u32 {
    (lo..=hi)
        .max_by(|&x, &y| goertzel_share(s, x as f64).total_cmp(&goertzel_share(s, y as f64)))
        .unwrap_or(0)
}

/// Lengths in ms of the alternating sound and silence runs of `s`, in
/// 10 ms blocks, from its first sound: a block is sound when a sample
/// reaches `threshold`.
pub fn sound_runs(s: &[i16], threshold: u16) -> Vec<usize> {
    let loud: Vec<bool> = s
        .chunks(480)
        .map(|c| c.iter().any(|x| x.unsigned_abs() >= threshold))
        .skip_while(|l| !l)
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < loud.len() {
        let j = (i..loud.len())
            .find(|&j| loud[j] != loud[i])
            .unwrap_or(loud.len());
        out.push((j - i) * 10);
        i = j;
    }
    out
}
