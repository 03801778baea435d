//! Register, log in, verify, renew without the password, and log in from a
//! second device: over real TCP against a real SQLite file.

use crate::common::authority;

use natter::clock::Clock;

#[tokio::test]
async fn register_login_renew_second_device() {
    let _turn = scenario!();
    let auth = authority::start(authority::policy()).await;
    let laptop = authority::device();

    let mut c = auth.connect(&laptop).await;
    assert_eq!(c.register("Alice", "correct horse").await.unwrap(), "alice");

    let cert = c.login("alice", "correct horse").await.unwrap();
    let now = auth.clock.unix_secs();
    cert.verify(&auth.public(), now).unwrap();
    assert_eq!(cert.username, "alice");
    assert_eq!(cert.ed25519, laptop.ed25519_public());
    assert_eq!(cert.x25519, laptop.x25519_public());
    assert_eq!(cert.role, natter::identity::Role::User);
    let lifetime = cert.not_after - now.get();
    assert!(
        (24 * 3600 - 5..=24 * 3600).contains(&lifetime),
        "{lifetime}"
    );

    // Renewal: a new connection, the device key only.
    auth.clock.advance_secs(3600);
    let mut c2 = auth.connect(&laptop).await;
    let renewed = c2.renew(&cert).await.unwrap();
    renewed
        .verify(&auth.public(), auth.clock.unix_secs())
        .unwrap();
    assert!(renewed.not_after > cert.not_after);
    assert_ne!(renewed.serial, cert.serial);

    // A second device of alice's logs in with the password.
    let phone = authority::device();
    let mut c3 = auth.connect(&phone).await;
    let phone_cert = c3.login("ALICE", "correct horse").await.unwrap();
    assert_eq!(phone_cert.username, "alice");
    assert_eq!(phone_cert.x25519, phone.x25519_public());
    phone_cert
        .verify(&auth.public(), auth.clock.unix_secs())
        .unwrap();
    // Both devices' certificates stay valid side by side.
    cert.verify(&auth.public(), auth.clock.unix_secs()).unwrap();

    let s = auth.handle.stats();
    assert_eq!((s.registrations, s.logins, s.renewals), (1, 2, 1));
    assert_eq!(s.wrong_password + s.unknown_user + s.malformed, 0);
    auth.stop().await;
}

#[tokio::test]
async fn renewal_needs_no_password_hashing() {
    let _turn = scenario!();
    // Renewal runs no argon2: a thousand renewals must not need a thousand
    // password checks. Checked structurally: the store sees no login.
    let auth = authority::start(authority::policy()).await;
    let d = authority::device();
    let mut c = auth.connect(&d).await;
    c.register("bob", "hunter2hunter2").await.unwrap();
    let cert = c.login("bob", "hunter2hunter2").await.unwrap();
    let before = auth
        .handle
        .store()
        .account(&"bob".parse().unwrap())
        .unwrap()
        .unwrap()
        .last_login;
    auth.clock.advance_secs(10);
    let mut c = auth.connect(&d).await;
    c.renew(&cert).await.unwrap();
    let after = auth
        .handle
        .store()
        .account(&"bob".parse().unwrap())
        .unwrap()
        .unwrap()
        .last_login;
    assert_eq!(
        before, after,
        "renewal must not go through the password path"
    );
    auth.stop().await;
}

#[tokio::test]
async fn supernode_role_is_issued_to_marked_accounts() {
    let _turn = scenario!();
    let auth = authority::start(authority::policy()).await;
    let d = authority::device();
    let mut c = auth.connect(&d).await;
    c.register("sn1", "supernode-pass").await.unwrap();
    auth.handle
        .store()
        .set_role(&"sn1".parse().unwrap(), natter::identity::Role::Supernode)
        .unwrap();
    let cert = c.login("sn1", "supernode-pass").await.unwrap();
    assert_eq!(cert.role, natter::identity::Role::Supernode);
    auth.stop().await;
}
