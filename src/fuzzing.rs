//! Fuzz entry points, shared by the cargo-fuzz targets in `fuzz/` and the
//! bounded proptest run in `tests/it/fuzz_decoders.rs`. Each takes arbitrary
//! bytes and must return without panicking; decoders that accept an input
//! must re-encode it to the same bytes.

use crate::authority::client::LoginClient;
use crate::authority::core::{AuthorityCore, Output, Policy, Session};
use crate::authority::proto::{AccountOp, ClientHello, Request, Response, ServerHello};
use crate::crypto::ChannelHandshake;
use crate::identity::{AuthorityKey, Certificate, DeviceIdentity, Role, Username};
use crate::link::packet::Packet;
use crate::link::{LinkConfig, LinkEndpoint};
use crate::overlay::{Msg, PresenceRecord, RecordContent, Status};
use crate::time::{Millis, UnixMillis, UnixSecs};
use crate::wire::Frame;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::net::SocketAddr;

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
            device_name: "laptop",
        }
        .encode(),
        Request::Renew {
            cert: &cert,
            proof: [3; 64],
        }
        .encode(),
        Request::Account {
            cert: &cert,
            proof: [3; 64],
            op: AccountOp::RevokeDevice {
                password: "pw",
                device: "laptop",
            },
        }
        .encode(),
        Request::Revocations {
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
    let (_, d, c) = keys();
    let rec = PresenceRecord::sign(
        &d,
        &c,
        RecordContent {
            seq: 1,
            signed_at_ms: LINK_NOW,
            online_secs: 60,
            status: Status::Away,
            message: "brb".into(),
            supernodes: vec![link_addr(7)],
            candidates: vec![link_addr(8)],
        },
    )
    .encode();
    v.push(Msg::Publish { record: &rec }.encode());
    v.push(Msg::PublishWill { record: &rec }.encode());
    v.push(
        Msg::LookupReply {
            qid: 3,
            found: crate::overlay::msg::Found::Records(vec![&rec, &rec]),
        }
        .encode(),
    );
    v.push(
        Msg::AttachOk {
            observed: link_addr(3),
            supernodes: vec![link_addr(4)],
        }
        .encode(),
    );
    v.push(rec);
    let (a, _, _) = keys();
    v.push(
        crate::identity::revocation::RevocationList::sign(
            &a,
            UnixMillis(LINK_NOW),
            vec![[1; 32]],
            vec!["bob".into()],
        )
        .encode(),
    );
    let env = envelope_seed();
    v.push(Msg::EnvSend { envelope: &env }.encode());
    v.push(Msg::EnvDeliver { envelope: &env }.encode());
    v.push(
        Msg::EnvStore {
            envelope: &env,
            sender: "alice",
        }
        .encode(),
    );
    v.push(env);
    let mut chat = vec![1];
    chat.extend(
        crate::chat::ChatPayload::Message {
            id: [1; 16],
            sent_at_ms: 2,
            text: "hi",
        }
        .encode(),
    );
    v.push(chat);
    // Copies to our other devices (kinds 5 and 6).
    for p in [
        crate::chat::ChatPayload::Sent {
            peer: "bob",
            id: [3; 16],
            sent_at_ms: 4,
            text: "sent elsewhere",
        },
        crate::chat::ChatPayload::Read {
            peer: "bob",
            sent_at_ms: 4,
            id: [3; 16],
        },
    ] {
        let mut b = vec![p.kind()];
        b.extend(p.encode());
        v.push(b);
    }
    // A new device's history sync (kinds 8 and 9).
    let cursor = crate::chat::history::KeyRef {
        sent_at_ms: 4,
        peer: "bob",
        id: [3; 16],
        outgoing: true,
    };
    for p in [
        crate::chat::HistoryPayload::Ask {
            sync: [1; 8],
            since_ms: 1,
            until_ms: 9,
            after: Some(cursor),
        },
        crate::chat::HistoryPayload::Batch {
            sync: [1; 8],
            more: true,
            next: Some(cursor),
            rows: vec![crate::chat::history::HistoryRow {
                peer: "bob",
                outgoing: false,
                read: true,
                id: [3; 16],
                sent_at_ms: 4,
                acked_at_ms: None,
                text: "an old one",
            }],
        },
    ] {
        let mut b = vec![p.kind()];
        b.extend(p.encode());
        v.push(b);
    }
    let mut presence = vec![4];
    presence.extend(
        crate::contacts::ContactPayload::Presence {
            status: Status::Away,
            message: "out",
            want_reply: true,
        }
        .encode(),
    );
    v.push(presence);
    let sync = crate::contacts::ContactPayload::Sync {
        user: "bob",
        state: crate::contacts::ContactState::Authorized,
        blocked: true,
        greeting: "hi",
    };
    let mut b = vec![sync.kind()];
    b.extend(sync.encode());
    v.push(b);
    for cookie in [None, Some([7; 16])] {
        v.extend(
            Packet::Init {
                sender: 3,
                ephemeral: [4; 32],
                cookie,
            }
            .encode(),
        );
    }
    v.extend(
        Packet::Cookie {
            receiver: 3,
            cookie: [9; 16],
        }
        .encode(),
    );
    v.extend(link_stage(5).2);
    v.extend(link_stage(1).2);
    v.extend(turn_pair().2);
    v.extend(media_seeds());
    v.extend(transfer_seeds());
    v.extend(conference_seeds());
    v.extend(group_seeds());
    v
}

