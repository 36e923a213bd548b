//! `comesg call` and `comesg serve`.

use std::process::ExitCode;
use std::time::Duration;

use comesg::ServiceOptions;

use super::Outcome;
use crate::SocketArg;

/// Arguments of `comesg call`.
#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// The service.
    path: String,
    /// The request (one call per argument; none: one empty request).
    data: Vec<String>,
    /// Give up on a call after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    #[command(flatten)]
    socket: SocketArg,
}

pub fn call(a: CallArgs) -> Outcome {
    let conn = a.socket.connect()?;
    let svc = conn.service(&a.path)?;
    let timeout = Duration::try_from_secs_f64(a.timeout).map_err(|e| format!("--timeout: {e}"))?;
    let reqs = if a.data.is_empty() { vec![String::new()] } else { a.data };
    for r in reqs {
        let resp = svc.call_timeout(r.as_bytes(), timeout)?;
        println!("{}", String::from_utf8_lossy(&resp));
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `comesg serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Name to register, e.g. /app/echo.
    path: String,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Answer with the request in upper case (default: echo it).
    #[arg(long)]
    upper: bool,
    /// Permission bits, octal (w = call, r = serve).
    #[arg(long, default_value = "600", value_parser = super::create::parse_mode)]
    mode: u32,
    #[command(flatten)]
    socket: SocketArg,
}

pub fn serve(a: ServeArgs) -> Outcome {
    let conn = a.socket.connect()?;
    let opts = ServiceOptions { workers: a.workers, mode: a.mode, ..Default::default() };
    let upper = a.upper;
    let svc =
        conn.serve(&a.path, opts, move |c| if upper { c.request.to_ascii_uppercase() } else { c.request.to_vec() })?;
    eprintln!("serving {} with {} workers until interrupted", svc.name(), a.workers);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
