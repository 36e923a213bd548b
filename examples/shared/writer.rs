//! Publishes a robot's pose in the shared object `/example-shared/pose`:
//! 100 updates, each written whole under the object's comutex, so that no
//! reader ever sees half of one.

use std::time::Duration;

use comesg::{ComutexOptions, Connection, LockError};

/// The shared value: plain data, the same layout in every process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Pose {
    /// Update number.
    pub seq: u64,
    /// Position, metres.
    pub x: f64,
    /// Position, metres.
    pub y: f64,
    /// Heading, radians.
    pub theta: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let conn = Connection::connect_default()?;
    let pose = conn.create_shared::<Pose>("/example-shared/pose", ComutexOptions::default())?;
    for seq in 1..=100u64 {
        {
            let mut p = match pose.lock() {
                Ok(g) => g,
                Err(LockError::OwnerDied(g)) => {
                    g.mark_consistent()?;
                    g
                }
                Err(e) => return Err(e.map(|_| ()).into()),
            };
            let t = seq as f64;
            *p = Pose { seq, x: t, y: 2.0 * t, theta: t / 100.0 };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // Readers may still be looking: give them a moment before the object
    // goes with its last holder.
    std::thread::sleep(Duration::from_millis(200));
    println!("published 100 poses");
    Ok(())
}
