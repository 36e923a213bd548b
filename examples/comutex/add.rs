//! Adds one to the shared counter TIMES times, each under the comutex.
//!
//! Usage: `counter-add TIMES`

use comesg::{Connection, LockError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let times: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).ok_or("usage: counter-add TIMES")?;
    let conn = Connection::connect_default()?;
    let counter = conn.open_shared::<u64>("/example-comutex/counter")?;
    for _ in 0..times {
        let mut g = match counter.lock() {
            Ok(g) => g,
            // A process died holding it: the value is a plain counter, whole
            // at every step, so it is consistent as it stands.
            Err(LockError::OwnerDied(g)) => {
                g.mark_consistent()?;
                g
            }
            Err(e) => return Err(e.map(|_| ()).into()),
        };
        *g += 1;
    }
    println!("added {times}");
    Ok(())
}
