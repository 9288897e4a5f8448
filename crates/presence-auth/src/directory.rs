//! Tenants, their users and their registered applications, as configured.
//!
//! Everything is keyed by tenant: a lookup always names the tenant, so one tenant's users and apps are
//! never visible through another's.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use serde::Deserialize;

/// Ids are GUIDs: the indexes key them by their 128-bit value, which hashes and compares in a few
/// instructions and lives inside the table (a string key is a pointer to chase, and large directories
/// do not fit in the CPU's caches).
type ById = HashMap<u128, usize, RandomState>;

/// A user of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct User {
    /// Object id (GUID).
    pub id: String,
    /// Sign-in name, e.g. `adele@contoso.example`.
    pub user_principal_name: String,
    /// Display name.
    pub display_name: String,
}

/// An application registered in a tenant: its client id is the `appid`/`azp` of its tokens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct App {
    /// Client (application) id (GUID).
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// The SHA-256 (hex) of each client secret the token endpoint accepts from this application
    /// (`presenced config new-secret` makes a secret and its hash).
    #[serde(default)]
    pub client_secret_sha256: Vec<String>,
    /// The application permissions granted to it: the `roles` of its client-credentials tokens.
    #[serde(default)]
    pub application_permissions: Vec<String>,
}

/// The application permissions of the presence API.
pub const APPLICATION_PERMISSIONS: [&str; 2] = ["Presence.Read.All", "Presence.ReadWrite.All"];

/// The SHA-256 of a client secret, in hexadecimal: what `clientSecretSha256` holds.
pub fn secret_sha256(secret: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(secret.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A new client secret: 40 characters from a 240-bit random value, like Entra ID's, and its hash.
pub fn new_client_secret() -> (String, String) {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut bytes = [0_u8; 30];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = secret_sha256(&secret);
    (secret, hash)
}

impl App {
    /// Whether `secret` is one of the application's client secrets (compared by hash, in constant time).
    pub fn accepts_secret(&self, secret: &str) -> bool {
        let offered = secret_sha256(secret);
        self.client_secret_sha256.iter().fold(false, |found, stored| {
            let stored = stored.to_ascii_lowercase();
            let same = stored.len() == offered.len()
                && stored.bytes().zip(offered.bytes()).fold(0_u8, |differ, (a, b)| differ | (a ^ b)) == 0;
            found | same
        })
    }
}

/// A tenant (directory).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tenant {
    /// Tenant id (GUID).
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// The tenant's users.
    #[serde(default)]
    pub users: Vec<User>,
    /// The tenant's registered applications.
    #[serde(default)]
    pub apps: Vec<App>,
}

/// Why a configured directory was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// An id is not a GUID.
    #[error("{what} id '{id}' is not a GUID")]
    NotAGuid {
        /// Which kind of id.
        what: &'static str,
        /// The offending id.
        id: String,
    },
    /// An id or a user principal name appears twice.
    #[error("{what} '{id}' is configured twice")]
    Duplicate {
        /// Which kind of id.
        what: &'static str,
        /// The duplicated value.
        id: String,
    },
    /// The consumer tenant cannot be configured.
    #[error("tenant '{0}' is the personal-account tenant, which presence does not support")]
    ConsumerTenant(String),
    /// An application's secrets or permissions are malformed.
    #[error("app '{id}': {reason}")]
    App {
        /// The application's id.
        id: String,
        /// What is wrong.
        reason: String,
    },
}

/// All tenants, indexed for lookups. Ids are compared in lowercase.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    tenants: HashMap<u128, TenantIndex, RandomState>,
}

#[derive(Debug, Clone)]
struct TenantIndex {
    tenant: Tenant,
    users_by_id: ById,
    users_by_upn: HashMap<String, usize, RandomState>,
    apps_by_id: ById,
}

/// Puts the id in lowercase (in place: a directory of 1,000,000 users is not copied) and returns its value.
fn normalise_guid(what: &'static str, id: &mut str) -> Result<u128, DirectoryError> {
    let value = crate::guid_value(id).ok_or_else(|| DirectoryError::NotAGuid { what, id: id.to_owned() })?;
    id.make_ascii_lowercase();
    Ok(value)
}

