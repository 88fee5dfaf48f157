//! Getting every asset into the assets directory, hashed: OpenCode archives
//! downloaded (all at once by default) and decompressed and hashed while
//! they arrive, prebuilt files copied (a reflink where the filesystem can)
//! and hashed on the blocking pool meanwhile.

use std::path::{Path, PathBuf};

use anyhow::Context;
use openwrk::commands::progress::Renderer;
use openwrk::supply::archive::{self, ArchiveKind, ZipStreamed};
use openwrk::supply::digest::{hash_file, FileDigest};
use openwrk::supply::download::{Downloader, Expected};
use openwrk::supply::platform::Target;

use super::dist::human;

/// A sidecar's asset for one target, once it is in the assets directory.
pub struct Fetched {
    pub sidecar: String,
    pub target: Target,
    pub asset: String,
    pub digest: FileDigest,
    pub archive: Option<(ArchiveKind, String)>,
    /// The executable on disk (extracted from the archive, or the asset
    /// itself); `None` when only its digest was needed (no bundled archive
    /// for that target).
    pub binary_path: Option<PathBuf>,
    pub binary_digest: FileDigest,
}

/// One OpenCode archive to download.
pub struct Job {
    pub sidecar: String,
    pub target: Target,
    pub url: String,
    pub asset: String,
    pub expected: Expected,
    pub archive: (ArchiveKind, String),
}

/// One prebuilt file to take in.
pub struct Prebuilt {
    pub sidecar: String,
    pub target: Target,
    pub file: String,
    pub src: PathBuf,
    /// Where the asset goes in dist/ (`--mode download|both`); `None`: only hashed.
    pub dest: Option<PathBuf>,
}

/// What streaming the archive through its decompressor gave.
enum Streamed {
    Tar(Result<FileDigest, archive::ArchiveError>),
    Zip(Option<ZipStreamed>),
}

/// Downloads one archive, teeing its bytes into a decompressor on the
/// blocking pool: the binary is hashed (and, with `bin_dir`, written out)
/// as the archive arrives, so nothing is read twice. The download's own
/// verdict comes first; a streamed result that a restarted download voided
/// is redone from the finished file.
pub async fn download(
    downloader: &Downloader,
    job: Job,
    assets_dir: &Path,
    bin_dir: Option<PathBuf>,
    progress: &Renderer,
) -> anyhow::Result<Fetched> {
    let dest = assets_dir.join(&job.asset);
    let (kind, binary) = job.archive.clone();
    let bin_path = match bin_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            Some(dir.join(Path::new(&binary).file_name().unwrap_or_default()))
        }
        None => None,
    };
    let (tx, reader) = openwrk::supply::download::tee();
    let (label, inner, out) = (dest.clone(), binary.clone(), bin_path.clone());
    let streaming = tokio::task::spawn_blocking(move || match kind {
        ArchiveKind::TarGz => Streamed::Tar(archive::extract_tar_gz_stream(
            reader,
            &label,
            &inner,
            out.as_deref(),
            archive::MAX_BINARY_SIZE,
        )),
        ArchiveKind::Zip => Streamed::Zip(archive::stream_zip(
            reader,
            &inner,
            out.as_deref(),
            archive::MAX_BINARY_SIZE,
        )),
    });
    let downloaded = downloader
        .download_teed(&job.url, &dest, &job.expected, Some(tx))
        .await;
    let streamed = streaming.await?;
    let digest = downloaded?;
    progress.line(&format!(
        "downloaded {} ({}, sha256 {})",
        job.asset,
        human(digest.size),
        digest.short()
    ));
    let (file, inner, out) = (dest.clone(), binary.clone(), bin_path.clone());
    let binary_digest = tokio::task::spawn_blocking(move || {
        let limit = archive::MAX_BINARY_SIZE;
        match streamed {
            Streamed::Tar(Ok(d)) => Ok(d),
            // Anything amiss is decided on the complete, verified file
            // (the same checks, so a hostile archive fails the same way).
            Streamed::Tar(Err(_)) => match &out {
                Some(out) => archive::extract_binary(&file, kind, &inner, out, limit),
                None => archive::extract_tar_gz_stream(
                    std::io::BufReader::new(std::fs::File::open(&file).map_err(|source| {
                        archive::ArchiveError::Write {
                            path: file.clone(),
                            source,
                        }
                    })?),
                    &file,
                    &inner,
                    None,
                    limit,
                ),
            },
            Streamed::Zip(s) => archive::finish_zip(&file, s, &inner, out.as_deref(), limit),
        }
    })
    .await??;
    Ok(Fetched {
        sidecar: job.sidecar,
        target: job.target,
        asset: job.asset,
        digest,
        archive: Some(job.archive),
        binary_path: bin_path,
        binary_digest,
    })
}

/// Takes in one prebuilt file: copied into dist/ when it goes there
/// (`copy_file_range`: a reflink on filesystems that share extents, an
/// in-kernel copy elsewhere; never a hard link, which would let a rebuilt
/// input change the published file), then hashed.
pub fn prebuilt(p: Prebuilt) -> anyhow::Result<Fetched> {
    let path = match &p.dest {
        Some(dest) => {
            std::fs::copy(&p.src, dest).with_context(|| {
                format!("cannot copy {} to {}", p.src.display(), dest.display())
            })?;
            dest.clone()
        }
        None => p.src.clone(),
    };
    let digest = hash_file(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Fetched {
        sidecar: p.sidecar,
        target: p.target,
        asset: p.file,
        binary_digest: digest.clone(),
        digest,
        archive: None,
        binary_path: Some(path),
    })
}
