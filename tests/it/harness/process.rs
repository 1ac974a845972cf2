//! Child processes that cannot outlive their test, and polling with a deadline.

use std::fmt::Display;
use std::ops::{Deref, DerefMut};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// How long [`eventually`] waits between two looks.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A child process that is killed and reaped when dropped, so a failing assertion (or
/// any other panic) never leaks it. Dereferences to the [`Child`].
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    /// Guard an already spawned `child`.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard(Some(child))
    }

    /// Wait for the process to exit on its own and collect what it printed, as
    /// [`Child::wait_with_output`] does (the guard is spent: nothing is left to kill).
    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        self.0
            .take()
            .expect("the child is present until consumed")
            .wait_with_output()
    }
}

impl Deref for ChildGuard {
    type Target = Child;

    fn deref(&self) -> &Child {
        self.0
            .as_ref()
            .expect("the child is present until consumed")
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        self.0
            .as_mut()
            .expect("the child is present until consumed")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// [`Command::spawn`], returning a [`ChildGuard`].
pub trait SpawnGuarded {
    /// Spawn the command; the process is killed when the guard drops.
    fn spawn_guarded(&mut self) -> std::io::Result<ChildGuard>;
}

impl SpawnGuarded for Command {
    fn spawn_guarded(&mut self) -> std::io::Result<ChildGuard> {
        self.spawn().map(ChildGuard::new)
    }
}

/// What one look of [`eventually`] found: `Some(value)`/`Ok(value)` when done; `None`, or
/// `Err(observation)` to have the observation in the panic message if it stays that way.
pub trait Attempt<T> {
    /// The value when done, otherwise what was observed (if anything).
    fn outcome(self) -> Result<T, Option<String>>;
}

impl<T> Attempt<T> for Option<T> {
    fn outcome(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, O: Display> Attempt<T> for Result<T, O> {
    fn outcome(self) -> Result<T, Option<String>> {
        self.map_err(|seen| Some(seen.to_string()))
    }
}

/// Look with `f` every 20 ms until it yields a value and return it; after `deadline` (with
/// one last look), panic naming `what` should have happened and the last observation.
pub fn eventually<T, A: Attempt<T>>(what: &str, deadline: Duration, mut f: impl FnMut() -> A) -> T {
    let end = Instant::now() + deadline;
    loop {
        let seen = match f().outcome() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if Instant::now() >= end {
            match seen {
                Some(seen) => panic!("{what}: not within {deadline:?}; last seen:\n{seen}"),
                None => panic!("{what}: not within {deadline:?}"),
            }
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Wait until process `pid` has exited (gone, or a zombie awaiting its parent); panics
/// after `within`.
pub fn wait_exit(pid: u32, within: Duration) {
    eventually(
        &format!("process {pid} exits"),
        within,
        || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => Some(()),
            Ok(stat) => {
                let state = stat
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next());
                (state == Some("Z")).then_some(())
            }
        },
    );
}
