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
}

pub fn run(a: Args) -> Outcome {
    let cfg =
        comesg_bench::BenchConfig { exe: std::env::current_exe()?, long: a.long, short: false, progress: !a.json };
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
