//! `coordination_events.jsonl`: one JSON object per line, appended under the
//! directory lock just before the change it records commits (write-ahead),
//! and settled by the next writer: lines of a revision that never committed
//! are dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use coord_core::{CoordError, Event, EventPage};
use reactor::Step;
use reactor_file::AtomicWriter;

use crate::errors::FlowError;
use crate::memory::{OpenLog, SharedMemory};

pub const EVENT_LOG: &str = "coordination_events.jsonl";

fn io_error(path: &Path, source: io::Error) -> CoordError {
    CoordError::AtomicWriteFailed {
        path: path.to_owned(),
        source: source.into(),
    }
}

/// Every line coord writes starts like this (`time` is the first field).
const LINE_START: &[u8] = b"{\"time\":\"";

fn not_ours(path: &Path, what: &str) -> CoordError {
    CoordError::damaged(format!(
        "{} {what}; coord will not write to a log it cannot read",
        path.display()
    ))
}

/// The end of the log's last whole line, after cutting a torn tail that a
/// killed writer left. Only what looks like coord's own partial line, after
/// a whole event line (or alone), is cut; anything else is an error.
fn repair_tail(path: &Path, file: &mut File) -> Result<u64, CoordError> {
    repair_tail_reading(path, file).map(|(len, _, _)| len)
}

/// A file's device and inode numbers.
type Inode = (u64, u64);

fn inode(meta: &std::fs::Metadata) -> Inode {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// The last [`TAIL`] bytes (or the whole log, if shorter) as read to check
/// the tail, when it was whole: settling looks at the same bytes.
type Tail = Option<Vec<u8>>;

const TAIL: u64 = 4096;

/// [`repair_tail`], also handing back the tail it read when it was whole.
fn repair_tail_reading(path: &Path, file: &mut File) -> Result<(u64, Tail, Inode), CoordError> {
    let io = |e| io_error(path, e);
    let meta = file.metadata().map_err(io)?;
    let (len, id) = (meta.len(), inode(&meta));
    let mut window: u64 = TAIL;
    loop {
        let start = len.saturating_sub(window);
        let mut bytes = vec![0u8; (len - start) as usize];
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        file.read_exact(&mut bytes).map_err(io)?;
        let Some(last_newline) = bytes.iter().rposition(|b| *b == b'\n') else {
            if start > 0 {
                window *= 4;
                continue;
            }
            // No whole line at all: an empty log, or a lone torn line.
            return if bytes.is_empty() || bytes.starts_with(LINE_START) {
                file.set_len(0).map_err(io)?;
                Ok((0, None, id))
            } else {
                Err(not_ours(path, "does not start with an event"))
            };
        };
        let end = start + last_newline as u64 + 1;
        if end == len {
            return Ok((len, (window == TAIL).then_some(bytes), id));
        }
        let line_start = bytes[..last_newline]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        if line_start == 0 && start > 0 {
            window *= 4;
            continue;
        }
        let last_line_is_event =
            serde_json::from_slice::<Event>(&bytes[line_start..last_newline]).is_ok();
        if last_line_is_event && bytes[last_newline + 1..].starts_with(LINE_START) {
            file.set_len(end).map_err(io)?;
            return Ok((end, None, id));
        }
        return Err(not_ours(path, "ends with something that is not an event"));
    }
}

/// How the log is written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogOptions {
    /// Rotate the log once it has grown past this many bytes.
    pub rotate_at: u64,
    /// fdatasync every append (else the page cache holds it, which survives
    /// any process crash but not an OS crash or power loss).
    pub sync: bool,
    /// The log was settled under the lock just before (inside a change):
    /// its tail is known to be whole.
    pub settled: bool,
}

/// Appends `events` to the log at `path`, rotating it first when it has
/// grown too big. Returns the length before the append (for undo).
pub(crate) fn append(
    path: &Path,
    events: &[Event],
    options: LogOptions,
    writer: &AtomicWriter,
) -> Result<u64, CoordError> {
    append_keeping(path, events, options, None, writer).map(|(len, _)| len)
}

