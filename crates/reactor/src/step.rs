use std::any::Any;
use std::fmt;

use crate::values::Inputs;

/// What a failed step's compensation decides.
#[derive(Debug)]
pub enum Compensation<O, E> {
    /// Run the step again (the engine bounds the number of attempts).
    Retry,
    /// Carry on as if the step had produced this output.
    Recover(O),
    /// The step has failed with this error (the original one or another).
    Fail(E),
}

/// One step of a workflow.
///
/// `run` does the work; `compensate` is called when `run` fails and decides
/// what to do about it; `undo` reverts a step that had completed when a later
/// step's failure stands.
pub trait Step<E> {
    type Output: Any;

    fn run(&mut self, inputs: &Inputs<'_>) -> Result<Self::Output, E>;

    /// Called when `run` failed; `attempt` counts the failures so far,
    /// starting at 1. The default lets the error stand.
    fn compensate(
        &mut self,
        error: E,
        _inputs: &Inputs<'_>,
        _attempt: u32,
    ) -> Compensation<Self::Output, E> {
        Compensation::Fail(error)
    }

    /// Reverts this step after it completed with `output`. The default does
    /// nothing, for steps with no effect outside their output.
    fn undo(&mut self, _output: &Self::Output, _inputs: &Inputs<'_>) -> Result<(), E> {
        Ok(())
    }
}

/// A step made of a closure, with no compensation or undo.
pub struct FnStep<F>(F);

impl<F> fmt::Debug for FnStep<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnStep")
    }
}

/// Wraps a closure as a [`Step`].
pub fn from_fn<F, O, E>(f: F) -> FnStep<F>
where
    F: FnMut(&Inputs<'_>) -> Result<O, E>,
    O: Any,
{
    FnStep(f)
}

impl<F, O, E> Step<E> for FnStep<F>
where
    F: FnMut(&Inputs<'_>) -> Result<O, E>,
    O: Any,
{
    type Output = O;

    fn run(&mut self, inputs: &Inputs<'_>) -> Result<O, E> {
        (self.0)(inputs)
    }
}

/// The engine's type-erased view of a step.
pub(crate) trait ErasedStep<E> {
    fn run(&mut self, inputs: &Inputs<'_>) -> Result<Box<dyn Any>, E>;
    fn compensate(
        &mut self,
        error: E,
        inputs: &Inputs<'_>,
        attempt: u32,
    ) -> Compensation<Box<dyn Any>, E>;
    fn undo(&mut self, output: &dyn Any, inputs: &Inputs<'_>) -> Result<(), E>;
}

impl<E, S: Step<E>> ErasedStep<E> for S {
    fn run(&mut self, inputs: &Inputs<'_>) -> Result<Box<dyn Any>, E> {
        Step::run(self, inputs).map(|o| Box::new(o) as Box<dyn Any>)
    }

    fn compensate(
        &mut self,
        error: E,
        inputs: &Inputs<'_>,
        attempt: u32,
    ) -> Compensation<Box<dyn Any>, E> {
        match Step::compensate(self, error, inputs, attempt) {
            Compensation::Retry => Compensation::Retry,
            Compensation::Recover(o) => Compensation::Recover(Box::new(o)),
            Compensation::Fail(e) => Compensation::Fail(e),
        }
    }

    fn undo(&mut self, output: &dyn Any, inputs: &Inputs<'_>) -> Result<(), E> {
        let output = output
            .downcast_ref::<S::Output>()
            .expect("the engine stores each step's own output under its name");
        Step::undo(self, output, inputs)
    }
}
