//! The directory a request sees: each tenant's configured users and, in a tenant one of whose trusts adds
//! its users (`users = "auto"`), the users added from their tokens. Added users are kept in the store, so
//! every node sees those any node added; a node remembers which ids it found there (an added user is never
//! removed) but reads names from the store, where the newest token's names are.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use presence_auth::{Caller, Directory, Trust, TrustKind, TrustUsers, User};
use presence_service::{Service, ServiceError};
use presence_store::DirectoryUser;

use crate::error::ApiError;

/// Added users a node remembers (ids found in the store, names it read or wrote).
const REMEMBERED: usize = 65_536;

/// Where a listing of a tenant's users goes on: an offset among the configured users, or the added users
/// after an id (in id order, so that users added meanwhile neither repeat nor shift the pages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListFrom {
    Configured(usize),
    AddedAfter(String),
}

impl ListFrom {
    /// The `$skiptoken` that resumes here.
    pub(crate) fn token(&self) -> String {
        match self {
            ListFrom::Configured(offset) => offset.to_string(),
            ListFrom::AddedAfter(id) => id.clone(),
        }
    }

    /// The position a `$skiptoken` names.
    pub(crate) fn parse(token: &str) -> Result<ListFrom, ApiError> {
        if presence_auth::is_guid(token) {
            return Ok(ListFrom::AddedAfter(token.to_ascii_lowercase()));
        }
        (1..=19)
            .contains(&token.len())
            .then_some(token)
            .filter(|text| text.bytes().all(|byte| byte.is_ascii_digit()))
            .and_then(|text| text.parse::<usize>().ok())
            .map(ListFrom::Configured)
            .ok_or_else(|| ApiError::BadRequest("The $skiptoken is not valid.".into()))
    }
}

pub(crate) struct Users {
    directory: Arc<Directory>,
    /// Tenants with a trust that adds its users (lowercase ids).
    adding: HashSet<String>,
    /// Added users this node found in the store or wrote, by `(tenant, id)`.
    remembered: Mutex<HashMap<(String, String), Known>>,
}

/// What a node knows of an added user.
#[derive(Debug, Clone, Default)]
struct Known {
    /// The names the store had when this node last read or wrote them (`None`: only that the user exists).
    names: Option<User>,
    /// When this node last wrote them (presence time, in milliseconds).
    written: Option<i64>,
}

/// How long after a node wrote a user's names it writes them again, when tokens bring other names (several
/// applications' tokens may name a user differently: the names do not flip with every request).
const RENAME_AFTER_MS: i64 = 60_000;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn user_of(added: DirectoryUser) -> User {
    User { id: added.id, user_principal_name: added.user_principal_name, display_name: added.display_name }
}

/// Whether the names a token gives (an empty one gives none) are those of `known`.
fn agrees(known: &User, token: &User) -> bool {
    (token.user_principal_name.is_empty() || token.user_principal_name == known.user_principal_name)
        && (token.display_name.is_empty() || token.display_name == known.display_name)
}

impl Users {
    pub(crate) fn new(directory: Arc<Directory>, trusts: &[Arc<Trust>]) -> Users {
        let adding = trusts
            .iter()
            .filter(|trust| trust.config.users == TrustUsers::Auto)
            .flat_map(|trust| match trust.config.kind {
                TrustKind::Entra => trust.config.tenants.clone(),
                TrustKind::Oidc => trust.config.tenant.clone().into_iter().collect(),
            })
            .map(|tenant| tenant.to_ascii_lowercase())
            .collect();
        Users { directory, adding, remembered: Mutex::default() }
    }

    /// Remembers what this node knows of an added user; past [`REMEMBERED`] users, about half are forgotten.
    fn remember(&self, tenant_id: &str, id: &str, change: impl FnOnce(&mut Known)) {
        let mut remembered = lock(&self.remembered);
        if remembered.len() >= REMEMBERED {
            let mut keep = false;
            remembered.retain(|_, _| {
                keep = !keep;
                keep
            });
        }
        change(remembered.entry((tenant_id.to_owned(), id.to_owned())).or_default());
    }

