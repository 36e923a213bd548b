//! Reads the pose in `/example-shared/pose` until it reaches update 100,
//! checking that every pose it sees is whole (y = 2x, theta = x / 100).

use std::time::Duration;

use comesg::{ComutexOptions, Connection};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Pose {
    seq: u64,
    x: f64,
    y: f64,
    theta: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let conn = Connection::connect_default()?;
    // Open it, or create it if the writer is not there yet.
    let pose = conn.create_shared::<Pose>("/example-shared/pose", ComutexOptions::default())?;
    println!("reader ready");
    let (mut reads, mut torn, mut last) = (0u64, 0u64, 0u64);
    while last < 100 {
        let p = *pose.lock().map_err(|e| e.map(|_| ()))?;
        reads += 1;
        if p.seq > 0 && (p.x != p.seq as f64 || p.y != 2.0 * p.x || p.theta != p.x / 100.0) {
            torn += 1;
        }
        last = p.seq;
        std::thread::sleep(Duration::from_micros(500));
    }
    println!("saw pose 100; {torn} torn of {reads} reads");
    Ok(())
}
