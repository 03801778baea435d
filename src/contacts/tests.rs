use super::*;
use crate::identity::{AuthorityKey, DeviceIdentity, Role, Username};
use crate::time::Millis;
use rand::SeedableRng;
use rand::rngs::StdRng;

#[derive(Default)]
struct Sent(Vec<(String, u8, Vec<u8>, bool)>);

impl EnvelopeSink for Sent {
    fn send_envelope(&mut self, to: &str, k: u8, p: &[u8], store: bool) -> EnvelopeId {
        self.0.push((to.into(), k, p.to_vec(), store));
        [self.0.len() as u8; 16]
    }

    fn send_envelope_to_device(
        &mut self,
        to: &str,
        _: &[u8; 32],
        k: u8,
        p: &[u8],
        store: bool,
    ) -> EnvelopeId {
        self.send_envelope(to, k, p, store)
    }
}

fn cert(name: &str) -> Certificate {
    let mut rng = StdRng::seed_from_u64(1);
    let a = AuthorityKey::generate(&mut rng);
    let d = DeviceIdentity::generate(&mut rng);
    Certificate::issue(
        &a,
        1,
        Role::User,
        0,
        u64::MAX / 2,
        &Username::parse(name).unwrap(),
        d.ed25519_public(),
        d.x25519_public(),
    )
}

struct Side {
    core: ContactsCore,
    out: Sent,
    name: &'static str,
}

fn side(name: &'static str) -> Side {
    let cfg = ContactsConfig {
        away_after_ms: 1_000,
        ..Default::default()
    };
    let mut core =
        ContactsCore::new(ContactStore::in_memory().unwrap(), name, cfg, Millis::ZERO).unwrap();
    let mut out = Sent::default();
    core.on_online(&mut out);
    Side { core, out, name }
}

/// Deliver everything `a` sent to `b`'s name.
fn pass(now: Millis, a: &mut Side, b: &mut Side) {
    let sent: Vec<_> = std::mem::take(&mut a.out.0);
    let from = cert(a.name);
    for (to, k, p, _) in sent {
        if to == b.name {
            b.core.on_envelope(now, &from, k, &p, &mut b.out);
        }
    }
}

fn events(s: &mut Side) -> Vec<ContactsEvent> {
    std::iter::from_fn(|| s.core.poll_event()).collect()
}

#[test]
fn payloads_round_trip() {
    let ps = [
        ContactPayload::Contact {
            op: Op::Request,
            text: "hi, it's alice",
        },
        ContactPayload::Presence {
            status: Status::DoNotDisturb,
            message: "in a meeting",
            want_reply: true,
        },
    ];
    for p in ps {
        let b = p.encode();
        assert_eq!(ContactPayload::decode(p.kind(), &b).unwrap(), p);
        for cut in 0..b.len() {
            assert!(ContactPayload::decode(p.kind(), &b[..cut]).is_err());
        }
    }
}

#[test]
fn request_accept_then_presence_flows_both_ways() {
    let (mut a, mut b) = (side("alice"), side("bob"));
    a.core.add(Millis(1), "bob", "hi bob", &mut a.out).unwrap();
    pass(Millis(2), &mut a, &mut b);
    assert!(events(&mut b).contains(&ContactsEvent::Request {
        from: "alice".into(),
        greeting: "hi bob".into()
    }));
    // Bob's status is not shown to alice before authorization.
    b.core.set_status(Status::DoNotDisturb, "busy", &mut b.out);
    assert!(b.out.0.is_empty(), "no presence to a non-contact");
    b.core.accept(Millis(3), "alice", &mut b.out).unwrap();
    assert!(events(&mut b).contains(&ContactsEvent::Added {
        user: "alice".into()
    }));
    pass(Millis(4), &mut b, &mut a);
    let ev = events(&mut a);
    assert!(
        ev.contains(&ContactsEvent::Added { user: "bob".into() }),
        "{ev:?}"
    );
    assert!(
        ev.contains(&ContactsEvent::Presence {
            user: "bob".into(),
            status: Status::DoNotDisturb,
            message: "busy".into()
        }),
        "{ev:?}"
    );
    pass(Millis(5), &mut a, &mut b);
    assert!(events(&mut b).iter().any(|e| matches!(e, ContactsEvent::Presence { user, status: Status::Online, .. } if user == "alice")));
    assert_eq!(a.core.take_watch_requests(), vec!["bob".to_string()]);
    // Invisible is shown as offline.
    a.core.set_status(Status::Invisible, "", &mut a.out);
    pass(Millis(6), &mut a, &mut b);
    assert!(events(&mut b).iter().any(|e| matches!(
        e,
        ContactsEvent::Presence {
            status: Status::Offline,
            ..
        }
    )));
    assert_eq!(a.core.public_status(), (Status::Invisible, String::new()));
}

