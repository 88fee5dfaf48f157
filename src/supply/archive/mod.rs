//! Safe, streaming extraction of a binary from `.tar.gz` / `.zip`, and
//! deterministic archive writing for bundles (SPEC §2.4).

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::supply::digest::{FileDigest, HashingWriter};

mod write;
pub use write::{append_entry, with_dirs, write_tar, write_tar_gz, write_zip, ArchiveEntry};

/// The archive format of an asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ArchiveKind {
    #[serde(rename = "tar.gz")]
    TarGz,
    #[serde(rename = "zip")]
    Zip,
}

impl ArchiveKind {
    pub fn extension(self) -> &'static str {
        match self {
            ArchiveKind::TarGz => "tar.gz",
            ArchiveKind::Zip => "zip",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("unsafe entry `{entry}` in {archive}: {reason}\nhint: the archive is malformed or hostile; nothing was extracted")]
    UnsafeEntry {
        archive: PathBuf,
        entry: String,
        reason: &'static str,
    },
    #[error("`{binary}` not found in {archive}\n  entries: {entries}\nhint: the asset does not contain the expected binary; check the `binary` path in the manifest or sidecars.toml")]
    BinaryNotFound {
        archive: PathBuf,
        binary: String,
        entries: String,
    },
    #[error("cannot read archive {archive}: {source}\nhint: the file is corrupt or not a {kind}; delete it and fetch again")]
    Corrupt {
        archive: PathBuf,
        kind: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("`{entry}` in {archive} is larger than {limit} bytes\nhint: the archive is malformed or hostile (a decompression bomb); nothing was extracted")]
    TooLarge {
        archive: PathBuf,
        entry: String,
        limit: u64,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ArchiveError {
    /// SPEC §9: a hostile or broken archive is a verification error (5); a
    /// local disk that is full or not writable is a runtime failure (1).
    pub fn exit_code(&self) -> i32 {
        match self {
            ArchiveError::Write { .. } => 1,
            _ => 5,
        }
    }
}

/// Checks an archive entry's path: relative, no `..`, no root or drive prefix.
pub fn check_entry_path(name: &str) -> Result<PathBuf, &'static str> {
    if name.is_empty() {
        return Err("empty path");
    }
    if name.contains('\0') {
        return Err("path contains a NUL byte");
    }
    let norm = name.replace('\\', "/");
    if norm.starts_with('/') {
        return Err("absolute path");
    }
    let mut out = PathBuf::new();
    for comp in Path::new(&norm).components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    if norm
        .split('/')
        .any(|seg| seg.len() >= 2 && seg.as_bytes()[1] == b':')
    {
        return Err("path has a drive prefix");
    }
    Ok(out)
}

/// A link target must stay inside the extraction root when resolved from the
/// directory of the link itself.
fn check_link_target(entry: &Path, target: &str) -> Result<(), &'static str> {
    let norm = target.replace('\\', "/");
    if norm.starts_with('/') || Path::new(&norm).has_root() {
        return Err("link points to an absolute path");
    }
    let mut depth: i64 = entry.components().count() as i64 - 1;
    for comp in Path::new(&norm).components() {
        match comp {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return Err("link points to an absolute path"),
        }
        if depth < 0 {
            return Err("link points outside the archive");
        }
    }
    Ok(())
}

