//! Carrying the profiles file out: a device whose VFs differ from its list is re-carved
//! through acceld when the kubelet says none of its VFs is held; a refusal or a failure is
//! said once, and a failure is not tried again before a wait or a new file.

use super::{call_within, State, CHANGE, FAILED, FAILED_MAX};
use crate::events::Kind;
use crate::inventory;
use crate::pods::InUse;
use accelvirt_api::v1;
use host_driver::daemon::Client;
use std::time::{Duration, Instant};

/// A re-carve that failed: not tried again before `next` (a new profiles file clears it).
#[derive(Debug, Clone)]
pub(super) struct Failure {
    next: Instant,
    delay: Duration,
    said: String,
}

impl State {
    /// Why `name` cannot be re-carved now (a VF of it in use, or nobody can say), if so.
    fn busy(&self, name: &str, vfs: &[v1::VfInfo], in_use: &InUse, want: &str) -> Option<String> {
        let held: Vec<String> = vfs
            .iter()
            .filter(|v| v.state != 0)
            .map(|v| inventory::vf_id(name, v.vf))
            .filter(|id| in_use.ids.contains_key(id))
            .collect();
        // Without the kubelet's answer nothing is known to be free: this plugin's own
        // record starts empty after a restart, so it cannot vouch for a VF.
        match &in_use.fallback {
            Some(e) => Some(format!(
                "{name}: not re-carved to {want}: the kubelet's pod resources cannot say which VFs are in use ({e}); trying again"
            )),
            None if !held.is_empty() => Some(format!(
                "{name}: not re-carved to {want}: {} of its VFs allocated ({}; the kubelet's pod resources say); trying again when they are released",
                held.len(),
                held.join(", ")
            )),
            None => None,
        }
    }

    /// Says why a re-carve waits, once per reason.
    fn refuse(&mut self, name: &str, why: String) {
        if self.refused.get(name) != Some(&why) {
            self.cfg
                .events
                .record(Kind::Warning, "ProfileChangeRefused", why.clone());
            self.refused.insert(name.to_string(), why);
        }
    }

    /// Carries the profiles file out on every device it covers whose VFs differ, through
    /// acceld, unless a VF of that device is in use.
    pub(super) async fn reconcile(&mut self, c: &Client) {
        let names: Vec<String> = self.views.keys().cloned().collect();
        let (views, profiles) = (&self.views, &self.profiles);
        self.waiting
            .retain(|n| views.contains_key(n) && profiles.for_device(n).is_some());
        for name in names {
            let Some(list) = self.profiles.for_device(&name).map(<[_]>::to_vec) else {
                continue;
            };
            let view = self.views[&name].clone();
            if self.profiles.carved_as(&list, &view.vfs, view.shift) {
                self.waiting.remove(&name);
                self.refused.remove(&name);
                self.failed.remove(&name);
                continue;
            }
            // Carved once it is well (acceld may not have seen its heartbeat move yet):
            // looked at again every retry, not only at the next resync.
            if view.problem.is_some() || self.tracker.device_problem(&name).is_some() {
                self.waiting.insert(name.clone());
                continue;
            }
            self.waiting.remove(&name);
            if self
                .failed
                .get(&name)
                .is_some_and(|f| Instant::now() < f.next)
            {
                continue;
            }
            let want = list
                .iter()
                .map(|s| format!("{} × {}", s.count, s.profile))
                .collect::<Vec<_>>()
                .join(" + ");
            // A first look without holding anything back: a refused change leaves the
            // device's VFs as they were, healthy.
            let in_use = self.ask_pods().await;
            if let Some(why) = self.busy(&name, &view.vfs, &in_use, &want) {
                self.refuse(&name, why);
                continue;
            }
            // Held back from the kubelet, then looked at again: nothing allocated from this
            // device between the look at what is in use and the carving.
            self.carving.insert(name.clone());
            self.publish();
            let in_use = self.ask_pods().await;
            if let Some(why) = self.busy(&name, &view.vfs, &in_use, &want) {
                self.refuse(&name, why);
                self.carving.remove(&name);
                self.publish();
                continue;
            }
            crate::log!("{name}: re-carving to {want}");
            let mut touched = false;
            let r = self.carve(c, &name, &list, &mut touched).await;
            let ev = self.cfg.events.clone();
            match &r {
                Ok(n) => {
                    self.failed.remove(&name);
                    ev.record(
                        Kind::Normal,
                        "ProfileChanged",
                        format!("{name}: re-carved to {want} ({n} VFs)"),
                    );
                }
                Err(e) => {
                    let delay = self
                        .failed
                        .get(&name)
                        .map_or(FAILED, |f| (f.delay * 2).min(FAILED_MAX));
                    let why = format!("{name}: not re-carved to {want}: {e}");
                    crate::log!("{why}; trying again in {delay:?} or when the profiles change");
                    let said = self.failed.get(&name).map(|f| f.said.clone());
                    // Once per failure, not once per try.
                    if said.as_ref() != Some(&why) {
                        ev.record(Kind::Warning, "ProfileChangeFailed", why.clone());
                    }
                    self.failed.insert(
                        name.clone(),
                        Failure {
                            next: Instant::now() + delay,
                            delay,
                            said: why,
                        },
                    );
                }
            }
            self.refused.remove(&name);
            self.carving.remove(&name);
            // New VFs under the old IDs: their hand-offs are asked anew, and their resources
            // are their profiles' (no pod held the old ones, the kubelet said just now).
            // The old list is wrong now whatever the next one says: should the next read
            // fail, the device shows no VF rather than old ones under new IDs' resources.
            if touched {
                if let Some(v) = self.views.get_mut(&name) {
                    v.vfs.clear();
                    v.endpoints.clear();
                }
                let tag = inventory::vf_id_prefix(&name);
                self.advertised.retain(|id, _| !id.starts_with(&tag));
                self.held.retain(|id, _| !id.starts_with(&tag));
            }
            self.refresh(c, &name).await;
            self.publish();
        }
    }

    async fn carve(
        &mut self,
        c: &Client,
        name: &str,
        list: &[crate::profiles::Share],
        touched: &mut bool,
    ) -> Result<u32, String> {
        let mut api = c.api.clone();
        let shift = self.views[name].shift;
        // Checked before anything is destroyed.
        let mut specs = Vec::new();
        for s in list {
            let shape = &self.profiles.shapes[&s.profile];
            specs.push((s.count, shape.spec(shift).map_err(|e| e.to_string())?));
        }
        // From here acceld may have changed the device, even where it does not answer.
        *touched = true;
        if self.views[name].vfs.iter().any(|v| v.state != 0) {
            call_within(
                CHANGE,
                "DestroyVfs",
                api.destroy_vfs(v1::DestroyVfsRequest {
                    device: name.to_string(),
                    vf: 0,
                    all: true,
                }),
            )
            .await?;
        }
        let mut made = 0;
        for (count, spec) in specs {
            let r = call_within(
                CHANGE,
                "CreateVfs",
                api.create_vfs(v1::CreateVfsRequest {
                    device: name.to_string(),
                    count,
                    spec: Some(spec),
                    // A PCI VF is handed to a VM as its vfio group (a vfio-user VF needs
                    // no binding, and acceld takes this as a no-op for one).
                    bind: "vfio-pci".into(),
                }),
            )
            .await?;
            made += r.vfs.len() as u32;
        }
        Ok(made)
    }
}
