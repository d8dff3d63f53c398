//! Who a cgroup belongs to: the owner read from its path ([`owner`]), and the names an engine
//! gives it ([`docker`]); [`container_watch`] finds the containers a command started.

pub mod container_watch;
pub mod docker;
pub mod owner;

pub use owner::{CgroupIndex, Owner, Runtime, owner_from_path};
