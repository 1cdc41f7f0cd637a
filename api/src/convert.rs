//! Firmware structures (little-endian wire layouts) to and from their API messages. Fields
//! wider on the wire than in the ABI are checked coming back: a value that does not fit is
//! an error, never truncated.

use crate::v1;
use shared_abi::resources::{DeviceInfo, DeviceStats, FreeResources, VfInfo, VfStats};
use zerocopy::little_endian::{U16, U32, U64};

/// A message field that does not fit its firmware structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfRange(pub &'static str);

impl core::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "field {} out of range", self.0)
    }
}

impl std::error::Error for OutOfRange {}

fn u16_of(v: u32, what: &'static str) -> Result<U16, OutOfRange> {
    u16::try_from(v).map(U16::new).map_err(|_| OutOfRange(what))
}
fn u32_of(v: u64, what: &'static str) -> Result<U32, OutOfRange> {
    u32::try_from(v).map(U32::new).map_err(|_| OutOfRange(what))
}
fn u8_of(v: u32, what: &'static str) -> Result<u8, OutOfRange> {
    u8::try_from(v).map_err(|_| OutOfRange(what))
}

/// `DeviceInfo` as its message.
pub fn device_info(d: &DeviceInfo) -> v1::DeviceInfo {
    v1::DeviceInfo {
        abi_major: d.abi_major.get().into(),
        abi_minor: d.abi_minor.get().into(),
        fw_version: d.fw_version.get(),
        build_id: d.build_id.get(),
        caps: d.caps.get(),
        engines: d.engines.into(),
        granule_shift: d.granule_shift.into(),
        total_vfs: d.total_vfs.get().into(),
        queues: d.queues.get().into(),
        vectors: d.vectors.get().into(),
        mem_granules: d.mem_granules.get().into(),
        vfs_in_use: d.vfs_in_use.get().into(),
        num_vfs_enabled: d.num_vfs_enabled.get().into(),
        uptime_ms: d.uptime_ms.get(),
    }
}

/// The message as `DeviceInfo`.
pub fn device_info_from(m: &v1::DeviceInfo) -> Result<DeviceInfo, OutOfRange> {
    let mut d = <DeviceInfo as zerocopy::FromZeros>::new_zeroed();
    d.abi_major = u16_of(m.abi_major, "abi_major")?;
    d.abi_minor = u16_of(m.abi_minor, "abi_minor")?;
    d.fw_version = U32::new(m.fw_version);
    d.build_id = U32::new(m.build_id);
    d.caps = U32::new(m.caps);
    d.engines = u8_of(m.engines, "engines")?;
    d.granule_shift = u8_of(m.granule_shift, "granule_shift")?;
    d.total_vfs = u16_of(m.total_vfs, "total_vfs")?;
    d.queues = u16_of(m.queues, "queues")?;
    d.vectors = u16_of(m.vectors, "vectors")?;
    d.mem_granules = u32_of(m.mem_granules, "mem_granules")?;
    d.vfs_in_use = u16_of(m.vfs_in_use, "vfs_in_use")?;
    d.num_vfs_enabled = u16_of(m.num_vfs_enabled, "num_vfs_enabled")?;
    d.uptime_ms = U64::new(m.uptime_ms);
    Ok(d)
}

/// `FreeResources` as its message.
pub fn free(f: &FreeResources) -> v1::FreeResources {
    v1::FreeResources {
        engine_mask: f.engine_mask.get(),
        mem_granules: f.mem_granules.get().into(),
        largest_mem_run: f.largest_mem_run.get().into(),
        queues: f.queues.get().into(),
        vectors: f.vectors.get().into(),
        largest_queue_run: f.largest_queue_run.get().into(),
        largest_vector_run: f.largest_vector_run.get().into(),
        free_vf_slots: f.free_vf_slots.get().into(),
    }
}

/// The message as `FreeResources`.
pub fn free_from(m: &v1::FreeResources) -> Result<FreeResources, OutOfRange> {
    let mut f = <FreeResources as zerocopy::FromZeros>::new_zeroed();
    f.engine_mask = U32::new(m.engine_mask);
    f.mem_granules = u32_of(m.mem_granules, "mem_granules")?;
    f.largest_mem_run = u32_of(m.largest_mem_run, "largest_mem_run")?;
    f.queues = u16_of(m.queues, "queues")?;
    f.vectors = u16_of(m.vectors, "vectors")?;
    f.largest_queue_run = u16_of(m.largest_queue_run, "largest_queue_run")?;
    f.largest_vector_run = u16_of(m.largest_vector_run, "largest_vector_run")?;
    f.free_vf_slots = u16_of(m.free_vf_slots, "free_vf_slots")?;
    Ok(f)
}

/// `VfInfo` as its message.
pub fn vf_info(v: &VfInfo) -> v1::VfInfo {
    v1::VfInfo {
        vf: v.vf.get().into(),
        state: v.state.into(),
        engine_mask: v.engine_mask.get(),
        mem_base: v.mem_base.get().into(),
        mem_granules: v.mem_granules.get().into(),
        queue_base: v.queue_base.get().into(),
        queue_count: v.queue_count.get().into(),
        vector_base: v.vector_base.get().into(),
        vector_count: v.vector_count.get().into(),
        weight: v.weight.get().into(),
        fault_code: v.fault_code.get(),
        fault_count: v.fault_count.get(),
        flr_count: v.flr_count.get(),
        generation: v.generation.get(),
    }
}

