//! Embeds the manifest signing key, when there is one: `OPENWRK_MANIFEST_PUBKEY`
//! at build time, else `manifests/openwrk-manifest.pub`. Without either, the
//! binary accepts unsigned manifests (and a key given at run time).

fn main() {
    println!("cargo:rerun-if-env-changed=OPENWRK_MANIFEST_PUBKEY");
    println!("cargo:rerun-if-env-changed=OPENWRK_RELEASE_REPO");
    // The directory, not the file: a path that does not exist would make
    // cargo rerun this script (and rebuild openwrk) on every build.
    println!("cargo:rerun-if-changed=manifests");
    let key = std::env::var("OPENWRK_MANIFEST_PUBKEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
        .or_else(|| std::fs::read_to_string("manifests/openwrk-manifest.pub").ok());
    if let Some(key) = key {
        // Only the base64 key line: it has no spaces, so it survives rustc-env.
        let line = key
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
            .unwrap_or_default();
        println!("cargo:rustc-env=OPENWRK_EMBEDDED_PUBKEY={line}");
    }
}
