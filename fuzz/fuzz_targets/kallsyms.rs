//! `/proc/kallsyms` text: `Kallsyms::parse`, then symbol lookups around every address and name
//! the input mentions.
#![no_main]

use capspy::kernel::kallsyms::Kallsyms;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(syms) = Kallsyms::parse(text) else {
        return;
    };
    assert!(!syms.is_empty());
    let _ = format!("{syms:?}");
    let check = |addr: u64| {
        if let Some((name, offset)) = syms.symbolize(addr) {
            assert!(offset <= addr, "{addr:#x} -> {name}+{offset:#x}");
            assert!(!name.is_empty());
        }
    };
    for a in [0, 1, u64::MAX, u64::MAX - 1, 1 << 63] {
        check(a);
    }
    for line in text.lines().take(64) {
        let mut fields = line.split(' ');
        if let Some(addr) = fields.next().and_then(|a| u64::from_str_radix(a, 16).ok()) {
            check(addr);
            check(addr.wrapping_sub(1));
            check(addr.wrapping_add(1));
        }
        if let Some(name) = fields.nth(1) {
            let name = name.split_once('\t').map_or(name, |(n, _)| n);
            let _ = syms.address(name);
            if let Some(range) = syms.function_range(name) {
                assert!(range.start < range.end, "{name}: {range:?}");
                check(range.start);
                check(range.end - 1);
            }
        }
    }
});
