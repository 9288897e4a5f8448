//! Graph's JSON of a presence resource: the body of a presence read, and the resource data of a rich
//! notification. One definition serves both edges (the HTTP API and the webhooks), so they cannot differ.
//!
//! Instants are written as Graph writes a `DateTimeOffset` (UTC, seven fractional digits) and sequence
//! numbers as fixed-width decimal strings (so that string order is numeric order).

use presence_core::{Presence, Timestamp};
use serde::Serialize;

/// An instant as Graph writes a `DateTimeOffset`: UTC with seven fractional digits.
pub fn format_instant(instant: Timestamp) -> String {
    let millis = instant.as_millis();
    let whole = jiff::Timestamp::from_second(millis.div_euclid(1000)).unwrap_or(jiff::Timestamp::MAX);
    format!("{}.{:07}Z", whole.strftime("%Y-%m-%dT%H:%M:%S"), millis.rem_euclid(1000) * 10_000)
}

/// The version stamp as a fixed-width decimal string, so that string order is numeric order.
pub fn sequence_text(sequence: u64) -> String {
    SequenceText::new(sequence).as_str().to_owned()
}

/// A sequence number as its fixed-width text, without an allocation (for encoding many presences).
#[derive(Clone, Copy)]
pub struct SequenceText([u8; 20]);

impl SequenceText {
    /// The text of `sequence`.
    pub fn new(mut sequence: u64) -> Self {
        let mut digits = [b'0'; 20];
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (sequence % 10) as u8;
            sequence /= 10;
        }
        SequenceText(digits)
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Serialize for SequenceText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// `microsoft.graph.presence`, as Graph writes it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceJson<'a> {
    #[serde(rename = "@odata.context", skip_serializing_if = "Option::is_none")]
    /// `@odata.context`, on a read of one presence.
    pub context: Option<String>,
    /// The user's object id.
    pub id: &'a str,
    /// `availability`.
    pub availability: &'static str,
    /// `activity`.
    pub activity: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// `statusMessage`.
    pub status_message: Option<StatusMessageJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// `outOfOfficeSettings` (always present, never out of office).
    pub out_of_office_settings: Option<OutOfOfficeJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// `sequenceNumber`.
    pub sequence_number: Option<SequenceText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// `workLocation`.
    pub work_location: Option<WorkLocationJson>,
}

/// `presenceStatusMessage`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusMessageJson {
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

/// `outOfOfficeSettings`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutOfOfficeJson {
    message: Option<String>,
    is_out_of_office: bool,
}

/// `userWorkLocation`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkLocationJson {
    work_location_type: &'static str,
    source: &'static str,
    place_id: Option<String>,
}

