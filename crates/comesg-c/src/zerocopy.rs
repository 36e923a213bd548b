//! Zero-copy forms: a COCHANNEL slot loaned for writing in place and a
//! message received in place; a COCARRIER message built in place (sealed
//! when sent) and one read in place in the arena.
//!
//! Each object borrows its port: the port must stay open until the object
//! is sent, released or cancelled. Every object is freed by the call that
//! ends it (`_send`, `_release`, `_cancel`), whether that call succeeds or
//! not.

use std::ffi::c_void;

use comesg::{Building, CarrierMessage, RecvError, RecvSlot, SendError, SendLoan};

use crate::args::{self, obj, obj_mut, wait, Wait};
use crate::error::{guard, Failure};
use crate::handles::{attachments, comesg_attach, comesg_handle};
use crate::{comesg_carrier, comesg_channel};

/// A COCHANNEL slot loaned for writing a message in place.
pub struct comesg_loan {
    loan: SendLoan<'static>,
}

/// A COCHANNEL message held in place until released.
pub struct comesg_slot {
    slot: RecvSlot<'static>,
}

/// A COCARRIER message being built in place.
pub struct comesg_building {
    b: Building<'static>,
}

/// A COCARRIER message read in place (read-only), held until released.
pub struct comesg_message {
    m: CarrierMessage<'static>,
}

/// Takes the object behind `p` back from C (NULL refused).
///
/// # Safety
/// `p` is NULL or came from [`args::out`] and is not used after.
unsafe fn take<T>(p: *mut T, what: &str) -> Result<T, Failure> {
    if p.is_null() {
        return Err(crate::error::null(what));
    }
    // SAFETY: made by Box::into_raw in `args::out`, taken once.
    Ok(*unsafe { Box::from_raw(p) })
}

/// Stores `len` through `out` if it is not NULL.
///
/// # Safety
/// `out` is NULL or writable storage for one `usize`.
unsafe fn put_len(out: *mut usize, len: usize) {
    if !out.is_null() {
        // SAFETY: non-null, writable by the caller's contract.
        unsafe { out.write(len) };
    }
}

/// Loans the next free slot of `ch` for writing a message in place,
/// waiting while the channel is full. Write at most the slot size into
/// `comesg_loan_data`, then `comesg_loan_send`; `comesg_loan_cancel`
/// sends nothing.
///
/// # Safety
/// `ch` is a live channel that stays open until the loan is sent or
/// cancelled; `out` is writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn comesg_channel_loan(
    ch: *const comesg_channel,
    timeout_ms: i64,
    out: *mut *mut comesg_loan,
) -> i32 {
    guard(
        |e| e,
        || {
            args::check_out(out)?;
            // SAFETY: the caller keeps the channel open while the loan lives.
            let c: &'static comesg_channel = unsafe { obj(ch, "the channel")? };
            let loan = match wait(timeout_ms) {
                Wait::Forever => c.port.loan(),
                Wait::Never => c.port.try_loan(),
                Wait::For(d) => c.port.loan_timeout(d),
            }?;
            // SAFETY: checked above.
            unsafe { args::out(out, comesg_loan { loan }) }
        },
    )
}

/// The loaned slot's bytes (writable); stores their number (the slot size)
/// through `cap` unless it is NULL. NULL for a NULL loan.
///
/// # Safety
/// `loan` is NULL or a live loan; `cap` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn comesg_loan_data(loan: *mut comesg_loan, cap: *mut usize) -> *mut c_void {
    // SAFETY: the caller's contract.
    let Ok(l) = (unsafe { obj_mut(loan, "the loan") }) else { return std::ptr::null_mut() };
    let s = l.loan.as_mut_slice();
    // SAFETY: the caller's contract.
    unsafe { put_len(cap, s.len()) };
    s.as_mut_ptr().cast()
}

/// Publishes the loaned slot as a message of its first `len` bytes, and
/// frees the loan (also when it fails: then nothing was sent).
///
/// # Safety
/// `loan` is a live loan, not used after.
#[no_mangle]
pub unsafe extern "C" fn comesg_loan_send(loan: *mut comesg_loan, len: usize) -> i32 {
    guard(
        |e| e,
        || {
            // SAFETY: the caller's contract.
            let l = unsafe { take(loan, "the loan")? };
            l.loan.send(len).map_err(SendError::from)?;
            Ok(0)
        },
    )
}

/// Gives the loaned slot back without sending, and frees the loan (NULL is
/// ignored).
///
/// # Safety
/// `loan` is NULL or a live loan, not used after.
#[no_mangle]
pub unsafe extern "C" fn comesg_loan_cancel(loan: *mut comesg_loan) {
    // SAFETY: forwarded contract.
    unsafe { args::free(loan) }
}

