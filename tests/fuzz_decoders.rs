//! Bounded fuzzing of every decoder on stable: arbitrary and mutated
//! inputs must give a value or a typed error, never a panic. The same
//! targets run unbounded under cargo-fuzz (see fuzz/).

use natter::authority::client::LoginClient;
use natter::authority::core::{AuthorityCore, Output, Policy, Session};
use natter::authority::proto::{ClientHello, Request, Response, ServerHello};
use natter::config::Config;
use natter::crypto::ChannelHandshake;
use natter::identity::{AuthorityKey, Certificate, DeviceIdentity, Role, Username};
use natter::link::packet::Packet;
use natter::link::{LinkConfig, LinkEndpoint};
use natter::wire::Frame;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::net::SocketAddr;

fn keys() -> (AuthorityKey, DeviceIdentity, Certificate) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let a = AuthorityKey::generate(&mut rng);
    let d = DeviceIdentity::generate(&mut rng);
    let c = Certificate::issue(
        &a,
        7,
        Role::User,
        0,
        u64::MAX / 2,
        &Username::parse("alice").unwrap(),
        d.ed25519_public(),
        d.x25519_public(),
    );
    (a, d, c)
}

const LINK_NOW: u64 = 1_800_000_000_000;

fn link_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Alice (port 1) and Bob (port 2) after `stage` steps of one
/// deterministic link exchange, and every datagram sent so far:
/// 0 fresh, 1 alice sent INIT (a message queued), 2 bob sent RESP,
/// 3 alice sent FIN and the message, 4 bob established and acked,
/// 5 both established.
fn link_stage(stage: usize) -> (LinkEndpoint, LinkEndpoint, Vec<Vec<u8>>) {
    let (a, d, c) = keys();
    let mut rng = StdRng::seed_from_u64(7);
    let bd = DeviceIdentity::generate(&mut rng);
    let bc = Certificate::issue(
        &a,
        8,
        Role::User,
        0,
        u64::MAX / 2,
        &Username::parse("bob").unwrap(),
        bd.ed25519_public(),
        bd.x25519_public(),
    );
    let mut alice = LinkEndpoint::new(d, c, a.public(), LinkConfig::default()).unwrap();
    let mut bob = LinkEndpoint::new(bd, bc, a.public(), LinkConfig::default()).unwrap();
    let mut sent = Vec::new();
    if stage >= 1 {
        alice
            .send(LINK_NOW, link_addr(2), b"queued", &mut rng)
            .unwrap();
    }
    for step in 2..=stage {
        let (from, to, src) = if step % 2 == 0 {
            (&mut alice, &mut bob, link_addr(1))
        } else {
            (&mut bob, &mut alice, link_addr(2))
        };
        while let Some(t) = from.poll_transmit() {
            to.handle_datagram(LINK_NOW, src, &t.bytes, &mut rng);
            sent.push(t.bytes);
        }
    }
    // What the last stage sent but nobody received yet is a seed too.
    for ep in [&mut alice, &mut bob] {
        let pending: Vec<_> = std::iter::from_fn(|| ep.poll_transmit()).collect();
        for t in pending {
            sent.push(t.bytes);
        }
        while ep.poll_event().is_some() {}
    }
    (alice, bob, sent)
}

/// Valid encodings to mutate, so fuzzing reaches past the first checks.
fn seeds() -> Vec<Vec<u8>> {
    let (_, _, c) = keys();
    let mut link = link_stage(5).2;
    link.extend(link_stage(1).2);
    let mut seeds = vec![
        Frame::encode(3, b"payload").unwrap(),
        c.encode(),
        Request::Register {
            username: "alice",
            password: "pw",
        }
        .encode(),
        Request::Login {
            username: "alice",
            password: "pw",
            ed25519: [1; 32],
            proof: [2; 64],
        }
        .encode(),
        Request::Renew {
            cert: &c.encode(),
            proof: [3; 64],
        }
        .encode(),
        Response::Certificate { cert: &c.encode() }.encode(),
        Response::Error {
            code: natter::authority::RejectCode::Throttled,
            retry_after_secs: 5,
            message: "m",
        }
        .encode(),
        ClientHello {
            protocol: 1,
            time_ms: 5,
        }
        .encode(),
    ];
    seeds.extend(link);
    seeds
}

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    (
        0..seeds.len(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        any::<usize>(),
    )
        .prop_map(move |(i, flips, cut)| {
            let mut v = seeds[i].clone();
            for (pos, b) in flips {
                if !v.is_empty() {
                    let n = v.len();
                    v[pos % n] ^= b;
                }
            }
            let keep = cut % (v.len() + 1);
            v.truncate(keep.max(v.len().saturating_sub(cut % 3)));
            v
        })
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..300), mutated()]
}

