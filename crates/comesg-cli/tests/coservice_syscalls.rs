//! A busy service's call path makes no system call: counted with strace.
//! Alone in its file so that no other test runs in this process beside it.

mod util;

use util::KernelProc;

#[test]
fn calls_to_a_busy_service_make_no_system_call() {
    if !util::have_strace() {
        return;
    }
    let k = KernelProc::start("svc-strace");
    let _provider = k.peer(&["serve", "/it/svc/s", "--workers", "1"]);
    // The caller wakes the worker with a futex call only when the worker has
    // gone to sleep (after tens of microseconds idle): back-to-back calls
    // find it spinning. On a loaded machine the worker's CPU may be taken
    // away now and then (a few wake-ups), so one run of 20,000 calls with
    // fewer than 100 extra system calls, out of a few attempts, is the proof.
    // This file holds only this test, so no other test of its binary runs
    // beside it.
    let mut runs = Vec::new();
    for _ in 0..5 {
        let calls = |n: &str| k.syscalls_of_peer(&["call-many", "/it/svc/s", "--id", "1", "--count", n]);
        let (few, many) = (calls("10"), calls("20010"));
        runs.push((few, many));
        if many <= few + 100 {
            println!("{few} system calls for 10 calls, {many} for 20,010");
            return;
        }
    }
    panic!("every run made system calls per call: (10 calls, 20,010 calls) = {runs:?}");
}
