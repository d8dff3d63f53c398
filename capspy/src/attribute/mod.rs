//! Who a cgroup belongs to: the owner read from its path ([`owner`]), and the names the engine
//! that runs it gives it ([`engines`]: [`docker`] and podman, [`containerd`], [`crio`]), with a
//! pod's container rolled up to its Kubernetes owner ([`k8s`]); [`container_watch`] finds the
//! containers a command started; [`systemd`] reads what a service's unit grants it.

pub mod container_watch;
pub mod containerd;
pub mod crio;
pub mod docker;
pub mod engines;
pub mod k8s;
pub mod owner;
pub mod systemd;
pub mod unix_http;

pub use owner::{CgroupIndex, Owner, Runtime, owner_from_path};
