//! One process waits on a channel, a carrier and a pipe at once, and prints
//! what arrives on each, until every sender of every port has gone.
//!
//! Run `copoll-watch` in one terminal, then `copoll-poke` in another.

use comesg::{ChannelOptions, CocarrierOptions, Connection, CopipeOptions, Copoll, Interest, Rights};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let conn = Connection::connect_default()?;
    let recv_only = ChannelOptions { rights: Rights::RECV, ..Default::default() };
    let jobs = conn.create_channel("/examples/copoll/jobs", recv_only)?;
    let frames = conn
        .create_cocarrier("/examples/copoll/frames", CocarrierOptions { rights: Rights::RECV, ..Default::default() })?;
    let log =
        conn.create_copipe("/examples/copoll/log", CopipeOptions { rights: Rights::RECV, ..Default::default() })?;

    let mut poll = Copoll::new()?;
    poll.add(&jobs, 0, Interest::READABLE)?;
    poll.add(&frames, 1, Interest::READABLE)?;
    poll.add(&log, 2, Interest::READABLE)?;
    println!("waiting on a channel, a carrier and a pipe");

    let mut events = Vec::new();
    while !poll.is_empty() {
        poll.wait(&mut events, None)?;
        for e in &events {
            if e.is_readable() {
                match e.token() {
                    0 => println!("channel: {}", String::from_utf8_lossy(&jobs.try_recv_vec()?)),
                    1 => {
                        let m = frames.try_recv()?;
                        println!("carrier: a frame of {} bytes, first byte {}", m.len(), m.first().unwrap_or(&0));
                    }
                    _ => {
                        let mut buf = vec![0u8; log.buffer_size()];
                        let n = log.try_recv(&mut buf)?;
                        println!("pipe: {}", String::from_utf8_lossy(&buf[..n]));
                    }
                }
            } else if e.is_closed() {
                let what = ["channel", "carrier", "pipe"][e.token() as usize];
                println!("{what}: every sender has gone");
                poll.remove(e.token());
            }
        }
    }
    println!("done");
    Ok(())
}
