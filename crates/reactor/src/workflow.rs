use std::any::{Any, type_name};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Instant;

use crate::middleware::Middleware;
use crate::step::{Compensation, ErasedStep, Step};
use crate::values::{InputError, Inputs, Values};

/// How many times one step may run before its last error stands, whatever
/// its compensation says. Keeps a compensation that always retries finite.
const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// A mistake in the shape of a workflow, found by [`WorkflowBuilder::build`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error("the workflow has no steps")]
    Empty,
    #[error("the name `{0}` is used twice")]
    DuplicateName(String),
    #[error("step `{step}` depends on `{dependency}`, which is neither an input nor a step")]
    UnknownDependency { step: String, dependency: String },
    #[error("the steps {0:?} depend on each other in a cycle")]
    Cycle(Vec<String>),
    #[error("the workflow returns `{0}`, which is not a step")]
    UnknownReturn(String),
}

/// A failed run: the step whose failure stood, its error, and every undo
/// that itself failed while the completed steps were being reverted.
#[derive(Debug)]
pub struct Failure<E> {
    pub step: String,
    pub error: E,
    pub undo_failures: Vec<UndoFailure<E>>,
}

/// An undo that failed during the rollback of a run.
#[derive(Debug)]
pub struct UndoFailure<E> {
    pub step: String,
    pub error: E,
}

impl<E: fmt::Display> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step `{}` failed: {}", self.step, self.error)?;
        for u in &self.undo_failures {
            write!(f, "; undo of `{}` also failed: {}", u.step, u.error)?;
        }
        Ok(())
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for Failure<E> {}

struct Node<'a, E> {
    name: String,
    deps: Vec<String>,
    step: Box<dyn ErasedStep<E> + 'a>,
}

/// Collects inputs, steps and middleware; [`WorkflowBuilder::build`] checks
/// the shape and orders the steps.
pub struct WorkflowBuilder<'a, E> {
    inputs: Vec<String>,
    nodes: Vec<Node<'a, E>>,
    returns: Option<String>,
    middleware: Vec<Box<dyn Middleware<E> + 'a>>,
    max_attempts: u32,
}

impl<E> fmt::Debug for WorkflowBuilder<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkflowBuilder")
            .field("inputs", &self.inputs)
            .field(
                "steps",
                &self.nodes.iter().map(|n| &n.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<'a, E: 'a> WorkflowBuilder<'a, E> {
    /// Declares a workflow input that steps may depend on.
    #[must_use]
    pub fn input(mut self, name: impl Into<String>) -> Self {
        self.inputs.push(name.into());
        self
    }

    /// Adds a step named `name` that reads the inputs named in `deps`.
    #[must_use]
    pub fn step<S>(mut self, name: impl Into<String>, deps: &[&str], step: S) -> Self
    where
        S: Step<E> + 'a,
    {
        self.nodes.push(Node {
            name: name.into(),
            deps: deps.iter().map(|d| (*d).to_owned()).collect(),
            step: Box::new(step),
        });
        self
    }

    /// Names the step whose output the run returns (default: the last step
    /// in execution order).
    #[must_use]
    pub fn returns(mut self, name: impl Into<String>) -> Self {
        self.returns = Some(name.into());
        self
    }

    #[must_use]
    pub fn middleware(mut self, middleware: impl Middleware<E> + 'a) -> Self {
        self.middleware.push(Box::new(middleware));
        self
    }

    /// How many times one step may run in all (at least 1).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    pub fn build(self) -> Result<Workflow<'a, E>, BuildError> {
        if self.nodes.is_empty() {
            return Err(BuildError::Empty);
        }
        let mut names = HashSet::new();
        for name in self.inputs.iter().chain(self.nodes.iter().map(|n| &n.name)) {
            if !names.insert(name.as_str()) {
                return Err(BuildError::DuplicateName(name.clone()));
            }
        }
        for node in &self.nodes {
            if let Some(dep) = node.deps.iter().find(|d| !names.contains(d.as_str())) {
                return Err(BuildError::UnknownDependency {
                    step: node.name.clone(),
                    dependency: dep.clone(),
                });
            }
        }
        let order = topological_order(&self.inputs, &self.nodes)?;
        let mut slots: Vec<Option<Node<'a, E>>> = self.nodes.into_iter().map(Some).collect();
        let steps: Vec<Node<'a, E>> = order
            .into_iter()
            .map(|i| slots[i].take().expect("each index appears once"))
            .collect();
        let returns = match self.returns {
            Some(name) => steps
                .iter()
                .position(|n| n.name == name)
                .ok_or(BuildError::UnknownReturn(name))?,
            None => steps.len() - 1,
        };
        Ok(Workflow {
            inputs: self.inputs,
            steps,
            returns,
            middleware: self.middleware,
            max_attempts: self.max_attempts,
        })
    }
}

