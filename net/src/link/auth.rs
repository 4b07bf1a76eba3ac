//! What a link's handshake proves: both nodes hold the cluster's [`Secret`]. Each side sends a
//! fresh random [`Nonce`] and answers with an HMAC-SHA-256 over the [`Transcript`] (both nonces,
//! both node indices, which side is proving, the config fingerprint); the other side checks it
//! in constant time. A proof made for one connection does not verify on another (the nonces
//! differ: no replay) nor for the other side (the role is in the MAC: no reflection). Reasons
//! and limits in `docs/why-link-auth.md`.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::Sha256;

/// The cluster's shared secret. Its bytes never appear in `Debug` output.
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

/// A secret must have at least one byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a cluster secret must not be empty")]
pub struct EmptySecret;

impl Secret {
    /// The secret of these bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Secret, EmptySecret> {
        let bytes = bytes.into();
        match bytes.is_empty() {
            true => Err(EmptySecret),
            false => Ok(Secret(bytes.into())),
        }
    }

    /// 32 random bytes from the operating system (tests, benchmarks, and a lone node, which
    /// links to no one).
    pub fn random() -> Secret {
        Secret(nonce().to_vec().into())
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Length of a nonce and of a proof (an HMAC-SHA-256).
pub const PROOF_LEN: usize = 32;

/// A handshake's random challenge.
pub type Nonce = [u8; PROOF_LEN];

/// A handshake's answer: the MAC of its transcript.
pub type Proof = [u8; PROOF_LEN];

/// A fresh nonce from the operating system's CSPRNG.
pub fn nonce() -> Nonce {
    let mut n = [0; PROOF_LEN];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

/// Which side of a connection makes a proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The node that connected (it sends data on the link).
    Dialer = 1,
    /// The node that accepted (it receives the data).
    Acceptor = 2,
}

/// Everything a proof covers: one connection of the link `dialer -> acceptor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transcript {
    /// [`super::ClusterSpec::fingerprint`] of both nodes' config.
    pub fingerprint: u64,
    /// Node index of the dialer.
    pub dialer: u32,
    /// Node index of the acceptor.
    pub acceptor: u32,
    pub dialer_nonce: Nonce,
    pub acceptor_nonce: Nonce,
}

/// Separates these MACs from any other use of the secret.
const DOMAIN: &[u8] = b"dirigo link handshake v1";

/// A proof that did not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the proof does not verify")]
pub struct BadProof;

impl Transcript {
    /// `role`'s proof of holding `secret`, for this transcript.
    pub fn prove(&self, secret: &Secret, role: Role) -> Proof {
        let tag = self.mac(secret, role).finalize().into_bytes();
        let mut proof = [0; PROOF_LEN];
        proof.copy_from_slice(&tag);
        proof
    }

    /// Check `role`'s proof in constant time.
    pub fn verify(&self, secret: &Secret, role: Role, proof: &[u8]) -> Result<(), BadProof> {
        self.mac(secret, role).verify_slice(proof).map_err(|_| BadProof)
    }

    /// Every field has a fixed length, so the concatenation is unambiguous.
    fn mac(&self, secret: &Secret, role: Role) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.bytes()).expect("HMAC takes any key length");
        mac.update(DOMAIN);
        mac.update(&[role as u8]);
        mac.update(&self.fingerprint.to_le_bytes());
        mac.update(&self.dialer.to_le_bytes());
        mac.update(&self.acceptor.to_le_bytes());
        mac.update(&self.dialer_nonce);
        mac.update(&self.acceptor_nonce);
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript() -> Transcript {
        Transcript { fingerprint: 77, dialer: 1, acceptor: 0, dialer_nonce: nonce(), acceptor_nonce: nonce() }
    }

    #[test]
    fn a_proof_verifies_with_the_same_secret_only() {
        let (secret, t) = (Secret::new(*b"open sesame").unwrap(), transcript());
        let proof = t.prove(&secret, Role::Dialer);
        assert_eq!(t.verify(&secret, Role::Dialer, &proof), Ok(()));
        let other = Secret::new(*b"open sesamE").unwrap();
        assert_eq!(t.verify(&other, Role::Dialer, &proof), Err(BadProof));
        assert_eq!(t.verify(&secret, Role::Dialer, &proof[..31]), Err(BadProof), "a truncated proof");
        assert_eq!(t.verify(&secret, Role::Dialer, &[0; PROOF_LEN]), Err(BadProof));
    }

    #[test]
    fn a_proof_covers_every_field_of_the_transcript() {
        let (secret, t) = (Secret::random(), transcript());
        let proof = t.prove(&secret, Role::Acceptor);
        let changed = [
            Transcript { fingerprint: 78, ..t },
            Transcript { dialer: 2, ..t },
            Transcript { dialer: t.acceptor, acceptor: t.dialer, ..t },
            Transcript { dialer_nonce: nonce(), ..t },
            Transcript { acceptor_nonce: nonce(), ..t },
        ];
        for c in changed {
            assert_eq!(c.verify(&secret, Role::Acceptor, &proof), Err(BadProof), "{c:?}");
        }
    }

    #[test]
    fn a_proof_does_not_verify_for_the_other_role() {
        // Reflection: one side's proof sent back as the other side's.
        let (secret, t) = (Secret::random(), transcript());
        let dialer = t.prove(&secret, Role::Dialer);
        assert_eq!(t.verify(&secret, Role::Acceptor, &dialer), Err(BadProof));
        // Even when the reflector chose its nonce equal to the victim's.
        let mirrored = Transcript { acceptor_nonce: t.dialer_nonce, ..t };
        let proof = mirrored.prove(&secret, Role::Dialer);
        assert_eq!(mirrored.verify(&secret, Role::Acceptor, &proof), Err(BadProof));
    }

    #[test]
    fn nonces_are_fresh_and_the_secret_is_redacted() {
        assert_ne!(nonce(), nonce());
        let secret = Secret::new(*b"hunter2").unwrap();
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(Secret::new(Vec::new()).unwrap_err(), EmptySecret);
    }
}
