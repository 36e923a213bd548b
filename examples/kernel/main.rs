//! The comesg microkernel as a process of its own, listening on
//! `$COMESG_SOCKET` (the example tests start it; elsewhere run
//! `comesg kernel`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let socket = comesg::default_socket_path();
    let _kernel = comesg::Kernel::spawn(comesg::KernelConfig::new(&socket))?;
    println!("ready");
    loop {
        std::thread::park();
    }
}
