//! Several users on one microkernel: a kernel run by root with `--shared`,
//! and two unprivileged users (created here) as real processes under
//! `setpriv`. Each user's private namespace is closed to the other, object
//! modes decide who may send and receive, and a user holding a read-only
//! fd cannot turn it into write access by any of the usual tricks.
//!
//! Needs root (to add the users and run the kernel for everyone); skips,
//! saying so, otherwise.

mod util;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::Command;
use std::sync::OnceLock;

use util::{text, KernelProc};

/// Two unprivileged users, made once per test run: (uid, gid) each.
fn users() -> Option<[(u32, u32); 2]> {
    static USERS: OnceLock<Option<[(u32, u32); 2]>> = OnceLock::new();
    *USERS.get_or_init(|| {
        if comesg_sys::process::uid() != 0 {
            eprintln!("SKIP: the multi-user tests need root (to create users and serve them)");
            return None;
        }
        let mut ids = Vec::new();
        for name in ["comesg-it-a", "comesg-it-b"] {
            let exists = Command::new("id").arg("-u").arg(name).output().is_ok_and(|o| o.status.success());
            if !exists {
                let st = Command::new("useradd")
                    .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
                    .status();
                if !st.is_ok_and(|s| s.success()) {
                    eprintln!("SKIP: useradd {name} failed");
                    return None;
                }
            }
            let id = |flag: &str| -> Option<u32> {
                let o = Command::new("id").arg(flag).arg(name).output().ok()?;
                String::from_utf8_lossy(&o.stdout).trim().parse().ok()
            };
            ids.push((id("-u")?, id("-g")?));
        }
        Some([ids[0], ids[1]])
    })
}

/// `setpriv` arguments that run a command as `(uid, gid)` with no
/// supplementary groups and no capabilities.
fn as_user((uid, gid): (u32, u32)) -> Vec<std::ffi::OsString> {
    ["setpriv", &format!("--reuid={uid}"), &format!("--regid={gid}"), "--clear-groups", "--inh-caps=-all", "--"]
        .iter()
        .map(|s| s.into())
        .collect()
}

fn run_as(k: &KernelProc, who: (u32, u32), args: &[&str]) -> std::process::Output {
    let prefix = as_user(who);
    let prefix: Vec<&OsStr> = prefix.iter().map(|s| s.as_os_str()).collect();
    k.cli_as(&prefix, args)
}

/// Its stdout and stderr.
fn all(o: &std::process::Output) -> String {
    format!("{}{}", text(o), String::from_utf8_lossy(&o.stderr))
}

fn denied(o: &std::process::Output) -> bool {
    !o.status.success() && all(o).to_lowercase().contains("permission denied")
}

#[test]
fn each_user_has_a_private_namespace() {
    let Some([a, b]) = users() else { return };
    let k = KernelProc::start_with_args("users-home", &["--shared"]);
    let home_a = format!("/user/{}", a.0);
    let home_b = format!("/user/{}", b.0);
    let q = format!("{home_a}/q");
    let o = run_as(&k, a, &["create", &q, "--kind", "channel"]);
    assert!(o.status.success(), "A creates in its own namespace: {}", all(&o));
    let o = run_as(&k, a, &["ls", &home_a]);
    assert!(o.status.success() && all(&o).contains(&q), "A lists its namespace: {}", all(&o));

    // B can neither list A's namespace, nor open, send to or create in it,
    // nor even list who has a namespace.
    for args in [
        vec!["ls", home_a.as_str()],
        vec!["ls", "/user"],
        vec!["send", q.as_str(), "hello"],
        vec!["recv", q.as_str(), "--timeout", "1"],
        vec!["create", &format!("{home_a}/mine")[..], "--kind", "channel"],
        vec!["unlink", q.as_str()],
        vec!["create", "/top-level", "--kind", "channel"],
    ] {
        let o = run_as(&k, b, &args);
        assert!(denied(&o), "B {args:?} must be refused: {}", all(&o));
    }
    let o = run_as(&k, b, &["create", &format!("{home_b}/q"), "--kind", "channel"]);
    assert!(o.status.success(), "B creates in its own namespace: {}", all(&o));
    // And A's channel is untouched.
    let o = run_as(&k, a, &["send", &q, "still mine"]);
    assert!(o.status.success(), "{}", all(&o));
    let o = run_as(&k, a, &["recv", &q, "--count", "1", "--timeout", "5"]);
    assert!(o.status.success() && all(&o).contains("still mine"), "{}", all(&o));
}

