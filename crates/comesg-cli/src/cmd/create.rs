//! `comesg create` and `comesg unlink`.

use std::process::ExitCode;

use comesg::{ChannelOptions, Rights};

use super::Outcome;
use crate::SocketArg;

/// Kinds of port `comesg create` makes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// COCHANNEL: a ring of fixed-size slots.
    Channel,
    /// Comutex: a cross-process mutex that survives a dead owner.
    Comutex,
    /// COPIPE: synchronous, one copy into a waiting receiver's buffer.
    Pipe,
    /// COCARRIER: messages of any size nobody can change after sending.
    Carrier,
}

/// Arguments of `comesg create`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the new port, e.g. /app/jobs.
    path: String,
    /// Kind of port.
    #[arg(long, value_enum, default_value = "channel")]
    kind: Kind,
    /// Largest message in bytes.
    #[arg(long, default_value_t = 1024)]
    slot_size: u32,
    /// Number of slots (a power of two).
    #[arg(long, default_value_t = 256)]
    slots: u32,
    /// Pipe: bytes of each receiver's buffer (the largest message).
    #[arg(long, default_value_t = 1 << 20)]
    buffer: u32,
    /// Pipe and carrier: most receivers at once.
    #[arg(long, default_value_t = 16)]
    receivers: u32,
    /// Carrier: bytes of the arena holding messages in flight.
    #[arg(long, default_value_t = 256 << 20)]
    arena: u64,
    /// Carrier: largest message.
    #[arg(long, default_value_t = 64 << 20)]
    max_message: u64,
    /// Carrier: messages each receiver may have queued (a power of two).
    #[arg(long, default_value_t = 64)]
    queue: u32,
    /// Permission bits, octal (w = send, r = receive; a comutex needs both).
    #[arg(long, default_value = "600", value_parser = parse_mode)]
    mode: u32,
    #[command(flatten)]
    socket: SocketArg,
}

pub fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o777).ok_or_else(|| format!("{s:?} is not an octal mode"))
}

pub fn run(a: Args) -> Outcome {
    let conn = a.socket.connect()?;
    if let Kind::Comutex = a.kind {
        let opts = comesg::ComutexOptions { mode: a.mode, persistent: true, exclusive: true };
        let m = conn.create_comutex(&a.path, opts)?;
        println!("created {} (comutex, persistent)", m.name());
        m.close()?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Kind::Carrier = a.kind {
        let opts = comesg::CocarrierOptions {
            arena: a.arena,
            max_message: a.max_message,
            receivers: a.receivers,
            queue: a.queue,
            rights: Rights::SEND,
            mode: a.mode,
            persistent: true,
            exclusive: true,
        };
        let c = conn.create_cocarrier(&a.path, opts)?;
        println!(
            "created {} (carrier, {} MiB arena, messages up to {} bytes, persistent)",
            c.name(),
            a.arena >> 20,
            a.max_message
        );
        c.close()?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Kind::Pipe = a.kind {
        let opts = comesg::CopipeOptions {
            buffer: a.buffer,
            receivers: a.receivers,
            rights: Rights::SEND,
            mode: a.mode,
            persistent: true,
            exclusive: true,
        };
        let p = conn.create_copipe(&a.path, opts)?;
        println!("created {} (pipe, {} receivers of {} bytes, persistent)", p.name(), a.receivers, a.buffer);
        // Close and wait for the kernel to count this sender out before
        // exiting: otherwise a reader that opens right after this command
        // could see this handle as a live sender, then its departure as
        // end of file.
        p.close()?;
        return Ok(ExitCode::SUCCESS);
    }
    let opts = ChannelOptions {
        slot_size: a.slot_size,
        slots: a.slots,
        rights: Rights::ALL,
        mode: a.mode,
        persistent: true,
        exclusive: true,
    };
    let ch = conn.create_channel(&a.path, opts)?;
    println!("created {} (channel, {} slots of {} bytes, persistent)", ch.name(), ch.slots(), ch.slot_size());
    ch.close()?;
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `comesg unlink`.
#[derive(Debug, clap::Args)]
pub struct UnlinkArgs {
    /// Name to remove.
    path: String,
    #[command(flatten)]
    socket: SocketArg,
}

pub fn unlink(a: UnlinkArgs) -> Outcome {
    a.socket.connect()?.unlink(&a.path)?;
    Ok(ExitCode::SUCCESS)
}
