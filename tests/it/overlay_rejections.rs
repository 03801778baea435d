//! Forged, replayed, stale and expired records, and a supernode without a
//! supernode certificate: each refused by the supernode core and counted.

use natter::identity::{AuthorityKey, Certificate, DeviceIdentity, Role, Username};
use natter::overlay::msg::{MemberState, Msg, Update};
use natter::overlay::{PresenceRecord, RecordContent, Status, SupernodeConfig, SupernodeCore};
use natter::sim::EPOCH_MS;
use natter::time::{Millis, UnixMillis, UnixSecs};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::net::SocketAddr;

struct World {
    rng: StdRng,
    authority: AuthorityKey,
    sn: SupernodeCore,
    sn_cert: Certificate,
}

fn cert(
    w: &mut StdRng,
    a: &AuthorityKey,
    name: &str,
    role: Role,
    from: u64,
    until: u64,
) -> (DeviceIdentity, Certificate) {
    let d = DeviceIdentity::generate(w);
    let c = Certificate::issue(
        a,
        1,
        role,
        from,
        until,
        &Username::parse(name).unwrap(),
        d.ed25519_public(),
        d.x25519_public(),
    );
    (d, c)
}

fn addr(p: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], p))
}

fn world() -> World {
    let mut rng = StdRng::seed_from_u64(42);
    let authority = AuthorityKey::generate(&mut rng);
    let now = EPOCH_MS / 1000;
    let (_, sn_cert) = cert(
        &mut rng,
        &authority,
        "sn1",
        Role::Supernode,
        now - 10,
        now + 86400,
    );
    let sn = SupernodeCore::new(
        authority.public(),
        &sn_cert,
        addr(7000),
        vec![],
        SupernodeConfig::default(),
        1,
        Millis(EPOCH_MS),
    );
    World {
        rng,
        authority,
        sn,
        sn_cert,
    }
}

fn record(
    d: &DeviceIdentity,
    c: &Certificate,
    seq: u64,
    at_ms: u64,
    status: Status,
) -> PresenceRecord {
    PresenceRecord::sign(
        d,
        c,
        RecordContent {
            seq,
            signed_at_ms: at_ms,
            online_secs: 300,
            status,
            message: String::new(),
            supernodes: vec![addr(7000)],
            candidates: vec![],
        },
    )
}

/// What the supernode answers to a query for `user`, from another supernode.
fn query(w: &mut World, user: &str) -> Option<PresenceRecord> {
    let (_, other) = cert(
        &mut w.rng,
        &w.authority,
        "sn2",
        Role::Supernode,
        EPOCH_MS / 1000 - 10,
        EPOCH_MS / 1000 + 86400,
    );
    w.sn.handle_message(
        Millis(EPOCH_MS),
        UnixMillis(EPOCH_MS),
        addr(7001),
        &other,
        &Msg::Query {
            qid: 1,
            username: user,
        }
        .encode(),
        &mut w.rng,
    );
    let out: Vec<_> = w.sn.drain_transmits().collect();
    out.iter().find_map(|t| match Msg::decode(&t.bytes) {
        Ok(Msg::QueryReply { found, .. }) => found
            .records()
            .into_iter()
            .find_map(|b| PresenceRecord::decode(b).ok()),
        _ => None,
    })
}

fn store(w: &mut World, rec: &[u8]) {
    let c = w.sn_cert.clone();
    w.sn.handle_message(
        Millis(EPOCH_MS),
        UnixMillis(EPOCH_MS),
        addr(7002),
        &c,
        &Msg::Store { record: rec }.encode(),
        &mut w.rng,
    );
    let _ = w.sn.drain_transmits().count();
}

