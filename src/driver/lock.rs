//! The local backend's driver lock: at most one driver per evaluation, ever. The service takes an exclusive
//! `flock` on `DIR/driver.lock` before it spawns the driver and hands the open file over as the driver's
//! standard input, so the lock is held without a gap from before the spawn to the driver's end (lm_eval gets
//! `/dev/null` as its input, so nothing else inherits it). The driver writes its pid into the file.
//!
//! Whoever finds the lock held knows a driver lives (and reads its pid once written); a free lock with a pid
//! in the file means the driver ran and is gone; a free, empty lock means no driver ever ran.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::path::Path;

pub const FILE: &str = "driver.lock";

/// Tests only: the service kills itself (as `kill -9` would) at this point of an evaluation's start:
/// `before-spawn`, `after-spawn` (the pid recorded nowhere), `after-pid`; with `before-pid` the driver also waits
/// for SIGUSR1 before it writes its pid into the lock.
pub const TEST_CRASH_AT: &str = "LMEVAL_TEST_CRASH_AT";

/// What the lock of an evaluation's directory says about its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverState {
    /// A driver holds the lock; its pid once it has written it.
    Live(Option<u32>),
    /// A driver ran and has ended.
    Gone,
    /// No driver ever ran.
    NeverStarted,
}

/// The lock, held by the service from before the spawn until the driver has it.
pub struct Held(File);

impl Held {
    /// Takes the lock of the evaluation directory `dir` for a driver about to start; `None` if a driver holds it.
    pub fn take(dir: &Path) -> std::io::Result<Option<Self>> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dir.join(FILE))?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0)?;
                Ok(Some(Self(file)))
            }
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// The lock as the driver's standard input; the service's own descriptor closes when `self` is dropped.
    pub fn for_driver(&self) -> std::io::Result<std::process::Stdio> {
        Ok(self.0.try_clone()?.into())
    }
}

/// Reads the state of the driver of the evaluation directory `dir`.
pub fn probe(dir: &Path) -> std::io::Result<DriverState> {
    let mut file = match OpenOptions::new().read(true).open(dir.join(FILE)) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DriverState::NeverStarted),
        Err(e) => return Err(e),
    };
    let held = match file.try_lock_shared() {
        Ok(()) => false,
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(e)) => return Err(e),
    };
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let pid = text.trim().parse().ok();
    Ok(match (held, pid) {
        (true, pid) => DriverState::Live(pid),
        (false, Some(_)) => DriverState::Gone,
        (false, None) => DriverState::NeverStarted,
    })
}

/// The driver's side: takes over the lock inherited as standard input. Refuses when the lock is held by another
/// open file (another driver).
pub fn hold_from_stdin() -> anyhow::Result<File> {
    let file = File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => anyhow::bail!("another driver of this evaluation is running"),
        Err(TryLockError::Error(e)) => anyhow::bail!("the driver lock on standard input: {e}"),
    }
}

/// Writes this process's pid into the held lock, for a restarted service.
pub fn write_pid(mut file: &File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    write!(file, "{}", std::process::id())?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_tells_a_live_driver_from_one_gone_or_never_started() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(probe(dir.path()).expect("probe"), DriverState::NeverStarted);
        let held = Held::take(dir.path()).expect("take").expect("free");
        assert_eq!(probe(dir.path()).expect("probe"), DriverState::Live(None), "held since before the spawn");
        assert!(Held::take(dir.path()).expect("take").is_none(), "a second start is refused");
        std::fs::write(dir.path().join(FILE), "4242").expect("pid");
        assert_eq!(probe(dir.path()).expect("probe"), DriverState::Live(Some(4242)));
        drop(held);
        assert_eq!(probe(dir.path()).expect("probe"), DriverState::Gone);
        let again = Held::take(dir.path()).expect("take").expect("free again");
        drop(again);
        assert_eq!(probe(dir.path()).expect("probe"), DriverState::NeverStarted, "a new claim starts empty");
    }
}
