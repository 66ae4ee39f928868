//! File steps under failure: every write stage fails once, later steps fail,
//! killed writers leave temp files.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use reactor::{Failure, saga};
use reactor_file::{
    AtomicWrite, AtomicWriter, EnsureDir, FileError, FileSnapshot, WriteStage, is_temp_of,
    remove_stale_temps,
};

#[derive(Debug)]
enum Error {
    File(FileError),
    Later,
}
impl From<FileError> for Error {
    fn from(e: FileError) -> Self {
        Error::File(e)
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Fails `stage` `times` times with `kind`, then lets it pass.
fn fail_at(stage: WriteStage, times: u32, kind: io::ErrorKind) -> AtomicWriter {
    let left = Arc::new(AtomicU32::new(times));
    AtomicWriter::with_faults(Arc::new(move |_: &Path, s: WriteStage| {
        if s == stage && left.load(Ordering::SeqCst) > 0 {
            left.fetch_sub(1, Ordering::SeqCst);
            return Err(io::Error::new(kind, format!("injected at {s:?}")));
        }
        Ok(())
    }))
}

/// read -> write(contents) [-> a step that fails].
fn write_saga(
    path: &Path,
    writer: AtomicWriter,
    contents: &'static str,
    then_fail: bool,
) -> Result<reactor_file::Written, Failure<Error>> {
    saga(&(), |s| {
        let read = s.run("read", || {
            FileSnapshot::read(path, |_, b| Ok::<_, Error>(b.map(|b| b.len())))
        })?;
        let written = s.step(
            "write",
            AtomicWrite::new(path, contents, read.bytes.clone()).with_writer(writer),
        )?;
        if then_fail {
            s.run("later", || Err::<(), _>(Error::Later))?;
        }
        Ok(written)
    })
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.json");
    (dir, path)
}

#[test]
fn a_write_replaces_the_file_and_keeps_its_permissions() {
    let (dir, path) = setup();
    fs::write(&path, "old").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    AtomicWriter::new().write(&path, b"new contents").unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "new contents");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(names_in(dir.path()), ["data.json"]);
}

#[test]
fn a_failure_at_any_stage_leaves_the_file_as_it_was_and_no_temp_file() {
    for stage in WriteStage::ALL {
        let (dir, path) = setup();
        fs::write(&path, "original bytes").unwrap();
        let err = write_saga(
            &path,
            fail_at(stage, 1, io::ErrorKind::Other),
            "replacement",
            false,
        )
        .unwrap_err();
        assert_eq!(err.step, "write");
        match &err.error {
            Error::File(FileError::Write { stage: s, .. }) => assert_eq!(*s, stage),
            other => panic!("stage {stage:?}: unexpected {other:?}"),
        }
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "original bytes",
            "stage {stage:?}"
        );
        assert_eq!(names_in(dir.path()), ["data.json"], "stage {stage:?}");
    }
}

#[test]
fn a_failed_first_write_leaves_no_file_at_all() {
    for stage in WriteStage::ALL {
        let (dir, path) = setup();
        write_saga(&path, fail_at(stage, 1, io::ErrorKind::Other), "x", false).unwrap_err();
        assert!(
            names_in(dir.path()).is_empty(),
            "stage {stage:?}: {:?}",
            names_in(dir.path())
        );
    }
}

#[test]
fn a_transient_error_is_retried_by_the_compensation() {
    let (_dir, path) = setup();
    let written = write_saga(
        &path,
        fail_at(WriteStage::WriteTemp, 1, io::ErrorKind::Interrupted),
        "retried",
        false,
    )
    .unwrap();
    assert_eq!(written.len, 7);
    assert_eq!(fs::read_to_string(&path).unwrap(), "retried");
}

#[test]
fn undo_restores_the_exact_previous_bytes_when_a_later_step_fails() {
    let (dir, path) = setup();
    let original = b"[\n  {\"odd\" :  1.50 }\n]\n";
    fs::write(&path, original).unwrap();
    let err = write_saga(&path, AtomicWriter::new(), "new", true).unwrap_err();
    assert!(matches!(err.error, Error::Later));
    assert!(err.undo_failures.is_empty(), "{:?}", err.undo_failures);
    assert_eq!(fs::read(&path).unwrap(), original);
    assert_eq!(names_in(dir.path()), ["data.json"]);
}

#[test]
fn undo_removes_a_file_that_did_not_exist_before() {
    let (dir, path) = setup();
    write_saga(&path, AtomicWriter::new(), "new", true).unwrap_err();
    assert!(names_in(dir.path()).is_empty());
}

