//! capspy: observe the Linux capability checks of a command or container with eBPF, and derive
//! the least-privilege set it needs.
//!
//! The modules are the stages of the data's path, in order; each imports only from the ones
//! before it (`cargo xtask test` checks it):
//!
//! 1. [`model`]: the shared vocabulary (capabilities, the check row, the rule of "required").
//! 2. [`kernel`]: facts about the running kernel (BTF, kallsyms, cgroup v2, own privileges).
//! 3. [`trace`]: load and attach the kernel program, collect what it counts, name call paths.
//! 4. [`attribute`]: who owns a cgroup (container engine, systemd service, host).
//! 5. [`store`]: the SQLite store the daemon writes and the commands read.
//! 6. [`profile`]: rows to the capabilities a workload needs, with reasons.
//! 7. [`report`]: the report document, its formats (text, JSON, docker, compose, Kubernetes,
//!    OCI, systemd), its one typed reader, and the inventory of workloads.
//! 8. [`watch`]: baselines, drift detection, metrics.
//! 9. [`recorder`]: the daemon loop that drives stages 3 to 8.
//! 10. [`commands`]: the command line.

pub mod model;

pub mod kernel;

pub mod trace;

pub mod attribute;

pub mod store;

pub mod profile;

pub mod report;

pub mod watch;

pub mod recorder;

pub mod commands;