/// [`append`] through `kept`, the log as this store left it and this
/// change's settle step found it (so its length is known), if given;
/// returns the log too, still open (its `revision` left for the caller).
fn append_keeping(
    path: &Path,
    events: &[Event],
    options: LogOptions,
    kept: Option<OpenLog>,
    writer: &AtomicWriter,
) -> Result<(u64, OpenLog), CoordError> {
    let (mut file, len, (dev, ino)) = match kept {
        Some(log) if log.len < options.rotate_at => (log.file, log.len, (log.dev, log.ino)),
        _ => open_for_append(path, options)?,
    };
    let mut lines = Vec::with_capacity(events.len() * 256);
    for event in events {
        serde_json::to_writer(&mut lines, event).expect("an event always serialises");
        lines.push(b'\n');
    }
    // All or nothing: a failed append leaves no partial line behind (and
    // should cutting it back fail too, the next writer's settle cuts it).
    writer
        .append(path, &mut file, len, &lines, options.sync)
        .map_err(|f| io_error(path, f.source))?;
    let log = OpenLog {
        file,
        dev,
        ino,
        len: len + lines.len() as u64,
        revision: 0,
    };
    Ok((len, log))
}

/// Opens the log for appending, rotating it first when it has grown too
/// big; returns it with the length of its whole lines, and its inode.
fn open_for_append(path: &Path, options: LogOptions) -> Result<(File, u64, Inode), CoordError> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| io_error(path, e))
    };
    let mut file = open()?;
    let meta = file.metadata().map_err(|e| io_error(path, e))?;
    let (size, mut id) = (meta.len(), inode(&meta));
    if size >= options.rotate_at {
        drop(file);
        reactor_file::rotate(path, "jsonl").map_err(|e| io_error(path, e))?;
        file = open()?;
        id = inode(&file.metadata().map_err(|e| io_error(path, e))?);
    }
    // A settled log (this change's own settle step ran under the same lock)
    // needs no second look at its tail.
    let len = if options.settled && size < options.rotate_at {
        size
    } else {
        repair_tail(path, &mut file)?
    };
    Ok((file, len, id))
}

/// The `append_event_log` step: appends a change's events ahead of its
/// commit; undo cuts the log back to where it was.
pub(crate) struct AppendEvents {
    path: PathBuf,
    events: Vec<Event>,
    /// The revision the change commits as.
    revision: u64,
    options: LogOptions,
    writer: AtomicWriter,
    /// Where a long-lived store keeps the log open between changes.
    memory: SharedMemory,
    /// The log's length before the append, once it appended.
    len_before: Option<u64>,
}

impl AppendEvents {
    pub(crate) fn new(
        path: PathBuf,
        events: Vec<Event>,
        revision: u64,
        options: LogOptions,
        writer: AtomicWriter,
        memory: SharedMemory,
    ) -> Self {
        AppendEvents {
            path,
            events,
            revision,
            options,
            writer,
            memory,
            len_before: None,
        }
    }
}

impl Step<FlowError> for AppendEvents {
    type Output = ();

    fn run(&mut self) -> Result<(), FlowError> {
        if self.events.is_empty() {
            return Ok(());
        }
        let kept = self.memory.lock().take_log();
        let (len_before, log) =
            append_keeping(&self.path, &self.events, self.options, kept, &self.writer)?;
        let mut memory = self.memory.lock();
        if memory.long_lived() {
            // Trusted by the next change only once this one commits (the
            // claims file then says `revision` committed).
            memory.put_log(OpenLog {
                revision: self.revision,
                ..log
            });
        }
        drop(memory);
        self.len_before = Some(len_before);
        crate::crash::point("commit:events-written");
        Ok(())
    }

