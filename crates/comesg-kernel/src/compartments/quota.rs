//! Per-user quotas: what each user (uid) holds in the kernel, checked
//! against limits before anything is granted, so that one user cannot
//! exhaust the kernel for the others. A plain state machine: the request
//! handler reports each grant and release.

use std::collections::HashMap;

use comesg_proto::KernelError;

use super::ipc::{ClientId, ObjectId};
use comesg_proto::HandleId;

/// What one user may hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserLimits {
    /// Open connections.
    pub connections: usize,
    /// Live objects the user created.
    pub objects: usize,
    /// Handles held over all of the user's connections.
    pub handles: usize,
    /// Bytes of shared memory in the objects the user created.
    pub memory: u64,
}

impl Default for UserLimits {
    fn default() -> Self {
        UserLimits { connections: 4096, objects: 16_384, handles: 65_536, memory: 16 << 30 }
    }
}

/// What one user holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Open connections.
    pub connections: usize,
    /// Live objects created.
    pub objects: usize,
    /// Handles held.
    pub handles: usize,
    /// Bytes of shared memory in the objects created.
    pub memory: u64,
}

/// Every user's usage, and who created each live object.
#[derive(Debug, Default)]
pub struct Quotas {
    limits: UserLimits,
    users: HashMap<u32, Usage>,
    owners: HashMap<ObjectId, (u32, u64)>,
    /// Memory that a handle brings into being (a service caller's call
    /// segment), charged to the handle's user until it closes.
    by_handle: HashMap<(ClientId, HandleId), (u32, u64)>,
}

fn over(uid: u32, what: &str, limit: impl std::fmt::Display) -> KernelError {
    KernelError::Limit(format!("user {uid} already holds {limit} {what}, the most one user may"))
}

impl Quotas {
    /// Quotas with `limits` for every user.
    pub fn new(limits: UserLimits) -> Quotas {
        Quotas { limits, ..Quotas::default() }
    }

    /// What `uid` holds now.
    pub fn usage(&self, uid: u32) -> Usage {
        self.users.get(&uid).copied().unwrap_or_default()
    }

    fn user(&mut self, uid: u32) -> &mut Usage {
        self.users.entry(uid).or_default()
    }

