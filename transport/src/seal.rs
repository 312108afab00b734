//! Sealing shares to a recipient's public key: HPKE (RFC 9180) in base mode with
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and ChaCha20-Poly1305 (the `hpke` crate).
//!
//! A client seals each share of a hidden state to its trust domain's key (the client does not
//! know the placement when it submits; every worker of a domain holds the domain's key), and
//! each worker seals its output share to the client's per-session key. The associated data
//! binds a ciphertext to its job, session, step, party and the client's reply key
//! ([`Binding`]), so a sealed share cannot be replayed into another job, swapped between the
//! parties or paired with another reply key: opening it under any other binding fails. The
//! broker and the coordinator only ever see ciphertexts. HPKE base mode does not authenticate
//! the sender (the domain keys are public): the session's later steps are authenticated by a
//! secret inside the step-0 share (`marill_proto::job::StepShare`).

use crate::TransportError;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as KemTrait, OpModeR, OpModeS, Serializable};
use rand_core::{OsRng, UnwrapErr};
use std::path::Path;

type Kem = X25519HkdfSha256;
type PrivateKey = <Kem as KemTrait>::PrivateKey;
type PublicKey = <Kem as KemTrait>::PublicKey;

const INFO: &[u8] = b"marill share v1";

/// A sealed message: the encapsulated key and the AEAD ciphertext.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sealed {
    /// HPKE encapsulated key (32 bytes)
    pub enc: Vec<u8>,
    /// ciphertext with its 16-byte tag
    pub ct: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({} bytes)", self.ct.len())
    }
}

/// What a sealed share is bound to (its associated data). The client's reply key is part of
/// it: a job whose reply key was replaced (by a broker or a coordinator) carries input shares
/// that no longer open, so no worker computes, let alone seals an output to, the new key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding<'a> {
    /// the job
    pub job_id: &'a str,
    /// the session
    pub session: &'a str,
    /// the step within the session
    pub step: u32,
    /// `"provider"` or `"helper"` (the share's holder)
    pub party: &'a str,
    /// `"in"` (client → worker) or `"out"` (worker → client)
    pub direction: &'a str,
    /// the client's reply key of the session (X25519 public key)
    pub reply_key: &'a [u8; 32],
}

impl Binding<'_> {
    fn aad(&self) -> Vec<u8> {
        // length-prefixed fields: no two bindings share an encoding
        let mut out = b"marill/v2".to_vec();
        for f in [
            self.job_id.as_bytes(),
            self.session.as_bytes(),
            &self.step.to_le_bytes(),
            self.party.as_bytes(),
            self.direction.as_bytes(),
            self.reply_key.as_slice(),
        ] {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f);
        }
        out
    }
}

/// A public sealing key (X25519).
#[derive(Clone, PartialEq, Eq)]
pub struct SealPublic(pub [u8; 32]);

impl std::fmt::Debug for SealPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SealPublic({})",
            zmq::z85_encode(&self.0).expect("32 bytes")
        )
    }
}

/// A sealing key pair; the secret half is never printed.
pub struct SealKeyPair {
    /// the public half
    pub public: SealPublic,
    secret: PrivateKey,
}

impl std::fmt::Debug for SealKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealKeyPair")
            .field("public", &self.public)
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn key_err(path: &Path, why: impl ToString) -> TransportError {
    TransportError::Key {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

fn read_z85(path: &Path) -> Result<[u8; 32], TransportError> {
    let s = std::fs::read_to_string(path).map_err(|e| key_err(path, e))?;
    decode_z85(path, &s)
}

fn decode_z85(path: &Path, s: &str) -> Result<[u8; 32], TransportError> {
    match zmq::z85_decode(s.trim()) {
        Ok(b) if b.len() == 32 => Ok(b.try_into().expect("32 bytes")),
        _ => Err(key_err(path, "not a 40-character Z85 X25519 key")),
    }
}

impl SealKeyPair {
    /// A fresh key pair.
    pub fn generate() -> Self {
        let (secret, public) = Kem::gen_keypair(&mut UnwrapErr(OsRng));
        Self {
            public: SealPublic(public.to_bytes().into()),
            secret,
        }
    }

    /// Writes `<dir>/<name>.seal.key` (secret, mode 0600 from its creation, replacing any
    /// previous file) and `<dir>/<name>.seal.pub` (Z85).
    pub fn save(&self, dir: &Path, name: &str) -> Result<(), TransportError> {
        std::fs::create_dir_all(dir).map_err(|e| key_err(dir, e))?;
        let enc = |b: &[u8]| zmq::z85_encode(b).expect("32 bytes encode");
        let sk = dir.join(format!("{name}.seal.key"));
        crate::secret_file::write(&sk, enc(&self.secret.to_bytes()).as_bytes())?;
        let pk = dir.join(format!("{name}.seal.pub"));
        std::fs::write(&pk, enc(&self.public.0)).map_err(|e| key_err(&pk, e))
    }

    /// Loads `<dir>/<name>.seal.key` (refused when other users may read or write it) and
    /// `.seal.pub`, checking that they belong together.
    pub fn load(dir: &Path, name: &str) -> Result<Self, TransportError> {
        let sk_path = dir.join(format!("{name}.seal.key"));
        let sk = decode_z85(&sk_path, &crate::secret_file::read(&sk_path)?)?;
        let secret = PrivateKey::from_bytes(&sk).map_err(|e| key_err(&sk_path, e))?;
        let derived: [u8; 32] = Kem::sk_to_pk(&secret).to_bytes().into();
        let public = Self::load_public(dir, name)?;
        if public.0 != derived {
            return Err(key_err(&sk_path, "secret and public keys do not match"));
        }
        Ok(Self { public, secret })
    }

    /// Loads `<dir>/<name>.seal.pub`.
    pub fn load_public(dir: &Path, name: &str) -> Result<SealPublic, TransportError> {
        Ok(SealPublic(read_z85(&dir.join(format!("{name}.seal.pub")))?))
    }

    /// Opens a message sealed to this key under `binding`; any tampering, a wrong key or a
    /// different binding is an error.
    pub fn open(&self, sealed: &Sealed, binding: &Binding) -> Result<Vec<u8>, SealError> {
        let enc = <Kem as KemTrait>::EncappedKey::from_bytes(&sealed.enc)
            .map_err(|_| SealError::Malformed)?;
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Base,
            &self.secret,
            &enc,
            INFO,
            &sealed.ct,
            &binding.aad(),
        )
        .map_err(|_| SealError::Open)
    }
}

/// Sealing failures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// The recipient key is not a valid X25519 public key.
    #[error("not a valid sealing public key")]
    BadKey,
    /// The encapsulated key is malformed.
    #[error("malformed sealed message")]
    Malformed,
    /// Authentication failed: wrong key, wrong binding or tampered ciphertext.
    #[error("sealed message does not open (wrong key, wrong binding or tampered)")]
    Open,
}

