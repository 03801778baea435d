//! Time types, so that a unit or a clock can't be guessed wrong.
//!
//! natter reads two clocks (see [`crate::clock`]) for two jobs, and each
//! reading has its own type:
//!
//! - [`Millis`]: a point on the node's monotonic timeline, in
//!   milliseconds. Every timer runs on it: retransmits, keepalives,
//!   timeouts, pacing, and the `Option<Millis>` a sans-IO core returns as
//!   its next timeout. It means nothing to another machine and is never
//!   compared with a certificate or a record.
//! - [`UnixSecs`]: wall-clock Unix seconds, for what is judged against
//!   other machines: certificate windows, record and envelope lifetimes,
//!   revocation lists. [`UnixMillis`] is the same clock in milliseconds,
//!   for times shown to people (a message sent at, a call started at) and
//!   for sequence numbers that follow the wall clock.
//!
//! Spans of time stay plain `u64` counts whose unit is in the name
//! (`RETRY_MS`, `ttl_secs`); adding one to a point keeps the point's unit:
//! `Millis + u64` adds milliseconds, `UnixSecs + u64` adds seconds.
//! Subtracting two points of one type gives the elapsed count, saturating
//! at zero ([`Millis::since`]), because a peer's or a test's clock may
//! stand behind ours.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// A point on the node's monotonic timeline, in milliseconds. See the
/// module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

/// Wall-clock time in whole seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixSecs(pub u64);

/// Wall-clock time in milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(pub u64);

macro_rules! point {
    ($t:ident, $unit:literal) => {
        impl $t {
            /// The origin of this timeline.
            pub const ZERO: $t = $t(0);

            /// The end of time: a deadline that never comes.
            pub const MAX: $t = $t(u64::MAX);

            /// The count since the origin.
            pub const fn get(self) -> u64 {
                self.0
            }

            #[doc = concat!("Elapsed ", $unit, " from `earlier` to `self`; zero if `earlier` is later.")]
            pub const fn since(self, earlier: $t) -> u64 {
                self.0.saturating_sub(earlier.0)
            }

            #[doc = concat!("Elapsed ", $unit, " from `earlier` to `self`, or `None` if `earlier` is later.")]
            pub const fn checked_since(self, earlier: $t) -> Option<u64> {
                self.0.checked_sub(earlier.0)
            }

            #[doc = concat!("`self` moved back by `span` ", $unit, ", stopping at the origin.")]
            pub const fn saturating_sub(self, span: u64) -> $t {
                $t(self.0.saturating_sub(span))
            }

            #[doc = concat!("`self` moved on by `span` ", $unit, ", stopping at the end of time.")]
            pub const fn saturating_add(self, span: u64) -> $t {
                $t(self.0.saturating_add(span))
            }
        }

        /// Moves the point on by a span in this type's unit (saturating).
        impl Add<u64> for $t {
            type Output = $t;
            fn add(self, span: u64) -> $t {
                $t(self.0.saturating_add(span))
            }
        }

        impl AddAssign<u64> for $t {
            fn add_assign(&mut self, span: u64) {
                self.0 = self.0.saturating_add(span);
            }
        }

        /// Moves the point back by a span in this type's unit (saturating).
        impl Sub<u64> for $t {
            type Output = $t;
            fn sub(self, span: u64) -> $t {
                $t(self.0.saturating_sub(span))
            }
        }

        /// The elapsed span between two points (saturating at zero).
        impl Sub<$t> for $t {
            type Output = u64;
            fn sub(self, earlier: $t) -> u64 {
                self.since(earlier)
            }
        }
    };
}

point!(Millis, "milliseconds");
point!(UnixSecs, "seconds");
point!(UnixMillis, "milliseconds");

impl UnixMillis {
    /// The same wall-clock time in whole seconds (rounded down).
    pub const fn secs(self) -> UnixSecs {
        UnixSecs(self.0 / 1000)
    }
}

impl UnixSecs {
    /// The same wall-clock time in milliseconds.
    pub const fn millis(self) -> UnixMillis {
        UnixMillis(self.0.saturating_mul(1000))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

impl fmt::Display for UnixSecs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// The earlier of two optional deadlines (`None` is "no deadline"), the
/// way drivers merge their cores' next timeouts.
pub fn earliest(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_move_by_spans_in_their_own_unit_and_saturate() {
        let t = Millis(1_000);
        assert_eq!(t + 250, Millis(1_250));
        assert_eq!(t - 2_000, Millis::ZERO);
        assert_eq!(Millis(u64::MAX) + 1, Millis(u64::MAX));
        let mut u = t;
        u += 5;
        assert_eq!(u.since(t), 5);
        assert_eq!(t.since(u), 0);
        assert_eq!(t.checked_since(u), None);
        assert_eq!(u - t, 5);
        assert_eq!(UnixSecs(10) + 60, UnixSecs(70));
    }

    #[test]
    fn wall_clock_units_convert_explicitly() {
        assert_eq!(UnixMillis(1_999).secs(), UnixSecs(1));
        assert_eq!(UnixSecs(2).millis(), UnixMillis(2_000));
        assert_eq!(UnixSecs(u64::MAX).millis(), UnixMillis(u64::MAX));
    }

    #[test]
    fn earliest_ignores_missing_deadlines() {
        assert_eq!(earliest(None, None), None);
        assert_eq!(earliest(Some(Millis(5)), None), Some(Millis(5)));
        assert_eq!(earliest(None, Some(Millis(7))), Some(Millis(7)));
        assert_eq!(earliest(Some(Millis(9)), Some(Millis(7))), Some(Millis(7)));
    }

    #[test]
    fn display_names_the_unit() {
        assert_eq!(Millis(12).to_string(), "12ms");
        assert_eq!(UnixSecs(3).to_string(), "3s");
    }
}
