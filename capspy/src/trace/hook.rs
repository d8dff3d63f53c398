//! Loading the kernel program and attaching it to `cap_capable` by the best method this kernel
//! allows: fexit, then kprobe + kretprobe, then the `capability:cap_capable` tracepoint as
//! tp_btf, raw tracepoint or classic tracepoint.

use std::{
    cell::OnceCell,
    fmt::{self, Write as _},
    os::fd::{AsFd as _, OwnedFd},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::Array,
    programs::{BtfTracePoint, FExit, KProbe, RawTracePoint, TracePoint},
    sys::BpfHelper,
};
use capspy_common::{
    ADVISORY_FUNCS_CAPACITY, AddrRange, CgroupOffsets, CommPrefix, CredOffsets, ExeOffsets,
    KPROBE_ARGS_CAPACITY, RUNTIME_COMMS_CAPACITY, SITE_ALWAYS_WALK, SYSCALL_SLOTS, abi, globals,
    maps, programs,
};

use super::call_path::CallPaths;
use crate::kernel::{btf, kallsyms::Kallsyms};
use crate::model::caps::Capability;
use crate::model::check::RUNTIME_COMMS;

/// The object built from `capspy-ebpf` by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/capspy"));
/// The same program counting the common checks in cgroup local storage (Linux 6.2+): a second
/// object, because aya creates every map of an object at load and older kernels refuse the type.
static OBJECT_CGRP: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/capspy-cgrp"));
/// `OBJECT_CGRP` with the hot path's stage cuts compiled in, for the benchmark's stage table
/// (`record --bench-stop-after`) only.
static OBJECT_STAGES: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/capspy-stages"));

/// Where the kernel program counts checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Aggregation {
    /// The common checks in their cgroup's local storage, the rest in the hash map.
    CgroupStorage,
    /// Every check in the hash map, and why the storage is not used.
    Hash(String),
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CgroupStorage => {
                f.write_str("cgroup local storage for the common checks, hash map for the rest")
            }
            Self::Hash(why) => write!(f, "hash map (no cgroup local storage: {why})"),
        }
    }
}

/// What `--hook` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HookChoice {
    /// The first method that loads, in the order fexit, kprobe, tracepoint.
    Auto,
    Fexit,
    Kprobe,
    /// tp_btf, raw tracepoint or classic tracepoint, whichever loads first.
    Tracepoint,
}

/// One way of attaching to `cap_capable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Fexit,
    Kprobe,
    TpBtf,
    RawTracepoint,
    Tracepoint,
}

