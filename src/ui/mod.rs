//! The softphone's terminal UI (ratatui + crossterm). It holds no protocol
//! state: the [`App`] renders a view model built from the node's events
//! ([`crate::node::api::Event`]) and turns keys into
//! [`crate::node::api::Command`]s. [`terminal`] runs it on a real
//! terminal; tests drive the same App on ratatui's `TestBackend`.

pub mod app;
pub mod components;
pub mod keys;
pub mod model;
pub mod terminal;
#[cfg(test)]
mod tests;

pub use app::App;
pub use keys::{Action, KeyMap};
