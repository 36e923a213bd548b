//! `comesg watch PATH`: prints what happens to an object, live.

use std::io::Write;
use std::process::ExitCode;

use comesg::EventKind;

use super::Outcome;
use crate::SocketArg;

/// Arguments of `comesg watch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The object to watch.
    path: String,
    /// Exit after this many events (default: run until the object is
    /// destroyed or the microkernel goes).
    #[arg(long)]
    count: Option<u64>,
    #[command(flatten)]
    socket: SocketArg,
}

fn describe(what: EventKind) -> String {
    match what {
        EventKind::HolderGone { pid } => format!("holder pid {pid} gone"),
        EventKind::NoSenders => "no more senders".into(),
        EventKind::NoReceivers => "no more receivers".into(),
        EventKind::Unlinked => "name unlinked".into(),
        EventKind::Destroyed => "destroyed".into(),
        EventKind::ServiceGone => "service provider gone".into(),
    }
}

pub fn run(a: Args) -> Outcome {
    let conn = a.socket.connect()?;
    let w = conn.watch(&a.path)?;
    println!("watching {}", a.path);
    let _ = std::io::stdout().flush();
    let mut seen = 0u64;
    while a.count.is_none_or(|c| seen < c) {
        let e = w.next()?;
        println!("{}: {}", e.name, describe(e.what));
        let _ = std::io::stdout().flush();
        seen += 1;
        if e.what == EventKind::Destroyed {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
