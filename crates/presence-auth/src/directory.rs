//! Tenants, their users and their registered applications, as configured.
//!
//! Everything is keyed by tenant: a lookup always names the tenant, so one tenant's users and apps are
//! never visible through another's.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hasher as _};

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use serde::Deserialize;

/// Apps' ids are GUIDs: their index keys them by their 128-bit value, which hashes and compares in a few
/// instructions and lives inside the table (a string key is a pointer to chase). Users have a compact
/// table of their own, [`Users`].
type ById = HashMap<u128, usize, RandomState>;

/// A user of a tenant, as configured.
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

/// A tenant (directory), as configured.
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
    /// The users' names come to more than 4 GiB, or the users to more than 2^32.
    #[error("tenant '{0}': its users' names come to more than 4 GiB, or its users to more than 2^32")]
    TooLarge(String),
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
    tenants: HashMap<u128, DirectoryTenant, RandomState>,
}

/// A configured tenant as the directory keeps it: its users in a compact table (see [`Users`]).
#[derive(Debug, Clone)]
pub struct DirectoryTenant {
    /// Tenant id (GUID, lowercase).
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// The tenant's registered applications.
    pub apps: Vec<App>,
    apps_by_id: ById,
    users: Users,
}

impl DirectoryTenant {
    /// How many users are configured.
    pub fn user_count(&self) -> usize {
        self.users.ids.len()
    }

    /// The configured users from the one at `position` on, in configuration order.
    pub fn users_from(&self, position: usize) -> impl Iterator<Item = UserRef<'_>> {
        (position.min(self.user_count())..self.user_count()).map(|position| self.users.user(position))
    }
}

/// A configured user, borrowed from the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRef<'a> {
    id: u128,
    /// Sign-in name, as configured.
    pub user_principal_name: &'a str,
    /// Display name.
    pub display_name: &'a str,
}

impl UserRef<'_> {
    /// The object id, a lowercase GUID.
    pub fn id(&self) -> String {
        uuid::Uuid::from_u128(self.id).hyphenated().to_string()
    }

    /// The user as an owned [`User`].
    pub fn to_user(&self) -> User {
        User {
            id: self.id(),
            user_principal_name: self.user_principal_name.to_owned(),
            display_name: self.display_name.to_owned(),
        }
    }
}

/// A tenant's configured users, kept compact for directories of millions: each id as its 128-bit value
/// (its text is written when asked for), every name in one string, and the two indexes holding only
/// positions (4 bytes a user each, against a copied key of 16 to 48 bytes). About 80 bytes a user with
/// names of 35 characters, where three strings a user and two maps came to about 360.
#[derive(Clone)]
struct Users {
    ids: Vec<u128>,
    /// Each user's principal name and display name, back to back, user after user.
    names: String,
    /// Where each user's principal name and display name end in `names` (its principal name starts
    /// where the user before ends).
    ends: Vec<(u32, u32)>,
    by_id: HashTable<u32>,
    /// Principal names compared and hashed in lowercase ([`lowercase`], [`upn_hash`]).
    by_upn: HashTable<u32>,
    hasher: RandomState,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Users").field("count", &self.ids.len()).finish_non_exhaustive()
    }
}

/// `text` in lowercase, a character at a time, with the final sigma as a sigma: `str::to_lowercase` writes
/// a word-final capital sigma as ς, so the names it matched, one form of the letter or the other, match here.
fn lowercase(text: &str) -> impl Iterator<Item = char> + '_ {
    text.chars().flat_map(char::to_lowercase).map(|character| if character == 'ς' { 'σ' } else { character })
}

impl Users {
    /// The table of `users`, consumed (each user's strings are freed as it is copied in), with its
    /// ids checked and put in lowercase in the errors.
    fn new(tenant_id: &str, users: Vec<User>) -> Result<Self, DirectoryError> {
        let length: usize = users.iter().map(|user| user.user_principal_name.len() + user.display_name.len()).sum();
        if u32::try_from(length).is_err() || u32::try_from(users.len()).is_err() {
            return Err(DirectoryError::TooLarge(tenant_id.to_owned()));
        }
        let mut table = Users {
            ids: Vec::with_capacity(users.len()),
            names: String::with_capacity(length),
            ends: Vec::with_capacity(users.len()),
            by_id: HashTable::with_capacity(users.len()),
            by_upn: HashTable::with_capacity(users.len()),
            hasher: RandomState::default(),
        };
        for mut user in users {
            let id = normalise_guid("user", &mut user.id)?;
            let id_hash = table.hasher.hash_one(id);
            if table.find(id_hash, id).is_some() {
                return Err(DirectoryError::Duplicate { what: "user id", id: user.id });
            }
            let name_hash = upn_hash(&table.hasher, &user.user_principal_name);
            if table.find_upn(name_hash, &user.user_principal_name).is_some() {
                return Err(DirectoryError::Duplicate { what: "userPrincipalName", id: user.user_principal_name });
            }
            // Both fit: the names' total length and the count were checked above.
            let position = table.ids.len() as u32;
            let (ids, names, ends, hasher) = (&table.ids, &table.names, &table.ends, &table.hasher);
            table.by_id.insert_unique(id_hash, position, |&other| hasher.hash_one(ids[other as usize]));
            table
                .by_upn
                .insert_unique(name_hash, position, |&other| upn_hash(hasher, names_of(names, ends, other as usize).0));
            table.ids.push(id);
            table.names.push_str(&user.user_principal_name);
            let upn_end = table.names.len() as u32;
            table.names.push_str(&user.display_name);
            table.ends.push((upn_end, table.names.len() as u32));
        }
        Ok(table)
    }

