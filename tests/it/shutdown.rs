//! SIGTERM (how systemd stops a service) and SIGINT (ctrl+c) end every
//! long-running mode cleanly with status 0: the headless client publishes
//! its offline record and stops, supernodes and the authority stop
//! serving. A panic on the signal used to exit 101.

use crate::common::procs::{Network, Proc};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// Send `signal` and wait (bounded) for the process to exit.
fn stop_with(p: &mut Proc, signal: i32) -> ExitStatus {
    // SAFETY: kill(2) on our own child's pid; the result is checked.
    assert_eq!(unsafe { libc::kill(p.child.id() as i32, signal) }, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(&p.log).unwrap_or_default();
            panic!("{} did not exit on signal {signal}; log:\n{log}", p.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_clean(p: &mut Proc, signal: i32) {
    let status = stop_with(p, signal);
    let log = std::fs::read_to_string(&p.log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{}: {status}; log:\n{log}", p.name);
    assert!(!log.contains("panicked"), "{}: {log}", p.name);
}

#[test]
fn every_mode_exits_zero_on_sigterm_and_sigint() {
    let _turn = scenario!();
    let mut net = Network::start();
    let ([mut sn1, mut sn2], boot) = net.two_supernodes(&["alice"]);
    let mut alice = net.headless("alice", &boot, &[]);
    alice.wait_for(Duration::from_secs(20), |l| l.contains("\"published\""));
    assert_clean(&mut alice, libc::SIGTERM);
    assert_clean(&mut sn2, libc::SIGTERM);
    assert_clean(&mut sn1, libc::SIGINT);
    assert_clean(&mut net.authority, libc::SIGTERM);
}
