//! A clock step (an NTP correction, a suspend and resume) under a running
//! link and call: the wall clock moves back an hour, then forward a day,
//! through the clock abstraction ([`SteppedClock`]). The nodes' timers run
//! on the monotonic reading, so the supernode keepalives (every second,
//! dead after three), the link's retransmits and the call's media go on:
//! no detach, the call stays up and its statistics keep coming.

use natter::clock::{Clock, SteppedClock};
use natter::identity::{AuthorityKey, Certificate, DeviceIdentity, Role, Username};
use natter::link::{LinkConfig, LinkEndpoint};
use natter::media::MediaConfig;
use natter::media::audio::DeviceSpec;
use natter::node::DeviceFiles;
use natter::node::api::{CallState, Command, Event, OverlayEvent};
use natter::node::calls::CallOptions;
use natter::node::client::{self, ClientHandle, ClientSettings};
use natter::node::driver::{OverlayNode, SupernodeOptions};
use natter::overlay::{ClientConfig, SupernodeConfig, SupernodeCore};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn cert(a: &AuthorityKey, name: &str, role: Role, d: &DeviceIdentity, now: u64) -> Certificate {
    Certificate::issue(
        a,
        1,
        role,
        now - 60,
        now + 3 * 86_400,
        &Username::parse(name).unwrap(),
        d.ed25519_public(),
        d.x25519_public(),
    )
}

async fn supernode(a: &AuthorityKey, clock: Arc<dyn Clock>) -> (OverlayNode, SocketAddr) {
    let d = DeviceIdentity::generate(&mut rand::rngs::OsRng);
    let c = cert(a, "snode", Role::Supernode, &d, clock.unix_secs().get());
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let core = SupernodeCore::new(
        a.public(),
        &c,
        addr,
        vec![],
        SupernodeConfig::default(),
        1,
        clock.now(),
    );
    let link = LinkEndpoint::new(d, c, a.public(), LinkConfig::default()).unwrap();
    let node =
        OverlayNode::supernode(sock, link, core, clock, SupernodeOptions::default()).unwrap();
    (node, addr)
}

fn client(
    a: &AuthorityKey,
    dir: &Path,
    name: &str,
    sn: SocketAddr,
    clock: Arc<dyn Clock>,
) -> ClientHandle {
    let files = DeviceFiles::new(dir);
    let (d, _) = files.identity().unwrap();
    files
        .save_certificate(&cert(a, name, Role::User, &d, clock.unix_secs().get()))
        .unwrap();
    let settings = ClientSettings {
        data_dir: dir.to_owned(),
        // Never reached: the certificate is valid for days.
        authority: "127.0.0.1:9".parse().unwrap(),
        authority_key: a.public(),
        bootstrap: vec![sn],
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        overlay: ClientConfig::default(),
        renew_before_secs: 3600,
        contacts: Vec::new(),
        away_after_ms: 0,
        public_presence: true,
        paths: Default::default(),
        calls: Some(CallOptions {
            input: DeviceSpec::Tone { hz: 440.0 },
            output: DeviceSpec::Null,
            media: MediaConfig::default(),
            call: Default::default(),
            auto_answer: true,
            ringback: false,
            ringtone: false,
        }),
        user: None,
        nat: None,
        watch: Vec::new(),
        files: Default::default(),
        volunteer: None,
    };
    client::spawn(settings, clock)
}

/// Wait for an event `f` picks out; a detach or an ended call fails.
async fn until<T>(c: &mut ClientHandle, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let e = match tokio::time::timeout_at(deadline, c.events.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("the client stopped while waiting for {what}"),
            Err(_) => panic!("waited {T:?} for {what}"),
        };
        if let Event::Overlay(OverlayEvent::Detached { .. }) = &e {
            panic!("detached while waiting for {what}: {e:?}");
        }
        if let Event::Call(i) = &e
            && matches!(i.state, CallState::Ended { .. })
        {
            panic!("the call ended while waiting for {what}: {e:?}");
        }
        if let Some(t) = f(&e) {
            return t;
        }
    }
}

/// Three more statistics reports of a running call (one a second).
async fn call_goes_on(c: &mut ClientHandle, what: &str) {
    for _ in 0..3 {
        until(c, what, |e| match e {
            Event::CallStats { stats, .. } => Some(stats.clone()),
            _ => None,
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wall_clock_step_leaves_links_and_calls_running() {
    let _turn = scenario!();
    let clock = SteppedClock::new();
    let dyn_clock: Arc<dyn Clock> = clock.clone();
    let a = AuthorityKey::generate(&mut rand::rngs::OsRng);
    let (_sn, sn) = supernode(&a, dyn_clock.clone()).await;
    let dirs = tempfile::tempdir().unwrap();
    let mut alice = client(
        &a,
        &dirs.path().join("alice"),
        "alice",
        sn,
        dyn_clock.clone(),
    );
    let mut bob = client(&a, &dirs.path().join("bob"), "bob", sn, dyn_clock.clone());
    for c in [&mut alice, &mut bob] {
        until(c, "published", |e| {
            matches!(e, Event::Overlay(OverlayEvent::Published { .. })).then_some(())
        })
        .await;
    }
    alice
        .commands
        .send(Command::Call {
            username: "bob".into(),
        })
        .await
        .unwrap();
    until(&mut alice, "the call active", |e| match e {
        Event::Call(i) if i.state == CallState::Active => Some(()),
        _ => None,
    })
    .await;
    call_goes_on(&mut alice, "stats before the steps").await;
    let wall = clock.unix().get();
    clock.step_wall_ms(-3_600_000);
    assert!(
        clock.unix().get() < wall - 3_590_000,
        "the wall clock moved back"
    );
    // Keepalives every second, dead after three: five seconds without
    // them would detach both clients.
    for _ in 0..2 {
        call_goes_on(&mut alice, "stats an hour back").await;
    }
    clock.step_wall_ms(3_600_000 + 86_400_000);
    assert!(
        clock.unix().get() > wall + 86_390_000,
        "the wall clock moved on a day"
    );
    for _ in 0..2 {
        call_goes_on(&mut alice, "stats a day on").await;
    }
    bob.commands.send(Command::Quit).await.unwrap();
    alice.commands.send(Command::Quit).await.unwrap();
}
