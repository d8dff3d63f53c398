//! Minimal reader for the kernel's raw BTF (`/sys/kernel/btf/vmlinux`).
//!
//! capspy only needs to look up function prototypes and check that BTF names
//! exist, so this walks the type section once to record where each type
//! starts and resolves everything else lazily.
//!
//! Only little-endian BTF is supported (x86-64, arm64, ...): the kernel emits
//! BTF in its own byte order, and big-endian BTF is rejected with
//! [`BtfError::BigEndian`] rather than misread.
//!
//! Why not a library: measured on this 6.18 kernel (5.5 MB of BTF), answering capspy's two
//! questions (`cap_capable`'s prototype, `task_struct.mm`'s offset) took this reader 7.7 MB peak
//! RSS and 9-29 ms; btf-rs 1.1.1, which parses every type up front, 53 MB and 650-830 ms (three
//! runs each, one binary). aya-obj 0.3's `Btf` parses too, but keeps `type_by_id` private, so it
//! cannot answer either question.

use std::{
    fs, io,
    ops::Range,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

/// Where the running kernel exposes its own BTF.
pub const VMLINUX_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// The running kernel's BTF parsed by aya, for the loader's relocations and the attach targets
/// of tp_btf and fexit programs. Parsed from a read-only mapping of the file where the kernel
/// allows one (Linux 6.16+: `btf_sysfs_vmlinux_mmap` maps the kernel's own pages with
/// `remap_pfn_range`, which count in no process's RSS,
/// <https://github.com/torvalds/linux/blob/v6.18/kernel/bpf/sysfs_btf.c>); elsewhere from a copy
/// read into memory, which adds the file's size (5.5 MB here) to the daemon's start-up peak.
///
/// # Errors
/// If the file cannot be read or aya cannot parse it.
pub fn aya_vmlinux() -> Result<aya::Btf, aya::BtfError> {
    match Mapping::read_only(Path::new(VMLINUX_BTF_PATH)) {
        Ok(map) => aya::Btf::parse(map.bytes(), aya::Endianness::default()),
        Err(e) => {
            log::debug!("mapping {VMLINUX_BTF_PATH}: {e}; reading it instead");
            aya::Btf::from_sys_fs()
        }
    }
}

/// A private read-only mapping of a whole file that does not change while mapped.
struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn read_only(path: &Path) -> io::Result<Self> {
        let file = fs::File::open(path)?;
        let len = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "empty file"));
        }
        // SAFETY: a new private read-only mapping of an open file; failure is checked below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { addr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` readable bytes stay mapped until drop, and the file does not change.
        unsafe { std::slice::from_raw_parts(self.addr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `read_only`, no longer borrowed.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

const MAGIC: u16 = 0xeb9f;
const VERSION: u8 = 1;
const HEADER_LEN: usize = 24;
const TYPE_HEADER_LEN: usize = 12;
/// Bounds type rendering so malformed BTF with reference cycles cannot recurse forever.
const MAX_TYPE_DEPTH: usize = 32;

// BTF_KIND_* values from include/uapi/linux/btf.h.
const KIND_INT: u8 = 1;
const KIND_PTR: u8 = 2;
const KIND_ARRAY: u8 = 3;
const KIND_STRUCT: u8 = 4;
const KIND_UNION: u8 = 5;
const KIND_ENUM: u8 = 6;
const KIND_FWD: u8 = 7;
const KIND_TYPEDEF: u8 = 8;
const KIND_VOLATILE: u8 = 9;
const KIND_CONST: u8 = 10;
const KIND_RESTRICT: u8 = 11;
const KIND_FUNC: u8 = 12;
const KIND_FUNC_PROTO: u8 = 13;
const KIND_VAR: u8 = 14;
const KIND_DATASEC: u8 = 15;
const KIND_FLOAT: u8 = 16;
const KIND_DECL_TAG: u8 = 17;
const KIND_TYPE_TAG: u8 = 18;
const KIND_ENUM64: u8 = 19;

/// Errors from loading or querying BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "{} does not exist: this kernel has no BTF (built without CONFIG_DEBUG_INFO_BTF)",
        path.display()
    )]
    NotAvailable { path: PathBuf },
    #[error("failed to read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("BTF data truncated: {what} at offset {offset} runs past the end")]
    Truncated { what: &'static str, offset: usize },
    #[error("not BTF data: bad magic {found:#06x} (expected {MAGIC:#06x})")]
    BadMagic { found: u16 },
    #[error("BTF is big-endian; only little-endian BTF is supported")]
    BigEndian,
    #[error("unsupported BTF version {0} (expected {VERSION})")]
    UnsupportedVersion(u8),
    #[error("malformed BTF header: {0}")]
    BadHeader(&'static str),
    #[error("BTF type {id} has unknown kind {kind}")]
    UnknownKind { id: u32, kind: u8 },
    #[error("BTF type id {id} does not exist")]
    BadTypeId { id: u32 },
    #[error("BTF string offset {offset} is out of range or not NUL-terminated")]
    BadString { offset: u32 },
    #[error("BTF type chain starting at id {id} is too deep or cyclic")]
    TypeTooDeep { id: u32 },
    #[error("BTF function {func} points at type {id} of kind {kind}, expected FUNC_PROTO")]
    NotAFuncProto { func: String, id: u32, kind: u8 },
    #[error("kernel function {func} not found in BTF")]
    FuncNotFound { func: String },
    #[error("struct {name} not found in BTF")]
    StructNotFound { name: String },
    #[error("struct {name} has no member {member} in BTF")]
    MemberNotFound { name: String, member: String },
    #[error("member {member} of struct {name} is a bitfield, not byte-addressable")]
    BitfieldMember { name: String, member: String },
    #[error("unexpected prototype for kernel function {func}: {detail}")]
    UnexpectedSignature { func: String, detail: String },
}

/// One parameter of a kernel function, as described by BTF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Parameter name; empty for unnamed parameters and for varargs.
    pub name: String,
    /// Best-effort C rendering of the type, e.g. `const struct cred *`; `...` for varargs.
    pub type_name: String,
}