fn all_decoders(b: &[u8]) {
    if let Ok(f) = Frame::decode(b) {
        assert_eq!(Frame::encode(f.kind, f.payload).unwrap(), b);
    }
    let _ = Frame::decode_prefix(b);
    if let Ok(c) = Certificate::decode(b) {
        assert_eq!(c.encode(), b);
        let _ = c.verify(&[0; 32], 0);
    }
    if let Ok(r) = Request::decode(b) {
        assert_eq!(r.encode(), b);
    }
    if let Ok(r) = Response::decode(b) {
        assert_eq!(r.encode(), b);
    }
    let _ = ClientHello::decode(b);
    let _ = ServerHello::decode(b);
    if let Ok(p) = Packet::decode(b) {
        assert_eq!(p.encode().unwrap(), b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn decoders_never_panic(b in input()) {
        all_decoders(&b);
    }

    #[test]
    fn config_parser_never_panics(s in "\\PC{0,200}") {
        let _ = Config::parse(&s, std::path::Path::new("fuzz.toml"));
    }

    #[test]
    fn config_parser_on_near_valid_toml(key in "[a-z_]{1,12}", val in "\\PC{0,20}") {
        let text = format!("[authority]\n{key} = {val}\n[login]\nserver = \"{val}\"\n");
        let _ = Config::parse(&text, std::path::Path::new("fuzz.toml"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The authority core fed arbitrary frames before and after a real
    /// handshake, and arbitrary sealed requests.
    #[test]
    fn authority_core_never_panics(pre in input(), kind in 0u8..6, sealed in input()) {
        let (a, d, _) = keys();
        let mut core = AuthorityCore::new(a.clone(), Policy::default());
        let now = 1_800_000_000_000;
        let mut s = Session::new([127, 0, 0, 1].into());
        if let Ok(f) = Frame::decode(&pre) {
            let _ = core.on_frame(&mut s, now, f);
        }
        let mut s = Session::new([127, 0, 0, 1].into());
        let _ = core.on_frame(&mut s, now, Frame { kind, payload: &pre });

        let mut s = Session::new([127, 0, 0, 1].into());
        let (mut client, hello) = LoginClient::start(&d, a.public(), now).unwrap();
        let out = core.on_frame(&mut s, now, Frame::decode(&hello).unwrap());
        let Some(Output::Send(welcome)) = out.into_iter().next() else { panic!("no welcome") };
        client.on_frame(now, Frame::decode(&welcome).unwrap()).unwrap();
        let f = client.seal_raw(&sealed).unwrap();
        let _ = core.on_frame(&mut s, now, Frame::decode(&f).unwrap());
        // Garbage ciphertext on the open channel of a fresh session.
        let mut s2 = Session::new([127, 0, 0, 1].into());
        let (_, hello2) = LoginClient::start(&d, a.public(), now + 1).unwrap();
        let _ = core.on_frame(&mut s2, now, Frame::decode(&hello2).unwrap());
        let _ = core.on_frame(&mut s2, now, Frame { kind: 3, payload: &sealed });
    }

    /// The login client fed arbitrary answers.
    #[test]
    fn login_client_never_panics(kind in 0u8..6, b in input()) {
        let (a, d, _) = keys();
        let (mut client, _) = LoginClient::start(&d, a.public(), 0).unwrap();
        let _ = client.on_frame(0, Frame { kind, payload: &b });
    }

    /// Both sides of the certificate handshake fed arbitrary messages.
    #[test]
    fn channel_handshake_never_panics(b in input(), c in input()) {
        let (a, d, cert) = keys();
        let mut r = ChannelHandshake::respond(&d, &cert, a.public()).unwrap();
        let _ = r.read(5, &b);
        let _ = r.read(5, &c);
        let (mut i, _) = ChannelHandshake::initiate(&d, &cert, a.public()).unwrap();
        let _ = i.read(5, &b);
        let _ = i.read(5, &c);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Link endpoints in every state (fresh, mid-handshake on either side,
    /// unconfirmed, established) fed arbitrary and mutated datagrams, from
    /// the peer's address and from a stranger's, then their timers.
    #[test]
    fn link_endpoint_never_panics(
        datagrams in proptest::collection::vec(input(), 1..4),
        stage in 0usize..6,
        from_peer in any::<bool>(),
    ) {
        let (mut alice, mut bob, _) = link_stage(stage);
        let mut rng = StdRng::seed_from_u64(8);
        for (ep, peer) in [(&mut alice, link_addr(2)), (&mut bob, link_addr(1))] {
            let from = if from_peer { peer } else { link_addr(9) };
            for (i, d) in datagrams.iter().enumerate() {
                let before = ep.stats().datagrams_in;
                ep.handle_datagram(LINK_NOW + i as u64, from, d, &mut rng);
                prop_assert_eq!(ep.stats().datagrams_in, before + 1);
            }
            for t in [1_000, 120_000] {
                ep.handle_timeout(LINK_NOW + t, &mut rng);
            }
            while ep.poll_transmit().is_some() {}
            while ep.poll_event().is_some() {}
            let _ = ep.poll_timeout();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Key files with arbitrary contents are errors, never panics.
    #[test]
    fn key_file_reader_never_panics(b in proptest::collection::vec(any::<u8>(), 0..400), text in "\\PC{0,300}") {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for (i, content) in [b.clone(), text.into_bytes()].into_iter().enumerate() {
            let p = dir.path().join(format!("k{i}"));
            std::fs::write(&p, &content).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            prop_assert!(natter::identity::read_device(&p).is_err());
            prop_assert!(AuthorityKey::read(&p).is_err());
        }
    }
}

/// The link fuzz above starts from the states it claims to.
#[test]
fn link_stages_are_what_they_claim() {
    let (a, b, sent) = link_stage(5);
    assert_eq!(a.peer(link_addr(2)).unwrap().username, "bob");
    assert_eq!(b.peer(link_addr(1)).unwrap().username, "alice");
    let kinds: Vec<u8> = sent.iter().map(|d| d[3]).collect();
    assert_eq!(kinds, [16, 17, 18, 19, 19], "INIT RESP FIN DATA ack");
    let (a, b, _) = link_stage(3);
    assert!(a.peer(link_addr(2)).is_none(), "alice is unconfirmed");
    assert!(b.peer(link_addr(1)).is_none(), "bob has not seen FIN");
}
