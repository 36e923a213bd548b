//! `comesg recv`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use comesg::{RecvError, Rights};

use super::Outcome;
use crate::SocketArg;

/// Arguments of `comesg recv`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The channel or pipe.
    path: String,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Stop when no message came for this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
    #[command(flatten)]
    socket: SocketArg,
}

pub fn run(a: Args) -> Outcome {
    let conn = a.socket.connect()?;
    let ch = super::port::AnyPort::open(&conn, &a.path, Rights::RECV)?;
    let mut buf = vec![0u8; ch.size()];
    let mut out = std::io::stdout().lock();
    let mut n = 0u64;
    while a.count.is_none_or(|c| n < c) {
        let got = match a.timeout {
            Some(t) => ch.recv_timeout(&mut buf, Duration::from_secs_f64(t.max(0.0))),
            None => ch.recv(&mut buf),
        };
        match got {
            Ok(len) => {
                out.write_all(&buf[..len])?;
                out.write_all(b"\n")?;
                out.flush()?;
                n += 1;
            }
            Err(RecvError::TimedOut | RecvError::Closed) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ExitCode::SUCCESS)
}
