use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use coord_core::{
    Claim, ClaimRequest, ConflictPolicy, CoordError, Filter, SeedPolicy, Store, Timestamp, Update,
};
use reactor_file::{AtomicWriter, ensure_dir, read_optional};

use crate::claims_doc::ClaimsDoc;
use crate::flow::{self, file_error};
use crate::lock::DirLock;

pub use crate::lock::LOCK_FILE;

/// The claims file inside the coordination directory.
pub const CLAIMS_FILE: &str = "work_claims.json";

/// How a [`FileStore`] behaves; `Default` gives the documented defaults.
#[derive(Clone)]
pub struct FileStoreOptions {
    /// How long a writer waits for the directory lock (default 10 s).
    pub lock_timeout: Duration,
    /// Which claims exclude each other (default [`SeedPolicy`]).
    pub policy: Arc<dyn ConflictPolicy>,
    /// Writes the claims file; tests give it a fault injector.
    pub writer: AtomicWriter,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        FileStoreOptions {
            lock_timeout: Duration::from_secs(10),
            policy: Arc::new(SeedPolicy),
            writer: AtomicWriter::new(),
        }
    }
}

impl fmt::Debug for FileStoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStoreOptions")
            .field("lock_timeout", &self.lock_timeout)
            .field("policy", &self.policy)
            .field("writer", &self.writer)
            .finish()
    }
}

/// Claims kept in a coordination directory on this machine.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    options: FileStoreOptions,
}

impl FileStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_options(dir, FileStoreOptions::default())
    }

    pub fn with_options(dir: impl Into<PathBuf>, options: FileStoreOptions) -> Self {
        FileStore {
            dir: dir.into(),
            options,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn claims_path(&self) -> PathBuf {
        self.dir.join(CLAIMS_FILE)
    }

    /// Runs `change` while holding the directory lock. The directory must
    /// exist before it can hold the lock file, so it is made first.
    fn locked<T>(&self, change: impl FnOnce() -> Result<T, CoordError>) -> Result<T, CoordError> {
        ensure_dir(&self.dir).map_err(file_error)?;
        let _lock = DirLock::acquire(&self.dir, self.options.lock_timeout)?;
        change()
    }

    /// Reads the claims file without the lock: the atomic rename means it is
    /// always a whole file, the one before or after any change.
    fn snapshot(&self) -> Result<ClaimsDoc, CoordError> {
        let path = self.claims_path();
        let bytes = read_optional(&path).map_err(file_error)?;
        ClaimsDoc::parse(&path, bytes.as_deref())
    }
}

impl Store for FileStore {
    fn claim(&self, request: &ClaimRequest) -> Result<Claim, CoordError> {
        request.validate()?;
        self.locked(|| {
            flow::claim(
                &self.dir,
                request,
                self.options.policy.as_ref(),
                self.options.writer.clone(),
                Timestamp::now(),
            )
        })
    }

    fn update(&self, work_item_id: &str, update: &Update) -> Result<Claim, CoordError> {
        self.locked(|| {
            flow::update(
                &self.dir,
                work_item_id,
                update,
                self.options.writer.clone(),
                Timestamp::now(),
            )
        })
    }

    fn get(&self, work_item_id: &str) -> Result<Claim, CoordError> {
        let doc = self.snapshot()?;
        let index = doc
            .position(work_item_id)
            .ok_or_else(|| CoordError::NotFound {
                work_item_id: work_item_id.to_owned(),
            })?;
        doc.claim(&self.claims_path(), index)
    }

    fn list(&self, filter: &Filter) -> Result<Vec<Claim>, CoordError> {
        let doc = self.snapshot()?;
        let path = self.claims_path();
        doc.heads()
            .enumerate()
            .filter(|(_, head)| filter.matches(head))
            .map(|(i, _)| doc.claim(&path, i))
            .collect()
    }
}