/// The message as `VfInfo`.
pub fn vf_info_from(m: &v1::VfInfo) -> Result<VfInfo, OutOfRange> {
    let mut v = <VfInfo as zerocopy::FromZeros>::new_zeroed();
    v.vf = u16_of(m.vf, "vf")?;
    v.state = u8_of(m.state, "state")?;
    v.engine_mask = U32::new(m.engine_mask);
    v.mem_base = u32_of(m.mem_base, "mem_base")?;
    v.mem_granules = u32_of(m.mem_granules, "mem_granules")?;
    v.queue_base = u16_of(m.queue_base, "queue_base")?;
    v.queue_count = u16_of(m.queue_count, "queue_count")?;
    v.vector_base = u16_of(m.vector_base, "vector_base")?;
    v.vector_count = u16_of(m.vector_count, "vector_count")?;
    v.weight = u16_of(m.weight, "weight")?;
    v.fault_code = U32::new(m.fault_code);
    v.fault_count = U32::new(m.fault_count);
    v.flr_count = U32::new(m.flr_count);
    v.generation = U32::new(m.generation);
    Ok(v)
}

/// `DeviceStats` as its message.
pub fn device_stats(d: &DeviceStats) -> v1::DeviceStats {
    v1::DeviceStats {
        mailbox_commands: d.mbox_commands.get(),
        mailbox_errors: d.mbox_errors.get(),
        mailbox_replays: d.mbox_replays.get(),
        vfs_created: d.vfs_created.get(),
        vfs_destroyed: d.vfs_destroyed.get(),
        flrs: d.flrs.get(),
        vf_count: d.vf_count.get().into(),
        uptime_ms: d.uptime_ms.get(),
    }
}

/// The message as `DeviceStats`.
pub fn device_stats_from(m: &v1::DeviceStats) -> Result<DeviceStats, OutOfRange> {
    let mut d = <DeviceStats as zerocopy::FromZeros>::new_zeroed();
    d.mbox_commands = U64::new(m.mailbox_commands);
    d.mbox_errors = U64::new(m.mailbox_errors);
    d.mbox_replays = U64::new(m.mailbox_replays);
    d.vfs_created = U32::new(m.vfs_created);
    d.vfs_destroyed = U32::new(m.vfs_destroyed);
    d.flrs = U32::new(m.flrs);
    d.vf_count = u16_of(m.vf_count, "vf_count")?;
    d.uptime_ms = U64::new(m.uptime_ms);
    Ok(d)
}

/// `VfStats` as its message.
pub fn vf_stats(v: &VfStats) -> v1::VfStats {
    v1::VfStats {
        vf: v.vf.get().into(),
        state: v.state.into(),
        faults: v.faults.get(),
        jobs: v.jobs.get(),
        bytes: v.bytes.get(),
        engine_us: v.engine_us.get(),
        flr_count: v.flr_count.get(),
    }
}

/// The message as `VfStats`.
pub fn vf_stats_from(m: &v1::VfStats) -> Result<VfStats, OutOfRange> {
    let mut v = <VfStats as zerocopy::FromZeros>::new_zeroed();
    v.vf = u16_of(m.vf, "vf")?;
    v.state = u8_of(m.state, "state")?;
    v.faults = U32::new(m.faults);
    v.jobs = U64::new(m.jobs);
    v.bytes = U64::new(m.bytes);
    v.engine_us = U64::new(m.engine_us);
    v.flr_count = U32::new(m.flr_count);
    Ok(v)
}

/// The event kinds' API names, by firmware kind.
pub fn event_kind_name(k: shared_abi::events::EventKind) -> &'static str {
    use shared_abi::events::EventKind as K;
    match k {
        K::FwReady => "fw_ready",
        K::VfFlrDone => "vf_flr_done",
        K::VfFault => "vf_fault",
        K::VfStateChanged => "vf_state_changed",
        K::FwFault => "fw_fault",
        K::Overflow => "overflow",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::{FromBytes, IntoBytes};

    /// Every byte of each structure (reserved fields zero) survives the trip through its
    /// message: no field is dropped or narrowed.
    #[test]
    fn round_trips() {
        let bytes: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) | 1).collect();
        let mut v = VfInfo::read_from_prefix(&bytes).unwrap().0;
        v.flags = 0;
        v.reserved = U16::ZERO;
        v.reserved2 = U32::ZERO;
        assert_eq!(vf_info_from(&vf_info(&v)).unwrap().as_bytes(), v.as_bytes());
        let d = DeviceInfo::read_from_prefix(&bytes).unwrap().0;
        assert_eq!(
            device_info_from(&device_info(&d)).unwrap().as_bytes(),
            d.as_bytes()
        );
        let mut s = VfStats::read_from_prefix(&bytes).unwrap().0;
        s.reserved = 0;
        s.reserved2 = U32::ZERO;
        assert_eq!(
            vf_stats_from(&vf_stats(&s)).unwrap().as_bytes(),
            s.as_bytes()
        );
        let mut ds = DeviceStats::read_from_prefix(&bytes).unwrap().0;
        ds.reserved = U16::ZERO;
        assert_eq!(
            device_stats_from(&device_stats(&ds)).unwrap().as_bytes(),
            ds.as_bytes()
        );
        let mut f = FreeResources::read_from_prefix(&bytes).unwrap().0;
        f.reserved = U16::ZERO;
        assert_eq!(free_from(&free(&f)).unwrap().as_bytes(), f.as_bytes());
    }

    #[test]
    fn a_value_too_wide_is_refused() {
        let m = v1::VfInfo {
            vf: 70_000,
            ..Default::default()
        };
        assert_eq!(vf_info_from(&m), Err(OutOfRange("vf")));
    }
}
