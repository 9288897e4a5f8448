//! Graph's JSON shapes: reading action parameters, and writing presences and users.
//!
//! Request bodies are read member by member so that every mistake gets a message naming the member:
//! unknown members are ignored (presence-spec.md 1.4.6), members of the wrong JSON type are refused.

use presence_core::{Presence, Timestamp};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The content type Graph gives OData JSON payloads.
pub(crate) const ODATA_JSON: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// A string member: absent and `null` are `None`; any other non-string is refused.
pub(crate) fn string_member<'a>(object: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, ApiError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(ApiError::BadRequest(format!("The parameter '{name}' must be a string."))),
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
        Some(_) => Err(ApiError::BadRequest(format!("The parameter '{name}' must be an object."))),
    }
}

/// An instant as Graph writes a `DateTimeOffset`: UTC with seven fractional digits.
pub(crate) fn format_instant(instant: Timestamp) -> String {
    let millis = instant.as_millis();
    let whole = jiff::Timestamp::from_second(millis.div_euclid(1000)).unwrap_or(jiff::Timestamp::MAX);
    format!("{}.{:07}Z", whole.strftime("%Y-%m-%dT%H:%M:%S"), millis.rem_euclid(1000) * 10_000)
}

/// The version stamp as a fixed-width decimal string, so that string order is numeric order.
pub(crate) fn sequence_text(sequence: u64) -> String {
    SequenceText::new(sequence).as_str().to_owned()
}

/// [`sequence_text`] without an allocation, for encoding many presences.
#[derive(Clone, Copy)]
pub(crate) struct SequenceText([u8; 20]);

impl SequenceText {
    pub(crate) fn new(mut sequence: u64) -> Self {
        let mut digits = [b'0'; 20];
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (sequence % 10) as u8;
            sequence /= 10;
        }
        SequenceText(digits)
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Serialize for SequenceText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PresenceJson<'a> {
    #[serde(rename = "@odata.context", skip_serializing_if = "Option::is_none")]
    pub(crate) context: Option<String>,
    pub(crate) id: &'a str,
    pub(crate) availability: &'static str,
    pub(crate) activity: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status_message: Option<StatusMessageJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) out_of_office_settings: Option<OutOfOfficeJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sequence_number: Option<SequenceText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) work_location: Option<WorkLocationJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusMessageJson {
    message: ItemBodyJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry_date_time: Option<DateTimeTimeZoneJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    published_date_time: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ItemBodyJson {
    content: String,
    content_type: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DateTimeTimeZoneJson {
    date_time: String,
    time_zone: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OutOfOfficeJson {
    message: Option<String>,
    is_out_of_office: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WorkLocationJson {
    work_location_type: &'static str,
    source: &'static str,
    place_id: Option<String>,
}

impl<'a> PresenceJson<'a> {
    /// A known user's presence. `owner_view` shows the status message's times (the caller is the user).
    pub(crate) fn known(id: &'a str, presence: Presence, owner_view: bool, context: Option<String>) -> Self {
        PresenceJson {
            context,
            id,
            availability: presence.availability.as_str(),
            activity: presence.activity.as_str(),
            status_message: presence.status_message.map(|message| StatusMessageJson {
                message: ItemBodyJson { content: message.content, content_type: "text" },
                expiry_date_time: message
                    .expiry
                    .filter(|_| owner_view)
                    .map(|expiry| DateTimeTimeZoneJson { date_time: expiry.date_time, time_zone: expiry.time_zone }),
                published_date_time: owner_view.then(|| format_instant(message.published_at)),
            }),
            out_of_office_settings: Some(OutOfOfficeJson { message: None, is_out_of_office: false }),
            sequence_number: Some(SequenceText::new(presence.sequence_number)),
            work_location: Some(WorkLocationJson {
                work_location_type: presence.work_location.location_type.as_str(),
                source: presence.work_location.source.as_str(),
                place_id: presence.work_location.place_id,
            }),
        }
    }

    /// An id that is not a user of the caller's tenant: `PresenceUnknown`, with the properties every presence
    /// carries at their empty values.
    pub(crate) fn unknown(id: &'a str) -> Self {
        PresenceJson {
            context: None,
            id,
            availability: "PresenceUnknown",
            activity: "PresenceUnknown",
            status_message: None,
            out_of_office_settings: Some(OutOfOfficeJson { message: None, is_out_of_office: false }),
            sequence_number: Some(SequenceText::new(0)),
            work_location: Some(WorkLocationJson { work_location_type: "unspecified", source: "none", place_id: None }),
        }
    }
}

/// Graph's JSON of `presences` (id and presence), as a caller other than the users sees them, in a
/// collection with `context`: the body of a `getPresencesByUserId` answer. Public for the encoding
/// benchmark (`cargo bench -p presence-api`).
pub fn encode_presences(context: &str, presences: Vec<(&str, Presence)>) -> Vec<u8> {
    let value = presences.into_iter().map(|(id, presence)| PresenceJson::known(id, presence, false, None)).collect();
    serde_json::to_vec(&CollectionJson { context: context.to_owned(), value }).unwrap_or_default()
}

/// `{"@odata.context": ..., "value": [...]}`.
#[derive(Serialize)]
pub(crate) struct CollectionJson<T> {
    #[serde(rename = "@odata.context")]
    pub(crate) context: String,
    pub(crate) value: Vec<T>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_have_seven_fraction_digits() {
        assert_eq!(format_instant(Timestamp(0)), "1970-01-01T00:00:00.0000000Z");
        assert_eq!(format_instant(Timestamp(1_788_262_364_012)), "2026-09-01T11:32:44.0120000Z");
    }

    #[test]
    fn sequence_text_sorts_numerically() {
        assert!(sequence_text(9) < sequence_text(10));
        assert!(sequence_text(99_999) < sequence_text(100_000));
        assert_eq!(sequence_text(u64::MAX), u64::MAX.to_string());
        assert_eq!(sequence_text(42), "00000000000000000042");
    }
}
