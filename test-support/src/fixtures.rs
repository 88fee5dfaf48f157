//! Builders for fake OpenCode releases, prebuilt sidecar directories and
//! hostile archives. Everything is deterministic for a given input.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::host::{FakeAsset, FakeRelease};

/// The five target ids, as in SPEC §1.
pub const TARGETS: [&str; 5] = [
    "linux-x64",
    "linux-arm64",
    "darwin-x64",
    "darwin-arm64",
    "windows-x64",
];

/// The target id of this machine.
pub fn host_target() -> &'static str {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "aarch64") => "linux-arm64",
        ("macos", "x86_64") => "darwin-x64",
        ("macos", "aarch64") => "darwin-arm64",
        ("windows", _) => "windows-x64",
        _ => "linux-x64",
    }
}

fn is_windows(target: &str) -> bool {
    target.starts_with("windows")
}

fn exe(target: &str, name: &str) -> String {
    if is_windows(target) {
        format!("{name}.exe")
    } else {
        name.to_string()
    }
}

/// Writes `pad` pseudo-random (incompressible) bytes seeded by `seed`.
fn write_noise(out: &mut impl Write, seed: u64, pad: u64) -> io::Result<()> {
    let mut x = seed | 1;
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = pad;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

fn seed_of(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Writes a sidecar binary for `target`: a copy of `real` (a runnable stand-in)
/// when given, else a marker text; then `pad` bytes of noise (executables ignore
/// trailing bytes, and benchmarks need realistic sizes).
pub fn write_binary(path: &Path, label: &str, real: Option<&Path>, pad: u64) -> io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    match real {
        Some(src) => {
            io::copy(&mut File::open(src)?, &mut out)?;
        }
        None => writeln!(out, "#!/bin/sh\necho 'stand-in {label}'")?,
    }
    write_noise(&mut out, seed_of(label), pad)?;
    out.flush()?;
    drop(out);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Builds OpenCode's release assets for all five targets in `dir`: the host
/// target holds a copy of `host_binary` (the stand-in opencode), the others a
/// marker. `pad` bytes of noise are appended to each binary.
pub fn opencode_release(
    dir: &Path,
    tag: &str,
    host_binary: Option<&Path>,
    pad: u64,
) -> io::Result<FakeRelease> {
    let work = dir.join(format!("opencode-{tag}-work"));
    std::fs::create_dir_all(&work)?;
    let mut assets = Vec::new();
    for target in TARGETS {
        let bin_name = exe(target, "opencode");
        let bin = work.join(format!("{target}-{bin_name}"));
        let real = host_binary.filter(|_| target == host_target());
        write_binary(&bin, &format!("opencode {tag} {target}"), real, pad)?;
        let (name, path) = if target.starts_with("linux") {
            let name = format!("opencode-{target}.tar.gz");
            let path = dir.join(format!("{tag}-{name}"));
            tar_gz(&path, &[(bin_name.as_str(), Entry::File(&bin))])?;
            (name, path)
        } else {
            let name = format!("opencode-{target}.zip");
            let path = dir.join(format!("{tag}-{name}"));
            zip(&path, &[(bin_name.as_str(), Entry::File(&bin))])?;
            (name, path)
        };
        assets.push(FakeAsset { name, path });
    }
    std::fs::remove_dir_all(&work)?;
    Ok(FakeRelease::new(tag, assets))
}

/// A `--prebuilt` directory: `<name>-<target>[.exe]` for openwork-server and
/// owpenbot on every target, plus a `VERSION` file. `host_bins` maps a sidecar
/// name to a runnable stand-in for the host target.
pub fn prebuilt_dir(
    dir: &Path,
    version: &str,
    host_bins: &[(&str, &Path)],
    pad: u64,
) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    for name in ["openwork-server", "owpenbot"] {
        for target in TARGETS {
            let file = dir.join(exe(target, &format!("{name}-{target}")));
            let real = host_bins
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, p)| *p)
                .filter(|_| target == host_target());
            write_binary(&file, &format!("{name} {version} {target}"), real, pad)?;
        }
    }
    std::fs::write(dir.join("VERSION"), format!("{version}\n"))?;
    Ok(dir.to_path_buf())
}

