//! The OpenAPI 3.0 document of the surface this server implements, one per version.
//!
//! Built from the same tables the router resolves (the presence routes, [`Action::ALL`], the value
//! vocabularies and pairs of `presence-core`), and checked against the router by `tests/openapi.rs`:
//! every documented operation is served, and every served operation is documented.
//!
//! The schemas declare what the server enforces, so that a request the schema allows is accepted and one
//! it forbids is refused (schemathesis checks both, `scripts/api-fuzz.sh`): user ids are GUIDs, `$filter`
//! has its one grammar, values match ignoring case as the server matches them, and only the action pairs
//! the server accepts are allowed. Rules a schema cannot state are written in the descriptions: the
//! `sessionId` is the caller's application id, durations and expiry instants have ranges, time zones must
//! exist, subscription URLs must answer the validation handshake, `/me` needs a delegated token, and a
//! batch's `dependsOn` names earlier requests. Served without authentication at `/openapi/v1.0.json` and
//! `/openapi/beta.json`.

use presence_core::values::{Activity, Availability, WorkLocationType, PREFERRED_PRESENCE_PAIRS, SET_PRESENCE_PAIRS};
use serde_json::{json, Map, Value};

use crate::route::Action;

/// A user object id: a GUID in its hyphenated form, either case.
const GUID: &str = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";

/// The characters the server trims as whitespace (Rust's `char::is_whitespace`), as a regex class.
const SPACE: &str = "[\\t\\n\\u000B\\f\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]";

/// An example user: Adele of the demo tenant.
const EXAMPLE_USER: &str = "7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11";

/// A regex matching `text` in any ASCII case, as the server's vocabularies match.
fn caseless(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
            } else {
                regex_escape(c)
            }
        })
        .collect()
}

fn regex_escape(c: char) -> String {
    if "\\^$.|?*+()[]{}/-".contains(c) {
        format!("\\{c}")
    } else {
        c.to_string()
    }
}

/// A string schema matching exactly one of `values`, ignoring ASCII case.
fn caseless_one_of(values: &[&str]) -> Value {
    let alternatives: Vec<String> = values.iter().map(|value| caseless(value)).collect();
    json!({ "type": "string", "pattern": format!("^(?:{})$", alternatives.join("|")), "example": values[0] })
}

/// `anyOf` the allowed (availability, activity) pairs of an action, values matched ignoring case.
fn pairs(allowed: &[(Availability, Activity)]) -> Value {
    let branches: Vec<Value> = allowed
        .iter()
        .map(|(availability, activity)| {
            json!({ "properties": {
                "availability": caseless_one_of(&[availability.as_str()]),
                "activity": caseless_one_of(&[activity.as_str()]),
            } })
        })
        .collect();
    Value::Array(branches)
}

fn guid_schema() -> Value {
    json!({ "type": "string", "pattern": format!("^{GUID}$"), "example": EXAMPLE_USER })
}

/// A `$select` item: a presence property, ignoring case and surrounding whitespace.
fn select_item() -> Value {
    let names: Vec<String> = crate::wire::PRESENCE_PROPERTIES.iter().map(|name| caseless(name)).collect();
    json!({ "type": "string", "pattern": format!("^{SPACE}*(?:{}){SPACE}*$", names.join("|")), "example": "availability" })
}

/// `$filter=id in ('id1','id2',...)` with 1 to 650 GUIDs, as the server parses it.
fn id_filter_pattern() -> String {
    let item = format!("{SPACE}*'{GUID}'{SPACE}*");
    format!("^{SPACE}*{}{SPACE}*{}{SPACE}*\\({item}(?:,{item}){{0,649}}\\){SPACE}*$", caseless("id"), caseless("in"))
}

/// The three ways a presence is addressed, with their path parameter.
const PRESENCE_BASES: [(&str, Option<&str>); 3] = [
    ("/me/presence", None),
    ("/users/{user-id}/presence", Some("user-id")),
    ("/communications/presences/{presence-id}", Some("presence-id")),
];

