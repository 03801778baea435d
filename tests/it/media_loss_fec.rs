//! Speech over real loopback UDP through a proxy that drops 10% of the
//! datagrams (seeded): the receiver counts exactly the audio frames the
//! proxy dropped, reports the loss back (the sender's FEC plans for it),
//! and FEC recovers lost frames from the packets after them.

use crate::common::media::*;
use natter::media::MediaConfig;
use natter::media::audio::DeviceSpec;
use natter::media::impair::ImpairConfig;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_is_counted_and_fec_recovers() {
    let _turn = scenario!();
    let speech = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/speech.wav");
    let c = call(
        DeviceSpec::File(speech.into()),
        ImpairConfig {
            loss: 0.10,
            seed: 42,
            ..Default::default()
        },
        MediaConfig::default(),
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(6_000)).await;
    let sa = c.a.stop().await.unwrap();
    let sb = c.b.stop().await.unwrap();
    let log = c.impair.log.lock().unwrap().clone();

    // The receiver's loss count is exactly the proxy's drops between the
    // first and the highest frame it received.
    let dropped = &log.dropped_audio[0];
    let first = (0u16..).find(|s| !dropped.contains(s)).unwrap();
    let highest = first as u64 + sb.frames_expected - 1;
    let expected_lost = dropped
        .iter()
        .filter(|&&s| (first as u64..=highest).contains(&(s as u64)))
        .count() as u64;
    assert!(sb.frames_expected > 250, "{sb:?}");
    assert_eq!(sb.frames_lost, expected_lost, "{sb:?}");
    let pct = sb.loss_percent();
    assert!((4.0..=16.0).contains(&pct), "loss {pct}%");

    // The sender heard about it through receiver reports.
    assert!(sa.reports >= 4, "{sa:?}");
    assert!(sa.remote_loss_percent > 0.0, "{sa:?}");
    assert!(sa.encoder_loss_percent >= 5, "{sa:?}");

    // Lost frames with a later packet were rebuilt by FEC (LBRR) or, once
    // the reported loss reaches 10 %, by DRED; the rest concealed. Every
    // lost frame was one of these.
    let jb = &sb.jitter_buffer;
    let rebuilt = jb.fec_recovered + jb.dred_recovered;
    assert!(rebuilt > 5 && rebuilt > jb.concealed, "{jb:?}");
    assert!(
        rebuilt + jb.concealed >= expected_lost.saturating_sub(2),
        "{jb:?} lost {expected_lost}"
    );
    assert_eq!((sb.auth_failed, sb.replayed), (0, 0));
}
