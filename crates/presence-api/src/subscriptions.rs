//! The subscriptions API (presence-spec.md 7.1): create, list, read, renew, delete and reauthorize
//! presence subscriptions. Decodes requests and renders subscriptions; the engine does the rest.
//!
//! A subscription is visible to, and can be changed by, the application that created it, in its tenant;
//! a delegated subscription only by the same signed-in user. Creating one needs `Presence.Read.All`,
//! delegated as in Graph or, beyond Graph, as an application role.

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use presence_auth::{authorize, Caller, Operation, Target};
use presence_core::Timestamp;
use presence_notify::record::SubscriptionRecord;
use presence_notify::subscription::SubscriptionRequest;
use presence_service::{Renewal, Subscriber};
use serde_json::{json, Map, Value};

use crate::body::json_object;
use crate::error::ApiError;
use crate::route::Endpoint;
use crate::state::AppState;
use crate::wire::{format_instant, odata_json, string_member};

/// Properties of `microsoft.graph.subscription` a create request may carry.
pub(crate) const CREATE_PROPERTIES: [&str; 12] = [
    "@odata.type",
    "changeType",
    "resource",
    "notificationUrl",
    "lifecycleNotificationUrl",
    "expirationDateTime",
    "clientState",
    "includeResourceData",
    "encryptionCertificate",
    "encryptionCertificateId",
    "latestSupportedTlsVersion",
    "notificationQueryOptions",
];

/// Properties a renewal may carry.
const RENEW_PROPERTIES: [&str; 3] = ["@odata.type", "expirationDateTime", "notificationUrl"];

const TLS_VERSIONS: [&str; 4] = ["v1_0", "v1_1", "v1_2", "v1_3"];