/// Every status an operation can answer besides its success: Graph's error envelope for each.
const ERROR_STATUSES: [&str; 9] = ["400", "401", "403", "404", "405", "408", "413", "429", "500"];

/// The responses of an operation: its success, then each error status.
fn responses(success: &str, body: Value) -> Value {
    let mut responses = Map::new();
    responses.insert(success.to_owned(), body);
    for status in ERROR_STATUSES {
        responses.insert(status.to_owned(), json!({ "$ref": "#/components/responses/error" }));
    }
    Value::Object(responses)
}

fn path_parameter(name: &str) -> Value {
    json!({
        "name": name, "in": "path", "required": true,
        "description": "The user's object id (a GUID); a userPrincipalName is refused.",
        "schema": guid_schema()
    })
}

fn json_body(schema: &str, required: bool) -> Value {
    json!({
        "required": required,
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
    })
}

fn ok_json(schema: &str) -> Value {
    json!({
        "description": "Success",
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
    })
}

fn action_operation(action: Action, base_id: &str) -> Value {
    let (body, required): (Option<&str>, bool) = match action {
        Action::SetPresence => (Some("setPresenceRequest"), true),
        Action::ClearPresence => (Some("clearPresenceRequest"), true),
        Action::SetUserPreferredPresence => (Some("setUserPreferredPresenceRequest"), true),
        Action::ClearUserPreferredPresence | Action::ClearLocation | Action::ClearAutomaticLocation => {
            (Some("emptyRequest"), false)
        }
        Action::SetStatusMessage => (Some("setStatusMessageRequest"), true),
        Action::SetManualLocation | Action::SetAutomaticLocation => (Some("setLocationRequest"), true),
    };
    let success = if action.is_location() { "204" } else { "200" };
    let mut operation = json!({
        "operationId": format!("{base_id}.{}", action.name()),
        "summary": format!("Invoke action {}", action.name()),
        "responses": responses(success, json!({ "description": "Success" })),
    });
    if base_id == "me.presence" {
        operation["description"] = ME_DESCRIPTION.into();
    }
    if let Some(body) = body {
        operation["requestBody"] = json_body(body, required);
    }
    operation
}

fn with_parameter(mut item: Value, parameter: Option<&str>) -> Value {
    if let Some(parameter) = parameter {
        item["parameters"] = json!([path_parameter(parameter)]);
    }
    item
}

/// The answer to a creation, with links to the operations on the created subscription (so that a client,
/// or a fuzzer's stateful phase, can follow them).
fn created_subscription() -> Value {
    let mut created = ok_json("subscription");
    let id = json!({ "subscription-id": "$response.body#/id" });
    created["links"] = json!({
        "GetSubscription": { "operationId": "subscriptions.get", "parameters": id },
        "UpdateSubscription": { "operationId": "subscriptions.update", "parameters": id },
        "DeleteSubscription": { "operationId": "subscriptions.delete", "parameters": id },
        "ReauthorizeSubscription": { "operationId": "subscriptions.reauthorize", "parameters": id },
    });
    created
}

/// What `/me` paths need.
const ME_DESCRIPTION: &str = "Needs a delegated (user) token: an application token gets 400.";

