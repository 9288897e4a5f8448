//! From method and path to the operation they name, the way Graph's OData router does it.
//!
//! Segments match case-insensitively; action segments may carry the `microsoft.graph.` namespace. A path
//! that names nothing is `400 Resource not found for the segment '…'`; a known path with the wrong method is
//! `405`. Resolution never looks at the body, the token or the store.

use axum::http::Method;

use crate::error::ApiError;

/// How a presence is addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresencePath {
    /// `/me/presence`.
    Me,
    /// `/users/{id}/presence`.
    User(String),
    /// `/communications/presences/{id}`.
    Communications(String),
}

/// How a user is addressed on `/users/{id}` and `/me`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserPath {
    /// `/me`.
    Me,
    /// `/users/{id or userPrincipalName}`.
    IdOrUpn(String),
}

/// A bound presence action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `setPresence`.
    SetPresence,
    /// `clearPresence`.
    ClearPresence,
    /// `setUserPreferredPresence`.
    SetUserPreferredPresence,
    /// `clearUserPreferredPresence`.
    ClearUserPreferredPresence,
    /// `setStatusMessage`.
    SetStatusMessage,
    /// `setManualLocation`.
    SetManualLocation,
    /// `setAutomaticLocation`.
    SetAutomaticLocation,
    /// `clearLocation`.
    ClearLocation,
    /// `clearAutomaticLocation`.
    ClearAutomaticLocation,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 9] = [
        Action::SetPresence,
        Action::ClearPresence,
        Action::SetUserPreferredPresence,
        Action::ClearUserPreferredPresence,
        Action::SetStatusMessage,
        Action::SetManualLocation,
        Action::SetAutomaticLocation,
        Action::ClearLocation,
        Action::ClearAutomaticLocation,
    ];

    /// The action's name as Graph spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Action::SetPresence => "setPresence",
            Action::ClearPresence => "clearPresence",
            Action::SetUserPreferredPresence => "setUserPreferredPresence",
            Action::ClearUserPreferredPresence => "clearUserPreferredPresence",
            Action::SetStatusMessage => "setStatusMessage",
            Action::SetManualLocation => "setManualLocation",
            Action::SetAutomaticLocation => "setAutomaticLocation",
            Action::ClearLocation => "clearLocation",
            Action::ClearAutomaticLocation => "clearAutomaticLocation",
        }
    }

    /// True for the four work-location actions.
    pub const fn is_location(self) -> bool {
        matches!(
            self,
            Action::SetManualLocation
                | Action::SetAutomaticLocation
                | Action::ClearLocation
                | Action::ClearAutomaticLocation
        )
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// GET one presence.
    GetPresence(PresencePath),
    /// POST a bound action on one presence.
    PresenceAction(PresencePath, Action),
    /// POST `/communications/getPresencesByUserId`.
    GetPresencesByUserId,
    /// GET `/communications/presences` (with `$filter=id in (...)`).
    ListPresences,
    /// GET a user.
    GetUser(UserPath),
    /// GET `/users`: the caller's tenant's users, a page at a time.
    ListUsers,
    /// POST `/$batch`.
    Batch,
    /// GET or POST `/subscriptions`.
    Subscriptions,
    /// GET, PATCH or DELETE `/subscriptions/{id}`.
    Subscription(String),
    /// POST `/subscriptions/{id}/reauthorize`.
    Reauthorize(String),
}

impl Endpoint {
    /// A short name of the endpoint, for metrics and logs (a bounded set of values).
    pub fn label(&self) -> &'static str {
        match self {
            Endpoint::GetPresence(_) => "getPresence",
            Endpoint::PresenceAction(_, action) => action.name(),
            Endpoint::GetPresencesByUserId => "getPresencesByUserId",
            Endpoint::ListPresences => "listPresences",
            Endpoint::GetUser(_) => "getUser",
            Endpoint::ListUsers => "listUsers",
            Endpoint::Batch => "batch",
            Endpoint::Subscriptions => "subscriptions",
            Endpoint::Subscription(_) => "subscription",
            Endpoint::Reauthorize(_) => "reauthorize",
        }
    }
}