/// How to decode the last argument of `cap_capable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapCapableAbi {
    /// `int cap_capable(const struct cred *, struct user_namespace *, int cap, unsigned int opts)`:
    /// a `CAP_OPT_*` bit set (Linux 5.1+, and backports).
    Opts,
    /// `int cap_capable(const struct cred *, struct user_namespace *, int cap, int audit)`:
    /// `SECURITY_CAP_AUDIT` / `SECURITY_CAP_NOAUDIT` (older kernels).
    LegacyAudit,
}

/// The header fields of one `struct btf_type`.
#[derive(Debug, Clone, Copy)]
struct RawType {
    name_off: u32,
    kind: u8,
    kind_flag: bool,
    vlen: u16,
    /// `size` or `type` depending on the kind.
    size_or_type: u32,
    /// Offset of the kind-specific trailing data within the type section.
    extra: usize,
}

/// Parsed BTF: the raw bytes plus the offset of every type.
pub struct Btf {
    data: Vec<u8>,
    types: Range<usize>,
    strings: Range<usize>,
    /// Offset of type `id` within the type section at index `id - 1` (id 0 is void).
    offsets: Vec<u32>,
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The raw bytes are megabytes of noise; show sizes only.
        f.debug_struct("Btf")
            .field("bytes", &self.data.len())
            .field("types", &self.offsets.len())
            .finish_non_exhaustive()
    }
}

impl Btf {
    /// Parses raw BTF (the format of `/sys/kernel/btf/vmlinux`).
    ///
    /// # Errors
    /// If the data is not well-formed little-endian BTF version 1.
    pub fn from_bytes(data: &[u8]) -> Result<Self, BtfError> {
        Self::from_vec(data.to_vec())
    }

