//! Value parsers for docker-style flags: each turns one argument into what the CRI wants, or says precisely why
//! it cannot, while clap parses (before anything connects to reefd).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub host: String,
    pub container: String,
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum User {
    Id { uid: i64, gid: Option<i64> },
    Name(String),
}

/// `KEY=VALUE`, or `KEY` alone for rctl's own value of it (docker's `-e KEY`).
pub fn env_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some(("", _)) => Err("an environment variable needs a name".into()),
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None if s.is_empty() => Err("an environment variable needs a name".into()),
        None => Ok((s.to_string(), std::env::var(s).unwrap_or_default())),
    }
}

/// `/host:/container[:ro|:rw]`. Both paths absolute: named volumes are docker's, not the CRI's.
pub fn volume(s: &str) -> Result<Volume, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (host, container, mode) = match parts.as_slice() {
        [h, c] => (*h, *c, None),
        [h, c, m] => (*h, *c, Some(*m)),
        _ => return Err(format!("{s:?}: expected HOST:CONTAINER[:ro]")),
    };
    if !host.starts_with('/') {
        return Err(format!("{s:?}: the host path must be absolute (named volumes are not supported)"));
    }
    if !container.starts_with('/') {
        return Err(format!("{s:?}: the container path must be absolute"));
    }
    let readonly = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(m) => return Err(format!("{s:?}: unknown mode {m:?} (ro or rw)")),
    };
    Ok(Volume { host: host.to_string(), container: container.to_string(), readonly })
}

/// `--pid`, `--net`, `--uts`: only the node's namespace can be asked for; private is the default.
pub fn host_only(s: &str) -> Result<String, String> {
    if s == "host" { Ok(s.to_string()) } else { Err(format!("{s:?}: only \"host\" is supported")) }
}

/// `uid[:gid]` (numbers) or a user name the image knows.
pub fn user(s: &str) -> Result<User, String> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    match (u.parse::<i64>(), g) {
        (Ok(uid), None) if uid >= 0 => Ok(User::Id { uid, gid: None }),
        (Ok(uid), Some(g)) if uid >= 0 => match g.parse::<i64>() {
            Ok(gid) if gid >= 0 => Ok(User::Id { uid, gid: Some(gid) }),
            _ => Err(format!("{s:?}: the group must be a number")),
        },
        (Err(_), None) if !u.is_empty() && !u.contains(char::is_whitespace) => Ok(User::Name(u.to_string())),
        _ => Err(format!("{s:?}: expected uid[:gid] or a user name")),
    }
}

/// Docker's memory sizes: a number with an optional unit b, k, m, g (powers of 1024); at least 4 MiB is what
/// a container needs to start at all, so less is refused rather than failing later.
pub fn memory(s: &str) -> Result<i64, String> {
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').filter(|l| l.ends_with(['k', 'm', 'g'])).unwrap_or(&lower);
    let (digits, unit) = match lower.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&lower[..i], c),
        _ => (lower, 'b'),
    };
    let shift = match unit {
        'b' => 0,
        'k' => 10,
        'm' => 20,
        'g' => 30,
        _ => return Err(format!("{s:?}: unknown unit (b, k, m or g)")),
    };
    let value: f64 = digits.parse().map_err(|_| format!("{s:?}: not a size (e.g. 64m)"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < (4 << 20) as f64 || bytes > i64::MAX as f64 {
        return Err(format!("{s:?}: the memory limit must be at least 4m"));
    }
    Ok(bytes as i64)
}

/// A CPU limit in cores (`0.5`): becomes a CFS quota over a 100 ms period.
pub fn cpus(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(c) if (0.01..=4096.0).contains(&c) => Ok(c),
        _ => Err(format!("{s:?}: the CPU limit must be a number of cores from 0.01 (e.g. 0.5)")),
    }
}

/// The CFS period rctl uses, as docker does.
pub const CPU_PERIOD: i64 = 100_000;

pub fn cpu_quota(cpus: f64) -> i64 {
    (cpus * CPU_PERIOD as f64).round() as i64
}

/// `key=value` (an empty value is fine, an empty key is not).
pub fn label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?}: expected key=value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_read_like_docker_s() {
        assert_eq!(memory("64m"), Ok(64 << 20));
        assert_eq!(memory("64MB"), Ok(64 << 20));
        assert_eq!(memory("1g"), Ok(1 << 30));
        assert_eq!(memory("1.5g"), Ok(3 << 29));
        assert_eq!(memory("8388608"), Ok(8 << 20));
        assert_eq!(memory("4096k"), Ok(4 << 20));
        assert!(memory("1m").is_err(), "too small to start a container");
        assert!(memory("64x").is_err());
        assert!(memory("m").is_err());
        assert!(memory("").is_err());
    }

    #[test]
    fn cpus_become_a_quota_over_100ms() {
        assert_eq!(cpus("0.5").map(cpu_quota), Ok(50_000));
        assert_eq!(cpus("2").map(cpu_quota), Ok(200_000));
        assert!(cpus("0").is_err() && cpus("-1").is_err() && cpus("NaN").is_err() && cpus("lots").is_err());
    }

    #[test]
    fn volumes_users_envs_and_labels() {
        assert_eq!(volume("/a:/b"), Ok(Volume { host: "/a".into(), container: "/b".into(), readonly: false }));
        assert!(volume("/a:/b:ro").unwrap().readonly);
        assert!(volume("name:/b").is_err());
        assert!(volume("/a:b").is_err());
        assert!(volume("/a").is_err());
        assert_eq!(user("1000"), Ok(User::Id { uid: 1000, gid: None }));
        assert_eq!(user("1000:50"), Ok(User::Id { uid: 1000, gid: Some(50) }));
        assert_eq!(user("nobody"), Ok(User::Name("nobody".into())));
        assert!(user("-1").is_err() && user("1:x").is_err() && user("").is_err());
        assert_eq!(env_var("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(env_var("=x").is_err());
        assert_eq!(label("k="), Ok(("k".into(), String::new())));
        assert!(label("=v").is_err());
        assert!(host_only("host").is_ok() && host_only("private").is_err());
    }
}