impl Method {
    pub const ALL: [Self; 5] = [
        Self::Fexit,
        Self::Kprobe,
        Self::TpBtf,
        Self::RawTracepoint,
        Self::Tracepoint,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Fexit => "fexit",
            Self::Kprobe => "kprobe",
            Self::TpBtf => "tp_btf",
            Self::RawTracepoint => "raw_tracepoint",
            Self::Tracepoint => "tracepoint",
        }
    }

    /// Whether the hook sees `cap_capable`'s `opts` (and so the audit flag) directly.
    pub fn has_opts(self) -> bool {
        matches!(self, Self::Fexit | Self::Kprobe)
    }

    fn candidates(choice: HookChoice) -> &'static [Self] {
        match choice {
            HookChoice::Auto => &Self::ALL,
            HookChoice::Fexit => &[Self::Fexit],
            HookChoice::Kprobe => &[Self::Kprobe],
            HookChoice::Tracepoint => &[Self::TpBtf, Self::RawTracepoint, Self::Tracepoint],
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("no hook method could attach to cap_capable:{}", format_failures(.0))]
    NoMethod(Vec<(Method, String)>),
    #[error("the kernel program object is missing map {0}")]
    MissingMap(&'static str),
    #[error("map {0} is not a hash map")]
    NotAHashMap(&'static str),
    #[error("duplicating the descriptor of map {0}: {1}")]
    DupMap(&'static str, std::io::Error),
    #[error(transparent)]
    Map(#[from] aya::maps::MapError),
    #[error("watching the ring buffer: {0}")]
    Io(#[from] std::io::Error),
}

fn format_failures(failures: &[(Method, String)]) -> String {
    failures.iter().fold(String::new(), |mut out, (m, why)| {
        let _ = write!(out, "\n  {m}: {why}");
        out
    })
}

/// Facts about the running kernel that the program needs before it loads.
///
/// It keeps facts, not the parsed vmlinux BTF (about 10 MB): aya parses BTF again where it needs
/// it (the loader, fexit and tp_btf attach), one copy at a time, so the daemon's peak stays low.
pub struct KernelInfo {
    /// Why there is no BTF, if there is none.
    pub btf_problem: Option<String>,
    pub abi: Option<btf::CapCapableAbi>,
    pub userns_level_offset: u32,
    pub task_real_cred_offset: u32,
    pub task_comm_offset: u32,
    /// Whether the kernel has `bpf_get_current_task_btf` (Linux 5.11+). Without it the program
    /// copies the task's fields with `bpf_probe_read_kernel`, and the tracepoint methods walk the
    /// stack on every check (the syscall number needs a BTF task).
    pub task_btf_helper: bool,
    /// Whether it also has `bpf_task_pt_regs` (Linux 5.15+): the program then reads the syscall
    /// number (tracepoint call sites) and the ids `setuid`/`setgid` ask for.
    pub task_pt_regs_helper: bool,
    /// Where `struct cred` keeps ids and capability sets, for the programs that see capabilities
    /// kept without a check (all 0 without BTF: they then record nothing).
    pub cred_offsets: CredOffsets,
    /// Where the kernel program finds a task's executable's names (all 0 when unknown).
    pub exe_offsets: ExeOffsets,
    pub advisory_funcs: Vec<(String, AddrRange)>,
    /// Where the task's cgroup v2 is, for the cgroup storage object; Err says why it is not
    /// used (no map type before Linux 6.2, no BTF, or turned off).
    pub cgroup_storage: Result<CgroupOffsets, String>,
    /// 0, else the benchmark's stage to stop the hot path after (`record --bench-stop-after`;
    /// only with cgroup storage: the stage cuts are compiled into that object alone).
    pub bench_stop_after: u8,
    /// Why /proc/kallsyms is unusable, if it is. The table itself (about 6 MB) is not kept: see
    /// [`KernelInfo::symbols`].
    pub kallsyms_problem: Option<String>,
}

/// `task->mm->exe_file->f_path.dentry`, `dentry->d_name.name` and `dentry->d_parent`, from BTF.
fn exe_offsets(btf: &btf::Btf) -> Option<ExeOffsets> {
    let at = |s: &str, m: &str| btf.struct_member_offset(s, m).ok();
    Some(ExeOffsets {
        task_mm: at("task_struct", "mm")?,
        mm_exe_file: at("mm_struct", "exe_file")?,
        file_dentry: at("file", "f_path")? + at("path", "dentry")?,
        dentry_parent: at("dentry", "d_parent")?,
        dentry_name: at("dentry", "d_name")? + at("qstr", "name")?,
        padding: 0,
    })
}

/// Whether the kernel has `BPF_MAP_TYPE_CGRP_STORAGE` (probed by creating one), and where a
/// task's cgroup v2 and its id are, from BTF.
fn cgroup_storage(btf: &btf::Btf) -> Result<CgroupOffsets, String> {
    match aya::sys::is_map_supported(aya::maps::MapType::CgrpStorage) {
        Ok(true) => {}
        Ok(false) => return Err("the kernel has no BPF_MAP_TYPE_CGRP_STORAGE (Linux 6.2+)".into()),
        Err(e) => return Err(format!("probing BPF_MAP_TYPE_CGRP_STORAGE: {e}")),
    }
    let at = |s: &str, m: &str| {
        btf.struct_member_offset(s, m)
            .map_err(|e| format!("BTF has no {s}.{m}: {e}"))
    };
    Ok(CgroupOffsets {
        task_cgroups: at("task_struct", "cgroups")?,
        css_set_dfl_cgrp: at("css_set", "dfl_cgrp")?,
        cgroup_kn: at("cgroup", "kn")?,
        kernfs_node_id: at("kernfs_node", "id")?,
    })
}

/// Kernel functions whose capability checks are advisory (noaudit): reached through them, a
/// check only chooses a behaviour and never means the capability is needed.
pub const ADVISORY_FUNCTIONS: &[&str] = &[
    // The overcommit heuristic on every mmap/brk/exec (cap_vm_enough_memory, often inlined).
    "security_vm_enough_memory_mm",
    "cap_vm_enough_memory",
    "__vm_enough_memory",
    "ns_capable_noaudit",
    "has_ns_capability_noaudit",
    "has_capability_noaudit",
    "capable_noaudit",
    // capset(2) asks for SETPCAP before looking at the new sets (cap_inh_is_capped); the answer
    // only matters when raising the inheritable set beyond the permitted one, which almost no
    // program does. Every program that drops its capabilities (ping does) makes this check.
    "cap_capset",
];

impl KernelInfo {
    pub fn probe() -> Self {
        let btf = btf::Btf::from_sys_fs();
        let (btf_problem, abi, offsets) = match &btf {
            Ok(parsed) => {
                let abi = parsed.cap_capable_abi().ok();
                let offset = |s, m| parsed.struct_member_offset(s, m).unwrap_or(0);
                let cred = CredOffsets {
                    uid: offset("cred", "uid"),
                    euid: offset("cred", "euid"),
                    suid: offset("cred", "suid"),
                    gid: offset("cred", "gid"),
                    egid: offset("cred", "egid"),
                    sgid: offset("cred", "sgid"),
                    cap_inheritable: offset("cred", "cap_inheritable"),
                    cap_permitted: offset("cred", "cap_permitted"),
                    cap_ambient: offset("cred", "cap_ambient"),
                    user_ns: offset("cred", "user_ns"),
                };
                let offsets = (
                    offset("user_namespace", "level"),
                    offset("task_struct", "real_cred"),
                    offset("task_struct", "comm"),
                    cred,
                );
                (None, abi, offsets)
            }
            Err(e) => (Some(e.to_string()), None, (0, 0, 0, CredOffsets::default())),
        };
        let (userns_level_offset, task_real_cred_offset, task_comm_offset, cred_offsets) = offsets;
        let exe_offsets = btf.as_ref().ok().and_then(exe_offsets).unwrap_or_default();
        let cgroup_storage = match &btf {
            Ok(parsed) => cgroup_storage(parsed),
            Err(e) => Err(format!("no BTF ({e})")),
        };
        // Only the advisory functions' ranges are kept; the table is dropped before attaching,
        // when aya parses BTF, to keep the start-up peak low.
        let (kallsyms, kallsyms_problem) = match Kallsyms::from_proc() {
            Ok(k) => (Some(k), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let advisory_funcs = kallsyms
            .as_ref()
            .map(|k| {
                ADVISORY_FUNCTIONS
                    .iter()
                    .filter_map(|name| {
                        let r = k.function_range(name)?;
                        Some((
                            (*name).to_string(),
                            AddrRange {
                                start: r.start,
                                end: r.end,
                            },
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            btf_problem,
            abi,
            userns_level_offset,
            task_real_cred_offset,
            task_comm_offset,
            task_btf_helper: has_helper(BpfHelper::BPF_FUNC_get_current_task_btf, "5.11"),
            task_pt_regs_helper: has_helper(BpfHelper::BPF_FUNC_task_pt_regs, "5.15"),
            cred_offsets,
            exe_offsets,
            advisory_funcs,
            cgroup_storage,
            bench_stop_after: 0,
            kallsyms_problem,
        }
    }

    /// Counts every check in the hash map, as on kernels without cgroup local storage.
    pub fn without_cgroup_storage(&mut self, why: &str) {
        self.cgroup_storage = Err(why.to_string());
    }

    /// The kernel symbol table, to name call paths: read again when needed, after attaching and
    /// before dropping privileges (kernel addresses are shown only to CAP_SYSLOG).
    pub fn symbols(&self) -> Option<CallPaths> {
        if self.kallsyms_problem.is_some() {
            return None;
        }
        let symbols = Kallsyms::from_proc().ok();
        release_freed_memory();
        symbols.map(CallPaths::new)
    }
}

/// Whether kprobe programs (and so fexit and tracepoint ones: they share these helpers) may call
/// `helper`, probed as libbpf does by loading a program that calls it. If the probe itself cannot
/// run, the helper is assumed, as on every kernel since `since`.
fn has_helper(helper: BpfHelper, since: &str) -> bool {
    match aya::sys::is_helper_supported(aya::programs::ProgramType::KProbe, helper) {
        Ok(supported) => supported,
        Err(e) => {
            log::debug!("probing {helper:?} (Linux {since}+): {e}");
            true
        }
    }
}

/// Sizes of the kernel maps; smaller than the defaults only to test what happens when they fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// Entries of the aggregation map.
    pub checks: u32,
    /// Bytes of the first-sighting ring buffer (a power of two, at least a page).
    pub sightings_bytes: u32,
    /// Bytes of the `cgroup_mkdir` ring buffer (same rule).
    pub cgroups_bytes: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        Self {
            checks: capspy_common::CHECKS_CAPACITY,
            sightings_bytes: capspy_common::SIGHTINGS_BYTES,
            cgroups_bytes: capspy_common::CGROUPS_BYTES,
        }
    }
}

/// The program, loaded and attached. Dropping it detaches.
pub struct Tracer {
    pub ebpf: Ebpf,
    pub method: Method,
    pub aggregation: Aggregation,
    /// Methods tried before this one, and why they failed.
    pub skipped: Vec<(Method, String)>,
    /// The optional programs (besides `cap_capable`'s) by name, and why one did not attach.
    pub optional: Vec<(&'static str, Option<String>)>,
}

impl Tracer {
    /// Tries each method allowed by `choice` in order and keeps the first that attaches.
    pub fn attach(choice: HookChoice, kernel: &KernelInfo) -> Result<Self, HookError> {
        Self::attach_sized(choice, kernel, MapSizes::default())
    }

    pub fn attach_sized(
        choice: HookChoice,
        kernel: &KernelInfo,
        sizes: MapSizes,
    ) -> Result<Self, HookError> {
        let mut failures = Vec::new();
        let settings = Settings::new(kernel);
        let mut loader = Loader::new(kernel, &settings, sizes);
        for &method in Method::candidates(choice) {
            match loader.attach_method(method) {
                Ok((mut ebpf, aggregation)) => {
                    // Its parse of the kernel's BTF goes before more is loaded and attached.
                    drop(loader);
                    let mkdir = attach_cgroup_mkdir(&mut ebpf).err();
                    if let Some(why) = &mkdir {
                        // Attribution still works by walking cgroupfs; very short-lived
                        // cgroups may then stay unattributed.
                        log::warn!("cgroup creation is not traced ({why})");
                    }
                    let facts = attach_facts(&mut ebpf, kernel);
                    let facts_missing = missing(&facts);
                    if !facts_missing.is_empty() {
                        // Checks are still traced; only needs that make no check are missed.
                        log::warn!(
                            "capabilities kept without a check (capset, ambient raise, file \
                             capabilities) are not all traced: {}",
                            facts_missing.join("; ")
                        );
                    }
                    let mut optional = vec![(programs::CGROUP_MKDIR, mkdir)];
                    optional.extend(facts);
                    release_freed_memory();
                    return Ok(Self {
                        ebpf,
                        method,
                        aggregation,
                        skipped: failures,
                        optional,
                    });
                }
                Err(why) => failures.push((method, why)),
            }
        }
        Err(HookError::NoMethod(failures))
    }

    /// Takes a map out of the program, typed.
    pub fn take_map<T>(&mut self, name: &'static str) -> Result<T, HookError>
    where
        T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
    {
        Ok(T::try_from(self.untyped_map(name)?)?)
    }

    /// A hash map, with a second descriptor of it for the reads aya has no call for (see
    /// [`super::batch`]).
    pub fn take_hash_map<T>(&mut self, name: &'static str) -> Result<(T, OwnedFd), HookError>
    where
        T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self.untyped_map(name)?;
        let aya::maps::Map::HashMap(data) = &map else {
            return Err(HookError::NotAHashMap(name));
        };
        let fd = data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| HookError::DupMap(name, e))?;
        Ok((T::try_from(map)?, fd))
    }

    fn untyped_map(&mut self, name: &'static str) -> Result<aya::maps::Map, HookError> {
        self.ebpf.take_map(name).ok_or(HookError::MissingMap(name))
    }
}

/// The kernel program's settings that are not fields of [`KernelInfo`], owned here so that one
/// [`Loader`] can borrow them for every method it tries.
pub struct Settings {
    self_tgid: u32,
    abi: u8,
    task_btf: u8,
    task_pt_regs: u8,
    ranges: [AddrRange; ADVISORY_FUNCS_CAPACITY as usize],
    comms: [CommPrefix; RUNTIME_COMMS_CAPACITY],
    cgroup: CgroupOffsets,
}

impl Settings {
    #[must_use]
    pub fn new(kernel: &KernelInfo) -> Self {
        let mut ranges = [AddrRange::default(); ADVISORY_FUNCS_CAPACITY as usize];
        for (slot, (_, range)) in ranges.iter_mut().zip(&kernel.advisory_funcs) {
            *slot = *range;
        }
        Self {
            self_tgid: std::process::id(),
            abi: match kernel.abi {
                Some(btf::CapCapableAbi::LegacyAudit) => abi::LEGACY_AUDIT,
                _ => abi::OPTS,
            },
            task_btf: u8::from(kernel.task_btf_helper),
            task_pt_regs: u8::from(kernel.task_pt_regs_helper),
            ranges,
            comms: runtime_comm_prefixes(),
            cgroup: kernel.cgroup_storage.clone().unwrap_or_default(),
        }
    }
}

/// Loads the kernel program for each method tried, with one aya loader and one parse of the
/// kernel's BTF for all of them: `EbpfLoader::new` reads and parses /sys/kernel/btf/vmlinux
/// (~19 MB at its height here), and a parse per loader and per attach target made the daemon's
/// start-up peak.
pub struct Loader<'a> {
    aya: EbpfLoader<'a>,
    kernel: &'a KernelInfo,
    settings: &'a Settings,
    vmlinux: OnceCell<Result<aya::Btf, aya::BtfError>>,
}

impl<'a> Loader<'a> {
    #[must_use]
    pub fn new(kernel: &'a KernelInfo, settings: &'a Settings, sizes: MapSizes) -> Self {
        let mut aya = EbpfLoader::new();
        // The objects have no CO-RE relocations (`tests::objects_have_no_core_relocations`), so
        // the loader needs no kernel BTF: its own parse is dropped before anything else is parsed.
        aya.btf(None);
        aya.map_max_entries(maps::CHECKS, sizes.checks)
            .map_max_entries(maps::SIGHTINGS, sizes.sightings_bytes)
            .map_max_entries(maps::NEW_CGROUPS, sizes.cgroups_bytes)
            .override_global(globals::SELF_TGID, &settings.self_tgid, true)
            .override_global(globals::CAP_CAPABLE_ABI, &settings.abi, true)
            .override_global(
                globals::USERNS_LEVEL_OFFSET,
                &kernel.userns_level_offset,
                true,
            )
            .override_global(
                globals::TASK_REAL_CRED_OFFSET,
                &kernel.task_real_cred_offset,
                true,
            )
            .override_global(globals::TASK_COMM_OFFSET, &kernel.task_comm_offset, true)
            .override_global(globals::TASK_BTF, &settings.task_btf, true)
            .override_global(globals::TASK_PT_REGS, &settings.task_pt_regs, true)
            .override_global(globals::CRED_OFFSETS, &kernel.cred_offsets, true)
            .override_global(globals::EXE_OFFSETS, &kernel.exe_offsets, true)
            .override_global(globals::ADVISORY_FUNCS, &settings.ranges, true)
            .override_global(globals::RUNTIME_COMMS, &settings.comms, true)
            .override_global(globals::BENCH_STOP_AFTER, &kernel.bench_stop_after, true)
            // Only the cgroup storage object has it; set for each load below.
            .override_global(globals::CGROUP_OFFSETS, &settings.cgroup, false);
        Self {
            aya,
            kernel,
            settings,
            vmlinux: OnceCell::new(),
        }
    }

    /// The kernel's BTF for the attach targets of tp_btf and fexit programs, parsed on first use.
    fn kernel_btf(&self) -> Result<&aya::Btf, String> {
        self.vmlinux
            .get_or_init(btf::aya_vmlinux)
            .as_ref()
            .map_err(|e| format!("reading the kernel's BTF: {e}"))
    }

    /// Loads and attaches one method, with the cgroup storage object where the kernel takes it
    /// and the hash-only one otherwise; the error is a one-line reason for `doctor` and error
    /// messages.
    pub fn attach_method(&mut self, method: Method) -> Result<(Ebpf, Aggregation), String> {
        let why = match &self.kernel.cgroup_storage {
            Ok(_) => match self.attach_object(method, true) {
                Ok(ebpf) => return Ok((ebpf, Aggregation::CgroupStorage)),
                Err(why) => why,
            },
            Err(why) => why.clone(),
        };
        let ebpf = self.attach_object(method, false)?;
        Ok((ebpf, Aggregation::Hash(why)))
    }

    /// Loads one object (the cgroup storage one with `cgroup`) and attaches `method`. The storage
    /// object's fold program is attached first: without it a removed cgroup's cells would be
    /// lost.
    fn attach_object(&mut self, method: Method, cgroup: bool) -> Result<Ebpf, String> {
        let kernel = self.kernel;
        if method.has_opts() && kernel.abi.is_none() {
            // Without BTF we cannot tell `opts` from the pre-5.1 `audit` argument.
            let why = kernel
                .btf_problem
                .clone()
                .unwrap_or_else(|| "cap_capable's last parameter is neither opts nor audit".into());
            return Err(format!("cannot decode cap_capable's audit argument: {why}"));
        }
        let mut ebpf = self
            .load_object(method, cgroup)
            .map_err(|e| format!("loading the object: {e}"))?;
        if cgroup {
            attach_fold(&mut ebpf, self.kernel_btf()?)
                .map_err(|e| format!("cgroup_rmdir: {}", describe(&e)))?;
        }
        let attached = match method {
            Method::Fexit => attach_fexit(&mut ebpf, self.kernel_btf()?),
            Method::Kprobe => attach_kprobe(&mut ebpf),
            Method::TpBtf => attach_tp_btf(&mut ebpf, self.kernel_btf()?),
            Method::RawTracepoint => attach_raw_tp(&mut ebpf),
            Method::Tracepoint => attach_tracepoint(&mut ebpf),
        };
        attached.map_err(|e| describe(&e))?;
        if !method.has_opts() {
            mark_mixed_call_sites(
                &mut ebpf,
                kernel.task_btf_helper && kernel.task_pt_regs_helper,
            )
            .map_err(|e| format!("configuring call sites: {e}"))?;
        }
        Ok(ebpf)
    }

    fn load_object(&mut self, method: Method, cgroup: bool) -> Result<Ebpf, aya::EbpfError> {
        // Re-set (same value) only to require the global in the storage object.
        let settings = self.settings;
        self.aya
            .override_global(globals::CGROUP_OFFSETS, &settings.cgroup, cgroup);
        self.aya
            // Only the kprobe method passes arguments through this map; others need no room.
            .map_max_entries(
                maps::KPROBE_ARGS,
                if method == Method::Kprobe {
                    KPROBE_ARGS_CAPACITY
                } else {
                    1
                },
            )
            .load(match (cgroup, self.kernel.bench_stop_after) {
                (true, 0) => OBJECT_CGRP,
                (true, _) => OBJECT_STAGES,
                (false, _) => OBJECT,
            })
    }
}

fn runtime_comm_prefixes() -> [CommPrefix; RUNTIME_COMMS_CAPACITY] {
    let mut out = [CommPrefix::default(); RUNTIME_COMMS_CAPACITY];
    for (slot, prefix) in out.iter_mut().zip(RUNTIME_COMMS) {
        let mut value = [0u8; 8];
        let mut mask = [0u8; 8];
        for (i, b) in prefix.iter().take(8).enumerate() {
            value[i] = *b;
            mask[i] = 0xff;
        }
        *slot = CommPrefix {
            value: u64::from_le_bytes(value),
            mask: u64::from_le_bytes(mask),
        };
    }
    out
}

/// Hands freed heap pages (BTF, relocation data, parsing buffers) back to the system: a
/// long-running daemon otherwise keeps its start-up peak as resident memory.
fn release_freed_memory() {
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe { libc::malloc_trim(0) };
}

type AttachResult = Result<(), aya::programs::ProgramError>;

/// The `cgroup:cgroup_mkdir` tracepoint, for attribution of short-lived cgroups. Classic
/// tracepoints need tracefs, which is not mounted everywhere: mount it if we may.
fn attach_cgroup_mkdir(ebpf: &mut Ebpf) -> Result<(), String> {
    const TRACEFS: &str = "/sys/kernel/tracing";
    if !std::path::Path::new(TRACEFS).join("events").exists() {
        let (src, target, fstype) = (c"nodev", c"/sys/kernel/tracing", c"tracefs");
        // SAFETY: mount(2) with NUL-terminated strings; failure is reported by the attach below.
        unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            );
        }
    }
    let prog: &mut TracePoint = program(ebpf, programs::CGROUP_MKDIR).map_err(|e| describe(&e))?;
    prog.load().map_err(|e| describe(&e))?;
    prog.attach("cgroup", "cgroup_mkdir")
        .map_err(|e| describe(&e))?;
    Ok(())
}

/// The programs that see capabilities kept or raised without a check (`capset`, ambient raise,
/// exec of a file with file capabilities), as classic tracepoints: they exist on every kernel
/// with `CONFIG_FTRACE_SYSCALLS`. Returns each program with why it did not attach, if it did not;
/// the others stay attached.
pub fn attach_facts(ebpf: &mut Ebpf, kernel: &KernelInfo) -> Vec<(&'static str, Option<String>)> {
    let no_cred = (kernel.cred_offsets.cap_permitted == 0 || kernel.task_real_cred_offset == 0)
        .then(|| {
            format!(
                "no BTF to find struct cred's fields ({})",
                kernel
                    .btf_problem
                    .as_deref()
                    .unwrap_or("cred has no cap_permitted")
            )
        });
    programs::FACTS
        .into_iter()
        .map(|(name, category, tracepoint)| {
            if let Some(why) = &no_cred {
                return (name, Some(why.clone()));
            }
            let attached = program::<TracePoint>(ebpf, name).and_then(|prog| {
                prog.load()?;
                prog.attach(category, tracepoint)?;
                Ok(())
            });
            let why = attached
                .err()
                .map(|e| format!("{category}:{tracepoint}: {}", describe(&e)));
            (name, why)
        })
        .collect()
}

/// The reasons of the programs that did not attach, each once.
pub fn missing(attached: &[(&'static str, Option<String>)]) -> Vec<String> {
    let mut why: Vec<String> = attached.iter().filter_map(|(_, w)| w.clone()).collect();
    why.dedup();
    why
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, aya::programs::ProgramError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or(aya::programs::ProgramError::UnexpectedProgramType)?;
    prog.try_into()
}

// TP_PROTO(struct cgroup *cgrp, const char *path): the cgroup storage object's fold.
fn attach_fold(ebpf: &mut Ebpf, btf: &aya::Btf) -> AttachResult {
    let prog: &mut BtfTracePoint = program(ebpf, programs::CGROUP_RMDIR_FOLD)?;
    prog.load("cgroup_rmdir", btf)?;
    prog.attach()?;
    Ok(())
}

// int cap_capable(const struct cred *cred, struct user_namespace *targ_ns, int cap,
//                 unsigned int opts);
fn attach_fexit(ebpf: &mut Ebpf, btf: &aya::Btf) -> AttachResult {
    let prog: &mut FExit = program(ebpf, programs::FEXIT)?;
    prog.load("cap_capable", btf)?;
    prog.attach()?;
    Ok(())
}

// Same prototype; the kretprobe sees only the return value.
fn attach_kprobe(ebpf: &mut Ebpf) -> AttachResult {
    // The return probe first: an entry probe alone would fill KPROBE_ARGS with entries no one
    // removes.
    let ret: &mut KProbe = program(ebpf, programs::KRETPROBE)?;
    ret.load()?;
    ret.attach("cap_capable", 0)?;
    let entry: &mut KProbe = program(ebpf, programs::KPROBE)?;
    entry.load()?;
    entry.attach("cap_capable", 0)?;
    Ok(())
}

// TP_PROTO(const struct cred *cred, struct user_namespace *target_ns,
//          const struct user_namespace *capable_ns, int cap, int ret)   (Linux 6.13+)
fn attach_tp_btf(ebpf: &mut Ebpf, btf: &aya::Btf) -> AttachResult {
    let prog: &mut BtfTracePoint = program(ebpf, programs::TP_BTF)?;
    prog.load("cap_capable", btf)?;
    prog.attach()?;
    Ok(())
}

fn attach_raw_tp(ebpf: &mut Ebpf) -> AttachResult {
    let prog: &mut RawTracePoint = program(ebpf, programs::RAW_TRACEPOINT)?;
    prog.load()?;
    prog.attach("cap_capable")?;
    Ok(())
}

fn attach_tracepoint(ebpf: &mut Ebpf) -> AttachResult {
    let prog: &mut TracePoint = program(ebpf, programs::TRACEPOINT)?;
    prog.load()?;
    prog.attach("capability", "cap_capable")?;
    Ok(())
}

/// Syscalls (x86_64 numbers) known to reach one capability through both an advisory and an
/// audited path: for these the tracepoint methods read the stack on every check.
const MIXED_CALL_SITES: &[(Capability, &[u32])] = &[
    // fork/clone: dup_mmap's overcommit check, then CLONE_NEW* needs SYS_ADMIN for real.
    (Capability::SYS_ADMIN, &[56, 57, 58, 435]),
    // /proc/PID files: `stat` asks PTRACE noaudit, `environ`/`fd` ask audited.
    (Capability::SYS_PTRACE, &[0, 2, 17, 89, 257, 267]),
];

/// Without `bpf_get_current_task_btf` and `bpf_task_pt_regs` the program cannot read the syscall
/// number, and every check falls in each capability's last slot: those are then walked on every
/// check.
fn mark_mixed_call_sites(ebpf: &mut Ebpf, syscall_known: bool) -> Result<(), HookError> {
    let map = ebpf
        .map_mut(maps::CALL_SITE_CLASS)
        .ok_or(HookError::MissingMap(maps::CALL_SITE_CLASS))?;
    let mut classes: Array<_, u8> = Array::try_from(map)?;
    if !syscall_known {
        for cap in 0..64 {
            classes.set(cap * SYSCALL_SLOTS + SYSCALL_SLOTS - 1, SITE_ALWAYS_WALK, 0)?;
        }
    }
    for (cap, syscalls) in MIXED_CALL_SITES {
        for &nr in *syscalls {
            classes.set(u32::from(cap.0) * SYSCALL_SLOTS + nr, SITE_ALWAYS_WALK, 0)?;
        }
    }
    Ok(())
}

/// One line (or a few, with the verifier's last words) saying why a method failed.
fn describe(e: &aya::programs::ProgramError) -> String {
    use aya::programs::ProgramError;
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            if tail.is_empty() {
                format!("BPF_PROG_LOAD failed: {io_error} (empty verifier log)")
            } else {
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(
                    "BPF_PROG_LOAD failed: {io_error}; verifier: {}",
                    tail.join(" | ")
                )
            }
        }
        other => {
            let mut msg = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                source = s.source();
            }
            msg
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_have_no_core_relocations() {
        // `Loader` gives aya no kernel BTF: a CO-RE relocation would then go unrelocated.
        for (name, object) in [("hash", OBJECT), ("cgroup storage", OBJECT_CGRP)] {
            let parsed = aya_obj::Object::parse(object).unwrap();
            assert!(
                parsed.btf_ext.is_some(),
                "{name}: no .BTF.ext, nothing was checked"
            );
            assert!(
                !parsed.has_btf_relocations(),
                "{name} object has CO-RE relocations: give the loader the kernel's BTF again"
            );
        }
    }

    #[test]
    fn comm_prefixes_match_the_kernel_encoding() {
        let prefixes = runtime_comm_prefixes();
        let head = |comm: &[u8]| {
            let mut b = [0u8; 8];
            for (d, s) in b.iter_mut().zip(comm) {
                *d = *s;
            }
            u64::from_le_bytes(b)
        };
        let matches = |comm: &[u8]| {
            prefixes
                .iter()
                .any(|p| p.mask != 0 && head(comm) & p.mask == p.value)
        };
        assert!(matches(b"runc:[2:INIT]"));
        assert!(matches(b"crun\0"));
        assert!(!matches(b"crunch\0"));
        assert!(!matches(b"sh\0"));
    }
}