    /// Reads and parses the running kernel's BTF.
    ///
    /// # Errors
    /// [`BtfError::NotAvailable`] if the kernel has no BTF, otherwise I/O or parse errors.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_path(Path::new(VMLINUX_BTF_PATH))
    }

    /// Reads and parses raw BTF from `path`.
    ///
    /// # Errors
    /// [`BtfError::NotAvailable`] if the file is missing, otherwise I/O or parse errors.
    pub fn from_path(path: &Path) -> Result<Self, BtfError> {
        match fs::read(path) {
            Ok(data) => Self::from_vec(data),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BtfError::NotAvailable {
                path: path.to_path_buf(),
            }),
            Err(source) => Err(BtfError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn from_vec(data: Vec<u8>) -> Result<Self, BtfError> {
        let header = data.get(..HEADER_LEN).ok_or(BtfError::Truncated {
            what: "header",
            offset: 0,
        })?;
        let magic = u16::from_le_bytes([header[0], header[1]]);
        if magic == MAGIC.swap_bytes() {
            return Err(BtfError::BigEndian);
        }
        if magic != MAGIC {
            return Err(BtfError::BadMagic { found: magic });
        }
        if header[2] != VERSION {
            return Err(BtfError::UnsupportedVersion(header[2]));
        }
        // header[3] is flags: none are defined, and unknown ones don't change the layout.
        let field = |i: usize| read_u32(header, 4 + 4 * i).map_or(0, to_usize);
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (field(0), field(1), field(2), field(3), field(4));
        if hdr_len < HEADER_LEN {
            return Err(BtfError::BadHeader("hdr_len is smaller than the header"));
        }
        // Section offsets are relative to the end of the header.
        let section = |off: usize, len: usize, what| {
            let start = hdr_len.checked_add(off);
            let end = start.and_then(|s| s.checked_add(len));
            match (start, end) {
                (Some(start), Some(end)) if end <= data.len() => Ok(start..end),
                _ => Err(BtfError::Truncated {
                    what,
                    offset: hdr_len.saturating_add(off),
                }),
            }
        };
        let types = section(type_off, type_len, "type section")?;
        let strings = section(str_off, str_len, "string section")?;
        // Offset 0 must be the empty string (anonymous names point there), and the
        // trailing NUL lets name lookups stop at the end of the section.
        if strings.is_empty() || data[strings.start] != 0 || data[strings.end - 1] != 0 {
            return Err(BtfError::BadHeader(
                "string section must start and end with NUL",
            ));
        }
        let offsets = index_types(&data[types.clone()])?;
        Ok(Self {
            data,
            types,
            strings,
            offsets,
        })
    }

    /// Number of types, not counting void.
    #[must_use]
    pub fn type_count(&self) -> usize {
        self.offsets.len()
    }

    /// Whether a kernel function (BTF `FUNC`) called `name` exists.
    #[must_use]
    pub fn has_func(&self, name: &str) -> bool {
        self.find_named(KIND_FUNC, name).is_some()
    }

    /// Whether a raw tracepoint `name` is available to `tp_btf` programs.
    ///
    /// The kernel declares `typedef ... btf_trace_<name>` for each of them.
    #[must_use]
    pub fn has_tracepoint(&self, name: &str) -> bool {
        const PREFIX: &str = "btf_trace_";
        self.ids().any(|id| {
            self.raw_type(id).is_ok_and(|t| {
                t.kind == KIND_TYPEDEF
                    && self
                        .name_bytes(t.name_off)
                        .is_ok_and(|n| n.strip_prefix(PREFIX.as_bytes()) == Some(name.as_bytes()))
            })
        })
    }

    /// Parameters of kernel function `name`, or `None` if BTF has no such function.
    ///
    /// If the function is variadic, the last entry has an empty name and type `...`.
    ///
    /// # Errors
    /// If the function's BTF is malformed (bad type ids, strings or a type cycle).
    pub fn func_params(&self, name: &str) -> Result<Option<Vec<Param>>, BtfError> {
        let Some(func_id) = self.find_named(KIND_FUNC, name) else {
            return Ok(None);
        };
        let proto_id = self.raw_type(func_id)?.size_or_type;
        self.proto_params(name, proto_id).map(Some)
    }

    /// Arguments of raw tracepoint `name` as `tp_btf` programs see them, or `None` if BTF has no
    /// such tracepoint: the prototype of `typedef void (*btf_trace_<name>)(void *, ...)` without
    /// its leading `void *` (the tracepoint's private data, not an argument).
    ///
    /// # Errors
    /// If the typedef's BTF is malformed or is not a pointer to a prototype.
    pub fn tracepoint_params(&self, name: &str) -> Result<Option<Vec<Param>>, BtfError> {
        let typedef = format!("btf_trace_{name}");
        let Some(id) = self.find_named(KIND_TYPEDEF, &typedef) else {
            return Ok(None);
        };
        let ptr = self.raw_type(self.raw_type(id)?.size_or_type)?;
        let mut params = self.proto_params(&typedef, ptr.size_or_type)?;
        if !params.is_empty() {
            params.remove(0);
        }
        Ok(Some(params))
    }

    fn proto_params(&self, name: &str, proto_id: u32) -> Result<Vec<Param>, BtfError> {
        let proto = self.raw_type(proto_id)?;
        if proto.kind != KIND_FUNC_PROTO {
            return Err(BtfError::NotAFuncProto {
                func: name.to_owned(),
                id: proto_id,
                kind: proto.kind,
            });
        }
        let vlen = usize::from(proto.vlen);
        let mut params = Vec::with_capacity(vlen);
        for i in 0..vlen {
            let (name_off, type_id) = self.param(proto.extra, i)?;
            // `...` is encoded as a final parameter with no name and type void.
            let param = if i + 1 == vlen && name_off == 0 && type_id == 0 {
                Param {
                    name: String::new(),
                    type_name: "...".to_owned(),
                }
            } else {
                Param {
                    name: self.name(name_off)?,
                    type_name: self.type_name(type_id)?,
                }
            };
            params.push(param);
        }
        Ok(params)
    }

    /// Decides how `cap_capable`'s 4th argument is encoded.
    ///
    /// Distributions backported the `audit` -> `opts` change, so this goes by the
    /// parameter name in BTF rather than the kernel version.
    ///
    /// # Errors
    /// If `cap_capable` is absent from BTF, its BTF is malformed, or its parameters
    /// are not `(cred, ns, cap, opts)` or `(cred, ns, cap, audit)`.
    pub fn cap_capable_abi(&self) -> Result<CapCapableAbi, BtfError> {
        const FUNC: &str = "cap_capable";
        let params = self
            .func_params(FUNC)?
            .ok_or_else(|| BtfError::FuncNotFound {
                func: FUNC.to_owned(),
            })?;
        let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        // Callers read `cap` from argument 3 and the flags from argument 4, so any
        // other layout would be decoded wrongly: refuse it instead.
        match names.as_slice() {
            [_, _, "cap", "opts"] => Ok(CapCapableAbi::Opts),
            [_, _, "cap", "audit"] => Ok(CapCapableAbi::LegacyAudit),
            _ => Err(BtfError::UnexpectedSignature {
                func: FUNC.to_owned(),
                detail: format!(
                    "expected (cred, ns, cap, opts|audit), found ({})",
                    render_params(&params)
                ),
            }),
        }
    }

    /// Byte offset of `member` within `struct struct_name`, for reading it from BPF.
    ///
    /// Members of anonymous nested structs and unions are found too, as C allows
    /// naming them directly.
    ///
    /// # Errors
    /// If the struct or member is absent, the member is a bitfield, or BTF is malformed.
    pub fn struct_member_offset(&self, struct_name: &str, member: &str) -> Result<u32, BtfError> {
        let id = self
            .ids()
            .find(|&id| {
                // Skip declarations without members (`vlen == 0`) in favour of the definition.
                self.raw_type(id).is_ok_and(|t| {
                    t.kind == KIND_STRUCT && t.vlen > 0 && self.name_is(t.name_off, struct_name)
                })
            })
            .ok_or_else(|| BtfError::StructNotFound {
                name: struct_name.to_owned(),
            })?;
        let (bits, bitfield) =
            self.member_bit_offset(id, member, 0)?
                .ok_or_else(|| BtfError::MemberNotFound {
                    name: struct_name.to_owned(),
                    member: member.to_owned(),
                })?;
        if bitfield || bits % 8 != 0 {
            return Err(BtfError::BitfieldMember {
                name: struct_name.to_owned(),
                member: member.to_owned(),
            });
        }
        Ok(bits / 8)
    }

    /// Bit offset of `member` in struct/union `id`, and whether it is a bitfield.
    fn member_bit_offset(
        &self,
        id: u32,
        member: &str,
        depth: usize,
    ) -> Result<Option<(u32, bool)>, BtfError> {
        if depth > MAX_TYPE_DEPTH {
            return Err(BtfError::TypeTooDeep { id });
        }
        let t = self.raw_type(id)?;
        for i in 0..usize::from(t.vlen) {
            let off = t.extra + 12 * i;
            let types = self.type_section();
            let (Some(name_off), Some(type_id), Some(offset)) = (
                read_u32(types, off),
                read_u32(types, off + 4),
                read_u32(types, off + 8),
            ) else {
                return Err(BtfError::Truncated {
                    what: "struct member",
                    offset: off,
                });
            };
            // With kind_flag set, the top 8 bits hold the bitfield size.
            let (bit_offset, bitfield) = if t.kind_flag {
                (offset & 0x00ff_ffff, offset >> 24 != 0)
            } else {
                (offset, false)
            };
            if name_off == 0 {
                let inner = self.strip_modifiers(type_id, depth + 1)?;
                if inner != 0
                    && matches!(self.raw_type(inner)?.kind, KIND_STRUCT | KIND_UNION)
                    && let Some((bits, inner_bitfield)) =
                        self.member_bit_offset(inner, member, depth + 1)?
                {
                    // An offset that overflows is malformed; call it unaddressable.
                    return Ok(Some(
                        bits.checked_add(bit_offset)
                            .map_or((0, true), |b| (b, inner_bitfield)),
                    ));
                }
            } else if self.name_is(name_off, member) {
                return Ok(Some((bit_offset, bitfield)));
            }
        }
        Ok(None)
    }

    /// Follows typedefs, qualifiers and type tags to the underlying type.
    fn strip_modifiers(&self, mut id: u32, depth: usize) -> Result<u32, BtfError> {
        for _ in depth..=MAX_TYPE_DEPTH {
            if id == 0 {
                return Ok(0);
            }
            let t = self.raw_type(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_CONST | KIND_VOLATILE | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type;
                }
                _ => return Ok(id),
            }
        }
        Err(BtfError::TypeTooDeep { id })
    }

    /// Best-effort C spelling of type `id`, e.g. `const struct cred *`.
    fn type_name(&self, id: u32) -> Result<String, BtfError> {
        self.render(id, 0)
    }

    fn ids(&self) -> std::ops::RangeInclusive<u32> {
        // `index_types` guarantees the count fits in u32.
        1..=u32::try_from(self.offsets.len()).unwrap_or(0)
    }

    /// First type of `kind` named `name`.
    fn find_named(&self, kind: u8, name: &str) -> Option<u32> {
        self.ids().find(|&id| {
            self.raw_type(id)
                .is_ok_and(|t| t.kind == kind && self.name_is(t.name_off, name))
        })
    }

    fn type_section(&self) -> &[u8] {
        self.data.get(self.types.clone()).unwrap_or_default()
    }

    fn string_section(&self) -> &[u8] {
        self.data.get(self.strings.clone()).unwrap_or_default()
    }

    fn raw_type(&self, id: u32) -> Result<RawType, BtfError> {
        // Id 0 is void, which has no record.
        let off = to_usize(id)
            .checked_sub(1)
            .and_then(|index| self.offsets.get(index))
            .ok_or(BtfError::BadTypeId { id })?;
        let off = to_usize(*off);
        parse_type_header(self.type_section(), off).ok_or(BtfError::Truncated {
            what: "type",
            offset: off,
        })
    }

    /// `(name_off, type)` of the `i`th `struct btf_param` in trailing data at `extra`.
    fn param(&self, extra: usize, i: usize) -> Result<(u32, u32), BtfError> {
        let types = self.type_section();
        let off = extra + 8 * i;
        read_u32(types, off)
            .zip(read_u32(types, off + 4))
            .ok_or(BtfError::Truncated {
                what: "function parameter",
                offset: off,
            })
    }

    fn name_bytes(&self, offset: u32) -> Result<&[u8], BtfError> {
        let rest = self
            .string_section()
            .get(to_usize(offset)..)
            .ok_or(BtfError::BadString { offset })?;
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(BtfError::BadString { offset })?;
        Ok(&rest[..len])
    }

    fn name(&self, offset: u32) -> Result<String, BtfError> {
        Ok(String::from_utf8_lossy(self.name_bytes(offset)?).into_owned())
    }

    /// Cheap equality check that avoids scanning for the NUL of long names.
    fn name_is(&self, offset: u32, name: &str) -> bool {
        let start = to_usize(offset);
        let Some(end) = start.checked_add(name.len() + 1) else {
            return false;
        };
        match self.string_section().get(start..end) {
            Some(s) => s.split_last() == Some((&0, name.as_bytes())),
            None => false,
        }
    }

    fn render(&self, id: u32, depth: usize) -> Result<String, BtfError> {
        if depth > MAX_TYPE_DEPTH {
            return Err(BtfError::TypeTooDeep { id });
        }
        if id == 0 {
            return Ok("void".to_owned());
        }
        let t = self.raw_type(id)?;
        let tagged = |tag: &str| -> Result<String, BtfError> {
            let name = self.name_bytes(t.name_off)?;
            Ok(if name.is_empty() {
                format!("{tag} {{...}}")
            } else {
                format!("{tag} {}", String::from_utf8_lossy(name))
            })
        };
        let qualified = |qualifier: &str| -> Result<String, BtfError> {
            let inner = self.render(t.size_or_type, depth + 1)?;
            // `T *const` qualifies the pointer itself; `const T` the pointee.
            Ok(if inner.ends_with('*') {
                format!("{inner}{qualifier}")
            } else {
                format!("{qualifier} {inner}")
            })
        };
        match t.kind {
            KIND_INT | KIND_FLOAT | KIND_TYPEDEF | KIND_FUNC | KIND_VAR | KIND_DATASEC => {
                self.name(t.name_off)
            }
            KIND_STRUCT => tagged("struct"),
            KIND_UNION => tagged("union"),
            KIND_ENUM | KIND_ENUM64 => tagged("enum"),
            // For FWD, kind_flag distinguishes a union from a struct.
            KIND_FWD => tagged(if t.kind_flag { "union" } else { "struct" }),
            KIND_CONST => qualified("const"),
            KIND_VOLATILE => qualified("volatile"),
            KIND_RESTRICT => qualified("restrict"),
            // Tags such as `__user` don't change the C type.
            KIND_TYPE_TAG | KIND_DECL_TAG => self.render(t.size_or_type, depth + 1),
            KIND_PTR => {
                let target = t.size_or_type;
                if target != 0 && self.raw_type(target)?.kind == KIND_FUNC_PROTO {
                    return self.render_proto(target, "(*)", depth + 1);
                }
                let inner = self.render(target, depth + 1)?;
                Ok(if inner.ends_with('*') {
                    format!("{inner}*")
                } else {
                    format!("{inner} *")
                })
            }
            KIND_ARRAY => {
                let types = self.type_section();
                let elem = read_u32(types, t.extra);
                let nelems = read_u32(types, t.extra + 8);
                let (Some(elem), Some(nelems)) = (elem, nelems) else {
                    return Err(BtfError::Truncated {
                        what: "array",
                        offset: t.extra,
                    });
                };
                Ok(format!("{}[{nelems}]", self.render(elem, depth + 1)?))
            }
            KIND_FUNC_PROTO => self.render_proto(id, "", depth),
            kind => Err(BtfError::UnknownKind { id, kind }),
        }
    }

    /// Renders a `FUNC_PROTO` as `ret <declarator>(args)`.
    fn render_proto(&self, id: u32, declarator: &str, depth: usize) -> Result<String, BtfError> {
        let t = self.raw_type(id)?;
        let ret = self.render(t.size_or_type, depth + 1)?;
        let vlen = usize::from(t.vlen);
        let mut args = Vec::with_capacity(vlen);
        for i in 0..vlen {
            let (name_off, type_id) = self.param(t.extra, i)?;
            args.push(if i + 1 == vlen && name_off == 0 && type_id == 0 {
                "...".to_owned()
            } else {
                self.render(type_id, depth + 1)?
            });
        }
        let args = if args.is_empty() {
            "void".to_owned()
        } else {
            args.join(", ")
        };
        Ok(format!("{ret} {declarator}({args})"))
    }
}

