//! Relay credentials, exactly as coturn's `use-auth-secret` /
//! `static-auth-secret` ("TURN REST API") computes them: the username is
//! `"<expiry unix seconds>:<natter username>"` and the password is
//! `base64(HMAC-SHA1(shared secret, username))`. Supernodes of one group
//! share the secret, issue these to authenticated certificate holders over
//! the overlay, and check them on Allocate; a coturn server configured with
//! the same secret accepts them too.
//!
//! Also the server's nonces: stateless, `hex(expiry ms) || hex(MAC)` bound
//! to the client's transport address, so a relay keeps no per-nonce state.

use crate::time::Millis;
use base64::Engine;
use std::net::SocketAddr;

/// One set of short-lived relay credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestCredentials {
    pub username: String,
    pub password: String,
    /// Unix seconds after which relays refuse them.
    pub expires: u64,
}

/// The REST-style username for `user`, valid until `expires`.
pub fn rest_username(expires: u64, user: &str) -> String {
    format!("{expires}:{user}")
}

/// The password a relay with `secret` expects for `username`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(hmac_sha1::hmac_sha1(secret, username.as_bytes()))
}

/// Credentials for `user`, valid `ttl_secs` from `now_secs`.
pub fn issue(secret: &[u8], user: &str, now_secs: u64, ttl_secs: u64) -> RestCredentials {
    let expires = now_secs + ttl_secs;
    let username = rest_username(expires, user);
    RestCredentials {
        password: rest_password(secret, &username),
        username,
        expires,
    }
}

/// What a supernode needs to hand out relay credentials: the group's
/// secret and realm, how long credentials last, and the relays they open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayGrant {
    pub secret: Vec<u8>,
    pub realm: String,
    pub ttl_secs: u64,
    /// This supernode's relay first, then other relays of the group (a
    /// coturn with the same secret, for instance). TURN over TCP uses the
    /// same port numbers.
    pub relays: Vec<SocketAddr>,
}

impl RelayGrant {
    /// Credentials for `user`, never outliving its certificate.
    pub fn issue(&self, user: &str, now_secs: u64, cert_not_after: u64) -> RestCredentials {
        let ttl = self
            .ttl_secs
            .min(cert_not_after.saturating_sub(now_secs))
            .max(1);
        issue(&self.secret, user, now_secs, ttl)
    }
}

/// Split a REST username into its expiry and the natter username.
pub fn parse_username(username: &str) -> Option<(u64, &str)> {
    let (ts, user) = username.split_once(':')?;
    if ts.is_empty() || ts.len() > 20 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((ts.parse().ok()?, user))
}

/// Makes and checks the server's nonces.
#[derive(Clone)]
pub struct NonceKey([u8; 32]);

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

impl NonceKey {
    pub fn new(key: [u8; 32]) -> Self {
        NonceKey(key)
    }

    fn mac(&self, expires_ms: u64, client: SocketAddr) -> [u8; 20] {
        let mut m = Vec::with_capacity(8 + 18 + 2);
        m.extend_from_slice(&expires_ms.to_be_bytes());
        match client.ip() {
            std::net::IpAddr::V4(a) => m.extend_from_slice(&a.octets()),
            std::net::IpAddr::V6(a) => m.extend_from_slice(&a.octets()),
        }
        m.extend_from_slice(&client.port().to_be_bytes());
        hmac_sha1::hmac_sha1(&self.0, &m)
    }

    /// A nonce for `client`, valid until `expires` (on the server's
    /// monotonic timeline: only the server that made it reads it).
    pub fn make(&self, expires: Millis, client: SocketAddr) -> String {
        let expires_ms = expires.get();
        let mac = self.mac(expires_ms, client);
        let mut s = format!("{expires_ms:016x}");
        for b in &mac[..12] {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Whether `nonce` is one of ours for `client` and still valid.
    pub fn check(&self, nonce: &str, now: Millis, client: SocketAddr) -> bool {
        if nonce.len() != 16 + 24 || !nonce.is_ascii() {
            return false;
        }
        let Ok(expires_ms) = u64::from_str_radix(&nonce[..16], 16) else {
            return false;
        };
        if Millis(expires_ms) <= now {
            return false;
        }
        let mac = self.mac(expires_ms, client);
        let mut want = String::with_capacity(24);
        for b in &mac[..12] {
            want.push_str(&format!("{b:02x}"));
        }
        // Not secret-dependent timing that matters: the MAC is over public
        // data and a forged nonce still needs the password.
        nonce[16..] == want
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coturn_rest_vector() {
        // Computed with: echo -n "1700000000:alice" | openssl dgst -sha1
        // -hmac "north" -binary | base64
        let u = rest_username(1_700_000_000, "alice");
        assert_eq!(u, "1700000000:alice");
        assert_eq!(rest_password(b"north", &u), "Cd/49soE35ICqcJF/bCTn8Z4OyE=");
        assert_eq!(parse_username(&u), Some((1_700_000_000, "alice")));
        assert_eq!(parse_username("alice"), None);
        assert_eq!(parse_username(":alice"), None);
        assert_eq!(parse_username("12x:alice"), None);
        let c = issue(b"north", "bob", 100, 50);
        assert_eq!(c.expires, 150);
        assert_eq!(c.username, "150:bob");
    }

    #[test]
    fn nonces_expire_and_bind_to_the_client() {
        let k = NonceKey::new([7; 32]);
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:5001".parse().unwrap();
        let n = k.make(Millis(10_000), a);
        assert!(k.check(&n, Millis(9_999), a));
        assert!(!k.check(&n, Millis(10_000), a));
        assert!(!k.check(&n, Millis(5), b));
        assert!(!NonceKey::new([8; 32]).check(&n, Millis(5), a));
        assert!(!k.check("zz", Millis(5), a));
        assert!(!k.check(&"é".repeat(20), Millis(5), a));
    }
}
