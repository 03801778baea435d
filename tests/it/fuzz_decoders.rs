//! Bounded fuzzing of every decoder on stable: arbitrary and mutated
//! inputs must give a value or a typed error, never a panic. The same entry
//! points (`natter::fuzzing`) run unbounded under cargo-fuzz in `fuzz/`.

use natter::fuzzing;
use proptest::prelude::*;

/// Arbitrary bytes, or a valid encoding with bytes flipped and cut, so
/// that fuzzing reaches past the first checks.
fn input() -> impl Strategy<Value = Vec<u8>> {
    let seeds = fuzzing::seeds();
    let mutated = (
        0..seeds.len(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        0usize..8,
    )
        .prop_map(move |(i, flips, cut)| {
            let mut v = seeds[i].clone();
            for (pos, b) in flips {
                if !v.is_empty() {
                    let n = v.len();
                    v[pos % n] ^= b;
                }
            }
            v.truncate(v.len().saturating_sub(cut));
            v
        });
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..300), mutated]
}

/// A kind byte in front of an input, for targets that take frames.
fn framed() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), input()).prop_map(|(k, mut v)| {
        v.insert(0, k);
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn decoders_never_panic(b in input()) {
        let _turn = scenario!();
        fuzzing::decoders(&b);
    }

    #[test]
    fn config_parser_never_panics(s in "\\PC{0,200}") {
        let _turn = scenario!();
        fuzzing::config(s.as_bytes());
    }

    #[test]
    fn config_parser_on_near_valid_toml(key in "[a-z_]{1,12}", val in "\\PC{0,20}") {
        let _turn = scenario!();
        let text = format!("[authority]\n{key} = {val}\n[login]\nserver = \"{val}\"\n");
        fuzzing::config(text.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn authority_core_never_panics(b in framed()) {
        let _turn = scenario!();
        fuzzing::authority_core(&b);
    }

    #[test]
    fn login_client_never_panics(b in framed()) {
        let _turn = scenario!();
        fuzzing::login_client(&b);
    }

    #[test]
    fn channel_handshake_never_panics(b in input()) {
        let _turn = scenario!();
        fuzzing::channel_handshake(&b);
    }

    #[test]
    fn link_endpoint_never_panics(b in framed()) {
        let _turn = scenario!();
        fuzzing::link_endpoint(&b);
    }

    #[test]
    fn overlay_cores_never_panic(b in input()) {
        let _turn = scenario!();
        fuzzing::overlay_cores(&b);
    }

    #[test]
    fn media_and_call_never_panic(b in input()) {
        let _turn = scenario!();
        fuzzing::media(&b);
    }

    #[test]
    fn relay_decoders_never_panic(b in input()) {
        let _turn = scenario!();
        fuzzing::relay_decoders(&b);
    }

    #[test]
    fn turn_cores_never_panic(b in input()) {
        let _turn = scenario!();
        fuzzing::turn_cores(&b);
    }

    #[test]
    fn envelope_decoder_never_panics(b in input()) {
        let _turn = scenario!();
        fuzzing::envelope(&b);
    }

    #[test]
    fn transfer_decoders_never_panic(b in input()) {
        let _turn = scenario!();
        fuzzing::transfer(&b);
    }

    #[test]
    fn group_decoders_never_panic(b in input()) {
        let _turn = scenario!();
        fuzzing::group(&b);
    }

    #[test]
    fn conference_decoder_never_panics(b in input()) {
        let _turn = scenario!();
        fuzzing::conference(&b);
    }

    #[test]
    fn tcp_stream_decoders_never_panic(b in input()) {
        let _turn = scenario!();
        fuzzing::tcp_streams(&b);
    }
}

/// The envelope seed opens, so mutations of it test the checks past the
/// decoder.
#[test]
fn envelope_seed_opens() {
    let _turn = scenario!();
    let (a, d, _) = fuzzing::keys();
    let e = natter::overlay::envelope::open(
        &fuzzing::envelope_seed(),
        &d,
        "alice",
        &a.public(),
        natter::time::UnixMillis(fuzzing::LINK_NOW),
    )
    .unwrap();
    assert_eq!(e.payload, b"hello");
}

/// The TURN fuzz starts from an allocation with a channel in place.
#[test]
fn turn_pair_is_allocated() {
    let _turn = scenario!();
    let (s, c, sent) = fuzzing::turn_pair();
    assert!(c.is_allocated());
    assert_eq!(s.allocation_count(), 1);
    assert!(c.channel_of(fuzzing::link_addr(9)).is_some());
    // ChannelData to :9 and a Send indication to :10 (same IP, so permitted).
    assert_eq!(s.stats().to_peer_packets, 2);
    assert!(sent.len() >= 8);
}

/// The link fuzz starts from the states it claims to.
#[test]
fn link_stages_are_what_they_claim() {
    let _turn = scenario!();
    use fuzzing::{link_addr, link_stage};
    let (a, b, sent) = link_stage(5);
    assert_eq!(a.peer(link_addr(2)).unwrap().username, "bob");
    assert_eq!(b.peer(link_addr(1)).unwrap().username, "alice");
    let kinds: Vec<u8> = sent.iter().map(|d| d[3]).collect();
    assert_eq!(kinds, [16, 17, 18, 19, 19], "INIT RESP FIN DATA ack");
    let (a, b, _) = link_stage(3);
    assert!(a.peer(link_addr(2)).is_none(), "alice is unconfirmed");
    assert!(b.peer(link_addr(1)).is_none(), "bob has not seen FIN");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Key files with arbitrary contents are errors, never panics.
    #[test]
    fn key_file_reader_never_panics(b in proptest::collection::vec(any::<u8>(), 0..400), text in "\\PC{0,300}") {
        let _turn = scenario!();
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for (i, content) in [b.clone(), text.into_bytes()].into_iter().enumerate() {
            let p = dir.path().join(format!("k{i}"));
            std::fs::write(&p, &content).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            prop_assert!(natter::identity::read_device(&p).is_err());
            prop_assert!(natter::identity::AuthorityKey::read(&p).is_err());
        }
    }
}

/// STUN datagrams: arbitrary bytes, and valid messages with bytes flipped
/// and cut, through every STUN decoder and both NAT cores.
fn stun_input() -> impl Strategy<Value = Vec<u8>> {
    let seeds = fuzzing::stun_seeds();
    let mutated = (
        0..seeds.len(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        0usize..8,
    )
        .prop_map(move |(i, flips, cut)| {
            let mut v = seeds[i].clone();
            for (pos, b) in flips {
                // Keep the header mostly intact so decoding goes deep.
                let n = v.len();
                let pos = 20 + pos % n.saturating_sub(20).max(1);
                if pos < n {
                    v[pos] ^= b;
                }
            }
            v.truncate(v.len().saturating_sub(cut));
            v
        });
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..300), mutated]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn stun_never_panics(b in stun_input()) {
        let _turn = scenario!();
        fuzzing::stun(&b);
    }
}

/// The STUN seeds are what the fuzz starts from: each parses.
#[test]
fn stun_seeds_decode() {
    let _turn = scenario!();
    for s in fuzzing::stun_seeds() {
        assert!(natter::nat::stun::decode(&s).is_ok());
    }
    assert_eq!(fuzzing::stun_seeds().len(), 5);
}

/// ICE offers and connectivity checks, arbitrary or mutated from valid
/// ones (the check seeds keep their header so decoding goes deep).
fn ice_input() -> impl Strategy<Value = Vec<u8>> {
    let seeds = fuzzing::ice_seeds();
    let mutated = (
        0..seeds.len(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        0usize..8,
    )
        .prop_map(move |(i, flips, cut)| {
            let mut v = seeds[i].clone();
            for (pos, b) in flips {
                let n = v.len();
                if n > 0 {
                    v[pos % n] ^= b;
                }
            }
            v.truncate(v.len().saturating_sub(cut));
            v
        });
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        mutated.clone(),
        mutated
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn ice_never_panics(b in ice_input()) {
        let _turn = scenario!();
        fuzzing::ice(&b);
    }
}

/// The ICE seeds are valid: the offers decode and the fuzz agent takes
/// the checks (so mutations start from messages that reach its logic).
#[test]
fn ice_seeds_are_valid() {
    let _turn = scenario!();
    let seeds = fuzzing::ice_seeds();
    assert_eq!(seeds.len(), 5);
    assert!(natter::ice::IceOffer::decode(&seeds[0]).is_ok());
    for s in &seeds[2..] {
        assert!(natter::ice::check::peek(s).is_some());
    }
}
