//! Notifications as Graph sends them, rendered without I/O: the item of a presence change, the item of a
//! lifecycle event, and the `changeNotificationCollection` a POST carries.
//!
//! Items are rendered when the change happens and queued as text; at delivery the collection brings each
//! item up to date with its subscription (expiry, `clientState`) and seals rich resource data for the
//! subscription's certificate (presence-spec.md 7.3, 7.4).

use presence_core::{Presence, Timestamp};
use serde_json::{json, Map, Value};

use crate::encryption::{seal, EncryptionCertificate};
use crate::record::SubscriptionRecord;
use crate::resource::{format_instant, sequence_text, PresenceJson};

/// A lifecycle event (presence-spec.md 7.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleEvent {
    /// The subscription expires soon: renew it or call `reauthorize`.
    ReauthorizationRequired,
    /// The subscription was removed (it expired).
    SubscriptionRemoved,
    /// Notifications were dropped (not delivered in the retry window, queue bound, slow endpoint).
    Missed,
}

impl LifecycleEvent {
    /// The event's name as Graph spells it.
    pub fn name(self) -> &'static str {
        match self {
            LifecycleEvent::ReauthorizationRequired => "reauthorizationRequired",
            LifecycleEvent::SubscriptionRemoved => "subscriptionRemoved",
            LifecycleEvent::Missed => "missed",
        }
    }
}

/// The resource path of a user's presence in notifications.
fn resource(user_id: &str) -> String {
    format!("communications/presences/{user_id}")
}

/// A change notification: the item, and (for a rich subscription) the resource data to seal at delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeItem {
    /// The `changeNotification` JSON.
    pub item: String,
    /// The presence JSON to encrypt into `encryptedContent`, for subscriptions with `includeResourceData`.
    pub resource_data: Option<String>,
}

/// The notification of `subscription` for a change of user `user_id` (of tenant `tenant_id`) to `presence`.
pub fn change_item(
    subscription: &SubscriptionRecord,
    tenant_id: &str,
    user_id: &str,
    presence: &Presence,
) -> ChangeItem {
    let item = json!({
        "subscriptionId": subscription.id,
        "changeType": "updated",
        "resource": resource(user_id),
        "tenantId": tenant_id,
        "organizationId": tenant_id,
        "resourceData": {
            "@odata.type": "#microsoft.graph.presence",
            "@odata.id": format!("users/{user_id}/presence"),
            "id": user_id,
            "sequenceNumber": sequence_text(presence.sequence_number),
        },
    });
    let resource_data = subscription.include_resource_data.then(|| {
        let owner_view = subscription.user_id.as_deref() == Some(user_id);
        let json = PresenceJson::known(user_id, presence.clone(), owner_view, None);
        let mut value = serde_json::to_value(&json).unwrap_or_default();
        if let Value::Object(object) = &mut value {
            object.insert("@odata.type".into(), "#microsoft.graph.presence".into());
            object.insert("@odata.id".into(), format!("users/{user_id}/presence").into());
        }
        value.to_string()
    });
    ChangeItem { item: item.to_string(), resource_data }
}

/// A lifecycle notification of `subscription`: the URL it goes to and the item, or `None` when the
/// subscription has no `lifecycleNotificationUrl`.
pub fn lifecycle_item(subscription: &SubscriptionRecord, event: LifecycleEvent) -> Option<(String, String)> {
    let url = subscription.lifecycle_notification_url.clone()?;
    let mut item = Map::new();
    item.insert("lifecycleEvent".into(), event.name().into());
    item.insert("subscriptionId".into(), subscription.id.clone().into());
    item.insert("subscriptionExpirationDateTime".into(), format_instant(Timestamp(subscription.expiration)).into());
    if let Some(state) = &subscription.client_state {
        item.insert("clientState".into(), state.clone().into());
    }
    item.insert("resource".into(), subscription.resource.clone().into());
    item.insert("tenantId".into(), subscription.tenant_id.clone().into());
    item.insert("organizationId".into(), subscription.tenant_id.clone().into());
    Some((url, Value::Object(item).to_string()))
}

/// A queued item to send.
#[derive(Debug, Clone, Copy)]
pub struct Queued<'a> {
    /// The item as queued.
    pub item: &'a str,
    /// Its resource data, for rich notifications.
    pub resource_data: Option<&'a str>,
}

/// The subscription as it is now, for bringing change items up to date at delivery.
#[derive(Debug, Clone, Copy)]
pub struct Current<'a> {
    /// The current record.
    pub subscription: &'a SubscriptionRecord,
    /// Its parsed certificate, for rich notifications.
    pub certificate: Option<&'a EncryptionCertificate>,
}

