//! Parser for `/proc/kallsyms`: kernel symbol addresses, for resolving
//! functions by name and stack addresses back to functions.

use std::{
    fs,
    io::{self, BufRead as _},
    ops::Range,
    path::{Path, PathBuf},
};

/// Where the kernel lists its symbols.
pub const PROC_KALLSYMS_PATH: &str = "/proc/kallsyms";

/// Errors from loading `/proc/kallsyms`.
#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("failed to read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "all kallsyms addresses are zero: the kernel hides them from readers without \
         CAP_SYSLOG (and from everyone when kernel.kptr_restrict=2); run as root"
    )]
    AddressesHidden,
    #[error("kallsyms line {line}: {reason}")]
    Malformed { line: usize, reason: &'static str },
    #[error("kallsyms lists no symbols")]
    Empty,
    #[error("kallsyms is too large to index")]
    TooLarge,
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    addr: u64,
    /// Byte range of the name in `Kallsyms::names`.
    name_start: u32,
    name_len: u32,
    /// The `nm`-style type letter, e.g. `T` or `t`.
    kind: u8,
}

impl Symbol {
    fn is_text(self) -> bool {
        matches!(self.kind, b'T' | b't' | b'W' | b'w')
    }

    /// Absolute symbols (e.g. per-CPU offsets on some kernels) aren't real
    /// addresses and would shadow everything else in the address index.
    fn is_absolute(self) -> bool {
        matches!(self.kind, b'A' | b'a')
    }
}

/// Kernel symbol table.
pub struct Kallsyms {
    /// All names back to back, so parsing allocates once rather than per line.
    names: String,
    /// In file order, so name lookups return the first listed match.
    symbols: Vec<Symbol>,
    /// Indices into `symbols`, sorted by address (ties in file order).
    by_addr: Vec<u32>,
}

/// A [`Kallsyms`] being parsed, one line at a time.
struct Builder {
    names: String,
    symbols: Vec<Symbol>,
}

impl Builder {
    /// `text_len`: the size of the whole text, when known, to allocate once.
    fn with_capacity(text_len: usize) -> Self {
        // Names make up roughly half of each line.
        Self {
            names: String::with_capacity(text_len / 2),
            symbols: Vec::with_capacity(text_len / 40),
        }
    }

    /// Adds line `i` (0-based), without its newline.
    fn line(&mut self, i: usize, line: &str) -> Result<(), KallsymsError> {
        if line.is_empty() {
            return Ok(());
        }
        let malformed = |reason| KallsymsError::Malformed {
            line: i + 1,
            reason,
        };
        let (addr, rest) = line
            .split_once(' ')
            .ok_or_else(|| malformed("expected `<address> <type> <name>`"))?;
        let addr =
            u64::from_str_radix(addr, 16).map_err(|_| malformed("address is not hexadecimal"))?;
        let (kind, rest) = rest
            .split_once(' ')
            .ok_or_else(|| malformed("expected `<address> <type> <name>`"))?;
        let &[kind] = kind.as_bytes() else {
            return Err(malformed("symbol type is not a single character"));
        };
        // Module symbols carry a `\t[module]` suffix.
        let name = rest.split_once('\t').map_or(rest, |(name, _)| name);
        if name.is_empty() {
            return Err(malformed("empty symbol name"));
        }
        let name_start = u32::try_from(self.names.len()).map_err(|_| KallsymsError::TooLarge)?;
        let name_len = u32::try_from(name.len()).map_err(|_| KallsymsError::TooLarge)?;
        self.names.push_str(name);
        self.symbols.push(Symbol {
            addr,
            name_start,
            name_len,
            kind,
        });
        Ok(())
    }

    fn finish(mut self) -> Result<Kallsyms, KallsymsError> {
        let symbols = &self.symbols;
        if symbols.is_empty() {
            return Err(KallsymsError::Empty);
        }
        if symbols.iter().all(|s| s.addr == 0) {
            return Err(KallsymsError::AddressesHidden);
        }
        u32::try_from(symbols.len()).map_err(|_| KallsymsError::TooLarge)?;
        let mut by_addr: Vec<u32> = (0..symbols.len())
            .filter(|&i| !symbols[i].is_absolute())
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        // Stable and nearly sorted input already (vmlinux is listed in address order).
        by_addr.sort_by_key(|&i| symbols[i as usize].addr);
        self.names.shrink_to_fit();
        self.symbols.shrink_to_fit();
        Ok(Kallsyms {
            names: self.names,
            symbols: self.symbols,
            by_addr,
        })
    }
}

impl std::fmt::Debug for Kallsyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kallsyms")
            .field("symbols", &self.symbols.len())
            .finish_non_exhaustive()
    }
}

impl Kallsyms {
    /// Reads and parses `/proc/kallsyms`.
    ///
    /// # Errors
    /// If the file can't be read, is malformed, or addresses are hidden
    /// ([`KallsymsError::AddressesHidden`]).
    pub fn from_proc() -> Result<Self, KallsymsError> {
        Self::from_path(Path::new(PROC_KALLSYMS_PATH))
    }

