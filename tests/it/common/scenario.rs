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

/// Waits until no test of another module runs, then counts this one in.
pub fn enter(module: &'static str) -> Guard {
    let mut t = turn();
    while t.module.is_some_and(|m| m != module) {
        t = FREED.wait(t).unwrap_or_else(PoisonError::into_inner);
    }
    t.module = Some(module);
    t.running += 1;
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
