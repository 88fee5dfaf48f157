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

/// A `.minisig` for the manifest. The trusted comment names what is signed;
/// Ed25519 signing here is hedged (randomized), so signatures differ run to run.
pub fn sign(
    key: &minisign::SecretKey,
    manifest: &[u8],
    version: &str,
    generated_at: &str,
) -> anyhow::Result<String> {
    let comment = format!("openwrk-sidecars.json openwrk {version} generatedAt {generated_at}");
    let sig = minisign::sign(
        None,
        key,
        std::io::Cursor::new(manifest),
        Some(&comment),
        Some("openwrk manifest signature"),
    )
    .map_err(|e| anyhow::anyhow!("signing the manifest failed: {e}"))?;
    Ok(sig.into_string())
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

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(bytes)?;
    Ok(())
}
