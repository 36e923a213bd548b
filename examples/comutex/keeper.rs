//! Creates the shared counter `/example-comutex/counter` (a `u64` behind a
//! comutex) and waits until the adders have brought it to TOTAL.
//!
//! Usage: `counter-keeper TOTAL`

use std::time::Duration;

use comesg::{ComutexOptions, Connection};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).ok_or("usage: counter-keeper TOTAL")?;
    let conn = Connection::connect_default()?;
    let counter = conn.create_shared::<u64>("/example-comutex/counter", ComutexOptions::default())?;
    println!("counter ready");
    loop {
        let now = match counter.lock() {
            Ok(g) => *g,
            Err(e) => return Err(e.map(|_| ()).into()),
        };
        if now >= total {
            println!("counter reached {now}");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
