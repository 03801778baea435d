//! Every way a login can be refused: each with its own error, each counted.

use crate::common::authority;

use natter::authority::RejectCode;
use natter::authority::client::LoginClient;
use natter::authority::proto::{KIND_REJECT, KIND_WELCOME, Response};
use natter::clock::Clock;
use natter::identity::{AuthorityKey, Certificate, Role, Username};
use natter::node::LoginError;
use natter::wire::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn code(r: Result<impl std::fmt::Debug, LoginError>) -> (RejectCode, String) {
    let e = r.unwrap_err();
    (
        e.reject_code()
            .unwrap_or_else(|| panic!("not a refusal: {e}")),
        e.to_string(),
    )
}

async fn with_alice() -> (
    authority::TestAuthority,
    natter::identity::DeviceIdentity,
    Certificate,
) {
    let auth = authority::start(authority::policy()).await;
    let d = authority::device();
    let mut c = auth.connect(&d).await;
    c.register("alice", "correct horse").await.unwrap();
    let cert = c.login("alice", "correct horse").await.unwrap();
    (auth, d, cert)
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_alike_but_are_counted_apart() {
    let _turn = scenario!();
    let (auth, d, _) = with_alice().await;
    let mut c = auth.connect(&d).await;
    let (c1, m1) = code(c.login("alice", "wrong horse").await);
    let (c2, m2) = code(c.login("mallory", "wrong horse").await);
    let (c3, m3) = code(c.login("no such name!", "wrong horse").await);
    assert_eq!(
        (c1, c2, c3),
        (
            RejectCode::InvalidCredentials,
            RejectCode::InvalidCredentials,
            RejectCode::InvalidCredentials
        )
    );
    assert_eq!(m1, "invalid username or password");
    assert_eq!((m1.as_str(), m1.as_str()), (m2.as_str(), m3.as_str()));
    let s = auth.handle.stats();
    assert_eq!(s.wrong_password, 1);
    assert_eq!(s.unknown_user, 2);
    auth.stop().await;
}

#[tokio::test]
async fn expired_certificate_cannot_be_renewed() {
    let _turn = scenario!();
    let (auth, d, cert) = with_alice().await;
    auth.clock.advance_secs(25 * 3600);
    let mut c = auth.connect(&d).await;
    let (rc, msg) = code(c.renew(&cert).await);
    assert_eq!(rc, RejectCode::CertExpired);
    assert!(msg.contains("expired") && msg.contains("password"), "{msg}");
    assert_eq!(auth.handle.stats().cert_expired, 1);
    // The password still works.
    let mut c = auth.connect(&d).await;
    c.login("alice", "correct horse").await.unwrap();
    auth.stop().await;
}

#[tokio::test]
async fn certificate_from_another_authority_is_refused() {
    let _turn = scenario!();
    let (auth, d, _) = with_alice().await;
    let rogue = AuthorityKey::generate(&mut rand::rngs::OsRng);
    let now = auth.clock.unix_secs().get();
    let forged = Certificate::issue(
        &rogue,
        1,
        Role::Supernode,
        now - 10,
        now + 3600,
        &Username::parse("alice").unwrap(),
        d.ed25519_public(),
        d.x25519_public(),
    );
    let mut c = auth.connect(&d).await;
    let (rc, msg) = code(c.renew(&forged).await);
    assert_eq!(rc, RejectCode::CertUnknownIssuer);
    assert!(msg.contains("unknown authority"), "{msg}");
    assert_eq!(auth.handle.stats().cert_unknown_issuer, 1);
    auth.stop().await;
}

#[tokio::test]
async fn tampered_certificate_is_refused() {
    let _turn = scenario!();
    let (auth, d, cert) = with_alice().await;
    let mut promoted = cert.clone();
    promoted.role = Role::Supernode;
    let mut c = auth.connect(&d).await;
    let (rc, msg) = code(c.renew(&promoted).await);
    assert_eq!(rc, RejectCode::CertBadSignature);
    assert!(msg.contains("altered"), "{msg}");

    let mut longer = cert.clone();
    longer.not_after += 365 * 24 * 3600;
    let (rc, _) = code(c.renew(&longer).await);
    assert_eq!(rc, RejectCode::CertBadSignature);
    assert_eq!(auth.handle.stats().cert_bad_signature, 2);
    auth.stop().await;
}

#[tokio::test]
async fn certificate_of_another_device_is_refused() {
    let _turn = scenario!();
    let (auth, _, cert) = with_alice().await;
    // Mallory has alice's certificate but not her device key.
    let mallory = authority::device();
    let mut c = auth.connect(&mallory).await;
    let (rc, _) = code(c.renew(&cert).await);
    assert_eq!(rc, RejectCode::CertKeyMismatch);
    assert_eq!(auth.handle.stats().cert_key_mismatch, 1);
    assert_eq!(auth.handle.stats().renewals, 0);
    auth.stop().await;
}

async fn read_frame(s: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    let mut buf = Vec::new();
    loop {
        if let Some((f, _)) = Frame::decode_prefix(&buf).unwrap() {
            return (f.kind, f.payload.to_vec());
        }
        let mut chunk = [0u8; 1024];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a frame");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn replayed_handshake_is_refused() {
    let _turn = scenario!();
    let auth = authority::start(authority::policy()).await;
    let d = authority::device();
    let (_, hello) = LoginClient::start(&d, auth.public(), auth.clock.unix()).unwrap();
    let addr = auth.handle.local_addr;

    let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
    first.write_all(&hello).await.unwrap();
    assert_eq!(read_frame(&mut first).await.0, KIND_WELCOME);

    // An eavesdropper sends the same first message again.
    let mut replay = tokio::net::TcpStream::connect(addr).await.unwrap();
    replay.write_all(&hello).await.unwrap();
    let (kind, payload) = read_frame(&mut replay).await;
    assert_eq!(kind, KIND_REJECT);
    match Response::decode(&payload).unwrap() {
        Response::Error { code, message, .. } => {
            assert_eq!(code, RejectCode::Replayed);
            assert_eq!(message, "handshake replayed");
        }
        r => panic!("expected a refusal, got {r:?}"),
    }
    assert_eq!(auth.handle.stats().replayed_handshakes, 1);

    // Replayed after the replay window, it is refused for its age.
    auth.clock.advance_secs(600);
    let mut late = tokio::net::TcpStream::connect(addr).await.unwrap();
    late.write_all(&hello).await.unwrap();
    let (kind, payload) = read_frame(&mut late).await;
    assert_eq!(kind, KIND_REJECT);
    assert!(matches!(
        Response::decode(&payload).unwrap(),
        Response::Error {
            code: RejectCode::ClockSkew,
            ..
        }
    ));
    assert_eq!(auth.handle.stats().clock_skew, 1);
    auth.stop().await;
}

#[tokio::test]
async fn wrong_pinned_key_fails_the_handshake() {
    let _turn = scenario!();
    let auth = authority::start(authority::policy()).await;
    let other = AuthorityKey::generate(&mut rand::rngs::OsRng);
    let d = authority::device();
    let r = natter::node::AuthorityConnection::connect(
        &auth.server,
        other.public(),
        &d,
        auth.clock.clone(),
    )
    .await;
    let e = match r {
        Ok(_) => panic!("handshake with the wrong key succeeded"),
        Err(e) => e,
    };
    assert!(e.to_string().contains("authority key pinned"), "{e}");
    assert_eq!(auth.handle.stats().bad_handshakes, 1);
    auth.stop().await;
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account_and_address() {
    let _turn = scenario!();
    let (auth, d, _) = with_alice().await;
    // A stranger's device guesses.
    let x = authority::device();
    let mut c = auth.connect(&x).await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(code(c.login("alice", "guess guess").await).0);
        // Each connection serves a bounded number of requests.
        c = auth.connect(&x).await;
    }
    assert_eq!(&codes[..5], &[RejectCode::InvalidCredentials; 5]);
    assert_eq!(codes[5], RejectCode::Throttled);
    // A new device is locked out even with the right password, with a
    // clear message.
    let e = c.login("alice", "correct horse").await.unwrap_err();
    assert_eq!(e.reject_code(), Some(RejectCode::Throttled));
    assert!(
        e.to_string()
            .contains("too many failed logins; try again in"),
        "{e}"
    );
    // The owner's device, which logged in before, is not.
    let mut c = auth.connect(&d).await;
    c.login("alice", "correct horse").await.unwrap();
    // After the lockout the right password works again.
    auth.clock.advance_secs(120);
    let mut c = auth.connect(&x).await;
    c.login("alice", "correct horse").await.unwrap();

    // Per address: guesses across many accounts lock the address.
    for i in 0..30 {
        let mut c = auth.connect(&d).await;
        let _ = c.login(&format!("user{i}"), "guess guess").await;
    }
    let mut c = auth.connect(&d).await;
    let e = c.login("alice", "correct horse").await.unwrap_err();
    assert_eq!(e.reject_code(), Some(RejectCode::Throttled));
    assert!(auth.handle.stats().throttled >= 2);
    auth.stop().await;
}

#[tokio::test]
async fn registration_errors_are_specific() {
    let _turn = scenario!();
    let mut p = authority::policy();
    p.throttle.registrations_per_hour = 3;
    let auth = authority::start(p).await;
    let d = authority::device();
    let mut c = auth.connect(&d).await;
    c.register("alice", "correct horse").await.unwrap();
    let (rc, msg) = code(c.register("ALICE", "correct horse").await);
    assert_eq!(
        (rc, msg.as_str()),
        (RejectCode::UsernameTaken, "username alice is taken")
    );
    let (rc, msg) = code(c.register("al", "correct horse").await);
    assert_eq!(rc, RejectCode::InvalidUsername);
    assert!(msg.contains("3 to 32"), "{msg}");
    let (rc, _) = code(c.register("bob", "short").await);
    assert_eq!(rc, RejectCode::WeakPassword);
    c.register("bob", "long enough").await.unwrap();
    let mut c = auth.connect(&d).await;
    let (rc, msg) = code(c.register("carol", "long enough").await);
    assert_eq!(rc, RejectCode::Throttled);
    assert!(msg.contains("too many registrations"), "{msg}");

    let mut closed = authority::policy();
    closed.open_registration = false;
    let auth2 = authority::start(closed).await;
    let mut c = auth2.connect(&d).await;
    assert_eq!(
        code(c.register("dave", "long enough").await).0,
        RejectCode::RegistrationClosed
    );
    auth.stop().await;
    auth2.stop().await;
}
