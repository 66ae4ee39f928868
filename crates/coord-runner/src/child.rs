//! Starting the child: its environment, and the guarantee that it dies with
//! the runner.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread::{self, JoinHandle};

/// The longest `result` taken from the child's last line of output.
const RESULT_MAX_CHARS: usize = 200;

/// Starts `argv` with `env` added (and no `COORD_IDEMPOTENCY_KEY`). With `capture`, its stdout is piped
/// (see [`pass_through`]); otherwise it is inherited.
///
/// The child gets SIGKILL when the runner's thread that started it dies,
/// even by SIGKILL (Linux `PR_SET_PDEATHSIG`), so a killed runner never
/// leaves an orphan. Grandchildren the child starts are its own business.
#[allow(unsafe_code)]
pub(crate) fn spawn(argv: &[OsString], env: &[(&str, String)], capture: bool) -> io::Result<Child> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no command to run"))?;
    let mut command = Command::new(program);
    command.args(args).envs(env.iter().map(|(k, v)| (k, v)));
    // A key the runner was given names the runner's call, not the child's:
    // the child's own coord calls would all be answered as that one.
    command.env_remove("COORD_IDEMPOTENCY_KEY");
    if capture {
        command.stdout(Stdio::piped());
    }
    let runner = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (prctl, getppid); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // The runner may have died between fork and prctl.
            if rustix::process::getppid() != Some(runner) {
                return Err(io::Error::from_raw_os_error(
                    rustix::io::Errno::SRCH.raw_os_error(),
                ));
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Copies the child's stdout to ours as it comes, and returns its last
/// non-empty line (trimmed, at most 200 characters) when the child closes it.
pub(crate) fn pass_through(stdout: ChildStdout) -> JoinHandle<Option<String>> {
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
