//! Receives a stream from the COPIPE `/example-pipe/file` into a file until
//! the sender closes it, then prints its size and checksum.
//!
//! Usage: `pipe-save OUTPUT`

use std::io::Write;

use comesg::{Connection, CopipeOptions, RecvError, Rights};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: pipe-save OUTPUT")?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let conn = Connection::connect_default()?;
    let opts = CopipeOptions { buffer: 64 << 10, rights: Rights::RECV, ..Default::default() };
    let pipe = conn.create_copipe("/example-pipe/file", opts)?;
    println!("saving to {path}");
    let mut buf = vec![0u8; 64 << 10];
    let (mut total, mut sum) = (0u64, 0u64);
    loop {
        match pipe.recv(&mut buf) {
            Ok(n) => {
                out.write_all(&buf[..n])?;
                total += n as u64;
                sum = buf[..n].iter().fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
            }
            // Every sender has closed: end of file.
            Err(RecvError::Closed) => break,
            Err(e) => return Err(e.into()),
        }
    }
    out.flush()?;
    println!("saved {total} bytes, checksum {sum:016x}");
    Ok(())
}
