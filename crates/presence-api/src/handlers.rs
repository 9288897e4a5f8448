//! The presence and directory handlers: from a resolved endpoint and a verified caller to a Graph
//! response, through the engine.

use std::borrow::Cow;
use std::collections::HashSet;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use presence_auth::{authorize, AuthError, Caller, Operation, Target};
use presence_store::UserKey;

use crate::users::ListFrom;
use serde_json::{json, Value};

use crate::action::decode_action;
use crate::body::{content_type, query_option};
use crate::error::ApiError;
use crate::route::{Action, PresencePath, UserPath};
use crate::state::AppState;
use crate::wire::{odata_bytes, odata_json, PresenceCollection, PresenceJson, UserJson, PRESENCE_PROPERTIES};

/// Most ids one getPresencesByUserId call (or one `$filter=id in (...)`) may name.
pub const MAX_IDS_PER_REQUEST: usize = 650;

/// Users per page of `GET /users`, by default and at most (Graph's).
const DEFAULT_USERS_PAGE: usize = 100;
const MAX_USERS_PAGE: usize = 999;

/// One Graph request's context: the state, the API version, the verified caller and the query.
pub(crate) struct Context<'a> {
    pub(crate) state: &'a AppState,
    pub(crate) version: &'static str,
    pub(crate) caller: &'a Caller,
    pub(crate) query: &'a [(String, String)],
}

/// `id in ('a','b')` → `["a", "b"]`.
pub(crate) fn parse_id_filter(filter: &str) -> Result<Vec<&str>, ApiError> {
    presence_notify::subscription::parse_id_in(filter).ok_or_else(|| {
        ApiError::BadRequest(format!("Invalid filter clause '{filter}': only id in ('id1','id2',...) is supported."))
    })
}

/// The store key of a user of the caller's tenant.
fn key(caller: &Caller, user_id: &str) -> UserKey {
    UserKey { tenant_id: caller.tenant_id.clone(), user_id: user_id.to_owned() }
}

