//! The temp file a download streams into: `.<name>.part-<pid>` beside the
//! destination, removed unless persisted (fsync, then rename).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Attempt, DownloadError};

/// `.<name>.part-<pid>` beside the destination; removed on drop unless persisted.
pub(super) struct PartFile {
    path: PathBuf,
    file: Option<File>,
}

impl PartFile {
    pub(super) fn create(dest: &Path) -> Result<PartFile, DownloadError> {
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let path = dir.join(format!(".{name}.part-{}", std::process::id()));
        let io = |source| DownloadError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = File::create(&path).map_err(io)?;
        Ok(PartFile {
            path,
            file: Some(file),
        })
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<(), Attempt> {
        let file = self.file.as_mut().expect("open until persisted");
        file.write_all(bytes).map_err(|source| {
            Attempt::Fatal(DownloadError::Io {
                path: self.path.clone(),
                source,
            })
        })
    }

    pub(super) fn truncate(&mut self) -> Result<(), DownloadError> {
        let file = self.file.as_mut().expect("open until persisted");
        let io = |source| DownloadError::Io {
            path: self.path.clone(),
            source,
        };
        file.set_len(0).map_err(io)?;
        std::io::Seek::rewind(file).map_err(io)
    }

    pub(super) fn persist(mut self, dest: &Path) -> Result<(), DownloadError> {
        let file = self.file.take().expect("open until persisted");
        let io = |source| DownloadError::Io {
            path: dest.to_path_buf(),
            source,
        };
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&self.path, dest).map_err(io)?;
        crate::fsutil::sync_dir(dest.parent().unwrap_or(Path::new(".")));
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