    fn user(&self, position: usize) -> UserRef<'_> {
        let (upn, display) = names_of(&self.names, &self.ends, position);
        UserRef { id: self.ids[position], user_principal_name: upn, display_name: display }
    }

    fn position(&self, id: u128) -> Option<usize> {
        self.find(self.hasher.hash_one(id), id)
    }

    fn position_by_upn(&self, upn: &str) -> Option<usize> {
        self.find_upn(upn_hash(&self.hasher, upn), upn)
    }

    fn find(&self, hash: u64, id: u128) -> Option<usize> {
        self.by_id.find(hash, |&position| self.ids[position as usize] == id).map(|&position| position as usize)
    }

    fn find_upn(&self, hash: u64, upn: &str) -> Option<usize> {
        let found = self.by_upn.find(hash, |&position| {
            lowercase(names_of(&self.names, &self.ends, position as usize).0).eq(lowercase(upn))
        });
        found.map(|&position| position as usize)
    }
}

/// The principal name and the display name of the user at `position`.
fn names_of<'a>(names: &'a str, ends: &[(u32, u32)], position: usize) -> (&'a str, &'a str) {
    let start = position.checked_sub(1).map_or(0, |before| ends[before].1 as usize);
    let (upn_end, end) = ends[position];
    (&names[start..upn_end as usize], &names[upn_end as usize..end as usize])
}