/// The document for `version` (`v1.0` or `beta`).
pub fn document(version: &str) -> Value {
    let mut paths = Map::new();
    for (base, parameter) in PRESENCE_BASES {
        let base_id = match base {
            "/me/presence" => "me.presence",
            "/users/{user-id}/presence" => "users.presence",
            _ => "communications.presences",
        };
        let mut get = json!({
            "get": {
                "operationId": format!("{base_id}.get"),
                "summary": "Get presence",
                "parameters": [{
                    "name": "$select", "in": "query", "required": false, "style": "form", "explode": false,
                    "description": "Properties to return, matched ignoring case.",
                    "schema": { "type": "array", "minItems": 1, "items": select_item() }
                }],
                "responses": responses("200", ok_json("presence"))
            }
        });
        if base_id == "me.presence" {
            get["get"]["description"] = ME_DESCRIPTION.into();
        }
        paths.insert(base.to_owned(), with_parameter(get, parameter));
        for action in Action::ALL {
            let item = json!({ "post": action_operation(action, base_id) });
            paths.insert(format!("{base}/{}", action.name()), with_parameter(item, parameter));
        }
    }
    paths.insert(
        "/communications/getPresencesByUserId".into(),
        json!({ "post": {
            "operationId": "communications.getPresencesByUserId",
            "summary": "Get the presence of up to 650 users",
            "requestBody": json_body("getPresencesByUserIdRequest", true),
            "responses": responses("200", ok_json("presenceCollection"))
        } }),
    );
    paths.insert(
        "/communications/presences".into(),
        json!({ "get": {
            "operationId": "communications.presences.list",
            "summary": "Get the presence of the users named by $filter=id in ('id1','id2')",
            "parameters": [{ "name": "$filter", "in": "query", "required": true,
                             "description": "id in ('id1','id2',...): 1 to 650 user object ids.",
                             "schema": { "type": "string", "pattern": id_filter_pattern() },
                             "example": format!("id in ('{EXAMPLE_USER}')") }],
            "responses": responses("200", ok_json("presenceCollection"))
        } }),
    );
    paths.insert(
        "/users/{user-id}".into(),
        json!({ "parameters": [{ "name": "user-id", "in": "path", "required": true,
                                 "description": "Object id or userPrincipalName.", "schema": { "type": "string" } }],
                "get": { "operationId": "users.get", "summary": "Get a user",
                         "responses": responses("200", ok_json("user")) } }),
    );
    paths.insert(
        "/users".into(),
        json!({ "get": {
            "operationId": "users.list",
            "summary": "List the users of the caller's tenant, a page at a time",
            "parameters": [
                { "name": "$top", "in": "query", "required": false,
                  "schema": { "type": "integer", "minimum": 1, "maximum": 999 } },
                { "name": "$skiptoken", "in": "query", "required": false,
                  "description": "The offset a previous page's @odata.nextLink gave.",
                  "schema": { "type": "string", "pattern": "^[0-9]{1,19}$" } }
            ],
            "responses": responses("200", ok_json("userCollection"))
        } }),
    );
    paths.insert(
        "/me".into(),
        json!({ "get": { "operationId": "me.get", "summary": "Get the signed-in user", "description": ME_DESCRIPTION,
                         "responses": responses("200", ok_json("user")) } }),
    );
    paths.insert(
        "/$batch".into(),
        json!({ "post": {
            "operationId": "batch", "summary": "JSON batching (at most 20 requests)",
            "requestBody": json_body("batchRequest", true),
            "responses": responses("200", ok_json("batchResponse"))
        } }),
    );
    let subscription_id = json!([{ "name": "subscription-id", "in": "path", "required": true,
                                    "description": "The subscription's id.", "schema": { "type": "string" } }]);
    paths.insert(
        "/subscriptions".into(),
        json!({
            "get": { "operationId": "subscriptions.list", "summary": "List the caller's subscriptions",
                     "responses": responses("200", ok_json("subscriptionCollection")) },
            "post": { "operationId": "subscriptions.create",
                      "summary": "Subscribe to presence changes (runs the validation handshake on the URLs)",
                      "requestBody": json_body("subscriptionCreate", true),
                      "responses": responses("201", created_subscription()) }
        }),
    );
    paths.insert(
        "/subscriptions/{subscription-id}".into(),
        json!({
            "parameters": subscription_id,
            "get": { "operationId": "subscriptions.get", "summary": "Get a subscription",
                     "responses": responses("200", ok_json("subscription")) },
            "patch": { "operationId": "subscriptions.update",
                       "summary": "Renew a subscription (expirationDateTime) or move it (notificationUrl)",
                       "requestBody": json_body("subscriptionUpdate", true),
                       "responses": responses("200", ok_json("subscription")) },
            "delete": { "operationId": "subscriptions.delete", "summary": "Delete a subscription",
                        "responses": responses("204", json!({ "description": "Deleted" })) }
        }),
    );
    paths.insert(
        "/subscriptions/{subscription-id}/reauthorize".into(),
        json!({
            "parameters": subscription_id,
            "post": { "operationId": "subscriptions.reauthorize", "summary": "Reauthorize a subscription",
                      "responses": responses("204", json!({ "description": "Reauthorized" })) }
        }),
    );

    json!({
        "openapi": "3.0.3",
        "info": {
            "title": format!("presenced: Microsoft Graph presence API ({version})"),
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The part of Microsoft Graph that presenced implements. Errors are Graph's error envelope."
        },
        "servers": [{ "url": format!("/{version}") }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "responses": {
                "error": {
                    "description": "Graph's error envelope",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ODataError" } } }
                }
            },
            "schemas": schemas(),
        }
    })
}

