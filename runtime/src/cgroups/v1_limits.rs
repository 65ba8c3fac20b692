//! A container's limits written on cgroup v1 through cgroups-rs's controllers, the way its `FsManager::set` writes
//! them, but on a handle built from the known hierarchies: `FsManager::new` parses mountinfo twice, which at 100
//! running pods cost 1.1 ms of each CreateContainer here (bench/README.md). v2 and the systemd driver keep
//! FsManager, and so does anything this does not write (block IO and network classes, which the CRI never sets).

use cgroups_rs::fs::Cgroup;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuset::CpuSetController;
use cgroups_rs::fs::devices::{DevicePermissions, DeviceType, DevicesController};
use cgroups_rs::fs::hugetlb::HugeTlbController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Controller, MaxValue};
use oci_spec::runtime::{LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxResources};

use super::CgroupError;

/// Whether `apply` writes everything `resources` asks for.
pub fn handles(resources: &LinuxResources) -> bool {
    resources.block_io().is_none() && resources.network().is_none()
}

pub fn apply(cgroup: &Cgroup, r: &LinuxResources) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Fs { path: cgroup.path().to_string(), source };
    if let Some(cpu) = r.cpu() {
        set_cpu(cgroup, cpu)?;
    }
    if let Some(memory) = r.memory() {
        set_memory(controller(cgroup, "memory")?, memory, cgroup.path())?;
    }
    if let Some(pids) = r.pids() {
        let p: &PidController = controller(cgroup, "pids")?;
        let max = if pids.limit() > 0 { MaxValue::Value(pids.limit()) } else { MaxValue::Max };
        p.set_pid_max(max).map_err(err)?;
    }
    if let Some(limits) = r.hugepage_limits() {
        let h: &HugeTlbController = controller(cgroup, "hugetlb")?;
        // Page sizes this host lacks are skipped, as FsManager does.
        for l in limits.iter().filter(|l| h.size_supported(l.page_size())) {
            h.set_limit_in_bytes(l.page_size(), l.limit() as u64).map_err(err)?;
        }
    }
    if let Some(devices) = r.devices() {
        set_devices(cgroup, devices)?;
    }
    Ok(())
}

/// cpuset's CPUs and memory nodes, CFS shares, quota and period, and the realtime budget.
fn set_cpu(cgroup: &Cgroup, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Fs { path: cgroup.path().to_string(), source };
    if cpu.cpus().is_some() || cpu.mems().is_some() {
        let set: &CpuSetController = controller(cgroup, "cpuset")?;
        if let Some(cpus) = cpu.cpus() {
            set.set_cpus(cpus).map_err(err)?;
        }
        if let Some(mems) = cpu.mems() {
            set.set_mems(mems).map_err(err)?;
        }
    }
    let wants_cpu = cpu.shares().is_some_and(|s| s != 0)
        || cpu.quota().is_some()
        || cpu.period().is_some()
        || cpu.realtime_runtime().is_some()
        || cpu.realtime_period().is_some();
    if !wants_cpu {
        return Ok(());
    }
    let c: &CpuController = controller(cgroup, "cpu")?;
    if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
        c.set_shares(shares).map_err(err)?;
    }
    if let Some(quota) = cpu.quota() {
        c.set_cfs_quota(quota).map_err(err)?;
    }
    if let Some(period) = cpu.period() {
        c.set_cfs_period(period).map_err(err)?;
    }
    if let Some(rt) = cpu.realtime_runtime() {
        c.set_rt_runtime(rt).map_err(err)?;
    }
    if let Some(rt) = cpu.realtime_period() {
        c.set_rt_period_us(rt).map_err(err)?;
    }
    Ok(())
}

/// The device rules, in order.
fn set_devices(cgroup: &Cgroup, devices: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Fs { path: cgroup.path().to_string(), source };
    let d: &DevicesController = controller(cgroup, "devices")?;
    for rule in devices {
        let kind = DeviceType::from_char(rule.typ().unwrap_or_default().as_str().chars().next()).ok_or_else(|| {
            CgroupError::Invalid { path: cgroup.path().to_string(), what: format!("device rule type {:?}", rule.typ()) }
        })?;
        let access: Vec<DevicePermissions> =
            rule.access().as_deref().unwrap_or_default().chars().filter_map(DevicePermissions::from_char).collect();
        let (major, minor) = numbers_of(rule);
        if rule.allow() {
            d.allow_device(kind, major, minor, &access).map_err(err)?;
        } else {
            d.deny_device(kind, major, minor, &access).map_err(err)?;
        }
    }
    Ok(())
}

/// A rule's major and minor as cgroups-rs writes them: -1 is `*`. A rule without numbers covers every device of
/// its type (`c *:* m` lets init make any node, `c 136:* rwm` is every pty); 0 would name the unused device 0.
fn numbers_of(rule: &LinuxDeviceCgroup) -> (i64, i64) {
    (rule.major().unwrap_or(-1), rule.minor().unwrap_or(-1))
}

fn controller<'a, T>(cgroup: &'a Cgroup, name: &'static str) -> Result<&'a T, CgroupError>
where
    &'a T: From<&'a cgroups_rs::fs::Subsystem>,
    T: Controller + cgroups_rs::fs::ControllIdentifier,
{
    cgroup
        .controller_of()
        .ok_or_else(|| CgroupError::NoController { path: cgroup.path().to_string(), controller: name })
}

/// Memory and memory+swap in an order the kernel accepts from any current value (the limit may not exceed
/// memsw, so whichever moves first depends on the direction), as FsManager writes them.
fn set_memory(m: &MemController, memory: &LinuxMemory, path: &str) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Fs { path: path.to_string(), source };
    let limit = memory.limit().unwrap_or(0);
    let mut swap = memory.swap().unwrap_or(0);
    if limit == -1 && swap == 0 {
        swap = -1;
    }
    let swap_first = limit != 0 && swap != 0 && (swap == -1 || m.memory_stat().limit_in_bytes < swap);
    if swap_first {
        m.set_memswap_limit(swap).map_err(err)?;
        m.set_limit(limit).map_err(err)?;
    } else {
        if limit != 0 {
            m.set_limit(limit).map_err(err)?;
        }
        if swap != 0 {
            m.set_memswap_limit(swap).map_err(err)?;
        }
    }
    if let Some(reservation) = memory.reservation() {
        m.set_soft_limit(reservation).map_err(err)?;
    }
    if memory.disable_oom_killer().unwrap_or_default() {
        m.disable_oom_killer().map_err(err)?;
    }
    if let Some(swappiness) = memory.swappiness() {
        if swappiness > 100 {
            return Err(CgroupError::Invalid {
                path: path.to_string(),
                what: format!("swappiness {swappiness} is over 100"),
            });
        }
        m.set_swappiness(swappiness).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};

    #[test]
    fn a_device_rule_without_numbers_covers_every_device_of_its_type() {
        let any = LinuxDeviceCgroupBuilder::default().allow(true).typ(LinuxDeviceType::C).access("m").build().unwrap();
        assert_eq!(numbers_of(&any), (-1, -1));
        let ptys =
            LinuxDeviceCgroupBuilder::default().allow(true).typ(LinuxDeviceType::C).major(136).access("rwm").build();
        assert_eq!(numbers_of(&ptys.unwrap()), (136, -1));
        let null = LinuxDeviceCgroupBuilder::default().typ(LinuxDeviceType::C).major(1).minor(3).build().unwrap();
        assert_eq!(numbers_of(&null), (1, 3));
    }
}
