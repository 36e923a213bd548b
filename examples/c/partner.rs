//! The Rust side of the C example: owns a COCHANNEL that the C sensor sends
//! readings into and a coservice it calls for their average; prints each
//! reading and exits when the sensor says "bye".

use std::sync::{Arc, Mutex};

use comesg::{ChannelOptions, Connection, ServiceOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let conn = Connection::connect_default()?;
    let readings =
        conn.create_channel("/example-c/readings", ChannelOptions { slot_size: 64, ..Default::default() })?;
    let seen: Arc<Mutex<Vec<f64>>> = Arc::default();
    let for_service = Arc::clone(&seen);
    let opts = ServiceOptions { workers: 1, slot_size: 128, ..Default::default() };
    let _stats = conn.serve("/example-c/stats", opts, move |_call| {
        let v = for_service.lock().unwrap_or_else(|p| p.into_inner());
        let avg = if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
        format!("{} readings, average {avg:.2}", v.len()).into_bytes()
    })?;
    println!("waiting for readings");
    let mut buf = [0u8; 64];
    loop {
        let n = readings.recv(&mut buf)?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text == "bye" {
            println!("the sensor said bye");
            return Ok(());
        }
        match text.parse::<f64>() {
            Ok(t) => {
                println!("reading {t:.1}");
                seen.lock().unwrap_or_else(|p| p.into_inner()).push(t);
            }
            Err(_) => println!("not a reading: {text:?}"),
        }
    }
}
