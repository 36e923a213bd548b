//! `comesg send`.

use std::io::BufRead;
use std::process::ExitCode;

use comesg::Rights;

use super::Outcome;
use crate::SocketArg;

/// Arguments of `comesg send`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The channel.
    path: String,
    /// Messages; without any, each line of stdin is one message.
    data: Vec<String>,
    #[command(flatten)]
    socket: SocketArg,
}

pub fn run(a: Args) -> Outcome {
    let conn = a.socket.connect()?;
    let ch = conn.open_channel(&a.path, Rights::SEND)?;
    let mut n = 0u64;
    if a.data.is_empty() {
        for line in std::io::stdin().lock().lines() {
            ch.send(line?.as_bytes())?;
            n += 1;
        }
    } else {
        for d in &a.data {
            ch.send(d.as_bytes())?;
            n += 1;
        }
    }
    eprintln!("sent {n} message(s) to {}", ch.name());
    Ok(ExitCode::SUCCESS)
}
