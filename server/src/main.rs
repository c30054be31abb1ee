//! `onerec`: the command line of the onerec generative recommender.

/// mimalloc rather than the system allocator: training allocates and frees tensors of a few
/// hundred kilobytes every operation, which glibc hands back to the kernel each time (mmap above
/// its threshold), so each fresh buffer page-faults again. That cost about half of a CPU training
/// step; mimalloc keeps the pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

fn main() -> std::process::ExitCode {
    match onerec_server::run(onerec_server::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