#[test]
fn stores_valid_then_refuses_forged_stale_replayed_and_expired() {
    let _turn = scenario!();
    let mut w = world();
    let now = EPOCH_MS / 1000;
    let (alice, alice_cert) = cert(
        &mut w.rng,
        &w.authority,
        "alice",
        Role::User,
        now - 10,
        now + 86400,
    );
    let good = record(&alice, &alice_cert, 10, EPOCH_MS, Status::Online);
    store(&mut w, &good.encode());
    assert_eq!(w.sn.stats().records_stored, 1);
    assert_eq!(query(&mut w, "alice").unwrap().seq, 10);

    // Forged: redirected to the attacker's supernode after signing.
    let mut redirected = record(&alice, &alice_cert, 11, EPOCH_MS, Status::Online);
    redirected.supernodes = vec![addr(6666)];
    store(&mut w, &redirected.encode());
    // Forged: signed by mallory's key under alice's certificate.
    let (mallory, _) = cert(
        &mut w.rng,
        &w.authority,
        "mallory",
        Role::User,
        now - 10,
        now + 86400,
    );
    store(
        &mut w,
        &record(&mallory, &alice_cert, 12, EPOCH_MS, Status::Online).encode(),
    );
    // Unsigned.
    let mut unsigned = record(&alice, &alice_cert, 13, EPOCH_MS, Status::Online);
    unsigned.signature = [0; 64];
    store(&mut w, &unsigned.encode());
    // Certificate from another authority.
    let rogue = AuthorityKey::generate(&mut w.rng);
    let (eve, eve_cert) = cert(
        &mut w.rng,
        &rogue,
        "alice",
        Role::User,
        now - 10,
        now + 86400,
    );
    store(
        &mut w,
        &record(&eve, &eve_cert, 14, EPOCH_MS, Status::Online).encode(),
    );
    // Forged: alice's certificate (verified above, so cached) with
    // mallory's keys put in, still carrying alice's certificate signature.
    let mut copied = alice_cert.clone();
    copied.ed25519 = mallory.ed25519_public();
    copied.x25519 = mallory.x25519_public();
    store(
        &mut w,
        &record(&mallory, &copied, 15, EPOCH_MS, Status::Online).encode(),
    );
    assert_eq!(w.sn.stats().records_rejected_forged, 5);

    // Stale: an older sequence number (a replay of an old record).
    let old = record(&alice, &alice_cert, 5, EPOCH_MS, Status::Away);
    store(&mut w, &old.encode());
    assert_eq!(w.sn.stats().records_rejected_stale, 1);
    // Replayed: the very record already held changes nothing.
    store(&mut w, &good.encode());
    assert_eq!(w.sn.stats().records_stored, 1);

    // Expired: its certificate ran out 60 h ago.
    let (bob, bob_cert) = cert(
        &mut w.rng,
        &w.authority,
        "bob",
        Role::User,
        now - 80 * 3600,
        now - 60 * 3600,
    );
    let ancient = record(
        &bob,
        &bob_cert,
        1,
        EPOCH_MS - 79 * 3600 * 1000,
        Status::Online,
    );
    store(&mut w, &ancient.encode());
    assert_eq!(w.sn.stats().records_rejected_expired, 1);
    assert!(query(&mut w, "bob").is_none());

    // After all that, alice's record is still the good one.
    let r = query(&mut w, "alice").unwrap();
    assert_eq!((r.seq, r.supernodes.clone()), (10, vec![addr(7000)]));
    assert_eq!(r, good);
}

