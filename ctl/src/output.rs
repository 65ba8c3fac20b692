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

/// Sizes as docker stats prints them: binary units, four significant digits ("1.953MiB", "64MiB").
pub fn human_binary(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    let int_digits = if size >= 1000.0 {
        4
    } else if size >= 100.0 {
        3
    } else if size >= 10.0 {
        2
    } else {
        1
    };
    let text = format!("{size:.prec$}", prec = 4usize.saturating_sub(int_digits));
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text };
    format!("{text}{}", UNITS[unit])
}

/// Unix nanoseconds as RFC 3339 in UTC with nanoseconds, as docker events prints time.
pub fn rfc3339_nano(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:09}Z", rem / 3600, rem % 3600 / 60, rem % 60)
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
    fn binary_sizes_and_times_look_like_docker_s() {
        assert_eq!(human_binary(64 << 20), "64MiB");
        assert_eq!(human_binary(2_048_000), "1.953MiB");
        assert_eq!(human_binary(512), "512B");
        assert_eq!(human_binary(8_200_000_000), "7.637GiB");
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339_nano(951_782_400_000_000_001), "2000-02-29T00:00:00.000000001Z");
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
