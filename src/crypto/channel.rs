//! Certificate-carrying Noise XX handshake (sans-IO).
//!
//! ```text
//! initiator                          responder
//!   -> e
//!                  <- e, ee, s, es, {responder certificate}
//!   -> s, se, {initiator certificate}
//! ```
//! Each side verifies the other's certificate against the pinned authority
//! key at `now` and checks that the certificate's x25519 key is the Noise
//! static key the handshake proved, so a stolen certificate is useless
//! without its device key.
//!
//! The stream channels (TCP) finish into a [`Transport`] with
//! [`ChannelHandshake::read`]; datagram links finish with
//! [`ChannelHandshake::read_finished`] and pick their own transport mode,
//! under their own prologue and caller-seeded ephemeral keys
//! ([`ChannelHandshake::initiate_with`]).

use super::noise::{Handshake, NoiseError, StatelessTransport, Transport, XX};
use crate::identity::{CertError, Certificate, DeviceIdentity};
use crate::time::UnixSecs;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChannelError {
    #[error(transparent)]
    Noise(#[from] NoiseError),
    #[error("peer certificate rejected: {0}")]
    Certificate(#[from] CertError),
    #[error(
        "peer certificate is for another device: its key is not the one that did the handshake"
    )]
    KeyMismatch,
    #[error("handshake message out of order")]
    OutOfOrder,
}

/// An established, authenticated channel.
#[derive(Debug)]
pub struct Established {
    pub peer: Certificate,
    pub transport: Transport,
    /// Transcript hash, unique per channel.
    pub handshake_hash: Vec<u8>,
}

/// A verified handshake that has not yet picked a transport mode.
#[derive(Debug)]
pub struct Finished {
    pub peer: Certificate,
    pub handshake: Handshake,
    /// Transcript hash, unique per channel.
    pub handshake_hash: Vec<u8>,
}

impl Finished {
    pub fn into_established(self) -> Result<Established, ChannelError> {
        Ok(Established {
            peer: self.peer,
            transport: self.handshake.into_transport()?,
            handshake_hash: self.handshake_hash,
        })
    }

    /// As [`Finished::into_stateless`], with the handshake's exporter
    /// secret ([`crate::crypto::noise::Handshake::exporter_secret`]).
    pub fn into_stateless_with_exporter(
        mut self,
    ) -> Result<(Certificate, StatelessTransport, [u8; 32]), ChannelError> {
        let exporter = self.handshake.exporter_secret();
        Ok((
            self.peer,
            self.handshake.into_stateless_transport()?,
            exporter,
        ))
    }

    /// Datagram mode: the peer's certificate and a stateless transport.
    pub fn into_stateless(self) -> Result<(Certificate, StatelessTransport), ChannelError> {
        Ok((self.peer, self.handshake.into_stateless_transport()?))
    }
}

/// What the caller does after feeding a handshake message.
#[derive(Debug)]
pub enum Step<T = Established> {
    /// Send these bytes to the peer, then wait for its next message.
    Send(Vec<u8>),
    /// Send these bytes (if any); the channel is up.
    Done(Option<Vec<u8>>, Box<T>),
}

#[derive(Debug)]
enum State {
    InitiatorSentE,
    ResponderWaitE,
    ResponderSentS,
    Finished,
}

/// One side of the certificate handshake.
#[derive(Debug)]
pub struct ChannelHandshake {
    hs: Option<Handshake>,
    state: State,
    own_cert: Vec<u8>,
    authority: [u8; 32],
}

const PROLOGUE: &[u8] = b"natter channel v1";

impl ChannelHandshake {
    /// Start as initiator; returns the first message to send.
    pub fn initiate(
        device: &DeviceIdentity,
        cert: &Certificate,
        authority: [u8; 32],
    ) -> Result<(Self, Vec<u8>), ChannelError> {
        Self::initiate_with(device, cert, authority, PROLOGUE, None)
    }

    /// Start as responder, waiting for the initiator's first message.
    pub fn respond(
        device: &DeviceIdentity,
        cert: &Certificate,
        authority: [u8; 32],
    ) -> Result<Self, ChannelError> {
        Self::respond_with(device, cert, authority, PROLOGUE, None)
    }