#[test]
fn a_failing_restore_is_reported() {
    let (_dir, path) = setup();
    fs::write(&path, "before").unwrap();
    // Every directory sync fails: the write replaces the file, then the
    // compensation's restore fails the same way and must say so.
    let err = write_saga(
        &path,
        fail_at(WriteStage::SyncDir, u32::MAX, io::ErrorKind::Other),
        "x",
        false,
    )
    .unwrap_err();
    assert!(
        matches!(err.error, Error::File(FileError::Restore { .. })),
        "{:?}",
        err.error
    );
}

#[test]
fn stale_temp_files_are_swept_without_following_symlinks() {
    let (dir, path) = setup();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, "keep me").unwrap();
    fs::write(&path, "data").unwrap();
    fs::write(dir.path().join(".data.json.coord-tmp.123.456.0"), "half").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join(".data.json.coord-tmp.9.9.9")).unwrap();
    fs::write(dir.path().join(".other.json.coord-tmp.1.1.1"), "not ours").unwrap();
    fs::write(dir.path().join("notes.txt"), "user file").unwrap();

    let removed = remove_stale_temps(dir.path(), &["data.json"]).unwrap();
    assert_eq!(removed.len(), 2);
    assert_eq!(
        names_in(dir.path()),
        [".other.json.coord-tmp.1.1.1", "data.json", "notes.txt"]
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
    assert!(is_temp_of(".data.json.coord-tmp.1.2.3", "data.json"));
    assert!(!is_temp_of("data.json", "data.json"));
}

#[test]
fn ensure_dir_creates_sweeps_and_undoes() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("a/b");
    let seen = Arc::new(Mutex::new(None));
    let err = saga(&(), |s| -> Result<(), Error> {
        let status = s.step("ensure", EnsureDir::new(&dir).sweeping_temps_of("x.json"))?;
        *seen.lock().unwrap() = Some(status.created);
        s.run("peek", || Err(Error::Later))
    })
    .unwrap_err();
    assert!(matches!(err.error, Error::Later));
    assert_eq!(
        *seen.lock().unwrap(),
        Some(true),
        "the step created the directory"
    );
    assert!(!dir.exists(), "undo removed the empty directory it created");

    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(".x.json.coord-tmp.1.1.1"), "stale").unwrap();
    let status = saga(&(), |s| -> Result<_, Error> {
        s.step("ensure", EnsureDir::new(&dir).sweeping_temps_of("x.json"))
    })
    .unwrap();
    assert!(!status.created);
    assert_eq!(status.removed_temps.len(), 1);

    let file = base.path().join("plain");
    fs::write(&file, "").unwrap();
    let err = saga(&(), |s| -> Result<_, Error> {
        s.step("ensure", EnsureDir::new(&file))
    })
    .unwrap_err();
    assert!(matches!(
        err.error,
        Error::File(FileError::NotADirectory { .. })
    ));
}

#[test]
fn a_snapshot_keeps_the_bytes_and_reports_read_errors() {
    let (dir, path) = setup();
    fs::write(&path, "abc").unwrap();
    let snap = FileSnapshot::read(&path, |_, b| Ok::<_, Error>(b.unwrap().len())).unwrap();
    assert_eq!(snap.bytes.as_deref().map(Vec::as_slice), Some(&b"abc"[..]));
    assert_eq!(snap.value, 3);
    let missing =
        FileSnapshot::read(&dir.path().join("none"), |_, b| Ok::<_, Error>(b.is_none())).unwrap();
    assert!(missing.value && missing.bytes.is_none());

    // A directory where the file should be cannot be read.
    let err = FileSnapshot::read(dir.path(), |_, _| Ok::<_, Error>(())).unwrap_err();
    assert!(
        matches!(err, Error::File(FileError::Read { .. })),
        "{err:?}"
    );
}

#[test]
fn a_sweep_keeps_this_processs_own_temp_files() {
    let (dir, _path) = setup();
    let ours = format!(".data.json.coord-tmp.{}.7", std::process::id());
    // A pid that merely starts with ours is another process's.
    let other = format!(".data.json.coord-tmp.{}1.7", std::process::id());
    fs::write(dir.path().join(&ours), "in use").unwrap();
    fs::write(dir.path().join(&other), "left behind").unwrap();
    let removed = remove_stale_temps(dir.path(), &["data.json"]).unwrap();
    assert_eq!(removed, [dir.path().join(&other)]);
    assert!(dir.path().join(&ours).exists());
}
