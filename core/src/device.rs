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

/// Whether tensors on `device` live in host memory (burn Flex), where our own kernels can work on
/// their buffers in place of a chain of tensor operations.
pub fn is_host(device: &Device) -> bool {
    *device == Device::flex()
}

/// Resolves the choice to a device and a line describing it for the log: the adapter chosen, or
/// why there is none. `auto` takes only a hardware GPU: a software rasteriser (such as Mesa's
/// lavapipe) is slower than Flex on the CPU.
pub fn select(choice: DeviceChoice) -> Result<(Device, String)> {
    let cpu = |why: &str| (Device::flex(), format!("cpu (burn Flex, {} threads){why}", rayon::current_num_threads()));
    match choice {
        DeviceChoice::Cpu => Ok(cpu("")),
        DeviceChoice::Auto => Ok(match gpu(false) {
            Ok(found) => found,
            Err(why) => cpu(&format!("; no GPU: {why}")),
        }),
        DeviceChoice::Gpu => gpu(true).map_err(|why| Error::Config(format!("--device gpu: {why}"))),
    }
}

/// The wgpu device and its adapter's description, or why there is none. The runtime is set up
/// once per process (a second setup is refused), and every later call shares it.
#[cfg(feature = "wgpu")]
pub fn gpu(allow_software: bool) -> std::result::Result<(Device, String), String> {
    use std::sync::OnceLock;

    use burn::backend::wgpu::WgpuInitError;
    use burn::tensor::DeviceKind;
    static ADAPTER: OnceLock<std::result::Result<(Device, String, bool), String>> = OnceLock::new();
    let (device, described, software) = ADAPTER
        .get_or_init(|| match Device::wgpu_options().init_with_setup() {
            Ok((device, setup)) => {
                let info = setup.adapter.get_info();
                let software = info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu;
                Ok((device, format!("gpu (wgpu: {} via {:?})", info.name, info.backend), software))
            }
            // burn set the default adapter up first, for something it put on its default device
            // (an optimizer's state loaded from a checkpoint): share it. The binary points
            // burn's default at the CPU (`BURN_DEVICE`), so only a library user meets this.
            Err(WgpuInitError::Registration { .. }) => Ok((
                Device::wgpu(DeviceKind::DefaultDevice),
                "gpu (wgpu's default adapter, set up earlier in this process)".into(),
                false,
            )),
            Err(e) => Err(format!("no wgpu adapter ({e}); install a Vulkan driver, or use --device cpu")),
        })
        .clone()?;
    if software && !allow_software {
        return Err(format!("the only adapter, {described}, is a software rasteriser, slower than the CPU backend"));
    }
    Ok((
        device,
        if software { format!("{described}, a software rasteriser: slower than --device cpu") } else { described },
    ))
}

/// Every adapter wgpu sees, on every graphics API, one line each: name, API, kind and driver.
#[cfg(feature = "wgpu")]
pub fn adapters() -> Vec<String> {
    use burn::tensor::wgpu::wgpu;
    let instance = wgpu::Instance::default();
    cubecl::future::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(|adapter| {
            let info = adapter.get_info();
            format!(
                "{} via {:?} ({:?}; driver {} {})",
                info.name, info.backend, info.device_type, info.driver, info.driver_info
            )
        })
        .collect()
}

/// Without the `wgpu` feature there are no adapters to see.
#[cfg(not(feature = "wgpu"))]
pub fn adapters() -> Vec<String> {
    Vec::new()
}

/// Without the `wgpu` feature there is never a GPU.
#[cfg(not(feature = "wgpu"))]
pub fn gpu(_allow_software: bool) -> std::result::Result<(Device, String), String> {
    Err("this build has no wgpu support; rebuild with the default features".into())
}
