//! Raw BTF (`/sys/kernel/btf/vmlinux` format): `Btf::from_bytes`, then the queries capspy makes
//! on it. Malformed BTF may be refused or answer with errors, never panic or loop.
#![no_main]

use capspy::kernel::btf::Btf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::from_bytes(data) else {
        return;
    };
    let _ = btf.type_count();
    let _ = btf.cap_capable_abi();
    let _ = btf.func_params("cap_capable");
    let _ = btf.has_func("cap_capable");
    let _ = btf.has_tracepoint("cap_capable");
    let _ = btf.has_tracepoint("sys_enter");
    let _ = btf.struct_member_offset("user_namespace", "level");
    // Names the seed blobs (and the btf.rs unit tests' builder) use.
    let _ = btf.struct_member_offset("s", "member");
    let _ = btf.struct_member_offset("bits", "whole");
    let _ = btf.func_params("f");
    let _ = btf.func_params("loop");
    let _ = format!("{btf:?}");
});
