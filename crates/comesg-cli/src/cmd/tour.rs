//! `comesg tour`: to be filled in.

use std::process::ExitCode;

use super::Outcome;
use crate::SocketArg;

/// Arguments of `comesg tour`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    socket: SocketArg,
}

pub fn run(_a: Args) -> Outcome {
    Ok(ExitCode::SUCCESS)
}