    fn undo(&mut self) -> Result<(), FlowError> {
        let Some(len) = self.len_before else {
            return Ok(());
        };
        drop(self.memory.lock().take_log());
        if len == 0 {
            // The log was empty or absent: leave none.
            return match fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(io_error(&self.path, e).into())
                }
                _ => Ok(()),
            };
        }
        self.writer
            .cut_back(&self.path, len)
            .map_err(|e| io_error(&self.path, e).into())
    }
}

/// Drops the log's trailing lines whose revision is above `committed` (a
/// transaction killed between its write-ahead and its commit) and any torn
/// last line. Lines without a revision (`lock_broken`) are kept. Returns how
/// many event lines were dropped.
#[cfg(test)]
pub(crate) fn settle(path: &Path, committed: u64) -> Result<usize, CoordError> {
    settle_keeping(path, committed).map(|(dropped, _)| dropped)
}

/// [`settle`], handing back the log still open for this change's append
/// (`None` if there is no log yet).
pub(crate) fn settle_keeping(
    path: &Path,
    committed: u64,
) -> Result<(usize, Option<OpenLog>), CoordError> {
    let file = match OpenOptions::new().read(true).append(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, None)),
        Err(e) => return Err(io_error(path, e)),
    };
    let mut file = file;
    let (dropped, len, (dev, ino)) = settle_open(path, &mut file, committed)?;
    let log = OpenLog {
        file,
        dev,
        ino,
        len,
        revision: committed,
    };
    Ok((dropped, Some(log)))
}

/// Settles the open log; returns how many lines went and its length after.
fn settle_open(
    path: &Path,
    file: &mut File,
    committed: u64,
) -> Result<(usize, u64, Inode), CoordError> {
    let (len, mut tail, id) = repair_tail_reading(path, file)?;
    let mut window: u64 = TAIL;
    loop {
        let start = len.saturating_sub(window);
        // The first window is the tail repair_tail just read, if it kept it.
        let bytes = match tail.take().filter(|t| t.len() as u64 == len - start) {
            Some(bytes) => bytes,
            None => {
                let mut bytes = vec![0u8; (len - start) as usize];
                file.seek(SeekFrom::Start(start))
                    .map_err(|e| io_error(path, e))?;
                file.read_exact(&mut bytes).map_err(|e| io_error(path, e))?;
                bytes
            }
        };
        // Skip the first, partial line of a window that starts mid-file; a
        // window holding no whole line (a line longer than the window) grows.
        let first = match (start, bytes.iter().position(|b| *b == b'\n')) {
            (0, _) => 0,
            (_, Some(i)) if i + 1 < bytes.len() => i + 1,
            _ => {
                window *= 4;
                continue;
            }
        };
        // Walk back over the uncommitted (and revision-less) lines.
        let mut suffix_start = bytes.len();
        let mut keep: Vec<&[u8]> = Vec::new();
        let mut dropped = 0;
        let mut found_committed = false;
        for line in bytes[first..].split_inclusive(|b| *b == b'\n').rev() {
            let event: Event = serde_json::from_slice(line)
                .map_err(|e| not_ours(path, &format!("has a line that is not an event ({e})")))?;
            match event.revision {
                Some(r) if r > committed => dropped += 1,
                None => keep.push(line),
                Some(_) => {
                    found_committed = true;
                    break;
                }
            }
            suffix_start -= line.len();
        }
        if !found_committed && start > 0 && (dropped > 0 || !keep.is_empty()) {
            window *= 4;
            continue;
        }
        if dropped == 0 {
            return Ok((0, len, id));
        }
        let cut = start + suffix_start as u64;
        file.set_len(cut).map_err(|e| io_error(path, e))?;
        // The file appends: what is kept goes after the cut.
        for line in keep.iter().rev() {
            file.write_all(line).map_err(|e| io_error(path, e))?;
        }
        file.sync_data().map_err(|e| io_error(path, e))?;
        let kept: usize = keep.iter().map(|l| l.len()).sum();
        return Ok((dropped, cut + kept as u64, id));
    }
}

