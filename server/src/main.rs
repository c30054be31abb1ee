//! `onerec`: the command line of the onerec generative recommender.

/// mimalloc rather than the system allocator: training allocates and frees tensors of a few
/// hundred kilobytes every operation, which glibc hands back to the kernel each time (mmap above
/// its threshold), so each fresh buffer page-faults again. That cost about half of a CPU training
/// step; mimalloc keeps the pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (`libmimalloc-sys` names no constant
/// for it): how many milliseconds freed pages wait before they go back to the kernel; -1 never.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never: by default mimalloc gives freed pages back to the kernel 10 ms after they are freed.
/// A CPU training step (about 40 ms) frees and takes again the same few megabytes of tensors, so
/// every step faulted them in anew and the kernel zeroed them: a tenth of a step in
/// `clear_page_erms` (`perf` over `onerec bench train`, 27,000 page faults in 100 steps against
/// 500 without purging; a delay of a second still had 26,000). So the process keeps its peak
/// memory, which for a server is the model, its caches and the bounded request buffers.
const PURGE_DELAY_MS: std::ffi::c_long = -1;

fn main() -> std::process::ExitCode {
    // SAFETY: a process-wide allocator setting, made before any other thread starts.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    // burn puts a few things on its default device without asking (an optimizer's state loaded
    // from a checkpoint), and with wgpu built in that default is the GPU runtime, which would be
    // set up, and fail where there is no driver, even under `--device cpu`. The CPU is the right
    // default: `--device` places the model, and the state moves to it on the next step.
    if std::env::var_os("BURN_DEVICE").is_none() {
        // SAFETY: nothing else runs yet; no other thread can be reading the environment.
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
    match onerec_server::run(onerec_server::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
