//! Where segments live. Keys are `/`-separated relative paths such as
//! `assets/news-1/360p/12.ts` or `live/slot-9/index3.ts`. The default is a
//! directory on local disk; an S3-compatible object store implements the same
//! trait (put, get, delete by key) when segments must outlive one node.
//!
//! Bytes only: what a segment is (its asset, its duration, where it aired)
//! is kept in the [`tables`](crate::tables), and the playable assets'
//! segment lists in the [`asset_index`](crate::asset_index).

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

/// A store of immutable segment files.
#[async_trait]
pub trait SegmentStorage: Send + Sync + 'static {
    /// Writes `data` under `key`, replacing what was there. A reader sees the
    /// old file or the new one, never a part.
    async fn put(&self, key: &str, data: Bytes) -> std::io::Result<()>;
    /// Moves a local file into the store (a transcode's output), deleting
    /// the local copy.
    async fn put_file(&self, key: &str, file: &Path) -> std::io::Result<()>;
    /// The file under `key`, or `None` if there is none.
    async fn get(&self, key: &str) -> std::io::Result<Option<Bytes>>;
    /// Deletes the file under `key`, if there is one.
    async fn delete(&self, key: &str) -> std::io::Result<()>;
    /// Deletes every file under the key prefix `prefix/` (an asset's output
    /// before a retry).
    async fn delete_prefix(&self, prefix: &str) -> std::io::Result<()>;
}

/// Segments in a directory on local disk.
#[derive(Debug, Clone)]
pub struct LocalDiskStorage {
    root: PathBuf,
}

impl LocalDiskStorage {
    /// Storage under the directory `root`.
    pub fn new(root: impl Into<PathBuf>) -> LocalDiskStorage {
        LocalDiskStorage { root: root.into() }
    }

    /// The path of a key, refusing anything that could leave the root (the
    /// keys are built from ids and file names that callers send).
    fn path(&self, key: &str) -> std::io::Result<PathBuf> {
        let relative = Path::new(key);
        let plain = !key.is_empty()
            && relative
                .components()
                .all(|component| matches!(component, Component::Normal(_)));
        if !plain {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("segment key {key:?} is not a plain relative path"),
            ));
        }
        Ok(self.root.join(relative))
    }
}

#[async_trait]
impl SegmentStorage for LocalDiskStorage {
    async fn put(&self, key: &str, data: Bytes) -> std::io::Result<()> {
        let path = self.path(key)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        // Written beside the target and renamed over it, so a reader never
        // sees half a segment.
        let temporary = path.with_extension(format!("part-{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&temporary, &data).await?;
        tokio::fs::rename(&temporary, &path).await
    }

    async fn put_file(&self, key: &str, file: &Path) -> std::io::Result<()> {
        let path = self.path(key)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        // A rename when the work directory is on the same file system, a
        // copy otherwise.
        if tokio::fs::rename(file, &path).await.is_ok() {
            return Ok(());
        }
        let data = tokio::fs::read(file).await?;
        self.put(key, Bytes::from(data)).await?;
        tokio::fs::remove_file(file).await
    }

    async fn get(&self, key: &str) -> std::io::Result<Option<Bytes>> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn delete(&self, key: &str) -> std::io::Result<()> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> std::io::Result<()> {
        let path = self.path(prefix)?;
        match tokio::fs::remove_dir_all(&path).await {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_reads_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalDiskStorage::new(dir.path());
        storage
            .put("assets/a/360p/0.ts", Bytes::from_static(b"ts"))
            .await
            .unwrap();
        let read = storage.get("assets/a/360p/0.ts").await.unwrap();
        assert_eq!(read.as_deref(), Some(&b"ts"[..]));
        assert!(storage.get("assets/a/360p/1.ts").await.unwrap().is_none());
        storage
            .put("assets/a/360p/1.ts", Bytes::from_static(b"ts"))
            .await
            .unwrap();
        storage.delete("assets/a/360p/1.ts").await.unwrap();
        assert!(storage.get("assets/a/360p/1.ts").await.unwrap().is_none());
        for key in ["../x", "/etc/passwd", "a/../../x", ""] {
            assert!(storage.get(key).await.is_err(), "{key:?} was read");
        }
        storage.delete_prefix("assets/a").await.unwrap();
        assert!(storage.get("assets/a/360p/0.ts").await.unwrap().is_none());
    }
}