/// Extracts the entry `binary` of `archive` to `dest` (written through a temp
/// file beside it, mode 0755), hashing while writing. Every entry of the
/// archive is checked first; one unsafe entry refuses the whole archive.
pub fn extract_binary(
    archive: &Path,
    kind: ArchiveKind,
    binary: &str,
    dest: &Path,
    limit: u64,
) -> Result<FileDigest, ArchiveError> {
    let wanted = check_entry_path(binary).map_err(|reason| ArchiveError::UnsafeEntry {
        archive: archive.to_path_buf(),
        entry: binary.to_string(),
        reason,
    })?;
    let corrupt = |source: io::Error| ArchiveError::Corrupt {
        archive: archive.to_path_buf(),
        kind: kind.extension(),
        source,
    };
    let dir = dest.parent().unwrap_or(Path::new("."));
    let write_err = |source: io::Error| ArchiveError::Write {
        path: dest.to_path_buf(),
        source,
    };
    let tmp = tempfile::Builder::new()
        .prefix(&format!(
            ".{}.extract-",
            dest.file_name().unwrap_or_default().to_string_lossy()
        ))
        .tempfile_in(dir)
        .map_err(write_err)?;
    let digest = match kind {
        ArchiveKind::TarGz => extract_tar(
            archive,
            open(archive)?,
            &wanted,
            binary,
            Some(tmp.as_file()),
            limit,
        )?,
        ArchiveKind::Zip => {
            let names = list_zip_checked(archive)?;
            let chosen =
                pick_entry(&names, &wanted).ok_or_else(|| ArchiveError::BinaryNotFound {
                    archive: archive.to_path_buf(),
                    binary: binary.to_string(),
                    entries: summarize(&names),
                })?;
            let mut out = HashingWriter::new(io::BufWriter::new(tmp.as_file()));
            let mut zip = zip::ZipArchive::new(open(archive)?).map_err(|e| corrupt(e.into()))?;
            for i in 0..zip.len() {
                let mut file = zip.by_index(i).map_err(|e| corrupt(e.into()))?;
                if check_entry_path(&String::from_utf8_lossy(file.name_raw()))
                    .ok()
                    .as_ref()
                    == Some(&chosen)
                {
                    copy_limited(&mut file, &mut out, limit, archive, &chosen)?;
                    break;
                }
            }
            out.finish().map_err(write_err)?
        }
    };
    tmp.as_file().sync_all().map_err(write_err)?;
    set_executable(tmp.path()).map_err(write_err)?;
    tmp.persist(dest).map_err(|e| write_err(e.error))?;
    Ok(digest)
}

/// Like [`extract_binary`] for a tar.gz that arrives through `reader` (a
/// download in progress): every entry is checked as it streams by, and the
/// binary is hashed, and written to `dest` when given, without the archive
/// being read again. `archive` names it in errors. `dest` is written in
/// place (mode 0755, fsynced): it is the caller's part file, renamed into
/// place once the archive verified, and removed by the caller on failure.
pub fn extract_tar_gz_stream(
    reader: impl Read,
    archive: &Path,
    binary: &str,
    dest: Option<&Path>,
    limit: u64,
) -> Result<FileDigest, ArchiveError> {
    let wanted = check_entry_path(binary).map_err(|reason| ArchiveError::UnsafeEntry {
        archive: archive.to_path_buf(),
        entry: binary.to_string(),
        reason,
    })?;
    let Some(dest) = dest else {
        return extract_tar(archive, reader, &wanted, binary, None, limit);
    };
    let write_err = |source: io::Error| ArchiveError::Write {
        path: dest.to_path_buf(),
        source,
    };
    let file = File::create(dest).map_err(write_err)?;
    let digest = extract_tar(archive, reader, &wanted, binary, Some(&file), limit)?;
    file.sync_all().map_err(write_err)?;
    set_executable(dest).map_err(write_err)?;
    Ok(digest)
}

/// A temp file beside `dest` for an extraction.
fn temp_beside(dest: &Path) -> Result<tempfile::NamedTempFile, ArchiveError> {
    tempfile::Builder::new()
        .prefix(&format!(
            ".{}.extract-",
            dest.file_name().unwrap_or_default().to_string_lossy()
        ))
        .tempfile_in(dest.parent().unwrap_or(Path::new(".")))
        .map_err(|source| ArchiveError::Write {
            path: dest.to_path_buf(),
            source,
        })
}

/// fsync, mode 0755, then rename into place.
fn persist_executable(tmp: tempfile::NamedTempFile, dest: &Path) -> Result<(), ArchiveError> {
    let write_err = |source: io::Error| ArchiveError::Write {
        path: dest.to_path_buf(),
        source,
    };
    tmp.as_file().sync_all().map_err(write_err)?;
    set_executable(tmp.path()).map_err(write_err)?;
    tmp.persist(dest).map_err(|e| write_err(e.error))?;
    Ok(())
}

