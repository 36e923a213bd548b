//! Where the control socket lives (DESIGN §2).

use std::io;
use std::path::{Path, PathBuf};

/// Environment variable that overrides the socket path.
pub const SOCKET_ENV: &str = "COMESG_SOCKET";

/// The control socket path: `$COMESG_SOCKET`, else
/// `$XDG_RUNTIME_DIR/comesg/kernel.sock`, else `/tmp/comesg-$UID/kernel.sock`.
pub fn default_socket_path() -> PathBuf {
    if let Some(p) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        return Path::new(&d).join("comesg").join("kernel.sock");
    }
    PathBuf::from(format!("/tmp/comesg-{}/kernel.sock", comesg_sys::process::uid()))
}

/// The lock file beside a socket.
pub fn lock_path(socket: &Path) -> PathBuf {
    let mut s = socket.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Creates the socket's directory if it is missing (mode 0700, or 0755 for
/// a kernel `shared` by every user, which also opens up a directory of ours
/// that is 0700), and refuses a directory that another user owns or others
/// can write, since whoever controls the directory controls which socket
/// clients reach.
pub fn prepare_dir(socket: &Path, shared: bool) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let mode = if shared { 0o755 } else { 0o700 };
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(mode).create(dir)?;
    }
    let md = std::fs::metadata(dir)?;
    if shared && md.uid() == comesg_sys::process::uid() && md.mode() & 0o055 != 0o055 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode((md.mode() & 0o7777) | 0o055))?;
    }
    let me = comesg_sys::process::uid();
    let sticky = md.mode() & 0o1000 != 0;
    if md.uid() != me && md.uid() != 0 {
        return Err(io::Error::other(format!("{} belongs to uid {}, not to us", dir.display(), md.uid())));
    }
    if md.mode() & 0o022 != 0 && !sticky {
        return Err(io::Error::other(format!("{} is writable by others", dir.display())));
    }
    Ok(())
}
