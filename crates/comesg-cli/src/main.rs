//! `comesg`: run the microkernel, look at and act on its namespace, measure.

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// comesg: fast, capability-style IPC on Linux.
#[derive(Debug, Parser)]
#[command(name = "comesg", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where to reach the microkernel.
#[derive(Debug, Clone, clap::Args)]
pub struct SocketArg {
    /// Control socket (default: $COMESG_SOCKET, $XDG_RUNTIME_DIR/comesg/kernel.sock,
    /// or /tmp/comesg-$UID/kernel.sock). A kernel is started there if none answers.
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the microkernel in the foreground.
    Kernel(cmd::kernel::Args),
    /// List the namespace tree: kind, mode, references, holders, queue depth.
    Ls(cmd::ls::Args),
    /// Create a persistent port.
    Create(cmd::create::Args),
    /// Remove a name.
    Unlink(cmd::create::UnlinkArgs),
    /// Send messages: each DATA argument, or each line of stdin.
    Send(cmd::send::Args),
    /// Receive messages and print one per line.
    Recv(cmd::recv::Args),
    /// Print what happens to an object, live: holders gone, no more senders
    /// or receivers, name unlinked, destroyed, service gone.
    Watch(cmd::watch::Args),
    /// Call a service: one call per DATA argument; prints each response.
    Call(cmd::call::CallArgs),
    /// Register a service and serve it (echo, or upper-case) until killed.
    Serve(cmd::call::ServeArgs),
    /// Measure comesg against the baselines (spin, futex, pipe, seqpacket, memcpy).
    Bench(cmd::bench::Args),
    /// A one-minute guided tour: processes talking through every port kind.
    Tour(cmd::tour::Args),
    /// Export ports and services to other hosts and import theirs, over
    /// Zenoh (runs `comesg-bridge`, built with `cargo build -p comesg-bridge`).
    #[command(disable_help_flag = true)]
    Bridge {
        /// Arguments for comesg-bridge (`comesg bridge --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Helper processes for benchmarks and tests.
    #[command(name = "__peer", hide = true)]
    Peer(cmd::peer::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Kernel(a) => cmd::kernel::run(a),
        Command::Ls(a) => cmd::ls::run(a),
        Command::Create(a) => cmd::create::run(a),
        Command::Unlink(a) => cmd::create::unlink(a),
        Command::Send(a) => cmd::send::run(a),
        Command::Recv(a) => cmd::recv::run(a),
        Command::Watch(a) => cmd::watch::run(a),
        Command::Call(a) => cmd::call::call(a),
        Command::Serve(a) => cmd::call::serve(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Tour(a) => cmd::tour::run(a),
        Command::Bridge { args } => cmd::bridge::run(args),
        Command::Peer(a) => cmd::peer::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("comesg: {e}");
            ExitCode::FAILURE
        }
    }
}
