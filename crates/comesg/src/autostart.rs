//! Starting a microkernel in the background when none answers.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::Error;

/// Starts `exe kernel --socket SOCKET --idle-exit SECS` detached from the
/// caller (own process group, no terminal), logging to `log`. Does not wait:
/// if another kernel wins the race for the socket's lock, this one exits.
pub(crate) fn spawn_kernel(exe: &Path, socket: &Path, idle_exit: Duration, log: &Path) -> Result<(), Error> {
    use std::os::unix::process::CommandExt;
    comesg_kernel::paths::prepare_dir(socket, false)?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut child = Command::new(exe)
        .arg("kernel")
        .arg("--socket")
        .arg(socket)
        .arg("--idle-exit")
        .arg(idle_exit.as_secs_f64().to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    // Reap it when it exits so it does not linger as a zombie of ours.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}
