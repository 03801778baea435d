//! Group core tests: wire formats, replay rules, invitations, and a
//! virtual-time network of five members with loss, an offline member and
//! a removal and re-invitation.

use super::*;
use crate::identity::{AuthorityKey, Role, Username};
use rand::Rng;

#[derive(Default)]
struct Out(Vec<(String, u8, Vec<u8>, EnvelopeId)>, u64);

impl EnvelopeSink for Out {
    fn send_envelope(&mut self, to: &str, k: u8, p: &[u8], _store: bool) -> EnvelopeId {
        self.1 += 1;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.1.to_be_bytes());
        self.0.push((to.to_owned(), k, p.to_vec(), id));
        id
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

struct Keys {
    authority: AuthorityKey,
}

impl Keys {
    fn new() -> Self {
        let mut rng = StdRng::seed_from_u64(1);
        Keys {
            authority: AuthorityKey::generate(&mut rng),
        }
    }

    fn node(&self, name: &str, seed: u64) -> GroupCore {
        self.node_with(name, seed, GroupConfig::default())
    }

    fn node_with(&self, name: &str, seed: u64, cfg: GroupConfig) -> GroupCore {
        let mut rng = StdRng::seed_from_u64(seed * 7 + 3);
        let d = DeviceIdentity::generate(&mut rng);
        let cert = Certificate::issue(
            &self.authority,
            seed,
            Role::User,
            0,
            u64::MAX / 2,
            &Username::parse(name).unwrap(),
            d.ed25519_public(),
            d.x25519_public(),
        );
        GroupCore::new(
            GroupStore::in_memory().unwrap(),
            d,
            cert,
            self.authority.public(),
            cfg,
            seed,
            Millis(0),
        )
        .unwrap()
    }
}

const WALL: UnixMillis = UnixMillis(1_800_000_000_000);

#[test]
fn payloads_and_ops_round_trip_and_truncations_fail() {
    let k = Keys::new();
    let a = k.node("alice", 1);
    let op = Op::sign(
        &a.device,
        &a.cert,
        [5; 16],
        3,
        100,
        Action::Invite { user: "bob".into() },
    );
    let ob = op.encode();
    assert_eq!(Op::decode(&ob).unwrap(), op);
    assert!(op.verify(&k.authority.public()));
    for cut in 0..ob.len() {
        assert!(Op::decode(&ob[..cut]).is_err());
    }
    // A flipped bit anywhere in the body breaks the signature.
    let mut forged = op.clone();
    forged.action = Action::Invite {
        user: "mallory".into(),
    };
    assert!(!forged.verify(&k.authority.public()));
    let ps = [
        GroupPayload::Item {
            item: [1; 16],
            body: Body::Ops {
                group: [2; 16],
                ops: vec![&ob, &ob],
            },
        },
        GroupPayload::Item {
            item: [1; 16],
            body: Body::Key {
                group: [2; 16],
                key_id: 7,
                key: [9; 32],
                digest: None,
            },
        },
        GroupPayload::Item {
            item: [1; 16],
            body: Body::Key {
                group: [2; 16],
                key_id: 7,
                key: [9; 32],
                digest: Some(wire::digest([&[1; 16]])),
            },
        },
        GroupPayload::Item {
            item: [1; 16],
            body: Body::Msg {
                group: [2; 16],
                key_id: 7,
                seq: 9,
                prev: 4,
                ct: b"sealed",
                digest: None,
            },
        },
        GroupPayload::Item {
            item: [1; 16],
            body: Body::Msg {
                group: [2; 16],
                key_id: 7,
                seq: 9,
                prev: 4,
                ct: b"sealed",
                digest: Some(wire::digest([])),
            },
        },
        GroupPayload::Item {
            item: [1; 16],
            body: Body::Ids {
                group: [2; 16],
                start: (3, [4; 16]),
                end: Some((5, [0; 16])),
                below: wire::digest([&[7; 16], &[8; 16]]),
                ids: vec![[4; 16], [6; 16]],
            },
        },
        GroupPayload::Item {
            item: [1; 16],
            body: Body::Ids {
                group: [2; 16],
                start: wire::FIRST_KEY,
                end: None,
                below: wire::digest([]),
                ids: vec![],
            },
        },
        GroupPayload::Item {
            item: [1; 16],
            body: Body::Want {
                group: [2; 16],
                ids: vec![[5; 16]; 3],
            },
        },
        GroupPayload::Item {
            item: [1; 16],
            body: Body::Pull {
                group: [2; 16],
                before: (9, [9; 16]),
            },
        },
        GroupPayload::Ack { item: [3; 16] },
    ];
    for p in ps {
        let b = p.encode();
        assert_eq!(GroupPayload::decode(p.kind(), &b).unwrap(), p);
        // A key or message without its digest is still whole (older
        // senders), so only cuts before the digest fail for them.
        let optional = match &p {
            GroupPayload::Item {
                body:
                    Body::Key {
                        digest: Some(_), ..
                    }
                    | Body::Msg {
                        digest: Some(_), ..
                    },
                ..
            } => 18,
            _ => 0,
        };
        for cut in 0..b.len() {
            let r = GroupPayload::decode(p.kind(), &b[..cut]);
            assert_eq!(r.is_ok(), cut == b.len() - optional, "cut {cut} of {p:?}");
        }
    }
    // Ranges that end before they start, over-long id lists and unknown
    // end tags are refused.
    let bad_range = GroupPayload::Item {
        item: [1; 16],
        body: Body::Ids {
            group: [2; 16],
            start: (5, [0; 16]),
            end: Some((5, [0; 16])),
            below: wire::digest([]),
            ids: vec![],
        },
    }
    .encode();
    assert!(GroupPayload::decode(kind::GROUP, &bad_range).is_err());
    let mut long = GroupPayload::Item {
        item: [1; 16],
        body: Body::Want {
            group: [2; 16],
            ids: vec![],
        },
    }
    .encode();
    let n = wire::MAX_IDS + 1;
    long.truncate(long.len() - 2);
    long.extend_from_slice(&(n as u16).to_be_bytes());
    long.extend(std::iter::repeat_n(7u8, n * 16));
    assert!(GroupPayload::decode(kind::GROUP, &long).is_err());
    let mut tag = bad_range.clone();
    tag[16 + 1 + 16 + 24] = 2;
    assert!(GroupPayload::decode(kind::GROUP, &tag).is_err());
    assert!(GroupPayload::decode(99, &[0; 20]).is_err());
    let key = [4u8; 32];
    let ct = wire::seal_message(&key, &[1; 16], "alice", 1, 5, 77, "hi");
    assert_eq!(
        open_message(&key, &[1; 16], "alice", 1, 5, &ct),
        Some((77, "hi".to_owned()))
    );
    assert_eq!(open_message(&key, &[1; 16], "alice", 1, 6, &ct), None);
    assert_eq!(open_message(&[5; 32], &[1; 16], "alice", 1, 5, &ct), None);
}

/// The replay order makes every arrival order give the same list, and
/// the rules hold: only admins remove, nobody removes the creator.
#[test]
fn replay_is_deterministic_and_enforces_the_rules() {
    let k = Keys::new();
    let a = k.node("alice", 1);
    let b = k.node("bob", 2);
    let nonce = [8; 16];
    let g = wire::group_id("alice", &nonce);
    let sign = |n: &GroupCore, l: u64, act: Action| Op::sign(&n.device, &n.cert, g, l, 1, act);
    let ops = vec![
        sign(
            &a,
            1,
            Action::Create {
                nonce,
                name: "x".into(),
            },
        ),
        sign(&a, 2, Action::Invite { user: "bob".into() }),
        sign(
            &a,
            2,
            Action::Invite {
                user: "carol".into(),
            },
        ),
        sign(
            &b,
            3,
            Action::Remove {
                user: "carol".into(),
            },
        ), // not an admin
        sign(
            &b,
            3,
            Action::Invite {
                user: "dave".into(),
            },
        ),
        sign(&a, 4, Action::Remove { user: "bob".into() }),
        sign(
            &b,
            5,
            Action::Remove {
                user: "alice".into(),
            },
        ), // gone, and the creator
        sign(&a, 5, Action::Rename { name: "y".into() }),
    ];
    let mut rng = StdRng::seed_from_u64(5);
    let mut first = None;
    for _ in 0..20 {
        let mut shuffled = ops.clone();
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, rng.gen_range(0..=i));
        }
        sort_ops(&mut shuffled);
        let (d, _) = replay(&g, &shuffled);
        assert_eq!(
            d.members.iter().cloned().collect::<Vec<_>>(),
            ["alice", "carol", "dave"]
        );
        assert_eq!(d.name, "y");
        assert_eq!(first.get_or_insert(d.clone()), &d);
    }
    // A create for an id its author did not found is ignored.
    let fake = Op::sign(
        &b.device,
        &b.cert,
        g,
        0,
        1,
        Action::Create {
            nonce,
            name: "z".into(),
        },
    );
    let mut with_fake = ops.clone();
    with_fake.push(fake);
    sort_ops(&mut with_fake);
    assert_eq!(replay(&g, &with_fake).0.creator, "alice");
}

