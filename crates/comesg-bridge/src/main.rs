//! `comesg-bridge` (also run as `comesg bridge`): export local ports and
//! services to other hosts and import theirs, over Zenoh.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use comesg::Connection;
use comesg_bridge::{Bridge, BridgeConfig, ExportSpec, NetConfig};

/// Make this host's comesg names reachable from other hosts, and theirs
/// from here, over Zenoh (peer to peer, TCP).
#[derive(Debug, Parser)]
#[command(name = "comesg bridge", version, about)]
struct Args {
    /// Control socket of the local microkernel (default: as every comesg
    /// command). A kernel is started there if none answers and `comesg`
    /// is installed beside this program.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// This host's name on the network (default: the system's host name).
    #[arg(long)]
    host: Option<String>,
    /// Offer the channels and services under PATH to other hosts:
    /// `PATH`, `PATH=send` (others may only send or call), `PATH=recv`
    /// (others may only receive). Repeat for several.
    #[arg(long, value_name = "PATH[=RIGHTS]")]
    export: Vec<ExportSpec>,
    /// Do not make other hosts' exports reachable here.
    #[arg(long)]
    no_import: bool,
    /// Where other hosts' exports appear: MOUNT/HOST/path.
    #[arg(long, default_value = "/net")]
    mount: String,
    /// Group and other permission bits for imported names (octal), narrowed
    /// by what the exporter allows.
    #[arg(long, default_value = "0", value_parser = parse_octal)]
    import_mode: u32,
    /// Zenoh endpoint to listen on, e.g. tcp/10.0.0.1:7447. Repeatable.
    #[arg(long, value_name = "ENDPOINT")]
    listen: Vec<String>,
    /// Zenoh endpoint of another bridge to connect to. Repeatable.
    #[arg(long, value_name = "ENDPOINT")]
    connect: Vec<String>,
    /// A Zenoh configuration file (JSON5) to start from.
    #[arg(long, value_name = "FILE")]
    zenoh_config: Option<PathBuf>,
    /// Find other bridges by multicast scouting (off by default).
    #[arg(long)]
    scout: bool,
    /// Milliseconds after which a silent host counts as gone.
    #[arg(long, default_value_t = 3000)]
    lease_ms: u64,
    /// Seconds an imported service call waits for the far provider.
    #[arg(long, default_value_t = 10.0)]
    call_timeout: f64,
}

fn parse_octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8).map_err(|e| format!("{s}: {e}"))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn connect(socket: &std::path::Path) -> Result<Connection, comesg::Error> {
    match Connection::connect(socket) {
        Ok(c) => Ok(c),
        Err(e) => {
            let beside = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join("comesg")));
            match beside {
                Some(kernel) if kernel.exists() => {
                    Connection::connect_or_start(socket, &kernel, Duration::from_secs(10))
                }
                _ => Err(e),
            }
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,zenoh=warn,zenoh_transport=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let socket = args.socket.clone().unwrap_or_else(comesg::default_socket_path);
    let conn = match connect(&socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("comesg bridge: cannot reach the microkernel at {}: {e}", socket.display());
            return ExitCode::FAILURE;
        }
    };
    let net = NetConfig {
        config_file: args.zenoh_config.clone(),
        listen: args.listen.clone(),
        connect: args.connect.clone(),
        scout: args.scout,
        lease_ms: args.lease_ms,
    };
    let session = match comesg_bridge::net::open(&net) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("comesg bridge: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = BridgeConfig {
        host: args.host.clone().unwrap_or_else(hostname),
        exports: args.export.clone(),
        import: !args.no_import,
        mount: args.mount.clone(),
        import_mode: args.import_mode & 0o077,
        call_timeout: Duration::from_secs_f64(args.call_timeout.max(0.001)),
        scan_every: Duration::from_millis(250),
    };
    let host = cfg.host.clone();
    let _bridge = match Bridge::start(conn, session, cfg) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("comesg bridge: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!("bridge of {host} running");
    // Runs until killed; the microkernel releases its handles then.
    loop {
        std::thread::park();
    }
}
