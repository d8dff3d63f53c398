//! What the kernel program reads of the kernel, as each program states it in a `// kernel-abi:`
//! line (see capspy-ebpf/src/main.rs), compared with the running kernel: function and raw
//! tracepoint prototypes in its BTF, field offsets in the tracepoint format files. A kernel that
//! changes one fails here, by name, instead of in a profile that silently reads the wrong bytes.
//!
//! Needs root (tracefs) and BTF; the VM matrix (`cargo xtask vm-test`) proves the programs on
//! older kernels by running them.

use std::collections::BTreeSet;
use std::path::Path;

use capspy::kernel::btf::Btf;

const TRACEFS: &str = "/sys/kernel/tracing";

/// Every distinct `// kernel-abi:` statement of the eBPF crate, with the file it is in.
fn statements() -> BTreeSet<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../capspy-ebpf/src");
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for line in text.lines() {
            if let Some(stmt) = line.trim().strip_prefix("// kernel-abi: ") {
                out.insert((stmt.to_string(), file.clone()));
            }
        }
    }
    out
}

/// `NAME(T1, T2)` -> (NAME, [T1, T2]).
fn prototype(text: &str) -> (&str, Vec<String>) {
    let (name, rest) = text.split_once('(').expect("NAME(TYPES)");
    let types = rest.strip_suffix(')').expect("closing parenthesis");
    (
        name.trim(),
        types.split(',').map(|t| t.trim().to_string()).collect(),
    )
}

/// `field@offset` pairs of a format file, e.g. `cred` -> 8.
fn format_offsets(event: &str) -> Vec<(String, u32)> {
    let path = format!("{TRACEFS}/events/{event}/format");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter_map(|l| {
            let field = l.trim().strip_prefix("field:")?;
            let (decl, rest) = field.split_once(';')?;
            let name = decl.split_whitespace().last()?.trim_start_matches('*');
            let name = name.split('[').next()?;
            let offset = rest.trim().strip_prefix("offset:")?.split(';').next()?;
            Some((name.to_string(), offset.parse().ok()?))
        })
        .collect()
}

fn check(btf: &Btf, stmt: &str) -> Result<(), String> {
    let (kind, rest) = stmt.split_once(' ').ok_or("no kind")?;
    match kind {
        "fn" | "tp_btf" => {
            let (name, want) = prototype(rest);
            let params = if kind == "fn" {
                btf.func_params(name)
            } else {
                btf.tracepoint_params(name)
            }
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{name} is not in this kernel's BTF"))?;
            let have: Vec<String> = params.into_iter().map(|p| p.type_name).collect();
            if have == want {
                Ok(())
            } else {
                Err(format!("this kernel has {name}({})", have.join(", ")))
            }
        }
        "tracepoint" => {
            let mut words = rest.split_whitespace();
            let event = words.next().ok_or("no event")?;
            let offsets = format_offsets(event);
            for want in words {
                let (field, offset) = want.split_once('@').ok_or("field@offset")?;
                let offset: u32 = offset.parse().map_err(|_| format!("offset of {field}"))?;
                match offsets.iter().find(|(f, _)| f == field) {
                    Some((_, o)) if *o == offset => {}
                    Some((_, o)) => return Err(format!("{event}: {field} is at {o}")),
                    None => return Err(format!("{event} has no field {field}")),
                }
            }
            Ok(())
        }
        other => Err(format!("unknown kind {other:?}")),
    }
}

#[test]
fn what_the_kernel_program_reads_matches_the_running_kernel() {
    let btf = Btf::from_sys_fs().expect("kernel BTF");
    assert!(
        Path::new(TRACEFS).join("events").is_dir(),
        "tracefs is not mounted at {TRACEFS} (cargo xtask setup mounts it)"
    );
    let stmts = statements();
    // Every program of the object states its dependency: the cap_capable hooks and the
    // tracepoints of capset, prctl, exec and cgroup creation at least.
    assert!(stmts.len() >= 10, "{stmts:#?}");
    let failures: Vec<String> = stmts
        .iter()
        .filter_map(|(stmt, file)| {
            check(&btf, stmt)
                .err()
                .map(|e| format!("{file}: `{stmt}`: {e}"))
        })
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_wrong_statement_is_caught() {
    let btf = Btf::from_sys_fs().expect("kernel BTF");
    for stmt in [
        "fn cap_capable(const struct cred *, struct user_namespace *, int, int)",
        "tp_btf cap_capable(const struct cred *, int)",
        "tracepoint capability/cap_capable cap@36",
        "tracepoint syscalls/sys_enter_capset headers@16",
        "fn no_such_function_in_any_kernel(int)",
    ] {
        assert!(check(&btf, stmt).is_err(), "{stmt} passed");
    }
}
