//! Presence subscriptions: what a create request may ask for (presence-spec.md 7.1), checked without I/O.
//!
//! The HTTP layer turns the request body into a [`SubscriptionRequest`] (parsing `expirationDateTime` into
//! an instant); [`SubscriptionRequest::validate`] applies Graph's rules for presence: `changeType` is
//! `updated`; the resource is `communications/presences/{id}` or
//! `communications/presences?$filter=id in ('id1','id2',...)` with 1 to 650 user object ids; the expiry is in
//! the future and at most [`SubscriptionLimits::max_lifetime`] away (60 minutes, Graph's maximum, unless
//! configured larger); `clientState` is at most 128 characters; rich notifications need a usable RSA
//! certificate and its id; both URLs pass the [`crate::target`] policy.

use std::time::Duration;

use url::Url;

use crate::encryption::{CertificateError, EncryptionCertificate};
use crate::target::{check_url, TargetPolicy, TargetRefused};

/// Most user ids one bulk presence subscription may name.
pub const MAX_IDS_PER_SUBSCRIPTION: usize = 650;

/// Longest `clientState`.
pub const MAX_CLIENT_STATE: usize = 128;

/// Instants in milliseconds since the Unix epoch, as in `presence-core`.
pub type Millis = i64;

/// Configured bounds of subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionLimits {
    /// Longest lifetime a create or renewal may ask for.
    pub max_lifetime: Duration,
    /// Which notification targets are acceptable.
    pub targets: TargetPolicy,
}

/// Whose presence a subscription watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchedUsers {
    /// `communications/presences/{id}`.
    One(String),
    /// `communications/presences?$filter=id in (...)`.
    Many(Vec<String>),
}

impl WatchedUsers {
    /// The watched user ids (lowercase).
    pub fn ids(&self) -> &[String] {
        match self {
            WatchedUsers::One(id) => std::slice::from_ref(id),
            WatchedUsers::Many(ids) => ids,
        }
    }
}

/// A subscription create request, as the HTTP layer decoded it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionRequest {
    /// `changeType`.
    pub change_type: Option<String>,
    /// `resource`.
    pub resource: Option<String>,
    /// `notificationUrl`.
    pub notification_url: Option<String>,
    /// `lifecycleNotificationUrl`.
    pub lifecycle_notification_url: Option<String>,
    /// `expirationDateTime`, already an instant.
    pub expiration: Option<Millis>,
    /// `clientState`.
    pub client_state: Option<String>,
    /// `includeResourceData`.
    pub include_resource_data: bool,
    /// `encryptionCertificate` (base64 DER).
    pub encryption_certificate: Option<String>,
    /// `encryptionCertificateId`.
    pub encryption_certificate_id: Option<String>,
}

/// A create request that passed every rule.
#[derive(Debug, Clone)]
pub struct ValidSubscription {
    /// Whose presence is watched.
    pub watched: WatchedUsers,
    /// Where notifications go.
    pub notification_url: Url,
    /// Where lifecycle notifications go, if anywhere.
    pub lifecycle_notification_url: Option<Url>,
    /// When the subscription ends unless renewed.
    pub expiration: Millis,
    /// Echoed in every notification.
    pub client_state: Option<String>,
    /// The certificate and its id, for rich notifications.
    pub encryption: Option<(EncryptionCertificate, String)>,
}

/// Why a subscription request was refused (all `400 ValidationError` in Graph's terms).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// A required property is missing.
    #[error("The property '{0}' is required.")]
    Missing(&'static str),
    /// `changeType` other than `updated`.
    #[error("changeType '{0}' is not supported for presence; use 'updated'.")]
    ChangeType(String),
    /// A resource that is not a presence resource.
    #[error("The resource '{0}' is not supported; use communications/presences/{{id}} or communications/presences?$filter=id in ('id1','id2').")]
    Resource(String),
    /// A user id that is not a GUID.
    #[error("'{0}' is not a user object id (GUID).")]
    UserId(String),
    /// Too many or no ids.
    #[error("A presence subscription watches 1 to {MAX_IDS_PER_SUBSCRIPTION} users; {0} were given.")]
    IdCount(usize),
    /// Expiry in the past or too far away.
    #[error("expirationDateTime must be in the future and at most {0} minutes from now.")]
    Expiration(u64),
    /// `clientState` too long.
    #[error("clientState must be at most {MAX_CLIENT_STATE} characters.")]
    ClientState,
    /// A notification URL that is not acceptable.
    #[error("{which}: {reason}")]
    Target {
        /// Which URL.
        which: &'static str,
        /// Why.
        reason: TargetRefused,
    },
    /// An unusable certificate.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
}

