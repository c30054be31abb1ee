//! Our own WGSL kernels (in `shaders/`), for the steps where burn's tensor operations would send
//! more to the host than the host needs. Each kernel has a plain CPU reference elsewhere in the
//! crate and a test against it, which runs on Mesa's lavapipe where there is no GPU.

mod beam_select;

pub use beam_select::beam_select;
