//! Starting a child without copying the runner.
//!
//! `std::process::Command` with a `pre_exec` hook (the only way it offers to
//! set the parent-death signal) forks: the kernel copies the runner's page
//! tables, and every page either side then writes faults and is copied, with
//! a TLB shootdown across the runner's threads. Under eight busy slots that
//! was most of a worker's CPU. `posix_spawn` avoids the copy but cannot set
//! the parent-death signal. So the child is started here the way glibc's
//! `posix_spawn` starts one: `clone(CLONE_VM | CLONE_VFORK)` on a stack of
//! its own, the child borrowing the runner's memory until it execs (the
//! calling thread waits until then), and doing only async-signal-safe
//! system calls on data prepared beforehand:
//!
//! 1. every signal the runner handles goes back to its default action, and
//!    SIGPIPE too (Rust ignores it), before any signal is let through: a
//!    handler run by the child would run on the runner's memory;
//! 2. the parent-death signal (SIGKILL when the runner's thread dies), then
//!    a check that the runner did not die before it was set;
//! 3. stdout onto the capture pipe, if any;
//! 4. an empty signal mask, as `std` gives its children;
//! 5. `execvpe` (a `PATH` search, scripts without `#!` run by `/bin/sh`).
//!
//! A failure before the exec is written to memory the runner reads once the
//! child has gone: `spawn` returns it as the error it was.

#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, OsString, c_char, c_int, c_void};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::ptr;

use rustix::process::{Pid, Signal, WaitOptions};

/// What the child needs, prepared by the runner (the child allocates
/// nothing), and where it reports a failure.
struct Start {
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    /// The write end of the capture pipe, or -1.
    stdout: c_int,
    /// The runner's pid, to check after setting the parent-death signal.
    runner: libc::pid_t,
    /// The highest signal number (`SIGRTMAX`, a library call made here).
    last_signal: c_int,
    /// The `errno` of the step that failed, 0 if the exec happened.
    error: c_int,
}

/// A started child, waited for by [`Child::try_wait`] or [`Child::wait`].
#[derive(Debug)]
pub(crate) struct Child {
    pid: Pid,
    /// Set once reaped: the pid is no longer ours to signal.
    status: Option<ExitStatus>,
}

