//! Messages of the login protocol between a client and the authority.
//!
//! On a TCP stream of [`Frame`](crate::wire::Frame)s:
//! ```text
//! client                                         authority
//!   HELLO   noise IK msg 1 {ClientHello: time}   ->
//!           <- WELCOME noise IK msg 2 {ServerHello: time}
//!   SEALED  {Request}                            ->
//!           <- SEALED {Response}
//! ```
//! A connection refused before its channel exists gets one plaintext
//! REJECT frame holding a [`Response::Error`].

use crate::wire::{Reader, WireError, Writer};

pub const KIND_HELLO: u8 = 1;
pub const KIND_WELCOME: u8 = 2;
pub const KIND_SEALED: u8 = 3;
pub const KIND_REJECT: u8 = 4;

/// Noise prologue: binds the handshake to this protocol.
pub const PROLOGUE: &[u8] = b"natter authority v1";
/// Signature context for proving the device ed25519 key on a channel.
pub const DEVICE_PROOF: &[u8] = b"natter device proof v1";
/// Version of the login protocol spoken inside the channel.
pub const PROTOCOL: u8 = 1;

/// First handshake payload: the client's clock, so that replays of an old
/// first message are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello {
    pub protocol: u8,
    pub time_ms: u64,
}

impl ClientHello {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(self.protocol).u64(self.time_ms);
        w.into_vec()
    }

    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let protocol = r.u8()?;
        if protocol != PROTOCOL {
            return Err(WireError::UnknownVersion { got: protocol });
        }
        let time_ms = r.u64()?;
        r.finish()?;
        Ok(ClientHello { protocol, time_ms })
    }
}

/// Second handshake payload: the authority's clock, for skew reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerHello {
    pub time_ms: u64,
}

impl ServerHello {
    pub fn encode(&self) -> Vec<u8> {
        self.time_ms.to_be_bytes().to_vec()
    }

    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let time_ms = r.u64()?;
        r.finish()?;
        Ok(ServerHello { time_ms })
    }
}

/// What a client asks, inside the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    Register {
        username: &'a str,
        password: &'a str,
    },
    /// Prove the password once; `proof` is the device ed25519 key's
    /// signature of the handshake hash under [`DEVICE_PROOF`].
    /// `device_name` (may be empty) is how the account's device list
    /// shows a new device.
    Login {
        username: &'a str,
        password: &'a str,
        ed25519: [u8; 32],
        proof: [u8; 64],
        device_name: &'a str,
    },
    /// Renew with the device key alone: `cert` is the current certificate,
    /// `proof` as for Login. The channel's static key must be the
    /// certificate's x25519 key.
    Renew { cert: &'a [u8], proof: [u8; 64] },
    /// Manage the account from a logged-in device: `cert` and `proof` as
    /// for Renew.
    Account {
        cert: &'a [u8],
        proof: [u8; 64],
        op: AccountOp<'a>,
    },
    /// A supernode asks for the signed revocation list: `cert` (role
    /// supernode) and `proof` as for Renew.
    Revocations { cert: &'a [u8], proof: [u8; 64] },
}

/// What a logged-in device does to its account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountOp<'a> {
    /// List the account's devices.
    ListDevices,
    /// Change the password (the old one is needed).
    ChangePassword { old: &'a str, new: &'a str },
    /// Revoke one device, named by id prefix or name (the password is
    /// needed: a stolen device alone cannot revoke its owner's others).
    RevokeDevice { password: &'a str, device: &'a str },
}

/// One device in a [`Response::Devices`] answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    pub ed25519: [u8; 32],
    pub name: String,
    pub first_seen: u64,
    pub last_seen: u64,
    /// Unix seconds; 0: not revoked.
    pub revoked_at: u64,
}

/// Most devices one answer lists (the store keeps no more per account).
pub const MAX_DEVICE_ENTRIES: usize = 64;

