//! Bearer-token access control shared by gRPC and REST. Tokens are compared
//! as sha256 digests in constant time (every configured token is checked, so
//! timing says nothing about which one nearly matched) and never logged.

use std::sync::RwLock;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{
    config::{AuthConfig, Role},
    error::ApiError,
};

struct Token {
    digest: [u8; 32],
    role: Role,
    name: String,
}

/// Who the caller is, once authenticated.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The token holder's name (`anonymous` or `open` when no token was needed).
    pub name: String,
    /// The caller's role.
    pub role: Role,
}

/// The configured tokens and policy. The tokens' digests can be reloaded
/// (SIGHUP) from their files without a restart.
pub(crate) struct Auth {
    config: AuthConfig,
    tokens: RwLock<Vec<Token>>,
    allow_anonymous_reads: bool,
}

/// The tokens of `config` with their digests, read from their sources now.
fn resolve(config: &AuthConfig) -> anyhow::Result<Vec<Token>> {
    config
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let digest = t
                .digest()
                .with_context(|| format!("auth.tokens[{i}].token"))?;
            Ok(Token {
                digest,
                role: t.role,
                name: if t.name.is_empty() {
                    format!("{:?} token", t.role).to_lowercase()
                } else {
                    t.name.clone()
                },
            })
        })
        .collect()
}

impl Auth {
    /// Builds the checker from configuration, reading token files and
    /// variables.
    pub(crate) fn new(config: &AuthConfig) -> anyhow::Result<Self> {
        Ok(Auth {
            tokens: RwLock::new(resolve(config)?),
            config: config.clone(),
            allow_anonymous_reads: config.allow_anonymous_reads,
        })
    }

    /// Reads every token's file and variable again (rotation on SIGHUP).
    /// On any error the current tokens stay. Returns how many are in force.
    pub(crate) fn reload(&self) -> anyhow::Result<usize> {
        let tokens = resolve(&self.config)?;
        let count = tokens.len();
        *self.tokens.write().expect("auth lock") = tokens;
        Ok(count)
    }

    /// True when no tokens are configured: every caller has every role.
    pub(crate) fn is_open(&self) -> bool {
        self.config.tokens.is_empty()
    }

    /// Checks an `authorization` header value against the role `needed`.
    pub(crate) fn check(
        &self,
        authorization: Option<&str>,
        needed: Role,
    ) -> Result<Caller, ApiError> {
        if self.is_open() {
            return Ok(Caller {
                name: "open".into(),
                role: Role::Admin,
            });
        }
        let Some(header) = authorization else {
            if needed == Role::Reader && self.allow_anonymous_reads {
                return Ok(Caller {
                    name: "anonymous".into(),
                    role: Role::Reader,
                });
            }
            return Err(ApiError::Unauthenticated(
                "missing credentials: send `authorization: Bearer <token>`".into(),
            ));
        };
        let presented = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::Unauthenticated("authorization must be `Bearer <token>`".into())
            })?;
        let caller = self
            .find(presented.trim())
            .ok_or_else(|| ApiError::Unauthenticated("unknown token".into()))?;
        if caller.role < needed {
            return Err(ApiError::PermissionDenied(format!(
                "this call needs the {} role; the token has {}",
                role_name(needed),
                role_name(caller.role)
            )));
        }
        Ok(caller)
    }

    fn find(&self, presented: &str) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for token in self.tokens.read().expect("auth lock").iter() {
            if bool::from(token.digest.ct_eq(&digest)) {
                found = Some(Caller {
                    name: token.name.clone(),
                    role: token.role,
                });
            }
        }
        found
    }
}

/// Lower-case role name.
pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Reader => "reader",
        Role::Operator => "operator",
        Role::Admin => "admin",
    }
}

/// The role a gRPC method needs; `None` for health and reflection, which
/// are open so load balancers and grpcurl work without credentials.
pub(crate) fn grpc_role(path: &str) -> Option<Role> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    match service {
        "grpc.health.v1.Health"
        | "grpc.reflection.v1.ServerReflection"
        | "grpc.reflection.v1alpha.ServerReflection" => None,
        "valence.lifecycle.v1.SingletonAdminService" => Some(Role::Admin),
        "valence.lifecycle.v1.LifecycleService" => Some(match method {
            "RequestAccount" | "RetryAccountRequest" => Role::Operator,
            _ => Role::Reader,
        }),
        "valence.lifecycle.v1.RuleService" => Some(match method {
            "GetRule" | "ListRules" | "EvaluateRule" => Role::Reader,
            _ => Role::Operator,
        }),
        _ => Some(Role::Reader),
    }
}

