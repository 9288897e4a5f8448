//! Graph's JSON shapes at the HTTP edge: members of request bodies, the OData response, collections and
//! directory users. The presence resource itself is `presence_notify::resource`, shared with rich
//! notifications.
//!
//! Request bodies are read member by member so that every mistake gets a message naming the member:
//! unknown members are ignored (presence-spec.md 1.4.6), members of the wrong JSON type are refused.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use presence_core::Presence;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ApiError;

pub(crate) use presence_notify::resource::{format_instant, write_json_str, PresenceJson};

/// The content type Graph gives OData JSON payloads.
pub(crate) const ODATA_JSON: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// A string member: absent and `null` are `None`; any other non-string is refused.
pub(crate) fn string_member<'a>(object: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, ApiError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(ApiError::BadRequest(format!("The value of '{name}' must be a string."))),
    }
}

/// An object member: absent and `null` are `None`; any other non-object is refused.
pub(crate) fn object_member<'a>(
    object: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a Map<String, Value>>, ApiError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(_) => Err(ApiError::BadRequest(format!("The value of '{name}' must be an object."))),
    }
}

/// An OData JSON response: `body` with `status`, Graph's content type and `OData-Version: 4.0`.
pub(crate) fn odata_json(status: StatusCode, body: &impl Serialize) -> Result<Response, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(|error| ApiError::Internal(error.to_string()))?;
    Ok(odata_bytes(status, bytes))
}

/// [`odata_json`] of a body already encoded.
pub(crate) fn odata_bytes(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ODATA_JSON));
    response.headers_mut().insert("odata-version", HeaderValue::from_static("4.0"));
    response
}

/// Graph's JSON of `presences` (id and presence), as a caller other than the users sees them, in a
/// collection with `context`: the body of a `getPresencesByUserId` answer. Public for the encoding
/// benchmark (`cargo bench -p presence-api`).
pub fn encode_presences(context: &str, presences: Vec<(&str, Presence)>) -> Vec<u8> {
    let mut collection = PresenceCollection::new(context, presences.len());
    for (id, presence) in presences {
        collection.push(&PresenceJson::known(id, presence, false, None));
    }
    collection.finish()
}

/// A collection of presences, `{"@odata.context": ..., "value": [...]}`, written as it is built
/// ([`PresenceJson::write_json`], the bytes serde_json would write).
pub(crate) struct PresenceCollection {
    body: Vec<u8>,
}

impl PresenceCollection {
    /// About what one presence takes, with a status message: the body is allocated once.
    const PRESENCE_BYTES: usize = 330;

    /// A collection of about `presences` presences (the caller bounds it).
    pub(crate) fn new(context: &str, presences: usize) -> Self {
        let mut body = Vec::with_capacity(context.len() + 32 + presences * Self::PRESENCE_BYTES);
        body.extend_from_slice(b"{\"@odata.context\":");
        write_json_str(&mut body, context);
        body.extend_from_slice(b",\"value\":[");
        PresenceCollection { body }
    }

    pub(crate) fn push(&mut self, presence: &PresenceJson<'_>) {
        // Right after the opening `[` comes the first presence; after any other, a comma.
        if self.body.last() != Some(&b'[') {
            self.body.push(b',');
        }
        presence.write_json(&mut self.body);
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.body.extend_from_slice(b"]}");
        self.body
    }
}

/// A directory user.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserJson<'a> {
    #[serde(rename = "@odata.context")]
    pub(crate) context: String,
    pub(crate) id: &'a str,
    pub(crate) display_name: &'a str,
    pub(crate) user_principal_name: &'a str,
}

/// The presence properties `$select` may name.
pub(crate) const PRESENCE_PROPERTIES: [&str; 7] =
    ["id", "availability", "activity", "statusMessage", "outOfOfficeSettings", "sequenceNumber", "workLocation"];
