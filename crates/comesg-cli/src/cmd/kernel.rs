//! `comesg kernel`: the microkernel in the foreground.

use std::process::ExitCode;
use std::time::Duration;

use comesg::{Kernel, KernelConfig, Limits, UserLimits};

use super::Outcome;
use crate::SocketArg;

/// Arguments of `comesg kernel`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    socket: SocketArg,
    /// Exit after this many seconds with no clients and no objects.
    #[arg(long)]
    idle_exit: Option<f64>,
    /// Log filter (tracing's EnvFilter syntax); also $COMESG_LOG.
    #[arg(long, default_value = "info")]
    log: String,
    /// Serve every user of this machine (the socket becomes connectable by
    /// all; names' owners and modes decide the rest; each user gets a
    /// private namespace /user/UID). Run it as a dedicated user or root.
    #[arg(long)]
    shared: bool,
    /// Most connections one user may have open at once.
    #[arg(long, default_value_t = UserLimits::default().connections)]
    max_connections_per_user: usize,
    /// Most live objects one user may have created.
    #[arg(long, default_value_t = UserLimits::default().objects)]
    max_objects_per_user: usize,
    /// Most handles one user may hold over all its connections.
    #[arg(long, default_value_t = UserLimits::default().handles)]
    max_handles_per_user: usize,
    /// Most MiB of shared memory in the objects one user created.
    #[arg(long, default_value_t = UserLimits::default().memory >> 20)]
    max_memory_per_user_mib: u64,
    /// Most connections open at once, all users together.
    #[arg(long, default_value_t = Limits::default().max_clients)]
    max_clients: usize,
    /// Most live objects, all users together.
    #[arg(long, default_value_t = Limits::default().max_objects)]
    max_objects: usize,
    /// Most handles one connection may hold.
    #[arg(long, default_value_t = Limits::default().max_handles_per_client)]
    max_handles_per_client: usize,
    /// Most handles per side of one channel (also the callers of one
    /// service), 1..=65536.
    #[arg(long, default_value_t = Limits::default().max_holders_per_channel,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    max_holders_per_channel: u32,
}

pub fn run(a: Args) -> Outcome {
    let filter = std::env::var("COMESG_LOG").unwrap_or(a.log);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Nobody (of this user) may ptrace the microkernel or write its memory:
    // it holds the one writable mapping of every carrier's arena.
    if let Err(e) = comesg_sys::process::set_not_dumpable() {
        tracing::warn!("cannot make the kernel undumpable ({e}): same-user processes could write carrier arenas");
    }
    let mut config = KernelConfig::new(a.socket.path());
    config.idle_exit = a.idle_exit.filter(|s| *s > 0.0).map(Duration::from_secs_f64);
    config.shared = a.shared;
    config.limits.max_clients = a.max_clients;
    config.limits.max_objects = a.max_objects;
    config.limits.max_handles_per_client = a.max_handles_per_client;
    config.limits.max_holders_per_channel = a.max_holders_per_channel;
    config.limits.per_user = UserLimits {
        connections: a.max_connections_per_user,
        objects: a.max_objects_per_user,
        handles: a.max_handles_per_user,
        memory: a.max_memory_per_user_mib.saturating_mul(1 << 20),
    };
    match Kernel::bind(config) {
        Ok(k) => {
            k.run()?;
            Ok(ExitCode::SUCCESS)
        }
        Err(comesg::KernelStartError::AlreadyRunning(p)) => {
            tracing::info!("a kernel already serves {}; leaving it to that one", p.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e.into()),
    }
}
