//! File steps under failure: every write stage fails once, later steps fail,
//! killed writers leave temp files.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use reactor::{Inputs, Values, Workflow, from_fn};
use reactor_file::{
    AtomicWrite, AtomicWriter, EnsureDir, FileError, FileSnapshot, ReadFile, WriteStage,
    is_temp_of, remove_stale_temps,
};

#[derive(Debug)]
enum Error {
    File(FileError),
    Input(#[allow(dead_code)] reactor::InputError),
    Later,
}
impl From<FileError> for Error {
    fn from(e: FileError) -> Self {
        Error::File(e)
    }
}
impl From<reactor::InputError> for Error {
    fn from(e: reactor::InputError) -> Self {
        Error::Input(e)
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
fn write_workflow(path: &Path, writer: AtomicWriter, then_fail: bool) -> Workflow<'static, Error> {
    let mut b = Workflow::builder()
        .input("contents")
        .step(
            "read",
            &[],
            ReadFile::new(path, |_: &Path, b: Option<&reactor_file::Contents>| {
                Ok::<_, Error>(b.map(|b| b.len()))
            }),
        )
        .step(
            "write",
            &["contents", "read"],
            AtomicWrite::<&'static str, Option<usize>>::new(path, "contents", "read")
                .with_writer(writer),
        );
    if then_fail {
        b = b.step(
            "later",
            &["write"],
            from_fn(|_: &Inputs<'_>| Err::<(), _>(Error::Later)),
        );
    }
    b.build().unwrap()
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
        let wf = write_workflow(&path, fail_at(stage, 1, io::ErrorKind::Other), false);
        let err = wf
            .run::<()>(Values::new().with("contents", "replacement"))
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
        let wf = write_workflow(&path, fail_at(stage, 1, io::ErrorKind::Other), false);
        wf.run::<()>(Values::new().with("contents", "x"))
            .unwrap_err();
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
    let wf = write_workflow(
        &path,
        fail_at(WriteStage::WriteTemp, 1, io::ErrorKind::Interrupted),
        false,
    );
    let written: reactor_file::Written = wf.run(Values::new().with("contents", "retried")).unwrap();
    assert_eq!(written.len, 7);
    assert_eq!(fs::read_to_string(&path).unwrap(), "retried");
}

#[test]
fn undo_restores_the_exact_previous_bytes_when_a_later_step_fails() {
    let (dir, path) = setup();
    let original = b"[\n  {\"odd\" :  1.50 }\n]\n";
    fs::write(&path, original).unwrap();
    let wf = write_workflow(&path, AtomicWriter::new(), true);
    let err = wf
        .run::<()>(Values::new().with("contents", "new"))
        .unwrap_err();
    assert!(matches!(err.error, Error::Later));
    assert!(err.undo_failures.is_empty(), "{:?}", err.undo_failures);
    assert_eq!(fs::read(&path).unwrap(), original);
    assert_eq!(names_in(dir.path()), ["data.json"]);
}

#[test]
fn undo_removes_a_file_that_did_not_exist_before() {
    let (dir, path) = setup();
    let wf = write_workflow(&path, AtomicWriter::new(), true);
    wf.run::<()>(Values::new().with("contents", "new"))
        .unwrap_err();
    assert!(names_in(dir.path()).is_empty());
}

#[test]
fn a_failing_restore_is_reported() {
    let (_dir, path) = setup();
    fs::write(&path, "before").unwrap();
    // Every directory sync fails: the write replaces the file, then the
    // compensation's restore fails the same way and must say so.
    let wf = write_workflow(
        &path,
        fail_at(WriteStage::SyncDir, u32::MAX, io::ErrorKind::Other),
        false,
    );
    let err = wf
        .run::<()>(Values::new().with("contents", "x"))
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
    let log = Arc::new(Mutex::new(None));
    let seen = log.clone();
    let wf = Workflow::<Error>::builder()
        .step(
            "ensure",
            &[],
            EnsureDir::new(&dir).sweeping_temps_of("x.json"),
        )
        .step(
            "peek",
            &["ensure"],
            from_fn(move |i: &Inputs<'_>| {
                *seen.lock().unwrap() = Some(i.get::<reactor_file::DirStatus>("ensure")?.created);
                Err::<(), _>(Error::Later)
            }),
        )
        .build()
        .unwrap();
    wf.run::<()>(Values::new()).unwrap_err();
    assert_eq!(
        *log.lock().unwrap(),
        Some(true),
        "the step created the directory"
    );
    assert!(!dir.exists(), "undo removed the empty directory it created");

    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(".x.json.coord-tmp.1.1.1"), "stale").unwrap();
    let status: reactor_file::DirStatus = Workflow::<Error>::builder()
        .step(
            "ensure",
            &[],
            EnsureDir::new(&dir).sweeping_temps_of("x.json"),
        )
        .build()
        .unwrap()
        .run(Values::new())
        .unwrap();
    assert!(!status.created);
    assert_eq!(status.removed_temps.len(), 1);

    let file = base.path().join("plain");
    fs::write(&file, "").unwrap();
    let err = Workflow::<Error>::builder()
        .step("ensure", &[], EnsureDir::new(&file))
        .build()
        .unwrap()
        .run::<reactor_file::DirStatus>(Values::new())
        .unwrap_err();
    assert!(matches!(
        err.error,
        Error::File(FileError::NotADirectory { .. })
    ));
}

#[test]
fn read_file_keeps_bytes_and_reports_read_errors() {
    let (dir, path) = setup();
    fs::write(&path, "abc").unwrap();
    let snap: FileSnapshot<usize> = Workflow::<Error>::builder()
        .step(
            "read",
            &[],
            ReadFile::new(&path, |_: &Path, b: Option<&reactor_file::Contents>| {
                Ok::<_, Error>(b.unwrap().len())
            }),
        )
        .build()
        .unwrap()
        .run(Values::new())
        .unwrap();
    assert_eq!(snap.bytes.as_deref().map(Vec::as_slice), Some(&b"abc"[..]));
    assert_eq!(snap.value, 3);

    // A directory where the file should be cannot be read.
    let err = Workflow::<Error>::builder()
        .step(
            "read",
            &[],
            ReadFile::new(
                dir.path(),
                |_: &Path, _: Option<&reactor_file::Contents>| Ok::<_, Error>(()),
            ),
        )
        .build()
        .unwrap()
        .run::<FileSnapshot<()>>(Values::new())
        .unwrap_err();
    assert!(
        matches!(err.error, Error::File(FileError::Read { .. })),
        "{:?}",
        err.error
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
