//! The operator console: a browser UI at `/console` over the gateway's own
//! routes (the token goes in an `authorization` header on every call, kept
//! in the tab's sessionStorage; the live tail is `/events/stream` with a
//! stream ticket). Plain HTML, CSS and JavaScript modules embedded in the
//! binary from `console/`: no build step, no CDN, works offline. Every
//! answer carries a Content-Security-Policy allowing only this origin.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::get,
    Json, Router,
};
use serde_json::json;

use crate::{error::ApiError, AppState};

/// The console's files: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("console/index.html"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("console/console.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("console/api.js"),
    ),
    (
        "pages.js",
        "text/javascript; charset=utf-8",
        include_str!("console/pages.js"),
    ),
];

/// Only this origin; no inline scripts or styles; never in a frame.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's routes (`/`, `/console`, `/console/{file}`), merged into
/// the gateway's router when `monitoring.console` is on.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console", get(|| async { asset("index.html") }))
        .route("/console/", get(|| async { asset("index.html") }))
        .route("/console/config.json", get(config))
        .route(
            "/console/{file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
}

fn asset(name: &str) -> Response {
    let Some((_, kind, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::not_found("console file", name).into_response();
    };
    let mut response = (StatusCode::OK, *body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /console/config.json`: what the console needs from the config
/// (nothing secret; open like the assets).
async fn config(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({
        "explorerUrl": state.config.monitoring.explorer_url,
        "authRequired": !state.auth.is_open(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_served() {
        for (name, _, body) in ASSETS {
            for line in body.lines() {
                let Some(rest) = line.trim().strip_prefix("import ") else {
                    continue;
                };
                let Some(from) = rest.split("from ").nth(1) else {
                    continue;
                };
                let file = from.trim_matches(|c| c == '"' || c == '\'' || c == ';' || c == ' ');
                let file = file.trim_start_matches("./");
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == file),
                    "{name} imports {file}, which is not served"
                );
            }
        }
        let index = ASSETS[0].2;
        assert!(index.contains(r#"src="/console/app.js""#));
        assert!(!index.contains("<script>"), "no inline script (CSP)");
        assert!(!index.contains("style="), "no inline style (CSP)");
        assert!(
            !index.contains("http://") && !index.contains("https://"),
            "no CDN"
        );
    }
}
