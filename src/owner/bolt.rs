//! A read-only reader of bolt (bbolt) database files, the format containerd keeps its metadata in: enough to list a
//! bucket's keys, values and nested buckets. The file is read into memory (bounded by the caller), never mapped
//! or locked, so a running containerd is never held up; the meta page with the highest valid transaction id is
//! used. A page that does not parse, a cycle or a depth past [`MAX_DEPTH`] is an error, never a panic.
//!
//! Layout (bbolt's `page.go`): a page is a 16-byte header (id u64, flags u16, count u16, overflow u32) then
//! `count` elements of 16 bytes; a leaf element is (flags u32, pos u32, ksize u32, vsize u32) with its key at
//! `pos` bytes from the element and the value after it; a branch element is (pos u32, ksize u32, pgid u64). A
//! bucket's value is (root pgid u64, sequence u64), followed by an inline leaf page when the root is 0. The meta
//! page (pages 0 and 1) holds magic, version, page size, flags, the root bucket, freelist, pgid, txid and an
//! FNV-1a checksum of the fields before it.

use std::collections::HashSet;

const MAGIC: u32 = 0xED0C_DAED;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const BUCKET_FLAG: u32 = 0x01;
const HEADER: usize = 16;
const ELEMENT: usize = 16;
/// Deeper B+trees than this do not occur in real databases (a depth of 10 holds billions of keys).
pub const MAX_DEPTH: usize = 32;

/// An open database, in memory.
pub struct Db {
    data: Vec<u8>,
    page_size: usize,
    root: u64,
    pub txid: u64,
}

/// A bucket: its root page, or its inline page (a copy of the bytes).
#[derive(Debug, Clone)]
pub enum Bucket {
    Page(u64),
    Inline(Vec<u8>),
}

/// One key of a bucket: a value, or a nested bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub bucket: bool,
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

