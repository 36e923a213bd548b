//! Provides the coservice `/example-service/words` with a pool of worker
//! threads: each call's answer is the number of words in the request and
//! the worker that counted them. Stops after CALLS calls.
//!
//! Usage: `service-provider WORKERS CALLS`

use std::time::Duration;

use comesg::{Connection, ServiceOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u32>());
    let (workers, calls) = match (args.next(), args.next()) {
        (Some(Ok(w)), Some(Ok(c))) => (w, u64::from(c)),
        _ => return Err("usage: service-provider WORKERS CALLS".into()),
    };
    let conn = Connection::connect_default()?;
    let opts = ServiceOptions { workers, slot_size: 1024, ..Default::default() };
    let provider = conn.serve("/example-service/words", opts, |call| {
        let words = String::from_utf8_lossy(call.request).split_whitespace().count();
        format!("{words} words (worker {})", call.worker).into_bytes()
    })?;
    println!("serving with {workers} workers");
    while provider.worker_calls().iter().sum::<u64>() < calls {
        std::thread::sleep(Duration::from_millis(10));
    }
    let busy = provider.worker_calls().iter().filter(|&&n| n > 0).count();
    provider.stop()?;
    println!("served {calls} calls on {busy} of {workers} workers");
    Ok(())
}