impl Child {
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Its exit status if it has ended (reaping it), without blocking.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.reap(WaitOptions::NOHANG)
    }

    /// Waits until it ends.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.reap(WaitOptions::empty())? {
                return Ok(status);
            }
        }
    }

    fn reap(&mut self, options: WaitOptions) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        match rustix::process::waitpid(Some(self.pid), options) {
            Ok(Some((_, status))) => {
                let status = ExitStatus::from_raw(status.as_raw());
                self.status = Some(status);
                Ok(Some(status))
            }
            Ok(None) | Err(rustix::io::Errno::INTR) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends `signal`, unless it has been reaped (its pid may be another's).
    pub fn signal(&self, signal: Signal) {
        if self.status.is_none() {
            // It may have exited unreaped: then there is nothing to stop.
            let _ = rustix::process::kill_process(self.pid, signal);
        }
    }
}

/// Starts `program` (looked up in `PATH` unless it names a path) with
/// `args` and exactly the environment `env` (each `KEY=value`), its stdout
/// on `stdout` if given, stdin and stderr the runner's; it gets SIGKILL
/// when the calling thread dies.
pub(crate) fn spawn(
    program: &OsStr,
    args: &[OsString],
    env: &[OsString],
    stdout: Option<&OwnedFd>,
) -> io::Result<Child> {
    let program = c_string(program)?;
    let argv = std::iter::once(Ok(program.clone()))
        .chain(args.iter().map(|a| c_string(a)))
        .collect::<io::Result<Vec<_>>>()?;
    let envp = env
        .iter()
        .map(|e| c_string(e))
        .collect::<io::Result<Vec<_>>>()?;
    let argv_ptrs = null_terminated(&argv);
    let envp_ptrs = null_terminated(&envp);
    let mut start = Start {
        program: program.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        stdout: stdout.map_or(-1, AsRawFd::as_raw_fd),
        runner: rustix::process::getpid().as_raw_nonzero().get(),
        last_signal: libc::SIGRTMAX(),
        error: 0,
    };
    // The child's stack: what `execvpe` needs (a path buffer, and for a
    // script a copy of the arguments' pointers) with room to spare. `u128`
    // keeps it aligned to 16 bytes, as the ABI wants.
    let stack_bytes = 64 * 1024 + 16 * argv.len();
    let mut stack = vec![0u128; stack_bytes / 16];

    // SAFETY: every pointer in `start` points at data that lives until this
    // function returns, and the child is done with it before `clone`
    // returns (CLONE_VFORK: this thread waits until the child execs or
    // exits). The child runs on its own stack and touches nothing else of
    // ours but `start.error`. All signals are blocked around the clone, so
    // no handler can run in the child before it has reset them.
    let pid = unsafe {
        let stack_top = stack.as_mut_ptr().add(stack.len()).cast::<c_void>();
        let mut all = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigfillset(all.as_mut_ptr());
        let mut saved = MaybeUninit::<libc::sigset_t>::uninit();
        libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), saved.as_mut_ptr());
        let pid = libc::clone(
            child_main,
            stack_top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            ptr::from_mut(&mut start).cast::<c_void>(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, saved.as_ptr(), ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    drop(stack);
    let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::other("clone returned pid 0"))?;
    let mut child = Child { pid, status: None };
    // SAFETY: the child wrote it (if at all) before this thread resumed.
    let error = unsafe { ptr::read_volatile(&raw const start.error) };
    if error != 0 {
        // It exited with 127 without exec'ing: reap it, report why.
        let _ = child.wait();
        return Err(io::Error::from_raw_os_error(error));
    }
    Ok(child)
}

/// The child, between `clone` and `execvpe`: system calls only, on the
/// runner's memory (see the module's doc).
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Start` the runner keeps alive, and only this
    // child touches it until the runner resumes.
    unsafe {
        let start = &mut *arg.cast::<Start>();
        let error = prepare_and_exec(start);
        ptr::write_volatile(&raw mut start.error, error);
        libc::_exit(127)
    }
}

/// Returns the `errno` of the step that failed (it returns only then).
unsafe fn prepare_and_exec(start: &Start) -> c_int {
    // SAFETY: async-signal-safe calls on memory prepared by the runner.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for signal in 1..=start.last_signal {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, ptr::null(), &mut current) != 0 {
                continue; // SIGKILL, SIGSTOP, the C library's own.
            }
            let handled =
                current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN;
            if handled || signal == libc::SIGPIPE {
                libc::sigaction(signal, &default, ptr::null_mut());
            }
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return errno();
        }
        // The runner may have died before the line above.
        if libc::getppid() != start.runner {
            return libc::ESRCH;
        }
        if start.stdout >= 0 {
            let moved = if start.stdout == libc::STDOUT_FILENO {
                // Already in place: only let it survive the exec.
                libc::fcntl(start.stdout, libc::F_SETFD, 0)
            } else {
                libc::dup2(start.stdout, libc::STDOUT_FILENO)
            };
            if moved < 0 {
                return errno();
            }
        }
        let mut empty = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(empty.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, empty.as_ptr(), ptr::null_mut());
        libc::execvpe(start.program, start.argv, start.envp);
        errno()
    }
}

fn errno() -> c_int {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL)
}

fn c_string(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s:?} contains a NUL byte"),
        )
    })
}

/// The pointers of `strings`, then a null one, as `execve` takes them.
fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn run(argv: &[&str], env: &[&str]) -> io::Result<(ExitStatus, String)> {
        let (mut reader, writer) = io::pipe()?;
        let writer = OwnedFd::from(writer);
        let args: Vec<OsString> = argv[1..].iter().map(OsString::from).collect();
        let env: Vec<OsString> = env.iter().map(OsString::from).collect();
        let mut child = spawn(OsStr::new(argv[0]), &args, &env, Some(&writer))?;
        drop(writer);
        let mut out = String::new();
        reader.read_to_string(&mut out)?;
        Ok((child.wait()?, out))
    }

    #[test]
    fn the_child_gets_its_arguments_exactly_its_environment_and_the_pipe() {
        let (status, out) = run(
            &[
                "sh",
                "-c",
                "echo \"$1|$ONLY|${HOME:-no home}\"",
                "sh",
                "a b",
            ],
            &["ONLY=this", "PATH=/usr/bin:/bin"],
        )
        .unwrap();
        assert!(status.success());
        assert_eq!(out, "a b|this|no home\n");
    }

    #[test]
    fn exit_codes_and_signals_come_back_as_statuses() {
        let (status, _) = run(&["sh", "-c", "exit 3"], &[]).unwrap();
        assert_eq!(status.code(), Some(3));
        let (status, _) = run(&["sh", "-c", "kill -9 $$"], &[]).unwrap();
        assert_eq!(status.signal(), Some(9));
    }

    #[test]
    fn a_program_that_cannot_start_is_an_error_of_its_own_kind() {
        let e = run(&["/nonexistent/coord-test-program"], &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let e = run(&["/"], &[]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
        let e = run(&["sh", "-c", "echo\0x"], &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }

    #[test]
    fn the_child_starts_with_no_signal_blocked_or_handled_and_sigpipe_at_its_default() {
        // `cat` reads its own status; it installs no handlers.
        let (status, out) = run(&["cat", "/proc/self/status"], &["PATH=/usr/bin:/bin"]).unwrap();
        assert!(status.success(), "{out}");
        let mask = |name: &str| {
            let line = out.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        assert_eq!(mask("SigBlk:"), 0, "{out}");
        assert_eq!(mask("SigCgt:"), 0, "{out}");
        let sigpipe = 1 << (libc::SIGPIPE - 1);
        assert_eq!(mask("SigIgn:") & sigpipe, 0, "{out}");
    }
}