/// Receives the next message of `ch` in place (no copy), waiting until one
/// comes. Read it through `comesg_slot_data`; its slot stays taken until
/// `comesg_slot_release`.
///
/// # Safety
/// `ch` is a live channel that stays open until the slot is released;
/// `out` is writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn comesg_channel_recv_in_place(
    ch: *const comesg_channel,
    timeout_ms: i64,
    out: *mut *mut comesg_slot,
) -> i32 {
    guard(
        |e| e,
        || {
            args::check_out(out)?;
            // SAFETY: the caller keeps the channel open while the slot lives.
            let c: &'static comesg_channel = unsafe { obj(ch, "the channel")? };
            let slot = match wait(timeout_ms) {
                Wait::Forever => c.port.recv_in_place(),
                Wait::Never => c.port.try_recv_in_place(),
                Wait::For(d) => c.port.recv_in_place_timeout(d),
            }?;
            // SAFETY: checked above.
            unsafe { args::out(out, comesg_slot { slot }) }
        },
    )
}

/// The received message's bytes (read-only); stores their number through
/// `len` unless it is NULL. NULL for a NULL slot.
///
/// # Safety
/// `slot` is NULL or a live slot; `len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn comesg_slot_data(slot: *const comesg_slot, len: *mut usize) -> *const c_void {
    // SAFETY: the caller's contract.
    let Ok(s) = (unsafe { obj(slot, "the slot") }) else { return std::ptr::null() };
    // SAFETY: the caller's contract.
    unsafe { put_len(len, s.slot.len()) };
    s.slot.as_ptr().cast()
}

/// Gives the slot back to senders and frees it (NULL is ignored).
///
/// # Safety
/// `slot` is NULL or a live slot, not used after; pointers from
/// `comesg_slot_data` are invalid after.
#[no_mangle]
pub unsafe extern "C" fn comesg_slot_release(slot: *mut comesg_slot) -> i32 {
    if slot.is_null() {
        return 0;
    }
    guard(
        |e| e,
        || {
            // SAFETY: the caller's contract.
            let s = unsafe { take(slot, "the slot")? };
            s.slot.release().map_err(RecvError::from)?;
            Ok(0)
        },
    )
}

/// Starts a COCARRIER message of exactly `len` bytes built in place, in
/// memory of its own: no copy is ever made of it. Write it through
/// `comesg_building_data`, then `comesg_building_send`, which seals it so
/// that nobody (this process included) can change it afterwards.
///
/// # Safety
/// `c` is a live carrier that stays open until the message is sent or
/// cancelled; `out` is writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn comesg_carrier_build(
    c: *const comesg_carrier,
    len: usize,
    out: *mut *mut comesg_building,
) -> i32 {
    guard(
        |e| e,
        || {
            args::check_out(out)?;
            // SAFETY: the caller keeps the carrier open while it lives.
            let car: &'static comesg_carrier = unsafe { obj(c, "the carrier")? };
            let b = car.port.build(len)?;
            // SAFETY: checked above.
            unsafe { args::out(out, comesg_building { b }) }
        },
    )
}

/// The message's bytes (writable until sent); stores their number through
/// `len` unless it is NULL. NULL for a NULL message.
///
/// # Safety
/// `b` is NULL or a live message being built; `len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn comesg_building_data(b: *mut comesg_building, len: *mut usize) -> *mut c_void {
    // SAFETY: the caller's contract.
    let Ok(b) = (unsafe { obj_mut(b, "the message") }) else { return std::ptr::null_mut() };
    let s = b.b.as_mut_slice();
    // SAFETY: the caller's contract.
    unsafe { put_len(len, s.len()) };
    s.as_mut_ptr().cast()
}

/// Seals and sends the message with `n` handles attached (`atts` may be
/// NULL when `n` is 0; their ports must come from the carrier's own
/// connection), waiting up to `timeout_ms` while no receiver has room;
/// frees it (also when it fails: then nothing was sent). Pointers from
/// `comesg_building_data` are invalid after.
///
/// # Safety
/// `b` is a live message being built, not used after; `atts` points to `n`
/// attachments whose ports are live.
#[no_mangle]
pub unsafe extern "C" fn comesg_building_send(
    b: *mut comesg_building,
    atts: *const comesg_attach,
    n: usize,
    timeout_ms: i64,
) -> i32 {
    guard(
        |e| e,
        || {
            // SAFETY: the caller's contract.
            let b = unsafe { take(b, "the message")? };
            // SAFETY: the caller's contract.
            let list = unsafe { attachments(atts, n)? };
            match wait(timeout_ms) {
                Wait::Forever => b.b.send_with(&list),
                Wait::Never => b.b.send_timeout(&list, std::time::Duration::ZERO),
                Wait::For(d) => b.b.send_timeout(&list, d),
            }?;
            Ok(0)
        },
    )
}

