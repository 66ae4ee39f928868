//! Signals: forwarded to the child (`coord run`), or a request to stop
//! (`coord work`).

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

/// A stop request that sleepers can wait on. The first request asks for a
/// graceful stop; the second for an immediate one.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    state: Arc<(Mutex<ShutdownState>, Condvar)>,
}

#[derive(Debug, Default)]
struct ShutdownState {
    requests: u32,
    /// Signals to forward to running children (`coord run`).
    forwarded: Vec<i32>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everything waiting on this to stop.
    pub fn request(&self) {
        let (lock, cvar) = &*self.state;
        lock.lock().expect("not poisoned").requests += 1;
        cvar.notify_all();
    }

    pub fn is_requested(&self) -> bool {
        self.requests() > 0
    }

    /// Asked twice: stop now, without grace.
    pub fn is_urgent(&self) -> bool {
        self.requests() > 1
    }

    fn requests(&self) -> u32 {
        self.state.0.lock().expect("not poisoned").requests
    }

    /// Sleeps up to `timeout`; returns early (true) if a stop is requested.
    pub fn wait(&self, timeout: Duration) -> bool {
        let (lock, cvar) = &*self.state;
        let guard = lock.lock().expect("not poisoned");
        let (guard, _) = cvar
            .wait_timeout_while(guard, timeout, |s| s.requests == 0)
            .expect("not poisoned");
        guard.requests > 0
    }

    fn forward(&self, signal: i32) {
        self.state
            .0
            .lock()
            .expect("not poisoned")
            .forwarded
            .push(signal);
    }

    /// Signals received for the child since the last call.
    pub(crate) fn take_forwarded(&self) -> Vec<i32> {
        std::mem::take(&mut self.state.0.lock().expect("not poisoned").forwarded)
    }
}

/// What a received SIGTERM, SIGINT, SIGHUP or SIGQUIT means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalMode {
    /// Pass it on to the child (`coord run`): the child decides.
    Forward,
    /// Stop taking work; a second one stops at once (`coord work`).
    Stop,
}

/// Watches the usual stop signals in a background thread until the handle
/// is closed.
pub fn watch_signals(shutdown: &Shutdown, mode: SignalMode) -> std::io::Result<Handle> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGQUIT])?;
    let handle = signals.handle();
    let shutdown = shutdown.clone();
    thread::Builder::new()
        .name("coord-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                match mode {
                    SignalMode::Forward => shutdown.forward(signal),
                    SignalMode::Stop => shutdown.request(),
                }
            }
        })?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_request_wakes_a_sleeper_and_twice_is_urgent() {
        let shutdown = Shutdown::new();
        let sleeper = {
            let s = shutdown.clone();
            thread::spawn(move || {
                let started = Instant::now();
                (s.wait(Duration::from_secs(10)), started.elapsed())
            })
        };
        thread::sleep(Duration::from_millis(50));
        assert!(!shutdown.is_requested());
        shutdown.request();
        let (woken, waited) = sleeper.join().unwrap();
        assert!(woken && waited < Duration::from_secs(5));
        assert!(!shutdown.is_urgent());
        shutdown.request();
        assert!(shutdown.is_urgent());
        assert!(!Shutdown::new().wait(Duration::from_millis(10)));
    }
}
