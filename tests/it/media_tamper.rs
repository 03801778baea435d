//! Attacks on a running call over real loopback UDP: packets tampered with
//! in flight (by the proxy, a man in the middle), replays of the caller's
//! packets, and packets sealed under another key are all dropped and
//! counted, and the tone still arrives at its frequency.

use crate::common::media::*;
use natter::media::audio::DeviceSpec;
use natter::media::impair::ImpairConfig;
use natter::media::packet::{Kind, Sealer};
use natter::media::{MediaConfig, MediaKeys, Side};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_are_dropped_and_the_call_goes_on() {
    let _turn = scenario!();
    let (tap_tx, mut tap) = mpsc::unbounded_channel();
    let c = call(
        DeviceSpec::Tone { hz: 800.0 },
        ImpairConfig {
            corrupt_every: 15,
            ..Default::default()
        },
        MediaConfig::default(),
        Some(tap_tx),
    )
    .await;
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Fresh counters, so only the key gives these away.
    let mut wrong = Sealer::starting_at(
        &MediaKeys::derive(&[9u8; 32], Side::Caller).send,
        0xA,
        1 << 20,
    );
    let (mut replayed, mut forged) = (0u64, 0u64);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(3_000);
    let mut i = 0u64;
    while let Ok(Some(p)) = tokio::time::timeout_at(deadline, tap.recv()).await {
        i += 1;
        match i % 20 {
            10 => {
                // Give the original a moment to land first.
                tokio::time::sleep(Duration::from_millis(5)).await;
                attacker.send_to(&p, c.b_addr).await.unwrap();
                replayed += 1;
            }
            15 => {
                let f = wrong
                    .seal(Kind::Audio, false, 1000 + i as u16, 0, &p[20..p.len() - 16])
                    .unwrap();
                attacker.send_to(&f, c.b_addr).await.unwrap();
                forged += 1;
            }
            _ => {}
        }
    }
    // Let the last attack packets land.
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.a.stop().await.unwrap();
    let sb = c.b.stop().await.unwrap();
    let tampered = c.impair.log.lock().unwrap().corrupted;
    assert!(tampered >= 5 && replayed >= 5 && forged >= 5);
    assert_eq!(sb.auth_failed, tampered + forged, "{sb:?}");
    assert_eq!(sb.replayed, replayed, "{sb:?}");
    // Each tampered packet's frame is lost (and concealed or recovered).
    assert!(sb.frames_lost <= tampered, "{sb:?}");
    let s = heard(&c.recording);
    let steady = &s[9_600..9_600 + 72_000];
    // Lost frames were concealed, so measure the spectral peak rather
    // than zero crossings.
    let hz = dominant_hz(steady, 700, 900);
    assert!(hz.abs_diff(800) <= 2, "heard {hz} Hz");
    assert!(goertzel_share(steady, 800.0) > 0.7);
}
