//! Manifest signing for `cargo xtask bundle --sign` and `cargo xtask keygen`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The signing key: `--sign FILE` (or `OPENWRK_SIGNING_KEY_FILE`), else the key
/// itself in `OPENWRK_SIGNING_KEY` (for CI secrets). An encrypted key needs
/// `OPENWRK_SIGNING_KEY_PASSWORD`.
pub fn secret_key(file: Option<&Path>) -> anyhow::Result<Option<minisign::SecretKey>> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the signing key {}", path.display()))?,
        None => match std::env::var("OPENWRK_SIGNING_KEY") {
            Ok(k) if !k.trim().is_empty() => k,
            _ => return Ok(None),
        },
    };
    let boxed = minisign::SecretKeyBox::from_string(&text)
        .map_err(|e| anyhow::anyhow!("the signing key is not a minisign secret key: {e}"))?;
    let password = std::env::var("OPENWRK_SIGNING_KEY_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    let encrypted = boxed.clone().into_unencrypted_secret_key().is_err();
    if encrypted && password.is_none() {
        bail!("the signing key is encrypted\nhint: set OPENWRK_SIGNING_KEY_PASSWORD");
    }
    let key = if encrypted {
        boxed.into_secret_key(password)
    } else {
        boxed.into_unencrypted_secret_key()
    };
    key.map(Some).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the signing key: {e}\nhint: check OPENWRK_SIGNING_KEY_PASSWORD"
        )
    })
}

/// A `.minisig` for the manifest, byte-identical for the same key and input
/// (SPEC §2.4). minisign's own signer adds random noise (hedged Ed25519), so
/// this writes the same format itself with plain RFC 8032 Ed25519, which is
/// deterministic: `ED` (prehashed) + key id + Ed25519(BLAKE2b-512(manifest)),
/// then the trusted comment and Ed25519(signature ‖ trusted comment).
/// `minisign -V` and `minisign-verify` accept it unchanged.
pub fn sign(
    key: &minisign::SecretKey,
    manifest: &[u8],
    version: &str,
    generated_at: &str,
) -> anyhow::Result<String> {
    use base64::Engine as _;
    use blake2::Digest as _;
    let comment = format!("openwrk-sidecars.json openwrk {version} generatedAt {generated_at}");
    let (keynum, secret) = key_parts(key)?;
    let signature = secret.sign(blake2::Blake2b512::digest(manifest), None);
    let mut signed_comment = signature.to_vec();
    signed_comment.extend_from_slice(comment.as_bytes());
    let global = secret.sign(&signed_comment, None);
    let mut sig_line = b"ED".to_vec();
    sig_line.extend_from_slice(&keynum);
    sig_line.extend_from_slice(signature.as_ref());
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(format!(
        "untrusted comment: openwrk manifest signature\n{}\ntrusted comment: {comment}\n{}\n",
        b64.encode(sig_line),
        b64.encode(global.as_ref())
    ))
}

/// The key id and the Ed25519 key of an opened minisign secret key. Its
/// serialized layout: algorithms (6 bytes), KDF salt and limits (48), key id
/// (8), secret key (64: seed and public key), checksum (32).
fn key_parts(key: &minisign::SecretKey) -> anyhow::Result<([u8; 8], ed25519_compact::SecretKey)> {
    let bytes = key.to_bytes();
    let (Some(keynum), Some(secret)) = (bytes.get(54..62), bytes.get(62..126)) else {
        bail!("the signing key is truncated");
    };
    let secret = ed25519_compact::SecretKey::from_slice(secret)
        .map_err(|e| anyhow::anyhow!("the signing key is not an Ed25519 key: {e}"))?;
    Ok((keynum.try_into().expect("8 bytes"), secret))
}

/// `cargo xtask keygen --out PREFIX`: `PREFIX.key` (encrypted when
/// `OPENWRK_SIGNING_KEY_PASSWORD` is set) and `PREFIX.pub`.
pub fn keygen(prefix: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let key_path = prefix.with_extension("key");
    let pub_path = prefix.with_extension("pub");
    for p in [&key_path, &pub_path] {
        if p.exists() {
            bail!("{} exists; refusing to overwrite a key", p.display());
        }
    }
    let password = std::env::var("OPENWRK_SIGNING_KEY_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    let kp = match password {
        Some(pw) => minisign::KeyPair::generate_encrypted_keypair(Some(pw)),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| anyhow::anyhow!("key generation failed: {e}"))?;
    let sk = kp
        .sk
        .to_box(None)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_string();
    let pk = kp
        .pk
        .to_box()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_string();
    write_private(&key_path, sk.as_bytes())?;
    std::fs::write(&pub_path, pk)?;
    Ok((key_path, pub_path))
}

/// An unencrypted key in `dir` for a check that signs and throws it away.
pub fn throwaway_key(dir: &Path) -> anyhow::Result<PathBuf> {
    let kp = minisign::KeyPair::generate_unencrypted_keypair()
        .map_err(|e| anyhow::anyhow!("key generation failed: {e}"))?;
    let path = dir.join("throwaway.key");
    let text = kp
        .sk
        .to_box(None)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_string();
    write_private(&path, text.as_bytes())?;
    Ok(path)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(bytes)?;
    Ok(())
}
