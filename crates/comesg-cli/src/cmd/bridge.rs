//! `comesg bridge`: hands over to the `comesg-bridge` program, which lives
//! in its own crate so that nothing else pays for Zenoh.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use super::Outcome;

/// `comesg-bridge` beside this program, or on `PATH`.
fn bridge_program() -> Option<PathBuf> {
    let beside = std::env::current_exe().ok()?.parent()?.join("comesg-bridge");
    if beside.exists() {
        return Some(beside);
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| PathBuf::from(d).join("comesg-bridge")).find(|p| p.exists())
}

/// Replaces this process with `comesg-bridge ARGS`.
pub fn run(args: Vec<OsString>) -> Outcome {
    let Some(program) = bridge_program() else {
        eprintln!(
            "comesg: comesg-bridge is not built; build it with `cargo build --release -p comesg-bridge` \
             (it sits beside comesg in target/release)"
        );
        return Ok(ExitCode::FAILURE);
    };
    let err = std::process::Command::new(&program).args(args).exec();
    Err(format!("cannot run {}: {err}", program.display()).into())
}
