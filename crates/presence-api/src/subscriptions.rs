//! The subscriptions API (presence-spec.md 7.1): create, list, read, renew, delete and reauthorize
//! presence subscriptions.
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
use presence_notify::subscription::{check_expiration, SubscriptionError, SubscriptionRequest};
use presence_notify::target::check_url;
use serde_json::{json, Map, Value};

use crate::action::json_object;
use crate::error::ApiError;
use crate::notify::Active;
use crate::route::Endpoint;
use crate::wire::{format_instant, ODATA_JSON};
use crate::AppState;

/// Properties of `microsoft.graph.subscription` a create request may carry.
const CREATE_PROPERTIES: [&str; 12] = [
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
    match (endpoint, method.as_str()) {
        (Endpoint::Subscriptions, "POST") => {
            let object = json_object(content_type, body, true)?;
            let record = create(state, caller, &object).await?;
            Ok((StatusCode::CREATED, odata(subscription_json(&record, Some(context("/$entity"))))).into_response())
        }
        (Endpoint::Subscriptions, _) => {
            let value: Vec<Value> = state
                .inner
                .notifier
                .subscriptions_of(&caller.tenant_id, &caller.app_id)
                .iter()
                .filter(|active| visible(&active.record, caller))
                .map(|active| subscription_json(&active.record, None))
                .collect();
            Ok(odata(json!({ "@odata.context": context(""), "value": value })).into_response())
        }
        (Endpoint::Subscription(id), "GET") => {
            let active = find(state, caller, &id)?;
            Ok(odata(subscription_json(&active.record, Some(context("/$entity")))).into_response())
        }
        (Endpoint::Subscription(id), "PATCH") => {
            let active = find(state, caller, &id)?;
            let object = json_object(content_type, body, true)?;
            let record = renew(state, &active.record, &object).await?;
            Ok(odata(subscription_json(&record, Some(context("/$entity")))).into_response())
        }
        (Endpoint::Subscription(id), _) => {
            let active = find(state, caller, &id)?;
            let writer = state.clone();
            let now = state.inner.clock.now();
            let removed =
                crate::handlers::blocking(move || Ok(writer.remove_subscription(&active.record.id, None, now)?))
                    .await?;
            if !removed {
                return Err(ApiError::SubscriptionNotFound(id));
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Endpoint::Reauthorize(id), _) => {
            find(state, caller, &id)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

fn odata(value: Value) -> Response {
    ([(axum::http::header::CONTENT_TYPE, ODATA_JSON)], value.to_string()).into_response()
}

fn visible(record: &SubscriptionRecord, caller: &Caller) -> bool {
    record.tenant_id == caller.tenant_id
        && record.application_id == caller.app_id
        && (caller.user_id().is_none() || record.user_id.as_deref() == caller.user_id())
}

fn find(state: &AppState, caller: &Caller, id: &str) -> Result<std::sync::Arc<Active>, ApiError> {
    state
        .inner
        .notifier
        .subscription(&id.to_ascii_lowercase())
        .filter(|active| visible(&active.record, caller))
        .ok_or_else(|| ApiError::SubscriptionNotFound(id.to_owned()))
}

fn string(object: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ApiError::BadRequest(format!("The property '{name}' must be a string."))),
    }
}

/// Parses `expirationDateTime`: an ISO 8601 date and time, UTC when it has no offset.
fn expiration(object: &Map<String, Value>) -> Result<Option<i64>, ApiError> {
    let Some(text) = string(object, "expirationDateTime")? else {
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
    let tls = string(object, "latestSupportedTlsVersion")?.unwrap_or_else(|| "v1_2".into());
    if !TLS_VERSIONS.contains(&tls.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "latestSupportedTlsVersion '{tls}' is not one of {}.",
            TLS_VERSIONS.join(", ")
        )));
    }
    let request = SubscriptionRequest {
        change_type: string(object, "changeType")?,
        resource: string(object, "resource")?,
        notification_url: string(object, "notificationUrl")?,
        lifecycle_notification_url: string(object, "lifecycleNotificationUrl")?,
        expiration: expiration(object)?,
        client_state: string(object, "clientState")?,
        include_resource_data,
        encryption_certificate: string(object, "encryptionCertificate")?,
        encryption_certificate_id: string(object, "encryptionCertificateId")?,
    };
    let notifier = &state.inner.notifier;
    let now = state.inner.clock.now();
    let valid = request.validate(now.as_millis(), &notifier.config.limits)?;
    let user_ids = valid.watched.ids().to_vec();
    if let Some(unknown) = user_ids.iter().find(|id| state.inner.directory.user_by_id(&caller.tenant_id, id).is_none())
    {
        return Err(ApiError::UserNotFound(unknown.clone()));
    }
    let limit = notifier.config.max_subscriptions_per_app;
    if notifier.subscriptions_of(&caller.tenant_id, &caller.app_id).len() >= limit {
        return Err(ApiError::SubscriptionLimit(limit));
    }
    let timeout = notifier.config.validation_timeout;
    let webhooks = notifier.webhooks()?;
    webhooks.validate(&valid.notification_url, timeout).await.map_err(ApiError::SubscriptionValidation)?;
    if let Some(url) = &valid.lifecycle_notification_url {
        webhooks.validate(url, timeout).await.map_err(ApiError::SubscriptionValidation)?;
    }
    let record = SubscriptionRecord {
        id: uuid::Uuid::new_v4().to_string(),
        tenant_id: caller.tenant_id.clone(),
        application_id: caller.app_id.clone(),
        user_id: caller.user_id().map(str::to_owned),
        resource: request.resource.clone().unwrap_or_default(),
        user_ids,
        notification_url: valid.notification_url.to_string(),
        lifecycle_notification_url: valid.lifecycle_notification_url.as_ref().map(ToString::to_string),
        renewed_at: now.as_millis(),
        expiration: valid.expiration,
        client_state: valid.client_state.clone(),
        include_resource_data,
        encryption_certificate: request.encryption_certificate.clone().filter(|_| include_resource_data),
        encryption_certificate_id: request.encryption_certificate_id.clone().filter(|_| include_resource_data),
        latest_supported_tls_version: tls,
        reauthorization_sent: false,
    };
    let (writer, created) = (state.clone(), record.clone());
    // The limit is checked again here, with the creation, since other creations ran during the handshakes.
    crate::handlers::blocking(move || writer.create_subscription(created, limit)).await?;
    tracing::info!(subscription = %record.id, expiration = %format_instant(Timestamp(record.expiration)), "subscription created");
    Ok(record)
}

