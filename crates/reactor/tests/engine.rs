//! The engine on its own: ordering, failure at every position, undo order,
//! compensation, failing undos, middleware and shape errors.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use reactor::{
    BuildError, Compensation, Failure, InputError, Inputs, Middleware, Step, Values, Workflow,
    from_fn,
};

#[derive(Debug, Clone, PartialEq)]
enum TestError {
    Boom(String),
    Changed(String),
    Input(InputError),
}

impl From<InputError> for TestError {
    fn from(e: InputError) -> Self {
        TestError::Input(e)
    }
}

impl std::fmt::Display for TestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

type Log = Rc<RefCell<Vec<String>>>;

/// A step that records what happens to it and can be told to fail.
struct Recorder {
    name: &'static str,
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

impl Recorder {
    fn new(name: &'static str, log: &Log) -> Self {
        Recorder {
            name,
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

impl Step<TestError> for Recorder {
    type Output = i64;

    fn run(&mut self, _inputs: &Inputs<'_>) -> Result<i64, TestError> {
        self.log.borrow_mut().push(format!("run {}", self.name));
        if self.failures_left > 0 {
            self.failures_left = self.failures_left.saturating_sub(1);
            return Err(TestError::Boom(self.name.to_owned()));
        }
        Ok(self.name.len() as i64)
    }

    fn compensate(
        &mut self,
        error: TestError,
        _inputs: &Inputs<'_>,
        attempt: u32,
    ) -> Compensation<i64, TestError> {
        self.log
            .borrow_mut()
            .push(format!("compensate {} #{attempt}", self.name));
        if self.retry {
            Compensation::Retry
        } else if let Some(v) = self.recover {
            Compensation::Recover(v)
        } else if self.change_error {
            Compensation::Fail(TestError::Changed(self.name.to_owned()))
        } else {
            Compensation::Fail(error)
        }
    }

    fn undo(&mut self, output: &i64, _inputs: &Inputs<'_>) -> Result<(), TestError> {
        self.log
            .borrow_mut()
            .push(format!("undo {} ({output})", self.name));
        if self.undo_fails {
            return Err(TestError::Boom(format!("undo {}", self.name)));
        }
        Ok(())
    }
}

fn chain(steps: Vec<Recorder>) -> Workflow<'static, TestError> {
    let mut b = Workflow::builder();
    let mut prev: Option<&'static str> = None;
    for s in steps {
        let name = s.name;
        let deps: Vec<&str> = prev.into_iter().collect();
        b = b.step(name, &deps, s);
        prev = Some(name);
    }
    b.build().unwrap()
}

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

fn entries(log: &Log) -> Vec<String> {
    log.borrow().clone()
}

#[test]
fn steps_run_in_dependency_order_not_declaration_order() {
    let log = log();
    // Declared c, b, a; c needs b, b needs a and the input.
    let wf = Workflow::builder()
        .input("seed")
        .step("c", &["b"], Recorder::new("c", &log))
        .step("b", &["a", "seed"], Recorder::new("b", &log))
        .step("a", &[], Recorder::new("a", &log))
        .build()
        .unwrap();
    assert_eq!(wf.step_names(), ["a", "b", "c"]);
    let out: i64 = wf.run(Values::new().with("seed", 7u8)).unwrap();
    assert_eq!(out, 1, "returns the last step's output");
    assert_eq!(entries(&log), ["run a", "run b", "run c"]);
}

#[test]
fn values_flow_between_steps_by_name() {
    let wf = Workflow::<TestError>::builder()
        .input("x")
        .step(
            "double",
            &["x"],
            from_fn(|i: &Inputs<'_>| Ok::<_, TestError>(i.get::<i32>("x")? * 2)),
        )
        .step(
            "describe",
            &["double", "x"],
            from_fn(|i: &Inputs<'_>| {
                Ok::<_, TestError>(format!(
                    "{} -> {}",
                    i.get::<i32>("x")?,
                    i.get::<i32>("double")?
                ))
            }),
        )
        .build()
        .unwrap();
    let out: String = wf.run(Values::new().with("x", 21i32)).unwrap();
    assert_eq!(out, "21 -> 42");
}

#[test]
fn returns_names_the_step_whose_output_is_the_result() {
    let log = log();
    let wf = Workflow::builder()
        .step(
            "first",
            &[],
            from_fn(|_: &Inputs<'_>| Ok::<_, TestError>("first output")),
        )
        .step("second", &["first"], Recorder::new("second", &log))
        .returns("first")
        .build()
        .unwrap();
    let out: &str = wf.run(Values::new()).unwrap();
    assert_eq!(out, "first output");
}

#[test]
fn failure_at_every_position_undoes_exactly_the_completed_steps_in_reverse() {
    let names = ["s0", "s1", "s2", "s3", "s4"];
    for failing in 0..names.len() {
        let log = log();
        let steps = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let r = Recorder::new(n, &log);
                if i == failing { r.failing(u32::MAX) } else { r }
            })
            .collect();
        let err = chain(steps).run::<i64>(Values::new()).unwrap_err();
        assert_eq!(err.step, names[failing]);
        assert_eq!(err.error, TestError::Boom(names[failing].to_owned()));
        assert!(err.undo_failures.is_empty());

        let mut expected: Vec<String> = names[..failing]
            .iter()
            .map(|n| format!("run {n}"))
            .collect();
        expected.push(format!("run {}", names[failing]));
        expected.push(format!("compensate {} #1", names[failing]));
        expected.extend(
            names[..failing]
                .iter()
                .rev()
                .map(|n| format!("undo {n} (2)")),
        );
        assert_eq!(entries(&log), expected, "failing at position {failing}");
    }
}

#[test]
fn compensation_that_retries_runs_the_step_again() {
    let log = log();
    let mut flaky = Recorder::new("flaky", &log).failing(2);
    flaky.retry = true;
    let out: i64 = chain(vec![Recorder::new("a", &log), flaky])
        .run(Values::new())
        .unwrap();
    assert_eq!(out, 5);
    assert_eq!(
        entries(&log),
        [
            "run a",
            "run flaky",
            "compensate flaky #1",
            "run flaky",
            "compensate flaky #2",
            "run flaky"
        ]
    );
}

#[test]
fn retries_are_bounded_by_max_attempts() {
    let log = log();
    let mut stuck = Recorder::new("stuck", &log).failing(u32::MAX);
    stuck.retry = true;
    let wf = Workflow::builder()
        .step("stuck", &[], stuck)
        .max_attempts(3)
        .build()
        .unwrap();
    let err = wf.run::<i64>(Values::new()).unwrap_err();
    assert_eq!(err.error, TestError::Boom("stuck".into()));
    let runs = entries(&log).iter().filter(|e| *e == "run stuck").count();
    assert_eq!(runs, 3);
}

#[test]
fn compensation_can_change_the_error() {
    let log = log();
    let mut step = Recorder::new("b", &log).failing(1);
    step.change_error = true;
    let err = chain(vec![Recorder::new("a", &log), step])
        .run::<i64>(Values::new())
        .unwrap_err();
    assert_eq!(err.error, TestError::Changed("b".into()));
    assert_eq!(entries(&log).last().unwrap(), "undo a (1)");
}

#[test]
fn compensation_can_recover_with_a_value() {
    let log = log();
    let mut step = Recorder::new("b", &log).failing(1);
    step.recover = Some(99);
    let out: i64 = chain(vec![Recorder::new("a", &log), step])
        .run(Values::new())
        .unwrap();
    assert_eq!(out, 99);
    assert!(!entries(&log).iter().any(|e| e.starts_with("undo")));
}

#[test]
fn a_failing_undo_is_reported_and_the_rest_still_undone() {
    let log = log();
    let mut middle = Recorder::new("b", &log);
    middle.undo_fails = true;
    let steps = vec![
        Recorder::new("a", &log),
        middle,
        Recorder::new("c", &log),
        Recorder::new("d", &log).failing(u32::MAX),
    ];
    let err: Failure<TestError> = chain(steps).run::<i64>(Values::new()).unwrap_err();
    assert_eq!(err.step, "d");
    assert_eq!(err.undo_failures.len(), 1);
    assert_eq!(err.undo_failures[0].step, "b");
    assert_eq!(err.undo_failures[0].error, TestError::Boom("undo b".into()));
    let undos: Vec<String> = entries(&log)
        .into_iter()
        .filter(|e| e.starts_with("undo"))
        .collect();
    assert_eq!(undos, ["undo c (1)", "undo b (1)", "undo a (1)"]);
    let text = err.to_string();
    assert!(text.contains("undo of `b` also failed"), "{text}");
}

#[test]
fn reading_an_undeclared_input_is_an_error() {
    let wf = Workflow::<TestError>::builder()
        .input("secret")
        .step(
            "peek",
            &[],
            from_fn(|i: &Inputs<'_>| i.get::<u8>("secret").copied().map_err(TestError::from)),
        )
        .build()
        .unwrap();
    let err = wf.run::<u8>(Values::new().with("secret", 1u8)).unwrap_err();
    assert!(
        matches!(err.error, TestError::Input(InputError::Undeclared { .. })),
        "{err:?}"
    );
}

#[test]
fn missing_and_mistyped_inputs_are_errors() {
    let build = || {
        Workflow::<TestError>::builder()
            .input("n")
            .step(
                "use",
                &["n"],
                from_fn(|i: &Inputs<'_>| i.get::<u32>("n").copied().map_err(TestError::from)),
            )
            .build()
            .unwrap()
    };
    let err = build().run::<u32>(Values::new()).unwrap_err();
    assert!(
        matches!(err.error, TestError::Input(InputError::Missing { .. })),
        "{err:?}"
    );
    let err = build()
        .run::<u32>(Values::new().with("n", "text"))
        .unwrap_err();
    assert!(
        matches!(err.error, TestError::Input(InputError::WrongType { .. })),
        "{err:?}"
    );
    let err = build()
        .run::<String>(Values::new().with("n", 3u32))
        .unwrap_err();
    assert!(
        matches!(err.error, TestError::Input(InputError::WrongType { .. })),
        "{err:?}"
    );
}

#[test]
fn shape_errors_are_found_at_build_time() {
    let log = log();
    let err = Workflow::<TestError>::builder().build().unwrap_err();
    assert_eq!(err, BuildError::Empty);

    let err = Workflow::builder()
        .step("a", &["nope"], Recorder::new("a", &log))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::UnknownDependency {
            step: "a".into(),
            dependency: "nope".into()
        }
    );

    let err = Workflow::builder()
        .step("a", &[], Recorder::new("a", &log))
        .step("a", &[], Recorder::new("a", &log))
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::DuplicateName("a".into()));

    let err = Workflow::builder()
        .step("root", &[], Recorder::new("root", &log))
        .step("x", &["root", "y"], Recorder::new("x", &log))
        .step("y", &["x"], Recorder::new("y", &log))
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::Cycle(vec!["x".into(), "y".into()]));