    /// Every user with a record, and what it holds.
    pub fn users(&self) -> impl Iterator<Item = (u32, Usage)> + '_ {
        self.users.iter().map(|(u, usage)| (*u, *usage))
    }

    /// The creator of each live object counted.
    pub fn owner(&self, obj: ObjectId) -> Option<u32> {
        self.owners.get(&obj).map(|(uid, _)| *uid)
    }

    /// A new connection of `uid`, if it may have one more.
    pub fn connect(&mut self, uid: u32) -> Result<(), KernelError> {
        if self.usage(uid).connections >= self.limits.connections {
            return Err(over(uid, "connections", self.limits.connections));
        }
        self.user(uid).connections += 1;
        Ok(())
    }

    /// A connection of `uid` closed, releasing `handles` handles.
    pub fn disconnect(&mut self, uid: u32, handles: usize) {
        let u = self.user(uid);
        u.connections = u.connections.saturating_sub(1);
        u.handles = u.handles.saturating_sub(handles);
        self.forget_if_idle(uid);
    }

    /// Whether `uid` may create one more object of `memory` bytes.
    pub fn check_object(&self, uid: u32, memory: u64) -> Result<(), KernelError> {
        let u = self.usage(uid);
        if u.objects >= self.limits.objects {
            return Err(over(uid, "objects", self.limits.objects));
        }
        self.check_memory(uid, memory)
    }

    /// `handle` of `client` (a connection of `uid`) brought `memory` bytes
    /// into being: charged until [`Quotas::handle_memory_released`].
    pub fn handle_memory(&mut self, client: ClientId, handle: HandleId, uid: u32, memory: u64) {
        if memory > 0 {
            let u = self.user(uid);
            u.memory = u.memory.saturating_add(memory);
            self.by_handle.insert((client, handle), (uid, memory));
        }
    }

    /// The handle closed: its memory is given back (nothing if none).
    pub fn handle_memory_released(&mut self, client: ClientId, handle: HandleId) {
        if let Some((uid, memory)) = self.by_handle.remove(&(client, handle)) {
            let u = self.user(uid);
            u.memory = u.memory.saturating_sub(memory);
            self.forget_if_idle(uid);
        }
    }

    /// Whether `uid` may hold `memory` more bytes of shared memory.
    pub fn check_memory(&self, uid: u32, memory: u64) -> Result<(), KernelError> {
        let u = self.usage(uid);
        if u.memory.saturating_add(memory) > self.limits.memory {
            return Err(KernelError::Limit(format!(
                "user {uid} holds {} bytes of shared memory; {memory} more would pass the {} one user may",
                u.memory, self.limits.memory
            )));
        }
        Ok(())
    }

    /// `uid` created `obj`, of `memory` bytes.
    pub fn object_created(&mut self, uid: u32, obj: ObjectId, memory: u64) {
        let u = self.user(uid);
        u.objects += 1;
        u.memory = u.memory.saturating_add(memory);
        self.owners.insert(obj, (uid, memory));
    }

    /// `obj` was destroyed: its creator gets its share back.
    pub fn object_destroyed(&mut self, obj: ObjectId) {
        if let Some((uid, memory)) = self.owners.remove(&obj) {
            let u = self.user(uid);
            u.objects = u.objects.saturating_sub(1);
            u.memory = u.memory.saturating_sub(memory);
            self.forget_if_idle(uid);
        }
    }

    /// Whether `uid` may hold one more handle.
    pub fn check_handle(&self, uid: u32) -> Result<(), KernelError> {
        if self.usage(uid).handles >= self.limits.handles {
            return Err(over(uid, "handles", self.limits.handles));
        }
        Ok(())
    }

    /// `uid` got a handle.
    pub fn handle_granted(&mut self, uid: u32) {
        self.user(uid).handles += 1;
    }

    /// `uid` closed a handle.
    pub fn handle_closed(&mut self, uid: u32) {
        let u = self.user(uid);
        u.handles = u.handles.saturating_sub(1);
        self.forget_if_idle(uid);
    }

    /// Whether each user's memory is the sum of what its objects and its
    /// handles were charged (for the accounting check).
    pub fn memory_adds_up(&self) -> bool {
        let mut sum: HashMap<u32, u64> = HashMap::new();
        for (uid, m) in self.owners.values().chain(self.by_handle.values()) {
            *sum.entry(*uid).or_default() += m;
        }
        self.users.iter().all(|(uid, u)| u.memory == sum.get(uid).copied().unwrap_or(0))
            && sum.iter().all(|(uid, m)| *m == 0 || self.users.contains_key(uid))
    }

    /// The handles charged for memory.
    pub fn charged_handles(&self) -> impl Iterator<Item = (ClientId, HandleId)> + '_ {
        self.by_handle.keys().copied()
    }

    fn forget_if_idle(&mut self, uid: u32) {
        if self.users.get(&uid).is_some_and(|u| *u == Usage::default()) {
            self.users.remove(&uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Quotas {
        Quotas::new(UserLimits { connections: 2, objects: 2, handles: 3, memory: 1000 })
    }

    #[test]
    fn each_user_is_held_to_its_own_limits() {
        let mut q = small();
        q.connect(1).unwrap();
        q.connect(1).unwrap();
        assert!(matches!(q.connect(1), Err(KernelError::Limit(_))));
        q.connect(2).unwrap(); // another user is not affected
        q.object_created(1, ObjectId(1), 600);
        assert!(matches!(q.check_object(1, 600), Err(KernelError::Limit(_))), "memory");
        q.check_object(1, 400).unwrap();
        q.object_created(1, ObjectId(2), 10);
        assert!(matches!(q.check_object(1, 1), Err(KernelError::Limit(_))), "objects");
        q.check_object(2, 900).unwrap();
        q.object_destroyed(ObjectId(1));
        q.check_object(1, 900).unwrap();
        for _ in 0..3 {
            q.check_handle(1).unwrap();
            q.handle_granted(1);
        }
        assert!(matches!(q.check_handle(1), Err(KernelError::Limit(_))));
        q.handle_closed(1);
        q.check_handle(1).unwrap();
    }

    #[test]
    fn a_user_that_holds_nothing_is_forgotten() {
        let mut q = small();
        q.connect(7).unwrap();
        q.handle_granted(7);
        q.object_created(7, ObjectId(9), 5);
        q.disconnect(7, 1);
        q.object_destroyed(ObjectId(9));
        assert!(q.users.is_empty() && q.owners.is_empty());
        q.object_destroyed(ObjectId(9)); // twice: no effect
        assert_eq!(q.usage(7), Usage::default());
    }
}
