//! What every CLI test needs: a coordination directory, a way to run
//! `coord` against it in a normalised environment, and readers for its
//! output and files.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use coord_testkit::{CHILD_LIMIT, output_within, wait_within};

use serde_json::Value;

pub const CLAIMS: &str = "work_claims.json";

/// A coordination directory and a way to run `coord` against it in a
/// normalised environment: no COORD_* variables from the caller, and
/// `COORD_AGENT_ID=agent_test` unless a test says otherwise.
pub struct Env {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

/// One finished `coord` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// The error object on stderr, checked to be one line of JSON.
    pub fn error(&self) -> Value {
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "one line on stderr: {self:?}"
        );
        serde_json::from_str(&self.stderr)
            .unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {self:?}"))
    }

    pub fn expect_ok(&self) -> Value {
        assert_eq!(self.code, 0, "{self:?}");
        assert_eq!(
            self.stdout.lines().count(),
            1,
            "one line on stdout: {self:?}"
        );
        self.json()
    }

    /// Asserts the error kind and exit code, and returns the error object.
    pub fn expect_error(&self, kind: &str, code: i32) -> Value {
        assert_eq!(self.code, code, "{self:?}");
        assert!(self.stdout.is_empty(), "{self:?}");
        let err = self.error();
        assert_eq!(err["error"], kind, "{self:?}");
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{self:?}"
        );
        err
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().expect("exited normally"),
            stdout: String::from_utf8(o.stdout).unwrap(),
            stderr: String::from_utf8(o.stderr).unwrap(),
        }
    }
}

/// Running a child to its end with a time limit ([`CHILD_LIMIT`]): a child
/// that hangs is killed and fails its test instead of hanging the suite.
pub trait Finish {
    fn finish(self) -> Output;
}

impl Finish for &mut Command {
    fn finish(self) -> Output {
        output_within(self, CHILD_LIMIT)
    }
}

impl Finish for Command {
    fn finish(mut self) -> Output {
        output_within(&mut self, CHILD_LIMIT)
    }
}

impl Finish for Child {
    fn finish(self) -> Output {
        wait_within(self, CHILD_LIMIT, "a child of the test")
    }
}

/// `coord args` against `dir` as `agent`, in the normalised environment.
/// Free of `Env`, so threads that only hold the directory can use it.
pub fn command_in(dir: &std::path::Path, agent: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coord"));
    cmd.args(args)
        .env("COORD_AGENT_ID", agent)
        .env_remove("COORD_LOG")
        .env_remove("COORD_FENCE")
        .env_remove("COORD_CRASH_AT")
        .env_remove("COORD_IDEMPOTENCY_KEY")
        .env_remove("COORD_DATABASE_URL")
        .env_remove("COORD_SCHEMA")
        .env("COORD_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `coord args` as `agent` on `schema` of the shared PostgreSQL cluster
/// (`scratch` stands in for the directory it never uses), run to completion.
pub fn run_on_database(scratch: &std::path::Path, schema: &str, agent: &str, args: &[&str]) -> Run {
    let mut cmd = command_in(&scratch.join("unused"), agent, args);
    cmd.env("COORD_DATABASE_URL", coord_testkit::shared_cluster().url())
        .env("COORD_SCHEMA", schema);
    cmd.finish().into()
}

/// Runs [`command_in`] to completion.
pub fn run_in(dir: &std::path::Path, agent: &str, args: &[&str]) -> Run {
    command_in(dir, agent, args).finish().into()
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("coordination");
        Env { _tmp: tmp, dir }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        command_in(&self.dir, "agent_test", args)
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.command(args).finish().into()
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).spawn().unwrap()
    }

    pub fn claims_path(&self) -> PathBuf {
        self.dir.join(CLAIMS)
    }

    /// The claims file, parsed: it must always be a JSON array.
    pub fn records(&self) -> Vec<Value> {
        let text = fs::read_to_string(self.claims_path()).unwrap();
        match serde_json::from_str(&text) {
            Ok(Value::Array(records)) => records,
            other => panic!("the claims file is not a JSON array: {other:?}\n{text}"),
        }
    }
}

pub fn is_id(value: &Value, prefix: &str) -> bool {
    value
        .as_str()
        .and_then(|s| s.strip_prefix(prefix))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks one record against the seed's required fields and formats.
pub fn assert_seed_record(record: &Value) {
    let obj = record.as_object().expect("a record is an object");
    for field in [
        "work_item_id",
        "agent_id",
        "work_type",
        "description",
        "priority",
        "claimed_at",
        "status",
        "coordination_id",
    ] {
        assert!(obj.contains_key(field), "missing {field}: {record}");
    }
    assert!(is_id(&record["work_item_id"], "work_"), "{record}");
    assert!(is_id(&record["coordination_id"], "coord_"), "{record}");
    assert!(["low", "medium", "high", "critical"].contains(&record["priority"].as_str().unwrap()));
    assert!(["in_progress", "completed", "failed"].contains(&record["status"].as_str().unwrap()));
    let claimed_at = record["claimed_at"].as_str().unwrap();
    assert!(
        claimed_at.len() == 27 && claimed_at.ends_with('Z') && claimed_at.as_bytes()[19] == b'.',
        "RFC 3339 UTC with microseconds: {claimed_at}"
    );
    claimed_at
        .parse::<jiff::Timestamp>()
        .expect("a real timestamp");
}

pub fn wait_all(children: Vec<Child>) -> Vec<Run> {
    children.into_iter().map(|c| c.finish().into()).collect()
}

/// The `work_item_id` of a printed item.
pub fn id_of(item: &Value) -> String {
    item["work_item_id"]
        .as_str()
        .expect("a work item has an id")
        .to_owned()
}

/// Reads a JSON Lines file of the directory (missing: empty).
pub fn json_lines(path: &std::path::Path) -> Vec<Value> {
    match fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{}: bad line {l:?}: {e}", path.display()))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

impl Env {
    pub fn events(&self) -> Vec<Value> {
        json_lines(&self.dir.join("coordination_events.jsonl"))
    }

    pub fn archive(&self) -> Vec<Value> {
        json_lines(&self.dir.join("work_claims.archive.jsonl"))
    }

    /// Runs `args` as `agent`.
    pub fn run_as(&self, agent: &str, args: &[&str]) -> Run {
        run_in(&self.dir, agent, args)
    }
}

/// Holds the directory lock the way another coord process would.
#[allow(clippy::disallowed_methods)] // the test plays another process holding the lock
pub fn hold_lock(dir: &std::path::Path) -> fs::File {
    fs::create_dir_all(dir).unwrap();
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("coord.lock"))
        .unwrap();
    file.lock().unwrap();
    file
}
