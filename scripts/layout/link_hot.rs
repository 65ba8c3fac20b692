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
    for name in names.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        // Each function is in a section of its own (rustc's and musl's -ffunction-sections).
        let _ = writeln!(script, "    *(.text.{name})");
    }
    script.push_str("  }\n}\nINSERT BEFORE .text;\n");
    let out = std::path::Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join(format!("{bin}.ld"));
    std::fs::write(&out, script).unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
    println!("cargo:rustc-link-arg-bin={bin}=-Wl,-T,{}", out.display());
}
