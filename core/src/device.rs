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

/// Resolves the choice to a device and a line describing it for the log.
pub fn select(choice: DeviceChoice) -> Result<(Device, String)> {
    let cpu = || (Device::flex(), format!("cpu (burn Flex, {} threads)", rayon::current_num_threads()));
    match (choice, gpu()) {
        (DeviceChoice::Cpu, _) | (DeviceChoice::Auto, None) => Ok(cpu()),
        (DeviceChoice::Auto | DeviceChoice::Gpu, Some(gpu)) => Ok(gpu),
        (DeviceChoice::Gpu, None) => Err(Error::Config(if cfg!(feature = "wgpu") {
            "--device gpu: no GPU adapter found (install a Vulkan driver, or use --device cpu)".into()
        } else {
            "--device gpu: this build has no wgpu support; rebuild with --features wgpu".into()
        })),
    }
}

/// The wgpu device and its adapter's description, when an adapter exists.
#[cfg(feature = "wgpu")]
fn gpu() -> Option<(Device, String)> {
    let adapter = burn::tensor::wgpu::adapter_name()?;
    Some((Device::wgpu(burn::tensor::DeviceKind::DefaultDevice), format!("gpu (wgpu: {adapter})")))
}

#[cfg(not(feature = "wgpu"))]
fn gpu() -> Option<(Device, String)> {
    None
}