/// What streaming a zip's local entries found ([`stream_zip`]).
pub struct ZipStreamed {
    /// Every regular file's path, in archive order.
    files: Vec<PathBuf>,
    /// The first file matching the binary (exact path, else file name): its
    /// path, digest, and the extracted copy when one was asked for.
    candidate: Option<(PathBuf, FileDigest, Option<tempfile::NamedTempFile>)>,
}

/// Reads a zip as it arrives (local entry headers, as a download streams
/// in), hashing the first entry that matches `binary`, and writing it to a
/// temp file beside `dest` when given. A zip's authority is its central
/// directory at the end, so [`finish_zip`] confirms the result once the file
/// is complete (and extracts from the file when anything disagrees).
pub fn stream_zip(
    mut reader: impl Read,
    binary: &str,
    dest: Option<&Path>,
    limit: u64,
) -> Option<ZipStreamed> {
    let wanted = check_entry_path(binary).ok()?;
    let mut streamed = ZipStreamed {
        files: Vec::new(),
        candidate: None,
    };
    while let Ok(Some(mut file)) = zip::read::read_zipfile_from_stream(&mut reader) {
        let path = check_entry_path(&String::from_utf8_lossy(file.name_raw())).ok()?;
        if !file.is_file() {
            io::copy(&mut file, &mut io::sink()).ok()?;
            continue;
        }
        let matches = path == wanted || path.file_name() == wanted.file_name();
        if matches && streamed.candidate.is_none() {
            let tmp = match dest {
                Some(d) => Some(temp_beside(d).ok()?),
                None => None,
            };
            let digest = match &tmp {
                Some(t) => {
                    let mut w = HashingWriter::new(io::BufWriter::new(t.as_file()));
                    copy_limited(&mut file, &mut w, limit, Path::new(""), &path).ok()?;
                    w.finish().ok()?
                }
                None => {
                    let mut w = HashingWriter::new(io::sink());
                    copy_limited(&mut file, &mut w, limit, Path::new(""), &path).ok()?;
                    w.finish().ok()?
                }
            };
            streamed.candidate = Some((path.clone(), digest, tmp));
        } else {
            io::copy(&mut file, &mut io::sink()).ok()?;
        }
        streamed.files.push(path);
    }
    // Drain the rest (the central directory) so the sender never waits on us.
    io::copy(&mut reader, &mut io::sink()).ok()?;
    Some(streamed)
}

/// Confirms a [`stream_zip`] result against the complete file's central
/// directory (every entry checked, the same entry chosen as
/// [`extract_binary`] would); otherwise, or without a streamed result,
/// extracts from the file. With `dest` None only the digest is computed.
pub fn finish_zip(
    archive: &Path,
    streamed: Option<ZipStreamed>,
    binary: &str,
    dest: Option<&Path>,
    limit: u64,
) -> Result<FileDigest, ArchiveError> {
    let names = list_zip_checked(archive)?;
    if let (Some(s), Ok(wanted)) = (streamed, check_entry_path(binary)) {
        if let (Some((path, digest, tmp)), Some(chosen)) =
            (s.candidate, pick_entry(&names, &wanted))
        {
            if path == chosen && s.files == names && dest.is_some() == tmp.is_some() {
                if let (Some(dest), Some(tmp)) = (dest, tmp) {
                    persist_executable(tmp, dest)?;
                }
                return Ok(digest);
            }
        }
    }
    match dest {
        Some(dest) => extract_binary(archive, ArchiveKind::Zip, binary, dest, limit),
        None => {
            let scratch = temp_beside(archive)?;
            let digest = extract_binary(archive, ArchiveKind::Zip, binary, scratch.path(), limit);
            let _ = std::fs::remove_file(scratch.path());
            digest
        }
    }
}

