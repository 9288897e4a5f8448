//! The OpenAPI 3.0 document of the surface this server implements, one per version.
//!
//! Built from the same tables the router resolves (the presence routes, [`Action::ALL`]), and checked
//! against the router by `tests/openapi.rs`: every documented operation is served, and every served
//! operation is documented. Served without authentication at `/openapi/v1.0.json` and `/openapi/beta.json`.

use serde_json::{json, Map, Value};

use crate::route::Action;

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
        "description": "The user's object id (a GUID).",
        "schema": { "type": "string" }
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

/// The document for `version` (`v1.0` or `beta`).
pub fn document(version: &str) -> Value {
    let mut paths = Map::new();
    for (base, parameter) in PRESENCE_BASES {
        let base_id = match base {
            "/me/presence" => "me.presence",
            "/users/{user-id}/presence" => "users.presence",
            _ => "communications.presences",
        };
        let get = json!({
            "get": {
                "operationId": format!("{base_id}.get"),
                "summary": "Get presence",
                "parameters": [{
                    "name": "$select", "in": "query", "required": false, "style": "form", "explode": false,
                    "schema": { "type": "array", "uniqueItems": true, "items": { "type": "string", "enum": [
                        "id", "availability", "activity", "statusMessage", "outOfOfficeSettings", "sequenceNumber",
                        "workLocation"] } }
                }],
                "responses": responses("200", ok_json("presence"))
            }
        });
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
            "parameters": [{ "name": "$filter", "in": "query", "required": true, "schema": { "type": "string" },
                             "example": "id in ('7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11')" }],
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
                { "name": "$skiptoken", "in": "query", "required": false, "schema": { "type": "string" } }
            ],
            "responses": responses("200", ok_json("userCollection"))
        } }),
    );
    paths.insert(
        "/me".into(),
        json!({ "get": { "operationId": "me.get", "summary": "Get the signed-in user",
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
                      "requestBody": json_body("subscription", true),
                      "responses": responses("201", ok_json("subscription")) }
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
            "properties": {
                "sessionId": { "type": "string", "description": "The calling application's id." },
                "availability": { "type": "string", "example": "Available" },
                "activity": { "type": "string", "example": "Available" },
                "expirationDuration": { "type": "string", "example": "PT1H",
                    "description": "ISO 8601 duration, PT5M to PT4H; default PT5M." }
            }
        },
        "clearPresenceRequest": {
            "type": "object",
            "required": ["sessionId"],
            "properties": { "sessionId": { "type": "string" } }
        },
        "setUserPreferredPresenceRequest": {
            "type": "object",
            "required": ["availability", "activity"],
            "properties": {
                "availability": { "type": "string", "example": "DoNotDisturb" },
                "activity": { "type": "string", "example": "DoNotDisturb" },
                "expirationDuration": { "type": "string", "example": "PT8H" }
            }
        },
        "setStatusMessageRequest": {
            "type": "object",
            "required": ["statusMessage"],
            "properties": { "statusMessage": { "$ref": "#/components/schemas/presenceStatusMessage" } }
        },
        "setLocationRequest": {
            "type": "object",
            "required": ["workLocationType"],
            "properties": {
                "workLocationType": { "type": "string",
                    "enum": ["unspecified", "office", "remote", "timeOff", "unknownFutureValue"] },
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
        "subscriptionUpdate": {
            "type": "object",
            "properties": {
                "expirationDateTime": { "type": "string", "format": "date-time" },
                "notificationUrl": { "type": "string" }
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
            "properties": { "ids": { "type": "array", "minItems": 1, "maxItems": 650, "items": { "type": "string" } } }
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
                        "properties": {
                            "id": { "type": "string" },
                            "method": { "type": "string", "enum": ["GET", "POST", "PATCH", "PUT", "DELETE"] },
                            "url": { "type": "string" },
                            "headers": { "type": "object", "additionalProperties": { "type": "string" } },
                            "body": {},
                            "dependsOn": { "type": "array", "items": { "type": "string" } }
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
