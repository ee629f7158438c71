//! The sandbox process: `veltrix __sandbox`, started by the worker with an empty environment,
//! `/` as its directory, its own process group and no stderr.
//!
//! It reads the [`Init`] frame, limits its own address space to what it uses at that point
//! plus `max_memory_bytes` (`RLIMIT_AS`; the worker starts it with a small allocator arena
//! reservation, [`ALLOCATOR_ARENA_ENV`], so the limit binds), forbids core dumps and writing
//! files, asks the kernel to kill it when the worker dies, compiles the transforms and then
//! answers requests one at a time until its stdin closes. A transform that runs too long is killed by the worker; one that exhausts memory or
//! the stack ends this process, which the worker sees and reports for that message alone.

use std::io::{self, BufReader, BufWriter};
use std::process::ExitCode;

use super::protocol::{decode_request, read_frame, write_frame, Init, Status};
use crate::rules::transform::Transform;

/// The allocator setting the worker gives the child, so memory is reserved in small steps
/// and the address-space limit applies to what transforms allocate (mimalloc otherwise
/// reserves 1 GiB at its first allocation).
pub const ALLOCATOR_ARENA_ENV: (&str, &str) = ("MIMALLOC_ARENA_RESERVE", "16M");

/// Runs the sandbox loop on stdin/stdout; returns when stdin closes.
pub fn main() -> ExitCode {
    let stdin = io::stdin();
    let stdout = io::stdout();
    let mut input = BufReader::new(stdin.lock());
    let mut output = BufWriter::new(stdout.lock());
    let init: Init = match read_frame(&mut input) {
        Ok(Some(frame)) => match serde_json::from_slice(&frame) {
            Ok(init) => init,
            Err(_) => return ExitCode::FAILURE,
        },
        _ => return ExitCode::FAILURE,
    };
    confine(&init);
    let mut transforms = Vec::with_capacity(init.transforms.len());
    for code in &init.transforms {
        match Transform::compile(code) {
            Ok(t) => transforms.push(t),
            Err(e) => {
                let _ = write_frame(&mut output, &[&[Status::Failed as u8], e.0.as_bytes()]);
                return ExitCode::FAILURE;
            }
        }
    }
    if write_frame(&mut output, &[&[Status::Ok as u8]]).is_err() {
        return ExitCode::FAILURE;
    }
    loop {
        let frame = match read_frame(&mut input) {
            Ok(Some(frame)) => frame,
            _ => return ExitCode::SUCCESS,
        };
        let answer = match decode_request(&frame) {
            None => (Status::Failed, b"malformed request".to_vec()),
            Some((index, input)) => match transforms.get(index as usize) {
                None => (Status::Failed, format!("no transform {index}").into_bytes()),
                Some(t) => match t.run_bytes(input) {
                    Ok(out) if out.len() > init.max_output_bytes => (
                        Status::OverBudget,
                        format!(
                            "the transform's output is {} bytes, over the limit of {} bytes",
                            out.len(),
                            init.max_output_bytes
                        )
                        .into_bytes(),
                    ),
                    Ok(out) => (Status::Ok, out),
                    Err(e) => (Status::Failed, e.0.into_bytes()),
                },
            },
        };
        if write_frame(&mut output, &[&[answer.0 as u8], &answer.1]).is_err() {
            return ExitCode::SUCCESS;
        }
    }
}

/// Limits what this process can use and do; best effort where the kernel refuses.
fn confine(init: &Init) {
    let in_use = address_space_in_use().unwrap_or(0);
    set_limit(libc::RLIMIT_AS, in_use.saturating_add(init.max_memory_bytes));
    set_limit(libc::RLIMIT_CORE, 0);
    set_limit(libc::RLIMIT_FSIZE, 0);
    // Sent when the worker thread that started this process ends (the sandbox slot thread,
    // which lives as long as the sandbox), or the whole worker with it.
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and has no memory effects.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    // The worker may have died before the request above took effect.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } as u32 != init.parent_pid {
        std::process::exit(1);
    }
}

/// `VmSize` of this process, in bytes.
fn address_space_in_use() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmSize:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

fn set_limit(resource: Resource, bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    unsafe {
        libc::setrlimit(resource, &limit);
    }
}
