//! A one-way 64 B COCHANNEL stream between two pinned processes through an
//! embedded microkernel and the public library, with no benchmark harness
//! around it: one `send` and one `recv` per message, 4 million messages
//! per round. A developer's cross-check of `comesg bench`'s stream rows.
//! With `STREAM_SHARED=1` each process holds a second, idle handle (SEND
//! here, RECV in the receiver), so neither side is a sole holder and both
//! claim by compare-and-swap (docs/cochannel.md, "Sole holders"): the
//! leases' effect in one binary.
//!
//! `cargo run --release -p comesg-bench --example two_process_stream`

use std::io::{BufRead, Write};
use std::time::Instant;

use comesg::{ChannelOptions, Connection, Kernel, KernelConfig, Rights};

const MESSAGES: u64 = 4_000_000;
const ROUNDS: usize = 5;

fn receive(args: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut it = args.split(' ');
    let (socket, name, cpu) = (it.next().unwrap_or(""), it.next().unwrap_or(""), it.next().unwrap_or("1"));
    let conn = Connection::connect(std::path::Path::new(socket))?;
    let rx = conn.open_channel(name, Rights::RECV)?;
    let _spare = match std::env::var_os("STREAM_SHARED") {
        Some(_) => Some(conn.open_channel(name, Rights::RECV)?),
        None => None,
    };
    comesg_sys::process::pin_to_cpu(cpu.parse()?)?;
    println!("ready");
    std::io::stdout().flush()?;
    let mut buf = [0u8; 64];
    for _ in 0..MESSAGES {
        rx.recv(&mut buf)?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(args) = std::env::var("COMESG_STREAM_RECEIVER") {
        return receive(&args);
    }
    let cpus = comesg_sys::process::allowed_cpus();
    let (mine, theirs) = (cpus[0], *cpus.get(1).unwrap_or(&cpus[0]));
    let dir = std::env::temp_dir().join(format!("comesg-stream-{}", std::process::id()));
    let socket = dir.join("kernel.sock");
    let kernel = Kernel::spawn(KernelConfig::new(&socket))?;
    let conn = Connection::connect(&socket)?;
    comesg_sys::process::pin_to_cpu(mine)?;
    for round in 0..ROUNDS {
        let name = format!("/stream/{round}");
        let opts = ChannelOptions { slot_size: 64, slots: 4096, exclusive: true, ..Default::default() };
        let created = conn.create_channel(&name, opts)?;
        let tx = conn.open_channel(&name, Rights::SEND)?;
        let _spare = match std::env::var_os("STREAM_SHARED") {
            Some(_) => Some(conn.open_channel(&name, Rights::SEND)?),
            None => None,
        };
        drop(created);
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .env("COMESG_STREAM_RECEIVER", format!("{} {name} {theirs}", socket.display()))
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
        let msg = [7u8; 64];
        let t = Instant::now();
        for _ in 0..MESSAGES {
            tx.send(&msg)?;
        }
        let status = child.wait()?;
        let rate = MESSAGES as f64 / t.elapsed().as_secs_f64();
        let lease = if tx.sole_sender() { "sole sender" } else { "shared" };
        println!("round {round}: {:.1} M msgs/s ({lease}; receiver {status})", rate / 1e6);
    }
    drop(conn);
    drop(kernel);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