fn drain(n: &mut GroupCore) -> Vec<GroupEvent> {
    std::iter::from_fn(|| n.poll_event()).collect()
}

/// Deliver everything in `out` from `from` to the named nodes at once
/// (lossless), with the outcomes; repeat until quiet.
fn settle(
    nodes: &mut [(&str, &mut GroupCore, Standing)],
    now: Millis,
    mut out: Vec<(String, Out)>,
) {
    for _ in 0..50 {
        let mut next = Vec::new();
        for (from, o) in out.drain(..) {
            for (to, k, p, _) in o.0 {
                let cert = nodes.iter().find(|n| n.0 == from).unwrap().1.cert.clone();
                if let Some((_, n, st)) = nodes.iter_mut().find(|n| n.0 == to) {
                    let mut o2 = Out::default();
                    n.on_envelope(now, &cert, *st, k, &p, &mut o2);
                    next.push((to.clone(), o2));
                }
            }
        }
        if next.iter().all(|(_, o)| o.0.is_empty()) {
            return;
        }
        out = next;
    }
    panic!("no quiet");
}

#[test]
fn strangers_invites_are_dropped_and_counted_blocked_silently() {
    let k = Keys::new();
    let mut a = k.node("alice", 1);
    let mut b = k.node("bob", 2);
    let mut c = k.node("carol", 3);
    let mut o = Out::default();
    let g = a.create(Millis(0), WALL, "friends", &mut o).unwrap();
    a.invite(Millis(0), WALL, &g, "bob", &mut o).unwrap();
    a.invite(Millis(0), WALL, &g, "carol", &mut o).unwrap();
    // bob takes alice as a stranger, carol has blocked her.
    settle(
        &mut [
            ("alice", &mut a, Standing::Contact),
            ("bob", &mut b, Standing::Stranger),
            ("carol", &mut c, Standing::Blocked),
        ],
        Millis(1),
        vec![("alice".into(), o)],
    );
    assert!(b.groups().is_empty());
    assert_eq!(b.stats.invites_dropped, 1);
    assert!(
        matches!(drain(&mut b).as_slice(), [GroupEvent::InviteDropped { from, .. }] if from == "alice")
    );
    assert!(c.groups().is_empty());
    assert!(drain(&mut c).is_empty());
    assert!(c.stats.blocked_dropped > 0);
    // Only admins remove; the creator stays.
    let mut o = Out::default();
    assert!(matches!(
        a.remove(Millis(2), WALL, &g, "alice", &mut o),
        Err(GroupError::NoSuchMember(_))
    ));
    assert!(matches!(
        a.send(Millis(2), WALL, &g, "", &mut o),
        Err(GroupError::Empty)
    ));
}

/// One envelope in flight in the simulated network.
struct Flight {
    at: Millis,
    from: String,
    to: String,
    kind: u8,
    payload: Vec<u8>,
    env: EnvelopeId,
}

/// One 10 ms step of the simulated network: deliver what is due (an
/// offline member's envelopes wait on "their owners", `loss` of the rest
/// are lost), run due timers, send what came out with 5-80 ms of delay,
/// and note the messages shown.
#[allow(clippy::too_many_arguments)]
fn step(
    now: Millis,
    nodes: &mut [GroupCore],
    flights: &mut Vec<Flight>,
    stored: &mut Vec<Flight>,
    offline: &BTreeSet<usize>,
    shown: &mut [Vec<GroupMessage>],
    rng: &mut StdRng,
    loss: f64,
    names: &[&str],
) {
    let idx = |n: &str| names.iter().position(|x| *x == n).unwrap();
    let due: Vec<Flight> = {
        let (d, rest): (Vec<Flight>, Vec<Flight>) = flights.drain(..).partition(|f| f.at <= now);
        *flights = rest;
        d
    };
    let mut outs: Vec<(usize, Out)> = Vec::new();
    for f in due {
        let (s, r) = (idx(&f.from), idx(&f.to));
        if offline.contains(&r) {
            nodes[s].on_envelope_outcome(now, &f.env, EnvelopeOutcome::Stored);
            stored.push(f);
            continue;
        }
        if rng.gen_bool(loss) {
            // Lost: half the time the overlay says so.
            if rng.gen_bool(0.5) {
                nodes[s].on_envelope_outcome(now, &f.env, EnvelopeOutcome::Failed("lost".into()));
            }
            continue;
        }
        let cert = nodes[s].cert.clone();
        let mut o = Out::default();
        nodes[r].on_envelope(now, &cert, Standing::Contact, f.kind, &f.payload, &mut o);
        outs.push((r, o));
        nodes[s].on_envelope_outcome(now, &f.env, EnvelopeOutcome::Delivered);
    }
    for (i, n) in nodes.iter_mut().enumerate() {
        if offline.contains(&i) {
            continue;
        }
        if n.poll_timeout().is_some_and(|t| t <= now) {
            let mut o = Out::default();
            n.handle_timeout(now, &mut o);
            outs.push((i, o));
        }
    }
    for (i, o) in outs {
        for (to, kind, payload, env) in o.0 {
            let delay = rng.gen_range(5..80);
            flights.push(Flight {
                at: now + delay,
                from: names[i].to_owned(),
                to,
                kind,
                payload,
                env,
            });
        }
    }
    for (i, n) in nodes.iter_mut().enumerate() {
        for e in drain(n) {
            if let GroupEvent::Message(m) = e {
                shown[i].push(m);
            }
        }
    }
}