    /// As [`ChannelHandshake::initiate`] under another `prologue` (so one
    /// protocol's handshake cannot be spliced into another's), with the
    /// ephemeral key drawn from `seed` when given.
    pub fn initiate_with(
        device: &DeviceIdentity,
        cert: &Certificate,
        authority: [u8; 32],
        prologue: &[u8],
        seed: Option<[u8; 32]>,
    ) -> Result<(Self, Vec<u8>), ChannelError> {
        let mut hs =
            Handshake::initiator_seeded(XX, prologue, &device.x25519_secret(), None, seed)?;
        let msg = hs.write(&[])?;
        Ok((
            ChannelHandshake {
                hs: Some(hs),
                state: State::InitiatorSentE,
                own_cert: cert.encode(),
                authority,
            },
            msg,
        ))
    }

    /// As [`ChannelHandshake::respond`]; see [`ChannelHandshake::initiate_with`].
    pub fn respond_with(
        device: &DeviceIdentity,
        cert: &Certificate,
        authority: [u8; 32],
        prologue: &[u8],
        seed: Option<[u8; 32]>,
    ) -> Result<Self, ChannelError> {
        Ok(ChannelHandshake {
            hs: Some(Handshake::responder_seeded(
                XX,
                prologue,
                &device.x25519_secret(),
                seed,
            )?),
            state: State::ResponderWaitE,
            own_cert: cert.encode(),
            authority,
        })
    }

    /// Feed the peer's next handshake message at `now` (the wall clock:
    /// the peer's certificate is judged at it).
    pub fn read(&mut self, now: UnixSecs, msg: &[u8]) -> Result<Step, ChannelError> {
        Ok(match self.read_finished(now, msg)? {
            Step::Send(m) => Step::Send(m),
            Step::Done(m, f) => Step::Done(m, Box::new(f.into_established()?)),
        })
    }

    /// As [`ChannelHandshake::read`], finishing into a [`Finished`] whose
    /// transport mode the caller picks. A message that fails Noise
    /// decryption leaves the handshake as it was (snow restores its state),
    /// so the caller may keep waiting for the genuine one.
    pub fn read_finished(
        &mut self,
        now: UnixSecs,
        msg: &[u8],
    ) -> Result<Step<Finished>, ChannelError> {
        let hs = self.hs.as_mut().ok_or(ChannelError::OutOfOrder)?;
        match self.state {
            State::ResponderWaitE => {
                hs.read(msg)?;
                let out = hs.write(&self.own_cert)?;
                self.state = State::ResponderSentS;
                Ok(Step::Send(out))
            }
            State::InitiatorSentE => {
                let payload = hs.read(msg)?;
                let peer = self.check(now, &payload)?;
                let hs = self.hs.as_mut().ok_or(ChannelError::OutOfOrder)?;
                let out = hs.write(&self.own_cert)?;
                Ok(Step::Done(Some(out), Box::new(self.finish(peer)?)))
            }
            State::ResponderSentS => {
                let payload = hs.read(msg)?;
                let peer = self.check(now, &payload)?;
                Ok(Step::Done(None, Box::new(self.finish(peer)?)))
            }
            State::Finished => Err(ChannelError::OutOfOrder),
        }
    }

    fn check(&self, now: UnixSecs, payload: &[u8]) -> Result<Certificate, ChannelError> {
        let cert = Certificate::decode(payload).map_err(CertError::from)?;
        cert.verify(&self.authority, now)?;
        let proven = self.hs.as_ref().and_then(|h| h.remote_static());
        if proven != Some(cert.x25519) {
            return Err(ChannelError::KeyMismatch);
        }
        Ok(cert)
    }

