//! A summary of the twin for the metrics endpoint (issue #7): the store's counters, the
//! entities by type and the state of each mosquitto bridge. Computed on request by the owner
//! task, from the store as it is; nothing here is kept up to date between requests.

use std::collections::BTreeMap;

use super::store::{Counters, Store};
use crate::topic::EntityTopicId;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TwinStats {
    pub counters: Counters,
    /// `device`, `child-device`, `service` → how many are registered.
    pub entities: BTreeMap<&'static str, u64>,
    /// Each mosquitto bridge service of the main device that reported its health, and whether
    /// it is `up`.
    pub bridges: Vec<(EntityTopicId, bool)>,
}

impl Store {
    pub fn stats(&self) -> TwinStats {
        let mut entities = BTreeMap::new();
        let mut bridges = Vec::new();
        let main = self.cfg.main.default_device_name();
        for entity in self.entities.values() {
            *entities.entry(entity.etype.as_str()).or_default() += 1;
            let Some(extra) = &entity.extra else { continue };
            // The agent's bridges are services of the main device; a child's service of the
            // same name is another broker's.
            let of_main = entity
                .id
                .default_service_names()
                .is_some_and(|(device, _)| Some(device) == main);
            if extra.bridge.is_some() && of_main {
                let up = extra.health.as_ref().is_some_and(|h| h.status == "up");
                bridges.push((entity.id.clone(), up));
            }
        }
        bridges.sort();
        TwinStats {
            counters: self.counters.clone(),
            entities,
            bridges,
        }
    }
}
