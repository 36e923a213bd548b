//! The benchmark's second process (`comesg __peer bench ...`): it builds its
//! end of one link, signals readiness, then echoes or swallows messages as
//! the parent's command says.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use comesg::{Connection, Rights};
use comesg_sys::mapping::{Access, Mapping};
use comesg_sys::process::inherited_fd;

use crate::link::{
    CarrierLink, ChannelLink, CopipeLink, FutexLink, Link, PipeLink, SeqpacketLink, SpinLink, StreamRpcLink,
};

/// Transports the benchmark measures between processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// Raw shared-memory spin ping-pong.
    Spin,
    /// A bare Vyukov ring each way in shared memory (64-byte messages).
    #[value(name = "bare_ring")]
    BareRing,
    /// Futex wait/wake.
    Futex,
    /// A pair of pipes.
    Pipe,
    /// A `SOCK_SEQPACKET` socket pair.
    Seqpacket,
    /// Two COCHANNELs.
    Cochannel,
    /// Request/response over a UNIX stream socket, length-prefixed.
    #[value(name = "uds_rpc")]
    UdsRpc,
    /// Coservice calls (the peer is the provider, one worker).
    Coservice,
    /// Two COPIPEs.
    Copipe,
    /// Two COCARRIERs (copy send, read in place).
    Cocarrier,
    /// Two COCARRIERs, messages built in place (sealed memfds).
    #[value(name = "cocarrier_inplace")]
    CocarrierInplace,
}

impl Transport {
    /// Name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Spin => "spin",
            Transport::BareRing => "bare_ring",
            Transport::Futex => "futex",
            Transport::Pipe => "pipe",
            Transport::Seqpacket => "seqpacket",
            Transport::Cochannel => "cochannel",
            Transport::UdsRpc => "uds_rpc",
            Transport::Coservice => "coservice",
            Transport::Copipe => "copipe",
            Transport::Cocarrier => "cocarrier",
            Transport::CocarrierInplace => "cocarrier_inplace",
        }
    }
}

/// What the peer does with one command.
pub const CMD_EXIT: u8 = 0;
/// Receive and send back N messages.
pub const CMD_ECHO: u8 = 1;
/// Receive N messages, then send one 1-byte acknowledgement.
pub const CMD_SINK: u8 = 2;

/// Arguments of `comesg __peer bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct PeerArgs {
    /// Which transport.
    #[arg(long, value_enum)]
    pub transport: Transport,
    /// Inherited read end of the command pipe.
    #[arg(long)]
    pub ctl: i32,
    /// Inherited write end of the ready pipe.
    #[arg(long)]
    pub ready: i32,
    /// Inherited fds of the link (segment; pipe read, pipe write; socket).
    #[arg(long, num_args = 0..)]
    pub fds: Vec<i32>,
    /// Kernel socket (cochannel).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Channel this peer receives from (cochannel), or the service it
    /// registers (coservice).
    #[arg(long)]
    pub rx_name: Option<String>,
    /// Channel this peer sends to (cochannel).
    #[arg(long)]
    pub tx_name: Option<String>,
    /// CPU to pin to.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Largest message.
    #[arg(long, default_value_t = 64)]
    pub max_size: usize,
}

/// Length of the shared segment for the spin and futex baselines.
pub const FLAG_SEGMENT: usize = 4096;

fn fd(args: &PeerArgs, i: usize) -> io::Result<comesg_sys::OwnedFd> {
    let n = *args.fds.get(i).ok_or_else(|| io::Error::other("missing fd argument"))?;
    inherited_fd(n)
}

