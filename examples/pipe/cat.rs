//! Streams a file into the COPIPE `/example-pipe/file` in 64 KiB pieces:
//! each is copied once, straight into the receiver's buffer.
//!
//! Usage: `pipe-cat INPUT`

use std::io::Read;

use comesg::{Connection, Rights};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: pipe-cat INPUT")?;
    let mut file = std::fs::File::open(&path)?;
    let conn = Connection::connect_default()?;
    let pipe = conn.open_copipe("/example-pipe/file", Rights::SEND)?;
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        pipe.send(&buf[..n])?;
        total += n as u64;
    }
    pipe.close()?; // the receiver sees the end of the stream
    println!("sent {total} bytes");
    Ok(())
}