async fn renew(
    state: &AppState,
    current: &SubscriptionRecord,
    object: &Map<String, Value>,
) -> Result<SubscriptionRecord, ApiError> {
    if let Some(other) =
        object.keys().find(|name| !["@odata.type", "expirationDateTime", "notificationUrl"].contains(&name.as_str()))
    {
        return Err(ApiError::BadRequest(format!(
            "The property '{other}' cannot be updated; only expirationDateTime and notificationUrl can."
        )));
    }
    let notifier = &state.inner.notifier;
    let new_expiration = expiration(object)?;
    if let Some(expiration) = new_expiration {
        check_expiration(expiration, state.inner.clock.now().as_millis(), &notifier.config.limits)?;
    }
    let new_url = match string(object, "notificationUrl")? {
        Some(url) => {
            let url = check_url(&url, notifier.config.limits.targets)
                .map_err(|reason| SubscriptionError::Target { which: "notificationUrl", reason })?;
            notifier
                .webhooks()?
                .validate(&url, notifier.config.validation_timeout)
                .await
                .map_err(ApiError::SubscriptionValidation)?;
            Some(url.to_string())
        }
        None => None,
    };
    // Applied to the record as it is now (not as it was before the handshake), or not at all if the
    // subscription was deleted or expired meanwhile.
    let writer = state.clone();
    let id = current.id.clone();
    let updated = crate::handlers::blocking(move || {
        let now = writer.inner.clock.now();
        writer.update_subscription(&id, |record| {
            if let Some(expiration) = new_expiration {
                check_expiration(expiration, now.as_millis(), &writer.inner.notifier.config.limits)?;
                record.expiration = expiration;
                record.renewed_at = now.as_millis();
                record.reauthorization_sent = false;
            }
            if let Some(url) = new_url {
                record.notification_url = url;
            }
            Ok(Vec::new())
        })
    })
    .await?;
    updated.ok_or_else(|| ApiError::SubscriptionNotFound(current.id.clone()))
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