#[test]
fn decline_and_remove() {
    let (mut a, mut b) = (side("alice"), side("bob"));
    a.core.add(Millis(1), "bob", "", &mut a.out).unwrap();
    pass(Millis(2), &mut a, &mut b);
    b.core.decline(Millis(3), "alice", &mut b.out).unwrap();
    pass(Millis(4), &mut b, &mut a);
    assert!(events(&mut a).contains(&ContactsEvent::Declined {
        user: "bob".into(),
        by_us: false
    }));
    assert_eq!(a.core.list()[0].state, ContactState::Declined);
    assert!(b.core.list().is_empty());
    // Unsolicited accept does not authorize.
    let p = ContactPayload::Contact {
        op: Op::Accept,
        text: "",
    }
    .encode();
    b.core
        .on_envelope(Millis(5), &cert("mallory"), kind::CONTACT, &p, &mut b.out);
    assert!(b.core.list().is_empty());
    // Asked again, accepted, then removed by alice.
    a.core.add(Millis(6), "bob", "", &mut a.out).unwrap();
    pass(Millis(7), &mut a, &mut b);
    b.core.accept(Millis(8), "alice", &mut b.out).unwrap();
    pass(Millis(9), &mut b, &mut a);
    a.core.remove(Millis(10), "bob", &mut a.out).unwrap();
    pass(Millis(11), &mut a, &mut b);
    assert!(events(&mut b).contains(&ContactsEvent::Removed {
        user: "alice".into(),
        by_them: true
    }));
    assert!(b.core.list().is_empty());
}

#[test]
fn blocked_users_are_ignored() {
    let (mut a, mut b) = (side("alice"), side("bob"));
    b.core.block(Millis(1), "alice", &mut b.out).unwrap();
    assert!(b.core.is_blocked("Alice"));
    a.core.add(Millis(2), "bob", "", &mut a.out).unwrap();
    pass(Millis(3), &mut a, &mut b);
    assert!(
        !events(&mut b)
            .iter()
            .any(|e| matches!(e, ContactsEvent::Request { .. }))
    );
    // Nothing to alice (only the block, to bob's other devices).
    assert!(b.out.0.iter().all(|(to, ..)| to == "bob"), "{:?}", b.out.0);
    assert!(matches!(
        b.core.add(Millis(4), "alice", "", &mut b.out),
        Err(ContactsError::Blocked(_))
    ));
    b.core.unblock(Millis(5), "alice", &mut b.out).unwrap();
    assert!(b.core.list().is_empty());
}

#[test]
fn away_after_idle_and_back_on_activity() {
    let (mut a, mut b) = (side("alice"), side("bob"));
    a.core.add(Millis(1), "bob", "", &mut a.out).unwrap();
    pass(Millis(2), &mut a, &mut b);
    b.core.accept(Millis(3), "alice", &mut b.out).unwrap();
    pass(Millis(4), &mut b, &mut a);
    pass(Millis(5), &mut a, &mut b);
    events(&mut b);
    a.core.activity(Millis(10), &mut a.out);
    assert_eq!(a.core.poll_timeout(), Some(Millis(1_010)));
    a.core.handle_timeout(Millis(1_010), &mut a.out);
    assert_eq!(a.core.status().0, Status::Away);
    pass(Millis(1_011), &mut a, &mut b);
    assert!(events(&mut b).iter().any(|e| matches!(
        e,
        ContactsEvent::Presence {
            status: Status::Away,
            ..
        }
    )));
    a.core.activity(Millis(1_500), &mut a.out);
    assert_eq!(a.core.status().0, Status::Online);
    // A contact whose presence is not refreshed lapses to offline.
    let ttl = ContactsConfig::default().presence_ttl_ms;
    b.core.handle_timeout(Millis(1_011) + ttl, &mut b.out);
    assert!(events(&mut b).iter().any(|e| matches!(
        e,
        ContactsEvent::Presence {
            status: Status::Offline,
            ..
        }
    )));
}

