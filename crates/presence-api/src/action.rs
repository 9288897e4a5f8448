//! From an action's request body to a validated core command.
//!
//! The body is read member by member so that every mistake gets a message naming the member: unknown
//! members are ignored (presence-spec.md 1.4.6), members of the wrong JSON type are refused.

use presence_core::command::{LocationLayer, NewStatusMessage};
use presence_core::{Command, StatusExpiry};
use serde_json::{Map, Value};

use crate::body::json_object;
use crate::error::ApiError;
use crate::route::Action;
use crate::wire::{object_member, string_member};

/// True for the actions that take no parameters (an empty body is fine).
fn takes_no_parameters(action: Action) -> bool {
    matches!(action, Action::ClearUserPreferredPresence | Action::ClearLocation | Action::ClearAutomaticLocation)
}

/// Decodes the body of `action` called by application `caller_app_id` into a validated command.
pub fn decode_action(
    action: Action,
    caller_app_id: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Command, ApiError> {
    let object = json_object(content_type, body, !takes_no_parameters(action))?;
    let text = |name| string_member(&object, name);
    Ok(match action {
        Action::SetPresence => Command::set_presence(
            caller_app_id,
            text("sessionId")?,
            text("availability")?,
            text("activity")?,
            text("expirationDuration")?,
        )?,
        Action::ClearPresence => Command::clear_presence(caller_app_id, text("sessionId")?)?,
        Action::SetUserPreferredPresence => {
            Command::set_preferred(text("availability")?, text("activity")?, text("expirationDuration")?)?
        }
        Action::ClearUserPreferredPresence => Command::ClearPreferred,
        Action::SetStatusMessage => Command::SetStatusMessage(status_message(&object)?),
        Action::SetManualLocation => {
            Command::set_location(LocationLayer::Manual, text("workLocationType")?, text("placeId")?)?
        }
        Action::SetAutomaticLocation => {
            Command::set_location(LocationLayer::Automatic, text("workLocationType")?, text("placeId")?)?
        }
        Action::ClearLocation => Command::ClearLocation,
        Action::ClearAutomaticLocation => Command::ClearAutomaticLocation,
    })
}

/// The `statusMessage` parameter of setStatusMessage; `None` clears the message.
fn status_message(object: &Map<String, Value>) -> Result<Option<NewStatusMessage>, ApiError> {
    if !object.contains_key("statusMessage") {
        return Err(ApiError::BadRequest("The parameter 'statusMessage' is required.".into()));
    }
    let Some(status) = object_member(object, "statusMessage")? else {
        return Ok(None);
    };
    if !status.contains_key("message") {
        return Err(ApiError::BadRequest(
            "The parameter 'statusMessage.message' is required; send null to clear.".into(),
        ));
    }
    // Every member is checked, also when the message is null (a clear): a malformed request is refused.
    let message = object_member(status, "message")?;
    let expiry = match object_member(status, "expiryDateTime")? {
        None => None,
        Some(expiry) => {
            let date_time = string_member(expiry, "dateTime")?
                .ok_or_else(|| ApiError::BadRequest("The parameter 'expiryDateTime.dateTime' is required.".into()))?;
            let time_zone = string_member(expiry, "timeZone")?.unwrap_or("UTC");
            let at = crate::timezone::resolve(date_time, time_zone).map_err(ApiError::BadRequest)?;
            Some(StatusExpiry { at, date_time: date_time.to_owned(), time_zone: time_zone.to_owned() })
        }
    };
    let Some(message) = message else {
        return Ok(None);
    };
    match string_member(message, "contentType")? {
        None => {}
        Some(kind) if kind.eq_ignore_ascii_case("text") => {}
        Some(kind) if kind.eq_ignore_ascii_case("html") => {
            return Err(ApiError::BadRequest(
                "Only text status messages are supported: contentType must be 'text'.".into(),
            ))
        }
        Some(kind) => return Err(ApiError::BadRequest(format!("'{kind}' is not a valid contentType value."))),
    }
    let content = string_member(message, "content")?.unwrap_or_default().to_owned();
    Ok(Some(NewStatusMessage { content, expiry }))
}
