//! Facts about the running kernel and host that capspy reads before tracing: BTF prototypes,
//! kallsyms, the cgroup v2 hierarchy, and capspy's own privileges.

pub mod btf;
pub mod cgroup;
pub mod kallsyms;
pub mod privilege;
