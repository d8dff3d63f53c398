#![no_std]

// This file exists so that capspy can declare a build dependency on this crate (cargo requires
// a library target), which makes cargo rebuild capspy when the kernel program changes.
