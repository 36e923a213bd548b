//! The exporting side: which local names are offered to other hosts, what
//! each is, and the links that carry messages to and from them.

use std::collections::HashMap;

use comesg::{Connection, EntryKind, PortKind, Rights};
use zenoh::liveliness::LivelinessToken;

use crate::wire::{ExportKind, ExportMeta};

/// One `--export` flag: a name (a namespace or a single port) and what
/// other hosts may do with what is under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSpec {
    /// The local name.
    pub prefix: String,
    /// SEND, RECV or both: an importer never gets more.
    pub rights: Rights,
}

impl std::str::FromStr for ExportSpec {
    type Err = String;

    /// `PATH`, `PATH=send`, `PATH=recv` or `PATH=send,recv`.
    fn from_str(s: &str) -> Result<ExportSpec, String> {
        let (path, rights) = match s.split_once('=') {
            Some((p, r)) => (p, parse_rights(r)?),
            None => (s, Rights::SEND | Rights::RECV),
        };
        comesg_proto::Name::try_from(path).map_err(|e| format!("{path}: {e}"))?;
        Ok(ExportSpec { prefix: path.to_string(), rights })
    }
}

fn parse_rights(s: &str) -> Result<Rights, String> {
    let mut r = Rights::NONE;
    for part in s.split(',') {
        r = r | match part.trim() {
            "send" => Rights::SEND,
            "recv" => Rights::RECV,
            other => return Err(format!("unknown right {other:?} (send, recv)")),
        };
    }
    Ok(r)
}

/// A name currently offered, with the token that tells other hosts so.
pub struct Exported {
    /// What it is.
    pub meta: ExportMeta,
    /// Declared while the name is offered; dropping it withdraws the offer.
    pub _token: LivelinessToken,
}

/// Every live channel and service under the export prefixes, with the
/// rights each may be used with remotely. A name under two prefixes gets
/// the rights of the most specific (longest) one, the more deliberate rule.
/// None when the kernel could not be asked (the previous answer stands);
/// a prefix that names nothing is simply empty.
pub fn scan(conn: &Connection, specs: &[ExportSpec]) -> Option<HashMap<String, ExportMeta>> {
    let mut found: HashMap<String, (usize, ExportMeta)> = HashMap::new();
    for spec in specs {
        let mut stack = vec![spec.prefix.clone()];
        let mut budget = 100_000usize;
        while let Some(path) = stack.pop() {
            let entries = match conn.list(&path) {
                Ok(e) => e,
                Err(comesg::Error::Kernel(e)) => {
                    // Not there (yet), or not ours to list.
                    tracing::debug!("export {path}: {e}");
                    continue;
                }
                Err(e) => {
                    tracing::warn!("export {path}: {e}");
                    return None;
                }
            };
            for e in entries {
                budget = budget.saturating_sub(1);
                if budget == 0 {
                    tracing::warn!("export {}: more than 100000 names; the rest are not offered", spec.prefix);
                    break;
                }
                let name = e.name.as_str().to_string();
                let kind = match e.kind {
                    EntryKind::Namespace if name != path => {
                        stack.push(name);
                        continue;
                    }
                    EntryKind::Port(PortKind::Channel) => {
                        e.channel.map(|c| ExportKind::Channel { slot_size: c.slot_size, slots: c.slots })
                    }
                    EntryKind::Port(PortKind::Carrier) => {
                        e.carrier.filter(|c| c.max_message <= crate::wire::MAX_MESSAGE).map(ExportKind::Carrier)
                    }
                    // A service whose provider has gone is not offered,
                    // even while callers still hold it.
                    EntryKind::Port(PortKind::Service) if e.holders.iter().any(|h| h.rights.contains(Rights::RECV)) => {
                        e.service.map(ExportKind::Service)
                    }
                    _ => None,
                };
                let Some(kind) = kind else { continue };
                let depth = spec.prefix.len();
                if found.get(&name).is_none_or(|(d, _)| *d < depth) {
                    found.insert(name, (depth, ExportMeta { kind, rights: spec.rights }));
                }
            }
        }
    }
    Some(found.into_iter().map(|(k, (_, m))| (k, m)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_flags() {
        let s: ExportSpec = "/app/sensors".parse().unwrap();
        assert_eq!(s.rights, Rights::SEND | Rights::RECV);
        let s: ExportSpec = "/app/cmd=send".parse().unwrap();
        assert_eq!(s.rights, Rights::SEND);
        let s: ExportSpec = "/app/x=recv,send".parse().unwrap();
        assert_eq!(s.rights, Rights::SEND | Rights::RECV);
        assert!("/app/x=write".parse::<ExportSpec>().is_err());
        assert!("app".parse::<ExportSpec>().is_err());
    }
}
