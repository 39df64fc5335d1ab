//! The requests the HTTP layer sends to the twin's owner task, and their replies (spec/twin.md
//! §5, §6). Requests carry already-validated values; the store applies them one at a time, in
//! arrival order with the MQTT input (§5.1). Replies are JSON text, serialized by the owner task so
//! that large listings are written once, straight from the store.

use serde_json::{Map, Value};

use super::error::TwinError;
use super::model::{EntityType, Registration};
use super::time::Timestamp;
use crate::topic::EntityTopicId;

/// The `root`, `parent` and `type` query of the listing routes (§5.4).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub root: Option<EntityTopicId>,
    pub parent: Option<EntityTopicId>,
    pub etype: Option<EntityType>,
}

impl Filter {
    /// Builds a filter from raw query values; empty values count as absent.
    pub fn from_query(
        root: Option<&str>,
        parent: Option<&str>,
        etype: Option<&str>,
    ) -> Result<Filter, TwinError> {
        fn present(v: Option<&str>) -> Option<&str> {
            v.filter(|s| !s.is_empty())
        }
        let (root, parent, etype) = (present(root), present(parent), present(etype));
        if root.is_some() && parent.is_some() {
            return Err(TwinError::RootAndParent);
        }
        Ok(Filter {
            root: root.map(str::parse).transpose()?,
            parent: parent.map(str::parse).transpose()?,
            etype: etype
                .map(|t| {
                    EntityType::from_filter(t).ok_or_else(|| TwinError::InvalidEntityType(t.into()))
                })
                .transpose()?,
        })
    }
}

/// Reads: served from the current twin, even with the broker down (§5.1).
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// `GET /te/v1/entities`: array of metadata.
    List(Filter),
    /// `GET /te/v1/state`: array of state documents.
    States(Filter),
    /// `GET …/{id}`: metadata; 404 `Entity with topic id: <id> not found`.
    Entity(EntityTopicId),
    /// `GET …/{id4}/state`: state document; 404 as above.
    State(EntityTopicId),
    /// `GET …/{id4}/twin`.
    Twin(EntityTopicId),
    /// `GET …/{id4}/twin/{key}` (key already validated).
    TwinKey(EntityTopicId, String),
    /// `GET …/{id4}/config`.
    Config(EntityTopicId),
    /// `GET …/{id4}/config/{key}`.
    ConfigKey(EntityTopicId, String),
    /// `GET …/{id4}/m/{type}?since=&series=`: the measurement history (issue #7); 404 as
    /// above for an unknown entity, no series for an unknown type.
    History {
        id: EntityTopicId,
        mtype: String,
        since: Option<Timestamp>,
        series: Option<String>,
    },
}

/// A POSTed registration (§5.5), parsed and structurally valid.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntity {
    pub id: EntityTopicId,
    pub registration: Registration,
}

/// Writes: gated on readiness, answered after the broker acknowledged their publications (§5.1).
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// `POST /te/v1/entities` → 201 `{"@topic-id":…}`.
    Create(NewEntity),
    /// `PATCH …/{id}` → 200 metadata. `None` means "not given".
    Patch {
        id: EntityTopicId,
        parent: Option<EntityTopicId>,
        health: Option<EntityTopicId>,
    },
    /// `DELETE …/{id}` → 200 array of removed metadata, or 204 (`body: None`).
    Delete(EntityTopicId),
    /// `PUT …/{id4}/twin` → 200 echo of the body (keys validated, nulls mean absent).
    TwinReplace(EntityTopicId, Map<String, Value>),
    /// `DELETE …/{id4}/twin` → 204.
    TwinClear(EntityTopicId),
    /// `PUT …/{id4}/twin/{key}` → 200 echo; `null` deletes.
    TwinSet(EntityTopicId, String, Value),
    /// `DELETE …/{id4}/twin/{key}` → 204.
    TwinDelete(EntityTopicId, String),
}

/// A successful reply: the JSON body, or none (204 on the delete routes).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub body: Option<String>,
}

impl Reply {
    pub fn json(body: String) -> Reply {
        Reply { body: Some(body) }
    }
    pub fn empty() -> Reply {
        Reply { body: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_follow_the_listing_rules() {
        assert_eq!(
            Filter::from_query(Some("device/a//"), Some("device/b//"), None).unwrap_err(),
            TwinError::RootAndParent
        );
        assert_eq!(
            Filter::from_query(None, None, Some("main"))
                .unwrap_err()
                .to_string(),
            "Invalid entity type: main"
        );
        assert_eq!(
            Filter::from_query(None, Some("an/invalid/topic/id/"), None)
                .unwrap_err()
                .to_string(),
            "An entity topic identifier has at most 4 segments"
        );
        assert_eq!(
            Filter::from_query(Some(""), Some(""), Some("")).unwrap(),
            Filter::default()
        );
        let f = Filter::from_query(Some("device/c"), None, Some("child-device")).unwrap();
        assert_eq!(f.root.unwrap().as_str(), "device/c//");
        assert_eq!(f.etype, Some(EntityType::ChildDevice));
    }
}
