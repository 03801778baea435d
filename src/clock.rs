//! The clocks drivers read. Cores never read a clock: the drivers read one
//! of these and pass `now` in, so tests can move time.
//!
//! A clock gives two readings, for two jobs:
//!
//! - [`Clock::now`], a [`Millis`] of monotonic node time, for timers:
//!   retransmits, keepalives, timeouts, media pacing. A step of the system
//!   clock (an NTP correction) does not move it, and it counts time spent
//!   suspended (`CLOCK_BOOTTIME` on Linux), so timers neither freeze nor
//!   all fire at once. It counts from the wall time of its first reading
//!   (so logs line up), but nothing may read a date from it.
//! - [`Clock::unix`] ([`UnixMillis`]) and [`Clock::unix_secs`]
//!   ([`UnixSecs`]), the wall clock, for what is judged against other
//!   machines and for dates people see. Drivers read it and pass it to
//!   the cores beside `now`.
//!
//! Which core is given which time:
//!
//! - `link::LinkEndpoint`: `now: Millis` for every timer; `unix: UnixSecs`
//!   beside it in `handle_datagram`/`handle_timeout` for the peer's
//!   certificate (handshake, renewal, expiry). `crypto::channel`,
//!   `identity::Certificate::verify` and `RevocationList::verify` take
//!   `UnixSecs`; `RevocationList::sign` and the login client
//!   (`authority::client`) take `UnixMillis`.
//! - `overlay::ClientCore` and `SupernodeCore`: `now: Millis` (timers,
//!   `Option<Millis>` next timeout) and `unix: UnixMillis` in `handle_message`, `handle_timeout`,
//!   `send_envelope`, `shutdown`, `set_revocations`, `restore_mail`:
//!   records, envelopes, revocation lists and relay credentials are
//!   signed, dated and judged at it.
//! - `relay::TurnServer::handle_client`: `unix: UnixSecs` for the REST
//!   credentials' expiry. `call::CallCore::handle_message`: `unix:
//!   UnixMillis` beside `now`, for the age of an invitation (against the
//!   signed creation time of the envelope that carried it).
//!   `chat::ChatCore` dates messages and receipts by `unix: UnixMillis`;
//!   `contacts::ContactsCore::on_record` judges a record at `unix:
//!   UnixSecs`. A wall-clock expiry a timer must wait for
//!   (a peer certificate's end, relay credentials, a contact's record) is
//!   moved onto the `now` timeline when it arrives.
//! - The authority (`authority::core`, driven by `authority::server`)
//!   runs on the wall clock (`UnixMillis`): everything it judges (a login
//!   hello's freshness, certificates it issues, revocation lists, the
//!   login throttle, which PostgreSQL shares between authorities, and the
//!   stored login history in `UnixSecs`) is against other machines. Only
//!   its connection slots (`authority::admission`: frame deadlines, idle
//!   and eviction) are per-connection timeouts on `now: Millis`.
//! - Simulations give their cores a wall clock that starts at their epoch
//!   and runs with virtual time (`sim::Sim::unix`).
//! - The TUI (`ui::App::tick`) is given the wall clock: it shows dates and
//!   times of day, and a call's duration from its wall-clock answer time.

use crate::time::{Millis, UnixMillis, UnixSecs};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Monotonic node time, for timers (see the module docs).
    fn now(&self) -> Millis;

    /// The wall clock, for validity against other machines and for times
    /// shown to people.
    fn unix(&self) -> UnixMillis;

    /// The wall clock in seconds (certificates and records count seconds).
    fn unix_secs(&self) -> UnixSecs {
        self.unix().secs()
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        static START: OnceLock<(u64, u64)> = OnceLock::new();
        let (wall0, mono0) = *START.get_or_init(|| (wall_ms(), monotonic_ms()));
        Millis(wall0 + monotonic_ms().saturating_sub(mono0))
    }

    fn unix(&self) -> UnixMillis {
        UnixMillis(wall_ms())
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Milliseconds since boot, suspended time included.
#[cfg(target_os = "linux")]
fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the one timespec it is given.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if r != 0 {
        return fallback_monotonic_ms();
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

#[cfg(not(target_os = "linux"))]
fn monotonic_ms() -> u64 {
    fallback_monotonic_ms()
}

/// `Instant` (which may stop while suspended) since the first reading.
fn fallback_monotonic_ms() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// The system clock shifted by an adjustable offset, for tests of expiry
/// and skew against real sockets: both readings move.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ms: AtomicI64,
}

impl OffsetClock {
    pub fn new() -> Arc<Self> {
        Arc::new(OffsetClock::default())
    }

    pub fn advance_secs(&self, secs: i64) {
        self.offset_ms.fetch_add(secs * 1000, Ordering::SeqCst);
    }
}

impl OffsetClock {
    fn shift(&self, t: u64) -> u64 {
        (t as i64 + self.offset_ms.load(Ordering::SeqCst)).max(0) as u64
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> Millis {
        Millis(self.shift(SystemClock.now().0))
    }

    fn unix(&self) -> UnixMillis {
        UnixMillis(self.shift(SystemClock.unix().0))
    }
}

/// The system clock whose wall reading a test steps, as an NTP correction
/// or a suspend and resume would: the monotonic reading runs on.
#[derive(Debug, Default)]
pub struct SteppedClock {
    wall_offset_ms: AtomicI64,
}

impl SteppedClock {
    pub fn new() -> Arc<Self> {
        Arc::new(SteppedClock::default())
    }

    /// Step the wall clock by `ms` (negative: back).
    pub fn step_wall_ms(&self, ms: i64) {
        self.wall_offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for SteppedClock {
    fn now(&self) -> Millis {
        SystemClock.now()
    }

    fn unix(&self) -> UnixMillis {
        let wall = SystemClock.unix().0 as i64;
        UnixMillis((wall + self.wall_offset_ms.load(Ordering::SeqCst)).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_time_starts_at_the_wall_clock_and_never_goes_back() {
        let a = SystemClock.now().0;
        let wall = SystemClock.unix().0;
        // Both read within a few ms of each other, unless the wall clock
        // was stepped since the first reading (not in a test run).
        assert!(a.abs_diff(wall) < 5_000, "{a} vs {wall}");
        let mut last = Millis(a);
        for _ in 0..1000 {
            let t = SystemClock.now();
            assert!(t >= last);
            last = t;
        }
    }

    #[test]
    fn a_wall_step_leaves_node_time_alone() {
        let c = SteppedClock::new();
        let (t0, w0) = (c.now(), c.unix());
        c.step_wall_ms(-3_600_000);
        assert!(c.unix() <= w0 - 3_590_000);
        assert!(c.now() >= t0 && c.now() < t0 + 5_000);
        c.step_wall_ms(3_600_000 + 86_400_000);
        assert!(c.unix() >= w0 + 86_400_000);
        assert_eq!(c.unix_secs(), c.unix().secs());
        assert!(c.now() < t0 + 5_000);
    }
}