/// An archive entry for the raw writers below, which (unlike the tar crate's
/// safe API) write any path: they build hostile archives.
pub enum Entry<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
    Symlink(&'a str),
    Hardlink(&'a str),
}

/// Writes a `.tar.gz` with exactly the given names (which may be unsafe).
pub fn tar_gz(out: &Path, entries: &[(&str, Entry)]) -> io::Result<()> {
    let gz = flate2::GzBuilder::new().mtime(0).write(
        BufWriter::new(File::create(out)?),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    for (name, entry) in entries {
        let mut header = tar::Header::new_gnu();
        set_raw_name(&mut header, name);
        header.set_mode(0o755);
        header.set_mtime(0);
        match entry {
            Entry::File(path) => {
                let f = File::open(path)?;
                header.set_size(f.metadata()?.len());
                header.set_entry_type(tar::EntryType::Regular);
                header.set_cksum();
                tar.append(&header, f)?;
            }
            Entry::Bytes(bytes) => {
                header.set_size(bytes.len() as u64);
                header.set_entry_type(tar::EntryType::Regular);
                header.set_cksum();
                tar.append(&header, *bytes)?;
            }
            Entry::Symlink(target) | Entry::Hardlink(target) => {
                let kind = if matches!(entry, Entry::Symlink(_)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                header.set_entry_type(kind);
                header.set_size(0);
                let raw = &mut header.as_old_mut().linkname;
                raw.fill(0);
                raw[..target.len()].copy_from_slice(target.as_bytes());
                header.set_cksum();
                tar.append(&header, io::empty())?;
            }
        }
    }
    tar.into_inner()?.finish()?.flush()
}

fn set_raw_name(header: &mut tar::Header, name: &str) {
    let raw = &mut header.as_old_mut().name;
    raw.fill(0);
    raw[..name.len()].copy_from_slice(name.as_bytes());
}

/// Writes a `.zip` with exactly the given names (which may be unsafe).
pub fn zip(out: &Path, entries: &[(&str, Entry)]) -> io::Result<()> {
    let mut zip = zip::ZipWriter::new(BufWriter::new(File::create(out)?));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .unix_permissions(0o755);
    for (name, entry) in entries {
        match entry {
            Entry::File(path) => {
                zip.start_file(*name, opts).map_err(io::Error::other)?;
                io::copy(&mut File::open(path)?, &mut zip)?;
            }
            Entry::Bytes(bytes) => {
                zip.start_file(*name, opts).map_err(io::Error::other)?;
                zip.write_all(bytes)?;
            }
            Entry::Symlink(target) | Entry::Hardlink(target) => {
                zip.add_symlink(*name, *target, opts)
                    .map_err(io::Error::other)?;
            }
        }
    }
    zip.finish().map_err(io::Error::other)?.flush()
}

/// A `dist/`-like mirror for the host target only: `opencode-<t>.tar.gz`
/// (a marker binary plus `opencode_pad` bytes), plain `openwork-server-<t>`
/// (plus `server_pad` bytes) and `owpenbot-<t>`, and an `openwrk-sidecars.json`
/// naming them all at `version`.
pub fn host_dist(dir: &Path, version: &str, opencode_pad: u64, server_pad: u64) -> io::Result<()> {
    host_dist_of(dir, version, [None; 3], opencode_pad, server_pad)
}

/// Like [`host_dist`], with runnable stand-ins (opencode, openwork-server,
/// owpenbot) for the binaries, so a run can start what it downloaded.
pub fn runnable_host_dist(dir: &Path, version: &str, bins: [&Path; 3]) -> io::Result<()> {
    host_dist_of(dir, version, bins.map(Some), 0, 0)
}

fn host_dist_of(
    dir: &Path,
    version: &str,
    real: [Option<&Path>; 3],
    opencode_pad: u64,
    server_pad: u64,
) -> io::Result<()> {
    use crate::host::sha256_file;
    std::fs::create_dir_all(dir)?;
    let t = host_target();
    let work = tempdir_in(dir)?;
    let opencode = work.join(exe(t, "opencode"));
    write_binary(
        &opencode,
        &format!("opencode {version}"),
        real[0],
        opencode_pad,
    )?;
    let (archive, ext) = if is_windows(t) {
        ("zip", "zip")
    } else {
        ("tar.gz", "tar.gz")
    };
    let asset = format!("opencode-{t}.{ext}");
    let inner = exe(t, "opencode");
    if is_windows(t) {
        zip(
            &dir.join(&asset),
            &[(inner.as_str(), Entry::File(&opencode))],
        )?;
    } else {
        tar_gz(
            &dir.join(&asset),
            &[(inner.as_str(), Entry::File(&opencode))],
        )?;
    }
    let (bin_sha, bin_size) = sha256_file(&opencode);
    let (sha, size) = sha256_file(&dir.join(&asset));
    let mut entries = serde_json::json!({
        "opencode": {"version": version, "targets": {t: {
            "asset": asset, "sha256": sha, "size": size,
            "archive": archive, "binary": inner, "binarySha256": bin_sha, "binarySize": bin_size}}}
    });
    for (name, real, pad) in [
        ("openwork-server", real[1], server_pad),
        ("owpenbot", real[2], 0),
    ] {
        let file = exe(t, &format!("{name}-{t}"));
        write_binary(&dir.join(&file), &format!("{name} {version}"), real, pad)?;
        let (sha, size) = sha256_file(&dir.join(&file));
        entries[name] = serde_json::json!({"version": version, "targets": {t: {"asset": file, "sha256": sha, "size": size}}});
    }
    std::fs::remove_dir_all(&work)?;
    let manifest = serde_json::json!({
        "schemaVersion": 1, "version": "0.1.0", "generatedAt": "2023-11-14T22:13:20Z", "entries": entries
    });
    std::fs::write(
        dir.join("openwrk-sidecars.json"),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )
}

fn tempdir_in(dir: &Path) -> io::Result<PathBuf> {
    let work = dir.join(format!(".work-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    Ok(work)
}