fn fnv1a64(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A meta page at `off`: (page size, root pgid, txid), if it is valid.
fn meta(data: &[u8], off: usize) -> Option<(usize, u64, u64)> {
    let m = data.get(off + HEADER..off + HEADER + 64)?;
    if u32_at(m, 0)? != MAGIC || u32_at(m, 4)? != 2 {
        return None;
    }
    if fnv1a64(&m[..56]) != u64_at(m, 56)? {
        return None;
    }
    let ps = u32_at(m, 8)? as usize;
    if !(512..=(1 << 20)).contains(&ps) {
        return None;
    }
    Some((ps, u64_at(m, 16)?, u64_at(m, 48)?))
}

impl Db {
    /// Parses the meta pages of a database read into memory.
    pub fn open(data: Vec<u8>) -> Result<Db, String> {
        let first = meta(&data, 0);
        // The second meta page is at one page size; take it from the first, else try the usual sizes.
        let ps_guess: Vec<usize> = match first {
            Some((ps, _, _)) => vec![ps],
            None => vec![4096, 16384, 65536, 8192, 512, 1024, 2048],
        };
        let second = ps_guess.iter().find_map(|&ps| meta(&data, ps));
        let best = [first, second]
            .into_iter()
            .flatten()
            .max_by_key(|&(_, _, txid)| txid)
            .ok_or("no valid bolt meta page (not a bolt database, or torn)")?;
        Ok(Db {
            data,
            page_size: best.0,
            root: best.1,
            txid: best.2,
        })
    }

    /// The top-level bucket.
    pub fn root(&self) -> Bucket {
        Bucket::Page(self.root)
    }

    fn page(&self, id: u64) -> Result<&[u8], String> {
        let off = usize::try_from(id)
            .ok()
            .and_then(|i| i.checked_mul(self.page_size))
            .filter(|&o| o + HEADER <= self.data.len())
            .ok_or_else(|| format!("page {id} is past the end of the file"))?;
        let overflow = u32_at(&self.data, off + 12).unwrap_or(0) as usize;
        let len = (overflow + 1).saturating_mul(self.page_size);
        Ok(&self.data[off..self.data.len().min(off.saturating_add(len))])
    }

    /// Every key of a bucket, in order.
    pub fn entries(&self, b: &Bucket) -> Result<Vec<Entry>, String> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        match b {
            Bucket::Page(id) => self.walk(self.page(*id)?, Some(*id), 0, &mut seen, &mut out)?,
            Bucket::Inline(p) => self.walk(p, None, 0, &mut seen, &mut out)?,
        }
        Ok(out)
    }

    fn walk(
        &self,
        p: &[u8],
        id: Option<u64>,
        depth: usize,
        seen: &mut HashSet<u64>,
        out: &mut Vec<Entry>,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("a B+tree deeper than 32 levels".into());
        }
        if let Some(id) = id {
            if !seen.insert(id) {
                return Err(format!("page {id} is referenced twice"));
            }
        }
        let bad = || {
            format!(
                "page {} does not parse",
                id.map_or("inline".into(), |i| i.to_string())
            )
        };
        let flags = u16_at(p, 8).ok_or_else(bad)?;
        let count = u16_at(p, 10).ok_or_else(bad)? as usize;
        for i in 0..count {
            let e = HEADER + i * ELEMENT;
            if flags & LEAF != 0 {
                let (f, pos, ks, vs) = (
                    u32_at(p, e).ok_or_else(bad)?,
                    u32_at(p, e + 4).ok_or_else(bad)? as usize,
                    u32_at(p, e + 8).ok_or_else(bad)? as usize,
                    u32_at(p, e + 12).ok_or_else(bad)? as usize,
                );
                let k = e.checked_add(pos).ok_or_else(bad)?;
                let key = p
                    .get(k..k.checked_add(ks).ok_or_else(bad)?)
                    .ok_or_else(bad)?;
                let v = k + ks;
                let value = p
                    .get(v..v.checked_add(vs).ok_or_else(bad)?)
                    .ok_or_else(bad)?;
                out.push(Entry {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    bucket: f & BUCKET_FLAG != 0,
                });
            } else if flags & BRANCH != 0 {
                let child = u64_at(p, e + 8).ok_or_else(bad)?;
                self.walk(self.page(child)?, Some(child), depth + 1, seen, out)?;
            } else {
                return Err(bad());
            }
        }
        Ok(())
    }

    /// The nested bucket `name` of `b`, if there is one.
    pub fn bucket(&self, b: &Bucket, name: &[u8]) -> Result<Option<Bucket>, String> {
        let Some(e) = self
            .entries(b)?
            .into_iter()
            .find(|e| e.bucket && e.key == name)
        else {
            return Ok(None);
        };
        let root = u64_at(&e.value, 0).ok_or("a bucket value shorter than its header")?;
        Ok(Some(if root == 0 {
            Bucket::Inline(e.value.get(16..).unwrap_or_default().to_vec())
        } else {
            Bucket::Page(root)
        }))
    }

    /// The bucket at a path of names from the root.
    pub fn path(&self, names: &[&[u8]]) -> Result<Option<Bucket>, String> {
        let mut b = self.root();
        for n in names {
            match self.bucket(&b, n)? {
                Some(x) => b = x,
                None => return Ok(None),
            }
        }
        Ok(Some(b))
    }

    /// The value of `key` in `b`.
    pub fn get(&self, b: &Bucket, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(self
            .entries(b)?
            .into_iter()
            .find(|e| !e.bucket && e.key == key)
            .map(|e| e.value))
    }
}

/// Go's `binary.Uvarint`.
pub fn uvarint(b: &[u8]) -> Option<u64> {
    let mut x: u64 = 0;
    for (i, &c) in b.iter().enumerate().take(10) {
        x |= u64::from(c & 0x7f) << (7 * i);
        if c < 0x80 {
            return Some(x);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Db::open(Vec::new()).is_err());
        assert!(Db::open(vec![0xff; 10_000]).is_err());
        assert_eq!(uvarint(&[0xac, 0x02]), Some(300));
        assert_eq!(uvarint(&[0x80]), None);
    }
}
