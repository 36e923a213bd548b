//! The namespace tree: names, namespaces, permissions, dead names.
//!
//! The tree is a flat ordered map from full name to node, so a namespace's
//! entries are a range of keys. A node is a namespace, a live object, or a
//! dead name (its object was destroyed; creating it again succeeds).

use std::collections::{BTreeMap, HashMap, VecDeque};

use comesg_proto::{KernelError, Name};

use super::ipc::ObjectId;
use super::{allowed, Cred, Perm};

/// What a name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A namespace.
    Namespace,
    /// A live object.
    Object(ObjectId),
    /// A dead name.
    Dead,
}

/// One node of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// What it is.
    pub kind: NodeKind,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
}

/// Mode of namespaces created implicitly on the way to a new object.
pub const IMPLICIT_NAMESPACE_MODE: u32 = 0o755;

/// The namespace that holds every user's private namespace.
pub const USERS: &str = "/user";
/// Mode of [`USERS`]: anyone may pass through it, nobody but its owner may
/// list it (so users cannot even see which other users have a namespace).
pub const USERS_MODE: u32 = 0o711;
/// Mode of a user's private namespace `/user/UID`.
pub const HOME_MODE: u32 = 0o700;

/// The namespace tree.
#[derive(Debug)]
pub struct Names {
    nodes: BTreeMap<Name, Node>,
    /// Per owner, its names in the order they died (some since revived or
    /// unlinked): the oldest dead names are forgotten past
    /// [`DEAD_NAMES_PER_USER`].
    deaths: HashMap<u32, VecDeque<Name>>,
}

/// Dead names kept per owner. A dead name tells a client that the object
/// it looks for existed and is gone (a provider to wait for, say); past
/// this many, the oldest are removed, so that a program creating names
/// that are each used once does not grow the kernel for ever.
pub const DEAD_NAMES_PER_USER: usize = 1024;

fn denied(name: &Name, perm: Perm) -> KernelError {
    KernelError::PermissionDenied { name: name.clone(), need: perm.describe().into() }
}

impl Names {
    /// A tree with only the root, owned by `uid`/`gid` with `mode`.
    pub fn new(uid: u32, gid: u32, mode: u32) -> Names {
        let mut nodes = BTreeMap::new();
        nodes.insert(Name::root(), Node { kind: NodeKind::Namespace, uid, gid, mode });
        Names { nodes, deaths: HashMap::new() }
    }

    /// Makes sure user `uid` has its private namespace `/user/UID` (owned by
    /// it, mode 0700), creating `/user` (owned by the tree's root owner,
    /// mode 0711) first if needed. A name there that is not a namespace is
    /// left alone.
    pub fn ensure_home(&mut self, uid: u32, gid: u32) {
        let Ok(users) = Name::root().join(&USERS[1..]) else { return };
        if !self.nodes.contains_key(&users) {
            let root = &self.nodes[&Name::root()];
            let node = Node { kind: NodeKind::Namespace, uid: root.uid, gid: root.gid, mode: USERS_MODE };
            self.nodes.insert(users.clone(), node);
        }
        if let Ok(home) = users.join(&uid.to_string()) {
            self.nodes.entry(home).or_insert(Node { kind: NodeKind::Namespace, uid, gid, mode: HOME_MODE });
        }
    }