/// A reader's cursor: a byte offset in one log file, tagged with the low
/// bits of that file's inode, so a reader notices when the log was rotated
/// under it and can finish the old file first.
const OFFSET_BITS: u32 = 40;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;

fn cursor(inode: u64, offset: u64) -> u64 {
    ((inode & (u64::MAX >> OFFSET_BITS)) << OFFSET_BITS) | (offset & OFFSET_MASK)
}

fn inode_tag(cursor: u64) -> u64 {
    cursor >> OFFSET_BITS
}

/// The committed events of `file` after byte `start`, and where they end.
/// In the live log, reading stops before a line still being written (no
/// newline yet) and before the first event above `committed`, written ahead
/// of a commit that has not happened (yet, or ever: the next writer drops
/// it). In a rotated log nothing will be written any more: such events are
/// skipped.
fn read_from(
    path: &Path,
    file: &mut File,
    start: u64,
    committed: u64,
    live: bool,
) -> Result<(Vec<Event>, u64), CoordError> {
    let read_error = |source: io::Error| CoordError::FileRead {
        path: path.to_owned(),
        source: source.into(),
    };
    file.seek(SeekFrom::Start(start)).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(read_error)?;
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut events = Vec::new();
    let mut offset = start;
    for line in bytes[..complete].split_inclusive(|b| *b == b'\n') {
        let text = &line[..line.len() - 1];
        if !text.iter().all(u8::is_ascii_whitespace) {
            let event: Event = serde_json::from_slice(text).map_err(|e| {
                CoordError::damaged(format!(
                    "{} has a line that is not an event at byte {offset}: {e}",
                    path.display()
                ))
            })?;
            let uncommitted = event.revision.is_some_and(|r| r > committed);
            if uncommitted && live {
                break;
            }
            if !uncommitted {
                events.push(event);
            }
        }
        offset += line.len() as u64;
    }
    Ok((events, offset))
}

/// The rotated log file `cursor` points into, if it is still there.
fn rotated_file(path: &Path, cursor: u64) -> Option<(PathBuf, File)> {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent()?;
    let stem = path.file_stem()?.to_str()?;
    let prefix = format!("{stem}.");
    fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name();
        let name = name.to_str()?;
        if !name.starts_with(&prefix) || !name.ends_with(".jsonl") || name == EVENT_LOG {
            return None;
        }
        let file = File::open(entry.path()).ok()?;
        let inode = file.metadata().ok()?.ino();
        (inode_tag(self::cursor(inode, 0)) == inode_tag(cursor)).then(|| (entry.path(), file))
    })
}

