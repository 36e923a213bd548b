//! A worker on the COCHANNEL `/example-channel/jobs` (created by the first
//! worker to start): prints each job it takes, until it takes a "stop".
//!
//! Usage: `channel-worker NAME`

use comesg::{ChannelOptions, Connection};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1).ok_or("usage: channel-worker NAME")?;
    let conn = Connection::connect_default()?;
    // Open if it exists, create it otherwise: every worker runs the same code.
    let opts = ChannelOptions { slot_size: 64, slots: 256, ..Default::default() };
    let ch = conn.create_channel("/example-channel/jobs", opts)?;
    println!("{name} ready");
    let mut buf = [0u8; 64];
    let mut done = 0;
    loop {
        let n = ch.recv(&mut buf)?;
        let job = String::from_utf8_lossy(&buf[..n]);
        if job == "stop" {
            break;
        }
        println!("{name} {job}");
        done += 1;
    }
    println!("{name} did {done} jobs");
    Ok(())
}
