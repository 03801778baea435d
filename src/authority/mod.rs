//! The login authority: accounts in SQLite (argon2id password hashes) and
//! the signing of short-lived certificates binding a username to a device.
//!
//! [`core`] is the sans-IO protocol core, [`client`] the client side of the
//! same protocol, [`store`] the account database and [`server`] the thin
//! tokio driver that `natter --authority` runs.

pub mod admission;
pub mod client;
pub mod core;
pub mod postgres;
pub mod proto;
pub mod server;
pub mod store;
pub mod throttle;

pub use self::core::{AuthorityCore, AuthorityStats, Policy};
pub use admission::AdmissionPolicy;
pub use client::{Answer, ClientError, LoginClient};
pub use proto::RejectCode;
pub use server::{AuthorityServer, ServerError};
pub use store::{Database, Store, StoreError};
pub use throttle::ThrottlePolicy;
