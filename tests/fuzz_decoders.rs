//! Bounded fuzzing of every decoder on stable: arbitrary and mutated
//! inputs must give a value or a typed error, never a panic. The same
//! targets run unbounded under cargo-fuzz (see fuzz/).

use natter::authority::client::LoginClient;
use natter::authority::core::{AuthorityCore, Output, Policy, Session};
use natter::authority::proto::{ClientHello, Request, Response, ServerHello};
use natter::config::Config;
use natter::crypto::ChannelHandshake;
use natter::identity::{AuthorityKey, Certificate, DeviceIdentity, Role, Username};
use natter::wire::Frame;
use proptest::prelude::*;
use rand::SeedableRng;

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

/// Valid encodings to mutate, so fuzzing reaches past the first checks.
fn seeds() -> Vec<Vec<u8>> {
    let (_, _, c) = keys();
    vec![
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
    ]
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