/// Five members over a lossy network in virtual time: one is offline
/// while 20 messages are sent, and is removed and re-added meanwhile.
#[test]
fn five_members_with_loss_an_offline_member_removed_and_readded() {
    let k = Keys::new();
    let names = ["alice", "bob", "carol", "dave", "erin"];
    let mut nodes: Vec<GroupCore> = names
        .iter()
        .enumerate()
        .map(|(i, n)| k.node(n, i as u64 + 1))
        .collect();
    let mut rng = StdRng::seed_from_u64(42);
    let mut flights: Vec<Flight> = Vec::new();
    // Envelopes for an offline member wait on "their owners".
    let mut stored: Vec<Flight> = Vec::new();
    let mut offline: BTreeSet<usize> = BTreeSet::new();
    let mut shown: Vec<Vec<GroupMessage>> = vec![Vec::new(); 5];
    let idx = |n: &str| names.iter().position(|x| *x == n).unwrap();
    let loss = 0.2;

    let mut now = Millis(0);
    macro_rules! run {
        ($ms:expr) => {
            let end = now + $ms;
            while now < end {
                now += 10;
                step(
                    now,
                    &mut nodes,
                    &mut flights,
                    &mut stored,
                    &offline,
                    &mut shown,
                    &mut rng,
                    loss,
                    &names,
                );
            }
        };
    }
    macro_rules! act {
        ($i:expr, |$n:ident, $o:ident| $body:expr) => {{
            let mut $o = Out::default();
            let $n = &mut nodes[$i];
            let r = $body;
            for (to, kind, payload, env) in $o.0 {
                flights.push(Flight {
                    at: now + 20,
                    from: names[$i].to_owned(),
                    to,
                    kind,
                    payload,
                    env,
                });
            }
            r
        }};
    }

    let g = act!(0, |n, o| n.create(now, WALL, "five", &mut o).unwrap());
    for u in &names[1..] {
        act!(0, |n, o| n.invite(now, WALL, &g, u, &mut o).unwrap());
    }
    run!(300_000);
    for n in &nodes {
        assert_eq!(
            n.info(&g).unwrap().members,
            names,
            "{}: {:?} early {} outbox {}",
            n.me,
            n.stats,
            n.early.len(),
            n.outbox_len()
        );
    }
    // dave goes offline; 20 messages while he is away, and he is
    // removed after the first 8 and re-added after 16.
    offline.insert(idx("dave"));
    let senders = [0usize, 1, 2, 4];
    let mut sent = 0;
    for round in 0..5 {
        for &s in &senders {
            if sent == 8 {
                act!(0, |n, o| n.remove(now, WALL, &g, "dave", &mut o).unwrap());
                run!(300_000);
            }
            if sent == 16 {
                act!(0, |n, o| n.invite(now, WALL, &g, "dave", &mut o).unwrap());
                run!(300_000);
            }
            let text = format!("{} #{round}", names[s]);
            act!(s, |n, o| n.send(now, WALL, &g, &text, &mut o).unwrap());
            sent += 1;
            run!(200);
        }
    }
    run!(300_000);
    // dave comes back: his owners push what waited for him.
    offline.remove(&idx("dave"));
    for f in stored.drain(..) {
        flights.push(Flight { at: now + 10, ..f });
    }
    for (i, n) in nodes.iter_mut().enumerate() {
        if i != idx("dave") {
            n.peer_online(now, "dave");
        }
    }
    run!(900_000);

    let lists: Vec<Vec<String>> = nodes.iter().map(|n| n.info(&g).unwrap().members).collect();
    assert!(lists.iter().all(|l| *l == names), "{lists:?}");
    for (i, n) in nodes.iter().enumerate() {
        // Exactly once, in per-sender order.
        let mut per: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for m in &shown[i] {
            per.entry(&m.sender).or_default().push(m.seq);
        }
        for (s, seqs) in &per {
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "{} from {s}: {seqs:?}",
                names[i]
            );
        }
        let total: usize = per.values().map(Vec::len).sum();
        let hist = n.history(&g, 1000).unwrap();
        assert_eq!(hist.len(), total, "{}", names[i]);
        if i == idx("dave") {
            // The 8 before his removal and the 4 after his return.
            assert_eq!(total, 12, "dave: {:?}", shown[i]);
            assert!(
                shown[i]
                    .iter()
                    .all(|m| !m.text.ends_with("#2") && !m.text.ends_with("#3"))
            );
        } else {
            assert_eq!(total, 20, "{}: {:?}", names[i], shown[i]);
        }
        assert_eq!(n.held_len(), 0);
        assert_eq!(n.outbox_len(), 0, "{}", names[i]);
    }
    // dave's keys open none of what was sent while he was out.
    let dave_keys: Vec<(String, u32, [u8; 32])> = nodes[idx("dave")].store.keys(&g).unwrap();
    let mut opened = 0;
    for &s in &senders {
        for row in nodes[s].store.sealed(&g, Some(names[s])).unwrap() {
            let during = (3..=4).contains(&row.seq);
            let any = dave_keys
                .iter()
                .filter(|(u, ..)| *u == names[s])
                .any(|(_, id, key)| {
                    *id == row.key_id
                        && open_message(key, &g, names[s], row.key_id, row.seq, &row.ct).is_some()
                });
            let brute = dave_keys.iter().any(|(_, _, key)| {
                open_message(key, &g, names[s], row.key_id, row.seq, &row.ct).is_some()
            });
            if during {
                assert!(!brute, "dave opened {} #{}", names[s], row.seq);
            } else {
                assert!(any, "dave cannot open {} #{}", names[s], row.seq);
                opened += 1;
            }
        }
    }
    assert_eq!(opened, 12);
    assert!(nodes.iter().map(|n| n.stats.undecryptable).sum::<u64>() == 0);
}

/// A member who sends key after key holds at most
/// [`MAX_KEYS_PER_SENDER`] of them at a receiver.
#[test]
fn sender_keys_per_member_are_bounded() {
    let k = Keys::new();
    let mut a = k.node("alice", 1);
    let mut b = k.node("bob", 2);
    let mut o = Out::default();
    let g = a.create(Millis(0), WALL, "two", &mut o).unwrap();
    a.invite(Millis(0), WALL, &g, "bob", &mut o).unwrap();
    settle(
        &mut [
            ("alice", &mut a, Standing::Contact),
            ("bob", &mut b, Standing::Contact),
        ],
        Millis(1),
        vec![("alice".into(), o)],
    );
    assert_eq!(b.info(&g).unwrap().members, ["alice", "bob"]);
    let mut sink = Out::default();
    for i in 0..100u32 {
        let p = GroupPayload::Item {
            item: [i as u8; 16],
            body: Body::Key {
                group: g,
                key_id: 1000 + i,
                key: [i as u8; 32],
                digest: None,
            },
        }
        .encode();
        b.on_envelope(
            Millis(2),
            &a.cert,
            Standing::Contact,
            kind::GROUP,
            &p,
            &mut sink,
        );
    }
    let alices = b.groups[&g]
        .keys
        .keys()
        .filter(|(s, _, _)| s == "alice")
        .count();
    assert_eq!(alices, MAX_KEYS_PER_SENDER);
    assert!(b.stats.keys_dropped >= 100 - MAX_KEYS_PER_SENDER as u64);
    assert_eq!(
        b.store
            .keys(&g)
            .unwrap()
            .iter()
            .filter(|(s, ..)| s == "alice")
            .count(),
        MAX_KEYS_PER_SENDER
    );
}

