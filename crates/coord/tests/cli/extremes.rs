//! No input makes coord panic: every duration and number flag of every
//! command, fed the extremes (zero, negative, the largest integers, values
//! past them), ends with a documented exit code, never a panic (101), and
//! never hangs.
//!
//! The flags are found in `--help`, so a new one without a scenario here
//! fails the test instead of going unchecked.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// What the extremes are: the edges of the integer types coord reads, one
/// past them, and durations no clock can count to.
const EXTREMES: [&str; 8] = [
    "0",
    "-1",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "P1000000Y",
];

/// The value-taking options (`--x <DURATION>`, `--x <N>`) and number
/// arguments (`<PERCENT>`) a help text lists.
fn numeric_flags(help: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for line in help.lines() {
        let line = line.trim_start();
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(first), second) = (words.first(), words.get(1)) else {
            continue;
        };
        let long = if first.starts_with("-p,") {
            second.copied()
        } else {
            Some(*first)
        };
        let value = words.iter().find(|w| w.starts_with('<'));
        match (long, value) {
            (Some(flag), Some(&("<DURATION>" | "<N>"))) if flag.starts_with("--") => {
                flags.insert(flag.to_owned());
            }
            (_, _) if *first == "<PERCENT>" => {
                flags.insert("<PERCENT>".to_owned());
            }
            _ => {}
        }
    }
    flags
}

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_coord"))
        .args(args)
        .arg("--help")
        .finish();
    assert!(out.status.success(), "{args:?} --help");
    String::from_utf8(out.stdout).unwrap()
}

/// How each command is run so that, the flag under test aside, it ends at
/// once with success: its words before the flags, and default flags (left
/// out when one of them is the flag under test).
struct Scenario {
    /// Prepares the directory; returns the item id the command acts on.
    setup: fn(&Env) -> Option<String>,
    words: &'static [&'static str],
    defaults: &'static [(&'static str, &'static str)],
    /// Words after the flags (`-- COMMAND`).
    tail: &'static [&'static str],
}

fn claimed(env: &Env) -> Option<String> {
    Some(id_of(&env.run(&["claim", "held"]).expect_ok()))
}

fn posted(env: &Env) -> Option<String> {
    env.run(&["post", "queued", "an item"]).expect_ok();
    None
}

fn nothing(_: &Env) -> Option<String> {
    None
}

fn scenarios() -> BTreeMap<&'static str, Scenario> {
    let act = |words| Scenario {
        setup: claimed,
        words,
        defaults: &[],
        tail: &[],
    };
    BTreeMap::from([
        (
            "claim",
            Scenario {
                setup: nothing,
                words: &["claim", "build"],
                defaults: &[],
                tail: &[],
            },
        ),
        (
            "post",
            Scenario {
                setup: nothing,
                words: &["post", "build", "an item"],
                defaults: &[],
                tail: &[],
            },
        ),
        (
            "next",
            Scenario {
                setup: posted,
                words: &["next"],
                defaults: &[],
                tail: &[],
            },
        ),
        ("heartbeat", act(&["heartbeat", "{id}"])),
        ("progress", act(&["progress", "{id}", "{percent}"])),
        ("complete", act(&["complete", "{id}"])),
        ("fail", act(&["fail", "{id}", "--requeue"])),
        ("release", act(&["release", "{id}"])),
        (
            "cancel",
            Scenario {
                setup: posted,
                words: &["cancel", "--work-type", "build"],
                defaults: &[],
                tail: &[],
            },
        ),
        (
            "retry",
            Scenario {
                setup: posted,
                words: &["retry", "--status", "failed"],
                defaults: &[],
                tail: &[],
            },
        ),
        (
            "cleanup",
            Scenario {
                setup: nothing,
                words: &["cleanup"],
                defaults: &[("--older-than", "1s")],
                tail: &[],
            },
        ),
        (
            "completions",
            Scenario {
                setup: nothing,
                words: &["completions", "bash"],
                defaults: &[],
                tail: &[],
            },
        ),
        (
            "man",
            Scenario {
                setup: nothing,
                words: &["man"],
                defaults: &[],
                tail: &[],
            },
        ),
        (
            "dashboard",
            Scenario {
                setup: nothing,
                words: &["dashboard", "--once"],
                defaults: &[],
                tail: &[],
            },
        ),
        (
            "stats",
            Scenario {
                setup: nothing,
                words: &["stats"],
                defaults: &[],
                tail: &[],
            },
        ),
        (
            "agents",
            Scenario {
                setup: nothing,
                words: &["agents"],
                defaults: &[],
                tail: &[],
            },
        ),
        (
            "agent register",
            Scenario {
                setup: nothing,
                words: &["agent", "register"],
                defaults: &[],
                tail: &[],
            },
        ),
        (
            "run",
            Scenario {
                setup: nothing,
                words: &["run", "build"],
                defaults: &[],
                tail: &["--", "true"],
            },
        ),
        (
            "work",
            Scenario {
                setup: posted,
                words: &["work"],
                defaults: &[("--max-items", "1"), ("--idle-exit", "200ms")],
                tail: &["--", "true"],
            },
        ),
    ])
}