    let err = Workflow::builder()
        .step("a", &[], Recorder::new("a", &log))
        .returns("b")
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::UnknownReturn("b".into()));
}

/// Records the hooks it sees.
struct Spy(Log);

impl Middleware<TestError> for Spy {
    fn before_step(&self, step: &str) {
        self.0.borrow_mut().push(format!("before {step}"));
    }
    fn after_step(&self, step: &str, _elapsed: Duration) {
        self.0.borrow_mut().push(format!("after {step}"));
    }
    fn on_error(&self, step: &str, error: &TestError, attempt: u32) {
        self.0
            .borrow_mut()
            .push(format!("error {step} #{attempt}: {error}"));
    }
    fn on_retry(&self, step: &str, attempt: u32) {
        self.0.borrow_mut().push(format!("retry {step} #{attempt}"));
    }
    fn on_undo(&self, step: &str, result: Result<(), &TestError>) {
        self.0
            .borrow_mut()
            .push(format!("undo {step} ok={}", result.is_ok()));
    }
}

#[test]
fn middleware_sees_every_hook_in_order() {
    let steps_log = log();
    let hooks = log();
    let mut flaky = Recorder::new("b", &steps_log).failing(1);
    flaky.retry = true;
    let wf = Workflow::builder()
        .step("a", &[], Recorder::new("a", &steps_log))
        .step("b", &["a"], flaky)
        .step(
            "c",
            &["b"],
            Recorder::new("c", &steps_log).failing(u32::MAX),
        )
        .middleware(Spy(hooks.clone()))
        .build()
        .unwrap();
    wf.run::<i64>(Values::new()).unwrap_err();
    assert_eq!(
        entries(&hooks),
        [
            "before a",
            "after a",
            "before b",
            "error b #1: Boom(\"b\")",
            "retry b #1",
            "after b",
            "before c",
            "error c #1: Boom(\"c\")",
            "undo b ok=true",
            "undo a ok=true",
        ]
    );
}