    /// Reads and parses a file in `/proc/kallsyms` format.
    ///
    /// # Errors
    /// As [`Kallsyms::from_proc`].
    pub fn from_path(path: &Path) -> Result<Self, KallsymsError> {
        let io_error = |source| KallsymsError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Line by line: the whole text (about 5 MB) would double the memory the table needs.
        let mut reader = io::BufReader::new(fs::File::open(path).map_err(io_error)?);
        let mut table = Builder::with_capacity(0);
        let mut line = String::new();
        for i in 0.. {
            line.clear();
            if reader.read_line(&mut line).map_err(io_error)? == 0 {
                break;
            }
            table.line(i, line.trim_end_matches('\n'))?;
        }
        table.finish()
    }

    /// Parses text in `/proc/kallsyms` format: `<hex addr> <type> <name>[\t[module]]`.
    ///
    /// # Errors
    /// [`KallsymsError::Malformed`] for a bad line, [`KallsymsError::Empty`] for no
    /// symbols, [`KallsymsError::AddressesHidden`] if every address is zero.
    pub fn parse(text: &str) -> Result<Self, KallsymsError> {
        let mut table = Builder::with_capacity(text.len());
        for (i, line) in text.lines().enumerate() {
            table.line(i, line)?;
        }
        table.finish()
    }

    /// Number of symbols.
    #[must_use]
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// Whether there are no symbols (never true for a successfully parsed table).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// Address of the first symbol (text or data) called `name`.
    #[must_use]
    pub fn address(&self, name: &str) -> Option<u64> {
        self.find(name, |_| true).map(|s| s.addr)
    }

    /// Address range of function `name`: from its start to the next higher symbol
    /// address, so a return address on a stack can be attributed to it.
    ///
    /// `None` if there is no such text symbol or nothing follows it.
    #[must_use]
    pub fn function_range(&self, name: &str) -> Option<Range<u64>> {
        let start = self.find(name, Symbol::is_text)?.addr;
        let next = self.by_addr.partition_point(|&i| self.addr_of(i) <= start);
        let end = self.by_addr.get(next).map(|&i| self.addr_of(i))?;
        Some(start..end)
    }

    /// Name of the symbol containing `addr` and the offset of `addr` within it.
    ///
    /// Symbol sizes are unknown, so this is the nearest symbol at or below `addr`;
    /// `None` only below the lowest symbol. When several symbols share an address,
    /// the first listed wins.
    #[must_use]
    pub fn symbolize(&self, addr: u64) -> Option<(&str, u64)> {
        let after = self.by_addr.partition_point(|&i| self.addr_of(i) <= addr);
        let found = self.addr_of(*self.by_addr.get(after.checked_sub(1)?)?);
        let first = self.by_addr.partition_point(|&i| self.addr_of(i) < found);
        let symbol = self.symbols.get(*self.by_addr.get(first)? as usize)?;
        Some((self.name(symbol), addr - symbol.addr))
    }

    /// Linear scan: lookups by name are rare, and a name index would cost more
    /// to build than the few scans capspy does.
    fn find(&self, name: &str, filter: impl Fn(Symbol) -> bool) -> Option<Symbol> {
        self.symbols
            .iter()
            .copied()
            .find(|&s| filter(s) && self.name(&s) == name)
    }

    fn addr_of(&self, index: u32) -> u64 {
        self.symbols
            .get(index as usize)
            .map_or(u64::MAX, |s| s.addr)
    }

