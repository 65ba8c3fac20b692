//! Output helpers: tables shaped like docker's, human sizes, JSON and YAML.

use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;

use crate::cli::Format;

/// A borderless table with left-aligned columns, like `docker images`.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled).set_header(header.to_vec());
    t
}

pub fn print_table(t: &Table) {
    // comfy-table pads every cell with a space on each side; trim the leading one of each line.
    for line in t.to_string().lines() {
        println!("{}", line.strip_prefix(' ').unwrap_or(line).trim_end());
    }
}

pub fn print_structured<T: Serialize>(value: &T, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Yaml => print!("{}", serde_yaml::to_string(value)?),
        _ => println!("{}", serde_json::to_string_pretty(value)?),
    }
    Ok(())
}

/// Sizes as docker prints them: decimal units, three significant digits.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    let digits = if size >= 100.0 || unit == 0 {
        0
    } else if size >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{size:.digits$}");
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text };
    format!("{text}{}", UNITS[unit])
}

/// The 12 hex digits docker shows for an id.
pub fn short_id(id: &str) -> String {
    id.strip_prefix("sha256:").unwrap_or(id).chars().take(12).collect()
}

/// `registry/repo:tag` → (`registry/repo`, `tag`), minding registry ports; `repo@digest` → (`repo`, `digest`).
pub fn split_repo_tag(name: &str) -> (&str, &str) {
    if let Some((repo, digest)) = name.split_once('@') {
        return (repo, digest);
    }
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_look_like_dockers() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_300_000), "4.3MB");
        assert_eq!(human_size(1_982_286), "1.98MB");
        assert_eq!(human_size(56_700_000), "56.7MB");
        assert_eq!(human_size(537_000_000), "537MB");
        assert_eq!(human_size(1_000_000_000), "1GB");
    }

    #[test]
    fn repo_and_tag_split_minds_ports() {
        assert_eq!(split_repo_tag("127.0.0.1:5000/busybox:1.0"), ("127.0.0.1:5000/busybox", "1.0"));
        assert_eq!(split_repo_tag("127.0.0.1:5000/busybox"), ("127.0.0.1:5000/busybox", ""));
        assert_eq!(split_repo_tag("docker.io/library/busybox:latest"), ("docker.io/library/busybox", "latest"));
        assert_eq!(split_repo_tag("r.io/x@sha256:abc"), ("r.io/x", "sha256:abc"));
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
    }
}