fn members(n: &GroupCore, g: &GroupId) -> Vec<String> {
    n.info(g).unwrap().members
}

/// Two members change the group at once: alice (an admin) removes
/// xavier while bob invites yvonne. bob sends yvonne the log as he knew
/// it, without the removal, and alice's removal goes only to the members
/// she knew; without a sync yvonne would list xavier for good. The
/// digests on the new keys make yvonne sync, and every member ends with
/// the same list and the same log.
#[test]
fn concurrent_remove_and_invite_converge() {
    let k = Keys::new();
    let mut a = k.node("alice", 1);
    let mut b = k.node("bob", 2);
    let mut x = k.node("xavier", 3);
    let mut y = k.node("yvonne", 4);
    let mut o = Out::default();
    let g = a.create(Millis(0), WALL, "four", &mut o).unwrap();
    a.invite(Millis(0), WALL, &g, "bob", &mut o).unwrap();
    a.invite(Millis(0), WALL, &g, "xavier", &mut o).unwrap();
    let c = Standing::Contact;
    settle(
        &mut [
            ("alice", &mut a, c),
            ("bob", &mut b, c),
            ("xavier", &mut x, c),
            ("yvonne", &mut y, c),
        ],
        Millis(1),
        vec![("alice".into(), o)],
    );
    for n in [&a, &b, &x] {
        assert_eq!(members(n, &g), ["alice", "bob", "xavier"], "{}", n.me);
    }
    // At once (past the sync window of the invitations' transient
    // mismatches): neither has seen the other's op when making theirs.
    let t = GroupConfig::default().sync_ms + 10;
    let (mut oa, mut ob) = (Out::default(), Out::default());
    a.remove(Millis(t), WALL, &g, "xavier", &mut oa).unwrap();
    b.invite(Millis(t), WALL, &g, "yvonne", &mut ob).unwrap();
    assert!(oa.0.iter().all(|e| e.0 != "yvonne"));
    settle(
        &mut [
            ("alice", &mut a, c),
            ("bob", &mut b, c),
            ("xavier", &mut x, c),
            ("yvonne", &mut y, c),
        ],
        Millis(t + 1),
        vec![("alice".into(), oa), ("bob".into(), ob)],
    );
    for n in [&a, &b, &y] {
        assert_eq!(members(n, &g), ["alice", "bob", "yvonne"], "{}", n.me);
        assert_eq!(n.groups[&g].digest, a.groups[&g].digest, "{}", n.me);
        assert_eq!(n.groups[&g].ops.len(), 5, "{}", n.me);
    }
    assert!(!x.info(&g).unwrap().joined);
    assert!(y.stats.syncs_started >= 1, "{:?}", y.stats);
    assert!(a.stats.ops_synced + b.stats.ops_synced >= 1);
    // yvonne's next message goes to the two others only (and her own
    // other devices), and opens there.
    for n in [&mut a, &mut b] {
        drain(n);
    }
    let mut o = Out::default();
    y.send(Millis(t + 2), WALL, &g, "hello", &mut o).unwrap();
    let to: BTreeSet<&str> = o.0.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(to, BTreeSet::from(["alice", "bob", "yvonne"]));
    settle(
        &mut [
            ("alice", &mut a, c),
            ("bob", &mut b, c),
            ("xavier", &mut x, c),
            ("yvonne", &mut y, c),
        ],
        Millis(t + 3),
        vec![("yvonne".into(), o)],
    );
    for n in [&mut a, &mut b] {
        let texts: Vec<String> = drain(n)
            .into_iter()
            .filter_map(|e| match e {
                GroupEvent::Message(m) => Some(m.text),
                _ => None,
            })
            .collect();
        assert_eq!(texts, ["hello"], "{}", n.me);
    }
}

/// A member misses an op for good (carol was away and alice gave the
/// removal of dave up): the digest on bob's next message makes carol
/// sync with bob, who forwards alice's signed op.
#[test]
fn a_lost_op_is_caught_up_from_another_member() {
    let k = Keys::new();
    let names = ["alice", "bob", "carol", "dave"];
    let mut n: Vec<GroupCore> = names
        .iter()
        .enumerate()
        .map(|(i, s)| {
            // alice gives an item up after a second.
            let outbox_ms = if i == 0 { 1_000 } else { 72 * 3_600_000 };
            let cfg = GroupConfig {
                outbox_ms,
                ..GroupConfig::default()
            };
            k.node_with(s, i as u64 + 1, cfg)
        })
        .collect();
    let c = Standing::Contact;
    let mut o = Out::default();
    let g = n[0].create(Millis(0), WALL, "four", &mut o).unwrap();
    for u in &names[1..] {
        n[0].invite(Millis(0), WALL, &g, u, &mut o).unwrap();
    }
    let [a, b, cc, d] = &mut n[..] else {
        unreachable!()
    };
    settle(
        &mut [
            ("alice", &mut *a, c),
            ("bob", &mut *b, c),
            ("carol", &mut *cc, c),
            ("dave", &mut *d, c),
        ],
        Millis(1),
        vec![("alice".into(), o)],
    );
    assert_eq!(members(cc, &g), names);
    // Nothing reaches carol (she is not in the network), and alice gives
    // the items for her up.
    let mut o = Out::default();
    a.remove(Millis(10), WALL, &g, "dave", &mut o).unwrap();
    settle(
        &mut [
            ("alice", &mut *a, c),
            ("bob", &mut *b, c),
            ("dave", &mut *d, c),
        ],
        Millis(11),
        vec![("alice".into(), o)],
    );
    // Past alice's outbox time and the window of the invitations' syncs.
    let later = Millis(10 + GroupConfig::default().sync_ms);
    let mut o = Out::default();
    a.handle_timeout(later, &mut o);
    assert!(a.stats.given_up >= 2, "{:?}", a.stats);
    // (Syncs left due by the invitations may go out meanwhile: carol's
    // are lost, she is away.)
    o.0.retain(|e| e.0 != "carol");
    settle(
        &mut [
            ("alice", &mut *a, c),
            ("bob", &mut *b, c),
            ("dave", &mut *d, c),
        ],
        later,
        vec![("alice".into(), o)],
    );
    assert!(a.pending.keys().all(|(to, _)| to == "carol"));
    assert_eq!(members(b, &g), ["alice", "bob", "carol"]);
    assert_eq!(members(cc, &g), names);
    // bob writes; his message carries his log's digest.
    let before = cc.stats.syncs_started;
    let mut o = Out::default();
    b.send(later, WALL, &g, "after", &mut o).unwrap();
    settle(
        &mut [
            ("alice", &mut *a, c),
            ("bob", &mut *b, c),
            ("carol", &mut *cc, c),
            ("dave", &mut *d, c),
        ],
        later + 1,
        vec![("bob".into(), o)],
    );
    assert_eq!(members(cc, &g), ["alice", "bob", "carol"]);
    assert_eq!(cc.groups[&g].digest, b.groups[&g].digest);
    assert_eq!(cc.stats.syncs_started, before + 1);
    assert_eq!(b.stats.ops_synced, 1);
    // bob's key, lost with the rest, comes again and opens his message.
    let mut o = Out::default();
    b.handle_timeout(later + 100_000, &mut o);
    settle(
        &mut [
            ("alice", &mut *a, c),
            ("bob", &mut *b, c),
            ("carol", &mut *cc, c),
            ("dave", &mut *d, c),
        ],
        later + 100_001,
        vec![("bob".into(), o)],
    );
    let shown: Vec<String> = drain(cc)
        .into_iter()
        .filter_map(|e| match e {
            GroupEvent::Message(m) => Some(m.text),
            _ => None,
        })
        .collect();
    assert_eq!(shown, ["after"]);
    // carol's own messages no longer go to dave.
    let mut o = Out::default();
    cc.send(later + 100_002, WALL, &g, "hi", &mut o).unwrap();
    assert!(o.0.iter().all(|e| e.0 != "dave"));
}

