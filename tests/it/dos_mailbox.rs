//! Issue 14.7: the offline mailbox under a flooding stranger, on the
//! supernode core (an owner of the recipient's record) in virtual time.
//! One stranger sends bob envelopes as fast as it likes; made-up
//! recipients are tried too; an honest sender's envelopes must all still
//! be kept. Then the owner restarts and puts its mailbox back from the
//! durable copy.

use natter::identity::{AuthorityKey, Certificate, DeviceIdentity, Role, Username};
use natter::overlay::envelope::{SealArgs, seal};
use natter::overlay::msg::Msg;
use natter::overlay::supernode::MailboxChange;
use natter::overlay::{PresenceRecord, RecordContent, Status, SupernodeConfig, SupernodeCore};
use natter::sim::EPOCH_MS;
use natter::time::{Millis, UnixMillis};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::net::SocketAddr;

fn addr(p: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], p))
}

fn cert(
    rng: &mut StdRng,
    a: &AuthorityKey,
    name: &str,
    role: Role,
) -> (DeviceIdentity, Certificate) {
    let now = EPOCH_MS / 1000;
    let d = DeviceIdentity::generate(rng);
    let c = Certificate::issue(
        a,
        1,
        role,
        now - 10,
        now + 86400,
        &Username::parse(name).unwrap(),
        d.ed25519_public(),
        d.x25519_public(),
    );
    (d, c)
}

fn core(a: &AuthorityKey, sn: &Certificate) -> SupernodeCore {
    SupernodeCore::new(
        a.public(),
        sn,
        addr(7000),
        vec![],
        SupernodeConfig::default(),
        1,
        Millis(EPOCH_MS),
    )
}

/// Hand `env` from `sender` (via another supernode) to the owner; whether
/// it was kept.
fn store(
    sn: &mut SupernodeCore,
    peer: &Certificate,
    rng: &mut StdRng,
    env: &[u8],
    sender: &str,
) -> bool {
    sn.handle_message(
        Millis(EPOCH_MS),
        UnixMillis(EPOCH_MS),
        addr(7001),
        peer,
        &Msg::EnvStore {
            envelope: env,
            sender,
        }
        .encode(),
        rng,
    );
    sn.drain_transmits()
        .any(|t| matches!(Msg::decode(&t.bytes), Ok(Msg::EnvStoreAck { ok: true, .. })))
}

#[test]
fn dos_mailbox_stranger_flood_keeps_honest_mail_and_survives_restart() {
    let _turn = scenario!();
    let mut rng = StdRng::seed_from_u64(7);
    let a = AuthorityKey::generate(&mut rng);
    let (_, sn_cert) = cert(&mut rng, &a, "sn1", Role::Supernode);
    let (_, peer) = cert(&mut rng, &a, "sn2", Role::Supernode);
    let (bob, bob_cert) = cert(&mut rng, &a, "bob", Role::User);
    let (alice, alice_cert) = cert(&mut rng, &a, "alice", Role::User);
    let (mallory, mallory_cert) = cert(&mut rng, &a, "mallory", Role::User);
    let mut sn = core(&a, &sn_cert);
    sn.journal_mailbox();
    // The owner holds bob's record (he was online, now offline).
    let rec = PresenceRecord::sign(
        &bob,
        &bob_cert,
        RecordContent {
            seq: EPOCH_MS,
            signed_at_ms: EPOCH_MS,
            online_secs: 0,
            status: Status::Offline,
            message: String::new(),
            supernodes: vec![],
            candidates: vec![],
        },
    );
    sn.handle_message(
        Millis(EPOCH_MS),
        UnixMillis(EPOCH_MS),
        addr(7001),
        &peer,
        &Msg::Store {
            record: &rec.encode(),
        }
        .encode(),
        &mut rng,
    );
    let _ = sn.drain_transmits().count();
    let mut n = 0u8;
    let mut env = |rng: &mut StdRng, d: &DeviceIdentity, c: &Certificate, to: &Certificate| {
        n = n.wrapping_add(1);
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(rng, &mut id);
        seal(
            rng,
            d,
            c,
            to,
            SealArgs {
                id,
                kind: 1,
                payload: &[n; 100],
                created_ms: EPOCH_MS,
                ttl_ms: 3_600_000,
                store: true,
            },
        )
        .unwrap()
    };
    // The attack: 2,000 envelopes from mallory to bob, interleaved with
    // alice's 20, and 200 to made-up users.
    let (mut honest_kept, mut flood_kept) = (0, 0);
    let mut alice_ids = Vec::new();
    for i in 0..2_000 {
        let e = env(&mut rng, &mallory, &mallory_cert, &bob_cert);
        flood_kept += store(&mut sn, &peer, &mut rng, &e, "mallory") as u32;
        if i % 100 == 0 {
            let e = env(&mut rng, &alice, &alice_cert, &bob_cert);
            alice_ids.push(
                natter::overlay::envelope::Sealed::decode(&e)
                    .unwrap()
                    .header
                    .id,
            );
            honest_kept += store(&mut sn, &peer, &mut rng, &e, "alice") as u32;
        }
    }
    let mut ghosts_kept = 0;
    for i in 0..200 {
        let (_, ghost) = cert(&mut rng, &a, &format!("ghost{i}"), Role::User);
        let e = env(&mut rng, &mallory, &mallory_cert, &ghost);
        ghosts_kept += store(&mut sn, &peer, &mut rng, &e, "mallory") as u32;
    }
    let st = sn.envelope_stats().clone();
    println!(
        "mailbox flood: stranger sent 2000 (kept {flood_kept}), made-up recipients 200 (kept {ghosts_kept}), \
         honest sender 20 (kept {honest_kept}); refused: sender share {}, unknown recipient {}, full {}",
        st.mailbox_sender_share, st.mailbox_unknown_recipient, st.mailbox_full
    );
    assert_eq!(honest_kept, 20, "the honest sender's mail was refused");
    assert_eq!(
        flood_kept as usize,
        SupernodeConfig::default().mailbox_per_sender
    );
    assert_eq!(ghosts_kept, 0);
    assert_eq!(st.mailbox_unknown_recipient, 200);

    // Restart: a new core, the mailbox put back from the durable copy.
    let mut kept: Vec<(String, String, Vec<u8>)> = Vec::new();
    for c in sn.drain_mailbox_changes() {
        match c {
            MailboxChange::Kept {
                user,
                sender,
                bytes,
                ..
            } => kept.push((user, sender, bytes.to_vec())),
            MailboxChange::Gone { id, .. } => kept.retain(|(_, _, b)| {
                natter::overlay::envelope::Sealed::decode(b)
                    .unwrap()
                    .header
                    .id
                    != id
            }),
        }
    }
    let mut again = core(&a, &sn_cert);
    for (user, sender, bytes) in &kept {
        assert!(again.restore_mail(
            Millis(EPOCH_MS + 1_000),
            UnixMillis(EPOCH_MS + 1_000),
            user,
            sender,
            bytes
        ));
    }
    assert_eq!(again.mailbox_size().0, 20 + flood_kept as usize);
    assert!(alice_ids.iter().all(|id| again.mailbox_holds("bob", id)));
}