impl<'a> Request<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Request::Register { username, password } => {
                w.u8(1)
                    .bytes8(username.as_bytes())
                    .bytes16(password.as_bytes());
            }
            Request::Login {
                username,
                password,
                ed25519,
                proof,
                device_name,
            } => {
                w.u8(2)
                    .bytes8(username.as_bytes())
                    .bytes16(password.as_bytes())
                    .raw(ed25519)
                    .raw(proof)
                    .bytes8(device_name.as_bytes());
            }
            Request::Renew { cert, proof } => {
                w.u8(3).bytes16(cert).raw(proof);
            }
            Request::Account { cert, proof, op } => {
                w.u8(4).bytes16(cert).raw(proof);
                match op {
                    AccountOp::ListDevices => {
                        w.u8(1);
                    }
                    AccountOp::ChangePassword { old, new } => {
                        w.u8(2).bytes16(old.as_bytes()).bytes16(new.as_bytes());
                    }
                    AccountOp::RevokeDevice { password, device } => {
                        w.u8(3)
                            .bytes16(password.as_bytes())
                            .bytes8(device.as_bytes());
                    }
                }
            }
            Request::Revocations { cert, proof } => {
                w.u8(5).bytes16(cert).raw(proof);
            }
        }
        w.into_vec()
    }

    pub fn decode(buf: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let req = match r.u8()? {
            1 => Request::Register {
                username: r.str8("username")?,
                password: r.str16("password")?,
            },
            2 => Request::Login {
                username: r.str8("username")?,
                password: r.str16("password")?,
                ed25519: r.array()?,
                proof: r.array()?,
                device_name: r.str8("device name")?,
            },
            3 => Request::Renew {
                cert: r.bytes16()?,
                proof: r.array()?,
            },
            4 => Request::Account {
                cert: r.bytes16()?,
                proof: r.array()?,
                op: match r.u8()? {
                    1 => AccountOp::ListDevices,
                    2 => AccountOp::ChangePassword {
                        old: r.str16("password")?,
                        new: r.str16("password")?,
                    },
                    3 => AccountOp::RevokeDevice {
                        password: r.str16("password")?,
                        device: r.str8("device")?,
                    },
                    got => {
                        return Err(WireError::UnknownType {
                            what: "account operation",
                            got,
                        });
                    }
                },
            },
            5 => Request::Revocations {
                cert: r.bytes16()?,
                proof: r.array()?,
            },
            got => {
                return Err(WireError::UnknownType {
                    what: "request",
                    got,
                });
            }
        };
        r.finish()?;
        Ok(req)
    }
}

/// Why the authority said no. The numbers are on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCode {
    InvalidCredentials = 1,
    Throttled = 2,
    UsernameTaken = 3,
    InvalidUsername = 4,
    WeakPassword = 5,
    CertExpired = 6,
    CertUnknownIssuer = 7,
    CertBadSignature = 8,
    CertKeyMismatch = 9,
    RegistrationClosed = 10,
    Replayed = 11,
    ClockSkew = 12,
    Malformed = 13,
    Internal = 14,
    AccountDisabled = 15,
    BadProof = 16,
    /// This device was revoked: log in from another device.
    DeviceRevoked = 17,
    /// No device of the account has that id or name (or several do).
    NoSuchDevice = 18,
    /// Only supernodes may ask that.
    NotASupernode = 19,
}

impl RejectCode {
    pub fn from_u8(v: u8) -> Result<Self, WireError> {
        use RejectCode::*;
        Ok(match v {
            1 => InvalidCredentials,
            2 => Throttled,
            3 => UsernameTaken,
            4 => InvalidUsername,
            5 => WeakPassword,
            6 => CertExpired,
            7 => CertUnknownIssuer,
            8 => CertBadSignature,
            9 => CertKeyMismatch,
            10 => RegistrationClosed,
            11 => Replayed,
            12 => ClockSkew,
            13 => Malformed,
            14 => Internal,
            15 => AccountDisabled,
            16 => BadProof,
            17 => DeviceRevoked,
            18 => NoSuchDevice,
            19 => NotASupernode,
            got => {
                return Err(WireError::UnknownType {
                    what: "reject code",
                    got,
                });
            }
        })
    }
}

/// What the authority answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<'a> {
    Registered {
        username: &'a str,
    },
    Certificate {
        cert: &'a [u8],
    },
    Error {
        code: RejectCode,
        retry_after_secs: u32,
        message: &'a str,
    },
    /// The account's devices (at most [`MAX_DEVICE_ENTRIES`]).
    Devices {
        devices: Vec<DeviceEntry>,
    },
    /// An account operation was done; what to tell the user.
    Done {
        message: &'a str,
    },
    /// The signed revocation list
    /// ([`RevocationList`](crate::identity::revocation::RevocationList)).
    Revocations {
        list: &'a [u8],
    },
}

