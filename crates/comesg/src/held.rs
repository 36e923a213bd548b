//! A handle's reference in the microkernel, given back when dropped.

use comesg_proto::{HandleId, Name};

use crate::{Connection, Error};

/// One reference held through a connection. Dropping it closes the handle
/// (silently); [`Held::close`] reports the kernel's answer.
#[derive(Debug)]
pub(crate) struct Held {
    conn: Connection,
    id: Option<HandleId>,
    /// The object's name, for errors once the kernel is gone.
    name: Name,
}

impl Held {
    pub(crate) fn new(conn: Connection, id: HandleId, name: &Name) -> Held {
        Held { conn, id: Some(id), name: name.clone() }
    }

    pub(crate) fn id(&self) -> HandleId {
        self.id.unwrap_or(HandleId(0))
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn close(mut self) -> Result<(), Error> {
        match self.id.take() {
            Some(id) => self.conn.close_handle(id).map_err(|e| e.for_handle(&self.name)),
            None => Ok(()),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let _ = self.conn.close_handle(id);
        }
    }
}
