//! A subscription as it is kept: what was granted at creation, renewed since, and whose presence it watches.
//! The store keeps it as the text [`SubscriptionRecord::encode`] makes, without looking inside.

use serde::{Deserialize, Serialize};

use crate::subscription::Millis;

/// A stored presence subscription. Encoded as JSON by [`SubscriptionRecord::encode`]; unknown fields of a
/// newer version are an error, missing optional ones take their defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionRecord {
    /// The subscription id (a GUID).
    pub id: String,
    /// The tenant of the subscriber and of every watched user.
    pub tenant_id: String,
    /// The subscribing application's client id.
    pub application_id: String,
    /// The signed-in user of a delegated subscription; `None` for an application subscription.
    pub user_id: Option<String>,
    /// `resource` as the subscriber wrote it.
    pub resource: String,
    /// The watched user object ids (lowercase).
    pub user_ids: Vec<String>,
    /// `notificationUrl`.
    pub notification_url: String,
    /// `lifecycleNotificationUrl`.
    pub lifecycle_notification_url: Option<String>,
    /// When the subscription was created or last renewed.
    pub renewed_at: Millis,
    /// When it ends unless renewed.
    pub expiration: Millis,
    /// `clientState`.
    pub client_state: Option<String>,
    /// `includeResourceData`.
    pub include_resource_data: bool,
    /// `encryptionCertificate` (base64 DER), for rich notifications.
    pub encryption_certificate: Option<String>,
    /// `encryptionCertificateId`.
    pub encryption_certificate_id: Option<String>,
    /// `latestSupportedTlsVersion`.
    pub latest_supported_tls_version: String,
    /// True once `reauthorizationRequired` went out for the current expiry.
    #[serde(default)]
    pub reauthorization_sent: bool,
}

impl SubscriptionRecord {
    /// The record as stored.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A stored record.
    pub fn decode(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|error| error.to_string())
    }
}

/// A subscription of one user with a lifecycle URL, for tests.
#[cfg(test)]
pub(crate) fn sample() -> SubscriptionRecord {
    SubscriptionRecord {
        id: "4c1a9f0e-1111-4b2b-9c3d-2e4f5a6b7c8d".into(),
        tenant_id: "t".into(),
        application_id: "a".into(),
        user_id: None,
        resource: "communications/presences/u".into(),
        user_ids: vec!["u".into()],
        notification_url: "https://example.org/hook".into(),
        lifecycle_notification_url: Some("https://example.org/lifecycle".into()),
        renewed_at: 0,
        expiration: 3_600_000,
        client_state: Some("s".into()),
        include_resource_data: false,
        encryption_certificate: None,
        encryption_certificate_id: None,
        latest_supported_tls_version: "v1_2".into(),
        reauthorization_sent: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let record = sample();
        assert_eq!(SubscriptionRecord::decode(&record.encode()), Ok(record.clone()));
        assert!(SubscriptionRecord::decode("{\"id\":1}").is_err());
    }
}