/// The body of one POST, and how many items were left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    /// The `changeNotificationCollection` JSON.
    pub body: Vec<u8>,
    /// Items that could not be read or sealed, and were left out.
    pub left_out: usize,
}

/// The body of one POST: `{"value": [...]}` with each change item brought up to date with `current`
/// (`subscriptionExpirationDateTime`, `clientState`) and its resource data sealed, and, when any item is
/// sealed, `validationTokens` with the one token `validation_token` makes. Lifecycle items are sent as
/// queued. An item that cannot be read or sealed is left out, and counted.
pub fn collection(
    batch: &[Queued<'_>],
    current: Option<Current<'_>>,
    validation_token: impl FnOnce(&SubscriptionRecord) -> String,
    rng: &mut (impl rand::CryptoRng + rand::RngCore),
) -> Collection {
    let mut value = Vec::with_capacity(batch.len());
    let mut rich = false;
    let mut left_out = 0;
    for queued in batch {
        let Ok(Value::Object(mut item)) = serde_json::from_str::<Value>(queued.item) else {
            left_out += 1;
            continue;
        };
        if let (Some(current), false) = (current, item.contains_key("lifecycleEvent")) {
            let record = current.subscription;
            item.insert("subscriptionExpirationDateTime".into(), format_instant(Timestamp(record.expiration)).into());
            if let Some(state) = &record.client_state {
                item.insert("clientState".into(), state.clone().into());
            }
            if let (Some(data), Some(certificate), Some(id)) =
                (queued.resource_data, current.certificate, &record.encryption_certificate_id)
            {
                let Ok(sealed) = seal(data.as_bytes(), certificate, id, rng) else {
                    left_out += 1;
                    continue;
                };
                item.insert(
                    "encryptedContent".into(),
                    json!({
                        "data": sealed.data,
                        "dataSignature": sealed.data_signature,
                        "dataKey": sealed.data_key,
                        "encryptionCertificateId": sealed.encryption_certificate_id,
                        "encryptionCertificateThumbprint": sealed.encryption_certificate_thumbprint,
                    }),
                );
                rich = true;
            }
        }
        value.push(Value::Object(item));
    }
    let mut body = Map::new();
    body.insert("value".into(), Value::Array(value));
    if let (true, Some(current)) = (rich, current) {
        body.insert("validationTokens".into(), json!([validation_token(current.subscription)]));
    }
    Collection { body: Value::Object(body).to_string().into_bytes(), left_out }
}

#[cfg(test)]
mod tests {
    use presence_core::{evaluate, UserFacts};

    use super::*;

    #[test]
    fn items_are_brought_up_to_date_with_the_subscription_at_delivery() {
        let mut subscription = crate::record::sample();
        let change = change_item(&subscription, "t", "u", &evaluate(&UserFacts::default(), Timestamp(0)));
        assert_eq!(change.resource_data, None, "no resource data without includeResourceData");
        let (url, lifecycle) = lifecycle_item(&subscription, LifecycleEvent::Missed).expect("has a lifecycle URL");
        assert_eq!(url, "https://example.org/lifecycle");
        subscription.expiration = 7_200_000;
        subscription.client_state = Some("renewed".into());
        let batch =
            [Queued { item: &change.item, resource_data: None }, Queued { item: &lifecycle, resource_data: None }];
        let current = Current { subscription: &subscription, certificate: None };
        let collection =
            collection(&batch, Some(current), |_| unreachable!("nothing is sealed"), &mut rand::thread_rng());
        assert_eq!(collection.left_out, 0);
        let body: Value = serde_json::from_slice(&collection.body).unwrap();
        let items = body["value"].as_array().unwrap();
        assert_eq!(items[0]["subscriptionExpirationDateTime"], "1970-01-01T02:00:00.0000000Z");
        assert_eq!(items[0]["clientState"], "renewed");
        assert_eq!(items[0]["resourceData"]["sequenceNumber"], "00000000000000000000");
        assert_eq!(items[1]["lifecycleEvent"], "missed");
        assert_eq!(
            items[1]["subscriptionExpirationDateTime"], "1970-01-01T01:00:00.0000000Z",
            "lifecycle items as queued"
        );
        assert!(body.get("validationTokens").is_none());
        subscription.lifecycle_notification_url = None;
        assert_eq!(lifecycle_item(&subscription, LifecycleEvent::Missed), None);
    }
}
