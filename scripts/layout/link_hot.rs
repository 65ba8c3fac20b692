// Included by the build scripts of the crates whose binaries are laid out (runtime/build.rs: reef-monitor,
// node-agent/build.rs: reefd); see scripts/layout/README.md.
//
// With REEF_LAYOUT naming a directory that holds `<bin>.txt` (function symbols, one per line), links `bin` with
// those functions placed together ahead of the rest of its text. Unset (the tests' builds), nothing changes.

fn link_hot(bin: &str) {
    use std::fmt::Write;
    println!("cargo:rerun-if-env-changed=REEF_LAYOUT");
    let Ok(dir) = std::env::var("REEF_LAYOUT") else { return };
    let list = std::path::Path::new(&dir).join(format!("{bin}.txt"));
    println!("cargo:rerun-if-changed={}", list.display());
    let names = std::fs::read_to_string(&list).unwrap_or_else(|e| panic!("REEF_LAYOUT: {}: {e}", list.display()));
    let mut script = String::from("SECTIONS\n{\n  .text.reef_hot : {\n");
    let mut seen = std::collections::BTreeSet::new();
    for name in names.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        // LLVM numbers the local copies of an inlined function (`kind.488`) across the whole LTO unit, so the
        // numbers move with any change to the binary: a copy is listed by its name without the number, and every
        // copy goes with it (they are few and small).
        let base = local_base(name);
        if !seen.insert(base) {
            continue;
        }
        // Each function is in a section of its own (rustc's and musl's -ffunction-sections).
        let _ = writeln!(script, "    *(.text.{base})\n    *(.text.{base}.*)");
        // musl's assembly functions (memcpy, memset...) have a plain .text in a member of their own name.
        if !base.starts_with("_R") && !base.starts_with("_ZN") {
            let _ = writeln!(script, "    *libc.a:{base}.lo(.text)");
        }
    }
    script.push_str("  }\n}\nINSERT BEFORE .text;\n");
    let out = std::path::Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join(format!("{bin}.ld"));
    std::fs::write(&out, script).unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
    println!("cargo:rustc-link-arg-bin={bin}=-Wl,-T,{}", out.display());
}

/// `name` without LLVM's number for a local copy (`.488`, `.llvm.1234`).
fn local_base(name: &str) -> &str {
    let name = match name.rsplit_once('.') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    };
    name.strip_suffix(".llvm").unwrap_or(name)
}