fn is_guid(text: &str) -> bool {
    text.len() == 36 && uuid::Uuid::try_parse(text).is_ok()
}

/// The quoted values of an OData `id in ('a','b',...)` filter, or `None` when the filter has another form.
pub fn parse_id_in(filter: &str) -> Option<Vec<&str>> {
    let rest = filter.trim();
    let rest = rest.get(..2).filter(|word| word.eq_ignore_ascii_case("id")).map(|_| rest[2..].trim_start())?;
    let rest = rest.get(..2).filter(|word| word.eq_ignore_ascii_case("in")).map(|_| rest[2..].trim_start())?;
    let list = rest.strip_prefix('(')?.trim_end().strip_suffix(')')?;
    list.split(',').map(|item| item.trim().strip_prefix('\'')?.strip_suffix('\'')).collect()
}

/// Parses a presence subscription resource.
pub fn parse_resource(resource: &str) -> Result<WatchedUsers, SubscriptionError> {
    let refused = || SubscriptionError::Resource(resource.to_owned());
    let trimmed = resource.trim().trim_start_matches('/');
    let prefix = "communications/presences";
    let head = trimmed.get(..prefix.len()).filter(|head| head.eq_ignore_ascii_case(prefix)).ok_or_else(refused)?;
    let rest = &trimmed[head.len()..];
    if let Some(id) = rest.strip_prefix('/') {
        if !is_guid(id) {
            return Err(SubscriptionError::UserId(id.to_owned()));
        }
        return Ok(WatchedUsers::One(id.to_ascii_lowercase()));
    }
    let filter = rest.strip_prefix("?$filter=").or_else(|| rest.strip_prefix("?$FILTER=")).ok_or_else(refused)?;
    let filter = filter.replace("%20", " ").replace("%27", "'");
    let items = parse_id_in(&filter).ok_or_else(refused)?;
    if items.len() > MAX_IDS_PER_SUBSCRIPTION {
        return Err(SubscriptionError::IdCount(items.len()));
    }
    let mut ids: Vec<String> = Vec::with_capacity(items.len());
    for id in items {
        if !is_guid(id) {
            return Err(SubscriptionError::UserId(id.to_owned()));
        }
        let id = id.to_ascii_lowercase();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(SubscriptionError::IdCount(0));
    }
    Ok(WatchedUsers::Many(ids))
}

/// Checks a new expiry (create or renewal) at `now`.
pub fn check_expiration(expiration: Millis, now: Millis, limits: &SubscriptionLimits) -> Result<(), SubscriptionError> {
    let max = i64::try_from(limits.max_lifetime.as_millis()).unwrap_or(i64::MAX);
    if expiration <= now || expiration > now.saturating_add(max) {
        return Err(SubscriptionError::Expiration(limits.max_lifetime.as_secs() / 60));
    }
    Ok(())
}

