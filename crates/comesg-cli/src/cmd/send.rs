//! `comesg send`.

use std::io::BufRead;
use std::process::ExitCode;

use comesg::Rights;

use super::Outcome;
use crate::SocketArg;

/// Arguments of `comesg send`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The channel or pipe.
    path: String,
    /// Messages; without any, each line of stdin is one message.
    data: Vec<String>,
    #[command(flatten)]
    socket: SocketArg,
}

pub fn run(a: Args) -> Outcome {
    let conn = a.socket.connect()?;
    let port = super::port::AnyPort::open(&conn, &a.path, Rights::SEND)?;
    let send = |m: &[u8]| port.send(m);
    let mut n = 0u64;
    if a.data.is_empty() {
        for line in std::io::stdin().lock().lines() {
            send(line?.as_bytes())?;
            n += 1;
        }
    } else {
        for d in &a.data {
            send(d.as_bytes())?;
            n += 1;
        }
    }
    eprintln!("sent {n} message(s) to {}", a.path);
    Ok(ExitCode::SUCCESS)
}