/// Issue 14.9: an offline user is found while their certificate is
/// valid, not for 72 h after it expired (a revoked device or a disabled
/// account, never renewed, drops out when its certificate does).
#[test]
fn offline_users_are_found_while_their_certificate_lives() {
    let _turn = scenario!();
    let mut w = world();
    let now = EPOCH_MS / 1000;
    // A record signed 20 h ago with a certificate valid 4 h more.
    let (dave, dave_cert) = cert(
        &mut w.rng,
        &w.authority,
        "dave",
        Role::User,
        now - 21 * 3600,
        now + 4 * 3600,
    );
    let rec = record(
        &dave,
        &dave_cert,
        1,
        EPOCH_MS - 20 * 3600 * 1000,
        Status::Online,
    );
    store(&mut w, &rec.encode());
    let r = query(&mut w, "dave").expect("found 20 h after his last login");
    assert!(!r.is_online(UnixSecs(now)));
    assert_eq!(
        r.last_seen(UnixSecs(now)),
        Some(UnixSecs(now - 20 * 3600 + 300))
    );
    // A record signed 48 h ago with a certificate that has since expired:
    // refused at receipt (it used to be kept 72 h).
    let (carol, carol_cert) = cert(
        &mut w.rng,
        &w.authority,
        "carol",
        Role::User,
        now - 50 * 3600,
        now - 26 * 3600,
    );
    let rec = record(
        &carol,
        &carol_cert,
        1,
        EPOCH_MS - 48 * 3600 * 1000,
        Status::Online,
    );
    let before = w.sn.stats().records_rejected_expired;
    store(&mut w, &rec.encode());
    assert_eq!(w.sn.stats().records_rejected_expired, before + 1);
    assert!(query(&mut w, "carol").is_none());
}

#[test]
fn client_cannot_publish_for_someone_else() {
    let _turn = scenario!();
    let mut w = world();
    let now = EPOCH_MS / 1000;
    let (alice, alice_cert) = cert(
        &mut w.rng,
        &w.authority,
        "alice",
        Role::User,
        now - 10,
        now + 86400,
    );
    let (_, mallory_cert) = cert(
        &mut w.rng,
        &w.authority,
        "mallory",
        Role::User,
        now - 10,
        now + 86400,
    );
    w.sn.handle_message(
        Millis(EPOCH_MS),
        UnixMillis(EPOCH_MS),
        addr(5000),
        &mallory_cert,
        &Msg::Attach { primary: true }.encode(),
        &mut w.rng,
    );
    let rec = record(&alice, &alice_cert, 1, EPOCH_MS, Status::Online);
    w.sn.handle_message(
        Millis(EPOCH_MS),
        UnixMillis(EPOCH_MS),
        addr(5000),
        &mallory_cert,
        &Msg::Publish {
            record: &rec.encode(),
        }
        .encode(),
        &mut w.rng,
    );
    assert_eq!(w.sn.stats().records_rejected_wrong_user, 1);
    let out: Vec<_> = w.sn.drain_transmits().collect();
    assert!(
        out.iter()
            .any(|t| matches!(Msg::decode(&t.bytes), Ok(Msg::PublishRejected { .. })))
    );
}

#[test]
fn a_user_certificate_cannot_join_or_store() {
    let _turn = scenario!();
    let mut w = world();
    let now = EPOCH_MS / 1000;
    let (_, user_cert) = cert(
        &mut w.rng,
        &w.authority,
        "pretender",
        Role::User,
        now - 10,
        now + 86400,
    );
    for m in [
        Msg::Join,
        Msg::Ping {
            seq: 1,
            updates: vec![Update {
                id: 9,
                addr: addr(9),
                incarnation: 0,
                state: MemberState::Alive,
            }],
        },
        Msg::SyncReq { page: 0 },
        Msg::Store { record: b"x" },
        Msg::Query {
            qid: 1,
            username: "alice",
        },
    ] {
        w.sn.handle_message(
            Millis(EPOCH_MS),
            UnixMillis(EPOCH_MS),
            addr(6000),
            &user_cert,
            &m.encode(),
            &mut w.rng,
        );
    }
    assert_eq!(w.sn.stats().not_supernode, 5);
    assert_eq!(w.sn.membership().alive_count(), 0, "no member was learnt");
    assert_eq!(w.sn.drain_transmits().count(), 0, "nothing answered");
}

