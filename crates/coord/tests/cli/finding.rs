//! Finding the coordination directory: without `--dir` or `COORD_DIR`,
//! the nearest `agent_coordination/` here or above (as git finds `.git`);
//! a command that only reads a directory that is not there says so.

use std::fs;
use std::process::Command;

use crate::support::{Finish, Run, command_in, id_of};

/// `coord args` run in `cwd`, with no `COORD_DIR`.
fn coord_in(cwd: &std::path::Path, args: &[&str]) -> Run {
    let mut cmd: Command = command_in(std::path::Path::new("unused"), "agent_test", args);
    cmd.env_remove("COORD_DIR").current_dir(cwd);
    cmd.finish().into()
}

#[test]
fn from_below_a_project_coord_finds_its_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    let deep = project.join("src").join("deep");
    fs::create_dir_all(&deep).unwrap();
    let posted = coord_in(&project, &["post", "tests", "from the top"]).expect_ok();
    assert!(project.join("agent_coordination").is_dir());
    let listed = coord_in(&deep, &["list"]).expect_ok();
    assert_eq!(listed[0]["work_item_id"], posted["work_item_id"]);
    // A change from below goes to the same directory, not a new one.
    let claimed = coord_in(&deep, &["next"]).expect_ok();
    assert_eq!(id_of(&claimed), id_of(&posted));
    assert!(!deep.join("agent_coordination").exists());
}

#[test]
fn reading_a_directory_that_is_not_there_says_so_and_makes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no").join("such").join("place");
    let dir = missing.display().to_string();
    for args in [
        vec!["--dir", dir.as_str(), "list"],
        vec!["--dir", dir.as_str(), "show", "work_1"],
        vec!["--dir", dir.as_str(), "stats"],
        vec!["--dir", dir.as_str(), "agents"],
        vec!["--dir", dir.as_str(), "log"],
    ] {
        let run = coord_in(tmp.path(), &args);
        let err = run.expect_error("file_read_error", 7);
        assert!(
            err["path"].as_str().unwrap().ends_with("no/such/place"),
            "{err}"
        );
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("no coordination directory"),
            "{err}"
        );
    }
    assert!(!tmp.path().join("no").exists(), "a read made the directory");
    // A file where the directory should be is named as what it is.
    let file = tmp.path().join("afile");
    fs::write(&file, "").unwrap();
    let err = coord_in(tmp.path(), &["--dir", file.to_str().unwrap(), "list"])
        .expect_error("file_read_error", 7);
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("not a directory"), "{err}");
    assert_eq!(message.matches("cannot read").count(), 1, "{err}");
    // With nothing found above, the default is ./agent_coordination: a read
    // says it is missing, a claim makes it.
    let empty = tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let err = coord_in(&empty, &["list"]).expect_error("file_read_error", 7);
    assert!(
        err["path"]
            .as_str()
            .unwrap()
            .ends_with("agent_coordination"),
        "{err}"
    );
    coord_in(&empty, &["claim", "build"]).expect_ok();
    assert!(empty.join("agent_coordination").is_dir());
}
