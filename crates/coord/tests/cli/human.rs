//! `--human` is safe for a terminal: text from the store has its control
//! characters shown escaped, each item stays on one line, long text is cut
//! with an ellipsis, and every command prints lines for people (a table
//! for `agents`).

use crate::support::{Env, id_of};

/// Every character a terminal would act on, but the newlines between lines.
fn raw_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect()
}

#[test]
fn text_from_the_store_reaches_the_terminal_escaped_on_one_line() {
    let env = Env::new();
    let nasty = "ctrl\u{1}\u{1b}[31mred\u{1b}[0m\nsecond line\ttab";
    let posted = env.run(&["post", "tests", nasty]).expect_ok();
    let id = id_of(&posted);
    env.run(&["post", "tests", &"x".repeat(100_000)])
        .expect_ok();
    for args in [
        vec!["--human", "list"],
        vec!["--human", "show", id.as_str()],
        vec!["--human", "log"],
    ] {
        let run = env.run(&args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        assert!(
            raw_controls(&run.stdout).is_empty(),
            "{args:?}: {:?}",
            run.stdout
        );
        for line in run.stdout.lines() {
            assert!(
                line.chars().count() <= 200,
                "{args:?}: a line of {}",
                line.len()
            );
        }
    }
    let list = env.run(&["--human", "list"]).stdout;
    assert_eq!(list.lines().count(), 2, "one line per item: {list}");
    assert!(
        list.contains("ctrl\\u{1}\\u{1b}[31mred\\u{1b}[0m\\nsecond line\\ttab"),
        "{list}"
    );
    assert!(list.lines().nth(1).unwrap().ends_with('…'), "{list}");
    // The JSON keeps every byte.
    let json = env.run(&["show", &id]).expect_ok();
    assert_eq!(json["description"], nasty);
}

#[test]
fn agents_are_a_table_for_people_and_errors_are_escaped() {
    let env = Env::new();
    env.run_as("builder", &["agent", "register", "--team", "ci"])
        .expect_ok();
    let run = env.run(&["--human", "agents"]);
    assert_eq!(run.code, 0, "{run:?}");
    let mut lines = run.stdout.lines();
    assert!(lines.next().unwrap().starts_with("agent"), "{}", run.stdout);
    let row = lines.next().expect("the agent's row");
    assert!(row.starts_with("builder") && row.contains("ci"), "{row}");
    assert!(!run.stdout.contains('{'), "not JSON: {}", run.stdout);
    let err = env.run(&["--human", "show", "work_\u{1b}[2Jgone"]);
    assert_eq!(err.code, 4, "{err:?}");
    assert!(raw_controls(&err.stderr).is_empty(), "{:?}", err.stderr);
    assert!(
        err.stderr.starts_with("error[not_found]:"),
        "{}",
        err.stderr
    );
}

#[test]
fn other_answers_are_lines_for_people_not_json() {
    let env = Env::new();
    let nasty = "ops\u{1b}[31m";
    let run = env.run_as("ops", &["--human", "pause", "build"]);
    assert_eq!(run.code, 0, "{run:?}");
    let line = run.stdout.trim_end();
    assert!(
        line.starts_with("work_type=build  paused_by=ops  paused_at="),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1);
    let run = env.run(&["--human", "resume", "build"]);
    assert_eq!(run.stdout.trim_end(), "none");
    let run = env.run(&["--human", "cleanup", "--older-than", "1h"]);
    assert_eq!(run.stdout, "archived: 0\nwork_item_ids: []\n");
    // A work type with control characters cannot be paused; nothing raw
    // reaches the terminal either way.
    let run = env.run(&["--human", "pause", nasty]);
    assert!(raw_controls(&run.stdout).is_empty() && raw_controls(&run.stderr).is_empty());
}
