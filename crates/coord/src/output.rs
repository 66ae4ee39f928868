//! What goes to stdout and stderr, and the exit codes.

use std::io::{self, Write};
use std::process::ExitCode;

use coord_core::{Claim, CoordError, ErrorKind};
use serde_json::{Value, json};

pub enum Output {
    One(Box<Claim>),
    Many(Vec<Claim>),
}

/// The exit code of each error kind: part of the CLI contract.
pub fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Conflict => 3,
        ErrorKind::NotFound => 4,
        ErrorKind::LockTimeout => 5,
        ErrorKind::ValidationFailed => 6,
        ErrorKind::FileRead | ErrorKind::AtomicWriteFailed => 7,
        _ => 1,
    }
}

/// Prints `out` as one line of compact JSON. A closed pipe (`| head`) is
/// not an error; any other failure to write is.
pub fn print(out: &Output) -> ExitCode {
    let line = match out {
        Output::One(claim) => serde_json::to_string(claim),
        Output::Many(claims) => serde_json::to_string(claims),
    }
    .expect("claims always serialise");
    let mut stdout = io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "{}",
                json!({"error": "output_failed", "message": format!("cannot write to stdout: {e}")})
            );
            ExitCode::FAILURE
        }
    }
}

/// Prints `error` as one line of JSON on stderr and returns its exit code.
pub fn fail(error: &CoordError) -> ExitCode {
    let mut body = json!({
        "error": error.kind().as_str(),
        "message": error.to_string(),
    });
    let extra: Vec<(&str, Value)> = match error {
        CoordError::Conflict {
            work_type,
            conflicting_work_item_id,
        } => vec![
            ("work_type", json!(work_type)),
            ("conflicting_work_item_id", json!(conflicting_work_item_id)),
        ],
        CoordError::NotFound { work_item_id } => vec![("work_item_id", json!(work_item_id))],
        CoordError::LockTimeout { path, waited } => vec![
            ("path", json!(path.display().to_string())),
            ("waited_ms", json!(waited.as_millis() as u64)),
        ],
        CoordError::FileRead { path, .. } | CoordError::AtomicWriteFailed { path, .. } => {
            vec![("path", json!(path.display().to_string()))]
        }
        _ => Vec::new(),
    };
    for (key, value) in extra {
        body[key] = value;
    }
    let _ = writeln!(io::stderr().lock(), "{body}");
    ExitCode::from(exit_code(error.kind()))
}