impl Directory {
    /// Builds the directory, checking ids and uniqueness. Ids are stored in lowercase.
    pub fn new(tenants: Vec<Tenant>) -> Result<Self, DirectoryError> {
        let mut index = HashMap::default();
        for mut tenant in tenants {
            let tenant_value = normalise_guid("tenant", &mut tenant.id)?;
            if tenant.id == crate::CONSUMER_TENANT_ID {
                return Err(DirectoryError::ConsumerTenant(tenant.id));
            }
            let mut users_by_id = ById::with_capacity_and_hasher(tenant.users.len(), RandomState::default());
            let mut users_by_upn = HashMap::with_capacity_and_hasher(tenant.users.len(), RandomState::default());
            for (position, user) in tenant.users.iter_mut().enumerate() {
                let value = normalise_guid("user", &mut user.id)?;
                if users_by_id.insert(value, position).is_some() {
                    return Err(DirectoryError::Duplicate { what: "user id", id: user.id.clone() });
                }
                if users_by_upn.insert(user.user_principal_name.to_lowercase(), position).is_some() {
                    return Err(DirectoryError::Duplicate {
                        what: "userPrincipalName",
                        id: user.user_principal_name.clone(),
                    });
                }
            }
            let mut apps_by_id = ById::default();
            for (position, app) in tenant.apps.iter_mut().enumerate() {
                let value = normalise_guid("app", &mut app.id)?;
                if apps_by_id.insert(value, position).is_some() {
                    return Err(DirectoryError::Duplicate { what: "app id", id: app.id.clone() });
                }
                for hash in &app.client_secret_sha256 {
                    if hash.len() != 64 || !hash.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                        return Err(DirectoryError::App {
                            id: app.id.clone(),
                            reason: "clientSecretSha256 holds 64 hexadecimal digits per secret".into(),
                        });
                    }
                }
                for permission in &app.application_permissions {
                    if !APPLICATION_PERMISSIONS.contains(&permission.as_str()) {
                        return Err(DirectoryError::App {
                            id: app.id.clone(),
                            reason: format!(
                                "applicationPermissions: {permission:?} is not one of {}",
                                APPLICATION_PERMISSIONS.join(", ")
                            ),
                        });
                    }
                }
            }
            let id = tenant.id.clone();
            let entry = TenantIndex { tenant, users_by_id, users_by_upn, apps_by_id };
            if index.insert(tenant_value, entry).is_some() {
                return Err(DirectoryError::Duplicate { what: "tenant id", id });
            }
        }
        Ok(Directory { tenants: index })
    }

    /// The tenant with this id.
    pub fn tenant(&self, tenant_id: &str) -> Option<&Tenant> {
        self.index(tenant_id).map(|index| &index.tenant)
    }

    fn index(&self, tenant_id: &str) -> Option<&TenantIndex> {
        self.tenants.get(&crate::guid_value(tenant_id)?)
    }

    /// Every tenant, in no particular order.
    pub fn tenants(&self) -> impl Iterator<Item = &Tenant> {
        self.tenants.values().map(|index| &index.tenant)
    }

    /// The user of `tenant_id` with this object id.
    pub fn user_by_id(&self, tenant_id: &str, user_id: &str) -> Option<&User> {
        let index = self.index(tenant_id)?;
        index.users_by_id.get(&crate::guid_value(user_id)?).map(|position| &index.tenant.users[*position])
    }

    /// Which of the object ids `ids` (GUID values, as [`crate::guid_value`] gives them; `None` is no user)
    /// are users of `tenant_id`, in order. The lookups run in a loop of their own, with nothing between
    /// them, so those that wait for memory wait together.
    pub fn has_users(&self, tenant_id: &str, ids: &[Option<u128>]) -> Vec<bool> {
        match self.index(tenant_id) {
            Some(index) => ids.iter().map(|id| id.is_some_and(|id| index.users_by_id.contains_key(&id))).collect(),
            None => vec![false; ids.len()],
        }
    }

    /// The user of `tenant_id` with this object id or user principal name.
    pub fn user_by_id_or_upn(&self, tenant_id: &str, id_or_upn: &str) -> Option<&User> {
        let index = self.index(tenant_id)?;
        let position = match crate::guid_value(id_or_upn) {
            Some(id) => index.users_by_id.get(&id),
            None => index.users_by_upn.get(&id_or_upn.to_lowercase()),
        }?;
        Some(&index.tenant.users[*position])
    }

    /// The application of `tenant_id` with this client id.
    pub fn app(&self, tenant_id: &str, app_id: &str) -> Option<&App> {
        let index = self.index(tenant_id)?;
        index.apps_by_id.get(&crate::guid_value(app_id)?).map(|position| &index.tenant.apps[*position])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, upn: &str) -> User {
        User { id: id.into(), user_principal_name: upn.into(), display_name: "U".into() }
    }

    fn tenant(users: Vec<User>) -> Tenant {
        Tenant { id: "5F1D3C2A-7B6E-4D8F-9A01-23456789ABCD".into(), display_name: "T".into(), users, apps: Vec::new() }
    }

    #[test]
    fn ids_are_kept_in_lowercase_and_found_in_any_case() {
        let id = "7D3B5E0A-2C61-4F3E-9D1A-5A2B8C9E0F11";
        let directory = Directory::new(vec![tenant(vec![user(id, "Adele@C.example")])]).unwrap();
        let tenant_id = "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd";
        assert_eq!(directory.tenant(tenant_id).map(|tenant| tenant.id.as_str()), Some(tenant_id));
        let found = directory.user_by_id(tenant_id, &id.to_lowercase()).map(|user| user.id.as_str());
        assert_eq!(found, Some("7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11"));
        assert!(directory.user_by_id_or_upn(tenant_id, "adele@c.EXAMPLE").is_some());
    }

    #[test]
    fn a_bad_or_repeated_id_or_name_is_refused_and_named() {
        let bad = Directory::new(vec![tenant(vec![user("not-a-guid", "a@c.example")])]).unwrap_err();
        assert_eq!(bad, DirectoryError::NotAGuid { what: "user", id: "not-a-guid".into() });
        let id = "7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11";
        let twice = vec![user(id, "a@c.example"), user(&id.to_uppercase(), "b@c.example")];
        let error = Directory::new(vec![tenant(twice)]).unwrap_err();
        assert_eq!(error, DirectoryError::Duplicate { what: "user id", id: id.into() });
        let other = "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11";
        let same_name = vec![user(id, "a@c.example"), user(other, "A@C.example")];
        let error = Directory::new(vec![tenant(same_name)]).unwrap_err();
        assert_eq!(error, DirectoryError::Duplicate { what: "userPrincipalName", id: "A@C.example".into() });
    }
}
