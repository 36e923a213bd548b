//! Reading another process's memory (`process_vm_readv`), for the
//! microkernel's one trusted copy of a COCARRIER message, and letting the
//! microkernel do it (`PR_SET_PTRACER`).
//!
//! # References
//! - [`process_vm_readv(2)`](https://man7.org/linux/man-pages/man2/process_vm_readv.2.html)
//! - [`PR_SET_PTRACER`](https://man7.org/linux/man-pages/man2/PR_SET_PTRACER.2const.html)
#![allow(unsafe_code)]

use std::io;

/// Copies `dst.len()` bytes at address `addr` of process `pid` into `dst`.
/// Fails (`EFAULT`, `EPERM`, `ESRCH`) without a partial result: a short
/// read is reported as `EFAULT`.
pub fn read_process(pid: u32, addr: u64, dst: &mut [u8]) -> io::Result<()> {
    let fault = || io::Error::from_raw_os_error(libc::EFAULT);
    let start = usize::try_from(addr).map_err(|_| fault())?;
    start.checked_add(dst.len()).ok_or_else(fault)?;
    let mut done = 0usize;
    while done < dst.len() {
        let local = libc::iovec { iov_base: dst[done..].as_mut_ptr().cast(), iov_len: dst.len() - done };
        let remote = libc::iovec { iov_base: (start + done) as *mut libc::c_void, iov_len: dst.len() - done };
        // SAFETY: `local` describes memory we own exclusively (`dst`); the
        // remote iovec is only read, by the Linux kernel, which checks it
        // against the other process's address space.
        let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        match n {
            n if n < 0 => return Err(io::Error::last_os_error()),
            0 => return Err(io::Error::from_raw_os_error(libc::EFAULT)),
            n => done += n as usize,
        }
    }
    Ok(())
}

/// Lets process `pid` (the microkernel) read this process's memory where
/// the Yama security module restricts that to ancestors. A no-op where Yama
/// is absent.
pub fn allow_reader(pid: u32) {
    // SAFETY: prctl with PR_SET_PTRACER takes an integer argument and
    // touches no memory of ours.
    let _ = unsafe { libc::prctl(libc::PR_SET_PTRACER, pid as libc::c_ulong, 0, 0, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_and_refuses_bad_addresses() {
        let src: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut dst = vec![0u8; src.len()];
        read_process(crate::process::pid(), src.as_ptr() as u64, &mut dst).unwrap();
        assert_eq!(src, dst);
        let mut small = [0u8; 8];
        assert!(read_process(crate::process::pid(), 8, &mut small).is_err());
    }
}
