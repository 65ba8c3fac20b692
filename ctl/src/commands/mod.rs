//! One module per subcommand.

pub mod create;
pub mod events;
pub mod exec;
pub mod imagefsinfo;
pub mod images;
pub mod info;
pub mod inspect;
pub mod inspecti;
pub mod interactive;
pub mod lifecycle;
pub mod logs;
pub mod pods;
pub mod port_forward;
pub mod ps;
pub mod pull;
pub mod rmi;
pub mod run;
pub mod runp;
pub mod start;
pub mod stats;
pub mod update;
pub mod version;

use k8s_cri::v1 as cri;

pub fn image_spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec { image: image.to_string(), ..Default::default() })
}

/// "3 minutes", "2 hours", as docker prints durations.
pub fn human_duration(nanos: i64) -> String {
    let secs = (nanos / 1_000_000_000).max(0);
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".into(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if s < 7200 => "About an hour".into(),
        s if s < 48 * 3600 => format!("{} hours", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

pub fn now_nanos() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or_default()
}

pub fn short(id: &str) -> String {
    id.chars().take(13).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_docker_s() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(45_000_000_000), "45 seconds");
        assert_eq!(human_duration(180_000_000_000), "3 minutes");
        assert_eq!(human_duration(3 * 3600 * 1_000_000_000), "3 hours");
    }
}