impl<'a> PresenceJson<'a> {
    /// A known user's presence. `owner_view` shows the status message's times (the caller is the user).
    pub fn known(id: &'a str, presence: Presence, owner_view: bool, context: Option<String>) -> Self {
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
    pub fn unknown(id: &'a str) -> Self {
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

/// Appends `text` as a JSON string, escaped exactly as `serde_json` escapes it: most strings (ids, names,
/// the enumerations) need no escape and are copied as they are.
pub fn write_json_str(out: &mut Vec<u8>, text: &str) {
    if text.bytes().any(|byte| byte < 0x20 || byte == b'"' || byte == b'\\') {
        // Writing into a Vec cannot fail, nor can encoding a str.
        let _ = serde_json::to_writer(&mut *out, text);
    } else {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// Appends `"key":` and `text` as a JSON string (`key` is one of this module's property names, which need
/// no escape).
fn write_member(out: &mut Vec<u8>, key: &str, text: &str) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    write_json_str(out, text);
}

fn write_optional_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => write_json_str(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

impl PresenceJson<'_> {
    /// Appends this presence's JSON to `out`: the bytes `serde_json::to_vec` writes for it, without its
    /// generic serialiser (a getPresencesByUserId answer encodes 650 of them). The fixed parts are written
    /// as they stand in the output.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        if let Some(context) = &self.context {
            write_member(out, "@odata.context", context);
            out.push(b',');
        }
        write_member(out, "id", self.id);
        out.push(b',');
        write_member(out, "availability", self.availability);
        out.push(b',');
        write_member(out, "activity", self.activity);
        if let Some(message) = &self.status_message {
            out.extend_from_slice(b",\"statusMessage\":{\"message\":{");
            write_member(out, "content", &message.message.content);
            out.push(b',');
            write_member(out, "contentType", message.message.content_type);
            out.push(b'}');
            if let Some(expiry) = &message.expiry_date_time {
                out.extend_from_slice(b",\"expiryDateTime\":{");
                write_member(out, "dateTime", &expiry.date_time);
                out.push(b',');
                write_member(out, "timeZone", &expiry.time_zone);
                out.push(b'}');
            }
            if let Some(published) = &message.published_date_time {
                out.push(b',');
                write_member(out, "publishedDateTime", published);
            }
            out.push(b'}');
        }
        if let Some(settings) = &self.out_of_office_settings {
            out.extend_from_slice(b",\"outOfOfficeSettings\":{\"message\":");
            write_optional_str(out, settings.message.as_deref());
            out.extend_from_slice(if settings.is_out_of_office {
                b",\"isOutOfOffice\":true}"
            } else {
                b",\"isOutOfOffice\":false}"
            });
        }
        if let Some(sequence) = &self.sequence_number {
            // Digits only: nothing to check or escape.
            out.extend_from_slice(b",\"sequenceNumber\":\"");
            out.extend_from_slice(&sequence.0);
            out.push(b'"');
        }
        if let Some(location) = &self.work_location {
            out.extend_from_slice(b",\"workLocation\":{");
            write_member(out, "workLocationType", location.work_location_type);
            out.push(b',');
            write_member(out, "source", location.source);
            out.extend_from_slice(b",\"placeId\":");
            write_optional_str(out, location.place_id.as_deref());
            out.push(b'}');
        }
        out.push(b'}');
    }
}

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

    fn presence(message: Option<&str>, expiry: bool, place: Option<&str>) -> Presence {
        use presence_core::{Activity, Availability, StatusExpiry, StatusMessageView, WorkLocationSource};
        use presence_core::{WorkLocationType, WorkLocationView};
        Presence {
            availability: Availability::Busy,
            activity: Activity::InACall,
            status_message: message.map(|content| StatusMessageView {
                content: content.to_owned(),
                published_at: Timestamp(1_788_262_364_012),
                expiry: expiry.then(|| StatusExpiry {
                    at: Timestamp(1_788_270_000_000),
                    date_time: "2026-09-01T13:40:00.0000000".into(),
                    time_zone: "W. Europe \"Standard\" Time".into(),
                }),
            }),
            work_location: WorkLocationView {
                location_type: WorkLocationType::Office,
                source: WorkLocationSource::Manual,
                place_id: place.map(str::to_owned),
            },
            sequence_number: 1_234,
        }
    }

    #[test]
    fn the_direct_encoding_is_the_bytes_serde_json_writes() {
        let messages = [None, Some("In a call"), Some("Quote \" slash \\ line\nend \u{1} tab\t é 😀 \u{7f}"), Some("")];
        // Each character that needs an escape also alone, as the fast path checks each.
        let alone = [Some("line\nbreak"), Some("bell \u{7}"), Some("a\\b"), Some("é 😀 \u{7f}")];
        let messages: Vec<Option<&str>> = messages.into_iter().chain(alone).collect();
        let places = [None, Some("building-1"), Some("a\"b")];
        let mut seen = 0;
        for message in messages {
            for expiry in [false, true] {
                for place in places {
                    for owner_view in [false, true] {
                        for context in [None, Some("https://x/v1.0/$metadata#users('a')/presence".to_owned())] {
                            let json = PresenceJson::known(
                                "7d3b5e0a-2c61-4f3e",
                                presence(message, expiry, place),
                                owner_view,
                                context,
                            );
                            let mut direct = Vec::new();
                            json.write_json(&mut direct);
                            assert_eq!(String::from_utf8(direct).unwrap(), serde_json::to_string(&json).unwrap());
                            seen += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(seen, 8 * 2 * 3 * 2 * 2);
        let unknown = PresenceJson::unknown("not \"a\" guid");
        let mut direct = Vec::new();
        unknown.write_json(&mut direct);
        assert_eq!(String::from_utf8(direct).unwrap(), serde_json::to_string(&unknown).unwrap());
    }
}
