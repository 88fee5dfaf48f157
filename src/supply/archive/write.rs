//! Deterministic archives for bundles (SPEC §2.4): the same entries and
//! mtime give the same bytes, whatever the umask, owner or clock.

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

/// One file to put into an archive.
pub struct ArchiveEntry {
    /// Path inside the archive (forward slashes).
    pub name: String,
    /// File on disk whose contents are streamed in.
    pub source: PathBuf,
    pub executable: bool,
}

/// Writes a reproducible `.tar.gz`: entries sorted by name, fixed mtime,
/// uid/gid 0, empty owner names, 0755/0644 modes, gzip header without name or
/// timestamp. Parent directories are added as entries too.
pub fn write_tar_gz(out: &Path, entries: &[ArchiveEntry], mtime: u64) -> io::Result<()> {
    let file = File::create(out)?;
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(io::BufWriter::new(file), flate2::Compression::default());
    let gz = write_tar(gz, entries, mtime)?;
    let mut buf = gz.finish()?;
    buf.flush()?;
    buf.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// The deterministic tar stream of [`write_tar_gz`] (sorted entries, parent
/// directories, fixed mtime, owners and modes) into any writer, such as a
/// parallel gzip encoder; returns the writer.
pub fn write_tar<W: Write>(out: W, entries: &[ArchiveEntry], mtime: u64) -> io::Result<W> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    for (name, source) in with_dirs(entries) {
        match source {
            None => append_entry(&mut tar, &name, None::<(io::Empty, u64, bool)>, mtime)?,
            Some(entry) => {
                let f = File::open(&entry.source)?;
                let size = f.metadata()?.len();
                let file = (BufReader::new(f), size, entry.executable);
                append_entry(&mut tar, &name, Some(file), mtime)?;
            }
        }
    }
    tar.into_inner()
}

/// Writes a reproducible `.zip` (sorted entries, fixed timestamp, fixed modes).
pub fn write_zip(out: &Path, entries: &[ArchiveEntry], mtime: u64) -> io::Result<()> {
    let file = File::create(out)?;
    let mut zip = zip::ZipWriter::new(io::BufWriter::new(file));
    let stamp = dos_time(mtime);
    for (name, source) in with_dirs(entries) {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(stamp);
        match source {
            None => zip
                .add_directory(name, opts.unix_permissions(0o755))
                .map_err(io::Error::other)?,
            Some(entry) => {
                let mode = if entry.executable { 0o755 } else { 0o644 };
                zip.start_file(name, opts.unix_permissions(mode))
                    .map_err(io::Error::other)?;
                io::copy(&mut BufReader::new(File::open(&entry.source)?), &mut zip)?;
            }
        }
    }
    let mut buf = zip.finish().map_err(io::Error::other)?;
    buf.flush()?;
    buf.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// One entry of that layout: a directory when `file` is `None`, else the
/// `size` bytes of `file` (`(reader, size, executable)`); fixed mtime,
/// owners and modes (0755 for directories and executables, else 0644).
pub fn append_entry<W: Write, R: io::Read>(
    tar: &mut tar::Builder<W>,
    name: &str,
    file: Option<(R, u64, bool)>,
    mtime: u64,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header.set_username("")?;
    header.set_groupname("")?;
    match file {
        None => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, name, io::empty())
        }
        Some((reader, size, executable)) => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if executable { 0o755 } else { 0o644 });
            header.set_size(size);
            tar.append_data(&mut header, name, reader)
        }
    }
}

/// Entries plus their parent directories (as `None`), sorted by archive path.
pub fn with_dirs(entries: &[ArchiveEntry]) -> Vec<(String, Option<&ArchiveEntry>)> {
    let mut all: std::collections::BTreeMap<String, Option<&ArchiveEntry>> = Default::default();
    for e in entries {
        let mut prefix = String::new();
        let parts: Vec<&str> = e.name.split('/').collect();
        for dir in &parts[..parts.len() - 1] {
            prefix.push_str(dir);
            prefix.push('/');
            all.entry(prefix.clone()).or_insert(None);
        }
        all.insert(e.name.clone(), Some(e));
    }
    all.into_iter().collect()
}

/// A zip (DOS) timestamp for a Unix time; DOS time cannot go before 1980.
fn dos_time(unix: u64) -> zip::DateTime {
    let dt = chrono::DateTime::from_timestamp(unix as i64, 0).unwrap_or_default();
    use chrono::{Datelike, Timelike};
    zip::DateTime::from_date_and_time(
        dt.year().clamp(1980, 2107) as u16,
        dt.month() as u8,
        dt.day() as u8,
        dt.hour() as u8,
        dt.minute() as u8,
        dt.second() as u8,
    )
    .unwrap_or_default()
}
