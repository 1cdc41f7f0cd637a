//! VF health from acceld's events and the device's state.
//!
//! A VF is unhealthy while its device is not (acceld does not hold it, its firmware's
//! heartbeat stopped, it reports FAULT or HALTED, or acceld cannot be asked), while the VF
//! is not enabled (being reset, or going), and from a refused access (a `vf_fault`) until
//! its next function level reset: vfio-pci resets a VF whenever its VM lets go of it, so a
//! faulted VF comes back once its tenant has gone. A VF destroyed, or a device reset and
//! restored, starts clean.

use accelvirt_api::v1;
use std::collections::BTreeMap;

/// DEV_STATUS bits (docs/abi.md §2).
const READY: u32 = 1 << 0;
const FAULT: u32 = 1 << 2;
const HALTED: u32 = 1 << 3;
/// VF state: enabled (docs/abi.md §3).
pub const ENABLED: u32 = 2;
/// VF state: a function level reset in progress.
pub const RESETTING: u32 = 3;

/// Faults seen, per device and VF.
#[derive(Debug, Default)]
pub struct Tracker {
    faulted: BTreeMap<(String, u32), u32>,
    /// Devices acceld said were lost, hung or being reset, and what it said.
    down: BTreeMap<String, String>,
}

impl Tracker {
    /// Takes one event in; whether it may change a VF's health.
    pub fn apply(&mut self, e: &v1::Event) -> bool {
        match (e.kind.as_str(), e.vf) {
            ("vf_fault", Some(vf)) => {
                self.faulted.insert((e.device.clone(), vf), e.code);
                true
            }
            ("vf_flr_done", Some(vf)) => self.faulted.remove(&(e.device.clone(), vf)).is_some(),
            // Destroyed (state 0): the next VF of that number is a new one.
            ("vf_state_changed", Some(vf)) => {
                if e.code == 0 {
                    self.faulted.remove(&(e.device.clone(), vf));
                }
                true
            }
            // Down from the moment acceld says so, not from its next answer: it may well
            // have reset and restored the device by the time it answers.
            ("heartbeat_lost" | "device_lost" | "fw_fault" | "reset", None) => {
                self.down
                    .insert(e.device.clone(), format!("{}: {}", e.kind, e.message));
                true
            }
            // The device was reset: every VF was destroyed and made anew.
            ("fw_ready" | "restored" | "device_back", None) => {
                self.faulted.retain(|(d, _), _| *d != e.device);
                self.down.remove(&e.device);
                true
            }
            _ => true,
        }
    }

    /// Why `device` is down by its events (lost, hung, faulted, being reset), if it is.
    pub fn device_problem(&self, device: &str) -> Option<String> {
        self.down.get(device).cloned()
    }

    /// Why VF `vf` of `device` is unhealthy on its own account (its state, a fault), if it is.
    pub fn vf_problem(&self, device: &str, vf: &v1::VfInfo) -> Option<String> {
        if let Some(code) = self.faulted.get(&(device.to_string(), vf.vf)) {
            return Some(format!(
                "VF {} faulted (code {code}); healthy again after its next reset",
                vf.vf
            ));
        }
        match vf.state {
            ENABLED => None,
            RESETTING => Some(format!("VF {} is being reset", vf.vf)),
            s => Some(format!("VF {} is not enabled (state {s})", vf.vf)),
        }
    }
}

/// Why a device is unhealthy, from acceld's health answer, if it is.
pub fn device_problem(h: &v1::HealthResponse) -> Option<String> {
    if !h.online {
        return Some("acceld does not hold the device".into());
    }
    if !h.heartbeat_ok {
        return Some(format!(
            "the firmware's heartbeat stopped {:.1} s ago",
            h.heartbeat_age_seconds
        ));
    }
    if h.dev_status & (FAULT | HALTED) != 0 || h.dev_status & READY == 0 {
        return Some(format!(
            "the firmware is not ready (status {:#x}, fault code {})",
            h.dev_status, h.fault_code
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, vf: Option<u32>, code: u32) -> v1::Event {
        v1::Event {
            device: "d".into(),
            kind: kind.into(),
            vf,
            code,
            ..Default::default()
        }
    }

    #[test]
    fn a_fault_lasts_until_the_vfs_next_reset() {
        let mut t = Tracker::default();
        let vf = v1::VfInfo {
            vf: 1,
            state: ENABLED,
            ..Default::default()
        };
        assert_eq!(t.vf_problem("d", &vf), None);
        t.apply(&ev("vf_fault", Some(1), 1));
        assert!(t.vf_problem("d", &vf).unwrap().contains("faulted"));
        assert_eq!(t.vf_problem("e", &vf), None, "another device's VF 1");
        t.apply(&ev("vf_flr_done", Some(1), 0));
        assert_eq!(t.vf_problem("d", &vf), None);
        t.apply(&ev("vf_fault", Some(1), 2));
        t.apply(&ev("restored", None, 0));
        assert_eq!(t.vf_problem("d", &vf), None);
        t.apply(&ev("vf_fault", Some(1), 2));
        t.apply(&ev("vf_state_changed", Some(1), 0));
        assert_eq!(t.vf_problem("d", &vf), None);
        t.apply(&ev("heartbeat_lost", None, 0));
        assert!(t.device_problem("d").unwrap().contains("heartbeat_lost"));
        t.apply(&ev("reset", None, 0));
        t.apply(&ev("fw_ready", None, 0));
        assert_eq!(t.device_problem("d"), None);
        t.apply(&ev("device_lost", None, 0));
        t.apply(&ev("device_back", None, 0));
        assert_eq!(t.device_problem("d"), None);
        let resetting = v1::VfInfo {
            state: RESETTING,
            ..vf
        };
        assert!(t.vf_problem("d", &resetting).unwrap().contains("reset"));
    }

    #[test]
    fn a_device_is_healthy_only_online_beating_and_ready() {
        let ok = v1::HealthResponse {
            online: true,
            heartbeat_ok: true,
            dev_status: READY,
            ..Default::default()
        };
        assert_eq!(device_problem(&ok), None);
        for bad in [
            v1::HealthResponse {
                online: false,
                ..ok.clone()
            },
            v1::HealthResponse {
                heartbeat_ok: false,
                ..ok.clone()
            },
            v1::HealthResponse {
                dev_status: READY | FAULT,
                ..ok.clone()
            },
            v1::HealthResponse {
                dev_status: 0,
                ..ok.clone()
            },
        ] {
            assert!(device_problem(&bad).is_some(), "{bad:?}");
        }
    }
}