    fn name(&self, symbol: &Symbol) -> &str {
        let start = symbol.name_start as usize;
        self.names
            .get(start..start + symbol.name_len as usize)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81000000 T srso_alias_untrain_ret
ffffffff81000000 T _stext
ffffffff81a82a70 T __pfx_cap_capable
ffffffff81a82a80 T cap_capable
ffffffff81a82b10 t cap_mmap_addr
ffffffff81a82b10 t cap_mmap_addr_alias
0000000000000000 A fixed_percpu_data
ffffffff82a00000 D init_cred
ffffffff82a00100 d cap_capable
ffffffffc0201000 t ftrace_trampoline\t[__builtin__ftrace]
ffffffffc0300000 T nf_tables_init\t[nf_tables]
";

    #[test]
    fn a_file_reads_like_its_text() {
        let path = std::env::temp_dir().join(format!("capspy-kallsyms-{}", std::process::id()));
        // Without the final newline too: the last line still counts.
        fs::write(&path, SAMPLE.trim_end()).unwrap();
        let from_file = Kallsyms::from_path(&path).unwrap();
        fs::remove_file(&path).unwrap();
        let from_text = Kallsyms::parse(SAMPLE).unwrap();
        assert_eq!(from_file.len(), from_text.len());
        for name in [
            "cap_capable",
            "init_cred",
            "nf_tables_init",
            "cap_mmap_addr_alias",
        ] {
            assert_eq!(from_file.address(name), from_text.address(name), "{name}");
        }
        assert_eq!(
            from_file.symbolize(0xffff_ffff_81a8_2a90),
            Some(("cap_capable", 0x10))
        );
        // A bad line is reported with its number, as from text.
        fs::write(&path, "ffffffff81000000 T a\nnot-hex T b\n").unwrap();
        let err = Kallsyms::from_path(&path).unwrap_err();
        fs::remove_file(&path).unwrap();
        assert!(
            matches!(err, KallsymsError::Malformed { line: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn address_lookup() {
        let k = Kallsyms::parse(SAMPLE).unwrap();
        assert_eq!(k.len(), 11);
        assert_eq!(k.address("cap_capable"), Some(0xffff_ffff_81a8_2a80));
        assert_eq!(k.address("init_cred"), Some(0xffff_ffff_82a0_0000));
        assert_eq!(k.address("nf_tables_init"), Some(0xffff_ffff_c030_0000));
        assert_eq!(k.address("fixed_percpu_data"), Some(0));
        assert_eq!(k.address("cap_capabl"), None);
        assert_eq!(k.address("nf_tables"), None);
    }

    #[test]
    fn function_range() {
        let k = Kallsyms::parse(SAMPLE).unwrap();
        assert_eq!(
            k.function_range("cap_capable"),
            Some(0xffff_ffff_81a8_2a80..0xffff_ffff_81a8_2b10)
        );
        // Skips the symbol at the same address.
        assert_eq!(
            k.function_range("srso_alias_untrain_ret"),
            Some(0xffff_ffff_8100_0000..0xffff_ffff_81a8_2a70)
        );
        // Data symbols aren't functions; the last symbol has no known end.
        assert_eq!(k.function_range("init_cred"), None);
        assert_eq!(k.function_range("nf_tables_init"), None);
        assert_eq!(k.function_range("missing"), None);
    }

    #[test]
    fn symbolize() {
        let k = Kallsyms::parse(SAMPLE).unwrap();
        assert_eq!(k.symbolize(0xffff_ffff_81a8_2a85), Some(("cap_capable", 5)));
        assert_eq!(k.symbolize(0xffff_ffff_81a8_2a80), Some(("cap_capable", 0)));
        assert_eq!(
            k.symbolize(0xffff_ffff_81a8_2a7f),
            Some(("__pfx_cap_capable", 15))
        );
        // Ties go to the first listed symbol.
        assert_eq!(
            k.symbolize(0xffff_ffff_8100_0010),
            Some(("srso_alias_untrain_ret", 0x10))
        );
        assert_eq!(
            k.symbolize(0xffff_ffff_81a8_2b11),
            Some(("cap_mmap_addr", 1))
        );
        assert_eq!(
            k.symbolize(0xffff_ffff_c020_1003),
            Some(("ftrace_trampoline", 3))
        );
        // The absolute symbol at 0 must not claim low addresses.
        assert_eq!(k.symbolize(0x1000), None);
        assert_eq!(k.symbolize(0xffff_ffff_80ff_ffff), None);
    }

    #[test]
    fn unsorted_input() {
        let k =
            Kallsyms::parse("ffffffff00000300 t c\nffffffff00000100 t a\nffffffff00000200 t b\n")
                .unwrap();
        assert_eq!(k.symbolize(0xffff_ffff_0000_0250), Some(("b", 0x50)));
        assert_eq!(
            k.function_range("a"),
            Some(0xffff_ffff_0000_0100..0xffff_ffff_0000_0200)
        );
    }

    #[test]
    fn hidden_addresses() {
        let hidden = "0000000000000000 T _stext\n0000000000000000 T cap_capable\n\
                      0000000000000000 t foo\t[mod]\n";
        let err = Kallsyms::parse(hidden).unwrap_err();
        assert!(matches!(err, KallsymsError::AddressesHidden));
        assert!(err.to_string().contains("CAP_SYSLOG"), "{err}");
    }

    #[test]
    fn bad_input() {
        assert!(matches!(Kallsyms::parse(""), Err(KallsymsError::Empty)));
        assert!(matches!(Kallsyms::parse("\n\n"), Err(KallsymsError::Empty)));
        for (text, line) in [
            ("ffffffff81000000 T _stext\nnot a symbol line\n", 2),
            ("xyz T foo\n", 1),
            ("ffffffff81000000 T\n", 1),
            ("ffffffff81000000 TT foo\n", 1),
            ("ffffffff81000000 T \n", 1),
            ("ffffffff81000000\n", 1),
            ("1ffffffff81000000 T foo\n", 1),
        ] {
            match Kallsyms::parse(text) {
                Err(KallsymsError::Malformed { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn running_kernel() {
        let k = match Kallsyms::from_proc() {
            Ok(k) => k,
            Err(e @ (KallsymsError::Io { .. } | KallsymsError::AddressesHidden)) => {
                eprintln!("skipping: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let addr = k.address("cap_capable").unwrap();
        assert_eq!(k.symbolize(addr + 5), Some(("cap_capable", 5)));
        let range = k.function_range("cap_capable").unwrap();
        assert_eq!(range.start, addr);
        assert!(range.contains(&(addr + 5)), "{range:x?}");
        eprintln!("{k:?}; cap_capable at {range:#x?}");
    }
}
