//! The engine on its own: steps in the order written with their outputs
//! passed on, failure at every position, undo order, compensation
//! (retry, recover, another error, the attempt bound), failing undos, and
//! middleware.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use reactor::{Compensation, Failure, Middleware, Step, saga};

#[derive(Debug, Clone, PartialEq)]
enum TestError {
    Boom(String),
    Changed(String),
}

impl std::fmt::Display for TestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

type Log = Rc<RefCell<Vec<String>>>;

/// A step that adds `add` to its input, records what happens to it, and
/// can be told to fail.
struct Adder {
    name: &'static str,
    input: i64,
    add: i64,
    log: Log,
    /// How many runs fail before one succeeds (u32::MAX: always fails).
    failures_left: u32,
    /// Compensation: retry while failing.
    retry: bool,
    /// Compensation: replace the error.
    change_error: bool,
    /// Compensation: recover with this value.
    recover: Option<i64>,
    undo_fails: bool,
}

impl Adder {
    fn new(name: &'static str, input: i64, log: &Log) -> Self {
        Adder {
            name,
            input,
            add: 1,
            log: log.clone(),
            failures_left: 0,
            retry: false,
            change_error: false,
            recover: None,
            undo_fails: false,
        }
    }

    fn failing(mut self, times: u32) -> Self {
        self.failures_left = times;
        self
    }
}

impl Step<TestError> for Adder {
    type Output = i64;

    fn run(&mut self) -> Result<i64, TestError> {
        self.log.borrow_mut().push(format!("run {}", self.name));
        if self.failures_left > 0 {
            self.failures_left = self.failures_left.saturating_sub(1);
            return Err(TestError::Boom(self.name.to_owned()));
        }
        Ok(self.input + self.add)
    }

    fn compensate(&mut self, error: TestError, attempt: u32) -> Compensation<i64, TestError> {
        self.log
            .borrow_mut()
            .push(format!("compensate {} {attempt}", self.name));
        if let Some(value) = self.recover {
            Compensation::Recover(value)
        } else if self.retry {
            Compensation::Retry
        } else if self.change_error {
            Compensation::Fail(TestError::Changed(self.name.to_owned()))
        } else {
            Compensation::Fail(error)
        }
    }

    fn undo(&mut self) -> Result<(), TestError> {
        self.log.borrow_mut().push(format!("undo {}", self.name));
        if self.undo_fails {
            Err(TestError::Boom(format!("undo {}", self.name)))
        } else {
            Ok(())
        }
    }
}

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

/// Three steps, each taking the one before's output; `fail_at` (1-based)
/// fails for good.
fn three(log: &Log, fail_at: Option<usize>) -> Result<i64, Failure<TestError>> {
    let make = |name, input, n| {
        let step = Adder::new(name, input, log);
        if fail_at == Some(n) {
            step.failing(u32::MAX)
        } else {
            step
        }
    };
    saga(&(), |s| {
        let a = s.step("a", make("a", 0, 1))?;
        let b = s.step("b", make("b", a, 2))?;
        let c = s.step("c", make("c", b, 3))?;
        Ok(c * 10)
    })
}

#[test]
fn steps_run_in_the_order_written_and_pass_their_outputs_on() {
    let log = log();
    assert_eq!(three(&log, None).unwrap(), 30);
    assert_eq!(*log.borrow(), ["run a", "run b", "run c"]);
}

#[test]
fn a_failure_at_any_position_undoes_the_completed_steps_newest_first() {
    for (fail_at, undone) in [
        (1, vec![]),
        (2, vec!["undo a"]),
        (3, vec!["undo b", "undo a"]),
    ] {
        let log = log();
        let failure = three(&log, Some(fail_at)).unwrap_err();
        let name = ["a", "b", "c"][fail_at - 1];
        assert_eq!(failure.step, name);
        assert_eq!(failure.error, TestError::Boom(name.to_owned()));
        assert!(failure.undo_failures.is_empty());
        let undos: Vec<String> = log
            .borrow()
            .iter()
            .filter(|l| l.starts_with("undo"))
            .cloned()
            .collect();
        assert_eq!(undos, undone, "failing at {name}");
        assert!(!log.borrow().contains(&"run c".to_owned()) || fail_at == 3);
    }
}

#[test]
fn a_failure_between_steps_undoes_them_too() {
    let log = log();
    let failure = saga(&(), |s| -> Result<(), TestError> {
        s.step("a", Adder::new("a", 0, &log))?;
        Err(TestError::Boom("after a".into()))
    })
    .unwrap_err();
    assert_eq!(failure.step, "(between steps)");
    assert_eq!(*log.borrow(), ["run a", "undo a"]);
}

