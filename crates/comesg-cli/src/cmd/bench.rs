//! `comesg bench`.

use std::process::ExitCode;

use super::Outcome;

/// Arguments of `comesg bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the figures as one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Longer, steadier runs (a few minutes).
    #[arg(long)]
    long: bool,
    /// Only a quick subset (a few seconds), as the tour shows.
    #[arg(long, conflicts_with = "long")]
    quick: bool,
    /// Measure how cost grows with load instead: senders and receivers on
    /// one channel, named objects, connected clients.
    #[arg(long)]
    scaling: bool,
}

pub fn run(a: Args) -> Outcome {
    if a.scaling {
        let cfg =
            comesg_bench::scaling::ScalingConfig { exe: std::env::current_exe()?, short: a.quick, progress: !a.json };
        if !a.json {
            eprintln!("measuring how cost grows (about a minute)...");
        }
        let report = comesg_bench::scaling::run(&cfg)?;
        if a.json {
            println!("{}", report.to_json());
        } else {
            print!("{}", report.table());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let cfg =
        comesg_bench::BenchConfig { exe: std::env::current_exe()?, long: a.long, short: a.quick, progress: !a.json };
    if !a.json {
        eprintln!("measuring (about a minute{})...", if a.long { ", times several" } else { "" });
    }
    let report = comesg_bench::run(&cfg)?;
    if a.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}
