//! Sends to the three ports `copoll-watch` waits on, a little apart, then
//! exits (which the watcher sees as "every sender has gone").

use std::time::Duration;

use comesg::{Connection, Rights};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let conn = Connection::connect_default()?;
    let jobs = conn.open_channel("/examples/copoll/jobs", Rights::SEND)?;
    let frames = conn.open_cocarrier("/examples/copoll/frames", Rights::SEND)?;
    let log = conn.open_copipe("/examples/copoll/log", Rights::SEND)?;
    let pause = || std::thread::sleep(Duration::from_millis(50));
    jobs.send(b"job 1")?;
    pause();
    frames.send(&vec![7u8; 1 << 20])?;
    pause();
    log.send(b"log line 1")?; // returns once the watcher has it
    pause();
    jobs.send(b"job 2")?;
    println!("sent 2 jobs, 1 frame, 1 log line");
    Ok(())
}
