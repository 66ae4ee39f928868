//! Starting the child: its environment, and the guarantee that it dies with
//! the runner.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, PipeReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::thread::{self, JoinHandle};

use crate::spawn::{self, Child};

/// The longest `result` taken from the child's last line of output.
const RESULT_MAX_CHARS: usize = 200;

/// Starts `argv` with `env` added to the runner's environment (and no
/// `COORD_IDEMPOTENCY_KEY`). With `capture`, its stdout is piped and
/// returned (see [`pass_through`]); otherwise it is inherited.
///
/// The child gets SIGKILL when the runner's thread that started it dies,
/// even by SIGKILL (Linux `PR_SET_PDEATHSIG`), so a killed runner never
/// leaves an orphan. Grandchildren the child starts are its own business.
/// It is started without copying the runner (see [`crate::spawn`]).
pub(crate) fn spawn(
    argv: &[OsString],
    env: &[(&str, String)],
    capture: bool,
) -> io::Result<(Child, Option<PipeReader>)> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no command to run"))?;
    // A key the runner was given names the runner's call, not the child's:
    // the child's own coord calls would all be answered as that one.
    let replaced = |key: &[u8]| {
        key == b"COORD_IDEMPOTENCY_KEY" || env.iter().any(|(k, _)| k.as_bytes() == key)
    };
    let mut environment: Vec<OsString> = std::env::vars_os()
        .filter(|(key, _)| !replaced(key.as_bytes()))
        .map(|(key, value)| entry(&key, &value))
        .collect();
    environment.extend(env.iter().map(|(k, v)| entry(k.as_ref(), v.as_ref())));
    let (reader, writer) = if capture {
        let (reader, writer) = io::pipe()?;
        (Some(reader), Some(std::os::fd::OwnedFd::from(writer)))
    } else {
        (None, None)
    };
    let child = spawn::spawn(program, args, &environment, writer.as_ref())?;
    // Our copy of the write end closes here, so the reader sees the end of
    // the child's output when the child (and its children) close theirs.
    drop(writer);
    Ok((child, reader))
}

/// `KEY=value`, as an environment entry.
fn entry(key: &std::ffi::OsStr, value: &std::ffi::OsStr) -> OsString {
    let mut entry = OsString::with_capacity(key.len() + value.len() + 1);
    entry.push(key);
    entry.push("=");
    entry.push(value);
    entry
}

/// Copies the child's stdout to ours as it comes, and returns its last
/// non-empty line (trimmed, at most 200 characters) when the child closes it.
pub(crate) fn pass_through(stdout: PipeReader) -> JoinHandle<Option<String>> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut out = io::stdout();
        let mut last = None;
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    // A closed stdout on our side must not block the child.
                    let _ = out.write_all(&line).and_then(|()| out.flush());
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim();
                    if !text.is_empty() {
                        last = Some(text.chars().take(RESULT_MAX_CHARS).collect());
                    }
                }
            }
        }
        last
    })
}