impl Context<'_> {
    /// The user id a presence path names, after checking the caller may perform `operation` on it.
    async fn presence_user(&self, path: &PresencePath, operation: Operation) -> Result<String, ApiError> {
        let user_id = match path {
            PresencePath::Me => self.caller.user_id().ok_or(AuthError::MeRequiresDelegated)?.to_owned(),
            PresencePath::User(id) | PresencePath::Communications(id) => {
                if !presence_auth::is_guid(id) {
                    return Err(ApiError::UserIdRequired(id.clone()));
                }
                id.to_ascii_lowercase()
            }
        };
        authorize(self.caller, operation, Target::User(&user_id))?;
        if !self.state.inner.users.exists(self.state.service(), &self.caller.tenant_id, &user_id).await? {
            return Err(ApiError::UserNotFound(user_id));
        }
        Ok(user_id)
    }

    fn owner_view(&self, user_id: &str) -> bool {
        self.caller.user_id() == Some(user_id)
    }

    pub(crate) async fn get_presence(&self, path: &PresencePath) -> Result<Response, ApiError> {
        let user_id = self.presence_user(path, Operation::ReadPresence).await?;
        let selected = self.selection()?;
        let presence = self.state.service().read(key(self.caller, &user_id)).await?;
        let context = match path {
            PresencePath::Communications(_) => {
                format!("{}/{}/$metadata#communications/presences/$entity", self.state.public_url(), self.version)
            }
            _ => format!("{}/{}/$metadata#users('{user_id}')/presence/$entity", self.state.public_url(), self.version),
        };
        let json = PresenceJson::known(&user_id, presence, self.owner_view(&user_id), Some(context));
        match selected {
            None => odata_json(StatusCode::OK, &json),
            Some(selected) => {
                let Ok(Value::Object(mut object)) = serde_json::to_value(&json) else {
                    return Err(ApiError::Internal("presence did not serialise to an object".into()));
                };
                object.retain(|name, _| name == "@odata.context" || name == "id" || selected.contains(name.as_str()));
                odata_json(StatusCode::OK, &object)
            }
        }
    }

    /// The properties named by `$select`, if given.
    fn selection(&self) -> Result<Option<HashSet<&'static str>>, ApiError> {
        let Some(select) = query_option(self.query, "$select") else {
            return Ok(None);
        };
        select
            .split(',')
            .map(str::trim)
            .map(|name| {
                PRESENCE_PROPERTIES.iter().copied().find(|known| known.eq_ignore_ascii_case(name)).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "Could not find a property named '{name}' on type 'microsoft.graph.presence'."
                    ))
                })
            })
            .collect::<Result<HashSet<_>, _>>()
            .map(Some)
    }

    pub(crate) async fn presence_action(
        &self,
        path: &PresencePath,
        action: Action,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Response, ApiError> {
        let operation = if action.is_location() { Operation::WriteLocation } else { Operation::WritePresence };
        let user_id = self.presence_user(path, operation).await?;
        let command = decode_action(action, &self.caller.app_id, content_type(headers), body)?;
        self.state.service().apply(key(self.caller, &user_id), command).await?;
        Ok(if action.is_location() { StatusCode::NO_CONTENT } else { StatusCode::OK }.into_response())
    }

    pub(crate) async fn many_presences(&self, ids: &[&str], context_url: String) -> Result<Response, ApiError> {
        if ids.is_empty() {
            return Err(ApiError::BadRequest("At least one user id is required.".into()));
        }
        if ids.len() > MAX_IDS_PER_REQUEST {
            return Err(ApiError::BadRequest(format!(
                "Too many user ids: {} were given, at most {MAX_IDS_PER_REQUEST} are allowed.",
                ids.len()
            )));
        }
        let mut unique: Vec<Cow<'_, str>> = Vec::with_capacity(ids.len());
        let mut values = Vec::with_capacity(ids.len());
        let mut seen = HashSet::with_capacity_and_hasher(ids.len(), foldhash::fast::RandomState::default());
        for id in ids {
            let Some(value) = presence_auth::guid_value(id) else {
                return Err(ApiError::UserIdRequired((*id).to_owned()));
            };
            if seen.insert(value) {
                // Ids are usually lowercase already: then no copy.
                let uppercase = id.bytes().any(|byte| byte.is_ascii_uppercase());
                unique.push(if uppercase { Cow::Owned(id.to_ascii_lowercase()) } else { Cow::Borrowed(*id) });
                values.push(Some(value));
            }
        }
        let asked: Vec<&str> = unique.iter().map(|id| id.as_ref()).collect();
        let users = &self.state.inner.users;
        let exist = users.exist_parsed(self.state.service(), &self.caller.tenant_id, &asked, &values).await?;
        let known: Vec<&str> = asked.iter().zip(exist).filter(|(_, exists)| *exists).map(|(id, _)| *id).collect();
        let keys: Vec<UserKey> = known.iter().map(|id| key(self.caller, id)).collect();
        let presences = self.state.service().read_many(keys).await?;
        let mut presences = known.into_iter().zip(presences).peekable();
        let mut collection = PresenceCollection::new(&context_url, asked.len());
        for id in asked {
            match presences.next_if(|(known_id, _)| *known_id == id) {
                Some((_, presence)) => collection.push(&PresenceJson::known(id, presence, self.owner_view(id), None)),
                None => collection.push(&PresenceJson::unknown(id)),
            }
        }
        Ok(odata_bytes(StatusCode::OK, collection.finish()))
    }

    /// The caller's tenant's users, the configured ones in configuration order, then those added from
    /// trusted tokens in id order: `$top` of them (default 100, at most 999) from the `$skiptoken`, with
    /// `@odata.nextLink` while more remain.
    pub(crate) async fn list_users(&self) -> Result<Response, ApiError> {
        authorize(self.caller, Operation::ListUsers, Target::Many)?;
        let top = match query_option(self.query, "$top") {
            None => DEFAULT_USERS_PAGE,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|top| (1..=MAX_USERS_PAGE).contains(top))
                .ok_or_else(|| ApiError::BadRequest(format!("$top must be between 1 and {MAX_USERS_PAGE}.")))?,
        };
        let from = match query_option(self.query, "$skiptoken") {
            None => ListFrom::Configured(0),
            Some(text) => ListFrom::parse(text)?,
        };
        let (users, next) =
            self.state.inner.users.page(self.state.service(), &self.caller.tenant_id, from, top).await?;
        let page: Vec<Value> = users
            .iter()
            .map(|user| {
                json!({ "id": user.id, "displayName": user.display_name, "userPrincipalName": user.user_principal_name })
            })
            .collect();
        let base = format!("{}/{}", self.state.public_url(), self.version);
        let mut body = json!({ "@odata.context": format!("{base}/$metadata#users"), "value": page });
        if let Some(next) = next {
            body["@odata.nextLink"] = format!("{base}/users?$top={top}&$skiptoken={}", next.token()).into();
        }
        odata_json(StatusCode::OK, &body)
    }

    pub(crate) async fn get_user(&self, path: &UserPath) -> Result<Response, ApiError> {
        let wanted = match path {
            UserPath::Me => self.caller.user_id().ok_or(AuthError::MeRequiresDelegated)?,
            UserPath::IdOrUpn(id) => id.as_str(),
        };
        let user = self.state.inner.users.find(self.state.service(), &self.caller.tenant_id, wanted).await?;
        let user = user.ok_or_else(|| {
            ApiError::ResourceNotFound(match path {
                UserPath::Me => "me".to_owned(),
                UserPath::IdOrUpn(id) => id.clone(),
            })
        })?;
        authorize(self.caller, Operation::ReadUser, Target::User(&user.id))?;
        odata_json(
            StatusCode::OK,
            &UserJson {
                context: format!("{}/{}/$metadata#users/$entity", self.state.public_url(), self.version),
                id: &user.id,
                display_name: &user.display_name,
                user_principal_name: &user.user_principal_name,
            },
        )
    }
}
