//! Signed manifests (minisign). When openwrk carries a public key, a manifest's
//! digests are trusted only after its `.minisig` verifies, so mirrors become
//! untrusted transport.

use minisign_verify::{PublicKey, Signature};

/// The key compiled in (`OPENWRK_MANIFEST_PUBKEY` or `manifests/openwrk-manifest.pub`
/// at build time; see build.rs).
pub const EMBEDDED_KEY: Option<&str> = option_env!("OPENWRK_EMBEDDED_PUBKEY");
/// Run-time key, honoured only by builds that carry none.
pub const KEY_ENV: &str = "OPENWRK_MANIFEST_PUBKEY";
pub const SIG_SUFFIX: &str = ".minisig";

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("invalid manifest public key ({source_name}): {reason}\nhint: give the minisign public key (the base64 line of the .pub file)")]
    BadKey {
        source_name: &'static str,
        reason: String,
    },
    #[error("the manifest {origin} is not signed ({detail})\nhint: this openwrk only trusts signed manifests; use the release's openwrk-sidecars.json with its .minisig, or --allow-unsigned-manifest for a local development manifest")]
    Missing { origin: String, detail: String },
    #[error("the signature of the manifest {origin} does not verify: {reason}\nhint: the manifest or its .minisig was altered, or it was signed with another key; do not use this mirror")]
    Invalid { origin: String, reason: String },
}

/// The key manifests must be signed with, if any: compiled in, else from the environment.
pub struct TrustedKey {
    key: PublicKey,
    pub source_name: &'static str,
    /// Names the key in `manifest-state.json` (rollback protection).
    pub id: String,
}

impl TrustedKey {
    pub fn current() -> Result<Option<TrustedKey>, SignatureError> {
        let env = std::env::var(KEY_ENV).ok().filter(|v| !v.trim().is_empty());
        Self::select(EMBEDDED_KEY, env.as_deref())
    }

    /// The embedded key wins: the environment cannot replace a key the build carries.
    pub fn select(
        embedded: Option<&str>,
        env: Option<&str>,
    ) -> Result<Option<TrustedKey>, SignatureError> {
        let (text, source_name) = match (embedded.filter(|k| !k.trim().is_empty()), env) {
            (Some(k), _) => (k, "embedded at build time"),
            (None, Some(k)) => (k, KEY_ENV),
            (None, None) => return Ok(None),
        };
        Ok(Some(TrustedKey {
            key: parse_key(text).map_err(|reason| SignatureError::BadKey {
                source_name,
                reason,
            })?,
            source_name,
            id: key_id(text),
        }))
    }

    /// Verifies `manifest` against the text of its `.minisig`.
    pub fn verify(
        &self,
        origin: &str,
        manifest: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        let invalid = |reason: String| SignatureError::Invalid {
            origin: origin.to_string(),
            reason,
        };
        let text = std::str::from_utf8(signature)
            .map_err(|_| invalid("the .minisig is not text".into()))?;
        let sig =
            Signature::decode(text).map_err(|e| invalid(format!("unreadable .minisig: {e}")))?;
        self.key.verify(manifest, &sig, false).map_err(|e| match e {
            minisign_verify::Error::UnexpectedKeyId => {
                invalid("signed with a different key".into())
            }
            other => invalid(other.to_string()),
        })
    }
}

/// A stable name for a key: the hash of its base64 line.
fn key_id(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .unwrap_or_default();
    crate::supply::digest::sha256_hex(line.as_bytes())[..16].to_string()
}

/// A public key as the base64 line, or a whole minisign `.pub` file.
fn parse_key(text: &str) -> Result<PublicKey, String> {
    let text = text.trim();
    let result = if text.contains("untrusted comment:") {
        PublicKey::decode(text)
    } else {
        PublicKey::from_base64(text)
    };
    result.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair() -> (String, minisign::SecretKey) {
        let kp = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        (kp.pk.to_base64(), kp.sk)
    }

    fn sign(sk: &minisign::SecretKey, data: &[u8]) -> String {
        minisign::sign(
            None,
            sk,
            std::io::Cursor::new(data),
            Some("openwrk test"),
            None,
        )
        .unwrap()
        .into_string()
    }

    #[test]
    fn round_trip_tamper_and_wrong_key() {
        let (pk, sk) = keypair();
        let key = TrustedKey::select(None, Some(&pk)).unwrap().unwrap();
        let sig = sign(&sk, b"manifest");
        key.verify("m", b"manifest", sig.as_bytes()).unwrap();
        let e = key
            .verify("m", b"manifesT", sig.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not verify"), "{e}");
        let (_, other) = keypair();
        let e = key
            .verify("m", b"manifest", sign(&other, b"manifest").as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("different key"), "{e}");
        let e = key
            .verify("m", b"manifest", b"garbage")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unreadable .minisig"), "{e}");
    }

    #[test]
    fn embedded_key_wins_over_the_environment() {
        let (embedded, _) = keypair();
        let k = TrustedKey::select(Some(&embedded), Some("not a key"))
            .unwrap()
            .unwrap();
        assert_eq!(k.source_name, "embedded at build time");
        assert!(TrustedKey::select(None, None).unwrap().is_none());
        assert!(TrustedKey::select(None, Some("nope")).is_err());
    }
}
