//! Lays out reef-monitor's text when asked (scripts/layout/README.md).

include!("../scripts/layout/link_hot.rs");

fn main() {
    link_hot("reef-monitor");
}
