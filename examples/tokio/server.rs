//! A tokio program that serves eight sensor channels from one task set and
//! an "upper" coservice, until every sensor has said goodbye.
//!
//! Run `tokio-server` in one terminal, then `tokio-client` in another.

use comesg::{ChannelOptions, Connection, Rights, ServiceOptions};

const SENSORS: usize = 8;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let conn = Connection::connect_default()?;
    // A coservice is served by its own worker threads; callers may be async.
    let _upper = conn.serve("/examples/tokio/upper", ServiceOptions::default(), |c| c.request.to_ascii_uppercase())?;
    let opts = ChannelOptions { slot_size: 64, rights: Rights::RECV, ..Default::default() };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SENSORS {
        let ch = conn.create_channel(&format!("/examples/tokio/sensor/{i}"), opts)?;
        // One task per port, no thread per waiting receive: an idle port
        // costs nothing until its bell rings.
        tasks.spawn(async move {
            let (mut n, mut sum) = (0u64, 0u64);
            loop {
                let m = ch.recv_vec_async().await?;
                if m == b"bye" {
                    return Ok::<_, comesg::RecvError>((i, n, sum));
                }
                sum += String::from_utf8_lossy(&m).parse::<u64>().unwrap_or(0);
                n += 1;
            }
        });
    }
    println!("serving {SENSORS} sensors and /examples/tokio/upper");
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.push(r??);
    }
    results.sort();
    for (i, n, sum) in results {
        println!("sensor {i}: {n} readings, sum {sum}");
    }
    Ok(())
}
