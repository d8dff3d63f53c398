//! Tracing: load the kernel program and attach it by the best method the kernel allows
//! ([`hook`]), read what it recorded ([`collector`]), and name call paths ([`call_path`]).

mod batch;
pub mod call_path;
pub mod collector;
pub mod hook;
