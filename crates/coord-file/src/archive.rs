//! `work_claims.archive.jsonl`: finished items moved out of the claims file,
//! one whole object per line, append-only.
//!
//! A move is guarded by `cleanup.intent.json` (see [`recover`]) so that after
//! any crash every item is in exactly one of the two files.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use coord_core::CoordError;
use reactor::Step;
use reactor_file::{AtomicWriter, read_optional};
use serde::{Deserialize, Serialize};

use crate::claims_doc::{CLAIMS_FILE, ClaimsDoc};
use crate::crash;
use crate::errors::{FlowError, file_error, write_error};

pub const ARCHIVE: &str = "work_claims.archive.jsonl";
pub const CLEANUP_INTENT: &str = "cleanup.intent.json";

/// What a cleanup is about to do: which ids move, where the archive ended
/// before it started appending, and the revision it commits as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Intent {
    pub archive_len: u64,
    pub work_item_ids: Vec<String>,
    pub revision: u64,
}

fn truncate(path: &Path, len: u64, writer: &AtomicWriter) -> Result<(), CoordError> {
    writer.cut_back(path, len).map_err(|e| write_error(path, e))
}

fn remove_intent(dir: &Path) -> Result<(), CoordError> {
    let path = dir.join(CLEANUP_INTENT);
    match fs::remove_file(&path) {
        Ok(()) => fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| write_error(&path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(write_error(&path, e)),
    }
}

/// How a half-done cleanup was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The claims file still held the items: the archive was cut back.
    RolledBack,
    /// The claims file no longer held them: the move was complete.
    RolledForward,
}

/// Settles a cleanup that a killed writer left half-done. Call it under the
/// directory lock before reading the claims file for a change.
///
/// The claims file is rewritten in one atomic rename, so the moving ids are
/// either all still in it (the archive append may be partial: cut it back to
/// its length before) or all gone (the move finished: record its revision as
/// committed and forget the intent). Its events need nothing here: the log
/// is settled against the committed revision by every change.
pub(crate) fn recover(dir: &Path, writer: &AtomicWriter) -> Result<Option<Recovery>, CoordError> {
    let intent_path = dir.join(CLEANUP_INTENT);
    let Some(bytes) = read_optional(&intent_path).map_err(file_error)? else {
        return Ok(None);
    };
    let intent: Intent = serde_json::from_slice(&bytes).map_err(|e| {
        CoordError::damaged(format!(
            "{} is not a valid cleanup intent ({e}); coord will not guess how to settle it",
            intent_path.display()
        ))
    })?;
    let claims_path = dir.join(CLAIMS_FILE);
    let claims_bytes = read_optional(&claims_path).map_err(file_error)?;
    let claims = ClaimsDoc::parse(
        &claims_path,
        claims_bytes.map(reactor_file::Contents::new).as_ref(),
        None,
    )?;
    let still_there = intent
        .work_item_ids
        .iter()
        .any(|id| claims.position(id).is_some());
    if still_there {
        truncate(&dir.join(ARCHIVE), intent.archive_len, writer)?;
    } else {
        crate::state::raise_revision(dir, intent.revision, writer)?;
    }
    remove_intent(dir)?;
    Ok(Some(if still_there {
        Recovery::RolledBack
    } else {
        Recovery::RolledForward
    }))
}

/// Makes the archive end with a whole line before an append. A last line
/// without its newline is what a writer that died (or failed, in an older
/// coord) while appending left: it never committed (every committed append
/// was whole and synced before its claims file was written), so it is cut,
/// as the event log's torn tail is. Returns how many bytes went. A whole
/// last line that is not a JSON object is not what coord wrote: appending
/// would bury it, so the archive is refused.
fn settle_tail(path: &Path) -> Result<u64, CoordError> {
    let last = match last_line(path) {
        Ok(Some(line)) => line,
        Ok(None) => return Ok(0),
        Err(e) => return Err(write_error(path, e)),
    };
    if !last.ends_with(b"\n") {
        if !last.starts_with(b"{") {
            return Err(not_ours(path));
        }
        let len = fs::metadata(path).map_err(|e| write_error(path, e))?.len();
        let torn = last.len() as u64;
        truncate(path, len - torn, &AtomicWriter::new())?;
        return Ok(torn);
    }
    let whole = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(
        &last[..last.len() - 1],
    )
    .is_ok();
    if whole { Ok(0) } else { Err(not_ours(path)) }
}

fn not_ours(path: &Path) -> CoordError {
    CoordError::damaged(format!(
        "{} does not end with a whole archived item; coord will not append to it",
        path.display()
    ))
}

/// The file's last line (with its newline, if it has one); `None` for an
/// empty or missing file. Reads back from the end in growing windows, so a
/// line of any length is read whole.
fn last_line(path: &Path) -> io::Result<Option<Vec<u8>>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        let mut bytes = vec![0u8; (len - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut bytes)?;
        // The newline that ends the line before the last one, if in view.
        let body_end = bytes.len() - usize::from(bytes.ends_with(b"\n"));
        match bytes[..body_end].iter().rposition(|b| *b == b'\n') {
            Some(i) => return Ok(Some(bytes[i + 1..].to_vec())),
            None if start == 0 => return Ok(Some(bytes)),
            None => window *= 4,
        }
    }
}