/// One pass over a tar.gz: every entry is checked, and the wanted binary (the
/// exact path, else the one file of that name) is copied out as it streams by,
/// so the archive is decompressed once. Without `out` it is only hashed.
fn extract_tar(
    archive: &Path,
    reader: impl Read,
    wanted: &Path,
    binary: &str,
    out: Option<&File>,
    limit: u64,
) -> Result<FileDigest, ArchiveError> {
    let corrupt = |source: io::Error| ArchiveError::Corrupt {
        archive: archive.to_path_buf(),
        kind: ArchiveKind::TarGz.extension(),
        source,
    };
    let write_err = |source: io::Error| ArchiveError::Write {
        path: archive.to_path_buf(),
        source,
    };
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let mut names = Vec::new();
    let mut same_name = 0;
    // (exact path?, digest) of what was copied out so far.
    let mut copied: Option<(bool, FileDigest)> = None;
    for entry in ar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let Some(path) = check_tar_entry(archive, &entry)? else {
            continue;
        };
        let exact = path.as_path() == wanted;
        let by_name = !exact && path.file_name() == wanted.file_name();
        same_name += usize::from(by_name);
        let take =
            (exact && !copied.as_ref().is_some_and(|c| c.0)) || (by_name && copied.is_none());
        if take {
            let digest = match out {
                Some(out) => {
                    let mut file = out;
                    file.set_len(0).map_err(write_err)?;
                    io::Seek::rewind(&mut file).map_err(write_err)?;
                    let mut w = HashingWriter::new(io::BufWriter::new(out));
                    copy_limited(&mut entry, &mut w, limit, archive, &path)?;
                    w.finish().map_err(write_err)?
                }
                None => {
                    let mut w = HashingWriter::new(io::sink());
                    copy_limited(&mut entry, &mut w, limit, archive, &path)?;
                    w.finish().map_err(write_err)?
                }
            };
            copied = Some((exact, digest));
        }
        names.push(path);
    }
    match copied {
        Some((true, d)) => Ok(d),
        Some((false, d)) if same_name == 1 => Ok(d),
        _ => Err(ArchiveError::BinaryNotFound {
            archive: archive.to_path_buf(),
            binary: binary.to_string(),
            entries: summarize(&names),
        }),
    }
}

/// Checks a tar entry (path, and link target for links); the path of a regular file.
fn check_tar_entry<R: Read>(
    archive: &Path,
    entry: &tar::Entry<R>,
) -> Result<Option<PathBuf>, ArchiveError> {
    let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    let unsafe_entry = |reason| ArchiveError::UnsafeEntry {
        archive: archive.to_path_buf(),
        entry: raw.clone(),
        reason,
    };
    let path = check_entry_path(&raw).map_err(unsafe_entry)?;
    let kind = entry.header().entry_type();
    if kind.is_symlink() || kind.is_hard_link() {
        let target = entry
            .link_name_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if kind.is_hard_link() {
            // Hard link targets are relative to the archive root.
            check_entry_path(&target).map_err(unsafe_entry)?;
        } else {
            check_link_target(&path, &target).map_err(unsafe_entry)?;
        }
        return Ok(None);
    }
    Ok(kind.is_file().then_some(path))
}

/// The largest binary extracted when the manifest does not give its size.
pub const MAX_BINARY_SIZE: u64 = 2 << 30;

/// Copies at most `limit` bytes; more is a decompression bomb, not a binary.
fn copy_limited(
    reader: &mut impl Read,
    writer: &mut impl Write,
    limit: u64,
    archive: &Path,
    entry: &Path,
) -> Result<(), ArchiveError> {
    let copied = io::copy(&mut reader.take(limit.saturating_add(1)), writer).map_err(|source| {
        ArchiveError::Corrupt {
            archive: archive.to_path_buf(),
            kind: "archive",
            source,
        }
    })?;
    if copied > limit {
        return Err(ArchiveError::TooLarge {
            archive: archive.to_path_buf(),
            entry: entry.display().to_string(),
            limit,
        });
    }
    Ok(())
}

fn open(archive: &Path) -> Result<BufReader<File>, ArchiveError> {
    File::open(archive)
        .map(BufReader::new)
        .map_err(|source| ArchiveError::Write {
            path: archive.to_path_buf(),
            source,
        })
}