    /// The node at `name`, if any, without permission checks.
    pub fn get(&self, name: &Name) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// Checks search permission on every namespace above `name`, and that
    /// each of them is a namespace.
    fn check_path(&self, name: &Name, cred: Cred) -> Result<(), KernelError> {
        let mut cur = Name::root();
        let comps: Vec<&str> = name.components().collect();
        for (i, c) in comps.iter().enumerate() {
            let node = match self.nodes.get(&cur) {
                Some(n) => n,
                None => return Err(KernelError::NotFound(cur)),
            };
            if node.kind != NodeKind::Namespace {
                return Err(KernelError::NotANamespace(cur));
            }
            if !allowed(cred, node.uid, node.gid, node.mode, Perm::Search) {
                return Err(denied(&cur, Perm::Search));
            }
            if i + 1 < comps.len() {
                cur = cur.join(c).map_err(|e| KernelError::InvalidArgument(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Looks up the live object at `name`.
    pub fn resolve(&self, name: &Name, cred: Cred) -> Result<ObjectId, KernelError> {
        self.check_path(name, cred)?;
        match self.nodes.get(name).map(|n| n.kind) {
            Some(NodeKind::Object(id)) => Ok(id),
            Some(NodeKind::Dead) => Err(KernelError::DeadName(name.clone())),
            Some(NodeKind::Namespace) => Err(KernelError::IsANamespace(name.clone())),
            None => Err(KernelError::NotFound(name.clone())),
        }
    }

    /// Makes sure the namespaces above `name` exist, creating missing ones
    /// (owned by the caller, mode [`IMPLICIT_NAMESPACE_MODE`]) where the
    /// caller may write, and that the caller may create in the parent.
    /// Returns what currently sits at `name`.
    pub fn prepare_create(&mut self, name: &Name, cred: Cred) -> Result<Option<NodeKind>, KernelError> {
        let (parent, _) = name.split_last().ok_or_else(|| KernelError::Exists(name.clone()))?;
        self.ensure_namespace(&parent, cred)?;
        let p = self.nodes.get(&parent).ok_or_else(|| KernelError::NotFound(parent.clone()))?;
        if !allowed(cred, p.uid, p.gid, p.mode, Perm::Write) {
            return Err(denied(&parent, Perm::Write));
        }
        Ok(self.nodes.get(name).map(|n| n.kind))
    }

    fn ensure_namespace(&mut self, ns: &Name, cred: Cred) -> Result<(), KernelError> {
        let mut cur = Name::root();
        for c in ns.components().collect::<Vec<_>>() {
            let node = self.nodes.get(&cur).ok_or_else(|| KernelError::NotFound(cur.clone()))?;
            if node.kind != NodeKind::Namespace {
                return Err(KernelError::NotANamespace(cur));
            }
            if !allowed(cred, node.uid, node.gid, node.mode, Perm::Search) {
                return Err(denied(&cur, Perm::Search));
            }
            let child = cur.join(c).map_err(|e| KernelError::InvalidArgument(e.to_string()))?;
            match self.nodes.get(&child).map(|n| n.kind) {
                Some(NodeKind::Namespace) => {}
                Some(_) => return Err(KernelError::NotANamespace(child)),
                None => {
                    if !allowed(cred, node.uid, node.gid, node.mode, Perm::Write) {
                        return Err(denied(&cur, Perm::Write));
                    }
                    let n =
                        Node { kind: NodeKind::Namespace, uid: cred.uid, gid: cred.gid, mode: IMPLICIT_NAMESPACE_MODE };
                    self.nodes.insert(child.clone(), n);
                }
            }
            cur = child;
        }
        Ok(())
    }

    /// Binds `name` to an object (replacing a dead name). The caller checked
    /// with [`Names::prepare_create`] first.
    pub fn bind(&mut self, name: Name, id: ObjectId, cred: Cred, mode: u32) {
        let node = Node { kind: NodeKind::Object(id), uid: cred.uid, gid: cred.gid, mode: mode & 0o777 };
        self.nodes.insert(name, node);
    }

    /// Creates a namespace.
    pub fn mkdir(&mut self, name: &Name, cred: Cred, mode: u32) -> Result<(), KernelError> {
        match self.prepare_create(name, cred)? {
            Some(NodeKind::Dead) | None => {
                let node = Node { kind: NodeKind::Namespace, uid: cred.uid, gid: cred.gid, mode: mode & 0o777 };
                self.nodes.insert(name.clone(), node);
                Ok(())
            }
            Some(_) => Err(KernelError::Exists(name.clone())),
        }
    }

    /// Turns the name of a destroyed object into a dead name.
    pub fn mark_dead(&mut self, name: &Name, id: ObjectId) {
        let Some(n) = self.nodes.get_mut(name) else { return };
        if n.kind != NodeKind::Object(id) {
            return;
        }
        n.kind = NodeKind::Dead;
        let deaths = self.deaths.entry(n.uid).or_default();
        deaths.push_back(name.clone());
        while deaths.len() > DEAD_NAMES_PER_USER {
            // An entry may be stale (revived or unlinked since): only a name
            // still dead is removed.
            if let Some(old) = deaths.pop_front() {
                if self.nodes.get(&old).is_some_and(|n| n.kind == NodeKind::Dead) {
                    self.nodes.remove(&old);
                }
            }
        }
    }

    /// Removes a name. Returns the object it named, if it was live.
    pub fn unlink(&mut self, name: &Name, cred: Cred) -> Result<Option<ObjectId>, KernelError> {
        let (parent, _) = name.split_last().ok_or_else(|| denied(name, Perm::Write))?;
        self.check_path(name, cred)?;
        let kind = self.nodes.get(name).map(|n| n.kind).ok_or_else(|| KernelError::NotFound(name.clone()))?;
        let p = self.nodes.get(&parent).ok_or_else(|| KernelError::NotFound(parent.clone()))?;
        if !allowed(cred, p.uid, p.gid, p.mode, Perm::Write) {
            return Err(denied(&parent, Perm::Write));
        }
        if kind == NodeKind::Namespace && self.children(name).next().is_some() {
            return Err(KernelError::NotEmpty(name.clone()));
        }
        self.nodes.remove(name);
        Ok(match kind {
            NodeKind::Object(id) => Some(id),
            _ => None,
        })
    }

    fn children<'a>(&'a self, ns: &'a Name) -> impl Iterator<Item = (&'a Name, &'a Node)> + 'a {
        let prefix = if ns.is_root() { "/".to_string() } else { format!("{ns}/") };
        let plen = prefix.len();
        // Every name below `ns` starts with `prefix`, and those form one
        // contiguous run in string order starting at `prefix` itself; a name
        // like `/a-x` sorts between `/a` and `/a/...`, so the scan must start
        // at the prefix, not at `ns`.
        self.nodes
            .range::<str, _>((std::ops::Bound::Included(prefix.as_str()), std::ops::Bound::Unbounded))
            .take_while(move |(k, _)| k.as_str().starts_with(&prefix))
            .filter(move |(k, _)| k.as_str().len() > plen && !k.as_str()[plen..].contains('/'))
    }

    /// The entries of namespace `name` (or the node itself if it is not a
    /// namespace), from `offset`, at most `limit` of them, and whether more follow.
    pub fn list(
        &self,
        name: &Name,
        cred: Cred,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<(Name, Node)>, bool), KernelError> {
        self.check_path(name, cred)?;
        let node = self.nodes.get(name).ok_or_else(|| KernelError::NotFound(name.clone()))?;
        if node.kind != NodeKind::Namespace {
            return Ok((vec![(name.clone(), node.clone())], false));
        }
        if !allowed(cred, node.uid, node.gid, node.mode, Perm::Read) {
            return Err(denied(name, Perm::Read));
        }
        let mut it = self.children(name).skip(offset);
        let page: Vec<_> = it.by_ref().take(limit).map(|(k, v)| (k.clone(), v.clone())).collect();
        Ok((page, it.next().is_some()))
    }

    /// Number of nodes (namespaces, objects and dead names).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether only the root exists.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Cred = Cred { pid: 10, uid: 1000, gid: 1000 };
    const OTHER: Cred = Cred { pid: 11, uid: 1001, gid: 1001 };

    fn n(s: &str) -> Name {
        Name::try_from(s).unwrap()
    }

    #[test]
    fn create_lookup_dead_and_recreate() {
        let mut t = Names::new(1000, 1000, 0o755);
        assert_eq!(t.prepare_create(&n("/app/x"), ME), Ok(None));
        t.bind(n("/app/x"), ObjectId(1), ME, 0o600);
        assert_eq!(t.resolve(&n("/app/x"), ME), Ok(ObjectId(1)));
        assert_eq!(t.get(&n("/app")).unwrap().kind, NodeKind::Namespace);
        t.mark_dead(&n("/app/x"), ObjectId(1));
        assert_eq!(t.resolve(&n("/app/x"), ME), Err(KernelError::DeadName(n("/app/x"))));
        assert_eq!(t.prepare_create(&n("/app/x"), ME), Ok(Some(NodeKind::Dead)));
        t.bind(n("/app/x"), ObjectId(2), ME, 0o600);
        assert_eq!(t.resolve(&n("/app/x"), ME), Ok(ObjectId(2)));
        assert_eq!(t.resolve(&n("/app/x/y"), ME), Err(KernelError::NotANamespace(n("/app/x"))));
        assert_eq!(t.resolve(&n("/nope"), ME), Err(KernelError::NotFound(n("/nope"))));
    }

    #[test]
    fn permissions_are_checked() {
        let mut t = Names::new(1000, 1000, 0o755);
        t.mkdir(&n("/private"), ME, 0o700).unwrap();
        t.prepare_create(&n("/private/x"), ME).unwrap();
        t.bind(n("/private/x"), ObjectId(1), ME, 0o600);
        assert!(matches!(t.resolve(&n("/private/x"), OTHER), Err(KernelError::PermissionDenied { .. })));
        assert!(matches!(t.prepare_create(&n("/y"), OTHER), Err(KernelError::PermissionDenied { .. })));
        assert!(matches!(t.list(&n("/private"), OTHER, 0, 10), Err(KernelError::PermissionDenied { .. })));
        assert!(matches!(t.unlink(&n("/private/x"), OTHER), Err(KernelError::PermissionDenied { .. })));
        assert_eq!(t.unlink(&n("/private"), ME), Err(KernelError::NotEmpty(n("/private"))));
        assert_eq!(t.unlink(&n("/private/x"), ME), Ok(Some(ObjectId(1))));
        assert_eq!(t.unlink(&n("/private"), ME), Ok(None));
    }

    #[test]
    fn only_the_latest_dead_names_are_kept_per_user() {
        let mut t = Names::new(0, 0, 0o777);
        let total = DEAD_NAMES_PER_USER + 10;
        let die = |t: &mut Names, name: &str, who: Cred, id: u64| {
            let name = n(name);
            t.prepare_create(&name, who).unwrap();
            t.bind(name.clone(), ObjectId(id), who, 0o600);
            t.mark_dead(&name, ObjectId(id));
        };
        for i in 0..total {
            die(&mut t, &format!("/d{i}"), ME, i as u64);
        }
        assert!(t.get(&n("/d0")).is_none() && t.get(&n("/d9")).is_none(), "the oldest are forgotten");
        assert_eq!(t.get(&n("/d10")).map(|x| x.kind), Some(NodeKind::Dead));
        assert_eq!(t.get(&n(&format!("/d{}", total - 1))).map(|x| x.kind), Some(NodeKind::Dead));
        // A name revived since it died is not removed by its old entry.
        let again = n("/d10");
        t.bind(again.clone(), ObjectId(9999), ME, 0o600);
        for i in 0..20u64 {
            die(&mut t, &format!("/e{i}"), OTHER, 100_000 + i);
            die(&mut t, &format!("/f{i}"), ME, 200_000 + i);
        }
        assert_eq!(t.get(&again).map(|x| x.kind), Some(NodeKind::Object(ObjectId(9999))));
        // Another user's dead names count on their own.
        assert_eq!(t.get(&n("/e0")).map(|x| x.kind), Some(NodeKind::Dead));
    }

    #[test]
    fn siblings_that_sort_between_do_not_hide_children() {
        let mut t = Names::new(1000, 1000, 0o755);
        for name in ["/a/x", "/a-x", "/a.b", "/a/y/z"] {
            t.prepare_create(&n(name), ME).unwrap();
            t.bind(n(name), ObjectId(1), ME, 0o600);
        }
        let (page, _) = t.list(&n("/a"), ME, 0, 10).unwrap();
        assert_eq!(page.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["/a/x", "/a/y"]);
        assert_eq!(t.unlink(&n("/a"), ME), Err(KernelError::NotEmpty(n("/a"))));
    }

    #[test]
    fn lists_direct_children_in_pages() {
        let mut t = Names::new(1000, 1000, 0o755);
        for i in 0..5 {
            let name = n(&format!("/a/p{i}"));
            t.prepare_create(&name, ME).unwrap();
            t.bind(name, ObjectId(i), ME, 0o600);
        }
        t.prepare_create(&n("/a/sub/deep"), ME).unwrap();
        t.prepare_create(&n("/ab"), ME).unwrap();
        t.bind(n("/ab"), ObjectId(9), ME, 0o600);
        let (page, more) = t.list(&n("/a"), ME, 0, 4).unwrap();
        assert_eq!(page.len(), 4);
        assert!(more);
        let (rest, more) = t.list(&n("/a"), ME, 4, 4).unwrap();
        assert_eq!(rest.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["/a/p4", "/a/sub"]);
        assert!(!more);
        let (root, _) = t.list(&Name::root(), ME, 0, 10).unwrap();
        assert_eq!(root.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["/a", "/ab"]);
    }
}
