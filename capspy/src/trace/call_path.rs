//! Call paths: the kernel functions above `cap_capable` when a check was first made, named from
//! kallsyms, and how later stages read them (the plumbing between a caller and the check says
//! nothing about who asked).

use std::collections::HashMap;

use crate::kernel::kallsyms::Kallsyms;

/// Names call paths from the kernel's symbol table, each distinct stack once. A key's stack never
/// changes, and the daemon makes a row of every changed key at every sweep: naming each frame
/// again (a binary search over some 200,000 symbols) was most of a sweep's CPU.
pub struct CallPaths {
    syms: Kallsyms,
    named: HashMap<Box<[u64]>, Vec<String>>,
}

impl CallPaths {
    /// Distinct stacks kept; past this the memo starts again (the kernel's distinct paths to
    /// `cap_capable` number in the hundreds, so this only bounds a pathological host).
    const KEPT: usize = 4096;

    pub fn new(syms: Kallsyms) -> Self {
        Self {
            syms,
            named: HashMap::new(),
        }
    }

    /// The call path of `stack`, as [`symbolize`] names it.
    pub fn name(&mut self, stack: &[u64]) -> Vec<String> {
        if let Some(path) = self.named.get(stack) {
            return path.clone();
        }
        let path = symbolize(stack, &self.syms);
        if self.named.len() >= Self::KEPT {
            self.named.clear();
        }
        self.named.insert(stack.into(), path.clone());
        path
    }
}

/// Frames above `cap_capable`, symbolised; the tracing frames below it are dropped.
pub fn symbolize(stack: &[u64], syms: &Kallsyms) -> Vec<String> {
    const SHOWN: usize = 6;
    let frames: Vec<(String, u64)> = stack
        .iter()
        .map(|a| {
            syms.symbolize(*a)
                .map_or_else(|| (format!("{a:#x}"), 0), |(n, off)| (n.to_string(), off))
        })
        .collect();
    let start = frames
        .iter()
        .position(|(name, _)| name == "cap_capable")
        .map_or(0, |i| i + 1);
    frames[start..]
        .iter()
        .filter(|(name, _)| !name.starts_with("bpf_") && !name.starts_with("__bpf"))
        .take(SHOWN)
        .map(|(name, off)| format!("{name}+{off:#x}"))
        .collect()
}

/// Kernel function names of a call path: `generic_permission+0x11a` → `generic_permission`,
/// compiler suffixes (`.isra.0`, `.cold`) dropped.
pub fn frame_names(call_path: &[String]) -> impl Iterator<Item = &str> {
    call_path.iter().map(|f| {
        let name = f.split('+').next().unwrap_or(f);
        name.split('.').next().unwrap_or(name)
    })
}

pub fn has_frame(call_path: &[String], names: &[&str]) -> bool {
    frame_names(call_path).any(|f| names.iter().any(|n| f.contains(n)))
}

/// The generic capability plumbing between a caller and `cap_capable`: it says nothing about
/// who asked.
const PLUMBING: &[&str] = &[
    "security_capable",
    "cap_capable",
    "ns_capable",
    "ns_capable_common",
    "ns_capable_noaudit",
    "ns_capable_setid",
    "capable",
    "has_capability",
    "has_ns_capability",
    "has_capability_noaudit",
    "has_ns_capability_noaudit",
    "file_ns_capable",
    "capable_wrt_inode_uidgid",
    "privileged_wrt_inode_uidgid",
    "inode_owner_or_capable",
    "sk_ns_capable",
    "sk_capable",
    "sk_net_capable",
    "sockopt_ns_capable",
    "sockopt_capable",
    "netlink_ns_capable",
    "__netlink_ns_capable",
    "netlink_capable",
    "netlink_net_capable",
    "perfmon_capable",
    "bpf_capable",
    "checkpoint_restore_ns_capable",
    "apparmor_capable",
    "selinux_capable",
    "cred_has_capability",
];

/// The frames past the plumbing, innermost first.
pub fn callers(call_path: &[String]) -> impl Iterator<Item = &str> {
    frame_names(call_path).filter(|f| !PLUMBING.contains(f) && !f.starts_with("0x"))
}

/// The first caller past the plumbing: `setattr_prepare` for
/// `capable_wrt_inode_uidgid <- setattr_prepare`.
pub fn first_caller(call_path: &[String]) -> Option<&str> {
    callers(call_path).next()
}

/// The first two callers past the plumbing: `inet_create <- __sock_create`.
pub fn asked_by(call_path: &[String]) -> Option<String> {
    let callers: Vec<&str> = callers(call_path).take(2).collect();
    (!callers.is_empty()).then(|| callers.join(" <- "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYMBOLS: &str = "\
ffffffff81000000 T _stext
ffffffff81a82a80 T cap_capable
ffffffff81a82b10 t cap_mmap_addr
ffffffff81b00000 T ns_capable
ffffffff81c00000 T inet_create
ffffffff81d00000 T __sys_setuid
";

    #[test]
    fn each_stack_is_named_as_symbolize_names_it_and_the_memo_keeps_them_apart() {
        let syms = Kallsyms::parse(SYMBOLS).unwrap();
        let socket = [
            0xffff_ffff_81a8_2a90,
            0xffff_ffff_81b0_0010,
            0xffff_ffff_81c0_0020,
        ];
        let setuid = [0xffff_ffff_81a8_2a90, 0xffff_ffff_81d0_0008];
        let expected = (symbolize(&socket, &syms), symbolize(&setuid, &syms));
        assert_eq!(expected.0, ["ns_capable+0x10", "inet_create+0x20"]);
        let mut paths = CallPaths::new(syms);
        for _ in 0..2 {
            assert_eq!(paths.name(&socket), expected.0);
            assert_eq!(paths.name(&setuid), expected.1);
        }
        assert_eq!(paths.named.len(), 2);
    }
}