/// Valid media packets, receiver reports and call messages.
pub fn media_seeds() -> Vec<Vec<u8>> {
    use crate::media::packet::{Kind, Sealer};
    let keys = crate::media::MediaKeys::derive(&[1; 32], crate::media::Side::Callee);
    let mut sealer = Sealer::new(&keys.send, 2);
    let report = crate::media::report::Report {
        sent_at: 1,
        echo: 2,
        highest: 3,
        lost: 1,
        fraction_lost: 20,
        ..Default::default()
    }
    .encode()
    .to_vec();
    let mut v = vec![
        report.clone(),
        crate::call::Msg::Invite { nonce: [1; 16] }.encode(9),
        crate::call::Msg::Ack {
            kind: 8,
            flag: true,
        }
        .encode(9),
        crate::call::Msg::Hangup.encode(9),
        crate::call::Msg::Accept {
            nonce: [2; 16],
            device: crate::call::DeviceName::new("laptop"),
        }
        .encode(9),
        crate::call::Msg::AnsweredElsewhere {
            device: crate::call::DeviceName::new("laptop"),
        }
        .encode(9),
        crate::call::Msg::Replace {
            nonce: [3; 16],
            replaces: 7,
            device: crate::call::DeviceName::new("laptop"),
        }
        .encode(9),
        crate::call::Msg::Moved {
            device: crate::call::DeviceName::new("laptop"),
        }
        .encode(7),
        crate::call::Msg::OnDevice {
            on: true,
            peer_device: [1; 32],
            peer: crate::call::DeviceName::new("bob"),
            device: crate::call::DeviceName::new("desk"),
        }
        .encode(7),
    ];
    // A real Opus frame, sealed.
    if let Ok(mut enc) = crate::media::codec::Encoder::new(Default::default()) {
        let mut out = [0u8; 1275];
        if let Ok(n) = enc.encode(&[100; 960], &mut out)
            && let Ok(p) = sealer.seal(Kind::Audio, true, 0, 0, &out[..n])
        {
            v.push(out[..n].to_vec());
            v.push(p);
        }
    }
    if let Ok(p) = sealer.seal(Kind::Report, false, 0, 0, &report) {
        v.push(p);
    }
    v
}

pub const LINK_NOW: u64 = 1_800_000_000_000;

/// The wall clock beside [`LINK_NOW`] (the fuzz targets run at one
/// fixed time).
fn link_unix() -> UnixSecs {
    UnixMillis(LINK_NOW).secs()
}