/// Lists every regular file of a zip, refusing it if any entry is unsafe.
/// (The central directory is read without decompressing anything.)
fn list_zip_checked(archive: &Path) -> Result<Vec<PathBuf>, ArchiveError> {
    let corrupt = |source: io::Error| ArchiveError::Corrupt {
        archive: archive.to_path_buf(),
        kind: ArchiveKind::Zip.extension(),
        source,
    };
    let unsafe_entry = |entry: String, reason| ArchiveError::UnsafeEntry {
        archive: archive.to_path_buf(),
        entry,
        reason,
    };
    let mut files = Vec::new();
    let mut zip = zip::ZipArchive::new(open(archive)?).map_err(|e| corrupt(e.into()))?;
    for i in 0..zip.len() {
        let file = zip.by_index_raw(i).map_err(|e| corrupt(e.into()))?;
        let raw = String::from_utf8_lossy(file.name_raw()).into_owned();
        let path = check_entry_path(&raw).map_err(|r| unsafe_entry(raw.clone(), r))?;
        if file.is_symlink() {
            // A zip symlink stores its target as the entry's contents.
            drop(file);
            let mut target = String::new();
            zip.by_index(i)
                .map_err(|e| corrupt(e.into()))?
                .take(4096)
                .read_to_string(&mut target)
                .map_err(corrupt)?;
            check_link_target(&path, &target).map_err(|r| unsafe_entry(raw, r))?;
        } else if file.is_file() {
            files.push(path);
        }
    }
    Ok(files)
}

/// The exact path, else the one file whose name matches (archives that add a top folder).
fn pick_entry(names: &[PathBuf], wanted: &Path) -> Option<PathBuf> {
    if let Some(p) = names.iter().find(|p| p.as_path() == wanted) {
        return Some(p.clone());
    }
    let mut by_name = names.iter().filter(|p| p.file_name() == wanted.file_name());
    match (by_name.next(), by_name.next()) {
        (Some(p), None) => Some(p.clone()),
        _ => None,
    }
}

fn summarize(names: &[PathBuf]) -> String {
    if names.is_empty() {
        return "(none)".to_string();
    }
    let mut shown: Vec<String> = names
        .iter()
        .take(10)
        .map(|p| p.display().to_string())
        .collect();
    if names.len() > 10 {
        shown.push(format!("… {} more", names.len() - 10));
    }
    shown.join(", ")
}

