//! Sends readings to the eight sensor channels of `tokio-server` from
//! concurrent tokio tasks, and calls its "upper" service asynchronously.

use comesg::{Connection, Rights};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let conn = Connection::connect_default()?;
    let upper = conn.service("/examples/tokio/upper")?;
    println!("upper says {}", String::from_utf8_lossy(&upper.call_async(b"hello from tokio").await?));

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let ch = conn.open_channel(&format!("/examples/tokio/sensor/{i}"), Rights::SEND)?;
        tasks.spawn(async move {
            for r in 1..=100u64 {
                // Waits on the runtime (not a thread) while the channel is full.
                ch.send_async((r * (i + 1)).to_string().as_bytes()).await?;
            }
            ch.send_async(b"bye").await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    println!("sent 100 readings to each of 8 sensors");
    Ok(())
}