#[test]
fn full_supernode_redirects_and_never_exceeds_its_limit() {
    let _turn = scenario!();
    let mut rng = StdRng::seed_from_u64(3);
    let authority = AuthorityKey::generate(&mut rng);
    let now = EPOCH_MS / 1000;
    let (_, sc) = cert(
        &mut rng,
        &authority,
        "sn1",
        Role::Supernode,
        now - 10,
        now + 86400,
    );
    let cfg = SupernodeConfig {
        max_clients: 3,
        ..Default::default()
    };
    let mut sn = SupernodeCore::new(
        authority.public(),
        &sc,
        addr(7000),
        vec![],
        cfg,
        1,
        Millis(EPOCH_MS),
    );
    let (_, peer) = cert(
        &mut rng,
        &authority,
        "sn2",
        Role::Supernode,
        now - 10,
        now + 86400,
    );
    sn.seed_member(
        Millis(EPOCH_MS),
        natter::overlay::node_id(&peer.ed25519),
        addr(7001),
    );
    let mut redirects = 0;
    for i in 0..10u16 {
        let (_, c) = cert(
            &mut rng,
            &authority,
            &format!("user{i}"),
            Role::User,
            now - 10,
            now + 86400,
        );
        sn.handle_message(
            Millis(EPOCH_MS),
            UnixMillis(EPOCH_MS),
            addr(5000 + i),
            &c,
            &Msg::Attach { primary: true }.encode(),
            &mut rng,
        );
        for t in sn.drain_transmits() {
            if let Ok(Msg::Redirect { supernodes }) = Msg::decode(&t.bytes) {
                assert_eq!(
                    supernodes,
                    vec![addr(7001)],
                    "redirected to the other supernode"
                );
                redirects += 1;
            }
        }
        assert!(sn.client_count() <= 3);
    }
    assert_eq!(redirects, 7);
    assert_eq!(sn.stats().clients_refused, 7);
}

/// Issue 14.3: the link's session cap used to be 1024 under a
/// `max_clients` of 100,000, so a full link table let handshakes time out
/// before the overlay could redirect. The caps now agree.
#[test]
fn link_session_cap_leaves_room_to_redirect() {
    let _turn = scenario!();
    for max_clients in [3, 100_000] {
        let cfg = SupernodeConfig {
            max_clients,
            ..Default::default()
        };
        let link = cfg.link_config(natter::link::LinkConfig::default());
        assert!(
            link.max_sessions > max_clients,
            "{} sessions for {max_clients} clients",
            link.max_sessions
        );
    }
}

