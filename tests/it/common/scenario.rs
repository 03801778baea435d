//! One scenario at a time. Each module of this binary used to be a test
//! binary of its own, and cargo ran those one after another: real-time
//! calls never shared the CPU with the simulations or the fuzzers. Every
//! test first waits for its module's turn (`scenario!()`); tests of one
//! module still run in parallel, as they did in their own binary.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

struct Turn {
    module: Option<&'static str>,
    running: usize,
}

static TURN: Mutex<Turn> = Mutex::new(Turn {
    module: None,
    running: 0,
});
static FREED: Condvar = Condvar::new();

fn turn() -> MutexGuard<'static, Turn> {
    TURN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running test's claim on its module's turn, given up on drop (a
/// failing test's too).
#[must_use = "the turn ends when this is dropped"]
pub struct Guard;

impl Turn {
    /// Counts in a test of `module` unless another module has the turn.
    fn admit(&mut self, module: &'static str) -> bool {
        if self.module.is_some_and(|m| m != module) {
            return false;
        }
        self.module = Some(module);
        self.running += 1;
        true
    }
}

/// Waits until no test of another module runs, then counts this one in.
pub fn enter(module: &'static str) -> Guard {
    let mut t = turn();
    while !t.admit(module) {
        t = FREED.wait(t).unwrap_or_else(PoisonError::into_inner);
    }
    Guard
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut t = turn();
        t.running -= 1;
        if t.running == 0 {
            t.module = None;
            FREED.notify_all();
        }
    }
}

/// Takes the turn for a made-up module (its own would make it wait on
/// itself); real scenarios wait while it runs.
#[test]
fn another_module_waits_for_the_turn() {
    let a = enter("it::turn_a");
    let again = enter("it::turn_a");
    assert!(!turn().admit("it::turn_b"));
    drop(a);
    assert!(!turn().admit("it::turn_b"), "one test of turn_a still runs");
    drop(again);
}