/// Builds this peer's end of the link.
pub fn link(args: &PeerArgs, first: bool) -> io::Result<Box<dyn Link>> {
    Ok(match args.transport {
        Transport::Spin => Box::new(SpinLink::new(Mapping::map(fd(args, 0)?, FLAG_SEGMENT, Access::ReadWrite)?, first)),
        Transport::Futex => {
            Box::new(FutexLink::new(Mapping::map(fd(args, 0)?, FLAG_SEGMENT, Access::ReadWrite)?, first))
        }
        Transport::BareRing => Box::new(crate::bare_ring::BareRingLink::new(
            Mapping::map(fd(args, 0)?, crate::bare_ring::SEGMENT, Access::ReadWrite)?,
            first,
        )),
        Transport::Pipe => Box::new(PipeLink { rx: fd(args, 0)?.into(), tx: fd(args, 1)?.into() }),
        Transport::Seqpacket => Box::new(SeqpacketLink { fd: fd(args, 0)? }),
        Transport::UdsRpc => Box::new(StreamRpcLink::new(fd(args, 0)?)),
        Transport::Cocarrier | Transport::CocarrierInplace => {
            let socket = args.socket.clone().ok_or_else(|| io::Error::other("--socket missing"))?;
            let conn = Connection::connect(&socket).map_err(io::Error::other)?;
            let name = |n: &Option<String>| n.clone().ok_or_else(|| io::Error::other("carrier name missing"));
            let rx = conn.open_cocarrier(&name(&args.rx_name)?, Rights::RECV).map_err(io::Error::other)?;
            let tx = conn.open_cocarrier(&name(&args.tx_name)?, Rights::SEND).map_err(io::Error::other)?;
            Box::new(CarrierLink { tx, rx, inplace: args.transport == Transport::CocarrierInplace })
        }
        Transport::Copipe => {
            let socket = args.socket.clone().ok_or_else(|| io::Error::other("--socket missing"))?;
            let conn = Connection::connect(&socket).map_err(io::Error::other)?;
            let name = |n: &Option<String>| n.clone().ok_or_else(|| io::Error::other("pipe name missing"));
            let rx = conn.open_copipe(&name(&args.rx_name)?, Rights::RECV).map_err(io::Error::other)?;
            let tx = conn.open_copipe(&name(&args.tx_name)?, Rights::SEND).map_err(io::Error::other)?;
            Box::new(CopipeLink { tx, rx })
        }
        Transport::Coservice => return Err(io::Error::other("the coservice peer serves, it has no link")),
        Transport::Cochannel => {
            let socket = args.socket.clone().ok_or_else(|| io::Error::other("--socket missing"))?;
            let conn = Connection::connect(&socket).map_err(io::Error::other)?;
            let name = |n: &Option<String>| n.clone().ok_or_else(|| io::Error::other("channel name missing"));
            let rx = conn.open_channel(&name(&args.rx_name)?, Rights::RECV).map_err(io::Error::other)?;
            let tx = conn.open_channel(&name(&args.tx_name)?, Rights::SEND).map_err(io::Error::other)?;
            Box::new(ChannelLink { tx, rx })
        }
    })
}

/// Runs the peer until told to exit.
pub fn run(args: PeerArgs) -> io::Result<()> {
    if let Some(cpu) = args.cpu {
        let _ = comesg_sys::process::pin_to_cpu(cpu);
    }
    let mut ctl: std::fs::File = inherited_fd(args.ctl)?.into();
    let mut ready: std::fs::File = inherited_fd(args.ready)?.into();
    if args.transport == Transport::Coservice {
        return serve(&args, &mut ctl, &mut ready);
    }
    let mut link = link(&args, false)?;
    let mut buf = vec![0u8; args.max_size.max(1)];
    ready.write_all(b"R")?;
    loop {
        let mut cmd = [0u8; 17];
        ctl.read_exact(&mut cmd)?;
        let n = u64::from_le_bytes(cmd[1..9].try_into().unwrap_or_default());
        let size = (u64::from_le_bytes(cmd[9..17].try_into().unwrap_or_default()) as usize).min(buf.len());
        match cmd[0] {
            CMD_ECHO => {
                for _ in 0..n {
                    link.recv(&mut buf[..size])?;
                    link.send(&buf[..size])?;
                }
            }
            CMD_SINK => {
                link.recv_many(&mut buf[..size], n)?;
                link.send(&buf[..1])?;
            }
            _ => return Ok(()),
        }
        ready.write_all(b"D")?;
    }
}

/// The coservice peer: registers an echo service with one worker (pinned
/// with this thread) and reports each batch done once its calls are served.
fn serve(args: &PeerArgs, ctl: &mut std::fs::File, ready: &mut std::fs::File) -> io::Result<()> {
    let socket = args.socket.clone().ok_or_else(|| io::Error::other("--socket missing"))?;
    let name = args.rx_name.clone().ok_or_else(|| io::Error::other("service name missing"))?;
    let conn = Connection::connect(&socket).map_err(io::Error::other)?;
    let opts = comesg::ServiceOptions {
        workers: 1,
        slot_size: args.max_size.max(64) as u32,
        call_slots: 4,
        queue: 64,
        mode: 0o600,
    };
    let svc = conn.serve(&name, opts, |c| c.request.to_vec()).map_err(io::Error::other)?;
    let served = || svc.worker_calls().iter().sum::<u64>();
    // Calls come only after a command, but may start before this process
    // has read it: count the total expected, not from now.
    let mut expected = 0u64;
    ready.write_all(b"R")?;
    loop {
        let mut cmd = [0u8; 17];
        ctl.read_exact(&mut cmd)?;
        let n = u64::from_le_bytes(cmd[1..9].try_into().unwrap_or_default());
        if cmd[0] != CMD_ECHO {
            return Ok(());
        }
        expected += n;
        while served() < expected {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        ready.write_all(b"D")?;
    }
}
