//! Receives camera frames from the COCARRIER `/example-carrier/frames`,
//! reading them in place from memory it can only read. The first frame
//! carries a COCHANNEL handle; the viewer answers each frame through it.

use comesg::{CocarrierOptions, Connection, Handle, Rights};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let conn = Connection::connect_default()?;
    let opts = CocarrierOptions { arena: 16 << 20, max_message: 4 << 20, rights: Rights::RECV, ..Default::default() };
    let frames = conn.create_cocarrier("/example-carrier/frames", opts)?;
    println!("viewer ready");
    let mut replies = None;
    for i in 1..=3u32 {
        let frame = frames.recv()?;
        // The camera filled frame i with the byte i: check all of it.
        let intact = frame.iter().all(|&b| u32::from(b) == i);
        println!("frame {i}: {} bytes, intact: {}", frame.len(), if intact { "yes" } else { "no" });
        if frame.attached() > 0 {
            for h in frame.take_handles()? {
                if let Handle::Channel(ch) = h {
                    replies = Some(ch);
                }
            }
        }
        drop(frame); // gives its space in the arena back
        if let Some(ch) = &replies {
            ch.send(format!("viewer saw frame {i}").as_bytes())?;
        }
    }
    Ok(())
}