impl SubscriptionRequest {
    /// Applies every rule at `now`.
    pub fn validate(&self, now: Millis, limits: &SubscriptionLimits) -> Result<ValidSubscription, SubscriptionError> {
        let change_type = self.change_type.as_deref().ok_or(SubscriptionError::Missing("changeType"))?;
        if !change_type.split(',').all(|kind| kind.trim() == "updated") {
            return Err(SubscriptionError::ChangeType(change_type.to_owned()));
        }
        let watched = parse_resource(self.resource.as_deref().ok_or(SubscriptionError::Missing("resource"))?)?;
        let target = |which: &'static str, url: &str| {
            check_url(url, limits.targets).map_err(|reason| SubscriptionError::Target { which, reason })
        };
        let notification_url = target(
            "notificationUrl",
            self.notification_url.as_deref().ok_or(SubscriptionError::Missing("notificationUrl"))?,
        )?;
        let lifecycle_notification_url = self
            .lifecycle_notification_url
            .as_deref()
            .map(|url| target("lifecycleNotificationUrl", url))
            .transpose()?;
        let expiration = self.expiration.ok_or(SubscriptionError::Missing("expirationDateTime"))?;
        check_expiration(expiration, now, limits)?;
        if self.client_state.as_ref().is_some_and(|state| state.chars().count() > MAX_CLIENT_STATE) {
            return Err(SubscriptionError::ClientState);
        }
        let encryption = if self.include_resource_data {
            let certificate =
                self.encryption_certificate.as_deref().ok_or(SubscriptionError::Missing("encryptionCertificate"))?;
            let id = self
                .encryption_certificate_id
                .clone()
                .filter(|id| !id.is_empty())
                .ok_or(SubscriptionError::Missing("encryptionCertificateId"))?;
            Some((EncryptionCertificate::from_base64(certificate)?, id))
        } else {
            None
        };
        Ok(ValidSubscription {
            watched,
            notification_url,
            lifecycle_notification_url,
            expiration,
            client_state: self.client_state.clone(),
            encryption,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11";
    const B: &str = "5e9a1c7b-8d44-4b0e-a3f2-6c1d2e3f4a5b";
    const NOW: Millis = 1_788_256_800_000;

    /// Graph's limits: an hour at most, public https targets only.
    fn limits() -> SubscriptionLimits {
        SubscriptionLimits { max_lifetime: Duration::from_secs(60 * 60), targets: TargetPolicy::STRICT }
    }

    fn request() -> SubscriptionRequest {
        SubscriptionRequest {
            change_type: Some("updated".into()),
            resource: Some(format!("/communications/presences/{A}")),
            notification_url: Some("https://hooks.example.com/presence".into()),
            expiration: Some(NOW + 30 * 60_000),
            ..SubscriptionRequest::default()
        }
    }

    #[test]
    fn presence_resources_parse() {
        assert_eq!(parse_resource(&format!("communications/presences/{A}")), Ok(WatchedUsers::One(A.into())));
        assert_eq!(
            parse_resource(&format!("/Communications/Presences/{}", A.to_uppercase())),
            Ok(WatchedUsers::One(A.into()))
        );
        assert_eq!(
            parse_resource(&format!("/communications/presences?$filter=id in ('{A}', '{B}','{A}')")),
            Ok(WatchedUsers::Many(vec![A.into(), B.into()]))
        );
        assert_eq!(
            parse_resource(&format!("communications/presences?$filter=id%20in%20('{A}')")),
            Ok(WatchedUsers::Many(vec![A.into()]))
        );
        assert!(matches!(parse_resource("me/presence"), Err(SubscriptionError::Resource(_))));
        assert!(matches!(parse_resource("communications/presences/adele@x"), Err(SubscriptionError::UserId(_))));
        assert!(matches!(
            parse_resource("communications/presences?$filter=id in ()"),
            Err(SubscriptionError::Resource(_))
        ));
        assert!(matches!(
            parse_resource("communications/presences?$filter=availability eq 'Busy'"),
            Err(SubscriptionError::Resource(_))
        ));
        let many: Vec<String> = (0..651).map(|i| format!("'00000000-0000-4000-8000-{i:012}'")).collect();
        let resource = format!("communications/presences?$filter=id in ({})", many.join(","));
        assert_eq!(parse_resource(&resource), Err(SubscriptionError::IdCount(651)));
    }

    #[test]
    fn a_valid_request_passes() {
        let valid = request().validate(NOW, &limits()).unwrap();
        assert_eq!(valid.watched, WatchedUsers::One(A.into()));
        assert!(valid.encryption.is_none());
    }

    #[test]
    fn each_rule_refuses() {
        let limits = limits();
        let check = |change: fn(&mut SubscriptionRequest), fragment: &str| {
            let mut request = request();
            change(&mut request);
            let message = request.validate(NOW, &limits).unwrap_err().to_string();
            assert!(message.contains(fragment), "{fragment}: {message}");
        };
        check(|r| r.change_type = Some("created".into()), "changeType");
        check(|r| r.change_type = None, "'changeType' is required");
        check(|r| r.resource = Some("users".into()), "not supported");
        check(|r| r.notification_url = Some("http://hooks.example.com/".into()), "notificationUrl");
        check(|r| r.notification_url = Some("https://10.0.0.5/".into()), "internal");
        check(|r| r.lifecycle_notification_url = Some("https://localhost/".into()), "lifecycleNotificationUrl");
        check(|r| r.expiration = Some(NOW - 1), "at most 60 minutes");
        check(|r| r.expiration = Some(NOW + 61 * 60_000), "at most 60 minutes");
        check(|r| r.client_state = Some("x".repeat(129)), "clientState");
        check(|r| r.include_resource_data = true, "encryptionCertificate");
        check(
            |r| {
                r.include_resource_data = true;
                r.encryption_certificate = Some("bm90IGEgY2VydA==".into());
                r.encryption_certificate_id = Some("c1".into());
            },
            "not an X.509 certificate",
        );
    }

    #[test]
    fn a_configured_maximum_allows_longer_lifetimes() {
        let limits = SubscriptionLimits { max_lifetime: Duration::from_secs(24 * 3600), ..limits() };
        let mut request = request();
        request.expiration = Some(NOW + 12 * 3_600_000);
        assert!(request.validate(NOW, &limits).is_ok());
    }
}