    /// Adds the caller's user to the store's directory when their token names a user to add, or writes the
    /// names it gives when they differ from the stored ones (at most once a minute of presence time per node). A
    /// name the token does not give is kept, or, for a new user, is the id (sign-in name) or the sign-in
    /// name (display name).
    pub(crate) async fn admit(&self, service: &Arc<Service>, caller: &Caller) -> Result<(), ServiceError> {
        let Some(token) = &caller.added else { return Ok(()) };
        let tenant_id = &caller.tenant_id;
        let known = lock(&self.remembered).get(&(tenant_id.clone(), token.id.clone())).cloned();
        if let Some(Known { names: Some(names), written }) = &known {
            let since = |at: &i64| service.now().as_millis().saturating_sub(*at);
            let recently = written.as_ref().is_some_and(|at| since(at) < RENAME_AFTER_MS);
            if agrees(names, token) || recently {
                return Ok(());
            }
        }
        let stored = service.directory_users(tenant_id.clone(), vec![token.id.clone()]).await?.pop().flatten();
        let stored = stored.map(user_of);
        if let Some(stored) = stored.as_ref().filter(|stored| agrees(stored, token)) {
            self.remember(tenant_id, &token.id, |known| known.names = Some(stored.clone()));
            return Ok(());
        }
        let keep = |given: &str, stored: Option<&str>, otherwise: &str| {
            if given.is_empty() {
                stored.unwrap_or(otherwise).to_owned()
            } else {
                given.to_owned()
            }
        };
        let user_principal_name = keep(
            &token.user_principal_name,
            stored.as_ref().map(|stored| stored.user_principal_name.as_str()),
            &token.id,
        );
        let display_name =
            keep(&token.display_name, stored.as_ref().map(|stored| stored.display_name.as_str()), &user_principal_name);
        let added = DirectoryUser { id: token.id.clone(), user_principal_name, display_name };
        service.put_directory_user(tenant_id.clone(), added.clone()).await?;
        self.remember(tenant_id, &token.id, |known| {
            *known = Known { names: Some(user_of(added)), written: Some(service.now().as_millis()) };
        });
        Ok(())
    }

    /// Which of `ids` (lowercase GUIDs) are users of `tenant_id`, in order.
    pub(crate) async fn exist(
        &self,
        service: &Arc<Service>,
        tenant_id: &str,
        ids: &[&str],
    ) -> Result<Vec<bool>, ServiceError> {
        let values: Vec<Option<u128>> = ids.iter().map(|id| presence_auth::guid_value(id)).collect();
        self.exist_parsed(service, tenant_id, ids, &values).await
    }

    /// [`Users::exist`], with the ids' values (`presence_auth::guid_value` of each) at hand.
    pub(crate) async fn exist_parsed(
        &self,
        service: &Arc<Service>,
        tenant_id: &str,
        ids: &[&str],
        values: &[Option<u128>],
    ) -> Result<Vec<bool>, ServiceError> {
        let mut known = self.directory.has_users(tenant_id, values);
        if known.iter().any(|known| !*known) {
            let remembered = lock(&self.remembered);
            for (id, known) in ids.iter().zip(known.iter_mut()).filter(|(_, known)| !**known) {
                *known = remembered.contains_key(&(tenant_id.to_owned(), (*id).to_owned()));
            }
        }
        if !self.adding.contains(tenant_id) || known.iter().all(|known| *known) {
            return Ok(known);
        }
        let asked: Vec<String> =
            ids.iter().zip(&known).filter(|(_, known)| !**known).map(|(id, _)| (*id).to_owned()).collect();
        // The store answers in the order asked: the ids not known yet, in order.
        let mut found = service.directory_users(tenant_id.to_owned(), asked).await?.into_iter();
        for (id, known) in ids.iter().zip(known.iter_mut()).filter(|(_, known)| !**known) {
            if found.next().flatten().is_some() {
                *known = true;
                self.remember(tenant_id, id, |_| {});
            }
        }
        Ok(known)
    }

