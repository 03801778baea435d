//! A call with a 1 kHz tone between two media sessions over real loopback
//! UDP: the far end hears 1 kHz, with nothing lost and RTT measured.

use crate::common::media::*;
use natter::media::MediaConfig;
use natter::media::audio::DeviceSpec;
use natter::media::impair::ImpairConfig;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tone_arrives_at_its_frequency() {
    let _turn = scenario!();
    let c = call(
        DeviceSpec::Tone { hz: 1000.0 },
        ImpairConfig::default(),
        MediaConfig::default(),
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let sa = c.a.stop().await.unwrap();
    let sb = c.b.stop().await.unwrap();
    let s = heard(&c.recording);
    assert!(s.len() >= 48_000 * 2, "heard {} samples", s.len());
    // Skip the first 200 ms (codec start-up), measure 1.5 s.
    let steady = &s[9_600..9_600 + 72_000];
    let hz = zero_crossing_hz(steady);
    assert!((hz - 1000.0).abs() < 5.0, "heard {hz} Hz");
    let share = goertzel_share(steady, 1000.0);
    assert!(share > 0.9, "1 kHz carries {share} of the power");
    assert!(goertzel_share(steady, 1500.0) < 0.01);
    assert_eq!(dominant_hz(steady, 900, 1100), 1000);
    assert!(sb.frames_expected > 100, "{sb:?}");
    assert_eq!(
        (sb.frames_lost, sb.auth_failed, sb.replayed),
        (0, 0, 0),
        "{sb:?}"
    );
    // Loopback has no loss; a scheduling hiccup on a loaded machine may
    // still make a frame miss its slot.
    assert!(sb.jitter_buffer.concealed <= 3, "{sb:?}");
    assert!(sa.rtt_ms.is_some_and(|r| r < 50), "{sa:?}");
}