fn schemas() -> Value {
    let nullable_string = json!({ "type": "string", "nullable": true });
    json!({
        "presence": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "@odata.context": { "type": "string" },
                "id": { "type": "string" },
                "availability": { "type": "string", "nullable": true },
                "activity": { "type": "string", "nullable": true },
                "statusMessage": { "$ref": "#/components/schemas/presenceStatusMessage" },
                "outOfOfficeSettings": { "$ref": "#/components/schemas/outOfOfficeSettings" },
                "sequenceNumber": { "type": "string", "nullable": true },
                "workLocation": { "$ref": "#/components/schemas/userWorkLocation" }
            }
        },
        "presenceStatusMessage": {
            "type": "object",
            "properties": {
                "message": { "$ref": "#/components/schemas/itemBody" },
                "expiryDateTime": { "$ref": "#/components/schemas/dateTimeTimeZone" },
                "publishedDateTime": { "type": "string", "format": "date-time", "nullable": true }
            }
        },
        "itemBody": {
            "type": "object",
            "properties": {
                "content": nullable_string,
                "contentType": { "type": "string", "enum": ["text", "html"], "nullable": true }
            }
        },
        "dateTimeTimeZone": {
            "type": "object",
            "required": ["dateTime"],
            "properties": { "dateTime": { "type": "string" }, "timeZone": nullable_string }
        },
        "outOfOfficeSettings": {
            "type": "object",
            "properties": { "isOutOfOffice": { "type": "boolean", "nullable": true }, "message": nullable_string }
        },
        "userWorkLocation": {
            "type": "object",
            "properties": {
                "workLocationType": { "type": "string",
                    "enum": ["unspecified", "office", "remote", "timeOff", "unknownFutureValue"] },
                "source": { "type": "string", "enum": ["none", "manual", "scheduled", "automatic", "unknownFutureValue"] },
                "placeId": nullable_string
            }
        },
        "presenceCollection": {
            "type": "object",
            "required": ["value"],
            "properties": {
                "@odata.context": { "type": "string" },
                "value": { "type": "array", "items": { "$ref": "#/components/schemas/presence" } }
            }
        },
        "userCollection": {
            "type": "object",
            "required": ["value"],
            "properties": {
                "@odata.context": { "type": "string" },
                "@odata.nextLink": { "type": "string" },
                "value": { "type": "array", "items": { "$ref": "#/components/schemas/user" } }
            }
        },
        "user": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "@odata.context": { "type": "string" },
                "id": { "type": "string" },
                "displayName": nullable_string,
                "userPrincipalName": nullable_string
            }
        },
        "setPresenceRequest": {
            "type": "object",
            "required": ["sessionId", "availability", "activity"],
            "description": "availability and activity: one of the pairs setPresence accepts, ignoring case.",
            "properties": {
                "sessionId": { "type": "string", "example": "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11",
                    "description": "The calling application's id (the token's appid); another id gets 400." },
                "availability": { "type": "string", "example": "Available" },
                "activity": { "type": "string", "example": "Available" },
                "expirationDuration": { "type": "string", "nullable": true, "example": "PT1H",
                    "description": "ISO 8601 duration, PT5M to PT4H; default PT5M." }
            },
            "anyOf": pairs(SET_PRESENCE_PAIRS)
        },
        "clearPresenceRequest": {
            "type": "object",
            "required": ["sessionId"],
            "properties": { "sessionId": { "type": "string", "example": "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11",
                "description": "The calling application's id (the token's appid); another id gets 400." } }
        },
        "setUserPreferredPresenceRequest": {
            "type": "object",
            "required": ["availability", "activity"],
            "description": "availability and activity: one of the pairs setUserPreferredPresence accepts, ignoring case.",
            "properties": {
                "availability": { "type": "string", "example": "DoNotDisturb" },
                "activity": { "type": "string", "example": "DoNotDisturb" },
                "expirationDuration": { "type": "string", "nullable": true, "example": "PT8H",
                    "description": "ISO 8601 duration in days, hours, minutes and seconds, up to about 100 years." }
            },
            "anyOf": pairs(PREFERRED_PRESENCE_PAIRS)
        },
        "setStatusMessageRequest": {
            "type": "object",
            "required": ["statusMessage"],
            "properties": { "statusMessage": {
                "type": "object", "nullable": true, "required": ["message"],
                "description": "null, or a message of null, clears the status message.",
                "properties": {
                    "message": {
                        "type": "object", "nullable": true,
                        "properties": {
                            "content": nullable_string.clone(),
                            "contentType": { "type": "string", "nullable": true, "pattern": format!("^{}$", caseless("text")),
                                             "description": "Only text messages are supported." }
                        }
                    },
                    "expiryDateTime": {
                        "type": "object", "nullable": true, "required": ["dateTime"],
                        "properties": {
                            "dateTime": { "type": "string", "example": "2026-09-01T17:00:00",
                                          "description": "A date and time without offset, such as 2026-09-01T17:00:00." },
                            "timeZone": { "type": "string", "nullable": true, "example": "UTC",
                                          "description": "A Windows or IANA time zone name; default UTC." }
                        }
                    }
                }
            } }
        },
        "setLocationRequest": {
            "type": "object",
            "required": ["workLocationType"],
            "properties": {
                "workLocationType": caseless_one_of(&WorkLocationType::ALL.iter().map(|kind| kind.as_str()).collect::<Vec<_>>()),
                "placeId": nullable_string
            }
        },
        "emptyRequest": { "type": "object" },
        "subscription": {
            "type": "object",
            "properties": {
                "@odata.context": { "type": "string" },
                "id": { "type": "string" },
                "changeType": { "type": "string", "example": "updated" },
                "resource": { "type": "string",
                              "example": "communications/presences/7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11" },
                "applicationId": nullable_string,
                "notificationUrl": { "type": "string" },
                "lifecycleNotificationUrl": nullable_string,
                "notificationQueryOptions": nullable_string,
                "notificationUrlAppId": nullable_string,
                "expirationDateTime": { "type": "string", "format": "date-time" },
                "clientState": nullable_string,
                "creatorId": nullable_string,
                "includeResourceData": { "type": "boolean", "nullable": true },
                "encryptionCertificate": nullable_string,
                "encryptionCertificateId": nullable_string,
                "latestSupportedTlsVersion": nullable_string
            }
        },
        "subscriptionCreate": {
            "type": "object",
            "additionalProperties": false,
            "required": ["changeType", "resource", "notificationUrl", "expirationDateTime"],
            "properties": {
                "@odata.type": {},
                "changeType": { "type": "string", "example": "updated",
                                "pattern": format!("^{SPACE}*updated{SPACE}*(?:,{SPACE}*updated{SPACE}*)*$") },
                "resource": { "type": "string",
                    "example": "communications/presences/7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11",
                    "description": "communications/presences/{id} or communications/presences?$filter=id in ('id1',...) with 1 to 650 user object ids of the caller's tenant." },
                "notificationUrl": { "type": "string", "example": "https://hooks.example.org/presence",
                    "description": "An https URL on a public address that answers the validation handshake within 10 seconds." },
                "lifecycleNotificationUrl": { "type": "string", "nullable": true,
                    "description": "As notificationUrl, for lifecycle events." },
                "expirationDateTime": { "type": "string", "format": "date-time",
                    "description": "In the future, and at most 60 minutes away (subscription_max_lifetime_minutes)." },
                "clientState": { "type": "string", "nullable": true, "maxLength": 128 },
                "includeResourceData": { "type": "boolean", "nullable": true },
                "encryptionCertificate": { "type": "string", "nullable": true,
                    "description": "Base64 DER X.509 certificate with an RSA key of 2048 bits or more; required with includeResourceData." },
                "encryptionCertificateId": { "type": "string", "nullable": true,
                    "description": "Required (non-empty) with includeResourceData." },
                "latestSupportedTlsVersion": { "type": "string", "nullable": true, "enum": ["v1_0", "v1_1", "v1_2", "v1_3", null] },
                "notificationQueryOptions": {}
            }
        },
        "subscriptionUpdate": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "@odata.type": {},
                "expirationDateTime": { "type": "string", "nullable": true, "format": "date-time",
                    "description": "In the future, and at most 60 minutes away." },
                "notificationUrl": { "type": "string", "nullable": true,
                    "description": "An https URL on a public address that answers the validation handshake." }
            }
        },
        "subscriptionCollection": {
            "type": "object",
            "required": ["value"],
            "properties": {
                "@odata.context": { "type": "string" },
                "value": { "type": "array", "items": { "$ref": "#/components/schemas/subscription" } }
            }
        },
        "getPresencesByUserIdRequest": {
            "type": "object",
            "required": ["ids"],
            "properties": { "ids": { "type": "array", "minItems": 1, "maxItems": 650, "items": guid_schema() } }
        },
        "batchRequest": {
            "type": "object",
            "required": ["requests"],
            "properties": {
                "requests": {
                    "type": "array", "minItems": 1, "maxItems": 20,
                    "items": {
                        "type": "object",
                        "required": ["id", "method", "url"],
                        "description": "Ids are unique ignoring case; a request with a body names its Content-Type.",
                        "properties": {
                            "id": { "type": "string", "minLength": 1 },
                            "method": caseless_one_of(&["GET", "POST", "PATCH", "PUT", "DELETE"]),
                            "url": { "type": "string", "minLength": 1 },
                            "headers": { "type": "object", "nullable": true, "additionalProperties": { "type": "string" } },
                            "body": {},
                            "dependsOn": { "type": "array", "nullable": true, "items": { "type": "string" },
                                           "description": "Ids of other requests of the batch, without a cycle." }
                        }
                    }
                }
            }
        },
        "batchResponse": {
            "type": "object",
            "required": ["responses"],
            "properties": {
                "responses": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "status"],
                        "properties": {
                            "id": { "type": "string" },
                            "status": { "type": "integer" },
                            "headers": { "type": "object", "additionalProperties": { "type": "string" } },
                            "body": {}
                        }
                    }
                }
            }
        },
        "ODataError": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": { "type": "string" },
                        "message": { "type": "string" },
                        "innerError": {
                            "type": "object",
                            "required": ["date", "request-id", "client-request-id"],
                            "properties": {
                                "date": { "type": "string" },
                                "request-id": { "type": "string" },
                                "client-request-id": { "type": "string" }
                            }
                        }
                    }
                }
            }
        }
    })
}