    /// Whether `id` (a lowercase GUID) is a user of `tenant_id`.
    pub(crate) async fn exists(&self, service: &Arc<Service>, tenant_id: &str, id: &str) -> Result<bool, ServiceError> {
        Ok(self.exist(service, tenant_id, &[id]).await?.first().copied().unwrap_or(false))
    }

    /// The user of `tenant_id` with this object id or user principal name: a configured one, else an added
    /// one (with its names as the store has them).
    pub(crate) async fn find(
        &self,
        service: &Arc<Service>,
        tenant_id: &str,
        id_or_upn: &str,
    ) -> Result<Option<User>, ServiceError> {
        if let Some(user) = self.directory.user_by_id_or_upn(tenant_id, id_or_upn) {
            return Ok(Some(user.to_user()));
        }
        if !self.adding.contains(tenant_id) {
            return Ok(None);
        }
        let added = if presence_auth::is_guid(id_or_upn) {
            let ids = vec![id_or_upn.to_ascii_lowercase()];
            service.directory_users(tenant_id.to_owned(), ids).await?.pop().flatten()
        } else {
            service.directory_user_by_upn(tenant_id.to_owned(), id_or_upn.to_owned()).await?
        };
        Ok(added.map(user_of))
    }

    /// Up to `top` users of `tenant_id` from `from`: the configured ones in configuration order, then the
    /// added ones in id order; and where the next page starts, if more remain.
    pub(crate) async fn page(
        &self,
        service: &Arc<Service>,
        tenant_id: &str,
        from: ListFrom,
        top: usize,
    ) -> Result<(Vec<User>, Option<ListFrom>), ServiceError> {
        let tenant = self.directory.tenant(tenant_id);
        let configured = tenant.map_or(0, |tenant| tenant.user_count());
        let adding = self.adding.contains(tenant_id);
        let mut page = Vec::with_capacity(top.min(1024));
        let after = match from {
            ListFrom::Configured(offset) => {
                if let Some(tenant) = tenant {
                    page.extend(tenant.users_from(offset).take(top).map(|user| user.to_user()));
                }
                let next = offset.saturating_add(page.len());
                if next < configured {
                    return Ok((page, Some(ListFrom::Configured(next))));
                }
                if !adding {
                    return Ok((page, None));
                }
                if page.len() == top {
                    // Full: the next page starts with the added users, if there are any.
                    let any = service.list_directory_users(tenant_id.to_owned(), None, 1).await?;
                    return Ok((page, (!any.is_empty()).then_some(ListFrom::Configured(next))));
                }
                None
            }
            ListFrom::AddedAfter(id) => Some(id),
        };
        if !adding {
            return Ok((page, None));
        }
        let room = top - page.len();
        let added = service.list_directory_users(tenant_id.to_owned(), after, room + 1).await?;
        let more = added.len() > room;
        let shown: Vec<DirectoryUser> = added.into_iter().take(room).collect();
        let last = shown.last().map(|user| user.id.clone());
        // A user the configuration lists now, though once added, shows once: as configured.
        page.extend(
            shown.into_iter().filter(|user| self.directory.user_by_id(tenant_id, &user.id).is_none()).map(user_of),
        );
        Ok((page, last.filter(|_| more).map(ListFrom::AddedAfter)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skiptokens_are_offsets_or_ids() {
        assert_eq!(ListFrom::parse("0").unwrap(), ListFrom::Configured(0));
        assert_eq!(ListFrom::parse("250").unwrap(), ListFrom::Configured(250));
        let id = "0A000000-0000-4000-8000-00000000000A";
        assert_eq!(ListFrom::parse(id).unwrap(), ListFrom::AddedAfter(id.to_ascii_lowercase()));
        for bad in ["", "-1", "1e3", "12345678901234567890", "0a000000-0000-4000-8000-00000000000", "x"] {
            assert!(ListFrom::parse(bad).is_err(), "{bad:?}");
        }
        for from in [ListFrom::Configured(7), ListFrom::AddedAfter(id.to_ascii_lowercase())] {
            assert_eq!(ListFrom::parse(&from.token()).unwrap(), from);
        }
    }
}
