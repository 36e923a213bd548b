//! Builds three 1 MiB frames in place (zero copy) and sends them through the
//! COCARRIER `/example-carrier/frames`; with the first it passes the viewer
//! a SEND handle to a reply channel only this process has a name for.

use comesg::{ChannelOptions, Connection, Rights};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let conn = Connection::connect_default()?;
    let frames = conn.open_cocarrier("/example-carrier/frames", Rights::SEND)?;
    let reply_path = format!("/example-carrier/replies-{}", std::process::id());
    let replies = conn.create_channel(&reply_path, ChannelOptions { slot_size: 64, slots: 8, ..Default::default() })?;
    for i in 1..=3u8 {
        // Written straight into a sealed buffer; once sent, nobody can change it.
        let mut frame = frames.build(1 << 20)?;
        frame.as_mut_slice().fill(i);
        if i == 1 {
            frame.send_with(&[(&replies, Rights::SEND)])?;
        } else {
            frame.send()?;
        }
    }
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        let n = replies.recv(&mut buf)?;
        println!("{}", String::from_utf8_lossy(&buf[..n]));
    }
    Ok(())
}