/// Kahn's algorithm; among ready steps the one declared first runs first, so
/// the order is deterministic and follows the declaration where it can.
fn topological_order<E>(
    inputs: &[String],
    nodes: &[Node<'_, E>],
) -> Result<Vec<usize>, BuildError> {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut pending: Vec<usize> = nodes
        .iter()
        .map(|n| n.deps.iter().filter(|d| !inputs.contains(d)).count())
        .collect();
    let mut done = vec![false; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    while order.len() < nodes.len() {
        let Some(next) = (0..nodes.len()).find(|&i| !done[i] && pending[i] == 0) else {
            let cycle = (0..nodes.len())
                .filter(|&i| !done[i])
                .map(|i| nodes[i].name.clone())
                .collect();
            return Err(BuildError::Cycle(cycle));
        };
        done[next] = true;
        order.push(next);
        for (i, node) in nodes.iter().enumerate() {
            if !done[i] {
                let hits = node
                    .deps
                    .iter()
                    .filter(|d| index.get(d.as_str()) == Some(&next));
                pending[i] -= hits.count();
            }
        }
    }
    Ok(order)
}

/// A checked, ordered workflow, ready to run once.
pub struct Workflow<'a, E> {
    inputs: Vec<String>,
    steps: Vec<Node<'a, E>>,
    returns: usize,
    middleware: Vec<Box<dyn Middleware<E> + 'a>>,
    max_attempts: u32,
}

impl<E> fmt::Debug for Workflow<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workflow")
            .field("inputs", &self.inputs)
            .field("order", &self.step_names())
            .finish_non_exhaustive()
    }
}

impl<'a, E: 'a> Workflow<'a, E> {
    pub fn builder() -> WorkflowBuilder<'a, E> {
        WorkflowBuilder {
            inputs: Vec::new(),
            nodes: Vec::new(),
            returns: None,
            middleware: Vec::new(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// The step names in the order they will run.
    pub fn step_names(&self) -> Vec<&str> {
        self.steps.iter().map(|n| n.name.as_str()).collect()
    }
}

impl<'a, E: From<InputError> + 'a> Workflow<'a, E> {
    /// Runs every step in order and returns the output of the returned step
    /// as a `T`. On failure, completed steps are undone in reverse order.
    pub fn run<T: Any>(mut self, inputs: Values) -> Result<T, Failure<E>> {
        let mut values = inputs;
        let mut completed: Vec<usize> = Vec::with_capacity(self.steps.len());
        for index in 0..self.steps.len() {
            match self.run_step(index, &values) {
                Ok(output) => {
                    values.insert_boxed(&self.steps[index].name, output);
                    completed.push(index);
                }
                Err(error) => {
                    let undo_failures = self.undo(&completed, &values);
                    return Err(Failure {
                        step: self.steps[index].name.clone(),
                        error,
                        undo_failures,
                    });
                }
            }
        }
        let name = self.steps[self.returns].name.clone();
        let is_t = values.get_any(&name).is_some_and(|v| v.is::<T>());
        if !is_t {
            // A wiring mistake: the caller asked for another type than the
            // returned step produces. Roll back as for any other failure.
            let error = E::from(InputError::WrongType {
                step: "(workflow result)".to_owned(),
                name: name.clone(),
                expected: type_name::<T>(),
            });
            let undo_failures = self.undo(&completed, &values);
            return Err(Failure {
                step: name,
                error,
                undo_failures,
            });
        }
        let output = values.remove_boxed(&name).expect("checked above");
        Ok(*output.downcast::<T>().expect("checked above"))
    }

    fn run_step(&mut self, index: usize, values: &Values) -> Result<Box<dyn Any>, E> {
        let node = &mut self.steps[index];
        let inputs = Inputs::new(&node.name, &node.deps, values);
        for m in &self.middleware {
            m.before_step(&node.name);
        }
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match node.step.run(&inputs) {
                Ok(output) => break Ok(output),
                Err(error) => error,
            };
            for m in &self.middleware {
                m.on_error(&node.name, &error, attempt);
            }
            if attempt >= self.max_attempts {
                return Err(error);
            }
            match node.step.compensate(error, &inputs, attempt) {
                Compensation::Retry => {
                    for m in &self.middleware {
                        m.on_retry(&node.name, attempt);
                    }
                }
                Compensation::Recover(output) => break Ok(output),
                Compensation::Fail(error) => return Err(error),
            }
        }
        .inspect(|_| {
            for m in &self.middleware {
                m.after_step(&node.name, started.elapsed());
            }
        })
    }

    fn undo(&mut self, completed: &[usize], values: &Values) -> Vec<UndoFailure<E>> {
        let mut failures = Vec::new();
        for &index in completed.iter().rev() {
            let node = &mut self.steps[index];
            let inputs = Inputs::new(&node.name, &node.deps, values);
            let output = values
                .get_any(&node.name)
                .expect("completed steps have outputs");
            let result = node.step.undo(output, &inputs);
            for m in &self.middleware {
                m.on_undo(&node.name, result.as_ref().map(|_| ()));
            }
            if let Err(error) = result {
                failures.push(UndoFailure {
                    step: node.name.clone(),
                    error,
                });
            }
        }
        failures
    }
}