#[test]
fn contacts_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("contacts.db");
    let mut out = Sent::default();
    {
        let mut c = ContactsCore::new(
            ContactStore::open(&p).unwrap(),
            "alice",
            ContactsConfig::default(),
            Millis::ZERO,
        )
        .unwrap();
        c.add(Millis(1), "bob", "hi", &mut out).unwrap();
        c.block(Millis(2), "eve", &mut out).unwrap();
    }
    let c = ContactsCore::new(
        ContactStore::open(&p).unwrap(),
        "alice",
        ContactsConfig::default(),
        Millis::ZERO,
    )
    .unwrap();
    let l = c.list();
    assert_eq!(l.len(), 2);
    assert_eq!(
        (l[0].username.as_str(), l[0].state),
        ("bob", ContactState::Requested)
    );
    assert!(l[1].blocked);
}

/// Everything `a` sent to its own name (its other devices' copies) goes
/// to `b`, a device of the same account; the rest stays.
fn pass_own(now: Millis, a: &mut Side, b: &mut Side) {
    let from = cert(a.name);
    let (own, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut a.out.0)
        .into_iter()
        .partition(|(to, ..)| to == a.name);
    a.out.0 = rest;
    for (_, k, p, store) in own {
        assert_eq!(k, kind::CONTACT_SYNC);
        assert!(store, "kept for a device that is away");
        b.core.on_envelope(now, &from, k, &p, &mut b.out);
    }
}

fn state_of(s: &Side, user: &str) -> Option<(ContactState, bool)> {
    s.core
        .list()
        .into_iter()
        .find(|c| c.username == user)
        .map(|c| (c.state, c.blocked))
}

#[test]
fn the_list_follows_the_account_to_its_other_devices() {
    let t = Millis(1);
    let (mut a1, mut a2, mut bob) = (side("alice"), side("alice"), side("bob"));
    a1.out.0.clear();
    a2.out.0.clear();
    // Asked on one device: the other shows the request as ours.
    a1.core.add(t, "bob", "hi", &mut a1.out).unwrap();
    pass_own(t, &mut a1, &mut a2);
    assert_eq!(state_of(&a2, "bob"), Some((ContactState::Requested, false)));
    assert!(a2.out.0.is_empty(), "nothing goes to bob from the copy");
    // Bob's answer reaches both devices (the overlay seals one per device).
    pass(t, &mut a1, &mut bob);
    bob.core.accept(t, "alice", &mut bob.out).unwrap();
    let answer = bob.out.0.clone();
    pass(t, &mut bob, &mut a1);
    bob.out.0 = answer;
    pass(t, &mut bob, &mut a2);
    assert_eq!(
        state_of(&a1, "bob"),
        Some((ContactState::Authorized, false))
    );
    assert_eq!(
        state_of(&a2, "bob"),
        Some((ContactState::Authorized, false))
    );
    // Blocked on the laptop: blocked on the desk too.
    a2.out.0.clear();
    a2.core.block(t, "bob", &mut a2.out).unwrap();
    pass_own(t, &mut a2, &mut a1);
    assert!(a1.core.is_blocked("bob"));
    let events: Vec<_> = std::iter::from_fn(|| a1.core.poll_event()).collect();
    assert!(events.contains(&ContactsEvent::Blocked { user: "bob".into() }));
    a2.core.unblock(t, "bob", &mut a2.out).unwrap();
    pass_own(t, &mut a2, &mut a1);
    assert_eq!(
        state_of(&a1, "bob"),
        Some((ContactState::Authorized, false))
    );
    // Removed on one: gone from the other, which tells bob nothing.
    a1.out.0.clear();
    a2.core.remove(t, "bob", &mut a2.out).unwrap();
    pass_own(t, &mut a2, &mut a1);
    assert_eq!(state_of(&a1, "bob"), None);
    assert!(
        a1.out.0.iter().all(|(to, ..)| to != "bob"),
        "{:?}",
        a1.out.0
    );
}

#[test]
fn a_contact_row_from_another_account_is_ignored() {
    let t = Millis(1);
    let mut a = side("alice");
    let mut mallory = side("mallory");
    let p = ContactPayload::Sync {
        user: "bob",
        state: ContactState::Authorized,
        blocked: false,
        greeting: "",
    }
    .encode();
    let took = a.core.on_envelope(
        t,
        &cert(mallory.name),
        kind::CONTACT_SYNC,
        &p,
        &mut mallory.out,
    );
    assert!(took);
    assert_eq!(state_of(&a, "bob"), None);
    // Undecodable: a state that does not exist.
    let mut bad = p.clone();
    bad[4] = 9;
    assert!(ContactPayload::decode(kind::CONTACT_SYNC, &bad).is_err());
}