/// An op missed deep in a long log (below the last page of ids) is found
/// by pulling the page before.
#[test]
fn a_gap_below_the_last_page_is_pulled() {
    let k = Keys::new();
    let mut a = k.node("alice", 1);
    let mut b = k.node("bob", 2);
    let mut cc = k.node("carol", 3);
    let c = Standing::Contact;
    let mut o = Out::default();
    let g = a.create(Millis(0), WALL, "long", &mut o).unwrap();
    a.invite(Millis(0), WALL, &g, "bob", &mut o).unwrap();
    a.invite(Millis(0), WALL, &g, "carol", &mut o).unwrap();
    settle(
        &mut [
            ("alice", &mut a, c),
            ("bob", &mut b, c),
            ("carol", &mut cc, c),
        ],
        Millis(1),
        vec![("alice".into(), o)],
    );
    // The first rename misses carol; the next 300 reach everyone.
    let mut o = Out::default();
    a.rename(Millis(2), WALL, &g, "r0", &mut o).unwrap();
    o.0.retain(|e| e.0 != "carol");
    for i in 1..=300 {
        a.rename(Millis(2), WALL, &g, &format!("r{i}"), &mut o)
            .unwrap();
    }
    settle(
        &mut [
            ("alice", &mut a, c),
            ("bob", &mut b, c),
            ("carol", &mut cc, c),
        ],
        Millis(3),
        vec![("alice".into(), o)],
    );
    assert_eq!(cc.groups[&g].ops.len() + 1, b.groups[&g].ops.len());
    assert!(b.groups[&g].ops.len() > wire::MAX_IDS + 10);
    let mut o = Out::default();
    b.send(Millis(4), WALL, &g, "hi", &mut o).unwrap();
    let mut pulls = 0;
    // Deliver by hand to count the pull.
    let mut queue: Vec<(String, Out)> = vec![("bob".into(), o)];
    for _ in 0..20 {
        let mut next = Vec::new();
        for (from, o) in queue.drain(..) {
            for (to, kd, p, _) in o.0 {
                if let Ok(GroupPayload::Item {
                    body: Body::Pull { .. },
                    ..
                }) = GroupPayload::decode(kd, &p)
                {
                    pulls += 1;
                }
                let cert = match from.as_str() {
                    "alice" => a.cert.clone(),
                    "bob" => b.cert.clone(),
                    _ => cc.cert.clone(),
                };
                let n = match to.as_str() {
                    "alice" => &mut a,
                    "bob" => &mut b,
                    _ => &mut cc,
                };
                let mut o2 = Out::default();
                n.on_envelope(Millis(5), &cert, c, kd, &p, &mut o2);
                next.push((to, o2));
            }
        }
        queue = next;
    }
    assert_eq!(pulls, 1);
    assert_eq!(cc.groups[&g].digest, b.groups[&g].digest);
    assert_eq!(b.stats.ops_synced, 1);
}

/// Sync requests are answered for members only, at most
/// `sync_answers` per window; the rest are counted.
#[test]
fn sync_requests_are_bounded_per_member() {
    let k = Keys::new();
    let mut a = k.node("alice", 1);
    let mut b = k.node("bob", 2);
    let mallory = k.node("mallory", 9);
    let c = Standing::Contact;
    let mut o = Out::default();
    let g = a.create(Millis(0), WALL, "two", &mut o).unwrap();
    a.invite(Millis(0), WALL, &g, "bob", &mut o).unwrap();
    settle(
        &mut [("alice", &mut a, c), ("bob", &mut b, c)],
        Millis(1),
        vec![("alice".into(), o)],
    );
    let ids: Vec<[u8; 16]> = a.groups[&g].order.iter().map(|k| k.1).collect();
    let want = |i: u8| {
        GroupPayload::Item {
            item: [i; 16],
            body: Body::Want {
                group: g,
                ids: ids.clone(),
            },
        }
        .encode()
    };
    let budget = GroupConfig::default().sync_answers;
    // Past the window of the invitation's own syncs.
    let t = Millis(10 + GroupConfig::default().sync_ms);
    let refused = a.stats.sync_refused;
    let synced = a.stats.ops_synced;
    let mut o = Out::default();
    for i in 0..budget + 4 {
        a.on_envelope(t, &b.cert, c, kind::GROUP, &want(i as u8), &mut o);
    }
    let ops_items = o.0.iter().filter(|e| e.1 == kind::GROUP).count();
    assert_eq!(ops_items, budget as usize);
    assert_eq!(a.stats.sync_refused - refused, 4);
    assert_eq!(
        a.stats.ops_synced - synced,
        u64::from(budget) * ids.len() as u64
    );
    // A later window answers again.
    let mut o = Out::default();
    let later = t + GroupConfig::default().sync_ms;
    a.on_envelope(later, &b.cert, c, kind::GROUP, &want(200), &mut o);
    assert_eq!(o.0.iter().filter(|e| e.1 == kind::GROUP).count(), 1);
    // A non-member gets nothing (the item waits, bounded, in case the op
    // that adds them is on its way).
    let mut o = Out::default();
    a.on_envelope(later, &mallory.cert, c, kind::GROUP, &want(201), &mut o);
    assert!(o.0.is_empty());
    assert_eq!(a.early.len(), 1);
    // The sync table forgets windows that ended with nothing due.
    let mut o = Out::default();
    a.handle_timeout(later + GroupConfig::default().sync_ms, &mut o);
    assert!(a.sync.is_empty());
}