impl<'a> Response<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Response::Registered { username } => {
                w.u8(1).bytes8(username.as_bytes());
            }
            Response::Certificate { cert } => {
                w.u8(2).bytes16(cert);
            }
            Response::Error {
                code,
                retry_after_secs,
                message,
            } => {
                w.u8(3)
                    .u8(*code as u8)
                    .u32(*retry_after_secs)
                    .bytes16(message.as_bytes());
            }
            Response::Devices { devices } => {
                let n = devices.len().min(MAX_DEVICE_ENTRIES);
                w.u8(4).u8(n as u8);
                for d in &devices[..n] {
                    w.raw(&d.ed25519)
                        .bytes8(d.name.as_bytes())
                        .u64(d.first_seen)
                        .u64(d.last_seen)
                        .u64(d.revoked_at);
                }
            }
            Response::Done { message } => {
                w.u8(5).bytes16(message.as_bytes());
            }
            Response::Revocations { list } => {
                w.u8(6).bytes16(list);
            }
        }
        w.into_vec()
    }

    pub fn decode(buf: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let resp = match r.u8()? {
            1 => Response::Registered {
                username: r.str8("username")?,
            },
            2 => Response::Certificate { cert: r.bytes16()? },
            3 => Response::Error {
                code: RejectCode::from_u8(r.u8()?)?,
                retry_after_secs: r.u32()?,
                message: r.str16("message")?,
            },
            4 => {
                let n = r.u8()? as usize;
                if n > MAX_DEVICE_ENTRIES {
                    return Err(WireError::Invalid {
                        field: "device count",
                    });
                }
                let devices = (0..n)
                    .map(|_| {
                        Ok(DeviceEntry {
                            ed25519: r.array()?,
                            name: r.str8("device name")?.to_owned(),
                            first_seen: r.u64()?,
                            last_seen: r.u64()?,
                            revoked_at: r.u64()?,
                        })
                    })
                    .collect::<Result<Vec<_>, WireError>>()?;
                Response::Devices { devices }
            }
            5 => Response::Done {
                message: r.str16("message")?,
            },
            6 => Response::Revocations { list: r.bytes16()? },
            got => {
                return Err(WireError::UnknownType {
                    what: "response",
                    got,
                });
            }
        };
        r.finish()?;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let reqs = [
            Request::Register {
                username: "alice",
                password: "pw pw pw pw",
            },
            Request::Login {
                username: "alice",
                password: "secret12",
                ed25519: [3; 32],
                proof: [4; 64],
                device_name: "laptop",
            },
            Request::Renew {
                cert: &[1, 2, 3],
                proof: [5; 64],
            },
            Request::Account {
                cert: &[1],
                proof: [6; 64],
                op: AccountOp::ListDevices,
            },
            Request::Account {
                cert: &[1],
                proof: [6; 64],
                op: AccountOp::ChangePassword {
                    old: "old password",
                    new: "new password",
                },
            },
            Request::Account {
                cert: &[1],
                proof: [6; 64],
                op: AccountOp::RevokeDevice {
                    password: "pw",
                    device: "0a0b",
                },
            },
            Request::Revocations {
                cert: &[2],
                proof: [7; 64],
            },
        ];
        for r in reqs {
            let b = r.encode();
            assert_eq!(Request::decode(&b).unwrap(), r);
            for cut in 0..b.len() {
                assert!(Request::decode(&b[..cut]).is_err(), "cut {cut}");
            }
        }
    }

    #[test]
    fn responses_round_trip() {
        let resps = [
            Response::Registered { username: "bob" },
            Response::Certificate { cert: &[9; 200] },
            Response::Error {
                code: RejectCode::Throttled,
                retry_after_secs: 30,
                message: "slow down",
            },
            Response::Devices {
                devices: vec![DeviceEntry {
                    ed25519: [1; 32],
                    name: "phone".into(),
                    first_seen: 1,
                    last_seen: 2,
                    revoked_at: 0,
                }],
            },
            Response::Done { message: "done" },
            Response::Revocations { list: &[4; 40] },
        ];
        for r in resps {
            let b = r.encode();
            assert_eq!(Response::decode(&b).unwrap(), r);
            for cut in 0..b.len() {
                assert!(Response::decode(&b[..cut]).is_err());
            }
        }
        for code in 1..=19 {
            assert_eq!(RejectCode::from_u8(code).unwrap() as u8, code);
        }
        assert!(RejectCode::from_u8(0).is_err());
    }

    #[test]
    fn hello_round_trip_and_version() {
        let h = ClientHello {
            protocol: PROTOCOL,
            time_ms: 77,
        };
        assert_eq!(ClientHello::decode(&h.encode()).unwrap(), h);
        let mut b = h.encode();
        b[0] = 2;
        assert_eq!(
            ClientHello::decode(&b).unwrap_err(),
            WireError::UnknownVersion { got: 2 }
        );
    }
}
