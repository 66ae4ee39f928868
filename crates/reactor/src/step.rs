//! What one step of a saga is: [`Step`], and what its compensation decides
//! ([`Compensation`]).

/// What a failed step's compensation decides.
#[derive(Debug)]
pub enum Compensation<O, E> {
    /// Run the step again (the saga bounds the number of attempts).
    Retry,
    /// Carry on as if the step had produced this output.
    Recover(O),
    /// The step has failed with this error (the original one or another).
    Fail(E),
}

/// One step of a saga that may fail in a way it knows how to handle, or
/// change something outside that a later failure must put back.
///
/// The step holds what it works on (given when it is made), so that its
/// undo can run after the saga's own values are gone.
pub trait Step<E> {
    type Output;

    fn run(&mut self) -> Result<Self::Output, E>;

    /// Called when `run` failed; `attempt` counts the failures so far,
    /// starting at 1. The default lets the error stand.
    fn compensate(&mut self, error: E, attempt: u32) -> Compensation<Self::Output, E> {
        let _ = attempt;
        Compensation::Fail(error)
    }

    /// Reverts the step after it completed, when a later failure stands.
    /// The default does nothing, for steps with no effect outside their
    /// output.
    fn undo(&mut self) -> Result<(), E> {
        Ok(())
    }
}