/// The committed events after `cursor` (0: from the top of the current
/// log). If the log was rotated since the cursor was taken, the rest of the
/// rotated file comes first.
pub(crate) fn read(path: &Path, after: u64, committed: u64) -> Result<EventPage, CoordError> {
    use std::os::unix::fs::MetadataExt;
    let read_error = |source: io::Error| CoordError::FileRead {
        path: path.to_owned(),
        source: source.into(),
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(EventPage {
                events: Vec::new(),
                cursor: 0,
            });
        }
        Err(e) => return Err(read_error(e)),
    };
    let meta = file.metadata().map_err(read_error)?;
    let inode = meta.ino();
    let offset = after & OFFSET_MASK;
    let mut events = Vec::new();
    let start = if after == 0 {
        0
    } else if inode_tag(after) == inode_tag(cursor(inode, 0)) {
        offset.min(meta.len())
    } else {
        // Rotated since: finish the old file, then read the new one whole.
        if let Some((old_path, mut old)) = rotated_file(path, after) {
            events = read_from(&old_path, &mut old, offset, committed, false)?.0;
        }
        0
    };
    let (more, end) = read_from(path, &mut file, start, committed, true)?;
    events.extend(more);
    Ok(EventPage {
        events,
        cursor: cursor(inode, end),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use coord_core::{EventKind, Timestamp};

    /// Appends with a writer that injects no failures.
    fn append(path: &Path, events: &[Event], options: LogOptions) -> Result<u64, CoordError> {
        super::append(path, events, options, &AtomicWriter::new())
    }

    const NO_ROTATION: LogOptions = LogOptions {
        rotate_at: u64::MAX,
        sync: false,
        settled: false,
    };

    fn event(n: u64) -> Event {
        Event {
            time: Timestamp::now(),
            agent: Some("a".into()),
            work_item_id: Some(format!("work_{n}")),
            from: None,
            to: Some(coord_core::Status::Pending),
            fence: Some(n),
            event: EventKind::Posted,
            revision: None,
            work_type: None,
            priority: None,
            reason: None,
            forced: false,
        }
    }

    #[test]
    fn appends_read_back_and_a_cursor_reads_only_newer_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EVENT_LOG);
        assert_eq!(read(&path, 0, u64::MAX).unwrap().events, vec![]);
        append(&path, &[event(1), event(2)], NO_ROTATION).unwrap();
        let page = read(&path, 0, u64::MAX).unwrap();
        assert_eq!(
            page.events,
            vec![
                event_like(&page.events[0], 1),
                event_like(&page.events[1], 2)
            ]
        );
        append(&path, &[event(3)], NO_ROTATION).unwrap();
        let newer = read(&path, page.cursor, u64::MAX).unwrap();
        assert_eq!(newer.events.len(), 1);
        assert_eq!(newer.events[0].fence, Some(3));
    }

    fn event_like(e: &Event, n: u64) -> Event {
        Event {
            time: e.time,
            ..event(n)
        }
    }

    #[test]
    fn a_torn_last_line_is_cut_before_the_next_append_and_skipped_by_readers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EVENT_LOG);
        append(&path, &[event(1)], NO_ROTATION).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"time\":\"2025-").unwrap();
        assert_eq!(
            read(&path, 0, u64::MAX).unwrap().events.len(),
            1,
            "the torn line is not read"
        );
        append(&path, &[event(2)], NO_ROTATION).unwrap();
        let all = read(&path, 0, u64::MAX).unwrap().events;
        assert_eq!(
            all.iter().map(|e| e.fence).collect::<Vec<_>>(),
            [Some(1), Some(2)]
        );
    }

    #[test]
    fn the_log_rotates_by_size_and_readers_follow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EVENT_LOG);
        append(
            &path,
            &[event(1), event(2)],
            LogOptions {
                rotate_at: 1,
                sync: true,
                settled: false,
            },
        )
        .unwrap();
        let cursor = read(&path, 0, u64::MAX).unwrap().cursor;
        append(
            &path,
            &[event(3)],
            LogOptions {
                rotate_at: 1,
                sync: true,
                settled: false,
            },
        )
        .unwrap();
        let rotated: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("coordination_events.") && n != EVENT_LOG)
            .collect();
        assert_eq!(rotated.len(), 1, "{rotated:?}");
        let page = read(&path, cursor, u64::MAX).unwrap();
        assert_eq!(
            page.events.iter().map(|e| e.fence).collect::<Vec<_>>(),
            [Some(3)]
        );
    }

    fn at(n: u64, revision: Option<u64>) -> Event {
        Event {
            revision,
            ..event(n)
        }
    }

    #[test]
    fn settling_drops_uncommitted_revisions_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EVENT_LOG);
        let events = [
            at(1, Some(1)),
            at(2, Some(2)),
            at(3, None),
            at(4, Some(3)),
            at(5, Some(3)),
        ];
        append(&path, &events, NO_ROTATION).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"time\":\"2026-01-01T00:").unwrap();
        assert_eq!(
            settle(&path, 3).unwrap(),
            0,
            "revision 3 committed: only the torn line goes"
        );
        assert_eq!(read(&path, 0, u64::MAX).unwrap().events.len(), 5);
        assert_eq!(settle(&path, 2).unwrap(), 2);
        let left: Vec<Option<u64>> = read(&path, 0, u64::MAX)
            .unwrap()
            .events
            .iter()
            .map(|e| e.fence)
            .collect();
        assert_eq!(
            left,
            [Some(1), Some(2), Some(3)],
            "the revision-less line stays"
        );
        assert_eq!(settle(&path, 2).unwrap(), 0, "settling is idempotent");
        assert_eq!(settle(&dir.path().join("missing"), 0).unwrap(), 0);
    }

    #[test]
    fn settling_checks_a_last_line_longer_than_its_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EVENT_LOG);
        let long = Event {
            reason: Some("x".repeat(20_000)),
            ..at(2, Some(2))
        };
        append(&path, &[at(1, Some(1)), long], NO_ROTATION).unwrap();
        assert_eq!(
            settle(&path, 1).unwrap(),
            1,
            "the long uncommitted line goes"
        );
        assert_eq!(read(&path, 0, u64::MAX).unwrap().events.len(), 1);
    }

    #[test]
    fn settling_looks_back_past_a_small_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EVENT_LOG);
        let committed: Vec<Event> = (0..10).map(|n| at(n, Some(1))).collect();
        let uncommitted: Vec<Event> = (10..200).map(|n| at(n, Some(2))).collect();
        append(&path, &committed, NO_ROTATION).unwrap();
        append(&path, &uncommitted, NO_ROTATION).unwrap();
        assert_eq!(settle(&path, 1).unwrap(), 190);
        assert_eq!(read(&path, 0, u64::MAX).unwrap().events.len(), 10);
    }

    #[test]
    fn a_log_that_is_not_ours_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EVENT_LOG);
        // Every change settles the log before it appends: both refuse.
        for garbage in [
            &b"garbage without a newline"[..],
            b"not json\n{\"time\":\"x",
            b"{\"a\":1}\n",
        ] {
            fs::write(&path, garbage).unwrap();
            let err = settle(&path, 0).unwrap_err();
            assert_eq!(err.kind(), coord_core::ErrorKind::ValidationFailed, "{err}");
            assert!(err.to_string().contains("will not write"), "{err}");
            assert_eq!(fs::read(&path).unwrap(), garbage);
            if !garbage.ends_with(b"\n") {
                append(&path, &[event(1)], NO_ROTATION).unwrap_err();
                assert_eq!(fs::read(&path).unwrap(), garbage);
            }
        }
    }

    #[test]
    fn a_follower_reads_across_a_rotation_without_losing_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EVENT_LOG);
        append(&path, &[event(1), event(2)], NO_ROTATION).unwrap();
        let page = read(&path, 0, u64::MAX).unwrap();
        assert_eq!(page.events.len(), 2);
        // More lands in the old file, then the log rotates and goes on.
        append(&path, &[event(3)], NO_ROTATION).unwrap();
        let rotate_now = LogOptions {
            rotate_at: 1,
            ..NO_ROTATION
        };
        append(&path, &[event(4)], rotate_now).unwrap();
        append(&path, &[event(5), event(6)], NO_ROTATION).unwrap();
        let next = read(&path, page.cursor, u64::MAX).unwrap();
        let fences: Vec<Option<u64>> = next.events.iter().map(|e| e.fence).collect();
        assert_eq!(fences, [Some(3), Some(4), Some(5), Some(6)]);
        assert!(
            read(&path, next.cursor, u64::MAX)
                .unwrap()
                .events
                .is_empty()
        );
    }

    #[test]
    fn a_line_that_is_not_an_event_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EVENT_LOG);
        fs::write(&path, "not json\n").unwrap();
        let err = read(&path, 0, u64::MAX).unwrap_err();
        assert!(err.to_string().contains("byte 0"), "{err}");
    }
}