/// Seals `plaintext` to `to` under `binding`.
pub fn seal(to: &SealPublic, binding: &Binding, plaintext: &[u8]) -> Result<Sealed, SealError> {
    let pk = PublicKey::from_bytes(&to.0).map_err(|_| SealError::BadKey)?;
    let (enc, ct) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem, _>(
        &OpModeS::Base,
        &pk,
        INFO,
        plaintext,
        &binding.aad(),
        &mut UnwrapErr(OsRng),
    )
    .map_err(|_| SealError::BadKey)?;
    Ok(Sealed {
        enc: enc.to_bytes().to_vec(),
        ct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b<'a>(job: &'a str, party: &'static str) -> Binding<'a> {
        Binding {
            job_id: job,
            session: "s1",
            step: 0,
            party,
            direction: "in",
            reply_key: &[5; 32],
        }
    }

    #[test]
    fn round_trip_and_ciphertext_hides_the_plaintext() {
        let k = SealKeyPair::generate();
        let msg = b"share: 0123456789abcdef share".repeat(4);
        let s = seal(&k.public, &b("j1", "provider"), &msg).unwrap();
        assert_eq!(k.open(&s, &b("j1", "provider")).unwrap(), msg);
        assert!(!s.ct.windows(6).any(|w| w == b"share:"));
        assert_eq!(s.ct.len(), msg.len() + 16);
    }

    #[test]
    fn wrong_key_binding_or_tampering_is_refused() {
        let k = SealKeyPair::generate();
        let other = SealKeyPair::generate();
        let s = seal(&k.public, &b("j1", "provider"), b"x").unwrap();
        assert_eq!(other.open(&s, &b("j1", "provider")), Err(SealError::Open));
        // replayed into another job, or handed to the other party
        assert_eq!(k.open(&s, &b("j2", "provider")), Err(SealError::Open));
        assert_eq!(k.open(&s, &b("j1", "helper")), Err(SealError::Open));
        // the same share with another reply key (a rewritten job) does not open
        let other_reply = Binding {
            reply_key: &[6; 32],
            ..b("j1", "provider")
        };
        assert_eq!(k.open(&s, &other_reply), Err(SealError::Open));
        let mut t = s.clone();
        t.ct[0] ^= 1;
        assert_eq!(k.open(&t, &b("j1", "provider")), Err(SealError::Open));
        let mut t = s.clone();
        t.enc.truncate(5);
        assert_eq!(k.open(&t, &b("j1", "provider")), Err(SealError::Malformed));
    }

    #[test]
    fn keys_save_and_load_and_secrets_stay_out_of_debug() {
        let dir = std::env::temp_dir().join(format!("marill-seal-{}", std::process::id()));
        let k = SealKeyPair::generate();
        k.save(&dir, "provider").unwrap();
        let l = SealKeyPair::load(&dir, "provider").unwrap();
        assert_eq!(l.public, k.public);
        let s = seal(&l.public, &b("j", "provider"), b"abc").unwrap();
        assert_eq!(k.open(&s, &b("j", "provider")).unwrap(), b"abc");
        let shown = format!("{l:?}");
        let secret = std::fs::read_to_string(dir.join("provider.seal.key")).unwrap();
        assert!(!shown.contains(secret.trim()), "{shown}");
        // a mismatched pair is refused
        SealKeyPair::generate().save(&dir, "other").unwrap();
        std::fs::copy(dir.join("other.seal.pub"), dir.join("provider.seal.pub")).unwrap();
        assert!(SealKeyPair::load(&dir, "provider").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Saving over a world-readable key file never writes the secret into it and leaves mode
    /// 0600; a secret key file that other users may read is refused on load, group read is
    /// accepted ([`crate::secret_file::assert_key_file_private`]).
    #[test]
    fn secret_seal_key_files_are_private() {
        let dir = std::env::temp_dir().join(format!("marill-seal-mode-{}", std::process::id()));
        let k = SealKeyPair::generate();
        crate::secret_file::assert_key_file_private(
            &dir.join("provider.seal.key"),
            || k.save(&dir, "provider").unwrap(),
            || SealKeyPair::load(&dir, "provider").map(|l| assert_eq!(l.public, k.public)),
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
