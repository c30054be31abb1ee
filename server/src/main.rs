//! `onerec`: the command line of the onerec generative recommender.

/// mimalloc rather than the system allocator: training allocates and frees tensors of a few
/// hundred kilobytes every operation, which glibc hands back to the kernel each time (mmap above
/// its threshold), so each fresh buffer page-faults again. That cost about half of a CPU training
/// step; mimalloc keeps the pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

fn main() -> std::process::ExitCode {
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
