//! Lays out reefd's text when asked (scripts/layout/README.md), and packs its relative relocations.

include!("../scripts/layout/link_hot.rs");

fn main() {
    link_hot("reefd");
    // RELR (glibc 2.36+, Debian 12): reefd's half a MiB of RELA entries, which ld.so reads once at start and which
    // then stay mapped, become a few KiB of bitmaps.
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu") {
        println!("cargo:rustc-link-arg-bin=reefd=-Wl,-z,pack-relative-relocs");
    }
}
