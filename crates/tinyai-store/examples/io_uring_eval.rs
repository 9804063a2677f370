//! Issue 13's io_uring question, measured: does `io_uring` read a model file
//! faster than the store's thread-pool reads (each I/O worker blocking in one
//! `pread`)? Both read the whole file cold with `O_DIRECT` in 1 MiB requests,
//! 16 (and 8) in flight, rounds interleaved on the same file; the ratios are
//! medians of per-round ratios against threads × 16, beside the CPU time each
//! took.
//!
//! `cargo run --release -p tinyai-store --example io_uring_eval -- FILE [ROUNDS]`
//!
//! On this project's machine (2 cores, a virtio disk at 0.4–2.3 GB/s), a
//! 512 MiB file, 7 rounds, two runs: io_uring × 16 0.98× and 0.85×,
//! threads × 8 0.86× and 0.95×, io_uring × 8 1.05× and 1.00× of threads × 16;
//! CPU 35–70 ms per 512 MiB for every variant. No
//! throughput win beyond the noise (the device is already 88–100 % busy while
//! the store streams), so the store reads with threads, and keeps no
//! io_uring code path to maintain (docs/architecture.md, "The I/O pipeline").
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::time::Instant;

use tinyai_store::evict_file_from_page_cache;

const REQUEST: usize = 1 << 20;

/// An aligned request buffer (O_DIRECT needs page alignment).
fn aligned(len: usize) -> Vec<u8> {
    vec![0u8; len + 4096]
}

fn window(storage: &mut [u8]) -> &mut [u8] {
    let skip = storage.as_ptr().align_offset(4096);
    &mut storage[skip..skip + REQUEST]
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes only into the struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec;
    let micros = usage.ru_utime.tv_usec + usage.ru_stime.tv_usec;
    seconds as f64 + micros as f64 / 1e6
}

/// `depth` threads, thread `t` reading requests `t`, `t + depth`, ...
fn threads(file: &File, requests: usize, depth: usize) {
    std::thread::scope(|scope| {
        for first in 0..depth {
            scope.spawn(move || {
                let mut storage = aligned(REQUEST);
                let buffer = window(&mut storage);
                let mut request = first;
                while request < requests {
                    file.read_at(buffer, (request * REQUEST) as u64).unwrap();
                    request += depth;
                }
            });
        }
    });
}

/// One ring, `depth` reads in flight, each completion refilled in file order.
fn uring(file: &File, requests: usize, depth: usize) {
    let mut ring = io_uring::IoUring::new(2 * depth as u32).unwrap();
    let mut storage: Vec<Vec<u8>> = (0..depth).map(|_| aligned(REQUEST)).collect();
    let buffers: Vec<*mut u8> = storage.iter_mut().map(|s| window(s).as_mut_ptr()).collect();
    let fd = io_uring::types::Fd(file.as_raw_fd());
    let mut next = 0;
    let mut in_flight = 0;
    let submit = |ring: &mut io_uring::IoUring, slot: usize, request: usize| {
        let read = io_uring::opcode::Read::new(fd, buffers[slot], REQUEST as u32)
            .offset((request * REQUEST) as u64)
            .build()
            .user_data(slot as u64);
        // SAFETY: the buffer outlives the read (it lives until this function
        // returns, after every completion was reaped) and no other request
        // uses the same slot until this one completed.
        unsafe { ring.submission().push(&read).unwrap() };
    };
    for slot in 0..depth.min(requests) {
        submit(&mut ring, slot, next);
        next += 1;
        in_flight += 1;
    }
    while in_flight > 0 {
        ring.submit_and_wait(1).unwrap();
        let done: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (slot, result) in done {
            assert!(result >= 0, "read failed: {result}");
            in_flight -= 1;
            if next < requests {
                submit(&mut ring, slot as usize, next);
                next += 1;
                in_flight += 1;
            }
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: io_uring_eval FILE [ROUNDS]");
    let rounds: usize = args.next().map_or(7, |r| r.parse().unwrap());
    let length = std::fs::metadata(&path).unwrap().len() as usize;
    let requests = length / REQUEST;
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    if let Err(error) = io_uring::IoUring::new(8) {
        println!("SKIP: io_uring unavailable on this kernel: {error}");
        return;
    }
    let variants = ["threads x16", "io_uring x16", "threads x8", "io_uring x8"];
    let mut seconds = vec![Vec::new(); variants.len()];
    let mut cpu = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (v, _) in variants.iter().enumerate() {
            evict_file_from_page_cache(std::path::Path::new(&path)).unwrap();
            let cpu_before = cpu_seconds();
            let started = Instant::now();
            match v {
                0 => threads(&file, requests, 16),
                1 => uring(&file, requests, 16),
                2 => threads(&file, requests, 8),
                _ => uring(&file, requests, 8),
            }
            seconds[v].push(started.elapsed().as_secs_f64());
            cpu[v].push(cpu_seconds() - cpu_before);
        }
    }
    for (v, name) in variants.iter().enumerate() {
        let mut ratios: Vec<f64> = (0..rounds).map(|r| seconds[0][r] / seconds[v][r]).collect();
        let gbps = (requests * REQUEST) as f64 / median(&mut seconds[v].clone()) / 1e9;
        println!(
            "{name:14} {gbps:.2} GB/s   vs threads x16 {:.2}   CPU {:.0} ms",
            median(&mut ratios),
            median(&mut cpu[v]) * 1e3
        );
    }
}
