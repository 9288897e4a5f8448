//! The Graph permission table of each presence operation (presence-spec.md sections 1.3 and 4).
//!
//! | operation | delegated | application |
//! |---|---|---|
//! | read own presence | Presence.Read, Presence.Read.All or Presence.ReadWrite | Presence.Read.All or Presence.ReadWrite.All |
//! | read another user's presence | Presence.Read.All | Presence.Read.All or Presence.ReadWrite.All |
//! | getPresencesByUserId | Presence.Read.All | Presence.Read.All or Presence.ReadWrite.All |
//! | set/clear presence, preferred presence, status message | Presence.ReadWrite, own presence only | Presence.ReadWrite.All |
//! | work-location actions | Presence.ReadWrite, own presence only | not supported |
//! | read a user (`/users/{id}`, `/me`) | any token of the tenant | any token of the tenant |

use crate::verify::{AuthError, Caller, CallerKind};

/// An operation that needs a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// GET one presence.
    ReadPresence,
    /// getPresencesByUserId (and the filtered collection).
    ReadManyPresences,
    /// setPresence, clearPresence, set/clearUserPreferredPresence, setStatusMessage.
    WritePresence,
    /// The four work-location actions.
    WriteLocation,
    /// Reading a user of the directory.
    ReadUser,
    /// Listing the users of the tenant (`GET /users`).
    ListUsers,
}

/// Whose presence an operation touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// One user, by object id (lowercase).
    User(&'a str),
    /// Many users.
    Many,
}

const READ_ALL: &str = "Presence.Read.All";
const READ_WRITE_ALL: &str = "Presence.ReadWrite.All";

fn has(granted: &[String], wanted: &[&str]) -> bool {
    granted.iter().any(|permission| wanted.iter().any(|want| permission.eq_ignore_ascii_case(want)))
}

/// Allows or refuses `caller` performing `operation` on `target`.
pub fn authorize(caller: &Caller, operation: Operation, target: Target<'_>) -> Result<(), AuthError> {
    match &caller.kind {
        CallerKind::Application { roles } => {
            let (wanted, name): (&[&str], _) = match operation {
                Operation::ReadUser => return Ok(()),
                Operation::ListUsers => {
                    (&["User.Read.All", "User.ReadWrite.All", READ_ALL, READ_WRITE_ALL], "User.Read.All")
                }
                Operation::ReadPresence | Operation::ReadManyPresences => (&[READ_ALL, READ_WRITE_ALL], READ_ALL),
                Operation::WritePresence => (&[READ_WRITE_ALL], READ_WRITE_ALL),
                Operation::WriteLocation => return Err(AuthError::ApplicationNotSupported),
            };
            if has(roles, wanted) {
                Ok(())
            } else {
                Err(AuthError::MissingRole(name))
            }
        }
        CallerKind::Delegated { user_id, scopes } => {
            let is_self = matches!(target, Target::User(target) if target == user_id);
            let wanted: &[&str] = match operation {
                Operation::ReadUser => return Ok(()),
                Operation::ListUsers => &["User.ReadBasic.All", "User.Read.All", "User.ReadWrite.All", READ_ALL],
                Operation::ReadPresence if is_self => &["Presence.Read", READ_ALL, "Presence.ReadWrite"],
                Operation::ReadPresence | Operation::ReadManyPresences => &[READ_ALL],
                Operation::WritePresence | Operation::WriteLocation => &["Presence.ReadWrite"],
            };
            if !has(scopes, wanted) {
                return Err(AuthError::MissingScope);
            }
            let writes = matches!(operation, Operation::WritePresence | Operation::WriteLocation);
            if writes && !is_self {
                return Err(AuthError::OtherUser(user_id.clone()));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "11111111-1111-1111-1111-111111111111";
    const OTHER: &str = "22222222-2222-2222-2222-222222222222";

    fn delegated(scopes: &[&str]) -> Caller {
        Caller {
            tenant_id: "t".into(),
            app_id: "a".into(),
            kind: CallerKind::Delegated { user_id: ME.into(), scopes: scopes.iter().map(|s| s.to_string()).collect() },
            added: None,
        }
    }

    fn application(roles: &[&str]) -> Caller {
        Caller {
            tenant_id: "t".into(),
            app_id: "a".into(),
            kind: CallerKind::Application { roles: roles.iter().map(|s| s.to_string()).collect() },
            added: None,
        }
    }

    fn check(caller: &Caller, operation: Operation, target: Target<'_>, expected: Result<(), AuthError>) {
        assert_eq!(authorize(caller, operation, target), expected, "{caller:?} {operation:?} {target:?}");
    }

    #[test]
    fn delegated_table() {
        use Operation::*;
        let ok = Ok(());
        check(&delegated(&["Presence.Read"]), ReadPresence, Target::User(ME), ok.clone());
        check(&delegated(&["Presence.Read"]), ReadPresence, Target::User(OTHER), Err(AuthError::MissingScope));
        check(&delegated(&["Presence.Read.All"]), ReadPresence, Target::User(OTHER), ok.clone());
        check(&delegated(&["presence.read.all"]), ReadManyPresences, Target::Many, ok.clone());
        check(&delegated(&["Presence.ReadWrite"]), ReadPresence, Target::User(ME), ok.clone());
        check(&delegated(&["Presence.ReadWrite"]), ReadManyPresences, Target::Many, Err(AuthError::MissingScope));
        check(&delegated(&["Presence.ReadWrite"]), WritePresence, Target::User(ME), ok.clone());
        check(
            &delegated(&["Presence.ReadWrite"]),
            WritePresence,
            Target::User(OTHER),
            Err(AuthError::OtherUser(ME.into())),
        );
        check(&delegated(&["Presence.Read.All"]), WritePresence, Target::User(ME), Err(AuthError::MissingScope));
        check(&delegated(&["Presence.ReadWrite"]), WriteLocation, Target::User(ME), ok.clone());
        check(&delegated(&[]), ReadUser, Target::User(OTHER), ok.clone());
        check(&delegated(&["Presence.ReadWrite"]), ListUsers, Target::Many, Err(AuthError::MissingScope));
        check(&delegated(&["User.ReadBasic.All"]), ListUsers, Target::Many, ok.clone());
        check(&delegated(&["Presence.Read.All"]), ListUsers, Target::Many, ok.clone());
        check(&application(&["Presence.ReadWrite.All"]), ListUsers, Target::Many, ok.clone());
        check(&application(&[]), ListUsers, Target::Many, Err(AuthError::MissingRole("User.Read.All")));
    }

    #[test]
    fn application_table() {
        use Operation::*;
        let ok = Ok(());
        check(&application(&["Presence.Read.All"]), ReadPresence, Target::User(OTHER), ok.clone());
        check(&application(&["Presence.ReadWrite.All"]), ReadManyPresences, Target::Many, ok.clone());
        check(&application(&["Presence.ReadWrite.All"]), WritePresence, Target::User(OTHER), ok);
        check(
            &application(&["Presence.Read.All"]),
            WritePresence,
            Target::User(OTHER),
            Err(AuthError::MissingRole(READ_WRITE_ALL)),
        );
        check(
            &application(&["User.Read.All"]),
            ReadPresence,
            Target::User(OTHER),
            Err(AuthError::MissingRole(READ_ALL)),
        );
        check(
            &application(&["Presence.ReadWrite.All"]),
            WriteLocation,
            Target::User(OTHER),
            Err(AuthError::ApplicationNotSupported),
        );
    }
}