#[test]
fn extreme_values_in_every_duration_and_number_flag_never_panic_or_hang() {
    let top = help(&[]);
    let globals = numeric_flags(&top);
    assert!(globals.contains("--lock-timeout"), "{globals:?}");
    let scenarios = scenarios();
    let mut commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        // Commands without a number or duration flag of their own.
        .filter(|c| {
            ![
                "help", "log", "reap", "show", "list", "import", "pause", "resume",
            ]
            .contains(c)
        })
        .map(str::to_owned)
        .collect();
    // `agent` is a group: its subcommand is what runs.
    commands.retain(|c| c != "agent");
    commands.push("agent register".to_owned());

    let mut cases = Vec::new();
    for command in &commands {
        let words: Vec<&str> = command.split(' ').collect();
        let own: BTreeSet<String> = numeric_flags(&help(&words))
            .difference(&globals)
            .cloned()
            .collect();
        assert!(
            scenarios.contains_key(command.as_str()),
            "no scenario for `coord {command}`: add one here"
        );
        for flag in own {
            cases.push((command.clone(), flag));
        }
    }
    // Global flags, once, on a claim.
    for flag in &globals {
        cases.push(("claim".to_owned(), flag.clone()));
    }
    let expected_flags = [
        "--lease",
        "--retry",
        "--wait-for",
        "--max-attempts",
        "--fence",
        "<PERCENT>",
        "--retry-after",
        "--older-than",
        "--stale-after",
        "--capacity",
        "--grace",
        "--concurrency",
        "--max-items",
        "--idle-exit",
        "--retry-backoff",
        "--lock-timeout",
        "--compact-at",
        "--compact-keep",
    ];
    let found: BTreeSet<&str> = cases.iter().map(|(_, f)| f.as_str()).collect();
    for flag in expected_flags {
        assert!(found.contains(flag), "{flag} was not found in any --help");
    }

    let mut failures = Vec::new();
    for (command, flag) in &cases {
        let scenario = &scenarios[command.as_str()];
        for value in EXTREMES {
            let env = Env::new();
            let id = (scenario.setup)(&env);
            let mut args: Vec<String> = Vec::new();
            for word in scenario.words {
                args.push(match *word {
                    "{id}" => id.clone().expect("the scenario made an item"),
                    "{percent}" if flag == "<PERCENT>" => value.to_owned(),
                    "{percent}" => "50".to_owned(),
                    w => w.to_owned(),
                });
            }
            for (default, default_value) in scenario.defaults {
                if default != flag {
                    args.extend([(*default).to_owned(), (*default_value).to_owned()]);
                }
            }
            if flag != "<PERCENT>" {
                // `--flag=value`, so a negative value is read as a value.
                args.push(format!("{flag}={value}"));
            }
            args.extend(scenario.tail.iter().map(|w| (*w).to_owned()));
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let what = format!("coord {}", args.join(" "));
            let child = env.command(&refs).spawn().unwrap();
            let run: Run = coord_testkit::wait_within(child, Duration::from_secs(30), &what).into();
            let documented = [0, 2, 3, 4, 5, 6, 7, 8, 9, 10];
            if !documented.contains(&run.code) || run.stderr.contains("panicked") {
                failures.push(format!("{what}: exit {} {}", run.code, run.stderr));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
