use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// Builds `capspy-ebpf` for the BPF target with the nightly toolchain and bpf-linker (set up by
/// `cargo xtask setup`); `src/trace/hook.rs` embeds the object.
fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|p| p.name.as_str() == "capspy-ebpf")
        .ok_or_else(|| anyhow!("capspy-ebpf package not found"))?;
    let root_dir = ebpf_package
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf_package.manifest_path))?;
    let package = aya_build::Package {
        name: ebpf_package.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
}
