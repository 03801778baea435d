//! Account commands of a running node ([`Command::Devices`],
//! [`Command::RevokeDevice`]): each runs against the authority in a task
//! of its own, over the connection code the login uses, so that the
//! node's loop never waits for the authority (a password check can take
//! seconds there); the answer comes back as an event.

use crate::authority::RejectCode;
use crate::authority::proto::DeviceEntry;
use crate::clock::Clock;
use crate::config::Authorities;
use crate::identity::{Certificate, DeviceIdentity};
use crate::node::api::{AccountRefusal, Command, DeviceInfo, ErrorReason, Event};
use crate::node::{AuthorityConnection, LoginError};
use crate::time::UnixSecs;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What an account task needs of the runtime.
pub(super) struct AccountTask {
    pub authority: Authorities,
    pub authority_key: [u8; 32],
    pub device: DeviceIdentity,
    /// This device's certificate: the authority knows the account by it.
    pub cert: Certificate,
    pub clock: Arc<dyn Clock>,
    pub events: mpsc::Sender<Event>,
}

impl AccountTask {
    /// Run `c` (an account command) in the background.
    pub(super) fn spawn(self, c: Command) {
        tokio::spawn(async move {
            let name = c.name();
            let e = match self.run(c).await {
                Ok(e) => e,
                Err(e) => Event::Error {
                    command: name.to_owned(),
                    reason: ErrorReason::Account(refusal(&e)),
                    message: e.to_string(),
                },
            };
            let _ = self.events.send(e).await;
        });
    }

    async fn run(&self, c: Command) -> Result<Event, LoginError> {
        let mut conn = AuthorityConnection::connect_any(
            &self.authority,
            self.authority_key,
            &self.device,
            self.clock.clone(),
        )
        .await?;
        match c {
            Command::RevokeDevice { device, password } => {
                let message = conn.revoke_device(&self.cert, &password, &device).await?;
                Ok(Event::DeviceRevoked { device, message })
            }
            _ => {
                let list = conn.devices(&self.cert).await?;
                Ok(Event::Devices(device_infos(list, &self.cert.ed25519)))
            }
        }
    }
}

/// The authority's list as the API shows it; `own` is this device's key.
pub(super) fn device_infos(list: Vec<DeviceEntry>, own: &[u8; 32]) -> Vec<DeviceInfo> {
    list.into_iter()
        .map(|d| DeviceInfo {
            id: d.ed25519[..8].iter().map(|b| format!("{b:02x}")).collect(),
            this_device: &d.ed25519 == own,
            name: d.name,
            first_seen: UnixSecs(d.first_seen),
            last_seen: UnixSecs(d.last_seen),
            revoked_at: (d.revoked_at != 0).then_some(UnixSecs(d.revoked_at)),
        })
        .collect()
}

/// Which case a failed account command is.
pub(super) fn refusal(e: &LoginError) -> AccountRefusal {
    match e.reject_code() {
        Some(RejectCode::InvalidCredentials) => AccountRefusal::WrongPassword,
        Some(RejectCode::NoSuchDevice) => AccountRefusal::NoSuchDevice,
        Some(RejectCode::Throttled) => AccountRefusal::Throttled,
        Some(RejectCode::DeviceRevoked | RejectCode::AccountDisabled) => AccountRefusal::NotAllowed,
        Some(_) => AccountRefusal::Refused,
        None => match e {
            LoginError::Connect { .. }
            | LoginError::Timeout(_)
            | LoginError::Io(_)
            | LoginError::Closed => AccountRefusal::Unreachable,
            _ => AccountRefusal::Refused,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::client::ClientError;

    #[test]
    fn devices_are_named_by_a_key_prefix_and_this_one_is_marked() {
        let entry = |k: u8, revoked_at| DeviceEntry {
            ed25519: [k; 32],
            name: format!("d{k}"),
            first_seen: 10,
            last_seen: 20,
            revoked_at,
        };
        let list = device_infos(vec![entry(0xab, 0), entry(1, 30)], &[1; 32]);
        assert_eq!(list[0].id, "abababababababab");
        assert!(!list[0].this_device && list[0].revoked_at.is_none());
        assert!(list[1].this_device);
        assert_eq!(list[1].revoked_at, Some(UnixSecs(30)));
        assert_eq!(list[1].last_seen, UnixSecs(20));
    }

    #[test]
    fn refusals_are_told_apart() {
        let rejected = |code| {
            LoginError::Protocol(ClientError::Rejected {
                code,
                retry_after_secs: 0,
                message: String::new(),
            })
        };
        assert_eq!(
            refusal(&rejected(RejectCode::InvalidCredentials)),
            AccountRefusal::WrongPassword
        );
        assert_eq!(
            refusal(&rejected(RejectCode::NoSuchDevice)),
            AccountRefusal::NoSuchDevice
        );
        assert_eq!(refusal(&LoginError::Closed), AccountRefusal::Unreachable);
        assert_eq!(
            refusal(&LoginError::Timeout("a:1".into())),
            AccountRefusal::Unreachable
        );
        assert_eq!(
            refusal(&rejected(RejectCode::Internal)),
            AccountRefusal::Refused
        );
    }
}
