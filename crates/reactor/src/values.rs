use std::any::{Any, type_name};
use std::collections::HashMap;
use std::fmt;

/// Named, typed values: the workflow's inputs, and each step's output stored
/// under the step's name.
#[derive(Default)]
pub struct Values {
    map: HashMap<String, Box<dyn Any>>,
}

impl fmt::Debug for Values {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.map.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Values").field("names", &names).finish()
    }
}

impl Values {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a named value, replacing any earlier value of that name.
    pub fn insert<T: Any>(&mut self, name: impl Into<String>, value: T) -> &mut Self {
        self.map.insert(name.into(), Box::new(value));
        self
    }

    /// Builder form of [`Values::insert`].
    #[must_use]
    pub fn with<T: Any>(mut self, name: impl Into<String>, value: T) -> Self {
        self.insert(name, value);
        self
    }

    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub(crate) fn insert_boxed(&mut self, name: &str, value: Box<dyn Any>) {
        self.map.insert(name.to_owned(), value);
    }

    pub(crate) fn get_any(&self, name: &str) -> Option<&dyn Any> {
        self.map.get(name).map(|b| b.as_ref())
    }

    pub(crate) fn remove_boxed(&mut self, name: &str) -> Option<Box<dyn Any>> {
        self.map.remove(name)
    }
}

/// Why a step could not read one of its inputs. These are wiring mistakes in a
/// workflow, so a step's error type converts from this one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    #[error("step `{step}` reads `{name}` but does not declare it as an input")]
    Undeclared { step: String, name: String },
    #[error("step `{step}` needs input `{name}`, which was not provided")]
    Missing { step: String, name: String },
    #[error("input `{name}` of step `{step}` is not a `{expected}`")]
    WrongType {
        step: String,
        name: String,
        expected: &'static str,
    },
}

/// What a step sees: only the values it declared as inputs.
#[derive(Debug)]
pub struct Inputs<'a> {
    step: &'a str,
    declared: &'a [String],
    values: &'a Values,
}

impl<'a> Inputs<'a> {
    pub(crate) fn new(step: &'a str, declared: &'a [String], values: &'a Values) -> Self {
        Self {
            step,
            declared,
            values,
        }
    }

    /// The name of the step these inputs belong to.
    pub fn step(&self) -> &str {
        self.step
    }

    /// The declared input `name`, as a `T`.
    pub fn get<T: Any>(&self, name: &str) -> Result<&'a T, InputError> {
        if !self.declared.iter().any(|d| d == name) {
            return Err(InputError::Undeclared {
                step: self.step.to_owned(),
                name: name.to_owned(),
            });
        }
        let value = self
            .values
            .get_any(name)
            .ok_or_else(|| InputError::Missing {
                step: self.step.to_owned(),
                name: name.to_owned(),
            })?;
        value
            .downcast_ref::<T>()
            .ok_or_else(|| InputError::WrongType {
                step: self.step.to_owned(),
                name: name.to_owned(),
                expected: type_name::<T>(),
            })
    }
}
