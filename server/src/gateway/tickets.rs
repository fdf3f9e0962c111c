//! Short-lived stream tickets: what a browser's `EventSource` (or
//! `WebSocket`), which cannot set an `authorization` header, puts in the
//! URL instead of the token. `POST /events/tickets` with the token answers
//! one; it names the caller's role and expiry and is signed with HMAC-SHA256
//! under a key drawn at random when the gateway starts, so a ticket is good
//! on this process only, for `auth.stream_ticket_secs` (60 s), and only for the
//! stream routes.
//! The token itself never appears in a URL (where proxies and browser
//! history would keep it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{
    auth::{role_name, Caller},
    config::Role,
    error::ApiError,
    telemetry::{metrics::OutcomeLabels, Metrics},
};

/// How long a ticket opens streams by default (`auth.stream_ticket_secs`).
#[cfg(test)]
const TICKET_TTL: Duration = Duration::from_secs(60);

/// The query parameter carrying a ticket.
pub(crate) const TICKET_PARAM: &str = "ticket";

type HmacSha256 = Hmac<Sha256>;

/// Issues and checks tickets with this process's key.
pub(crate) struct Tickets {
    key: [u8; 32],
    ttl: Duration,
}

/// A ticket and when it expires (Unix milliseconds).
pub(crate) struct Issued {
    pub ticket: String,
    pub expires_at_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn role_from_name(name: &str) -> Option<Role> {
    match name {
        "reader" => Some(Role::Reader),
        "operator" => Some(Role::Operator),
        "admin" => Some(Role::Admin),
        _ => None,
    }
}

impl Tickets {
    /// A fresh random key; tickets live `ttl`.
    pub(crate) fn new(ttl: Duration) -> Self {
        Tickets {
            key: rand::random(),
            ttl,
        }
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length");
        mac.update(payload.as_bytes());
        mac
    }

    /// A ticket for `caller`: `<role>.<expiry ms>.<name, base64url>.<mac, base64url>`.
    pub(crate) fn issue(&self, caller: &Caller) -> Issued {
        self.issue_at(caller, now_ms())
    }

    fn issue_at(&self, caller: &Caller, now_ms: u64) -> Issued {
        let expires_at_ms = now_ms + self.ttl.as_millis() as u64;
        let payload = format!(
            "{}.{expires_at_ms}.{}",
            role_name(caller.role),
            URL_SAFE_NO_PAD.encode(caller.name.as_bytes())
        );
        let mac = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        Issued {
            ticket: format!("{payload}.{mac}"),
            expires_at_ms,
        }
    }

    /// The caller a ticket stands for, if it is this process's, unexpired
    /// and has at least the role `needed`.
    pub(crate) fn check(&self, ticket: &str, needed: Role) -> Result<Caller, ApiError> {
        self.check_at(ticket, needed, now_ms())
    }

    fn check_at(&self, ticket: &str, needed: Role, now_ms: u64) -> Result<Caller, ApiError> {
        let refused = || ApiError::Unauthenticated("the stream ticket is not valid".into());
        let (payload, mac) = ticket.rsplit_once('.').ok_or_else(refused)?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| refused())?;
        // Constant time (hmac's verify).
        self.mac(payload)
            .verify_slice(&mac)
            .map_err(|_| refused())?;
        let mut parts = payload.splitn(3, '.');
        let (Some(role), Some(expires), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(refused());
        };
        let role = role_from_name(role).ok_or_else(refused)?;
        let expires: u64 = expires.parse().map_err(|_| refused())?;
        if now_ms >= expires {
            return Err(ApiError::Unauthenticated(
                "the stream ticket expired; get a new one with POST /events/tickets".into(),
            ));
        }
        let name = URL_SAFE_NO_PAD
            .decode(name)
            .ok()
            .and_then(|n| String::from_utf8(n).ok())
            .ok_or_else(refused)?;
        if role < needed {
            return Err(ApiError::PermissionDenied(format!(
                "this call needs the {} role; the ticket has {}",
                role_name(needed),
                role_name(role)
            )));
        }
        Ok(Caller { name, role })
    }
}

/// Counts a ticket outcome.
pub(crate) fn count(metrics: &Metrics, outcome: &str) {
    metrics
        .stream_tickets
        .get_or_create(&OutcomeLabels {
            outcome: outcome.into(),
        })
        .inc();
}

/// The `ticket` query parameter of `query`, if any.
pub(crate) fn from_query(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == TICKET_PARAM)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader() -> Caller {
        Caller {
            name: "dash.boards".into(),
            role: Role::Reader,
        }
    }

    #[test]
    fn a_ticket_stands_for_its_caller_until_it_expires() {
        let t = Tickets::new(TICKET_TTL);
        let issued = t.issue_at(&reader(), 1_000);
        let caller = t.check_at(&issued.ticket, Role::Reader, 1_001).unwrap();
        assert_eq!(
            (caller.name.as_str(), caller.role),
            ("dash.boards", Role::Reader)
        );
        assert_eq!(issued.expires_at_ms, 61_000);
        let late = t
            .check_at(&issued.ticket, Role::Reader, 61_000)
            .unwrap_err();
        assert!(late.to_string().contains("expired"), "{late}");
        let denied = t
            .check_at(&issued.ticket, Role::Operator, 1_001)
            .unwrap_err();
        assert_eq!(denied.grpc_code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn forged_or_foreign_tickets_are_refused() {
        let t = Tickets::new(TICKET_TTL);
        let issued = t.issue_at(&reader(), 1_000);
        // Another process's key.
        let other = Tickets::new(TICKET_TTL);
        assert!(other.check_at(&issued.ticket, Role::Reader, 1_001).is_err());
        // A raised role or a later expiry breaks the signature.
        let (_, rest) = issued.ticket.split_once('.').unwrap();
        let raised = format!("admin.{rest}");
        assert!(t.check_at(&raised, Role::Reader, 1_001).is_err());
        let later = issued.ticket.replace("61000", "99000");
        assert!(t.check_at(&later, Role::Reader, 1_001).is_err());
        for junk in ["", ".", "reader.1.x.y", "a.b.c.d.e"] {
            assert!(t.check_at(junk, Role::Reader, 1_001).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn the_ticket_is_found_in_the_query() {
        assert_eq!(
            from_query(Some("start=oldest&ticket=a.b%2Ec")).as_deref(),
            Some("a.b.c")
        );
        assert_eq!(from_query(Some("start=oldest")), None);
        assert_eq!(from_query(None), None);
    }
}