#[test]
fn object_modes_decide_who_sends_and_who_receives() {
    let Some([a, b]) = users() else { return };
    let k = KernelProc::start_with_args("users-modes", &["--shared"]);
    // The administrator (root, the kernel's owner) opens a namespace to all.
    k.connect().mkdir("/pub", 0o777).unwrap();
    let o = run_as(&k, a, &["create", "/pub/news", "--kind", "channel", "--mode", "644"]);
    assert!(o.status.success(), "{}", all(&o));
    let o = run_as(&k, a, &["send", "/pub/news", "from A"]);
    assert!(o.status.success(), "{}", all(&o));
    let o = run_as(&k, b, &["send", "/pub/news", "from B"]);
    assert!(denied(&o), "mode 644: B may not send: {}", all(&o));
    let o = run_as(&k, b, &["recv", "/pub/news", "--count", "1", "--timeout", "5"]);
    assert!(o.status.success() && all(&o).contains("from A"), "mode 644: B may receive: {}", all(&o));
    let o = run_as(&k, b, &["unlink", "/pub/news"]);
    assert!(o.status.success() || denied(&o), "{}", all(&o));
}

#[test]
fn a_read_only_fd_cannot_be_turned_into_write_access() {
    let Some([a, b]) = users() else { return };
    let k = KernelProc::start_with_args("users-escalate", &["--shared"]);
    k.connect().mkdir("/pub", 0o777).unwrap();
    for (kind, extra) in [("channel", &[][..]), ("carrier", &["--arena", "1048576", "--max-message", "65536"][..])] {
        let path = format!("/pub/{kind}");
        let mut args = vec!["create", path.as_str(), "--kind", kind, "--mode", "644"];
        args.extend_from_slice(extra);
        let o = run_as(&k, a, &args);
        assert!(o.status.success(), "{}", all(&o));
        let o = run_as(&k, b, &["__peer", "escalate", &path]);
        let out = all(&o);
        assert!(o.status.success() && out.contains("done"), "{out}");
        eprintln!("B attacks the {kind}:\n{out}");
        let attacked = out.lines().filter(|l| l.starts_with("fd ")).count();
        assert!(attacked >= 1, "B received no read-only segment of the {kind} to attack: {out}");
        assert!(!out.contains("ALLOWED"), "B gained write access to the {kind}: {out}");
    }
}

/// A process killed (and reaped) when dropped, even if the test fails.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `comesg __peer ARGS --socket S` as `who`, with its stdout piped.
fn peer_as(k: &KernelProc, who: (u32, u32), args: &[&str]) -> (Killed, BufReader<std::process::ChildStdout>) {
    let prefix = as_user(who);
    let mut child = Command::new(&prefix[0])
        .args(&prefix[1..])
        .arg(util::exe())
        .arg("__peer")
        .args(args)
        .arg("--socket")
        .arg(&k.socket)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (Killed(child), out)
}

#[test]
fn one_user_at_its_limits_does_not_stop_the_others() {
    let Some([a, b]) = users() else { return };
    let k = KernelProc::start_with_args(
        "users-limits",
        &["--shared", "--max-objects-per-user", "3", "--max-connections-per-user", "50"],
    );
    let home_a = format!("/user/{}", a.0);
    for i in 0..3 {
        let o = run_as(&k, a, &["create", &format!("{home_a}/o{i}"), "--kind", "channel"]);
        assert!(o.status.success(), "{}", all(&o));
    }
    let o = run_as(&k, a, &["create", &format!("{home_a}/o3"), "--kind", "channel"]);
    assert!(!o.status.success(), "a fourth object is refused");
    assert!(all(&o).contains("already holds 3 objects, the most one user may"), "a clear error: {}", all(&o));

    // A opens connections until refused, then floods the kernel with pings
    // from eight of them.
    let (flood, mut out) = peer_as(&k, a, &["connect-many", "--count", "500"]);
    let line = |out: &mut BufReader<_>| {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        l.trim().to_string()
    };
    assert_eq!(line(&mut out), "connected 50");
    let refused = line(&mut out);
    assert!(refused.contains("already holds 50 connections"), "{refused}");
    assert_eq!(line(&mut out), "ready");

    // B, meanwhile, is served: it creates, sends, receives and lists.
    let q = format!("/user/{}/q", b.0);
    for args in [
        vec!["create", q.as_str(), "--kind", "channel"],
        vec!["send", q.as_str(), "served"],
        vec!["recv", q.as_str(), "--count", "1", "--timeout", "10"],
        vec!["ls", &format!("/user/{}", b.0)[..]],
    ] {
        let o = run_as(&k, b, &args);
        assert!(o.status.success(), "B {args:?} while A floods: {}", all(&o));
    }
    drop(flood);
    // A's connections are gone with its process: it may connect again.
    let o = run_as(&k, a, &["ls", &home_a]);
    assert!(o.status.success(), "{}", all(&o));
}
