//! Parallel gzip for bundled archives, on all cores (pigz's `--independent`
//! mode): the input is cut into fixed 1 MiB blocks, each deflated on its own
//! thread with no history, ended with a sync flush (the last one finishes the
//! stream), and the pieces are written in order behind one gzip header, with
//! the CRC-32 combined from the blocks'. The output depends only on the input
//! and the level, never on the number of threads or their timing, and the
//! header carries no file name and no timestamp (SPEC §2.4), so bundles stay
//! byte-reproducible.
//!
//! Hand-written on flate2 (zlib-rs, the crate the library already uses)
//! rather than taken from a parallel-gzip crate: those pull in their own
//! compression backends and thread pools and do not promise a fixed
//! header, and this is ~150 lines.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

/// Uncompressed bytes per independently deflated block.
const BLOCK: usize = 1 << 20;

/// One compressed block: the deflate bytes, the CRC-32 of its input.
struct Piece {
    deflated: Vec<u8>,
    crc: crc32fast::Hasher,
}

pub struct ParGz<W: Write> {
    out: W,
    level: u32,
    block: Vec<u8>,
    /// Blocks being compressed, oldest first.
    in_flight: VecDeque<JoinHandle<Piece>>,
    max_in_flight: usize,
    crc: crc32fast::Hasher,
    size: u64,
}

impl<W: Write> ParGz<W> {
    /// A gzip stream at `level` into `out`, using every core.
    pub fn new(mut out: W, level: u32) -> io::Result<ParGz<W>> {
        // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL OS=255 (unknown), as flate2's
        // GzBuilder writes it with mtime 0 and operating_system 255.
        let xfl = match level {
            9.. => 2,
            1 => 4,
            _ => 0,
        };
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(ParGz {
            out,
            level,
            block: Vec::with_capacity(BLOCK),
            in_flight: VecDeque::new(),
            max_in_flight: threads,
            crc: crc32fast::Hasher::new(),
            size: 0,
        })
    }

    /// Hands the full block to a thread; writes out the oldest ones while
    /// too many are in flight (memory stays at a few blocks per core).
    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let level = self.level;
        self.size += data.len() as u64;
        self.in_flight.push_back(std::thread::spawn(move || {
            let mut crc = crc32fast::Hasher::new();
            crc.update(&data);
            Piece {
                deflated: deflate(&data, level, last),
                crc,
            }
        }));
        while self.in_flight.len() > self.max_in_flight || (last && !self.in_flight.is_empty()) {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(handle) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let piece = handle
            .join()
            .map_err(|_| io::Error::other("a compression thread panicked"))?;
        self.crc.combine(&piece.crc);
        self.out.write_all(&piece.deflated)
    }

    /// Ends the stream (the last block, CRC-32 and size trailer) and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        let crc = std::mem::take(&mut self.crc).finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&(self.size as u32).to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParGz<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    /// Blocks are cut at fixed sizes only, so flushing writes nothing early.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Raw deflate of one block without history: a sync flush at its end (byte
/// aligned, not final) so the next block's bytes can follow, or the final
/// block of the stream.
fn deflate(data: &[u8], level: u32, last: bool) -> Vec<u8> {
    let mut c = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .expect("deflate of an in-memory block cannot fail");
        let all_in = c.total_in() as usize == data.len();
        match status {
            Status::StreamEnd => break,
            // A sync flush is complete once it left room in the buffer.
            _ if !last && all_in && out.len() < out.capacity() => break,
            _ => out.reserve(out.capacity().max(64 * 1024)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gz(data: &[u8], level: u32) -> Vec<u8> {
        let mut w = ParGz::new(Vec::new(), level).unwrap();
        // Odd write sizes: block boundaries never depend on them.
        for chunk in data.chunks(777_777) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_and_is_deterministic() {
        let mut data = Vec::new();
        openwrk_test_support::fixtures::write_executable_like(
            &mut data,
            7,
            3 * BLOCK as u64 + 12345,
        )
        .unwrap();
        for input in [&data[..], &data[..BLOCK], &[][..], b"hello"] {
            let a = gz(input, 6);
            assert_eq!(a, gz(input, 6));
            assert_eq!(&a[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&a[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, input);
            // gzip itself accepts it (CRC and size trailer included).
            if let Ok(mut child) = std::process::Command::new("gzip")
                .args(["-t", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
            {
                child.stdin.take().unwrap().write_all(&a).unwrap();
                assert!(child.wait().unwrap().success());
            }
        }
    }
}