/// The concurrent case over the lossy network, with timers: alice
/// removes xavier while bob invites yvonne and carol renames the group,
/// all at once; every member ends with the same list and log, and a
/// message from each of them reaches the other three once.
#[test]
fn concurrent_changes_converge_over_a_lossy_network() {
    let k = Keys::new();
    let names = ["alice", "bob", "carol", "xavier", "yvonne"];
    let mut nodes: Vec<GroupCore> = names
        .iter()
        .enumerate()
        .map(|(i, n)| k.node(n, i as u64 + 11))
        .collect();
    let mut rng = StdRng::seed_from_u64(7);
    let mut flights: Vec<Flight> = Vec::new();
    let mut stored: Vec<Flight> = Vec::new();
    let offline: BTreeSet<usize> = BTreeSet::new();
    let mut shown: Vec<Vec<GroupMessage>> = vec![Vec::new(); 5];
    let loss = 0.2;
    let mut now = Millis(0);
    macro_rules! run {
        ($ms:expr) => {
            let end = now + $ms;
            while now < end {
                now += 10;
                step(
                    now,
                    &mut nodes,
                    &mut flights,
                    &mut stored,
                    &offline,
                    &mut shown,
                    &mut rng,
                    loss,
                    &names,
                );
            }
        };
    }
    macro_rules! act {
        ($i:expr, |$n:ident, $o:ident| $body:expr) => {{
            let mut $o = Out::default();
            let $n = &mut nodes[$i];
            let r = $body;
            for (to, kind, payload, env) in $o.0 {
                flights.push(Flight {
                    at: now + 20,
                    from: names[$i].to_owned(),
                    to,
                    kind,
                    payload,
                    env,
                });
            }
            r
        }};
    }
    let g = act!(0, |n, o| n.create(now, WALL, "five", &mut o).unwrap());
    for u in ["bob", "carol", "xavier"] {
        act!(0, |n, o| n.invite(now, WALL, &g, u, &mut o).unwrap());
    }
    run!(300_000);
    for n in &nodes[..4] {
        assert_eq!(members(n, &g), ["alice", "bob", "carol", "xavier"]);
    }
    act!(0, |n, o| n.remove(now, WALL, &g, "xavier", &mut o).unwrap());
    act!(1, |n, o| n.invite(now, WALL, &g, "yvonne", &mut o).unwrap());
    act!(2, |n, o| n
        .rename(now, WALL, &g, "renamed", &mut o)
        .unwrap());
    run!(300_000);
    let four = [0usize, 1, 2, 4];
    for &i in &four {
        let n = &nodes[i];
        assert_eq!(
            members(n, &g),
            ["alice", "bob", "carol", "yvonne"],
            "{}: {:?}",
            names[i],
            n.stats
        );
        assert_eq!(n.info(&g).unwrap().name, "renamed");
        assert_eq!(n.groups[&g].digest, nodes[0].groups[&g].digest);
    }
    assert!(!nodes[3].info(&g).unwrap().joined);
    assert!(nodes[4].stats.syncs_started >= 1);
    for &i in &four {
        let text = format!("from {}", names[i]);
        act!(i, |n, o| n.send(now, WALL, &g, &text, &mut o).unwrap());
    }
    run!(300_000);
    for &i in &four {
        let mut from: Vec<&str> = shown[i].iter().map(|m| m.sender.as_str()).collect();
        from.sort_unstable();
        assert_eq!(from, ["alice", "bob", "carol", "yvonne"], "{}", names[i]);
        assert_eq!(nodes[i].outbox_len(), 0, "{}", names[i]);
        assert_eq!(nodes[i].held_len(), 0, "{}", names[i]);
    }
    assert!(shown[3].is_empty());
}

/// An envelope sink that keeps where each envelope goes: a user (every
/// device) or one device of theirs.
#[derive(Default)]
struct DevOut(Vec<Sent>);

/// One envelope sent: (to, only this device, kind, payload, id).
type Sent = (String, Option<Dev>, u8, Vec<u8>, EnvelopeId);

/// Envelope ids unique across sinks.
static ENVELOPES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn envelope_id() -> EnvelopeId {
    let n = ENVELOPES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id
}

impl EnvelopeSink for DevOut {
    fn send_envelope(&mut self, to: &str, k: u8, p: &[u8], _store: bool) -> EnvelopeId {
        let id = envelope_id();
        self.0.push((to.to_owned(), None, k, p.to_vec(), id));
        id
    }

    fn send_envelope_to_device(
        &mut self,
        to: &str,
        dev: &[u8; 32],
        k: u8,
        p: &[u8],
        _store: bool,
    ) -> EnvelopeId {
        let id = envelope_id();
        self.0.push((to.to_owned(), Some(*dev), k, p.to_vec(), id));
        id
    }
}

/// One device in the simulated overlay.
struct Device {
    core: GroupCore,
    /// Its directory record exists (a device added later has none
    /// before): envelopes are copied to it only from then on.
    present: bool,
    online: bool,
    /// The messages it showed.
    shown: Vec<GroupMessage>,
}

/// One envelope copy in flight to one device.
struct Copy {
    at: Millis,
    from: usize,
    to: usize,
    kind: u8,
    payload: Vec<u8>,
    env: EnvelopeId,
}

/// A virtual-time overlay as the real one copies envelopes: to a user,
/// one copy per device with a record (to our own name: every other
/// device of ours); to one device, that one; copies for an offline
/// device wait on "its owners"; `loss` of the others are lost. Each
/// envelope's outcome is reported once, from its first copy.
struct Overlay {
    devs: Vec<Device>,
    flights: Vec<Copy>,
    stored: Vec<Copy>,
    reported: BTreeSet<(usize, EnvelopeId)>,
    /// Outcomes of envelopes that had no device to go to.
    empty: Vec<(usize, EnvelopeId)>,
    rng: StdRng,
    loss: f64,
    now: Millis,
}

impl Overlay {
    fn user(&self, i: usize) -> String {
        self.devs[i].core.me.clone()
    }

    fn send(&mut self, from: usize, out: DevOut) {
        for (to, dev, kind, payload, env) in out.0 {
            let targets: Vec<usize> = (0..self.devs.len())
                .filter(|&j| {
                    let d = &self.devs[j];
                    d.present && d.core.me == to && j != from && dev.is_none_or(|x| x == d.core.dev)
                })
                .collect();
            if targets.is_empty() {
                self.empty.push((from, env));
            }
            for to in targets {
                let delay = self.rng.gen_range(5..80);
                self.flights.push(Copy {
                    at: self.now + delay,
                    from,
                    to,
                    kind,
                    payload: payload.clone(),
                    env,
                });
            }
        }
    }

    fn act<R>(&mut self, i: usize, f: impl FnOnce(&mut GroupCore, Millis, &mut DevOut) -> R) -> R {
        let mut o = DevOut::default();
        let r = f(&mut self.devs[i].core, self.now, &mut o);
        self.send(i, o);
        self.collect();
        r
    }

    fn outcome(&mut self, from: usize, env: EnvelopeId, o: EnvelopeOutcome) {
        if self.reported.insert((from, env)) {
            let now = self.now;
            self.devs[from].core.on_envelope_outcome(now, &env, o);
        }
    }

    fn collect(&mut self) {
        for d in &mut self.devs {
            while let Some(e) = d.core.poll_event() {
                if let GroupEvent::Message(m) = e {
                    d.shown.push(m);
                }
            }
        }
    }

