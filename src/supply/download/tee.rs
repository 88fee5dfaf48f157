//! A download's bytes passed on as they arrive, so a decompressor can hash
//! the binary inside an archive while the archive is still downloading.

/// What a teed download passes on as its bytes arrive ([`Downloader::download_teed`]).
#[derive(Debug)]
pub enum Tee {
    /// The next bytes of the file, in order (a resumed download continues).
    Bytes(bytes::Bytes),
    /// The download starts over from byte 0: what came so far is void.
    Restart,
}

/// The two ends of a tee: the sender for [`Downloader::download_teed`], and
/// a blocking [`Read`](std::io::Read) over what arrives, for a decompressor
/// on another thread (a few chunks in flight at most: no asset is held in memory).
pub fn tee() -> (tokio::sync::mpsc::Sender<Tee>, TeeReader) {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    (
        tx,
        TeeReader {
            rx,
            current: bytes::Bytes::new(),
        },
    )
}

/// Reads a teed download on a blocking thread; EOF when the download ends
/// (or fails), an error when it starts over (the consumer then falls back
/// to the finished file).
pub struct TeeReader {
    rx: tokio::sync::mpsc::Receiver<Tee>,
    current: bytes::Bytes,
}

impl std::io::Read for TeeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Tee::Bytes(b)) => self.current = b,
                Some(Tee::Restart) => {
                    return Err(std::io::Error::other("the download started over"))
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}