/// Issue 14.5: an attached client cannot make the supernode do unbounded
/// work: its lookups are rate-limited and its watches capped.
#[test]
fn a_client_gets_its_share_of_lookups_and_watches() {
    let _turn = scenario!();
    let mut rng = StdRng::seed_from_u64(5);
    let authority = AuthorityKey::generate(&mut rng);
    let now = EPOCH_MS / 1000;
    let (_, sc) = cert(
        &mut rng,
        &authority,
        "sn1",
        Role::Supernode,
        now - 10,
        now + 86400,
    );
    let cfg = SupernodeConfig {
        max_watches_per_client: 100,
        max_watches_per_address: 150,
        ..Default::default()
    };
    let mut sn = SupernodeCore::new(
        authority.public(),
        &sc,
        addr(7000),
        vec![],
        cfg,
        1,
        Millis(EPOCH_MS),
    );
    let (_, c) = cert(
        &mut rng,
        &authority,
        "mallory",
        Role::User,
        now - 10,
        now + 86400,
    );
    let (_, h) = cert(
        &mut rng,
        &authority,
        "honest",
        Role::User,
        now - 10,
        now + 86400,
    );
    let (m_addr, h_addr) = (SocketAddr::from(([10, 1, 1, 1], 5000)), addr(5001));
    for (a, c) in [(m_addr, &c), (h_addr, &h)] {
        sn.handle_message(
            Millis(EPOCH_MS),
            UnixMillis(EPOCH_MS),
            a,
            c,
            &Msg::Attach { primary: true }.encode(),
            &mut rng,
        );
    }
    // 1000 lookups within one second (virtual time).
    for i in 0..1000u32 {
        let name = format!("user{i}");
        let m = Msg::Lookup {
            qid: i,
            username: &name,
        }
        .encode();
        sn.handle_message(
            Millis(EPOCH_MS + u64::from(i)),
            UnixMillis(EPOCH_MS + u64::from(i)),
            m_addr,
            &c,
            &m,
            &mut rng,
        );
    }
    let s = sn.stats().clone();
    assert_eq!(s.lookups, 30 + 4, "burst of 30, then 5 a second");
    assert_eq!(s.lookups_rate_limited, 1000 - 34);
    // The honest client's lookup still starts.
    let m = Msg::Lookup {
        qid: 1,
        username: "alice",
    }
    .encode();
    sn.handle_message(
        Millis(EPOCH_MS + 1000),
        UnixMillis(EPOCH_MS + 1000),
        h_addr,
        &h,
        &m,
        &mut rng,
    );
    assert_eq!(sn.stats().lookups, 35);
    // Watches on 500 names: 100 held.
    for i in 0..500u32 {
        let name = format!("user{i}");
        let m = Msg::WatchReq { username: &name }.encode();
        sn.handle_message(
            Millis(EPOCH_MS + 1000),
            UnixMillis(EPOCH_MS + 1000),
            m_addr,
            &c,
            &m,
            &mut rng,
        );
    }
    assert_eq!(sn.stats().watches_refused, 400);
    let m = Msg::WatchReq { username: "alice" }.encode();
    sn.handle_message(
        Millis(EPOCH_MS + 1000),
        UnixMillis(EPOCH_MS + 1000),
        h_addr,
        &h,
        &m,
        &mut rng,
    );
    assert_eq!(sn.stats().watches_refused, 400);
    // A second account from mallory's address gets what is left of the
    // address's 150, not a fresh 100.
    let (_, c2) = cert(
        &mut rng,
        &authority,
        "mallory2",
        Role::User,
        now - 10,
        now + 86400,
    );
    let m2_addr = SocketAddr::from(([10, 1, 1, 1], 5002));
    let attach = Msg::Attach { primary: true }.encode();
    sn.handle_message(
        Millis(EPOCH_MS + 1000),
        UnixMillis(EPOCH_MS + 1000),
        m2_addr,
        &c2,
        &attach,
        &mut rng,
    );
    for i in 0..100u32 {
        let name = format!("other{i}");
        let m = Msg::WatchReq { username: &name }.encode();
        sn.handle_message(
            Millis(EPOCH_MS + 1000),
            UnixMillis(EPOCH_MS + 1000),
            m2_addr,
            &c2,
            &m,
            &mut rng,
        );
    }
    assert_eq!(sn.stats().watches_refused, 400 + 50);
    // The honest client, elsewhere, still watches.
    let m = Msg::WatchReq { username: "bob" }.encode();
    sn.handle_message(
        Millis(EPOCH_MS + 1000),
        UnixMillis(EPOCH_MS + 1000),
        h_addr,
        &h,
        &m,
        &mut rng,
    );
    assert_eq!(sn.stats().watches_refused, 450);
}

