//! Parallel gzip for bundled archives, on all cores (pigz's `--independent`
//! mode): the input is cut into fixed 1 MiB blocks, each deflated on its own
//! thread with no history and ended with a sync flush ([`Blocks`]), and the
//! pieces are written in order behind one gzip header, then an empty final
//! block and the CRC-32 combined from the blocks' ([`concat`]). The output depends only on the input and
//! the level, never on the number of threads or their timing, and the header
//! carries no file name and no timestamp (SPEC §2.4), so bundles stay
//! byte-reproducible.
//!
//! Because no block depends on another, separately deflated parts (each a
//! tar entry, compressed while the bundler still downloads) join into one
//! stream, and the result depends only on the parts' bytes.
//!
//! Hand-written on flate2 (zlib-rs, the crate the library already uses)
//! rather than taken from a parallel-gzip crate: those pull in their own
//! compression backends and thread pools and do not promise a fixed
//! header, and this is ~200 lines.

use std::collections::VecDeque;
use std::io::{self, Seek, Write};
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress};

/// Uncompressed bytes per independently deflated block.
const BLOCK: usize = 1 << 20;

/// An empty final deflate block (fixed Huffman codes, end of block at once):
/// what ends a stream whose blocks all end with a sync flush.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// Blocks being deflated at once, across every part of every archive: one
/// per core keeps the cores busy, and memory at a few blocks however many
/// entries compress side by side.
static COMPRESSING: Permits = Permits::new();

/// A counting semaphore (the bundler's threads are plain threads).
struct Permits {
    used: Mutex<usize>,
    freed: Condvar,
}

impl Permits {
    const fn new() -> Permits {
        Permits {
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    fn acquire(&'static self) -> Permit {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= cores {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        Permit(self)
    }
}

/// Returned on drop (a panicking thread too).
struct Permit(&'static Permits);

impl Drop for Permit {
    fn drop(&mut self) {
        *self.0.used.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.0.freed.notify_one();
    }
}

/// One compressed block: the deflate bytes, the CRC-32 of its input.
struct Piece {
    deflated: Vec<u8>,
    crc: crc32fast::Hasher,
}

/// Raw deflate data of what is written, in independent blocks, each ended
/// with a sync flush (no final block): a part of a gzip stream.
pub struct Blocks<W: Write> {
    out: W,
    level: u32,
    block: Vec<u8>,
    /// Blocks being compressed, oldest first.
    in_flight: VecDeque<JoinHandle<Piece>>,
    max_in_flight: usize,
    crc: crc32fast::Hasher,
    size: u64,
    /// Writes after [`Blocks::close`] are dropped.
    closed: bool,
}

impl<W: Write> Blocks<W> {
    pub fn new(out: W, level: u32) -> Blocks<W> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Blocks {
            out,
            level,
            block: Vec::with_capacity(BLOCK),
            in_flight: VecDeque::new(),
            max_in_flight: threads,
            crc: crc32fast::Hasher::new(),
            size: 0,
            closed: false,
        }
    }

    /// Drops every later write: a tar builder ends with end-of-archive
    /// records that do not belong to a part holding a single entry.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Hands the block to a thread; writes out the oldest ones while too
    /// many are in flight (memory stays at a few blocks per core).
    fn submit(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let level = self.level;
        self.size += data.len() as u64;
        let permit = COMPRESSING.acquire();
        self.in_flight.push_back(std::thread::spawn(move || {
            let mut crc = crc32fast::Hasher::new();
            crc.update(&data);
            let mut deflated = deflate(&data, level);
            deflated.shrink_to_fit();
            // Released here, not when written out: a part waiting for a
            // permit never holds back the pieces it still has to write.
            drop(permit);
            Piece { deflated, crc }
        }));
        while self.in_flight.len() > self.max_in_flight {
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

    /// The last (short) block and everything in flight written out: the
    /// writer, the CRC-32 and length of the input.
    pub fn finish(mut self) -> io::Result<(W, crc32fast::Hasher, u64)> {
        if !self.block.is_empty() {
            self.submit()?;
        }
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        self.out.flush()?;
        Ok((self.out, self.crc, self.size))
    }
}

impl<W: Write> Write for Blocks<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        let n = buf.len().min(BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == BLOCK {
            self.submit()?;
        }
        Ok(n)
    }

    /// Blocks are cut at fixed sizes only, so flushing writes nothing early.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL OS=255 (unknown), as flate2's
/// GzBuilder writes it with mtime 0 and operating_system 255.
fn header(level: u32) -> [u8; 10] {
    let xfl = match level {
        9.. => 2,
        1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
}

fn trailer(out: &mut impl Write, crc: crc32fast::Hasher, size: u64) -> io::Result<()> {
    out.write_all(&FINAL_BLOCK)?;
    out.write_all(&crc.finalize().to_le_bytes())?;
    out.write_all(&(size as u32).to_le_bytes())?;
    out.flush()
}

/// A part deflated by [`Blocks`] into a file.
pub struct Deflated {
    pub file: std::fs::File,
    pub crc: crc32fast::Hasher,
    pub size: u64,
}

/// One gzip stream of `parts` in order (what [`ParGz`] makes of their
/// inputs written one after the other).
pub fn concat<W: Write>(mut out: W, level: u32, parts: Vec<Deflated>) -> io::Result<W> {
    out.write_all(&header(level))?;
    let (mut crc, mut size) = (crc32fast::Hasher::new(), 0u64);
    for mut part in parts {
        part.file.rewind()?;
        io::copy(&mut part.file, &mut out)?;
        crc.combine(&part.crc);
        size += part.size;
    }
    trailer(&mut out, crc, size)?;
    Ok(out)
}

/// Raw deflate of one block without history, ended with a sync flush (byte
/// aligned, not final) so the next block's bytes can follow.
fn deflate(data: &[u8], level: u32) -> Vec<u8> {
    let mut c = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 1024);
    loop {
        let consumed = c.total_in() as usize;
        c.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
            .expect("deflate of an in-memory block cannot fail");
        // A sync flush is complete once it left room in the buffer.
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            return out;
        }
        out.reserve(out.capacity().max(64 * 1024));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gz(data: &[u8], level: u32) -> Vec<u8> {
        let mut w = Blocks::new(tempfile::tempfile().unwrap(), level);
        // Odd write sizes: block boundaries never depend on them.
        for chunk in data.chunks(777_777) {
            w.write_all(chunk).unwrap();
        }
        let (file, crc, size) = w.finish().unwrap();
        concat(Vec::new(), level, vec![Deflated { file, crc, size }]).unwrap()
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

    /// Parts deflated on their own join into one stream of their inputs, in order.
    #[test]
    fn concatenated_parts_decode_to_the_joined_input() {
        let mut data = Vec::new();
        openwrk_test_support::fixtures::write_executable_like(&mut data, 9, BLOCK as u64 + 999)
            .unwrap();
        let inputs: [&[u8]; 4] = [&data[..], b"", b"tar header", &data[..1000]];
        let joined: Vec<u8> = inputs.concat();
        let make = || {
            let parts = inputs
                .iter()
                .map(|input| {
                    let mut b = Blocks::new(tempfile::tempfile().unwrap(), 6);
                    b.write_all(input).unwrap();
                    b.close();
                    b.write_all(b"dropped after close").unwrap();
                    let (file, crc, size) = b.finish().unwrap();
                    Deflated { file, crc, size }
                })
                .collect();
            concat(Vec::new(), 6, parts).unwrap()
        };
        let a = make();
        assert_eq!(a, make());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&a[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, joined);
    }
}
