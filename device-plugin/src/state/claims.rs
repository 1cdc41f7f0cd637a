//! What the kubelet's pods hold of ours, and as what: a VF keeps the resource a pod holds it
//! as, and moves to the one its profile names only once the kubelet says no pod holds it.

use super::State;
use crate::pods::InUse;
use std::collections::BTreeSet;

impl State {
    /// Asks the kubelet which of our VFs its pods hold (and as what), keeping its answer.
    pub(super) async fn ask_pods(&mut self) -> InUse {
        let u = self.cfg.pod_resources.in_use(&self.allocations).await;
        if u.fallback.is_none() {
            self.held = u
                .ids
                .iter()
                .filter_map(|(id, r)| Some((id.clone(), r.clone()?)))
                .collect();
            self.pods_known = true;
            // A VF gone from acceld's list and held by no pod is forgotten.
            let live: BTreeSet<String> = self
                .views
                .iter()
                .flat_map(|(name, v)| {
                    v.vfs
                        .iter()
                        .filter(|x| x.state != 0)
                        .map(move |x| crate::inventory::vf_id(name, x.vf))
                })
                .collect();
            // Held: the kubelet's, and this plugin's own just allocated.
            self.advertised
                .retain(|id, _| live.contains(id) || u.ids.contains_key(id));
            self.pods_said.clear();
        } else if self.awaiting_pods() {
            let why = u.fallback.clone().unwrap_or_default();
            if self.pods_said != why {
                crate::log!(
                    "no VF is offered until the kubelet's pod resources say which resource pods hold each as: {why}"
                );
                self.pods_said = why;
            }
        }
        u
    }

    /// Moves each VF whose profile now says another resource to it, once the kubelet says
    /// no pod holds it. It is held back (unhealthy) while the kubelet is asked, so none is
    /// given out in between.
    pub(super) async fn settle(&mut self) {
        if self.moving.is_empty() {
            return;
        }
        let u = self.ask_pods().await;
        self.publish();
        let free: BTreeSet<String> = self
            .moving
            .keys()
            .filter(|id| u.fallback.is_none() && !u.ids.contains_key(*id))
            .cloned()
            .collect();
        if free.is_empty() {
            return;
        }
        self.settling = free;
        self.publish();
        let u = self.ask_pods().await;
        if u.fallback.is_none() {
            for id in std::mem::take(&mut self.settling) {
                if let (false, Some(to)) = (u.ids.contains_key(&id), self.moving.get(&id)) {
                    crate::log!("{id}: advertised as {to} (its profile's resource) from now");
                    self.advertised.insert(id, to.clone());
                }
            }
        }
        self.settling.clear();
        self.publish();
    }
}