fn render_params(params: &[Param]) -> String {
    params
        .iter()
        .map(|p| {
            if p.name.is_empty() {
                p.type_name.clone()
            } else if p.type_name.ends_with('*') {
                format!("{}{}", p.type_name, p.name)
            } else {
                format!("{} {}", p.type_name, p.name)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Walks the type section once, recording where each type starts.
fn index_types(types: &[u8]) -> Result<Vec<u32>, BtfError> {
    // vmlinux averages roughly 40 bytes per type; a guess avoids most regrowth.
    let mut offsets = Vec::with_capacity(types.len() / 32);
    let mut off = 0;
    while off < types.len() {
        let id =
            u32::try_from(offsets.len() + 1).map_err(|_| BtfError::BadHeader("too many types"))?;
        let t = parse_type_header(types, off).ok_or(BtfError::Truncated {
            what: "type",
            offset: off,
        })?;
        let extra_len = trailing_len(t.kind, usize::from(t.vlen))
            .ok_or(BtfError::UnknownKind { id, kind: t.kind })?;
        let end = t.extra + extra_len;
        if end > types.len() {
            return Err(BtfError::Truncated {
                what: "type data",
                offset: off,
            });
        }
        offsets
            .push(u32::try_from(off).map_err(|_| BtfError::BadHeader("type section too large"))?);
        off = end;
    }
    Ok(offsets)
}

fn parse_type_header(types: &[u8], off: usize) -> Option<RawType> {
    let name_off = read_u32(types, off)?;
    let info = read_u32(types, off + 4)?;
    let size_or_type = read_u32(types, off + 8)?;
    Some(RawType {
        name_off,
        // info: bits 0-15 vlen, 24-28 kind, 31 kind_flag.
        kind: ((info >> 24) & 0x1f) as u8,
        kind_flag: info >> 31 != 0,
        vlen: (info & 0xffff) as u16,
        size_or_type,
        extra: off + TYPE_HEADER_LEN,
    })
}

/// Size of the data following `struct btf_type` for each kind; `None` if unknown,
/// since the section can't be walked past a type of unknown size.
fn trailing_len(kind: u8, vlen: usize) -> Option<usize> {
    Some(match kind {
        KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
        | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
        KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
        _ => return None,
    })
}

fn read_u32(data: &[u8], off: usize) -> Option<u32> {
    let bytes = data.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn to_usize(v: u32) -> usize {
    // capspy only runs on 64-bit Linux, where this never saturates.
    usize::try_from(v).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Assembles raw BTF blobs type by type.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = u32::try_from(self.strings.len()).unwrap();
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn raw(
            &mut self,
            name: &str,
            kind: u8,
            vlen: u16,
            size_or_type: u32,
            extra: &[u32],
        ) -> u32 {
            let info = (u32::from(kind) << 24) | u32::from(vlen);
            self.raw_info(name, info, size_or_type, extra)
        }

        fn raw_info(&mut self, name: &str, info: u32, size_or_type: u32, extra: &[u32]) -> u32 {
            let name_off = self.str(name);
            for word in [name_off, info, size_or_type].iter().chain(extra) {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }

        fn int(&mut self, name: &str, size: u32) -> u32 {
            self.raw(name, KIND_INT, 0, size, &[size * 8])
        }

        fn ptr(&mut self, target: u32) -> u32 {
            self.raw("", KIND_PTR, 0, target, &[])
        }

        fn constant(&mut self, target: u32) -> u32 {
            self.raw("", KIND_CONST, 0, target, &[])
        }

        fn strukt(&mut self, name: &str) -> u32 {
            self.raw(name, KIND_STRUCT, 0, 0, &[])
        }

        fn proto(&mut self, ret: u32, params: &[(&str, u32)]) -> u32 {
            let mut extra = Vec::new();
            for &(name, ty) in params {
                extra.push(self.str(name));
                extra.push(ty);
            }
            let vlen = u16::try_from(params.len()).unwrap();
            self.raw("", KIND_FUNC_PROTO, vlen, ret, &extra)
        }

        fn func(&mut self, name: &str, proto: u32) -> u32 {
            self.raw(name, KIND_FUNC, 0, proto, &[])
        }

        /// One type of every kind, so a wrong trailing size breaks later lookups.
        fn every_kind(&mut self) {
            let int = self.int("int", 4);
            let long = self.int("long", 8);
            self.raw("", KIND_ARRAY, 0, 0, &[int, int, 16]);
            let name = self.str("member");
            self.raw("s", KIND_STRUCT, 2, 8, &[name, int, 0, name, int, 32]);
            self.raw("u", KIND_UNION, 1, 4, &[name, int, 0]);
            self.raw("e", KIND_ENUM, 2, 4, &[name, 1, name, 2]);
            self.raw("fwd", KIND_FWD, 0, 0, &[]);
            self.raw("", KIND_VOLATILE, 0, int, &[]);
            self.raw("", KIND_RESTRICT, 0, int, &[]);
            let var = self.raw("v", KIND_VAR, 0, int, &[1]);
            self.raw(".data", KIND_DATASEC, 1, 4, &[var, 0, 4]);
            self.raw("double", KIND_FLOAT, 0, 8, &[]);
            self.raw("tag", KIND_DECL_TAG, 0, var, &[u32::MAX]);
            self.raw("user", KIND_TYPE_TAG, 0, long, &[]);
            self.raw("e64", KIND_ENUM64, 1, 8, &[name, 1, 0]);
        }

        fn build(&self) -> Vec<u8> {
            let type_len = u32::try_from(self.types.len()).unwrap();
            let str_len = u32::try_from(self.strings.len()).unwrap();
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.extend_from_slice(&[VERSION, 0]);
            for word in [24, 0, type_len, type_len, str_len] {
                out.extend_from_slice(&u32::to_le_bytes(word));
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// BTF declaring `int cap_capable(const struct cred *cred,
    /// struct user_namespace *targ_ns, int cap, <last_type> <last>)`.
    fn cap_capable_btf(last: &str, last_unsigned: bool) -> Vec<u8> {
        let mut b = Builder::new();
        b.every_kind();
        let int = b.int("int", 4);
        let uint = b.int("unsigned int", 4);
        let cred = b.strukt("cred");
        let const_cred = b.constant(cred);
        let cred_ptr = b.ptr(const_cred);
        let ns = b.strukt("user_namespace");
        let ns_ptr = b.ptr(ns);
        let last_ty = if last_unsigned { uint } else { int };
        let proto = b.proto(
            int,
            &[
                ("cred", cred_ptr),
                ("targ_ns", ns_ptr),
                ("cap", int),
                (last, last_ty),
            ],
        );
        b.func("cap_capable", proto);
        let tp_proto = b.proto(0, &[("", 0)]);
        let tp_ptr = b.ptr(tp_proto);
        b.raw("btf_trace_cap_capable", KIND_TYPEDEF, 0, tp_ptr, &[]);
        b.build()
    }

    fn param(name: &str, type_name: &str) -> Param {
        Param {
            name: name.to_owned(),
            type_name: type_name.to_owned(),
        }
    }

    #[test]
    fn opts_variant() {
        let btf = Btf::from_bytes(&cap_capable_btf("opts", true)).unwrap();
        assert_eq!(
            btf.func_params("cap_capable").unwrap().unwrap(),
            [
                param("cred", "const struct cred *"),
                param("targ_ns", "struct user_namespace *"),
                param("cap", "int"),
                param("opts", "unsigned int"),
            ]
        );
        assert_eq!(btf.cap_capable_abi().unwrap(), CapCapableAbi::Opts);
        assert!(btf.has_func("cap_capable"));
        assert!(btf.has_tracepoint("cap_capable"));
        assert!(!btf.has_tracepoint("cap_capabl"));
        assert!(!btf.has_tracepoint("btf_trace_cap_capable"));
    }

    #[test]
    fn audit_variant() {
        let btf = Btf::from_bytes(&cap_capable_btf("audit", false)).unwrap();
        let params = btf.func_params("cap_capable").unwrap().unwrap();
        assert_eq!(params[3], param("audit", "int"));
        assert_eq!(btf.cap_capable_abi().unwrap(), CapCapableAbi::LegacyAudit);
    }

    #[test]
    fn unexpected_last_param_is_an_error() {
        let btf = Btf::from_bytes(&cap_capable_btf("flags", true)).unwrap();
        let err = btf.cap_capable_abi().unwrap_err();
        assert!(matches!(err, BtfError::UnexpectedSignature { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("const struct cred *cred, struct user_namespace *targ_ns, int cap, unsigned int flags"),
            "{err}"
        );
    }

    #[test]
    fn missing_function() {
        let mut b = Builder::new();
        b.every_kind();
        let int = b.int("int", 4);
        let proto = b.proto(int, &[("cap", int)]);
        b.func("ns_capable", proto);
        let btf = Btf::from_bytes(&b.build()).unwrap();
        assert!(btf.has_func("ns_capable"));
        assert!(!btf.has_func("cap_capable"));
        // A prefix of an existing name must not match.
        assert!(!btf.has_func("ns_cap"));
        assert_eq!(btf.func_params("cap_capable").unwrap(), None);
        assert!(matches!(
            btf.cap_capable_abi(),
            Err(BtfError::FuncNotFound { .. })
        ));
        assert!(!btf.has_tracepoint("cap_capable"));
    }

    #[test]
    fn renders_assorted_types() {
        let mut b = Builder::new();
        let chr = b.int("char", 1);
        let chr_ptr = b.ptr(chr);
        let chr_ptr_ptr = b.ptr(chr_ptr);
        let const_ptr = b.constant(chr_ptr);
        let arr = b.raw("", KIND_ARRAY, 0, 0, &[chr, chr, 16]);
        let fwd = b.raw("bio", KIND_FWD, 0, 0, &[]);
        let anon = b.raw("", KIND_UNION, 0, 0, &[]);
        let cb_proto = b.proto(0, &[("", chr_ptr), ("", 0)]);
        let cb = b.ptr(cb_proto);
        let user = b.raw("user", KIND_TYPE_TAG, 0, chr, &[]);
        let user_ptr = b.ptr(user);
        let void_ptr = b.ptr(0);
        let proto = b.proto(
            0,
            &[
                ("a", chr_ptr_ptr),
                ("b", const_ptr),
                ("c", arr),
                ("d", fwd),
                ("e", anon),
                ("f", cb),
                ("g", user_ptr),
                ("h", void_ptr),
                ("", 0),
            ],
        );
        b.func("f", proto);
        let btf = Btf::from_bytes(&b.build()).unwrap();
        let rendered: Vec<(String, String)> = btf
            .func_params("f")
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|p| (p.name, p.type_name))
            .collect();
        let expected = [
            ("a", "char **"),
            ("b", "char *const"),
            ("c", "char[16]"),
            ("d", "struct bio"),
            ("e", "union {...}"),
            ("f", "void (*)(char *, ...)"),
            ("g", "char *"),
            ("h", "void *"),
            ("", "..."),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|&(n, t)| (n.to_owned(), t.to_owned()))
            .collect();
        assert_eq!(rendered, expected);
    }

    #[test]
    fn struct_member_offsets() {
        let mut b = Builder::new();
        b.every_kind();
        let int = b.int("int", 4);
        // An empty struct of the same name must be skipped for the real definition.
        b.strukt("user_namespace");
        let (x, y) = (b.str("x"), b.str("y"));
        let inner = b.raw("", KIND_STRUCT, 1, 4, &[y, int, 0]);
        let inner_const = b.constant(inner);
        let union = b.raw("", KIND_UNION, 2, 4, &[x, int, 0, 0, inner_const, 0]);
        let (map, anon_level, level, parent) = (b.str("map"), 0, b.str("level"), b.str("parent"));
        b.raw(
            "user_namespace",
            KIND_STRUCT,
            4,
            240,
            &[
                map,
                int,
                0,
                anon_level,
                union,
                64,
                parent,
                int,
                192,
                level,
                int,
                224 * 8,
            ],
        );
        // kind_flag set: offset carries a bitfield size in the top byte.
        let (flag, whole) = (b.str("flag"), b.str("whole"));
        let kind_flag = 1 << 31;
        b.raw_info(
            "bits",
            kind_flag | (u32::from(KIND_STRUCT) << 24) | 2,
            8,
            &[flag, int, (1 << 24) | 3, whole, int, 32],
        );
        let btf = Btf::from_bytes(&b.build()).unwrap();

        let offset = |s, m| btf.struct_member_offset(s, m);
        assert_eq!(offset("user_namespace", "level").unwrap(), 224);
        assert_eq!(offset("user_namespace", "map").unwrap(), 0);
        assert_eq!(offset("user_namespace", "x").unwrap(), 8);
        assert_eq!(offset("user_namespace", "y").unwrap(), 8);
        assert_eq!(offset("bits", "whole").unwrap(), 4);
        assert!(matches!(
            offset("bits", "flag"),
            Err(BtfError::BitfieldMember { .. })
        ));
        assert!(matches!(
            offset("user_namespace", "lvl"),
            Err(BtfError::MemberNotFound { .. })
        ));
        assert!(matches!(
            offset("cred", "uid"),
            Err(BtfError::StructNotFound { .. })
        ));
    }

    #[test]
    fn cyclic_types_are_an_error() {
        let mut b = Builder::new();
        // Type 1 is a const of itself.
        b.raw("", KIND_CONST, 0, 1, &[]);
        let proto = b.proto(0, &[("x", 1)]);
        b.func("loop", proto);
        let btf = Btf::from_bytes(&b.build()).unwrap();
        assert!(matches!(
            btf.func_params("loop"),
            Err(BtfError::TypeTooDeep { .. })
        ));
    }

    #[test]
    fn func_without_proto_is_an_error() {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        b.func("f", int);
        b.func("g", 99);
        let btf = Btf::from_bytes(&b.build()).unwrap();
        assert!(matches!(
            btf.func_params("f"),
            Err(BtfError::NotAFuncProto { .. })
        ));
        assert!(matches!(
            btf.func_params("g"),
            Err(BtfError::BadTypeId { id: 99 })
        ));
    }

    #[test]
    fn bad_header() {
        let good = cap_capable_btf("opts", true);
        let with = |i: usize, byte: u8| {
            let mut blob = good.clone();
            blob[i] = byte;
            Btf::from_bytes(&blob)
        };
        assert!(matches!(
            with(0, 0x7f),
            Err(BtfError::BadMagic { found: 0xeb7f })
        ));
        let mut swapped = good.clone();
        swapped.swap(0, 1);
        assert!(matches!(
            Btf::from_bytes(&swapped),
            Err(BtfError::BigEndian)
        ));
        assert!(matches!(with(2, 2), Err(BtfError::UnsupportedVersion(2))));
        assert!(matches!(with(4, 8), Err(BtfError::BadHeader(_))));
        assert!(matches!(
            Btf::from_bytes(b"hello, world, this is not BTF at all"),
            Err(BtfError::BadMagic { .. })
        ));
        assert!(matches!(
            Btf::from_bytes(&[]),
            Err(BtfError::Truncated { .. })
        ));
    }

    #[test]
    fn unknown_kind_is_an_error() {
        let mut b = Builder::new();
        b.int("int", 4);
        b.raw("x", 31, 0, 0, &[]);
        assert!(matches!(
            Btf::from_bytes(&b.build()),
            Err(BtfError::UnknownKind { id: 2, kind: 31 })
        ));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let good = cap_capable_btf("opts", true);
        for len in 0..good.len() {
            assert!(Btf::from_bytes(&good[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn type_section_cut_mid_type_is_an_error() {
        let mut b = Builder::new();
        b.int("int", 4);
        let mut blob = b.build();
        // Shrink type_len by one word so the INT's trailing data is cut off.
        blob[12] -= 4;
        assert!(matches!(
            Btf::from_bytes(&blob),
            Err(BtfError::Truncated { .. })
        ));
    }

    /// Corrupt every byte of a valid blob in turn: parsing and queries may fail but must not panic.
    #[test]
    fn corrupted_input_does_not_panic() {
        let good = cap_capable_btf("opts", true);
        for i in 0..good.len() {
            for byte in [0x00, 0x01, 0x13, 0x7f, 0x80, 0xff] {
                let mut blob = good.clone();
                blob[i] = byte;
                if let Ok(btf) = Btf::from_bytes(&blob) {
                    let _ = btf.struct_member_offset("s", "member");
                    let _ = btf.func_params("cap_capable");
                    let _ = btf.cap_capable_abi();
                    let _ = btf.has_tracepoint("cap_capable");
                }
            }
        }
        // Pseudo-random garbage after a valid header.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let mut blob = good.clone();
            for byte in &mut blob[HEADER_LEN..] {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state.to_le_bytes()[0];
            }
            if let Ok(btf) = Btf::from_bytes(&blob) {
                let _ = btf.cap_capable_abi();
            }
        }
    }

    #[test]
    fn missing_file_is_not_available() {
        let err = Btf::from_path(Path::new("/nonexistent/capspy/vmlinux")).unwrap_err();
        assert!(matches!(err, BtfError::NotAvailable { .. }), "{err}");
        assert!(err.to_string().contains("no BTF"), "{err}");
    }

    #[test]
    fn aya_parse_of_the_mapped_file_is_the_parse_of_a_read_copy() {
        if !Path::new(VMLINUX_BTF_PATH).exists() {
            eprintln!("skipping: {VMLINUX_BTF_PATH} is absent");
            return;
        }
        // Linux < 6.16 cannot map it; aya_vmlinux then reads a copy.
        match Mapping::read_only(Path::new(VMLINUX_BTF_PATH)) {
            Ok(map) => assert_eq!(map.bytes(), fs::read(VMLINUX_BTF_PATH).unwrap()),
            Err(e) => eprintln!("{VMLINUX_BTF_PATH} cannot be mapped here: {e}"),
        }
        let (mapped, read) = (aya_vmlinux().unwrap(), aya::Btf::from_sys_fs().unwrap());
        let id = |btf: &aya::Btf| {
            btf.id_by_type_name_kind("cap_capable", aya_obj::btf::BtfKind::Func)
                .unwrap()
        };
        assert_eq!(id(&mapped), id(&read));
        assert_eq!(mapped.to_bytes(), read.to_bytes());
    }

    #[test]
    fn running_kernel() {
        let btf = match Btf::from_sys_fs() {
            Ok(btf) => btf,
            Err(BtfError::NotAvailable { .. }) => {
                eprintln!("skipping: {VMLINUX_BTF_PATH} is absent");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let params = btf.func_params("cap_capable").unwrap().unwrap();
        eprintln!("cap_capable({})", render_params(&params));
        assert_eq!(params.len(), 4);
        let abi = btf.cap_capable_abi().unwrap();
        eprintln!("cap_capable ABI: {abi:?}; {btf:?}");
        assert!(btf.has_func("cap_capable"));
        assert!(btf.has_tracepoint("sys_enter"));
        let level = btf.struct_member_offset("user_namespace", "level").unwrap();
        eprintln!("user_namespace.level at byte {level}");
        assert!(level > 0);
    }
}
