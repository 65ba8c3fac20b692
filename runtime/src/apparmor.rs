//! AppArmor on the node: whether the kernel enforces it, which profiles are loaded, and Reef's own default profile
//! (`reef-default`, what RuntimeDefault means), loaded by reefd the first time a container asks for it.
//!
//! The launch applies a profile (`LaunchPlan::apparmor_profile`) by naming it for the next execve in
//! `/proc/thread-self/attr/apparmor/exec` (see `launch::init`), as runc does: the setup before the exec runs
//! unconfined, the container's command confined.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The profile RuntimeDefault means.
pub const DEFAULT_PROFILE: &str = "reef-default";

const ENABLED: &str = "/sys/module/apparmor/parameters/enabled";
const PROFILES: &str = "/sys/kernel/security/apparmor/profiles";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AppArmorError {
    #[error("AppArmor is not enabled on this node: the profile {profile:?} cannot be applied")]
    NotEnabled { profile: String },
    #[error("AppArmor profile {profile:?} is not loaded on this node (load it with apparmor_parser first)")]
    NotLoaded { profile: String },
    #[error("AppArmor profile name {0:?} is empty or has a NUL, newline or space")]
    BadName(String),
    #[error("cannot read the loaded AppArmor profiles ({PROFILES}): {0}")]
    ReadProfiles(String),
    #[error("cannot load Reef's default AppArmor profile {DEFAULT_PROFILE}: {0}")]
    LoadDefault(String),
}

/// Whether the kernel enforces AppArmor, read once: it cannot change without a reboot.
pub fn enabled() -> bool {
    static ENABLED_ONCE: OnceLock<bool> = OnceLock::new();
    *ENABLED_ONCE.get_or_init(|| std::fs::read_to_string(ENABLED).is_ok_and(|s| s.trim_start().starts_with('Y')))
}

/// A name the kernel takes as one profile in `exec <name>`.
pub fn check_name(name: &str) -> Result<(), AppArmorError> {
    if name.is_empty() || name.contains(['\0', '\n', ' ']) {
        return Err(AppArmorError::BadName(name.into()));
    }
    Ok(())
}

/// Whether `name` is among the profiles the kernel holds (lines of `name (mode)`, in any namespace of policy
/// this process sees).
pub fn is_loaded(name: &str) -> Result<bool, AppArmorError> {
    let list = std::fs::read_to_string(PROFILES).map_err(|e| AppArmorError::ReadProfiles(e.to_string()))?;
    Ok(listed(&list, name))
}

fn listed(list: &str, name: &str) -> bool {
    list.lines().any(|l| l.strip_suffix(')').and_then(|l| l.rsplit_once(" (")).is_some_and(|(n, _)| n == name))
}

/// A Localhost profile, checked before a container is made with it: a missing one would only fail at the exec,
/// with a bare ENOENT.
pub fn check_loaded(name: &str) -> Result<(), AppArmorError> {
    check_name(name)?;
    if !enabled() {
        return Err(AppArmorError::NotEnabled { profile: name.into() });
    }
    if !is_loaded(name)? {
        return Err(AppArmorError::NotLoaded { profile: name.into() });
    }
    Ok(())
}

/// Whether `reef-default` was found or loaded by this process; reset by `recheck_default_profile`.
static DEFAULT_READY: Mutex<bool> = Mutex::new(false);

/// The profile RuntimeDefault gets: `reef-default`, loaded now if the kernel does not hold it yet, or `None` where
/// AppArmor is not enabled (the container then runs unconfined, as under CRI-O). Looked up and loaded once per
/// process; later calls only take a lock. Blocking: it may run apparmor_parser.
pub fn default_profile() -> Result<Option<&'static str>, AppArmorError> {
    if !enabled() {
        return Ok(None);
    }
    // Held across the load, so concurrent creates wait for one parser run rather than each starting one.
    let mut ready = DEFAULT_READY.lock().unwrap_or_else(|p| p.into_inner());
    if !*ready {
        if !is_loaded(DEFAULT_PROFILE)? {
            load(&default_profile_text(DEFAULT_PROFILE))?;
            tracing::info!(profile = DEFAULT_PROFILE, "loaded Reef's default AppArmor profile");
        }
        *ready = true;
    }
    Ok(Some(DEFAULT_PROFILE))
}

/// Forgets that the default profile was there, so the next container asking for it looks again (and reloads it):
/// for when a launch found it gone (an operator's `aa-teardown`, say).
pub fn recheck_default_profile() {
    *DEFAULT_READY.lock().unwrap_or_else(|p| p.into_inner()) = false;
}