/// `name` without the optional `microsoft.graph.` namespace, when it then equals `expected` (ignoring case).
fn is_operation(segment: &str, expected: &str) -> bool {
    let bare = match segment.get(..16) {
        Some(prefix) if prefix.eq_ignore_ascii_case("microsoft.graph.") => &segment[16..],
        _ => segment,
    };
    bare.eq_ignore_ascii_case(expected)
}

/// The route a Graph request resolved to, for metrics and logs (set on the response by the router).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouteLabel(pub(crate) &'static str);

fn only(method: &Method, allowed: Method, endpoint: Endpoint) -> Result<Endpoint, ApiError> {
    if *method == allowed {
        Ok(endpoint)
    } else if allowed == Method::GET {
        Err(ApiError::MethodNotAllowed("GET"))
    } else {
        Err(ApiError::MethodNotAllowed("POST"))
    }
}

fn presence(method: &Method, path: PresencePath, rest: &[&str]) -> Result<Endpoint, ApiError> {
    match rest {
        [] => only(method, Method::GET, Endpoint::GetPresence(path)),
        [segment] => {
            let action = Action::ALL
                .into_iter()
                .find(|action| is_operation(segment, action.name()))
                .ok_or_else(|| ApiError::UnknownSegment((*segment).to_owned()))?;
            only(method, Method::POST, Endpoint::PresenceAction(path, action))
        }
        [segment, ..] => Err(ApiError::UnknownSegment((*segment).to_owned())),
    }
}