/// Issue 14.12: a device (stolen, retired, or with its clock far ahead)
/// publishing `seq = u64::MAX` or a record signed in the future would
/// freeze its user's entry for 72 h, every later record being stale. Both
/// the attached supernode and the owners refuse it; the honest next
/// record still gets in.
#[test]
fn a_record_numbered_or_signed_ahead_of_the_clock_is_refused() {
    let _turn = scenario!();
    let mut w = world();
    let now = EPOCH_MS / 1000;
    let (alice, alice_cert) = cert(
        &mut w.rng,
        &w.authority,
        "alice",
        Role::User,
        now - 10,
        now + 86400,
    );
    // As an owner.
    store(
        &mut w,
        &record(&alice, &alice_cert, u64::MAX, EPOCH_MS, Status::Online).encode(),
    );
    let tomorrow = EPOCH_MS + 2 * 3_600_000;
    store(
        &mut w,
        &record(&alice, &alice_cert, tomorrow, tomorrow, Status::Online).encode(),
    );
    assert_eq!(w.sn.stats().records_rejected_ahead, 2);
    assert_eq!(w.sn.stats().records_stored, 0);
    // As the attached supernode.
    w.sn.handle_message(
        Millis(EPOCH_MS),
        UnixMillis(EPOCH_MS),
        addr(5000),
        &alice_cert,
        &Msg::Attach { primary: true }.encode(),
        &mut w.rng,
    );
    let publish = |w: &mut World, rec: &PresenceRecord| {
        w.sn.handle_message(
            Millis(EPOCH_MS),
            UnixMillis(EPOCH_MS),
            addr(5000),
            &alice_cert,
            &Msg::Publish {
                record: &rec.encode(),
            }
            .encode(),
            &mut w.rng,
        );
        w.sn.drain_transmits()
            .filter_map(|t| match Msg::decode(&t.bytes) {
                Ok(Msg::PublishAck { seq }) => Some(Ok(seq)),
                Ok(Msg::PublishRejected { .. }) => Some(Err(())),
                _ => None,
            })
            .next()
    };
    let frozen = record(&alice, &alice_cert, u64::MAX, EPOCH_MS, Status::Online);
    assert_eq!(publish(&mut w, &frozen), Some(Err(())));
    assert_eq!(w.sn.stats().records_rejected_ahead, 3);
    // The device's honest next record (numbered by its clock) is taken.
    let honest = record(&alice, &alice_cert, EPOCH_MS, EPOCH_MS, Status::Online);
    assert_eq!(publish(&mut w, &honest), Some(Ok(EPOCH_MS)));
    store(&mut w, &honest.encode());
    assert_eq!(query(&mut w, "alice").unwrap().seq, EPOCH_MS);
}