    fn finish(&mut self, peer: Certificate) -> Result<Finished, ChannelError> {
        let hs = self.hs.take().ok_or(ChannelError::OutOfOrder)?;
        self.state = State::Finished;
        Ok(Finished {
            peer,
            handshake_hash: hs.hash(),
            handshake: hs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{AuthorityKey, Role, Username};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn party(a: &AuthorityKey, rng: &mut StdRng, name: &str) -> (DeviceIdentity, Certificate) {
        let d = DeviceIdentity::generate(rng);
        let c = Certificate::issue(
            a,
            1,
            Role::User,
            0,
            10_000,
            &Username::parse(name).unwrap(),
            d.ed25519_public(),
            d.x25519_public(),
        );
        (d, c)
    }

    fn run(
        a: (&DeviceIdentity, &Certificate),
        b: (&DeviceIdentity, &Certificate),
        pin: [u8; 32],
        now: UnixSecs,
    ) -> Result<(Established, Established), ChannelError> {
        let (mut i, m1) = ChannelHandshake::initiate(a.0, a.1, pin)?;
        let mut r = ChannelHandshake::respond(b.0, b.1, pin)?;
        let Step::Send(m2) = r.read(now, &m1)? else {
            panic!("responder finished early")
        };
        let Step::Done(Some(m3), ie) = i.read(now, &m2)? else {
            panic!("initiator did not finish")
        };
        let Step::Done(None, re) = r.read(now, &m3)? else {
            panic!("responder did not finish")
        };
        Ok((*ie, *re))
    }

    #[test]
    fn both_sides_learn_verified_identities() {
        let mut rng = StdRng::seed_from_u64(1);
        let a = AuthorityKey::generate(&mut rng);
        let alice = party(&a, &mut rng, "alice");
        let bob = party(&a, &mut rng, "bob");
        let (mut ie, mut re) = run(
            (&alice.0, &alice.1),
            (&bob.0, &bob.1),
            a.public(),
            UnixSecs(5),
        )
        .unwrap();
        assert_eq!(ie.peer.username, "bob");
        assert_eq!(re.peer.username, "alice");
        assert_eq!(ie.handshake_hash, re.handshake_hash);
        let c = ie.transport.encrypt(b"hi bob").unwrap();
        assert_eq!(re.transport.decrypt(&c).unwrap(), b"hi bob");
        let mut bad = ie.transport.encrypt(b"x").unwrap();
        bad[0] ^= 1;
        assert_eq!(re.transport.decrypt(&bad), Err(NoiseError::Decrypt));
    }

    #[test]
    fn seeded_datagram_channel_is_deterministic_and_out_of_order_safe() {
        let mut rng = StdRng::seed_from_u64(3);
        let a = AuthorityKey::generate(&mut rng);
        let alice = party(&a, &mut rng, "alice");
        let bob = party(&a, &mut rng, "bob");
        let pin = a.public();
        let start =
            || ChannelHandshake::initiate_with(&alice.0, &alice.1, pin, b"p", Some([7; 32]));
        let (mut i, m1) = start().unwrap();
        assert_eq!(start().unwrap().1, m1, "same seed, same ephemeral key");
        let mut r =
            ChannelHandshake::respond_with(&bob.0, &bob.1, pin, b"p", Some([8; 32])).unwrap();
        let Step::Send(m2) = r.read_finished(UnixSecs(5), &m1).unwrap() else {
            panic!("responder finished early")
        };
        let mut bad = m2.clone();
        bad[40] ^= 1;
        assert!(i.read_finished(UnixSecs(5), &bad).is_err());
        // The failed read left the handshake intact.
        let Step::Done(Some(m3), ie) = i.read_finished(UnixSecs(5), &m2).unwrap() else {
            panic!("initiator did not finish")
        };
        let Step::Done(None, re) = r.read_finished(UnixSecs(5), &m3).unwrap() else {
            panic!("responder did not finish")
        };
        let (bob_seen, it) = ie.into_stateless().unwrap();
        let (alice_seen, rt) = re.into_stateless().unwrap();
        assert_eq!(
            (bob_seen.username.as_str(), alice_seen.username.as_str()),
            ("bob", "alice")
        );
        let c9 = it.encrypt(9, b"nine").unwrap();
        let c2 = it.encrypt(2, b"two").unwrap();
        assert_eq!(rt.decrypt(2, &c2).unwrap(), b"two");
        assert_eq!(rt.decrypt(9, &c9).unwrap(), b"nine");
        assert_eq!(rt.decrypt(8, &c9), Err(NoiseError::Decrypt));
        assert_eq!(
            it.decrypt(9, &c9),
            Err(NoiseError::Decrypt),
            "directions use distinct keys"
        );
    }

    #[test]
    fn foreign_expired_and_stolen_certificates_rejected() {
        let mut rng = StdRng::seed_from_u64(2);
        let a = AuthorityKey::generate(&mut rng);
        let other = AuthorityKey::generate(&mut rng);
        let alice = party(&a, &mut rng, "alice");
        let mallory = party(&other, &mut rng, "mallory");
        let err = run(
            (&alice.0, &alice.1),
            (&mallory.0, &mallory.1),
            a.public(),
            UnixSecs(5),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            ChannelError::Certificate(CertError::UnknownIssuer { .. })
        ));

        let bob = party(&a, &mut rng, "bob");
        let err = run(
            (&alice.0, &alice.1),
            (&bob.0, &bob.1),
            a.public(),
            UnixSecs(10_000),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            ChannelError::Certificate(CertError::Expired { .. })
        ));

        // Eve presents bob's certificate with her own device key.
        let eve = DeviceIdentity::generate(&mut rng);
        let err = run(
            (&alice.0, &alice.1),
            (&eve, &bob.1),
            a.public(),
            UnixSecs(5),
        )
        .unwrap_err();
        assert_eq!(err, ChannelError::KeyMismatch);
    }
}