/// The hash of `upn` in lowercase: its lowercase UTF-8 hashed a buffer at a time (a few writes for a
/// name, not one a character). Equal names in lowercase fill the buffer alike, so they hash alike.
fn upn_hash(hasher: &RandomState, upn: &str) -> u64 {
    let mut state = hasher.build_hasher();
    let mut buffer = [0_u8; 64];
    if upn.is_ascii() {
        // The same bytes and buffers as below, without a character's lowercase looked up in Unicode's tables.
        for chunk in upn.as_bytes().chunks(buffer.len()) {
            let lower = &mut buffer[..chunk.len()];
            lower.copy_from_slice(chunk);
            lower.make_ascii_lowercase();
            state.write(lower);
        }
        if upn.is_empty() {
            state.write(&[]);
        }
        return state.finish();
    }
    let mut filled = 0;
    for character in lowercase(upn) {
        if filled + character.len_utf8() > buffer.len() {
            state.write(&buffer[..filled]);
            filled = 0;
        }
        filled += character.encode_utf8(&mut buffer[filled..]).len();
    }
    state.write(&buffer[..filled]);
    state.finish()
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
            let users = Users::new(&tenant.id, std::mem::take(&mut tenant.users))?;
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
            let Tenant { id, display_name, apps, .. } = tenant;
            if index.contains_key(&tenant_value) {
                return Err(DirectoryError::Duplicate { what: "tenant id", id });
            }
            index.insert(tenant_value, DirectoryTenant { id, display_name, apps, apps_by_id, users });
        }
        Ok(Directory { tenants: index })
    }

    /// The tenant with this id.
    pub fn tenant(&self, tenant_id: &str) -> Option<&DirectoryTenant> {
        self.tenants.get(&crate::guid_value(tenant_id)?)
    }

    /// Every tenant, in no particular order.
    pub fn tenants(&self) -> impl Iterator<Item = &DirectoryTenant> {
        self.tenants.values()
    }

    /// The user of `tenant_id` with this object id.
    pub fn user_by_id(&self, tenant_id: &str, user_id: &str) -> Option<UserRef<'_>> {
        let tenant = self.tenant(tenant_id)?;
        tenant.users.position(crate::guid_value(user_id)?).map(|position| tenant.users.user(position))
    }

    /// Which of the object ids `ids` (GUID values, as [`crate::guid_value`] gives them; `None` is no user)
    /// are users of `tenant_id`, in order. The lookups run in a loop of their own, with nothing between
    /// them, so those that wait for memory wait together.
    pub fn has_users(&self, tenant_id: &str, ids: &[Option<u128>]) -> Vec<bool> {
        match self.tenant(tenant_id) {
            Some(tenant) => ids.iter().map(|id| id.is_some_and(|id| tenant.users.position(id).is_some())).collect(),
            None => vec![false; ids.len()],
        }
    }

    /// The user of `tenant_id` with this object id or user principal name (in any case).
    pub fn user_by_id_or_upn(&self, tenant_id: &str, id_or_upn: &str) -> Option<UserRef<'_>> {
        let tenant = self.tenant(tenant_id)?;
        let position = match crate::guid_value(id_or_upn) {
            Some(id) => tenant.users.position(id),
            None => tenant.users.position_by_upn(id_or_upn),
        }?;
        Some(tenant.users.user(position))
    }

    /// The application of `tenant_id` with this client id.
    pub fn app(&self, tenant_id: &str, app_id: &str) -> Option<&App> {
        let tenant = self.tenant(tenant_id)?;
        tenant.apps_by_id.get(&crate::guid_value(app_id)?).map(|position| &tenant.apps[*position])
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
        let found = directory.user_by_id(tenant_id, &id.to_lowercase()).map(|user| user.id());
        assert_eq!(found.as_deref(), Some("7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11"));
        assert!(directory.user_by_id_or_upn(tenant_id, "adele@c.EXAMPLE").is_some());
    }

    #[test]
    fn each_user_is_found_with_its_own_names_by_id_or_name_and_listed_in_order() {
        let ids = [
            "0a000000-0000-4000-8000-000000000001",
            "0a000000-0000-4000-8000-000000000002",
            "0a000000-0000-4000-8000-000000000003",
        ];
        let users = vec![
            User { id: ids[0].into(), user_principal_name: "a@c.example".into(), display_name: "Ann".into() },
            User { id: ids[1].into(), user_principal_name: "Ünal@C.example".into(), display_name: "".into() },
            User { id: ids[2].into(), user_principal_name: "bo@c.example".into(), display_name: "Bo Ek".into() },
        ];
        let directory = Directory::new(vec![tenant(users.clone())]).unwrap();
        let tenant_id = "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd";
        for user in &users {
            let by_id = directory.user_by_id(tenant_id, &user.id.to_uppercase()).map(|found| found.to_user());
            assert_eq!(by_id.as_ref(), Some(user));
            let by_name = directory.user_by_id_or_upn(tenant_id, &user.user_principal_name.to_uppercase());
            assert_eq!(by_name.map(|found| found.to_user()).as_ref(), Some(user));
        }
        assert!(directory.user_by_id_or_upn(tenant_id, "ünal@c.example").is_some());
        assert!(directory.user_by_id_or_upn(tenant_id, "a@c.exampl").is_none());
        assert!(directory.user_by_id_or_upn(tenant_id, "0a000000-0000-4000-8000-000000000004").is_none());
        let listed = directory.tenant(tenant_id).unwrap();
        assert_eq!(listed.user_count(), 3);
        let from_second: Vec<User> = listed.users_from(1).map(|user| user.to_user()).collect();
        assert_eq!(from_second, users[1..]);
        assert_eq!(listed.users_from(4).count(), 0);
        assert_eq!(directory.has_users(tenant_id, &[crate::guid_value(ids[2]), None, Some(7)]), [true, false, false]);
    }

    #[test]
    fn a_name_is_found_whether_its_lowercase_is_hashed_as_ascii_or_as_unicode() {
        // The Kelvin sign's lowercase is an ASCII k: a name written with it takes the Unicode path, the
        // configured one the ASCII path, and they must hash alike (the long one across the buffer's end).
        let long = format!("{}@c.example", "k".repeat(70));
        let users = vec![
            User {
                id: "0a000000-0000-4000-8000-000000000001".into(),
                user_principal_name: "kim@c.example".into(),
                display_name: "K".into(),
            },
            User {
                id: "0a000000-0000-4000-8000-000000000002".into(),
                user_principal_name: long.clone(),
                display_name: "L".into(),
            },
        ];
        let directory = Directory::new(vec![tenant(users)]).unwrap();
        let tenant_id = "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd";
        let found = |name: &str| directory.user_by_id_or_upn(tenant_id, name).map(|user| user.display_name);
        assert_eq!(found("\u{212A}IM@C.EXAMPLE"), Some("K"));
        assert_eq!(found(&format!("\u{212A}{}@C.EXAMPLE", "K".repeat(69))), Some("L"));
        assert_eq!(found(&long.to_uppercase()), Some("L"));
        assert_eq!(found(&format!("{}@c.example", "k".repeat(69))), None);
        // A final sigma, as str::to_lowercase writes a word-final capital one, still finds the name.
        let greek = vec![User {
            id: "0a000000-0000-4000-8000-000000000003".into(),
            user_principal_name: "ΑΣ@c.example".into(),
            display_name: "G".into(),
        }];
        let directory = Directory::new(vec![tenant(greek)]).unwrap();
        assert!(directory.user_by_id_or_upn(tenant_id, "ας@c.example").is_some());
        assert!(directory.user_by_id_or_upn(tenant_id, "ασ@C.EXAMPLE").is_some());
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