/// Drops a message being built without sending it (NULL is ignored).
///
/// # Safety
/// `b` is NULL or a live message being built, not used after.
#[no_mangle]
pub unsafe extern "C" fn comesg_building_cancel(b: *mut comesg_building) {
    // SAFETY: forwarded contract.
    unsafe { args::free(b) }
}

/// Receives the next COCARRIER message in place, waiting until one comes:
/// read it through `comesg_message_data` (memory this process can only
/// read, and nobody can change), take its handles with
/// `comesg_message_take_handles`, then `comesg_message_release`.
///
/// # Safety
/// `c` is a live carrier that stays open until the message is released;
/// `out` is writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn comesg_carrier_recv_in_place(
    c: *const comesg_carrier,
    timeout_ms: i64,
    out: *mut *mut comesg_message,
) -> i32 {
    guard(
        |e| e,
        || {
            args::check_out(out)?;
            // SAFETY: the caller keeps the carrier open while it lives.
            let car: &'static comesg_carrier = unsafe { obj(c, "the carrier")? };
            let m = match wait(timeout_ms) {
                Wait::Forever => car.port.recv(),
                Wait::Never => car.port.try_recv(),
                Wait::For(d) => car.port.recv_timeout(d),
            }?;
            // SAFETY: checked above.
            unsafe { args::out(out, comesg_message { m }) }
        },
    )
}

/// The message's bytes (read-only); stores their number through `len`
/// unless it is NULL. NULL for a NULL message.
///
/// # Safety
/// `m` is NULL or a live message; `len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn comesg_message_data(m: *const comesg_message, len: *mut usize) -> *const c_void {
    // SAFETY: the caller's contract.
    let Ok(m) = (unsafe { obj(m, "the message") }) else { return std::ptr::null() };
    // SAFETY: the caller's contract.
    unsafe { put_len(len, m.m.len()) };
    m.m.as_ptr().cast()
}

/// How many handles came with the message (0 for NULL).
///
/// # Safety
/// `m` is NULL or a live message.
#[no_mangle]
pub unsafe extern "C" fn comesg_message_attached(m: *const comesg_message) -> usize {
    // SAFETY: the caller's contract.
    unsafe { obj(m, "the message") }.map_or(0, |m| m.m.attached())
}

/// Takes the handles that came with the message into `out` (room for
/// `cap`); returns how many were stored. Handles beyond `cap` are closed.
/// A second call returns 0. Each stored handle is this process's own, to
/// turn into a port with `comesg_handle_into_*` or to close.
///
/// # Safety
/// `m` is a live message; `out` points to room for `cap` pointers.
#[no_mangle]
pub unsafe extern "C" fn comesg_message_take_handles(
    m: *const comesg_message,
    out: *mut *mut comesg_handle,
    cap: usize,
) -> i64 {
    guard(i64::from, || {
        // SAFETY: the caller's contract.
        let m = unsafe { obj(m, "the message")? };
        if out.is_null() && cap > 0 {
            return Err(crate::error::null("the handle array"));
        }
        let handles = m.m.take_handles()?;
        let mut stored = 0;
        for h in handles.into_iter().take(cap) {
            // SAFETY: `stored < cap` slots of `out` are writable by contract.
            unsafe { out.add(stored).write(Box::into_raw(Box::new(comesg_handle::new(h)))) };
            stored += 1;
        }
        Ok(args::len(stored))
    })
}

/// Releases the message (its space goes back to the carrier) and frees it
/// (NULL is ignored). Pointers from `comesg_message_data` are invalid
/// after.
///
/// # Safety
/// `m` is NULL or a live message, not used after.
#[no_mangle]
pub unsafe extern "C" fn comesg_message_release(m: *mut comesg_message) {
    // SAFETY: forwarded contract.
    unsafe { args::free(m) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_objects_are_refused_without_a_crash() {
        // SAFETY: NULL is part of every function's contract.
        unsafe {
            let mut p = std::ptr::null_mut();
            assert_eq!(comesg_channel_loan(std::ptr::null(), 0, &mut p), -libc::EINVAL);
            assert_eq!(comesg_loan_send(std::ptr::null_mut(), 1), -libc::EINVAL);
            assert!(comesg_loan_data(std::ptr::null_mut(), std::ptr::null_mut()).is_null());
            assert!(comesg_slot_data(std::ptr::null(), std::ptr::null_mut()).is_null());
            assert_eq!(comesg_slot_release(std::ptr::null_mut()), 0);
            assert_eq!(comesg_building_send(std::ptr::null_mut(), std::ptr::null(), 0, 0), -libc::EINVAL);
            assert_eq!(comesg_message_attached(std::ptr::null()), 0);
            comesg_loan_cancel(std::ptr::null_mut());
            comesg_building_cancel(std::ptr::null_mut());
            comesg_message_release(std::ptr::null_mut());
        }
    }
}