    /// One 10 ms step.
    fn step(&mut self) {
        self.now += 10;
        let now = self.now;
        for (from, env) in std::mem::take(&mut self.empty) {
            self.outcome(from, env, EnvelopeOutcome::Delivered);
        }
        let (due, rest): (Vec<Copy>, Vec<Copy>) = std::mem::take(&mut self.flights)
            .into_iter()
            .partition(|f| f.at <= now);
        self.flights = rest;
        for f in due {
            if !self.devs[f.to].online {
                self.outcome(f.from, f.env, EnvelopeOutcome::Stored);
                self.stored.push(f);
                continue;
            }
            if self.rng.gen_bool(self.loss) {
                if self.rng.gen_bool(0.5) {
                    self.outcome(f.from, f.env, EnvelopeOutcome::Failed("lost".into()));
                }
                continue;
            }
            let cert = self.devs[f.from].core.cert.clone();
            let mut o = DevOut::default();
            self.devs[f.to].core.on_envelope(
                now,
                &cert,
                Standing::Contact,
                f.kind,
                &f.payload,
                &mut o,
            );
            self.send(f.to, o);
            self.outcome(f.from, f.env, EnvelopeOutcome::Delivered);
        }
        for i in 0..self.devs.len() {
            let d = &mut self.devs[i];
            if !d.present || !d.online || d.core.poll_timeout().is_none_or(|t| t > now) {
                continue;
            }
            let mut o = DevOut::default();
            d.core.handle_timeout(now, &mut o);
            self.send(i, o);
        }
        self.collect();
    }

    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.step();
        }
    }

    /// Device `i` comes online: what waited for it comes.
    fn online(&mut self, i: usize) {
        self.devs[i].online = true;
        let now = self.now;
        let (mine, rest): (Vec<Copy>, Vec<Copy>) = std::mem::take(&mut self.stored)
            .into_iter()
            .partition(|f| f.to == i);
        self.stored = rest;
        for f in mine {
            self.flights.push(Copy { at: now + 10, ..f });
        }
        let user = self.user(i);
        for d in &mut self.devs {
            d.core.peer_online(now, &user);
        }
    }

    /// Texts shown by device `i`, from `n` on.
    fn texts(&self, i: usize, n: usize) -> Vec<String> {
        self.devs[i].shown[n.min(self.devs[i].shown.len())..]
            .iter()
            .map(|m| m.text.clone())
            .collect()
    }
}

/// Each message once, and in order per sending device.
fn once_in_order(who: &str, shown: &[GroupMessage], texts: &[String]) {
    let mut seen = BTreeSet::new();
    for m in shown {
        assert!(
            seen.insert(m.text.clone()),
            "{who} showed {:?} twice",
            m.text
        );
    }
    // Texts are "<sender>-<device> #<n>": n grows per sending device.
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for m in shown {
        let (who_dev, n) = m.text.split_once(" #").unwrap();
        let n: u64 = n.parse().unwrap();
        let l = last.entry(who_dev.to_owned()).or_default();
        assert!(n > *l, "{who}: {} after #{l}", m.text);
        *l = n;
    }
    let want: BTreeSet<String> = texts.iter().cloned().collect();
    assert_eq!(seen, want, "{who}");
}

/// Issue 17: a group follows the account. alice on her desk and laptop,
/// bob on one device, carol on two, over a lossy network: the group
/// alice creates on her desk is on her laptop; every message shows on
/// every device once, in per-device order (alice's own, sent from the
/// other device, as outgoing), with a sender key per sending device;
/// after carol is removed, none of her two devices' keys opens what
/// follows;
/// a phone alice adds later learns the group from her other devices and
/// shows what is sent from then on, once.
#[test]
fn groups_follow_the_account_across_devices() {
    let k = Keys::new();
    let spec = [
        ("alice", 1, true),
        ("alice", 11, true),
        ("bob", 2, true),
        ("carol", 3, true),
        ("carol", 13, true),
        ("alice", 21, false),
    ];
    let (desk, laptop, bob, carol, carol2, phone) = (0, 1, 2, 3, 4, 5);
    let names = ["desk", "laptop", "bob", "carol", "carol2", "phone"];
    let devs = spec
        .iter()
        .map(|(u, seed, present)| Device {
            core: k.node(u, *seed),
            present: *present,
            online: *present,
            shown: Vec::new(),
        })
        .collect();
    let mut net = Overlay {
        devs,
        flights: Vec::new(),
        stored: Vec::new(),
        reported: BTreeSet::new(),
        empty: Vec::new(),
        rng: StdRng::seed_from_u64(17),
        loss: 0.15,
        now: Millis(0),
    };
    for i in 0..5 {
        net.act(i, |c, now, o| c.on_online(now, o));
    }
    let g = net.act(desk, |c, now, o| c.create(now, WALL, "fam", o).unwrap());
    for u in ["bob", "carol"] {
        net.act(desk, |c, now, o| c.invite(now, WALL, &g, u, o).unwrap());
    }
    net.run(120_000);
    for i in [desk, laptop, bob, carol, carol2] {
        let info = net.devs[i].core.info(&g);
        assert_eq!(
            info.map(|i| i.members),
            Some(vec!["alice".into(), "bob".into(), "carol".into()]),
            "{}",
            names[i]
        );
    }

    // Messages from every device, alice's two included.
    let mut sent: Vec<String> = Vec::new();
    let mut counts = [0u32; 6];
    let mut say = |net: &mut Overlay, i: usize, sent: &mut Vec<String>| {
        counts[i] += 1;
        let text = format!("{} #{}", names[i], counts[i]);
        net.act(i, |c, now, o| c.send(now, WALL, &g, &text, o).unwrap());
        sent.push(text);
    };
    for round in 0..4 {
        for i in [bob, desk, laptop, carol, carol2] {
            if round < 3 || i != carol {
                say(&mut net, i, &mut sent);
                net.run(300);
            }
        }
    }
    net.run(300_000);
    for i in [desk, laptop, bob, carol, carol2] {
        once_in_order(names[i], &net.devs[i].shown, &sent);
        let own = &net.devs[i].core.me;
        for m in &net.devs[i].shown {
            assert_eq!(m.outgoing, m.sender == *own, "{}: {m:?}", names[i]);
        }
        assert_eq!(net.devs[i].core.held_len(), 0, "{}", names[i]);
        assert_eq!(
            net.devs[i].core.history(&g, 100).unwrap().len(),
            sent.len(),
            "{}",
            names[i]
        );
    }
    // bob holds a sender key from each of alice's devices.
    let alice_devs: BTreeSet<Dev> = net.devs[bob].core.groups[&g]
        .keys
        .keys()
        .filter(|(u, ..)| u == "alice")
        .map(|(_, d, _)| *d)
        .collect();
    assert_eq!(
        alice_devs,
        BTreeSet::from([net.devs[desk].core.dev, net.devs[laptop].core.dev])
    );

    // Without loss, one message at a time: the same order on every device.
    net.loss = 0.0;
    let mark: Vec<usize> = net.devs.iter().map(|d| d.shown.len()).collect();
    let mut calm = Vec::new();
    for i in [laptop, bob, desk, bob, laptop] {
        say(&mut net, i, &mut calm);
        net.run(2_000);
    }
    for i in [desk, laptop, bob, carol, carol2] {
        assert_eq!(net.texts(i, mark[i]), calm, "{}", names[i]);
    }
    sent.extend(calm);

    // carol is removed (on the laptop); what follows is not for her.
    net.loss = 0.15;
    net.act(laptop, |c, now, o| {
        c.remove(now, WALL, &g, "carol", o).unwrap()
    });
    net.run(120_000);
    let mark: Vec<usize> = net.devs.iter().map(|d| d.shown.len()).collect();
    let mut after = Vec::new();
    for i in [bob, desk, laptop, bob, desk] {
        say(&mut net, i, &mut after);
        net.run(300);
    }
    net.run(300_000);
    for i in [carol, carol2] {
        assert!(net.texts(i, mark[i]).is_empty(), "{}", names[i]);
    }
    for i in [desk, laptop, bob] {
        let mut got = net.texts(i, mark[i]);
        got.sort();
        let mut want = after.clone();
        want.sort();
        assert_eq!(got, want, "{}", names[i]);
    }
    // Neither of carol's devices holds a key that opens what followed.
    let mut carol_keys = net.devs[carol].core.store.keys(&g).unwrap();
    carol_keys.extend(net.devs[carol2].core.store.keys(&g).unwrap());
    for i in [desk, laptop, bob] {
        let c = &net.devs[i].core;
        for row in c.store.sealed(&g, Some(&c.me)).unwrap() {
            if row.device != c.dev {
                continue;
            }
            // A device's n-th message is its seq n.
            let text = format!("{} #{}", names[i], row.seq);
            let removed_then = after.contains(&text);
            let opens = carol_keys.iter().any(|(_, _, key)| {
                open_message(key, &g, &c.me, row.key_id, row.seq, &row.ct).is_some()
            });
            assert_eq!(opens, !removed_then, "{text}");
        }
    }

    // A phone added later: it asks alice's other devices when online,
    // learns the group, and shows what is sent from then on, once.
    net.devs[phone].present = true;
    net.online(phone);
    net.act(phone, |c, now, o| c.on_online(now, o));
    net.run(60_000);
    assert_eq!(
        net.devs[phone].core.info(&g).map(|i| i.members),
        Some(vec!["alice".into(), "bob".into()])
    );
    assert!(
        net.devs[desk].core.stats.asks_answered + net.devs[laptop].core.stats.asks_answered >= 1
    );
    let mark: Vec<usize> = net.devs.iter().map(|d| d.shown.len()).collect();
    let mut last = Vec::new();
    for i in [bob, phone, desk, laptop, bob] {
        say(&mut net, i, &mut last);
        net.run(300);
    }
    net.run(300_000);
    for i in [desk, laptop, bob, phone] {
        once_in_order(names[i], &net.devs[i].shown[mark[i]..], &last);
    }
    for i in [carol, carol2] {
        assert!(net.texts(i, mark[i]).is_empty(), "{}", names[i]);
    }
    for (i, d) in net.devs.iter().enumerate() {
        assert_eq!(d.core.stats.undecryptable, 0, "{}", names[i]);
        if i != carol && i != carol2 {
            assert_eq!(d.core.outbox_len(), 0, "{}: {:?}", names[i], d.core.stats);
        }
    }
}

