//! Starting the child: its environment, and the guarantee that it dies with
//! the runner.

use std::ffi::OsString;
use std::io::{self, PipeReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use crate::spawn::{self, Child};

/// The longest `result` taken from the child's last line of output.
const RESULT_MAX_CHARS: usize = 200;

/// Starts `argv` with `env` added to the runner's environment (and no
/// `COORD_IDEMPOTENCY_KEY`). With `capture`, its stdout is piped and
/// returned (see [`Output`]); otherwise it is inherited.
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

/// The child's captured stdout, passed on to ours line by line as it
/// comes (whole lines, so slots' outputs do not interleave mid-line), and
/// its last non-empty line (trimmed, at most 200 characters): read by the
/// thread that watches the child, when the pipe has something.
#[derive(Debug)]
pub(crate) struct Output {
    pipe: PipeReader,
    /// Bytes of a line not ended yet.
    partial: Vec<u8>,
    last: Option<String>,
    ended: bool,
}

impl Output {
    pub fn new(pipe: PipeReader) -> Output {
        Output {
            pipe,
            partial: Vec::new(),
            last: None,
            ended: false,
        }
    }

    /// What to poll: `None` once the child (and whoever shares its stdout)
    /// closed it.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        (!self.ended).then(|| self.pipe.as_fd())
    }

    /// One read (which blocks only if nothing is there): passes on the
    /// lines it completes.
    pub fn read_some(&mut self) {
        let mut buffer = [0u8; 8192];
        let n = match self.pipe.read(&mut buffer) {
            Ok(0) | Err(_) => {
                self.ended = true;
                0
            }
            Ok(n) => n,
        };
        self.partial.extend_from_slice(&buffer[..n]);
        let whole = match self.partial.iter().rposition(|&b| b == b'\n') {
            Some(end) if !self.ended => end + 1,
            _ if self.ended => self.partial.len(),
            _ => return,
        };
        let lines: Vec<u8> = self.partial.drain(..whole).collect();
        // A closed stdout on our side must not block the child.
        let mut out = io::stdout().lock();
        let _ = out.write_all(&lines).and_then(|()| out.flush());
        if let Some(line) = lines
            .rsplit(|&b| b == b'\n')
            .map(String::from_utf8_lossy)
            .find(|line| !line.trim().is_empty())
        {
            self.last = Some(line.trim().chars().take(RESULT_MAX_CHARS).collect());
        }
    }

    /// Reads to the end (the child has exited; its own children may still
    /// hold its stdout), and returns the last line.
    pub fn finish(mut self) -> Option<String> {
        while !self.ended {
            self.read_some();
        }
        self.last
    }
}
