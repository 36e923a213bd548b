//! `comesg-vs-iceoryx2`: comesg and iceoryx2 side by side, in one run,
//! between two processes pinned to different CPUs, through the same loops
//! (see `endpoint.rs`).
//!
//! ```text
//! cargo run --release -p comesg-vs-iceoryx2            # the table
//! cargo run --release -p comesg-vs-iceoryx2 -- --json  # the same figures as JSON
//! ```

mod comesg_side;
mod endpoint;
mod iceoryx2_side;
mod report;
mod run;
mod spin;

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "comesg-vs-iceoryx2", about = "comesg beside iceoryx2, measured in one run")]
struct Cli {
    /// Print the figures as one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Longer, steadier runs (several times the default).
    #[arg(long)]
    long: bool,
    /// A quick run (seconds; figures only roughly right).
    #[arg(long, conflicts_with = "long")]
    quick: bool,
    #[command(subcommand)]
    peer: Option<Peer>,
}

#[derive(Debug, clap::Subcommand)]
enum Peer {
    /// The second process of one link (started by the benchmark itself).
    #[command(name = "__peer", hide = true)]
    Peer(run::PeerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.peer {
        Some(Peer::Peer(a)) => run::peer(a),
        None => {
            let scale = if cli.long {
                4.0
            } else if cli.quick {
                0.05
            } else {
                1.0
            };
            run::run(scale, !cli.json).map(|r| {
                if cli.json {
                    println!("{}", r.to_json());
                } else {
                    print!("{}", r.table());
                }
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("comesg-vs-iceoryx2: {e}");
            ExitCode::FAILURE
        }
    }
}
