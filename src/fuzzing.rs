//! Fuzz entry points, shared by the cargo-fuzz targets in `fuzz/` and the
//! bounded proptest run in `tests/fuzz_decoders.rs`. Each takes arbitrary
//! bytes and must return without panicking; decoders that accept an input
//! must re-encode it to the same bytes.

use crate::authority::client::LoginClient;
use crate::authority::core::{AuthorityCore, Output, Policy, Session};
use crate::authority::proto::{ClientHello, Request, Response, ServerHello};
use crate::crypto::ChannelHandshake;
use crate::identity::{AuthorityKey, Certificate, DeviceIdentity, Role, Username};
use crate::wire::Frame;
use rand::SeedableRng;

/// Fixed keys, so that a crashing input reproduces.
pub fn keys() -> (AuthorityKey, DeviceIdentity, Certificate) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let a = AuthorityKey::generate(&mut rng);
    let d = DeviceIdentity::generate(&mut rng);
    let user = Username::parse("alice").unwrap_or_else(|_| unreachable!());
    let c = Certificate::issue(
        &a,
        7,
        Role::User,
        0,
        u64::MAX / 2,
        &user,
        d.ed25519_public(),
        d.x25519_public(),
    );
    (a, d, c)
}

/// Valid encodings, as seeds for mutation.
pub fn seeds() -> Vec<Vec<u8>> {
    let (_, _, c) = keys();
    let cert = c.encode();
    let mut v = vec![
        cert.clone(),
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
            cert: &cert,
            proof: [3; 64],
        }
        .encode(),
        Response::Registered { username: "alice" }.encode(),
        Response::Certificate { cert: &cert }.encode(),
        Response::Error {
            code: crate::authority::RejectCode::Throttled,
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
    v.extend(Frame::encode(3, b"payload"));
    v
}

/// Every plain decoder.
pub fn decoders(b: &[u8]) {
    if let Ok(f) = Frame::decode(b) {
        assert_eq!(Frame::encode(f.kind, f.payload).ok().as_deref(), Some(b));
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

/// The authority core: arbitrary frames before a handshake, and arbitrary
/// requests sealed in a real channel (so they reach the request decoder).
pub fn authority_core(b: &[u8]) {
    let (a, d, _) = keys();
    let mut core = AuthorityCore::new(a.clone(), Policy::default());
    let now = 1_800_000_000_000;
    let kind = b.first().copied().unwrap_or(0) % 6;
    let body = b.get(1..).unwrap_or_default();
    let mut s = Session::new([127, 0, 0, 1].into());
    let _ = core.on_frame(
        &mut s,
        now,
        Frame {
            kind,
            payload: body,
        },
    );

    let mut s = Session::new([127, 0, 0, 1].into());
    let Ok((mut client, hello)) = LoginClient::start(&d, a.public(), now) else {
        return;
    };
    let Ok(hello) = Frame::decode(&hello) else {
        return;
    };
    let out = core.on_frame(&mut s, now, hello);
    let Some(Output::Send(welcome)) = out.into_iter().next() else {
        return;
    };
    let Ok(welcome) = Frame::decode(&welcome) else {
        return;
    };
    if client.on_frame(now, welcome).is_err() {
        return;
    }
    if let Ok(f) = client.seal_raw(body)
        && let Ok(f) = Frame::decode(&f)
    {
        let _ = core.on_frame(&mut s, now, f);
    }
    // Unsealed garbage on an open channel.
    let _ = core.on_frame(
        &mut s,
        now,
        Frame {
            kind: 3,
            payload: body,
        },
    );
}

/// The login client fed an arbitrary answer to its hello.
pub fn login_client(b: &[u8]) {
    let (a, d, _) = keys();
    let Ok((mut client, _)) = LoginClient::start(&d, a.public(), 0) else {
        return;
    };
    let kind = b.first().copied().unwrap_or(0) % 6;
    let _ = client.on_frame(
        0,
        Frame {
            kind,
            payload: b.get(1..).unwrap_or_default(),
        },
    );
}

/// Both sides of the certificate handshake fed arbitrary messages.
pub fn channel_handshake(b: &[u8]) {
    let (a, d, cert) = keys();
    let (x, y) = b.split_at(b.len() / 2);
    if let Ok(mut r) = ChannelHandshake::respond(&d, &cert, a.public()) {
        let _ = r.read(5, x);
        let _ = r.read(5, y);
    }
    if let Ok((mut i, _)) = ChannelHandshake::initiate(&d, &cert, a.public()) {
        let _ = i.read(5, x);
        let _ = i.read(5, y);
    }
}

/// The config parser on arbitrary text.
pub fn config(b: &[u8]) {
    if let Ok(s) = std::str::from_utf8(b) {
        let _ = crate::config::Config::parse(s, std::path::Path::new("fuzz.toml"));
    }
}