#[cfg(unix)]
pub fn set_executable(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
pub fn set_executable(_path: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths() {
        assert!(check_entry_path("opencode").is_ok());
        assert!(check_entry_path("./bin/opencode").is_ok());
        assert_eq!(check_entry_path("/etc/passwd"), Err("absolute path"));
        assert_eq!(check_entry_path("a/../../x"), Err("path contains `..`"));
        assert_eq!(check_entry_path("..\\x"), Err("path contains `..`"));
        assert_eq!(check_entry_path("C:/x"), Err("path has a drive prefix"));
        assert_eq!(check_entry_path(""), Err("empty path"));
    }

    fn extract(
        entries: &[(&str, openwrk_test_support::fixtures::Entry)],
        zip: bool,
    ) -> Result<String, ArchiveError> {
        let dir = tempfile::tempdir().unwrap();
        let (path, kind) = if zip {
            let p = dir.path().join("a.zip");
            openwrk_test_support::fixtures::zip(&p, entries).unwrap();
            (p, ArchiveKind::Zip)
        } else {
            let p = dir.path().join("a.tar.gz");
            openwrk_test_support::fixtures::tar_gz(&p, entries).unwrap();
            (p, ArchiveKind::TarGz)
        };
        let dest = dir.path().join("out");
        extract_binary(&path, kind, "opencode", &dest, MAX_BINARY_SIZE)?;
        Ok(std::fs::read_to_string(dest).unwrap())
    }

    #[test]
    fn picks_the_exact_path_else_the_one_file_of_that_name() {
        use openwrk_test_support::fixtures::Entry::Bytes;
        for zip in [false, true] {
            assert_eq!(
                extract(&[("pkg/bin/opencode", Bytes(b"nested"))], zip).unwrap(),
                "nested"
            );
            assert_eq!(
                extract(
                    &[
                        ("x/opencode", Bytes(b"nested")),
                        ("opencode", Bytes(b"top")),
                        ("y", Bytes(b"y"))
                    ],
                    zip
                )
                .unwrap(),
                "top"
            );
            let err = extract(
                &[("a/opencode", Bytes(b"a")), ("b/opencode", Bytes(b"b"))],
                zip,
            )
            .unwrap_err();
            assert!(err.to_string().contains("a/opencode, b/opencode"), "{err}");
            let err = extract(&[("README", Bytes(b"r"))], zip).unwrap_err();
            assert!(matches!(err, ArchiveError::BinaryNotFound { .. }), "{err}");
        }
    }

    #[test]
    fn decompression_bombs_stop_at_the_limit() {
        use openwrk_test_support::fixtures::Entry::Bytes;
        let big = vec![0u8; 1 << 20];
        for zip in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (path, kind) = if zip {
                let p = dir.path().join("a.zip");
                openwrk_test_support::fixtures::zip(&p, &[("opencode", Bytes(&big))]).unwrap();
                (p, ArchiveKind::Zip)
            } else {
                let p = dir.path().join("a.tar.gz");
                openwrk_test_support::fixtures::tar_gz(&p, &[("opencode", Bytes(&big))]).unwrap();
                (p, ArchiveKind::TarGz)
            };
            let dest = dir.path().join("out");
            let err = extract_binary(&path, kind, "opencode", &dest, 1000).unwrap_err();
            assert!(
                matches!(err, ArchiveError::TooLarge { limit: 1000, .. }),
                "{err}"
            );
            assert!(!dest.exists());
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count(),
                1,
                "no temp file left"
            );
        }
    }

    #[test]
    fn streamed_extraction_agrees_with_the_file() {
        use openwrk_test_support::fixtures::Entry::Bytes;
        let mut big = Vec::new();
        openwrk_test_support::fixtures::write_executable_like(&mut big, 3, 3 << 20).unwrap();
        let entries = [("README", Bytes(b"r")), ("pkg/opencode", Bytes(&big))];
        for zip in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (path, kind) = if zip {
                let p = dir.path().join("a.zip");
                openwrk_test_support::fixtures::zip(&p, &entries).unwrap();
                (p, ArchiveKind::Zip)
            } else {
                let p = dir.path().join("a.tar.gz");
                openwrk_test_support::fixtures::tar_gz(&p, &entries).unwrap();
                (p, ArchiveKind::TarGz)
            };
            let want = extract_binary(
                &path,
                kind,
                "opencode",
                &dir.path().join("a"),
                MAX_BINARY_SIZE,
            )
            .unwrap();
            let open = || BufReader::new(File::open(&path).unwrap());
            let out = dir.path().join("b");
            let got = if zip {
                let streamed = stream_zip(open(), "opencode", Some(&out), MAX_BINARY_SIZE);
                assert!(streamed.is_some());
                let only_hashed =
                    finish_zip(&path, None, "opencode", None, MAX_BINARY_SIZE).unwrap();
                assert_eq!(only_hashed, want);
                finish_zip(&path, streamed, "opencode", Some(&out), MAX_BINARY_SIZE).unwrap()
            } else {
                let only_hashed =
                    extract_tar_gz_stream(open(), &path, "opencode", None, MAX_BINARY_SIZE)
                        .unwrap();
                assert_eq!(only_hashed, want);
                extract_tar_gz_stream(open(), &path, "opencode", Some(&out), MAX_BINARY_SIZE)
                    .unwrap()
            };
            assert_eq!(got, want);
            assert_eq!(std::fs::read(&out).unwrap(), big);
        }
    }

    #[test]
    fn link_targets() {
        assert!(check_link_target(Path::new("a/b"), "c").is_ok());
        assert!(check_link_target(Path::new("a/b"), "../c").is_ok());
        assert!(check_link_target(Path::new("a/b"), "../../c").is_err());
        assert!(check_link_target(Path::new("b"), "/etc/passwd").is_err());
    }
}