/// Issue 14.9: the authority's signed revocation list detaches the
/// clients it names (a revoked device, a disabled account), drops and
/// refuses their records and their messages; an old, forged or foreign
/// list changes nothing, and a newer list without them lifts it.
#[test]
fn revocation_list_detaches_and_refuses_revoked_devices_and_disabled_accounts() {
    use natter::identity::revocation::RevocationList;
    use natter::overlay::SupernodeEvent;
    let _turn = scenario!();
    let mut w = world();
    let now = EPOCH_MS / 1000;
    let (alice, alice_cert) = cert(
        &mut w.rng,
        &w.authority,
        "alice",
        Role::User,
        now - 10,
        now + 86400,
    );
    let (bob, bob_cert) = cert(
        &mut w.rng,
        &w.authority,
        "bob",
        Role::User,
        now - 10,
        now + 86400,
    );
    let (_, carol_cert) = cert(
        &mut w.rng,
        &w.authority,
        "carol",
        Role::User,
        now - 10,
        now + 86400,
    );
    for (c, port) in [(&alice_cert, 5000), (&bob_cert, 5001), (&carol_cert, 5002)] {
        w.sn.handle_message(
            Millis(EPOCH_MS),
            UnixMillis(EPOCH_MS),
            addr(port),
            c,
            &Msg::Attach { primary: true }.encode(),
            &mut w.rng,
        );
    }
    store(
        &mut w,
        &record(&alice, &alice_cert, 1, EPOCH_MS, Status::Online).encode(),
    );
    store(
        &mut w,
        &record(&bob, &bob_cert, 1, EPOCH_MS, Status::Online).encode(),
    );
    assert!(query(&mut w, "alice").is_some() && query(&mut w, "bob").is_some());
    while w.sn.poll_event().is_some() {}

    // Alice's device revoked, bob's account disabled.
    let list = RevocationList::sign(
        &w.authority,
        UnixMillis(EPOCH_MS + 1000),
        vec![alice.ed25519_public()],
        vec!["bob".into()],
    );
    assert_eq!(
        w.sn.set_revocations(UnixMillis(EPOCH_MS + 2000), &list.encode()),
        Ok(2)
    );
    let mut detached = Vec::new();
    while let Some(e) = w.sn.poll_event() {
        if let SupernodeEvent::ClientDetached { addr, .. } = e {
            detached.push(addr.port());
        }
    }
    detached.sort();
    assert_eq!(detached, vec![5000, 5001]);
    assert!(query(&mut w, "alice").is_none() && query(&mut w, "bob").is_none());
    assert_eq!(w.sn.stats().records_rejected_revoked, 2);
    assert!(w.sn.refuses(&alice_cert) && w.sn.refuses(&bob_cert) && !w.sn.refuses(&carol_cert));

    // Their messages are dropped: no attach, no keepalive answer, no
    // record stored.
    let _ = w.sn.drain_transmits().count();
    w.sn.handle_message(
        Millis(EPOCH_MS + 3000),
        UnixMillis(EPOCH_MS + 3000),
        addr(5000),
        &alice_cert,
        &Msg::Attach { primary: true }.encode(),
        &mut w.rng,
    );
    w.sn.handle_message(
        Millis(EPOCH_MS + 3000),
        UnixMillis(EPOCH_MS + 3000),
        addr(5001),
        &bob_cert,
        &Msg::Keepalive { seq: 1 }.encode(),
        &mut w.rng,
    );
    assert_eq!(w.sn.drain_transmits().count(), 0);
    assert_eq!(w.sn.stats().revoked_refused, 2);
    store(
        &mut w,
        &record(&alice, &alice_cert, 2, EPOCH_MS, Status::Online).encode(),
    );
    assert_eq!(w.sn.stats().records_rejected_revoked, 3);
    assert!(query(&mut w, "alice").is_none());

    // An older list, one from another authority and a tampered one are
    // refused and counted; the revocations stay.
    let old = RevocationList::sign(&w.authority, UnixMillis(EPOCH_MS), vec![], vec![]);
    assert!(
        w.sn.set_revocations(UnixMillis(EPOCH_MS + 4000), &old.encode())
            .is_err()
    );
    let other = AuthorityKey::generate(&mut w.rng);
    let foreign = RevocationList::sign(&other, UnixMillis(EPOCH_MS + 5000), vec![], vec![]);
    assert!(
        w.sn.set_revocations(UnixMillis(EPOCH_MS + 5000), &foreign.encode())
            .is_err()
    );
    let mut tampered = list.clone();
    tampered.devices.clear();
    tampered.seq += 10;
    assert!(
        w.sn.set_revocations(UnixMillis(EPOCH_MS + 5000), &tampered.encode())
            .is_err()
    );
    assert_eq!(w.sn.stats().revocation_lists_rejected, 3);
    assert!(w.sn.refuses(&alice_cert));

    // A newer list without them: alice attaches again.
    let lifted = RevocationList::sign(&w.authority, UnixMillis(EPOCH_MS + 6000), vec![], vec![]);
    assert_eq!(
        w.sn.set_revocations(UnixMillis(EPOCH_MS + 6000), &lifted.encode()),
        Ok(0)
    );
    w.sn.handle_message(
        Millis(EPOCH_MS + 7000),
        UnixMillis(EPOCH_MS + 7000),
        addr(5000),
        &alice_cert,
        &Msg::Attach { primary: true }.encode(),
        &mut w.rng,
    );
    assert!(w.sn.drain_transmits().count() > 0);
    assert!(!w.sn.refuses(&alice_cert));
}
