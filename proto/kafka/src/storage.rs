//! The storage interface the partition log is written against.
//!
//! The core never opens a file itself: the runtime hands it a [`Storage`]. The server uses plain
//! positional file I/O; tests use [`MemStorage`], which can also simulate a crash (dropping
//! everything not yet synced) and a full disk.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

/// One open file: positional reads and writes, explicit durability.
pub trait StoreFile: Send + Sync + std::fmt::Debug {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file holds no bytes.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `data` at `offset`.
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes everything written so far durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;

    /// Reads exactly `buf.len()` bytes at `offset`, or fails with `UnexpectedEof`.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(buf, offset)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }
}

/// A directory tree of files, addressed by `/`-separated paths relative to the data dir.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &str) -> io::Result<()>;
    /// Names of the entries in a directory (not recursive), or an empty list if it is missing.
    fn list_dir(&self, path: &str) -> io::Result<Vec<String>>;
    /// Removes a directory and everything under it.
    fn remove_dir_all(&self, path: &str) -> io::Result<()>;
    /// Removes one file.
    fn remove_file(&self, path: &str) -> io::Result<()>;
    /// Opens a file for reading and writing, creating it if `create`.
    fn open(&self, path: &str, create: bool) -> io::Result<Arc<dyn StoreFile>>;
    /// Reads a whole small file, `None` if it does not exist.
    fn read_file(&self, path: &str) -> io::Result<Option<Vec<u8>>>;
    /// Replaces a small file atomically and durably (write temp, sync, rename, sync dir).
    fn write_file_atomic(&self, path: &str, data: &[u8]) -> io::Result<()>;
    /// Makes a directory's entries (creations, removals) durable.
    fn sync_dir(&self, path: &str) -> io::Result<()>;
    /// Renames a file atomically, replacing `to` if it exists (durable after [`Storage::sync_dir`]).
    /// Open handles of the file stay valid.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Absolute location, for DescribeLogDirs and log lines.
    fn describe(&self) -> String;
}

/// In-memory storage for tests: tracks what was synced so a crash can be simulated.
#[derive(Debug, Default, Clone)]
pub struct MemStorage {
    inner: Arc<Mutex<MemInner>>,
}

#[derive(Debug, Default)]
struct MemInner {
    files: BTreeMap<String, Arc<MemFile>>,
    dirs: std::collections::BTreeSet<String>,
    /// Remaining bytes before writes fail with "no space", if set.
    space_left: Option<u64>,
}

/// A file of [`MemStorage`].
#[derive(Debug, Default)]
pub struct MemFile {
    data: Mutex<MemFileData>,
    owner: std::sync::Weak<Mutex<MemInner>>,
}

#[derive(Debug, Default, Clone)]
struct MemFileData {
    current: Vec<u8>,
    synced: Vec<u8>,
    /// Lowest offset changed since the last sync: a sync copies only from there (logs grow
    /// by appends; copying whole files made simulations quadratic).
    dirty_from: usize,
}

impl MemStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates power loss: every file falls back to its last synced contents.
    pub fn crash(&self) {
        let inner = self.inner.lock().unwrap();
        for f in inner.files.values() {
            let mut d = f.data.lock().unwrap();
            d.current = d.synced.clone();
            d.dirty_from = d.current.len();
        }
    }

    /// Limits the bytes that may still be written (a full disk); `None` lifts the limit.
    pub fn set_space_left(&self, bytes: Option<u64>) {
        self.inner.lock().unwrap().space_left = bytes;
    }

    /// Direct access to a file's current bytes, for corruption tests.
    pub fn raw(&self, path: &str) -> Option<Vec<u8>> {
        let inner = self.inner.lock().unwrap();
        inner
            .files
            .get(path)
            .map(|f| f.data.lock().unwrap().current.clone())
    }

    /// Overwrites a file's bytes (current and synced), for corruption tests.
    pub fn set_raw(&self, path: &str, bytes: Vec<u8>) {
        let inner = self.inner.lock().unwrap();
        let f = inner.files.get(path).expect("file exists");
        let mut d = f.data.lock().unwrap();
        d.current = bytes.clone();
        d.dirty_from = bytes.len();
        d.synced = bytes;
    }
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

impl Storage for MemStorage {
    fn create_dir_all(&self, path: &str) -> io::Result<()> {
        let mut inner = self.inner.lock().unwrap();
        let mut p = path;
        while !p.is_empty() {
            inner.dirs.insert(p.to_string());
            p = parent(p);
        }
        Ok(())
    }

    fn list_dir(&self, path: &str) -> io::Result<Vec<String>> {
        let inner = self.inner.lock().unwrap();
        let mut out: Vec<String> = inner
            .files
            .keys()
            .chain(inner.dirs.iter())
            .filter(|k| parent(k) == path)
            .map(|k| k.rsplit('/').next().unwrap().to_string())
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn remove_dir_all(&self, path: &str) -> io::Result<()> {
        let mut inner = self.inner.lock().unwrap();
        let prefix = format!("{path}/");
        inner.files.retain(|k, _| !k.starts_with(&prefix));
        inner.dirs.retain(|k| k != path && !k.starts_with(&prefix));
        Ok(())
    }

    fn remove_file(&self, path: &str) -> io::Result<()> {
        self.inner
            .lock()
            .unwrap()
            .files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn open(&self, path: &str, create: bool) -> io::Result<Arc<dyn StoreFile>> {
        let mut inner = self.inner.lock().unwrap();
        if let Some(f) = inner.files.get(path) {
            return Ok(f.clone());
        }
        if !create {
            return Err(io::ErrorKind::NotFound.into());
        }
        let f = Arc::new(MemFile {
            data: Mutex::default(),
            owner: Arc::downgrade(&self.inner),
        });
        inner.files.insert(path.to_string(), f.clone());
        Ok(f)
    }

    fn read_file(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.raw(path))
    }

    fn write_file_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        let f = self.open(path, true)?;
        f.set_len(0)?;
        f.write_at(data, 0)?;
        f.sync_data()
    }

    fn sync_dir(&self, _path: &str) -> io::Result<()> {
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut inner = self.inner.lock().unwrap();
        let f = inner
            .files
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        inner.files.insert(to.to_string(), f);
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

impl StoreFile for MemFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.data.lock().unwrap().current.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let d = self.data.lock().unwrap();
        let start = (offset as usize).min(d.current.len());
        let n = buf.len().min(d.current.len() - start);
        buf[..n].copy_from_slice(&d.current[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        if let Some(owner) = self.owner.upgrade() {
            let mut inner = owner.lock().unwrap();
            if let Some(left) = inner.space_left.as_mut() {
                if (data.len() as u64) > *left {
                    return Err(io::Error::new(
                        io::ErrorKind::StorageFull,
                        "No space left on device",
                    ));
                }
                *left -= data.len() as u64;
            }
        }
        let mut d = self.data.lock().unwrap();
        let end = offset as usize + data.len();
        d.dirty_from = d.dirty_from.min(offset as usize);
        if d.current.len() < end {
            d.current.resize(end, 0);
        }
        d.current[offset as usize..end].copy_from_slice(data);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut d = self.data.lock().unwrap();
        d.dirty_from = d.dirty_from.min(len as usize);
        d.current.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut d = self.data.lock().unwrap();
        let from = d.dirty_from.min(d.synced.len()).min(d.current.len());
        let MemFileData {
            current, synced, ..
        } = &mut *d;
        synced.truncate(from);
        synced.extend_from_slice(&current[from..]);
        d.dirty_from = d.current.len();
        Ok(())
    }
}
