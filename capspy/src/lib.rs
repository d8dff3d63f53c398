//! capspy: observe the Linux capability checks of a command or container with eBPF, and derive
//! the least-privilege set it needs.
//!
//! Modules follow the data's path: [`hook`] loads the kernel program and attaches it,
//! [`collector`] reads what it recorded, [`profile`] applies the rules, [`render`] prints.

pub mod attribution;
pub mod baseline;
pub mod btf;
pub mod caps;
pub mod cgroup;
pub mod collector;
pub mod commands;
pub mod container_watch;
pub mod docker;
pub mod docker_cli;
pub mod drift;
pub mod hook;
pub mod kallsyms;
pub mod merge;
pub mod metrics;
pub mod privilege;
pub mod profile;
pub mod recorder;
pub mod render;
pub mod rules;
pub mod store;
pub mod text;
pub mod workloads;