/// The `write_cleanup_intent` step: rotates the archive if it is too big,
/// then records the intent durably: which items move, where the archive
/// ends before the move, and the revision the cleanup commits as.
pub(crate) struct WriteIntent {
    pub dir: PathBuf,
    pub rotate_at: u64,
    pub writer: AtomicWriter,
    pub work_item_ids: Vec<String>,
    pub revision: u64,
    /// The intent, once written.
    pub written: Option<Intent>,
}

impl Step<FlowError> for WriteIntent {
    type Output = Intent;

    fn run(&mut self) -> Result<Intent, FlowError> {
        let archive = self.dir.join(ARCHIVE);
        let torn = settle_tail(&archive)?;
        if torn > 0 {
            tracing::warn!(
                bytes = torn,
                "cut a torn last line from the archive (an append that never committed)"
            );
        }
        let archive_len = match fs::metadata(&archive) {
            Ok(m) if m.len() >= self.rotate_at => {
                reactor_file::rotate(&archive, "jsonl").map_err(|e| write_error(&archive, e))?;
                0
            }
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(write_error(&archive, e).into()),
        };
        let intent = Intent {
            archive_len,
            work_item_ids: self.work_item_ids.clone(),
            revision: self.revision,
        };
        let path = self.dir.join(CLEANUP_INTENT);
        let bytes = serde_json::to_vec(&intent).expect("an intent always serialises");
        self.writer
            .write(&path, &bytes)
            .map_err(|f| write_error(&path, f.source))?;
        crash::point("cleanup:intent-written");
        self.written = Some(intent.clone());
        Ok(intent)
    }

    /// The intent goes only once the archive is back at the length it
    /// records: while a failed append's bytes are still there, it stays,
    /// and the next writer's [`recover`] cuts them.
    fn undo(&mut self) -> Result<(), FlowError> {
        if let Some(intent) = &self.written {
            truncate(&self.dir.join(ARCHIVE), intent.archive_len, &self.writer)?;
        }
        remove_intent(&self.dir).map_err(FlowError::from)
    }
}

/// The `append_to_archive` step: appends the moving records, all or
/// nothing, and fsyncs. Undo cuts the archive back to its length before.
pub(crate) struct AppendToArchive {
    pub dir: PathBuf,
    pub writer: AtomicWriter,
    /// The records, one line each.
    pub lines: Vec<String>,
    /// The archive's length before (from the intent).
    pub archive_len: u64,
}

impl Step<FlowError> for AppendToArchive {
    type Output = ();

    fn run(&mut self) -> Result<(), FlowError> {
        let path = self.dir.join(ARCHIVE);
        let mut bytes = Vec::with_capacity(self.lines.iter().map(|l| l.len() + 1).sum());
        for line in &self.lines {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| write_error(&path, e))?;
        // Written in two halves so a test can kill the writer in between;
        // a failure of either cuts the archive back to where it was.
        let (first, second) = bytes.split_at(bytes.len() / 2);
        let append = |file: &mut fs::File, part: &[u8], sync: bool| {
            self.writer
                .append(&path, file, self.archive_len, part, sync)
                .map_err(|f| write_error(&path, f.source))
        };
        let appended = append(&mut file, first, false).and_then(|()| {
            crash::point("cleanup:archive-partial");
            append(&mut file, second, true)
        });
        if appended.is_err() && !existed {
            // An archive this step made and could not fill goes too (it is
            // empty again, or the intent that outlives this run cuts it).
            let _ = fs::remove_file(&path);
        }
        appended?;
        crash::point("cleanup:archive-appended");
        Ok(())
    }

    fn undo(&mut self) -> Result<(), FlowError> {
        truncate(&self.dir.join(ARCHIVE), self.archive_len, &self.writer).map_err(FlowError::from)
    }
}

/// The `remove_cleanup_intent` step: the move is complete.
pub(crate) fn remove_cleanup_intent(dir: &Path) -> Result<(), CoordError> {
    crash::point("cleanup:revision-raised");
    remove_intent(dir)
}

/// Every archived record, as JSON objects (for `coord` readers and tests).
pub(crate) fn read_all(dir: &Path) -> Result<Vec<serde_json::Value>, CoordError> {
    let path = dir.join(ARCHIVE);
    let Some(bytes) = read_optional(&path).map_err(file_error)? else {
        return Ok(Vec::new());
    };
    // A last line without its newline is an append that never committed
    // (the next cleanup cuts it): not an archived item.
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    bytes[..whole]
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(n, line)| {
            serde_json::from_slice(line).map_err(|e| {
                CoordError::damaged(format!(
                    "{} line {}: not a JSON object ({e})",
                    path.display(),
                    n + 1
                ))
            })
        })
        .collect()
}