pub fn link_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Alice (port 1) and Bob (port 2) after `stage` steps of one
/// deterministic link exchange, and every datagram sent so far:
/// 0 fresh, 1 alice sent INIT (a message queued), 2 bob sent RESP,
/// 3 alice sent FIN and the message, 4 bob established and acked,
/// 5 both established.
pub fn link_stage(stage: usize) -> (LinkEndpoint, LinkEndpoint, Vec<Vec<u8>>) {
    let (a, d, c) = keys();
    let mut rng = StdRng::seed_from_u64(7);
    let bd = DeviceIdentity::generate(&mut rng);
    let bob_name = Username::parse("bob").unwrap_or_else(|_| unreachable!());
    let bc = Certificate::issue(
        &a,
        8,
        Role::User,
        0,
        u64::MAX / 2,
        &bob_name,
        bd.ed25519_public(),
        bd.x25519_public(),
    );
    let (Ok(mut alice), Ok(mut bob)) = (
        LinkEndpoint::new(d, c, a.public(), LinkConfig::default()),
        LinkEndpoint::new(bd, bc, a.public(), LinkConfig::default()),
    ) else {
        unreachable!("certificates match their devices")
    };
    let mut sent = Vec::new();
    if stage >= 1 {
        let _ = alice.send(Millis(LINK_NOW), link_addr(2), b"queued", &mut rng);
    }
    for step in 2..=stage {
        let (from, to, src) = if step % 2 == 0 {
            (&mut alice, &mut bob, link_addr(1))
        } else {
            (&mut bob, &mut alice, link_addr(2))
        };
        while let Some(t) = from.poll_transmit() {
            to.handle_datagram(Millis(LINK_NOW), link_unix(), src, &t.bytes, &mut rng);
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

/// Link endpoints in every state fed datagrams: the first byte picks the
/// state (fresh, mid-handshake on either side, unconfirmed, established)
/// and whether they come from the peer or a stranger; the rest is split
/// into up to three datagrams.
pub fn link_endpoint(b: &[u8]) {
    let Some((&sel, rest)) = b.split_first() else {
        return;
    };
    let stage = (sel % 6) as usize;
    let from_peer = sel & 0x80 != 0;
    let (mut alice, mut bob, _) = link_stage(stage);
    let mut rng = StdRng::seed_from_u64(8);
    let third = rest.len().div_ceil(3).max(1);
    for (ep, peer) in [(&mut alice, link_addr(2)), (&mut bob, link_addr(1))] {
        let from = if from_peer { peer } else { link_addr(9) };
        for (i, d) in rest.chunks(third).enumerate() {
            let before = ep.stats().datagrams_in;
            ep.handle_datagram(Millis(LINK_NOW) + i as u64, link_unix(), from, d, &mut rng);
            assert_eq!(
                ep.stats().datagrams_in,
                before + 1,
                "every datagram is counted"
            );
        }
        for t in [1_000, 120_000] {
            ep.handle_timeout(Millis(LINK_NOW) + t, link_unix(), &mut rng);
        }
        while ep.poll_transmit().is_some() {}
        while ep.poll_event().is_some() {}
        let _ = ep.poll_timeout();
    }
}

/// Overlay cores fed arbitrary messages from a supernode and a client.
pub fn overlay_cores(b: &[u8]) {
    use crate::overlay::{ClientConfig, ClientCore, SupernodeConfig, SupernodeCore};
    let (a, d, c) = keys();
    let mut rng = StdRng::seed_from_u64(9);
    let sd = DeviceIdentity::generate(&mut rng);
    let sn_name = Username::parse("sn1").unwrap_or_else(|_| unreachable!());
    let sc = Certificate::issue(
        &a,
        9,
        Role::Supernode,
        0,
        u64::MAX / 2,
        &sn_name,
        sd.ed25519_public(),
        sd.x25519_public(),
    );
    let mut sn = SupernodeCore::new(
        a.public(),
        &sc,
        link_addr(7),
        vec![link_addr(6)],
        SupernodeConfig::default(),
        1,
        Millis(LINK_NOW),
    );
    let mut cl = ClientCore::new(
        d,
        c.clone(),
        a.public(),
        vec![link_addr(7)],
        ClientConfig::default(),
        Millis(LINK_NOW),
    );
    cl.handle_timeout(Millis(LINK_NOW), UnixMillis(LINK_NOW), &mut rng);
    // Attach the client for real, so that client-only paths are reached.
    let attach: Vec<_> = cl.drain_transmits().collect();
    for t in attach {
        sn.handle_message(
            Millis(LINK_NOW),
            UnixMillis(LINK_NOW),
            link_addr(1),
            &c,
            &t.bytes,
            &mut rng,
        );
    }
    let replies: Vec<_> = sn.drain_transmits().collect();
    for t in replies {
        cl.handle_message(
            Millis(LINK_NOW),
            UnixMillis(LINK_NOW),
            link_addr(7),
            &t.bytes,
        );
    }
    sn.handle_message(
        Millis(LINK_NOW),
        UnixMillis(LINK_NOW),
        link_addr(1),
        &c,
        b,
        &mut rng,
    );
    sn.handle_message(
        Millis(LINK_NOW),
        UnixMillis(LINK_NOW),
        link_addr(6),
        &sc,
        b,
        &mut rng,
    );
    cl.handle_message(Millis(LINK_NOW), UnixMillis(LINK_NOW), link_addr(7), b);
    sn.handle_timeout(
        Millis(LINK_NOW + 10_000),
        UnixMillis(LINK_NOW + 10_000),
        &mut rng,
    );
    cl.handle_timeout(
        Millis(LINK_NOW + 10_000),
        UnixMillis(LINK_NOW + 10_000),
        &mut rng,
    );
    let _ = sn.drain_transmits().count();
    let _ = cl.drain_transmits().count();
}

/// A valid envelope from alice to herself (the fixed keys), so that
/// mutations of it reach the decryption and signature checks.
pub fn envelope_seed() -> Vec<u8> {
    let (_, d, c) = keys();
    let mut rng = StdRng::seed_from_u64(10);
    crate::overlay::envelope::seal(
        &mut rng,
        &d,
        &c,
        &c,
        crate::overlay::envelope::SealArgs {
            id: [5; 16],
            kind: 1,
            payload: b"hello",
            created_ms: LINK_NOW,
            ttl_ms: 60_000,
            store: true,
        },
    )
    .unwrap_or_default()
}

/// The envelope decoder, and opening arbitrary bytes as the recipient.
pub fn envelope(b: &[u8]) {
    use crate::overlay::envelope::{Sealed, open};
    if let Ok(s) = Sealed::decode(b) {
        assert_eq!(s.encode(), b);
        let _ = s.header.check_lifetime(UnixMillis(LINK_NOW));
    }
    let (a, d, _) = keys();
    let _ = open(b, &d, "alice", &a.public(), UnixMillis(LINK_NOW));
}

/// The revocation list: decodes, re-encodes to the same bytes, and its
/// checks never panic.
pub fn revocation(b: &[u8]) {
    use crate::identity::revocation::{RevocationList, Revoked};
    if let Ok(l) = RevocationList::decode(b) {
        assert_eq!(l.encode(), b);
        let (a, _, _) = keys();
        let _ = l.verify(&a.public(), UnixMillis(LINK_NOW).secs());
        let mut r = Revoked::default();
        let _ = r.update(&l);
        let _ = r.refuses("alice", &[0; 32]);
    }
}

/// Every plain decoder.
pub fn decoders(b: &[u8]) {
    revocation(b);
    datagram(b);
    if let Ok(f) = Frame::decode(b) {
        assert_eq!(Frame::encode(f.kind, f.payload).ok().as_deref(), Some(b));
    }
    let _ = Frame::decode_prefix(b);
    if let Ok(c) = Certificate::decode(b) {
        assert_eq!(c.encode(), b);
        let _ = c.verify(&[0; 32], UnixSecs(0));
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
        assert_eq!(p.encode().ok().as_deref(), Some(b));
    }
    if let Ok(m) = Msg::decode(b) {
        assert_eq!(m.encode(), b);
    }
    if let Ok(r) = PresenceRecord::decode(b) {
        assert_eq!(r.encode(), b);
        let _ = r.verify(&[0; 32], UnixSecs(0));
    }
    // A `Refresh` applied to held bytes, and a delta taken between two
    // byte strings (the halves of the input).
    if let Some(v) = crate::overlay::record::with_timing(b, &[7; 32], &[9; 64]) {
        assert_eq!(v.len(), b.len());
    }
    let (x, y) = b.split_at(b.len() / 2);
    let _ = crate::overlay::record::timing_delta(x, y);
    envelope(b);
    app_payloads(b);
}

/// Chat and contacts payloads (the first byte picks the envelope kind).
pub fn app_payloads(b: &[u8]) {
    use crate::chat::ChatPayload;
    use crate::contacts::ContactPayload;
    let Some((&k, rest)) = b.split_first() else {
        return;
    };
    // Kinds 0-15: chat (1, 2, 5, 6), its history sync (8, 9), contacts
    // (3, 4, 7) and unknown (0, 10-15).
    let k = k % 16;
    if let Ok(p) = ChatPayload::decode(k, rest) {
        assert_eq!(p.encode(), rest);
    }
    if let Ok(p) = crate::chat::HistoryPayload::decode(k, rest) {
        assert_eq!(p.kind(), k);
        assert_eq!(p.encode(), rest);
    }
    if let Ok(p) = ContactPayload::decode(k, rest) {
        assert_eq!(p.encode(), rest);
    }
}

/// The authority core: arbitrary frames before a handshake, and arbitrary
/// requests sealed in a real channel (so they reach the request decoder).
pub fn authority_core(b: &[u8]) {
    let (a, d, _) = keys();
    let mut core = AuthorityCore::new(a.clone(), Policy::default());
    let now = UnixMillis(1_800_000_000_000);
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
    let Ok((mut client, _)) = LoginClient::start(&d, a.public(), UnixMillis(0)) else {
        return;
    };
    let kind = b.first().copied().unwrap_or(0) % 6;
    let _ = client.on_frame(
        UnixMillis(0),
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
        let _ = r.read(UnixSecs(5), x);
        let _ = r.read(UnixSecs(5), y);
    }
    if let Ok((mut i, _)) = ChannelHandshake::initiate(&d, &cert, a.public()) {
        let _ = i.read(UnixSecs(5), x);
        let _ = i.read(UnixSecs(5), y);
    }
}

/// The config parser on arbitrary text.
pub fn config(b: &[u8]) {
    if let Ok(s) = std::str::from_utf8(b) {
        let _ = crate::config::Config::parse(s, std::path::Path::new("fuzz.toml"));
    }
}

/// Media and call signalling: the decoders, a media session fed the bytes
/// as a datagram and as the authentic body of an audio packet and of a
/// report (so they reach the report decoder and libopus), and a call core
/// fed them as a message in every state.
pub fn media(b: &[u8]) {
    use crate::call::{CallConfig, CallCore, Msg as CallMsg};
    use crate::media::packet::{Header, Kind, Sealer};
    use crate::media::report::{REPORT_LEN, Report};
    use crate::media::{MediaConfig, MediaKeys, MediaSession, Side};
    let _ = Header::parse(b);
    if let Ok(r) = Report::decode(b) {
        assert_eq!(&r.encode()[..], &b[..REPORT_LEN]);
    }
    if let Ok((id, m)) = CallMsg::decode(b) {
        assert_eq!(m.encode(id), b);
    }
    let ours = MediaKeys::derive(&[1; 32], Side::Caller);
    let theirs = MediaKeys::derive(&[1; 32], Side::Callee);
    let Ok(mut s) = MediaSession::new(MediaConfig::default(), &ours, 1, Millis::ZERO) else {
        return;
    };
    s.handle_datagram(Millis::ZERO, b);
    let mut sealer = Sealer::new(&theirs.send, 2);
    for (i, kind) in [Kind::Audio, Kind::Report].into_iter().enumerate() {
        if let Ok(p) = sealer.seal(kind, false, i as u16, 0, b) {
            s.handle_datagram(Millis(1), &p);
        }
    }
    let mut out = [0i16; 960];
    s.pull_playback(Millis(200), &mut out);
    s.pull_playback(Millis(220), &mut out);
    s.handle_timeout(Millis(5_000));
    while s.poll_transmit().is_some() {}
    while s.poll_event().is_some() {}

    // The call core: the bytes as a message about no call, then about a
    // call in each state (the call id patched in when long enough).
    // Devices: bob's two (the second rings too, the first answers) and
    // alice's one.
    let (desk, laptop, home) = ([1u8; 32], [2u8; 32], [3u8; 32]);
    let mut c = CallCore::new(CallConfig::default());
    c.handle_message(Millis(0), UnixMillis(0), "bob", desk, UnixMillis(0), b);
    let id = 7u64;
    let mut patched = b.to_vec();
    if patched.len() >= 10 {
        patched[2..10].copy_from_slice(&id.to_be_bytes());
    }
    let _ = c.invite(Millis(0), "bob", id, [1; 16]);
    c.handle_message(
        Millis(1),
        UnixMillis(1),
        "bob",
        desk,
        UnixMillis(1),
        &patched,
    );
    c.handle_message(
        Millis(1),
        UnixMillis(1),
        "bob",
        laptop,
        UnixMillis(1),
        &CallMsg::Ringing.encode(id),
    );
    c.handle_message(
        Millis(2),
        UnixMillis(2),
        "bob",
        desk,
        UnixMillis(2),
        &CallMsg::Accept {
            nonce: [2; 16],
            device: crate::call::DeviceName::new("desk"),
        }
        .encode(id),
    );
    c.handle_message(
        Millis(3),
        UnixMillis(3),
        "bob",
        desk,
        UnixMillis(3),
        &patched,
    );
    c.handle_message(
        Millis(3),
        UnixMillis(3),
        "bob",
        laptop,
        UnixMillis(3),
        &patched,
    );
    c.media_flowing(Millis(4), id);
    c.handle_message(
        Millis(5),
        UnixMillis(5),
        "bob",
        desk,
        UnixMillis(5),
        &patched,
    );
    let mut callee = CallCore::new(CallConfig::default());
    callee.handle_message(
        Millis(0),
        UnixMillis(0),
        "alice",
        home,
        UnixMillis(0),
        &CallMsg::Invite { nonce: [1; 16] }.encode(id),
    );
    callee.handle_message(
        Millis(1),
        UnixMillis(1),
        "alice",
        home,
        UnixMillis(1),
        &patched,
    );
    // Moving calls (issue 17): the callee's call active, the bytes from
    // another device of the caller (a take-over); a device of ours fed
    // them as a note from our other device, then taking that call over.
    let _ = callee.accept(Millis(2), id, [2; 16]);
    callee.media_flowing(Millis(3), id);
    callee.handle_message(Millis(4), UnixMillis(4), "alice", [4; 32], UnixMillis(4), b);
    let mut own = CallCore::new(CallConfig::default());
    own.set_account("carol");
    own.handle_message(Millis(0), UnixMillis(0), "carol", home, UnixMillis(0), b);
    if own.take_over(Millis(1), 9, [3; 16]).is_ok() {
        let peer = own.peer(9).unwrap_or_default().to_owned();
        let mut to9 = b.to_vec();
        if to9.len() >= 10 {
            to9[2..10].copy_from_slice(&9u64.to_be_bytes());
        }
        own.handle_message(Millis(2), UnixMillis(2), &peer, desk, UnixMillis(2), &to9);
    }
    for t in [10_000, 70_000, 200_000] {
        c.handle_timeout(Millis(t));
        callee.handle_timeout(Millis(t));
        own.handle_timeout(Millis(t));
    }
    while c.poll_transmit().is_some()
        || callee.poll_transmit().is_some()
        || own.poll_transmit().is_some()
    {}
}

/// Valid STUN messages, as seeds for the STUN fuzz: requests with and
/// without CHANGE-REQUEST, and a full RFC 5780 answer.
pub fn stun_seeds() -> Vec<Vec<u8>> {
    use crate::nat::stun::binding_request;
    let mut v = vec![
        binding_request([1; 12], false, false),
        binding_request([2; 12], true, true),
        binding_request([3; 12], false, true),
    ];
    let mut s = crate::nat::StunServer::new(crate::nat::StunServerConfig {
        primary: link_addr(3478),
        alt: Some(SocketAddr::from(([127, 0, 0, 2], 3479))),
    });
    s.handle_datagram(Millis::ZERO, link_addr(3478), link_addr(9), &v[1].clone());
    s.handle_datagram(Millis::ZERO, link_addr(3478), link_addr(9), &v[0].clone());
    while let Some(t) = s.poll_transmit() {
        v.push(t.bytes);
    }
    v
}

/// STUN: the header check and classifier, the stun-rs decoder, the Binding response
/// parser, the server (with a second address) and a running detector
/// must all take any datagram without panicking; a request the server
/// answers gets a response the parser reads back.
pub fn stun(b: &[u8]) {
    use crate::nat::stun::{decode, parse_binding_response};
    use crate::nat::{DetectorConfig, NatDetector, StunServer, StunServerConfig};
    use crate::wire::stun::peek;
    let h = peek(b);
    datagram(b);
    let _ = decode(b);
    let _ = parse_binding_response(b);
    let primary = link_addr(3478);
    let mut s = StunServer::new(StunServerConfig {
        primary,
        alt: Some(SocketAddr::from(([127, 0, 0, 2], 3479))),
    });
    s.handle_datagram(Millis::ZERO, primary, link_addr(9), b);
    if let Some(t) = s.poll_transmit() {
        let r = parse_binding_response(&t.bytes).ok();
        assert!(r.is_some(), "the server's answer must parse");
        assert_eq!(r.map(|r| r.transaction), h.map(|h| h.transaction));
    }
    let mut d = NatDetector::new(DetectorConfig::default());
    let mut rng = StdRng::seed_from_u64(5);
    d.set_servers(vec![primary]);
    d.start(Millis(LINK_NOW), "fuzz", &mut rng);
    let _ = d.handle_datagram(Millis(LINK_NOW + 1), primary, b);
    d.handle_timeout(Millis(LINK_NOW + 10_000), &mut rng);
    while d.poll_event().is_some() {}
}

/// A fixed ICE agent pair state for the ICE fuzz: our agent with the
/// peer's offer applied, and the peer's offer (password known to seeds).
fn ice_agent() -> (crate::ice::IceAgent, crate::ice::IceOffer) {
    use crate::ice::{Candidate, CandidateKind, IceAgent, IceConfig, IceRole, MappingHint};
    let mut rng = StdRng::seed_from_u64(5);
    let host = |p: u16| SocketAddr::from(([10, 0, 0, 1], p));
    let mut a = IceAgent::new(
        IceConfig::default(),
        IceRole::Controlled,
        9,
        Millis::ZERO,
        vec![Candidate::new(CandidateKind::Host, host(1), 65535)],
        &[(host(3478), SocketAddr::from(([192, 0, 2, 1], 50000)))],
        MappingHint::EndpointIndependent,
        &mut rng,
    );
    let b = IceAgent::new(
        IceConfig::default(),
        IceRole::Controlling,
        9,
        Millis::ZERO,
        vec![Candidate::new(CandidateKind::Host, host(2), 65535)],
        &[],
        MappingHint::DestinationDependent,
        &mut rng,
    );
    let offer = b.local_offer();
    a.set_remote(Millis::ZERO, &offer);
    (a, offer)
}

/// Valid ICE encodings: an offer, checks and responses keyed as the fuzz
/// agent expects.
pub fn ice_seeds() -> Vec<Vec<u8>> {
    use crate::ice::check::{self, Request, RoleAttr};
    let (a, offer) = ice_agent();
    let mine = a.local_offer();
    let req = Request {
        txid: [3; 12],
        username: format!("{}:{}", mine.ufrag, offer.ufrag),
        priority: 1 << 24,
        use_candidate: true,
        role: Some(RoleAttr::Controlling(77)),
    };
    let mut v = vec![offer.encode(), mine.encode()];
    v.extend(check::encode_request(&req, &mine.pwd).ok());
    v.extend(check::encode_success([3; 12], link_addr(9), &offer.pwd).ok());
    v.extend(check::encode_error([3; 12], check::ROLE_CONFLICT, &offer.pwd).ok());
    v
}

/// ICE: the offer decoder (round trip), the check decoders, and an agent
/// fed the bytes on both of its bases, then its timers.
pub fn ice(b: &[u8]) {
    use crate::ice::{IceOffer, Via, check};
    if let Ok(o) = IceOffer::decode(b) {
        assert_eq!(o.encode(), b, "offer re-encodes differently");
    }
    let _ = check::peek(b);
    let _ = check::open(b, "0123456789abcdefghijkl");
    let (mut a, _) = ice_agent();
    let mut rng = StdRng::seed_from_u64(6);
    let from = SocketAddr::from(([10, 0, 0, 2], 2));
    a.handle_stun(Millis(1), Via::Direct, from, b, &mut rng);
    a.handle_stun(
        Millis(2),
        Via::Relay(SocketAddr::from(([10, 0, 0, 1], 3478))),
        from,
        b,
        &mut rng,
    );
    for t in [10, 1_000, 20_000] {
        a.handle_timeout(Millis(t), &mut rng);
        while a.poll_transmit().is_some() {}
        while a.poll_event().is_some() {}
    }
}

/// A TURN client (at `link_addr(1)`) with an allocation on a TURN server,
/// a channel to `link_addr(9)` and a permission for it, and every message
/// they exchanged getting there (seeds: authenticated requests, responses,
/// ChannelData, Send and Data indications).
pub fn turn_pair() -> (
    crate::relay::TurnServer,
    crate::relay::TurnClient,
    Vec<Vec<u8>>,
) {
    use crate::relay::*;
    let now = Millis(LINK_NOW);
    let mut server = TurnServer::new(
        TurnServerConfig {
            secret: b"fuzz".to_vec(),
            // The fuzz peers live on loopback.
            allow_loopback_peers: true,
            ..Default::default()
        },
        [1; 32],
        now,
    );
    let c = issue(b"fuzz", "alice", UnixMillis(now.get()).secs().get(), 3600);
    let mut client = TurnClient::new(
        TurnClientConfig::udp(link_addr(3478)),
        TurnCredentials {
            username: c.username,
            password: c.password,
        },
        [2; 32],
        now,
    );
    let me = ClientAddr::udp(link_addr(1));
    let mut sent = Vec::new();
    client.allocate(now);
    let _ = client.bind_channel(now, link_addr(9));
    for round in 0..8 {
        if round == 5 {
            let _ = client.send_to(now, link_addr(9), b"channel data");
            let _ = client.send_to(now, link_addr(10), b"send indication");
            server.handle_peer(now, 1, link_addr(9), b"from the peer");
        }
        while let Some(t) = client.poll_transmit() {
            server.handle_client(now, UnixMillis(now.get()).secs(), me, &t.bytes);
            sent.push(t.bytes);
        }
        while let Some(e) = server.poll_event() {
            if let ServerEvent::OpenRelay { alloc, .. } = e {
                server.relay_opened(now, alloc, Ok(link_addr(50_000)));
            }
        }
        while let Some(t) = server.poll_transmit() {
            if let Via::Client(_) = t.via {
                client.handle_input(now, &t.bytes);
                sent.push(t.bytes);
            }
        }
        while client.poll_event().is_some() {}
    }
    let data_ind = crate::relay::stunmsg::data_indication(
        crate::wire::stun::method::DATA,
        &[5; 12],
        link_addr(10),
        b"data indication",
    );
    sent.push(data_ind);
    (server, client, sent)
}

/// The shared socket's demultiplexer: any bytes classify, and what they
/// classify as is what that protocol's decoder reads (STUN headers and
/// ChannelData re-encode to the same bytes).
pub fn datagram(b: &[u8]) {
    use crate::wire::stun::{
        ChannelData, Datagram, HEADER_LEN, Header, LINK_KINDS, MEDIA_FIRST_BYTES, classify,
    };
    match classify(b) {
        Datagram::Link => {
            if let Ok(f) = Frame::decode(b) {
                assert!(LINK_KINDS.contains(&f.kind));
            }
        }
        Datagram::Stun(h) => {
            assert_eq!(Header::read(b), Ok(h));
            assert_eq!(h.encode()[..], b[..HEADER_LEN]);
        }
        Datagram::ChannelData(cd) => {
            assert_eq!(ChannelData::decode(b), Ok(cd));
            let again = ChannelData::encode(cd.channel, cd.data, false);
            assert_eq!(&again[..], &b[..again.len()]);
        }
        Datagram::Media => assert!(b.first().is_some_and(|f| MEDIA_FIRST_BYTES.contains(f))),
        Datagram::Unknown => {
            assert!(Header::read(b).is_err() && ChannelData::decode(b).is_err());
        }
    }
}

/// The relay's decoders: ChannelData, STUN headers, the TCP framer, Send
/// and Data indications and the stun-rs codec itself.
pub fn relay_decoders(b: &[u8]) {
    use crate::relay::framing::{ChannelData, StreamFramer};
    if let Ok(cd) = ChannelData::decode(b) {
        let again = ChannelData::encode(cd.channel, cd.data, false);
        assert_eq!(&again[..], &b[..again.len()]);
    }
    datagram(b);
    let _ = crate::relay::stunmsg::parse_data_indication(b);
    let _ = crate::relay::stunmsg::decode(b);
    let mut f = StreamFramer::new();
    for chunk in b.chunks(7) {
        f.push(chunk);
        while let Ok(Some(m)) = f.next_message() {
            assert!(!m.is_empty());
        }
    }
}

/// The TURN server and client cores, with an allocation, channel and
/// permission in place, fed arbitrary messages from every direction.
pub fn turn_cores(b: &[u8]) {
    use crate::relay::{ClientAddr, Transport};
    let (mut s, mut c, _) = turn_pair();
    let now = Millis(LINK_NOW + 1);
    s.handle_client(
        now,
        UnixMillis(now.get()).secs(),
        ClientAddr::udp(link_addr(1)),
        b,
    );
    s.handle_client(
        now,
        UnixMillis(now.get()).secs(),
        ClientAddr::udp(link_addr(2)),
        b,
    );
    s.handle_client(
        now,
        UnixMillis(now.get()).secs(),
        ClientAddr {
            transport: Transport::Tcp(1),
            addr: link_addr(1),
        },
        b,
    );
    s.handle_peer(now, 1, link_addr(9), b);
    s.handle_peer(now, 77, link_addr(9), b);
    let mut f = crate::relay::framing::StreamFramer::new();
    f.push(b);
    while let Ok(Some(m)) = f.next_message() {
        let m = m.to_vec();
        s.handle_client(
            now,
            UnixMillis(now.get()).secs(),
            ClientAddr::udp(link_addr(1)),
            &m,
        );
    }
    c.handle_input(now, b);
    for t in [1_000, 700_000, 4_000_000] {
        s.handle_timeout(Millis(LINK_NOW + t));
        c.handle_timeout(Millis(LINK_NOW + t));
    }
    s.transport_closed(Transport::Tcp(1));
    while s.poll_transmit().is_some() {}
    while s.poll_event().is_some() {}
    while c.poll_transmit().is_some() {}
    while c.poll_event().is_some() {}
}

/// The node's TCP stream decoders: telling link streams from TURN, and
/// cutting link frames from a byte stream however it arrives.
pub fn tcp_streams(b: &[u8]) {
    use crate::node::tcp::{is_link_start, link_frame_len};
    let _ = is_link_start(b);
    let mut buf = Vec::new();
    for chunk in b.chunks(5) {
        buf.extend_from_slice(chunk);
        loop {
            match link_frame_len(&buf) {
                Ok(Some(n)) => {
                    assert!(n <= buf.len() && n > 2);
                    buf.drain(..n);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// The file transfer decoders (the first byte picks the envelope kind for
/// the signal decoder), and a receiving core fed what decodes.
pub fn transfer(b: &[u8]) {
    use crate::transfer::{LinkMsg, Signal, TransferConfig, Transfers};
    if let Some((&k, rest)) = b.split_first() {
        let kind = crate::transfer::wire::kind::OFFER + k % 4;
        if let Ok(s) = Signal::decode(kind, rest) {
            assert_eq!(s.encode(), rest);
            let mut t = Transfers::new(TransferConfig::default(), 1);
            t.on_signal(
                Millis(LINK_NOW),
                "bob",
                crate::transfer::Standing::Contact,
                s,
            );
            while t.poll_output().is_some() {}
        }
    }
    if let Ok(m) = LinkMsg::decode(b) {
        assert_eq!(m.encode(), b);
        let mut t = Transfers::new(TransferConfig::default(), 1);
        t.on_link(Millis(LINK_NOW), "bob", &m);
        t.handle_timeout(Millis(LINK_NOW + 10_000));
        while t.poll_output().is_some() {}
    }
}

/// The conference message decoder ([`crate::conference::ConfMsg::decode`]):
/// what decodes encodes back to the same message; it is then fed to an
/// invited core, to a running starter's core as from a member and a
/// stranger, and to the busy reply.
pub fn conference(b: &[u8]) {
    use crate::conference::{ConfConfig, ConfMsg, ConferenceCore, Member, Reach};
    let Ok((id, m)) = ConfMsg::decode(b) else {
        return;
    };
    assert_eq!(ConfMsg::decode(&m.encode(id)), Ok((id, m)));
    let me = |name: &str| Member {
        name: name.into(),
        nonce: [1; 16],
        uplink_kbps: 1000,
        reach: Reach::Cone,
        muted: false,
    };
    if let Some(mut c) =
        ConferenceCore::invited(ConfConfig::default(), me("cat"), "ann", b, Millis(0))
    {
        let _ = c.accept(Millis(1));
        while c.poll_transmit().is_some() {}
        while c.poll_event().is_some() {}
    }
    let users = ["bob".to_owned()];
    let Ok(mut c) =
        ConferenceCore::start(ConfConfig::default(), id, me("ann"), &users, 0, Millis(0))
    else {
        return;
    };
    for from in ["bob", "eve"] {
        c.handle_message(Millis(10), from, b);
    }
    c.handle_timeout(Millis(10_000));
    while c.poll_transmit().is_some() {}
    while c.poll_event().is_some() {}
    if let Some(r) = ConferenceCore::busy_reply(b) {
        assert!(matches!(ConfMsg::decode(&r), Ok((i, ConfMsg::Busy)) if i == id));
    }
}

/// Valid conference messages, as seeds for [`conference`].
pub fn conference_seeds() -> Vec<Vec<u8>> {
    use crate::conference::{ConfMsg, Member, Reach};
    let m = |name: &str| Member {
        name: name.into(),
        nonce: [7; 16],
        uplink_kbps: 900,
        reach: Reach::Cone,
        muted: false,
    };
    [
        ConfMsg::Invite {
            starter: "ann".into(),
            epoch: 1,
            mixer: "ann".into(),
            replaces: 0,
            members: vec![m("ann")],
        },
        ConfMsg::Join { member: m("bob") },
        ConfMsg::Roster {
            epoch: 2,
            mixer: "bob".into(),
            members: vec![m("ann"), m("bob")],
        },
        ConfMsg::Leave,
        ConfMsg::Mute {
            target: "bob".into(),
            on: true,
        },
        ConfMsg::Levels {
            levels: vec![("ann".into(), 20)],
        },
        ConfMsg::Busy,
    ]
    .iter()
    .map(|m| m.encode(1))
    .collect()
}

/// The group chat decoders (the first byte picks the envelope kind): what
/// decodes encodes back to the same bytes, and a core that invited the
/// sender is fed it, as from a contact, then again (three times, the last
/// in a later sync window) with its group set to the core's own; the
/// bytes are also tried as one signed op, and fed as from another device
/// of the core's own account.
pub fn group(b: &[u8]) {
    use crate::group::wire::{GroupPayload, Op, kind};
    use crate::group::{GroupConfig, GroupCore, GroupStore, Standing};
    use crate::time::{Millis, UnixMillis};
    if let Ok(op) = Op::decode(b) {
        assert_eq!(op.encode(), b);
        let _ = op.verify(&keys().0.public());
    }
    let Some((&k, rest)) = b.split_first() else {
        return;
    };
    let k = match k % 3 {
        0 => kind::GROUP,
        1 => kind::GROUP_ACK,
        _ => kind::GROUP_ASK,
    };
    let Ok(p) = GroupPayload::decode(k, rest) else {
        return;
    };
    assert_eq!(p.encode(), rest);
    let (a, _, alice) = keys();
    let mut rng = StdRng::seed_from_u64(5);
    let d = DeviceIdentity::generate(&mut rng);
    let user = Username::parse("bob").unwrap_or_else(|_| unreachable!());
    let bob = Certificate::issue(
        &a,
        8,
        Role::User,
        0,
        u64::MAX / 2,
        &user,
        d.ed25519_public(),
        d.x25519_public(),
    );
    let Ok(store) = GroupStore::in_memory() else {
        return;
    };
    let Ok(mut core) = GroupCore::new(
        store,
        d,
        bob,
        a.public(),
        GroupConfig::default(),
        1,
        Millis(0),
    ) else {
        return;
    };
    let mut sink = Discard::default();
    if let Ok(g) = core.create(Millis(0), UnixMillis(1_000), "g", &mut sink) {
        let _ = core.invite(Millis(0), UnixMillis(1_000), &g, "alice", &mut sink);
    }
    for standing in [Standing::Contact, Standing::Stranger] {
        core.on_envelope(Millis(1), &alice, standing, k, rest, &mut sink);
    }
    // From another device of the core's own account (asks, own copies).
    let d2 = DeviceIdentity::generate(&mut rng);
    let bob2 = Certificate::issue(
        &a,
        9,
        Role::User,
        0,
        u64::MAX / 2,
        &user,
        d2.ed25519_public(),
        d2.x25519_public(),
    );
    core.on_envelope(Millis(1), &bob2, Standing::Stranger, k, rest, &mut sink);
    // The same item about the core's own group, where alice is a member:
    // keys, messages and sync requests (ids, want, pull) are acted on.
    let own = core.groups().first().map(|i| i.id);
    if let (Some(g), GroupPayload::Item { item, mut body }) = (own, p) {
        body.set_group(g);
        let b = GroupPayload::Item { item, body }.encode();
        for t in [2, 3, 40_000] {
            core.on_envelope(Millis(t), &alice, Standing::Contact, k, &b, &mut sink);
        }
    }
    core.handle_timeout(Millis(1_000_000), &mut sink);
    while core.poll_event().is_some() {}
}

/// An envelope sink that keeps nothing.
#[derive(Default)]
struct Discard(u64);

impl crate::overlay::envelope::EnvelopeSink for Discard {
    fn send_envelope(&mut self, _: &str, _: u8, _: &[u8], _: bool) -> crate::overlay::EnvelopeId {
        self.0 += 1;
        let mut id = [0; 16];
        id[..8].copy_from_slice(&self.0.to_be_bytes());
        id
    }

    fn send_envelope_to_device(
        &mut self,
        to: &str,
        _: &[u8; 32],
        k: u8,
        p: &[u8],
        store: bool,
    ) -> crate::overlay::EnvelopeId {
        self.send_envelope(to, k, p, store)
    }
}

/// Valid group chat payloads, as seeds for [`group`].
pub fn group_seeds() -> Vec<Vec<u8>> {
    group_samples()
        .into_iter()
        .map(|(k, mut bytes)| {
            bytes.insert(0, k - crate::group::wire::kind::GROUP);
            bytes
        })
        .collect()
}

/// Valid payloads of each kind, as `(kind, bytes)` (fuzz seeds).
fn group_samples() -> Vec<(u8, Vec<u8>)> {
    let (_, d, c) = keys();
    let nonce = [3; 16];
    let g = crate::group::wire::group_id(&c.username, &nonce);
    let ops = [
        crate::group::wire::Op::sign(
            &d,
            &c,
            g,
            1,
            10,
            crate::group::wire::Action::Create {
                nonce,
                name: "friends".into(),
            },
        ),
        crate::group::wire::Op::sign(
            &d,
            &c,
            g,
            2,
            10,
            crate::group::wire::Action::Invite { user: "bob".into() },
        ),
        crate::group::wire::Op::sign(&d, &c, g, 3, 10, crate::group::wire::Action::Leave),
    ]
    .map(|o| o.encode());
    let ct = crate::group::wire::seal_message(&[1; 32], &g, &c.username, 1, 1, 5, "hello");
    [
        crate::group::wire::GroupPayload::Item {
            item: [1; 16],
            body: crate::group::wire::Body::Ops {
                group: g,
                ops: ops.iter().map(Vec::as_slice).collect(),
            },
        },
        crate::group::wire::GroupPayload::Item {
            item: [2; 16],
            body: crate::group::wire::Body::Key {
                group: g,
                key_id: 1,
                key: [1; 32],
                digest: Some(crate::group::wire::digest([&[1; 16]])),
            },
        },
        crate::group::wire::GroupPayload::Item {
            item: [3; 16],
            body: crate::group::wire::Body::Msg {
                group: g,
                key_id: 1,
                seq: 1,
                prev: 0,
                ct: &ct,
                digest: None,
            },
        },
        crate::group::wire::GroupPayload::Item {
            item: [4; 16],
            body: crate::group::wire::Body::Ids {
                group: g,
                start: (2, [0; 16]),
                end: Some((9, [0; 16])),
                below: crate::group::wire::digest([&[2; 16]]),
                ids: vec![[1; 16], [2; 16]],
            },
        },
        crate::group::wire::GroupPayload::Item {
            item: [5; 16],
            body: crate::group::wire::Body::Want {
                group: g,
                ids: vec![[3; 16]],
            },
        },
        crate::group::wire::GroupPayload::Item {
            item: [6; 16],
            body: crate::group::wire::Body::Pull {
                group: g,
                before: (3, [3; 16]),
            },
        },
        crate::group::wire::GroupPayload::Ack { item: [1; 16] },
        crate::group::wire::GroupPayload::Ask {
            groups: vec![g, [7; 16]],
        },
    ]
    .iter()
    .map(|p| (p.kind(), p.encode()))
    .collect()
}

/// Valid file transfer messages, as seeds for [`transfer`].
pub fn transfer_seeds() -> Vec<Vec<u8>> {
    crate::transfer::wire::samples()
        .into_iter()
        .map(|(k, mut bytes)| {
            if k != 0 {
                bytes.insert(0, k - crate::transfer::wire::kind::OFFER);
            }
            bytes
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every conference seed decodes (the fuzz starts past the decoder's
    /// checks) and runs through the target.
    #[test]
    fn conference_seeds_decode() {
        let seeds = conference_seeds();
        assert_eq!(seeds.len(), 7);
        for s in &seeds {
            assert!(crate::conference::ConfMsg::decode(s).is_ok(), "{s:?}");
            conference(s);
        }
        let all = super::seeds();
        assert!(seeds.iter().all(|s| all.contains(s)));
    }

    /// The seeds of every chat kind decode as app payloads (the fuzz
    /// starts past the decoder's checks), the device copies included.
    #[test]
    fn chat_seeds_decode() {
        use crate::overlay::envelope::kind;
        let mut kinds = Vec::new();
        for s in super::seeds() {
            if let Some((&k, rest)) = s.split_first() {
                if let Ok(p) = crate::chat::ChatPayload::decode(k, rest) {
                    kinds.push(p.kind());
                    app_payloads(&s);
                }
                if let Ok(p) = crate::chat::HistoryPayload::decode(k, rest) {
                    kinds.push(p.kind());
                    app_payloads(&s);
                }
            }
        }
        for k in [
            kind::CHAT,
            kind::CHAT_SENT,
            kind::CHAT_READ,
            kind::CHAT_HISTORY_ASK,
            kind::CHAT_HISTORY,
        ] {
            assert!(kinds.contains(&k), "no seed of kind {k}");
        }
    }

    use crate::wire::stun::{ChannelData, Class, Datagram, classify, method};

    /// What stun-rs reads from a STUN message, as our header names it.
    fn stun_rs_header(b: &[u8]) -> Option<(u16, Class)> {
        let m = crate::relay::stunmsg::decode(b)?;
        let class = match m.class() {
            stun_rs::MessageClass::Request => Class::Request,
            stun_rs::MessageClass::Indication => Class::Indication,
            stun_rs::MessageClass::SuccessResponse => Class::Success,
            stun_rs::MessageClass::ErrorResponse => Class::Error,
        };
        Some((m.method().as_u16(), class))
    }

    #[test]
    fn every_encoder_output_is_classified_as_what_it_is() {
        // Link frames of a whole handshake and a message.
        let (_, _, link) = link_stage(5);
        assert!(link.len() >= 4);
        for d in &link {
            assert_eq!(classify(d), Datagram::Link, "{d:?}");
        }
        // NAT Binding requests and the server's answers, ICE checks.
        let ice = ice_seeds();
        for d in stun_seeds().iter().chain(&ice[2..]) {
            let Datagram::Stun(h) = classify(d) else {
                panic!("not STUN: {d:?}");
            };
            assert_eq!(h.method, method::BINDING);
            assert_eq!(stun_rs_header(d), Some((h.method, h.class)));
        }
        // TURN: requests, responses, Send and Data indications, ChannelData
        // both ways.
        let (_, _, turn) = turn_pair();
        let (mut stun, mut channel) = (0, 0);
        for d in &turn {
            match classify(d) {
                Datagram::Stun(h) => {
                    assert!(h.is_turn(), "{h:?}");
                    assert_eq!(stun_rs_header(d), Some((h.method, h.class)));
                    stun += 1;
                }
                Datagram::ChannelData(cd) => {
                    assert_eq!(ChannelData::decode(d), Ok(cd));
                    channel += 1;
                }
                k => panic!("{k:?}: {d:?}"),
            }
        }
        assert!(
            stun >= 6 && channel >= 2,
            "{stun} STUN, {channel} ChannelData"
        );
        for pad in [false, true] {
            let d = ChannelData::encode(0x4000, b"x", pad);
            assert!(matches!(classify(&d), Datagram::ChannelData(cd) if cd.data == b"x"));
        }
        // Sealed media packets of both kinds.
        use crate::media::packet::{Kind, Sealer};
        let keys = crate::media::MediaKeys::derive(&[1; 32], crate::media::Side::Caller);
        let mut sealer = Sealer::new(&keys.send, 2);
        for (kind, marker) in [
            (Kind::Audio, true),
            (Kind::Audio, false),
            (Kind::Report, false),
        ] {
            let p = sealer.seal(kind, marker, 7, 960, &[1, 2, 3]).unwrap();
            assert_eq!(classify(&p), Datagram::Media);
        }
    }
}
