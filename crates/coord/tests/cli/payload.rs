//! Descriptions from a file or standard input, JSON payloads, and what a
//! child of `coord run` / `coord work` gets of them.

use std::fs;
use std::io::Write;
use std::process::Stdio;

use crate::support::{Env, Finish, Run};

#[test]
fn a_description_file_and_a_payload_are_kept_with_the_item() {
    let env = Env::new();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("task.md");
    fs::write(&file, "line one\nline two\n").unwrap();
    let posted = env
        .run(&[
            "post",
            "tests",
            "--description-file",
            file.to_str().unwrap(),
            "--payload",
            r#"{"suite": "unit", "shards": 3}"#,
        ])
        .expect_ok();
    assert_eq!(posted["description"], "line one\nline two\n");
    assert_eq!(posted["payload"]["shards"], 3);
    // From standard input.
    let mut child = env
        .command(&["claim", "build", "--description-file", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    let run: Run = child.finish().into();
    assert_eq!(run.expect_ok()["description"], "from stdin");
}

#[test]
fn bad_payloads_and_oversized_descriptions_are_refused_and_change_nothing() {
    let env = Env::new();
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(
        env.run(&["post", "tests", "x", "--payload", "not json"])
            .code,
        2
    );
    let bad = tmp.path().join("bad.json");
    fs::write(&bad, "{oops").unwrap();
    let err = env
        .run(&[
            "post",
            "tests",
            "x",
            "--payload-file",
            bad.to_str().unwrap(),
        ])
        .expect_error("coordination_validation_failed", 6);
    assert!(
        err["message"].as_str().unwrap().contains("not JSON"),
        "{err}"
    );
    let big = tmp.path().join("big.txt");
    fs::write(&big, "x".repeat(1024 * 1024 + 1)).unwrap();
    let err = env
        .run(&["post", "tests", "--description-file", big.to_str().unwrap()])
        .expect_error("coordination_validation_failed", 6);
    assert!(
        err["message"].as_str().unwrap().contains("description"),
        "{err}"
    );
    assert!(!env.claims_path().exists(), "nothing was written");
    // Neither a description nor a file: a usage error.
    assert_eq!(env.run(&["post", "tests"]).code, 2);
}

#[test]
fn a_child_gets_the_description_and_the_payload_in_a_file_removed_afterwards() {
    let env = Env::new();
    let script = "cat \"$COORD_PAYLOAD_FILE\"; echo; echo \"$COORD_DESCRIPTION\"; \
                  echo \"$COORD_PAYLOAD_FILE\"";
    let run: Run = env
        .command(&[
            "run",
            "build",
            "the description",
            "--payload",
            r#"{"target": "x86_64"}"#,
            "--",
            "sh",
            "-c",
            script,
        ])
        .finish()
        .into();
    assert_eq!(run.code, 0, "{run:?}");
    let mut lines = run.stdout.lines();
    let payload: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(payload["target"], "x86_64");
    assert_eq!(lines.next(), Some("the description"));
    let path = lines.next().unwrap();
    assert!(
        !std::path::Path::new(path).exists(),
        "{path} was left behind"
    );
}
