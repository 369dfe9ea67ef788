//! [`Storage`] on the local file system: positional reads and writes on plain files.
//!
//! Appends and reads hit the page cache and are made inline; the slow call, `fdatasync`, is
//! only ever made from the runtime's blocking pool by the flusher.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_proto::storage::{Storage, StoreFile};

/// The data directory.
#[derive(Debug)]
pub struct DiskStorage {
    root: PathBuf,
    /// Held for the process's lifetime: a second broker on the same directory is refused.
    _lock: File,
}

impl DiskStorage {
    /// Opens (creating) the data directory and locks it.
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(root)
            .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", root.display()))?;
        let root = root
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("data dir {}: {e}", root.display()))?;
        let lock_path = root.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => anyhow::bail!(
                "data dir {} is in use by another sluice process",
                root.display()
            ),
            Err(fs::TryLockError::Error(e)) => {
                anyhow::bail!("cannot lock {}: {e}", lock_path.display())
            }
        }
        Ok(DiskStorage { root, _lock: lock })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

#[derive(Debug)]
struct DiskFile(File);

impl StoreFile for DiskFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Storage for DiskStorage {
    fn create_dir_all(&self, path: &str) -> io::Result<()> {
        fs::create_dir_all(self.path(path))
    }

    fn list_dir(&self, path: &str) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(self.path(path)) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in rd {
            if let Some(name) = entry?.file_name().to_str() {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    fn remove_dir_all(&self, path: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.path(path)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn remove_file(&self, path: &str) -> io::Result<()> {
        fs::remove_file(self.path(path))
    }

    fn open(&self, path: &str, create: bool) -> io::Result<Arc<dyn StoreFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(self.path(path))?;
        Ok(Arc::new(DiskFile(f)))
    }

    fn read_file(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(path)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_file_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        let target = self.path(path);
        let tmp = target.with_extension("tmp");
        {
            let f = File::create(&tmp)?;
            f.write_all_at(data, 0)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &target)?;
        File::open(target.parent().unwrap_or(&self.root))?.sync_all()
    }

    fn sync_dir(&self, path: &str) -> io::Result<()> {
        File::open(self.path(path))?.sync_all()
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path(from), self.path(to))
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}