#[test]
fn steps_without_an_undo_run_as_closures() {
    let log = log();
    let failure = saga(&(), |s| -> Result<(), TestError> {
        let a = s.step("a", Adder::new("a", 0, &log))?;
        let doubled = s.run("double", || Ok(a * 2))?;
        assert_eq!(doubled, 2);
        s.run("check", || Err(TestError::Boom("check".into())))
    })
    .unwrap_err();
    assert_eq!(failure.step, "check");
    assert_eq!(*log.borrow(), ["run a", "undo a"]);
}

#[test]
fn a_compensation_can_retry_recover_or_change_the_error() {
    let log = log();
    let mut retried = Adder::new("r", 0, &log).failing(2);
    retried.retry = true;
    assert_eq!(saga(&(), |s| s.step("r", retried)).unwrap(), 1);
    assert_eq!(
        *log.borrow(),
        [
            "run r",
            "compensate r 1",
            "run r",
            "compensate r 2",
            "run r"
        ]
    );

    let log = self::log();
    let mut recovered = Adder::new("v", 0, &log).failing(u32::MAX);
    recovered.recover = Some(42);
    assert_eq!(saga(&(), |s| s.step("v", recovered)).unwrap(), 42);

    let log = self::log();
    let mut changed = Adder::new("x", 0, &log).failing(u32::MAX);
    changed.change_error = true;
    let failure = saga(&(), |s| s.step("x", changed)).unwrap_err();
    assert_eq!(failure.error, TestError::Changed("x".into()));
}

#[test]
fn a_step_that_always_retries_stops_after_five_runs() {
    let log = log();
    let mut stubborn = Adder::new("s", 0, &log).failing(u32::MAX);
    stubborn.retry = true;
    let failure = saga(&(), |s| s.step("s", stubborn)).unwrap_err();
    assert_eq!(failure.error, TestError::Boom("s".into()));
    let runs = log.borrow().iter().filter(|l| *l == "run s").count();
    assert_eq!(runs, 5);
}

#[test]
fn a_failing_undo_is_reported_and_the_other_undos_still_run() {
    let log = log();
    let failure = saga(&(), |s| -> Result<(), TestError> {
        s.step("a", Adder::new("a", 0, &log))?;
        let mut b = Adder::new("b", 0, &log);
        b.undo_fails = true;
        s.step("b", b)?;
        s.step("c", Adder::new("c", 0, &log).failing(u32::MAX))?;
        Ok(())
    })
    .unwrap_err();
    assert_eq!(failure.undo_failures.len(), 1);
    assert_eq!(failure.undo_failures[0].step, "b");
    assert!(
        log.borrow()
            .ends_with(&["undo b".to_owned(), "undo a".to_owned()])
    );
    let text = failure.to_string();
    assert!(
        text.contains("step `c` failed") && text.contains("undo of `b` also failed"),
        "{text}"
    );
}

#[derive(Default)]
struct Watch(RefCell<Vec<String>>);

impl Middleware<TestError> for Watch {
    fn before_step(&self, step: &str) {
        self.0.borrow_mut().push(format!("before {step}"));
    }
    fn after_step(&self, step: &str, _elapsed: Duration) {
        self.0.borrow_mut().push(format!("after {step}"));
    }
    fn on_error(&self, step: &str, _error: &TestError, attempt: u32) {
        self.0.borrow_mut().push(format!("error {step} {attempt}"));
    }
    fn on_retry(&self, step: &str, attempt: u32) {
        self.0.borrow_mut().push(format!("retry {step} {attempt}"));
    }
    fn on_undo(&self, step: &str, result: Result<(), &TestError>) {
        self.0.borrow_mut().push(format!(
            "undo {step} {}",
            if result.is_ok() { "ok" } else { "failed" }
        ));
    }
}

#[test]
fn middleware_sees_every_step_by_name() {
    let log = log();
    let watch = Watch::default();
    let mut flaky = Adder::new("b", 0, &log).failing(1);
    flaky.retry = true;
    let _ = saga(&watch, |s| -> Result<(), TestError> {
        s.step("a", Adder::new("a", 0, &log))?;
        s.step("b", flaky)?;
        s.run("c", || Err(TestError::Boom("c".into())))
    });
    assert_eq!(
        *watch.0.borrow(),
        [
            "before a",
            "after a",
            "before b",
            "error b 1",
            "retry b 1",
            "after b",
            "before c",
            "error c 1",
            "undo b ok",
            "undo a ok"
        ]
    );
}
