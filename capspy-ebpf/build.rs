use which::which;

/// Building this crate has an undeclared dependency on the `bpf-linker` binary: rebuild when it
/// changes (the same trick as aya-template's).
fn main() {
    let bpf_linker = which("bpf-linker").expect("bpf-linker not found: run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
