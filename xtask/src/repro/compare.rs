//! Comparing two `dist/` trees byte for byte, naming the first difference.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};

use anyhow::Context;
use std::path::Path;

/// One way the two trees differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// A path present in only one run (1 or 2).
    OnlyIn { run: usize, name: String },
    /// A file in one run, a directory (or something else) in the other.
    Kind { name: String },
    /// Same name, different bytes: the first differing offset, the bytes
    /// there (`None` past the end of the shorter file) and both sizes.
    Content {
        name: String,
        offset: u64,
        bytes: (Option<u8>, Option<u8>),
        sizes: (u64, u64),
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let byte = |b: Option<u8>| match b {
            Some(b) => format!("0x{b:02x}"),
            None => "end of file".to_string(),
        };
        match self {
            Difference::OnlyIn { run, name } => write!(f, "{name}: only in run {run}"),
            Difference::Kind { name } => {
                write!(f, "{name}: a file in one run, not a file in the other")
            }
            Difference::Content {
                name,
                offset,
                bytes,
                sizes,
            } => write!(
                f,
                "{name}: first difference at byte offset {offset} (0x{offset:x}): {} in run 1, {} in run 2; sizes {} and {} bytes",
                byte(bytes.0),
                byte(bytes.1),
                sizes.0,
                sizes.1
            ),
        }
    }
}

/// The result of comparing two trees.
#[derive(Debug, Default)]
pub struct Comparison {
    /// Files present in both.
    pub files: usize,
    /// Bytes compared (of the first tree's files present in both).
    pub bytes: u64,
    pub differences: Vec<Difference>,
}

/// Compares two directory trees: same relative paths, byte-identical files.
pub fn compare_dirs(a: &Path, b: &Path) -> anyhow::Result<Comparison> {
    let left = list_tree(a)?;
    let right = list_tree(b)?;
    let mut out = Comparison::default();
    for (name, is_file) in &left {
        match right.get(name) {
            None => out.differences.push(Difference::OnlyIn {
                run: 1,
                name: name.clone(),
            }),
            Some(other) if other != is_file => out
                .differences
                .push(Difference::Kind { name: name.clone() }),
            Some(_) if !is_file => {}
            Some(_) => {
                out.files += 1;
                let (pa, pb) = (a.join(name), b.join(name));
                let sizes = (std::fs::metadata(&pa)?.len(), std::fs::metadata(&pb)?.len());
                out.bytes += sizes.0;
                if let Some((offset, bytes)) = first_difference(&pa, &pb).with_context(|| {
                    format!("cannot compare {} and {}", pa.display(), pb.display())
                })? {
                    out.differences.push(Difference::Content {
                        name: name.clone(),
                        offset,
                        bytes,
                        sizes,
                    });
                }
            }
        }
    }
    for name in right.keys().filter(|n| !left.contains_key(*n)) {
        out.differences.push(Difference::OnlyIn {
            run: 2,
            name: name.clone(),
        });
    }
    Ok(out)
}

/// Every path under `root` (relative, `/`-separated) → whether it is a regular file.
fn list_tree(root: &Path) -> anyhow::Result<BTreeMap<String, bool>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push((entry.path(), format!("{name}/")));
            }
            out.insert(name, kind.is_file());
        }
    }
    Ok(out)
}

/// Where two files first differ: the offset and each file's byte there
/// (`None` past its end).
pub type ByteDifference = (u64, (Option<u8>, Option<u8>));

/// The first offset where the two files differ, with the bytes there; `None` when identical.
pub fn first_difference(a: &Path, b: &Path) -> io::Result<Option<ByteDifference>> {
    const CHUNK: usize = 256 * 1024;
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut offset = 0u64;
    loop {
        let na = fill(&mut fa, &mut ba)?;
        let nb = fill(&mut fb, &mut bb)?;
        let common = na.min(nb);
        if let Some(i) = (0..common).find(|&i| ba[i] != bb[i]) {
            return Ok(Some((offset + i as u64, (Some(ba[i]), Some(bb[i])))));
        }
        if na != nb {
            let at = |buf: &[u8], n: usize| (common < n).then(|| buf[common]);
            return Ok(Some((offset + common as u64, (at(&ba, na), at(&bb, nb)))));
        }
        if na == 0 {
            return Ok(None);
        }
        offset += na as u64;
    }
}

/// Reads until `buf` is full or the file ends; returns how many bytes were read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        dir
    }

    #[test]
    fn identical_trees_have_no_difference() {
        let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let a = tree(&[("x", b"same"), ("sub/big", &big)]);
        let b = tree(&[("x", b"same"), ("sub/big", &big)]);
        let c = compare_dirs(a.path(), b.path()).unwrap();
        assert_eq!(c.files, 2);
        assert_eq!(c.bytes, 4 + 600_000);
        assert!(c.differences.is_empty(), "{:?}", c.differences);
    }

    #[test]
    fn reports_the_file_and_first_differing_offset() {
        // The difference lies past the first read chunk, to check offsets add up.
        let mut one: Vec<u8> = (0..300_000u32).map(|i| (i % 7) as u8).collect();
        let same = one.clone();
        one[262_200] ^= 0xff;
        let a = tree(&[("a.tar.gz", &same), ("b", b"ok")]);
        let b = tree(&[("a.tar.gz", &one), ("b", b"ok")]);
        let c = compare_dirs(a.path(), b.path()).unwrap();
        assert_eq!(c.files, 2);
        let want = Difference::Content {
            name: "a.tar.gz".into(),
            offset: 262_200,
            bytes: (Some(same[262_200]), Some(one[262_200])),
            sizes: (300_000, 300_000),
        };
        assert_eq!(c.differences, vec![want.clone()]);
        let text = want.to_string();
        assert!(
            text.contains("a.tar.gz")
                && text.contains("byte offset 262200")
                && text.contains("sizes 300000 and 300000"),
            "{text}"
        );
    }

    #[test]
    fn reports_a_one_byte_difference_in_a_small_file() {
        let a = tree(&[("SHA256SUMS", b"abc\n")]);
        let b = tree(&[("SHA256SUMS", b"abd\n")]);
        let c = compare_dirs(a.path(), b.path()).unwrap();
        assert_eq!(
            c.differences,
            vec![Difference::Content {
                name: "SHA256SUMS".into(),
                offset: 2,
                bytes: (Some(b'c'), Some(b'd')),
                sizes: (4, 4),
            }]
        );
    }

    #[test]
    fn a_prefix_differs_where_the_shorter_file_ends() {
        let a = tree(&[("m", b"12345")]);
        let b = tree(&[("m", b"123")]);
        let c = compare_dirs(a.path(), b.path()).unwrap();
        assert_eq!(
            c.differences,
            vec![Difference::Content {
                name: "m".into(),
                offset: 3,
                bytes: (Some(b'4'), None),
                sizes: (5, 3),
            }]
        );
        assert!(c.differences[0]
            .to_string()
            .contains("end of file in run 2"));
    }

    #[test]
    fn names_missing_on_either_side() {
        let a = tree(&[("both", b"1"), ("left", b"1")]);
        let b = tree(&[("both", b"1"), ("right", b"1")]);
        let c = compare_dirs(a.path(), b.path()).unwrap();
        assert_eq!(c.files, 1);
        assert_eq!(
            c.differences,
            vec![
                Difference::OnlyIn {
                    run: 1,
                    name: "left".into()
                },
                Difference::OnlyIn {
                    run: 2,
                    name: "right".into()
                },
            ]
        );
    }
}