/// The role a REST route needs; `None` for /health and /metrics. HEAD is
/// a GET without the body (axum answers it with the GET handler), so it
/// needs what GET needs.
pub(crate) fn http_role(method: &http::Method, path: &str) -> Option<Role> {
    match path {
        "/health" | "/metrics" => None,
        // The console's page and assets: what they show comes from calls
        // that send the token.
        "/" | "/console" => None,
        _ if path.starts_with("/console/") => None,
        // A stream ticket opens only what a GET would.
        "/events/tickets" => Some(Role::Reader),
        // As SingletonAdminService over gRPC.
        "/singletons" => Some(Role::Admin),
        _ if path.starts_with("/singletons/") => Some(Role::Admin),
        _ if method == http::Method::GET || method == http::Method::HEAD => Some(Role::Reader),
        _ => Some(Role::Operator),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;

    fn auth(anonymous: bool) -> Auth {
        Auth::new(&AuthConfig {
            tokens: vec![
                TokenConfig {
                    token: "reader-token-0123456789".into(),
                    role: Role::Reader,
                    name: "r".into(),
                },
                TokenConfig {
                    token: "operator-token-0123456789".into(),
                    role: Role::Operator,
                    name: String::new(),
                },
            ],
            allow_anonymous_reads: anonymous,
            ..AuthConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn digest_and_file_tokens_work_and_files_rotate_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("reader.token");
        std::fs::write(&file, "first-reader-token-0123\n").unwrap();
        let admin_digest = hex::encode(Sha256::digest(b"admin-token-0123456789"));
        let a = Auth::new(&AuthConfig {
            tokens: vec![
                TokenConfig {
                    token: format!("file:{}", file.display()),
                    role: Role::Reader,
                    name: "dashboards".into(),
                },
                TokenConfig {
                    token: format!("sha256:{admin_digest}"),
                    role: Role::Admin,
                    name: String::new(),
                },
            ],
            allow_anonymous_reads: false,
            ..AuthConfig::default()
        })
        .unwrap();
        let reader = |a: &Auth, t: &str| a.check(Some(&format!("Bearer {t}")), Role::Reader);
        assert_eq!(
            reader(&a, "first-reader-token-0123").unwrap().name,
            "dashboards"
        );
        assert_eq!(
            reader(&a, "admin-token-0123456789").unwrap().role,
            Role::Admin
        );
        // The digest itself is not a token.
        assert!(reader(&a, &admin_digest).is_err());

        std::fs::write(&file, "second-reader-token-0123").unwrap();
        assert!(
            reader(&a, "first-reader-token-0123").is_ok(),
            "until reloaded"
        );
        assert_eq!(a.reload().unwrap(), 2);
        assert!(reader(&a, "first-reader-token-0123").is_err());
        assert!(reader(&a, "second-reader-token-0123").is_ok());

        // A failed reload keeps the tokens in force.
        std::fs::remove_file(&file).unwrap();
        assert!(a.reload().is_err());
        assert!(reader(&a, "second-reader-token-0123").is_ok());
    }

    #[test]
    fn roles_are_ordered_and_enforced() {
        let a = auth(false);
        assert!(a
            .check(Some("Bearer reader-token-0123456789"), Role::Reader)
            .is_ok());
        let denied = a
            .check(Some("Bearer reader-token-0123456789"), Role::Operator)
            .unwrap_err();
        assert_eq!(denied.grpc_code(), tonic::Code::PermissionDenied);
        assert!(denied.to_string().contains("operator"));
        assert_eq!(
            a.check(Some("Bearer operator-token-0123456789"), Role::Operator)
                .unwrap()
                .role,
            Role::Operator
        );
    }

    #[test]
    fn missing_or_wrong_tokens_are_unauthenticated() {
        let a = auth(false);
        for header in [None, Some("Bearer nope"), Some("Basic abc")] {
            let err = a.check(header, Role::Reader).unwrap_err();
            assert_eq!(err.grpc_code(), tonic::Code::Unauthenticated, "{header:?}");
        }
    }

    #[test]
    fn anonymous_reads_only_when_allowed() {
        assert!(auth(true).check(None, Role::Reader).is_ok());
        assert!(auth(true).check(None, Role::Operator).is_err());
        assert!(auth(false).check(None, Role::Reader).is_err());
    }

    #[test]
    fn head_needs_what_get_needs() {
        for path in ["/stats", "/accounts", "/rules/r1"] {
            assert_eq!(
                http_role(&http::Method::HEAD, path),
                http_role(&http::Method::GET, path),
                "{path}"
            );
        }
        assert_eq!(http_role(&http::Method::HEAD, "/stats"), Some(Role::Reader));
        assert_eq!(
            http_role(&http::Method::POST, "/rules"),
            Some(Role::Operator)
        );
    }

    #[test]
    fn console_stream_and_singleton_routes() {
        use http::Method;
        for path in ["/", "/console", "/console/app.js"] {
            assert_eq!(http_role(&Method::GET, path), None, "{path}");
        }
        assert_eq!(
            http_role(&Method::POST, "/events/tickets"),
            Some(Role::Reader)
        );
        assert_eq!(
            http_role(&Method::GET, "/events/stream"),
            Some(Role::Reader)
        );
        assert_eq!(http_role(&Method::GET, "/singletons"), Some(Role::Admin));
        assert_eq!(
            http_role(&Method::POST, "/singletons/all/pause"),
            Some(Role::Admin)
        );
        assert_eq!(
            http_role(&Method::GET, "/rules/r1/evaluate"),
            Some(Role::Reader)
        );
        assert_eq!(
            http_role(&Method::POST, "/rules/r1/disable"),
            Some(Role::Operator)
        );
    }

    #[test]
    fn method_roles() {
        assert_eq!(grpc_role("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            grpc_role("/valence.lifecycle.v1.RuleService/CreateRule"),
            Some(Role::Operator)
        );
        assert_eq!(
            grpc_role("/valence.lifecycle.v1.RuleService/ListRules"),
            Some(Role::Reader)
        );
        assert_eq!(
            grpc_role("/valence.lifecycle.v1.SingletonAdminService/GetSingletons"),
            Some(Role::Admin)
        );
        assert_eq!(
            grpc_role("/valence.lifecycle.v1.LifecycleService/GetStats"),
            Some(Role::Reader)
        );
    }
}
