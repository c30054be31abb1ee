//! Where tensors run: burn's Flex backend on the CPU, or wgpu on a GPU when one is there.

use burn::tensor::Device;

use crate::error::{Error, Result};

/// The `--device` choice of the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The GPU when an adapter exists (and this build has wgpu), otherwise the CPU.
    Auto,
    Cpu,
    Gpu,
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "gpu" => Ok(DeviceChoice::Gpu),
            other => Err(Error::Config(format!("unknown device {other:?}; use auto, cpu or gpu"))),
        }
    }
}

/// Resolves the choice to a device and a line describing it for the log. `auto` takes only a
/// hardware GPU: a software rasteriser (such as Mesa's lavapipe) is slower than Flex on the CPU.
pub fn select(choice: DeviceChoice) -> Result<(Device, String)> {
    let cpu = || (Device::flex(), format!("cpu (burn Flex, {} threads)", rayon::current_num_threads()));
    match choice {
        DeviceChoice::Cpu => Ok(cpu()),
        DeviceChoice::Auto => Ok(gpu(false).unwrap_or_else(cpu)),
        DeviceChoice::Gpu => gpu(true).ok_or_else(|| {
            Error::Config(if cfg!(feature = "wgpu") {
                "--device gpu: no GPU adapter found (install a Vulkan driver, or use --device cpu)".into()
            } else {
                "--device gpu: this build has no wgpu support; rebuild with --features wgpu".into()
            })
        }),
    }
}

/// The wgpu device and its adapter's description, when an adapter exists.
#[cfg(feature = "wgpu")]
pub fn gpu(allow_software: bool) -> Option<(Device, String)> {
    let (device, setup) = Device::wgpu_options().init_with_setup().ok()?;
    let info = setup.adapter.get_info();
    let software = info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu;
    (allow_software || !software).then(|| (device, format!("gpu (wgpu: {} via {:?})", info.name, info.backend)))
}

/// Without the `wgpu` feature there is never a GPU.
#[cfg(not(feature = "wgpu"))]
pub fn gpu(_allow_software: bool) -> Option<(Device, String)> {
    None
}
