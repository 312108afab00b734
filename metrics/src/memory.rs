//! Memory of the process's device, read at every scrape: `<prefix>memory_used_bytes{device}`
//! (resident set, `/proc/self/statm`) and `<prefix>memory_limit_bytes{device}` (the cgroup's
//! limit — v2 `memory.max`, v1 `memory.limit_in_bytes` — or the machine's memory when the
//! cgroup sets none, `/proc/meminfo`). The CPU build's device is `host`; a build with the `cuda`
//! feature adds each CUDA device's series under the same names (`device="cuda:<i>"`: memory in
//! use on the device — by every process, as the driver reports it — and its total), through the
//! driver API loaded at run time (cudarc); without a driver or a GPU it reports none.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};

/// The collector (register it with [`crate::register`]).
#[derive(Clone)]
pub struct DeviceMemory {
    used: IntGaugeVec,
    limit: IntGaugeVec,
}

impl DeviceMemory {
    /// Series named `<prefix>memory_used_bytes` and `<prefix>memory_limit_bytes`.
    pub fn new(prefix: &str) -> Result<Self, prometheus::Error> {
        Ok(Self {
            used: IntGaugeVec::new(
                Opts::new(
                    format!("{prefix}memory_used_bytes"),
                    "Memory in use on the device (host: resident set)",
                ),
                &["device"],
            )?,
            limit: IntGaugeVec::new(
                Opts::new(
                    format!("{prefix}memory_limit_bytes"),
                    "Memory limit of the device (host: cgroup limit, else physical memory)",
                ),
                &["device"],
            )?,
        })
    }
}

impl Collector for DeviceMemory {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.used.desc();
        d.extend(self.limit.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if let Some(b) = resident_bytes() {
            self.used.with_label_values(&["host"]).set(b as i64);
        }
        if let Some(b) = limit_bytes() {
            self.limit.with_label_values(&["host"]).set(b as i64);
        }
        for d in cuda_devices() {
            self.used.with_label_values(&[&d.label]).set(d.used as i64);
            self.limit
                .with_label_values(&[&d.label])
                .set(d.total as i64);
        }
        let mut f = self.used.collect();
        f.extend(self.limit.collect());
        f
    }
}

/// One CUDA device's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaDevice {
    /// `cuda:<ordinal>`
    pub label: String,
    /// bytes in use on the device (all processes)
    pub used: u64,
    /// the device's memory
    pub total: u64,
}

/// The CUDA devices and their memory: none without the `cuda` feature, a driver or a GPU.
pub fn cuda_devices() -> Vec<CudaDevice> {
    #[cfg(feature = "cuda")]
    {
        use cudarc::driver::CudaContext;
        use std::sync::OnceLock;
        // the driver library is loaded on first use (cudarc panics when it is absent): tried
        // once per process; its absence is no device, not a failure
        static DEVICES: OnceLock<usize> = OnceLock::new();
        let n = *DEVICES.get_or_init(|| {
            std::panic::catch_unwind(CudaContext::device_count)
                .ok()
                .and_then(|r| r.ok())
                .map_or(0, |n| n.max(0) as usize)
        });
        (0..n)
            .filter_map(|i| {
                let ctx = CudaContext::new(i).ok()?;
                let (free, total) = ctx.mem_get_info().ok()?;
                Some(CudaDevice {
                    label: format!("cuda:{i}"),
                    used: (total - free) as u64,
                    total: total as u64,
                })
            })
            .collect()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Vec::new()
    }
}

/// Resident set size of this process.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    // 4 KiB on every Linux target this runs on; /proc/self/smaps would say otherwise
    std::fs::read_to_string("/proc/self/smaps")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("KernelPageSize:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(4096, |kb| kb * 1024)
}

/// The memory this process may use: its cgroup's limit, else the machine's memory.
pub fn limit_bytes() -> Option<u64> {
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .filter_map(|s| s.trim().parse::<u64>().ok())
    // v1 reports "no limit" as a huge number
    .find(|&b| b < 1 << 60);
    cgroup.or_else(|| {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kb: u64 = info
            .lines()
            .find(|l| l.starts_with("MemTotal:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb * 1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_read_this_process() {
        let r = prometheus::Registry::new();
        r.register(Box::new(DeviceMemory::new("marill_test_").unwrap()))
            .unwrap();
        // 64 MiB touched here must show in the resident set
        let before = resident_bytes().unwrap();
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let after = resident_bytes().unwrap();
        assert!(after >= before + (60 << 20), "{before} -> {after}");
        drop(block);
        let text = crate::render(&r);
        let value = |name: &str| -> u64 {
            text.lines()
                .find(|l| l.starts_with(&format!("{name}{{device=\"host\"}}")))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing in {text}"))
        };
        let (used, limit) = (
            value("marill_test_memory_used_bytes"),
            value("marill_test_memory_limit_bytes"),
        );
        assert!(used > 1 << 20 && used < limit, "used {used}, limit {limit}");
    }
}