/// A subscription request handled from start to end.
pub(crate) async fn handle(
    state: &AppState,
    version: &'static str,
    caller: &Caller,
    endpoint: Endpoint,
    method: &Method,
    content_type: Option<&str>,
    body: &Bytes,
) -> Result<Response, ApiError> {
    authorize(caller, Operation::ReadManyPresences, Target::Many)?;
    let context = |suffix: &str| format!("{}/{version}/$metadata#subscriptions{suffix}", state.public_url());
    let service = state.service();
    match (endpoint, method.as_str()) {
        (Endpoint::Subscriptions, "POST") => {
            let object = json_object(content_type, body, true)?;
            let record = create(state, caller, &object).await?;
            odata_json(StatusCode::CREATED, &subscription_json(&record, Some(context("/$entity"))))
        }
        (Endpoint::Subscriptions, _) => {
            let value: Vec<Value> = service
                .subscriptions_of(&caller.tenant_id, &caller.app_id)
                .iter()
                .filter(|record| visible(record, caller))
                .map(|record| subscription_json(record, None))
                .collect();
            odata_json(StatusCode::OK, &json!({ "@odata.context": context(""), "value": value }))
        }
        (Endpoint::Subscription(id), "GET") => {
            let record = find(state, caller, &id).await?;
            odata_json(StatusCode::OK, &subscription_json(&record, Some(context("/$entity"))))
        }
        (Endpoint::Subscription(id), "PATCH") => {
            let current = find(state, caller, &id).await?;
            let object = json_object(content_type, body, true)?;
            if let Some(other) = object.keys().find(|name| !RENEW_PROPERTIES.contains(&name.as_str())) {
                return Err(ApiError::BadRequest(format!(
                    "The property '{other}' cannot be updated; only expirationDateTime and notificationUrl can."
                )));
            }
            let renewal = Renewal {
                expiration: expiration(&object)?,
                notification_url: string_member(&object, "notificationUrl")?.map(str::to_owned),
            };
            let record = service.renew_subscription(&current.id, renewal).await?;
            odata_json(StatusCode::OK, &subscription_json(&record, Some(context("/$entity"))))
        }
        (Endpoint::Subscription(id), _) => {
            let current = find(state, caller, &id).await?;
            if !service.delete_subscription(&current.id).await? {
                return Err(ApiError::SubscriptionNotFound(id));
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Endpoint::Reauthorize(id), _) => {
            let current = find(state, caller, &id).await?;
            service.reauthorize_subscription(&current.id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(ApiError::MethodNotAllowed("GET, POST")),
    }
}

fn visible(record: &SubscriptionRecord, caller: &Caller) -> bool {
    record.tenant_id == caller.tenant_id
        && record.application_id == caller.app_id
        && (caller.user_id().is_none() || record.user_id.as_deref() == caller.user_id())
}

/// The subscription `id`, if the caller may see it.
async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<SubscriptionRecord, ApiError> {
    state
        .service()
        .subscription(&id.to_ascii_lowercase())
        .await?
        .filter(|record| visible(record, caller))
        .ok_or_else(|| ApiError::SubscriptionNotFound(id.to_owned()))
}

/// Parses `expirationDateTime`: an ISO 8601 date and time, UTC when it has no offset.
fn expiration(object: &Map<String, Value>) -> Result<Option<i64>, ApiError> {
    let Some(text) = string_member(object, "expirationDateTime")? else {
        return Ok(None);
    };
    let invalid = || ApiError::BadRequest(format!("expirationDateTime '{text}' is not a valid date and time."));
    let instant = match text.parse::<jiff::Timestamp>() {
        Ok(instant) => instant,
        Err(_) => jiff::tz::TimeZone::UTC
            .to_timestamp(text.parse::<jiff::civil::DateTime>().map_err(|_| invalid())?)
            .map_err(|_| invalid())?,
    };
    Ok(Some(instant.as_millisecond()))
}

async fn create(
    state: &AppState,
    caller: &Caller,
    object: &Map<String, Value>,
) -> Result<SubscriptionRecord, ApiError> {
    if let Some(unknown) = object.keys().find(|name| !CREATE_PROPERTIES.contains(&name.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "The property '{unknown}' does not exist on type 'microsoft.graph.subscription' or cannot be set."
        )));
    }
    let include_resource_data = match object.get("includeResourceData") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(flag)) => *flag,
        Some(_) => return Err(ApiError::BadRequest("The property 'includeResourceData' must be a boolean.".into())),
    };
    let tls = string_member(object, "latestSupportedTlsVersion")?.unwrap_or("v1_2").to_owned();
    if !TLS_VERSIONS.contains(&tls.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "latestSupportedTlsVersion '{tls}' is not one of {}.",
            TLS_VERSIONS.join(", ")
        )));
    }
    let text = |name| string_member(object, name).map(|text| text.map(str::to_owned));
    let request = SubscriptionRequest {
        change_type: text("changeType")?,
        resource: text("resource")?,
        notification_url: text("notificationUrl")?,
        lifecycle_notification_url: text("lifecycleNotificationUrl")?,
        expiration: expiration(object)?,
        client_state: text("clientState")?,
        include_resource_data,
        encryption_certificate: text("encryptionCertificate")?,
        encryption_certificate_id: text("encryptionCertificateId")?,
    };
    let subscriber = Subscriber {
        tenant_id: caller.tenant_id.clone(),
        application_id: caller.app_id.clone(),
        user_id: caller.user_id().map(str::to_owned),
    };
    let users_exist = async |ids: Vec<String>| {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        state.inner.users.exist(state.service(), &caller.tenant_id, &ids).await
    };
    Ok(state.service().create_subscription(subscriber, &request, tls, users_exist).await?)
}

/// The subscription as Graph returns it.
fn subscription_json(record: &SubscriptionRecord, context: Option<String>) -> Value {
    let mut object = Map::new();
    if let Some(context) = context {
        object.insert("@odata.context".into(), context.into());
    }
    object.insert("id".into(), record.id.clone().into());
    object.insert("resource".into(), record.resource.clone().into());
    object.insert("applicationId".into(), record.application_id.clone().into());
    object.insert("changeType".into(), "updated".into());
    object.insert("clientState".into(), record.client_state.clone().into());
    object.insert("notificationUrl".into(), record.notification_url.clone().into());
    object.insert("notificationQueryOptions".into(), Value::Null);
    object.insert("lifecycleNotificationUrl".into(), record.lifecycle_notification_url.clone().into());
    object.insert("expirationDateTime".into(), format_instant(Timestamp(record.expiration)).into());
    object.insert("creatorId".into(), record.user_id.clone().unwrap_or_else(|| record.application_id.clone()).into());
    object.insert("includeResourceData".into(), record.include_resource_data.into());
    object.insert("latestSupportedTlsVersion".into(), record.latest_supported_tls_version.clone().into());
    object.insert("encryptionCertificate".into(), record.encryption_certificate.clone().into());
    object.insert("encryptionCertificateId".into(), record.encryption_certificate_id.clone().into());
    object.insert("notificationUrlAppId".into(), Value::Null);
    Value::Object(object)
}
