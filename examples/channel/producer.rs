//! Sends jobs into the COCHANNEL `/example-channel/jobs`, then one "stop"
//! per worker: each job goes to exactly one of the workers (anycast).
//!
//! Usage: `channel-producer JOBS WORKERS`

use comesg::{Connection, Rights};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u32>());
    let (jobs, workers) = match (args.next(), args.next()) {
        (Some(Ok(j)), Some(Ok(w))) => (j, w),
        _ => return Err("usage: channel-producer JOBS WORKERS".into()),
    };
    let conn = Connection::connect_default()?;
    let ch = conn.open_channel("/example-channel/jobs", Rights::SEND)?;
    for j in 1..=jobs {
        ch.send(format!("job {j}").as_bytes())?;
    }
    for _ in 0..workers {
        ch.send(b"stop")?;
    }
    println!("sent {jobs} jobs");
    Ok(())
}
