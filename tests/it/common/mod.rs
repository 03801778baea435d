//! Helpers shared by the scenarios.

pub mod authority;
pub mod calls;
pub mod dos;
pub mod media;
pub mod postgres;
pub mod procs;
pub mod relay;
pub mod scenario;
pub mod tmux;
