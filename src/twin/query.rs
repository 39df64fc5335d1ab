//! The read side of the twin and the dispatch of HTTP requests (spec/twin.md §5.3, §5.4, §6).
//! Listings walk the tree breadth-first with children in byte order; bodies are serialized here,
//! once, straight from the store.

use std::collections::{HashSet, VecDeque};

use serde::Serialize;

use super::api::{Filter, Query, Reply, Write};
use super::error::TwinError;
use super::model::Entity;
use super::registry::to_json;
use super::store::Store;
use super::time::Timestamp;
use crate::topic::EntityTopicId;

impl Store {
    pub fn query(&self, query: &Query) -> Result<Reply, TwinError> {
        match query {
            Query::List(filter) => Ok(Reply::json(self.list(filter, |e| e.metadata()))),
            Query::States(filter) => Ok(Reply::json(self.list(filter, |e| e.state()))),
            Query::Entity(id) => Ok(Reply::json(to_json(&self.found(id)?.metadata()))),
            Query::State(id) => Ok(Reply::json(to_json(&self.found(id)?.state()))),
            Query::Twin(id) => Ok(Reply::json(to_json(&self.known(id)?.twin))),
            Query::TwinKey(id, key) => {
                let value =
                    self.known(id)?
                        .twin
                        .get(key)
                        .ok_or_else(|| TwinError::TwinKeyNotFound {
                            id: id.clone(),
                            key: key.clone(),
                        })?;
                Ok(Reply::json(value.to_string()))
            }
            Query::Config(id) => {
                let entity = self.known(id)?;
                Ok(Reply::json(match &entity.extra().config {
                    Some(c) => to_json(c),
                    None => "{}".to_string(),
                }))
            }
            Query::ConfigKey(id, key) => {
                let value = self
                    .known(id)?
                    .extra()
                    .config
                    .as_ref()
                    .and_then(|c| c.get(key))
                    .ok_or_else(|| TwinError::ConfigKeyNotFound {
                        id: id.clone(),
                        key: key.clone(),
                    })?;
                Ok(Reply::json(value.to_string()))
            }
            Query::History {
                id,
                mtype,
                since,
                series,
            } => {
                let entity = self.known(id)?;
                let reply = self.history.reply(
                    id,
                    mtype,
                    (*since, series.as_deref()),
                    entity.measurements.get(mtype.as_str()),
                    Timestamp::now(),
                );
                Ok(Reply::json(to_json(&reply)))
            }
        }
    }

    /// Applies an HTTP write. Refused while no sync has completed on the current connection.
    pub fn write(&mut self, write: Write) -> Result<Reply, TwinError> {
        if !self.is_synced() {
            return Err(TwinError::NotReady(
                "waiting for the retained-message sync marker".to_string(),
            ));
        }
        match write {
            Write::Create(new) => self.http_create(new),
            Write::Patch { id, parent, health } => self.http_patch(&id, parent, health),
            Write::Delete(id) => self.http_delete(&id),
            Write::TwinReplace(id, body) => self.http_twin_replace(&id, body),
            Write::TwinClear(id) => self.http_twin_clear(&id),
            Write::TwinSet(id, key, value) => self.http_twin_set(&id, &key, value),
            Write::TwinDelete(id, key) => self.http_twin_delete(&id, &key),
        }
    }

    /// `Entity with topic id: … not found` (metadata and state routes).
    fn found(&self, id: &EntityTopicId) -> Result<&Entity, TwinError> {
        self.entity(id)
            .ok_or_else(|| TwinError::EntityNotFound(id.clone()))
    }

    /// `The specified entity: … does not exist` (twin and config routes).
    fn known(&self, id: &EntityTopicId) -> Result<&Entity, TwinError> {
        self.entity(id)
            .ok_or_else(|| TwinError::UnknownEntity(id.clone()))
    }

    /// The entities selected by `filter` in BFS order (§5.4), serialized as a JSON array.
    fn list<'a, T: Serialize + 'a>(
        &'a self,
        filter: &Filter,
        view: impl Fn(&'a Entity) -> T,
    ) -> String {
        let selected = self.select(filter);
        let mut out = Vec::with_capacity(selected.len() * 96);
        out.push(b'[');
        for (i, entity) in selected.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if serde_json::to_writer(&mut out, &view(entity)).is_err() {
                out.extend_from_slice(b"null");
            }
        }
        out.push(b']');
        String::from_utf8(out).unwrap_or_else(|_| "[]".to_string())
    }

    fn select(&self, filter: &Filter) -> Vec<&Entity> {
        let mut out = Vec::new();
        if let Some(parent) = &filter.parent {
            if let Some(p) = self.entities.get(parent) {
                out.extend(p.children().filter_map(|c| self.entity(c)));
            }
        } else {
            let start = filter.root.as_ref().unwrap_or(&self.cfg.main);
            if let Some(root) = self.entity(start) {
                let mut queue = VecDeque::from([root]);
                // A guard: `relink` keeps the tree acyclic, so no entity should be reached twice.
                let mut seen = HashSet::from([&root.id]);
                while let Some(entity) = queue.pop_front() {
                    out.push(entity);
                    queue.extend(
                        entity
                            .children()
                            .filter(|c| seen.insert(*c))
                            .filter_map(|c| self.entity(c)),
                    );
                }
            }
        }
        if let Some(etype) = filter.etype {
            out.retain(|e| e.etype == etype);
        }
        out
    }
}
