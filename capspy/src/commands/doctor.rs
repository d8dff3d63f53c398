//! `capspy doctor`: which hook methods load on this kernel, and the exact reason for each that
//! does not.

use std::fmt::Write as _;

use anyhow::Result;

use crate::kernel::privilege;
use crate::trace::hook::{self, KernelInfo, Method};

pub fn doctor() -> Result<i32> {
    let mut out = String::new();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = writeln!(out, "kernel: Linux {}", release.trim());
    if let Err(e) = privilege::require_tracing() {
        let _ = writeln!(out, "privileges: {e}");
    }
    let kernel = KernelInfo::probe();
    kernel_facts(&mut out, &kernel);
    let usable = hook_methods(&mut out, &kernel);
    print!("{out}");
    Ok(i32::from(!usable))
}

/// What the kernel offers the program: BTF and cap_capable's prototype, the helpers it may
/// lack, the advisory call sites found in kallsyms.
fn kernel_facts(out: &mut String, kernel: &KernelInfo) {
    match (&kernel.btf_problem, kernel.abi) {
        (Some(why), _) => {
            let _ = writeln!(
                out,
                "BTF: not available ({why}); fexit and tp_btf cannot load"
            );
        }
        (None, Some(abi)) => {
            let arg = match abi {
                crate::kernel::btf::CapCapableAbi::Opts => "unsigned int opts (Linux 5.1+)",
                crate::kernel::btf::CapCapableAbi::LegacyAudit => "int audit (before 5.1)",
            };
            let _ = writeln!(out, "BTF: yes; cap_capable's last argument: {arg}");
        }
        (None, None) => {
            let _ = writeln!(
                out,
                "BTF: yes, but cap_capable is not in it or has an unknown prototype"
            );
        }
    }
    if !kernel.task_btf_helper {
        let _ = writeln!(
            out,
            "bpf_get_current_task_btf: not available (Linux < 5.11); the program copies the \
             task's fields with bpf_probe_read_kernel instead of reading them directly (a \
             helper call per field; the checks recorded are the same)"
        );
    }
    if !kernel.task_pt_regs_helper {
        let _ = writeln!(
            out,
            "bpf_task_pt_regs: not available (Linux < 5.15); the syscall a check comes from is \
             unknown: tracepoint checks walk the stack every time, and SETUID/SETGID checks of \
             setuid(2)/setgid(2) for the caller's own ids stay required"
        );
    }
    if let Some(why) = &kernel.kallsyms_problem {
        let _ = writeln!(
            out,
            "kallsyms: {why}; tracepoint checks cannot be classified by call path"
        );
    } else {
        let names: Vec<&str> = kernel
            .advisory_funcs
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        let _ = writeln!(out, "advisory call sites found: {}", names.join(", "));
    }
}

/// Loads and attaches each hook method in turn, says which work and whether the programs for
/// capabilities kept without a check attach; true if one method works.
fn hook_methods(out: &mut String, kernel: &KernelInfo) -> bool {
    out.push_str("\nhook methods, in the order `--hook auto` tries them:\n");
    let mut usable = Vec::new();
    let mut facts = None;
    let mut aggregation = None;
    let settings = hook::Settings::new(kernel);
    let mut loader = hook::Loader::new(kernel, &settings, hook::MapSizes::default());
    for method in Method::ALL {
        match loader.attach_method(method) {
            Ok((mut ebpf, counted)) => {
                if facts.is_none() {
                    facts = Some(hook::missing(&hook::attach_facts(&mut ebpf, kernel)));
                    aggregation = Some(counted);
                }
                drop(ebpf);
                usable.push(method);
                let _ = writeln!(out, "  {:<15} loads and attaches", method.name());
            }
            Err(why) => {
                let _ = writeln!(out, "  {:<15} fails: {why}", method.name());
            }
        }
    }
    match usable.first() {
        Some(m) => {
            let _ = writeln!(out, "\n`--hook auto` will use {m}.");
            if let Some(counted) = aggregation {
                let _ = writeln!(out, "aggregation: {counted}");
            }
        }
        None => out.push_str("\nNo method works: capspy cannot trace on this kernel.\n"),
    }
    match facts {
        Some(missing) if missing.is_empty() => out.push_str(
            "capabilities kept without a check (capset, ambient raise, file capabilities): \
             traced\n",
        ),
        Some(missing) => {
            let _ = writeln!(
                out,
                "capabilities kept without a check (capset, ambient raise, file capabilities): \
                 not all traced, profiles may miss them:\n  {}",
                missing.join("\n  ")
            );
        }
        None => {}
    }
    !usable.is_empty()
}
