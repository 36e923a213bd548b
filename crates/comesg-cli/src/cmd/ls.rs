//! `comesg ls`.

use std::process::ExitCode;

use comesg::{Connection, Entry, EntryKind, PortKind};

use super::Outcome;
use crate::SocketArg;

/// Arguments of `comesg ls`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Namespace or object to list (default: the whole tree).
    #[arg(default_value = "/")]
    path: String,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    socket: SocketArg,
}

pub fn run(a: Args) -> Outcome {
    let conn = a.socket.connect()?;
    let mut rows = Vec::new();
    walk(&conn, &a.path, &mut rows)?;
    if a.json {
        for e in &rows {
            println!("{}", entry_json(e));
        }
    } else {
        print!("{}", table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

fn walk(conn: &Connection, path: &str, rows: &mut Vec<Entry>) -> Result<(), comesg::Error> {
    for e in conn.list(path)? {
        let recurse = e.kind == EntryKind::Namespace && e.name.as_str() != path;
        let name = e.name.to_string();
        rows.push(e);
        if recurse {
            walk(conn, &name, rows)?;
        }
    }
    Ok(())
}

fn kind(e: &Entry) -> &'static str {
    match e.kind {
        EntryKind::Namespace => "namespace",
        EntryKind::Port(PortKind::Channel) => "channel",
        EntryKind::Port(PortKind::Mutex) if e.mutex.is_some_and(|m| m.data_size > 0) => "shared",
        EntryKind::Port(PortKind::Mutex) => "comutex",
        EntryKind::Port(PortKind::Service) => "service",
        EntryKind::Port(PortKind::Pipe) => "pipe",
        EntryKind::Port(PortKind::Carrier) => "carrier",
        EntryKind::Dead => "dead",
    }
}

/// The listing as an aligned table.
pub fn table(rows: &[Entry]) -> String {
    let mut out = format!(
        "{:<32} {:<9} {:>4} {:>4} {:>6} {:>10} {:>8} {:>8} {:>5}  {}\n",
        "NAME", "KIND", "MODE", "REFS", "DEPTH", "SHAPE", "SENT", "RECV", "LOST", "HOLDERS (pid:rights)"
    );
    for e in rows {
        let port = matches!(e.kind, EntryKind::Port(PortKind::Channel | PortKind::Carrier));
        let refs = if matches!(e.kind, EntryKind::Port(_)) { e.refs.to_string() } else { String::new() };
        let slots = match (e.channel, e.mutex) {
            (Some(c), _) => format!("{}x{}", c.slots, c.slot_size),
            (_, Some(m)) if m.data_size > 0 => format!("{} B", m.data_size),
            _ => match (e.service, e.pipe) {
                (Some(s), _) => format!("{}w {}", s.workers, s.slot_size),
                (_, Some(p)) => format!("{}x{}", p.receivers, p.buffer),
                _ => e.carrier.map(|c| format!("{} MiB", c.arena >> 20)).unwrap_or_default(),
            },
        };
        let locks = match (e.mutex, e.service) {
            (Some(_), _) => format!(" [locks {}, owner deaths {}]", e.locks, e.owner_deaths),
            (_, Some(sv)) => {
                let per: Vec<String> = e.worker_calls.iter().map(u64::to_string).collect();
                let total: u64 = e.worker_calls.iter().sum();
                format!(" [{} workers, {total} calls: {}]", sv.workers, per.join("/"))
            }
            _ => String::new(),
        };
        let holders: Vec<String> = e.holders.iter().map(|h| format!("{}:{}", h.pid, h.rights)).collect();
        let mut more = String::new();
        if (e.refs as usize) > e.holders.len() {
            more = format!(" (+{})", e.refs as usize - e.holders.len());
        }
        let opt = |v: u64| if port { v.to_string() } else { String::new() };
        out.push_str(&format!(
            "{:<32} {:<9} {:>4} {:>4} {:>6} {:>10} {:>8} {:>8} {:>5}  {}{}{}{}\n",
            e.name.as_str(),
            kind(e),
            format!("{:03o}", e.mode),
            refs,
            opt(e.depth),
            slots,
            opt(e.sent_msgs),
            opt(e.received_msgs),
            opt(e.lost),
            holders.join(" "),
            more,
            locks,
            if e.persistent { " [persistent]" } else { "" },
        ));
    }
    out
}

fn entry_json(e: &Entry) -> serde_json::Value {
    serde_json::json!({
        "name": e.name.as_str(),
        "kind": kind(e),
        "uid": e.uid,
        "gid": e.gid,
        "mode": format!("{:03o}", e.mode),
        "persistent": e.persistent,
        "refs": e.refs,
        "holders": e.holders.iter().map(|h| serde_json::json!({"pid": h.pid, "rights": h.rights.to_string()})).collect::<Vec<_>>(),
        "slot_size": e.channel.map(|c| c.slot_size),
        "slots": e.channel.map(|c| c.slots),
        "value_size": e.mutex.map(|m| m.data_size),
        "buffer": e.pipe.map(|p| p.buffer),
        "receivers": e.pipe.map(|p| p.receivers).or(e.carrier.map(|c| c.receivers)),
        "arena": e.carrier.map(|c| c.arena),
        "arena_used": e.carrier.map(|_| e.arena_used),
        "locks": e.mutex.map(|_| e.locks),
        "owner_deaths": e.mutex.map(|_| e.owner_deaths),
        "workers": e.service.map(|s| s.workers),
        "worker_calls": e.service.map(|_| e.worker_calls.clone()),
        "depth": e.depth,
        "sent_msgs": e.sent_msgs,
        "sent_bytes": e.sent_bytes,
        "received_msgs": e.received_msgs,
        "received_bytes": e.received_bytes,
        "lost": e.lost,
    })
}
