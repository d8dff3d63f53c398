//! The vocabulary every stage shares, and nothing else: capabilities and their sets, what one
//! check is ([`check`]: verdict, audit class, bucket, user namespace, origin, the row, and the one
//! rule of which checks make a capability required), the kernel program's loss counters, time and
//! text helpers. A leaf: it imports nothing from the rest of the crate.

pub mod caps;
pub mod check;
pub mod loss;
pub mod text;
pub mod time;
