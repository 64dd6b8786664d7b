//! rust_idle_channels: a healthy, idle Rust process for `stallwatch watch` tests: workers
//! parked in `std::sync::mpsc::Receiver::recv`, each on its own job channel with no job, and a
//! consumer (main) parked on an empty result channel. Every thread waits indefinitely on a
//! private futex, none for a lock: nothing is wrong, the program just has no work.
//!
//! Output (stdout, one line each): `pid <PID>`, `tid main <TID>`, `tid worker <TID>` per
//! worker, then `READY` once every worker has started. It never exits by itself (a watchdog
//! would be one more thread): the test kills it.

use std::{
    process,
    sync::{Barrier, mpsc},
    thread,
};

/// How many workers wait for jobs.
const WORKERS: usize = 3;

fn gettid() -> u32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() as u32 }
}

fn main() {
    println!("pid {}", process::id());
    println!("tid main {}", gettid());
    let started = Barrier::new(WORKERS + 1);
    let (result_tx, result_rx) = mpsc::channel::<u64>();
    thread::scope(|scope| {
        let mut job_senders = Vec::new();
        for _ in 0..WORKERS {
            let (job_tx, job_rx) = mpsc::channel::<u64>();
            job_senders.push(job_tx);
            let results = result_tx.clone();
            let started = &started;
            scope.spawn(move || {
                println!("tid worker {}", gettid());
                started.wait();
                while let Ok(job) = job_rx.recv() {
                    let _ = results.send(job * 2);
                }
            });
        }
        started.wait();
        println!("READY");
        // Blocks for ever: the job senders and `result_tx` stay alive, and no job comes.
        let result = result_rx.recv();
        drop(job_senders);
        println!("result {result:?}");
    });
}