/// A `groups.db` of schema version 1 opens as version 2: its rows are
/// kept (the device unknown), our own become this device's, and a
/// member's become the device of theirs heard from first, whose next
/// message follows on (in order, under the key it had).
#[test]
fn a_version_1_store_migrates_and_keeps_working() {
    let k = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("groups.db");
    // Two members as before devices: bob's second message is held at
    // alice's until the store is reopened.
    let mut a = k.node("alice", 1);
    let mut b = k.node("bob", 2);
    let mut o = Out::default();
    let g = a.create(Millis(0), WALL, "old", &mut o).unwrap();
    a.invite(Millis(0), WALL, &g, "bob", &mut o).unwrap();
    let c = Standing::Contact;
    settle(
        &mut [("alice", &mut a, c), ("bob", &mut b, c)],
        Millis(1),
        vec![("alice".into(), o)],
    );
    let mut o = Out::default();
    b.send(Millis(2), WALL, &g, "one", &mut o).unwrap();
    let first: Vec<_> = o.0.drain(..).filter(|e| e.0 == "alice").collect();
    b.send(Millis(3), WALL, &g, "two", &mut o).unwrap();
    let second: Vec<_> = o.0.drain(..).filter(|e| e.0 == "alice").collect();
    // A v1 file with what alice held: her group, both sender keys (bob's
    // and hers), bob's first message, her outbox.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(store::MIGRATIONS_V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        let grp = &a.groups[&g];
        conn.execute(
            "INSERT INTO groups (id, key_id, key, seq) VALUES (?1, ?2, ?3, 0)",
            rusqlite::params![&g[..], grp.key_id as i64, &grp.key[..]],
        )
        .unwrap();
        for op in &grp.ops {
            conn.execute(
                "INSERT INTO ops (grp, op_id, bytes) VALUES (?1, ?2, ?3)",
                rusqlite::params![&g[..], &op.id()[..], op.encode()],
            )
            .unwrap();
        }
        for ((u, _, i), key) in &grp.keys {
            conn.execute(
                "INSERT OR IGNORE INTO keys (grp, sender, key_id, key) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![&g[..], u, *i as i64, &key[..]],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO messages (grp, sender, seq, key_id, ct, text, sent_at, at) VALUES (?1, 'bob', 1, 1, x'00', 'one', 1, 1)",
            rusqlite::params![&g[..]],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO outbox (peer, item, payload, created) VALUES ('bob', x'0102', x'00', 5)",
            [],
        )
        .unwrap();
    }
    let store = GroupStore::open(&path).unwrap();
    let mut a2 = GroupCore::new(
        store,
        a.device.clone(),
        a.cert.clone(),
        k.authority.public(),
        GroupConfig::default(),
        9,
        Millis(0),
    )
    .unwrap();
    assert_eq!(a2.info(&g).unwrap().members, ["alice", "bob"]);
    assert_eq!(a2.history(&g, 10).unwrap().len(), 1);
    assert_eq!(a2.outbox_len(), 1);
    // Our own legacy key is this device's.
    assert!(
        a2.groups[&g]
            .keys
            .keys()
            .any(|(u, d, _)| u == "alice" && *d == a.dev)
    );
    // bob's second message follows on from his first, under the key of
    // before (now his device's).
    let mut sink = Out::default();
    for (_, k2, p, _) in second.iter().chain(&first) {
        a2.on_envelope(Millis(4), &b.cert, c, *k2, p, &mut sink);
    }
    let texts: Vec<String> = drain(&mut a2)
        .into_iter()
        .filter_map(|e| match e {
            GroupEvent::Message(m) => Some(m.text),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["two"]);
    assert!(
        a2.groups[&g]
            .last_seq
            .contains_key(&("bob".to_owned(), b.dev))
    );
    drop(a2);
    let s = GroupStore::open(&path).unwrap();
    let rows = s.sealed(&g, Some("bob")).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.device == b.dev), "{rows:?}");
}
