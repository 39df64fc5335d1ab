//! The twin's error catalogue (spec/twin.md §5.8): every rejection the store can give, with its
//! exact, stable message. The HTTP status of each variant is chosen in `http::error`, nowhere else;
//! MQTT rejections print the same message on `<root>/errors`.

use crate::topic::{EntityTopicId, TopicIdError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwinError {
    #[error(transparent)]
    InvalidTopicId(#[from] TopicIdError),
    #[error("The provided parameters: root and parent are mutually exclusive. Use either one.")]
    RootAndParent,
    #[error("Invalid entity type: {0}")]
    InvalidEntityType(String),
    #[error("The specified parent \"{0}\" does not exist in the entity store")]
    ParentNotFound(EntityTopicId),
    #[error("Entity: '{0}' can not be its own parent")]
    OwnParent(EntityTopicId),
    #[error("Entity: '{parent}' can not be a parent of '{id}' because it is a service. Only devices can be parents")]
    ServiceParent {
        parent: EntityTopicId,
        id: EntityTopicId,
    },
    #[error("Entity: '{parent}' can not be a parent of '{id}' because '{parent}' is a descendent of '{id}'")]
    DescendantParent {
        parent: EntityTopicId,
        id: EntityTopicId,
    },
    #[error("The parent of main device can not be updated")]
    MainParent,
    #[error("The main device was already registered at topic {0}")]
    MainAlreadyRegistered(EntityTopicId),
    #[error("The main device can not be deregistered")]
    MainNotDeregistrable,
    #[error("The entity: {0} is managed by edge-agent and can not be modified")]
    Managed(EntityTopicId),
    #[error("The specified health endpoint: {0} does not exist in the entity store")]
    HealthNotFound(EntityTopicId),
    #[error("Entity: '{health}' can not be a health endpoint of '{id}' because it is not a service. Only services can be health endpoints")]
    HealthNotService {
        health: EntityTopicId,
        id: EntityTopicId,
    },
    #[error("Invalid twin key: '{0}'. Keys that are empty, containing '/' or starting with '@' are not allowed")]
    InvalidTwinKey(String),
    #[error("Updating the entity type of {0} is not supported")]
    TypeUpdate(EntityTopicId),
    #[error("Updating the external id of {0} is not supported")]
    ExternalIdUpdate(EntityTopicId),
    #[error("Invalid config key: '{0}'. Keys that are empty, containing '/' or starting with '@' are not allowed")]
    InvalidConfigKey(String),
    #[error("Auto registration of the entity with topic id {0} failed as it does not match the default topic scheme: 'device/<device-id>/service/<service-id>'. Try explicit registration instead.")]
    AutoRegistrationScheme(EntityTopicId),
    #[error("Entity with topic id: {0} not found")]
    EntityNotFound(EntityTopicId),
    #[error("The specified entity: {0} does not exist in the entity store")]
    UnknownEntity(EntityTopicId),
    #[error("Entity twin data for entity: {id} with fragment key: {key} not found")]
    TwinKeyNotFound { id: EntityTopicId, key: String },
    #[error("Configuration value for entity: {id} with key: {key} not found")]
    ConfigKeyNotFound { id: EntityTopicId, key: String },
    #[error("An entity with topic id: {0} is already registered")]
    AlreadyRegistered(EntityTopicId),
    #[error("The entity store is full: the limit of {0} entities has been reached")]
    StoreFull(usize),
    #[error("The entity store is not ready: {0}")]
    NotReady(String),
    #[error("The MQTT broker did not acknowledge the update")]
    NotAcknowledged,
    /// More than 10000 items in one section of one entity (§9).
    #[error("Too many {section} for entity {id}: the limit of {limit} has been reached")]
    SectionFull {
        section: &'static str,
        id: EntityTopicId,
        limit: usize,
    },
    /// A payload that breaks its channel's rules (§3), with the parser's reason.
    #[error("{0}")]
    InvalidPayload(String),
    /// A request body that is not JSON (400, §5.5).
    #[error("Failed to parse the request body as JSON: {0}")]
    BodySyntax(String),
    /// A request body of the wrong structure (422, §5.5).
    #[error("Failed to deserialize the JSON body into the target type: {0}")]
    BodyStructure(String),
    /// A body error reported with the parser's message alone (400, §5.6, §5.7).
    #[error("{0}")]
    BadBody(String),
    /// The owner task is gone (shutting down).
    #[error("The entity store is not ready: shutting down")]
    Unavailable,
}