/// apparmor_parser from the usual places (reefd's PATH under systemd may lack /sbin on some distributions).
fn parser() -> &'static str {
    ["/usr/sbin/apparmor_parser", "/sbin/apparmor_parser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("apparmor_parser")
}

/// Loads (or replaces) a profile from its text on stdin: no file left behind, no cache written (`-K`).
fn load(text: &str) -> Result<(), AppArmorError> {
    let fail = |e: String| AppArmorError::LoadDefault(e);
    let mut child = Command::new(parser())
        .args(["-Kr"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {}: {e}", parser())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).map_err(|e| fail(format!("writing the profile to apparmor_parser: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!("apparmor_parser {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

/// Reef's default confinement for a container, named `name`. Self-contained (no includes), so it loads wherever
/// apparmor_parser runs, whatever /etc/apparmor.d holds. It grants what a container's own processes need
/// (files, network, capabilities its bounding set still allows) and takes away what only the host should touch:
/// writes to the kernel's knobs under /proc and /sys, reads of firmware, security and power-meter files, mounts,
/// and ptrace or signals across the profile's boundary.
pub fn default_profile_text(name: &str) -> String {
    format!(
        r#"# Reef's RuntimeDefault AppArmor profile, loaded by reefd when a container first asks for it.

profile {name} flags=(attach_disconnected,mediate_deleted) {{
  # What the container's own processes may use; capabilities stay bounded by the container's capability set.
  network,
  capability,
  file,
  umount,

  # No new mounts from inside: a mount could uncover what masked paths hide.
  deny mount,

  # The runtime (unconfined) signals the container to stop it; within the container, processes of this
  # profile may signal and trace each other, and nothing outside it.
  signal (receive) peer=unconfined,
  signal (send, receive) peer={name},
  ptrace (trace, read, tracedby, readby) peer={name},

  # /proc: the per-process directories stay writable (oom_score_adj, comm, the fds); the kernel-wide files
  # directly under /proc and every other directory but sys are not.
  deny /proc/* w,
  deny /proc/[^0-9s]*/** w,
  deny /proc/s[^y]*/** w,
  deny /proc/sy[^s]*/** w,
  deny /proc/sys?*/** w,
  deny /proc/{{kcore,kmsg,sysrq-trigger}} rwklx,

  # /proc/sys: only what the container's own namespaces scope may change: net (its network namespace) and the
  # System V IPC limits under kernel (its IPC namespace: shm*, msg*, sem).
  deny /proc/sys/[^kn]** w,
  deny /proc/sys/kernel/[^ms]** w,
  deny /proc/sys/kernel/m[^s]** w,
  deny /proc/sys/kernel/s[^he]** w,
  deny /proc/sys/kernel/sh[^m]** w,
  deny /proc/sys/kernel/se[^m]** w,

  # /sys: nothing of the host's devices, kernel or cgroups to change; firmware tables, security policy and
  # power-meter counters (a side channel) not even to read.
  deny /sys/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/kernel/security/** rwklx,
  deny /sys/devices/virtual/powercap/** rwklx,
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_is_loaded_when_its_name_heads_a_line_of_the_kernel_s_list() {
        let list = "reef-default (enforce)\n/usr/bin/man (enforce)\ncri-validate-apparmor-test-deny-write (complain)\n";
        assert!(listed(list, "reef-default"));
        assert!(listed(list, "/usr/bin/man"));
        assert!(listed(list, "cri-validate-apparmor-test-deny-write"));
        assert!(!listed(list, "reef"), "a prefix is not the profile");
        assert!(!listed(list, "enforce"));
        assert!(!listed("", "reef-default"));
    }

    #[test]
    fn profile_names_that_would_not_reach_the_kernel_whole_are_refused() {
        assert!(check_name("reef-default").is_ok());
        assert!(check_name("/usr/bin/man").is_ok());
        for bad in ["", "a b", "a\nb", "a\0b"] {
            assert!(matches!(check_name(bad), Err(AppArmorError::BadName(_))), "{bad:?}");
        }
    }

    #[test]
    fn the_default_profile_is_named_balanced_and_denies_mounts_and_kernel_writes() {
        let text = default_profile_text("reef-test");
        assert!(text.contains("profile reef-test flags=(attach_disconnected,mediate_deleted) {"));
        assert!(text.contains("peer=reef-test,"));
        assert!(text.contains("deny mount,"));
        assert!(text.contains("deny /sys/** wklx,"));
        assert_eq!(text.matches('{').count(), text.matches('}').count());
        assert!(text.lines().filter(|l| l.trim_start().starts_with("deny")).all(|l| l.ends_with(',')));
    }
}