/// Resolves the decoded path segments after the version segment.
pub fn resolve(method: &Method, segments: &[&str]) -> Result<Endpoint, ApiError> {
    let lower = |index: usize| segments.get(index).map(|segment| segment.to_ascii_lowercase());
    match lower(0).as_deref() {
        Some("me") => match segments.get(1) {
            None => only(method, Method::GET, Endpoint::GetUser(UserPath::Me)),
            Some(segment) if segment.eq_ignore_ascii_case("presence") => {
                presence(method, PresencePath::Me, &segments[2..])
            }
            Some(segment) => Err(ApiError::UnknownSegment((*segment).to_owned())),
        },
        Some("users") => match (segments.get(1), segments.get(2)) {
            (None, _) => only(method, Method::GET, Endpoint::ListUsers),
            (Some(id), None) => only(method, Method::GET, Endpoint::GetUser(UserPath::IdOrUpn((*id).to_owned()))),
            (Some(id), Some(segment)) if segment.eq_ignore_ascii_case("presence") => {
                presence(method, PresencePath::User((*id).to_owned()), &segments[3..])
            }
            (Some(_), Some(segment)) => Err(ApiError::UnknownSegment((*segment).to_owned())),
        },
        Some("communications") => match segments.get(1) {
            Some(segment) if segment.eq_ignore_ascii_case("presences") => match segments.get(2) {
                None => only(method, Method::GET, Endpoint::ListPresences),
                Some(id) => presence(method, PresencePath::Communications((*id).to_owned()), &segments[3..]),
            },
            Some(segment) if is_operation(segment, "getPresencesByUserId") => match segments.get(2) {
                None => only(method, Method::POST, Endpoint::GetPresencesByUserId),
                Some(segment) => Err(ApiError::UnknownSegment((*segment).to_owned())),
            },
            Some(segment) => Err(ApiError::UnknownSegment((*segment).to_owned())),
            None => Err(ApiError::UnknownSegment(segments[0].to_owned())),
        },
        Some("subscriptions") => match (segments.get(1), segments.get(2), segments.get(3)) {
            (None, _, _) if *method == Method::GET || *method == Method::POST => Ok(Endpoint::Subscriptions),
            (None, _, _) => Err(ApiError::MethodNotAllowed("GET, POST")),
            (Some(id), None, _) if [Method::GET, Method::PATCH, Method::DELETE].contains(method) => {
                Ok(Endpoint::Subscription((*id).to_owned()))
            }
            (Some(_), None, _) => Err(ApiError::MethodNotAllowed("GET, PATCH, DELETE")),
            (Some(id), Some(segment), None) if is_operation(segment, "reauthorize") => {
                only(method, Method::POST, Endpoint::Reauthorize((*id).to_owned()))
            }
            (Some(_), Some(segment), _) => Err(ApiError::UnknownSegment((*segment).to_owned())),
        },
        Some("$batch") => match segments.get(1) {
            None => only(method, Method::POST, Endpoint::Batch),
            Some(segment) => Err(ApiError::UnknownSegment((*segment).to_owned())),
        },
        Some(_) => Err(ApiError::UnknownSegment(segments[0].to_owned())),
        None => Err(ApiError::UnknownSegment(String::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: Method, path: &str, expected: Result<Endpoint, &str>) {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let got = resolve(&method, &segments).map_err(|error| match error {
            ApiError::UnknownSegment(_) => "segment",
            ApiError::MethodNotAllowed(_) => "method",
            _ => "other",
        });
        assert_eq!(got, expected, "{method} {path}");
    }

    #[test]
    fn graph_paths_resolve() {
        use Endpoint::*;
        let user = || PresencePath::User("u1".into());
        check(Method::GET, "me/presence", Ok(GetPresence(PresencePath::Me)));
        check(Method::GET, "users/u1/presence", Ok(GetPresence(user())));
        check(Method::GET, "Users/u1/Presence", Ok(GetPresence(user())));
        check(Method::GET, "communications/presences/u1", Ok(GetPresence(PresencePath::Communications("u1".into()))));
        check(Method::POST, "users/u1/presence/setPresence", Ok(PresenceAction(user(), Action::SetPresence)));
        check(Method::POST, "users/u1/presence/setpresence", Ok(PresenceAction(user(), Action::SetPresence)));
        check(
            Method::POST,
            "users/u1/presence/microsoft.graph.clearUserPreferredPresence",
            Ok(PresenceAction(user(), Action::ClearUserPreferredPresence)),
        );
        check(
            Method::POST,
            "communications/presences/u1/setManualLocation",
            Ok(PresenceAction(PresencePath::Communications("u1".into()), Action::SetManualLocation)),
        );
        check(Method::POST, "communications/getPresencesByUserId", Ok(GetPresencesByUserId));
        check(Method::POST, "communications/microsoft.graph.getPresencesByUserId", Ok(GetPresencesByUserId));
        check(Method::GET, "communications/presences", Ok(ListPresences));
        check(
            Method::GET,
            "users/adele@contoso.example",
            Ok(GetUser(UserPath::IdOrUpn("adele@contoso.example".into()))),
        );
        check(Method::GET, "me", Ok(GetUser(UserPath::Me)));
        check(Method::GET, "users", Ok(ListUsers));
        check(Method::POST, "$batch", Ok(Batch));
        check(Method::POST, "$BATCH", Ok(Batch));
        check(Method::POST, "subscriptions", Ok(Subscriptions));
        check(Method::GET, "Subscriptions", Ok(Subscriptions));
        check(Method::PATCH, "subscriptions/s1", Ok(Subscription("s1".into())));
        check(Method::DELETE, "subscriptions/s1", Ok(Subscription("s1".into())));
        check(Method::POST, "subscriptions/s1/microsoft.graph.reauthorize", Ok(Reauthorize("s1".into())));
    }

    #[test]
    fn wrong_methods_and_unknown_segments_are_refused() {
        check(Method::PATCH, "users/u1/presence", Err("method"));
        check(Method::DELETE, "me/presence", Err("method"));
        check(Method::GET, "users/u1/presence/setPresence", Err("method"));
        check(Method::GET, "communications/getPresencesByUserId", Err("method"));
        check(Method::POST, "communications/presences", Err("method"));
        check(Method::POST, "users/u1/presence/setPresenceNow", Err("segment"));
        check(Method::POST, "users/u1/presence/microsoft.graph.", Err("segment"));
        check(Method::GET, "users/u1/calendar", Err("segment"));
        check(Method::GET, "groups", Err("segment"));
        check(Method::POST, "users", Err("method"));
        check(Method::GET, "communications/calls", Err("segment"));
        check(Method::GET, "", Err("segment"));
        check(Method::POST, "users/u1/presence/setPresence/extra", Err("segment"));
        check(Method::GET, "$batch", Err("method"));
        check(Method::DELETE, "subscriptions", Err("method"));
        check(Method::POST, "subscriptions/s1", Err("method"));
        check(Method::GET, "subscriptions/s1/reauthorize", Err("method"));
        check(Method::POST, "subscriptions/s1/renew", Err("segment"));
    }
}
