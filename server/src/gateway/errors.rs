//! Every REST error leaves in [`ApiError`]'s JSON shape. Handlers return
//! `ApiError` already; this covers what answers before or around them:
//! axum's rejections (413 over the body limit, a path parameter that is not
//! UTF-8) are plain text and the timeout layer's 408 is empty.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    config::ServerConfig,
    error::{rest_error, ApiError},
    AppState,
};

/// Longest plain error text read back (axum's are a line).
const MAX_TEXT: usize = 4096;

/// Turns a non-JSON error answer into the JSON shape, keeping its status
/// and headers (`allow` on a 405, say).
pub(super) async fn json_errors(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let declared = declared_length(request.headers());
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let json = as_json(status, text, declared, &state.config.server);
    with_parts(parts, json)
}

/// The JSON answer for a plain one of `status` that said `text`.
fn as_json(
    status: StatusCode,
    text: String,
    declared: Option<u64>,
    server: &ServerConfig,
) -> Response {
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::too_large("body", declared, server.max_message_bytes)
        }
        StatusCode::REQUEST_TIMEOUT => ApiError::DeadlineExceeded(format!(
            "the request took longer than {} s (server.request_timeout_secs)",
            server.request_timeout_secs
        )),
        // axum's only plain 400: a path parameter it could not decode.
        StatusCode::BAD_REQUEST => ApiError::invalid("path", text),
        // Nothing else is known to answer plain; should something, keep its
        // status and say what it said.
        _ => {
            let reason = status.canonical_reason().unwrap_or("error");
            let message = if text.is_empty() { reason } else { &text };
            return rest_error(status, tonic::Code::Unknown, message);
        }
    };
    error.into_response()
}

/// `json`'s body and type with the status and other headers of the answer
/// it replaces.
fn with_parts(mut parts: axum::http::response::Parts, json: Response) -> Response {
    parts.headers.remove(header::CONTENT_LENGTH);
    let (json_parts, json_body) = json.into_parts();
    parts.headers.extend(json_parts.headers);
    Response::from_parts(parts, json_body)
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), MAX_TEXT)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The timeout layer's empty 408 names the setting.
    #[tokio::test]
    async fn timeouts_name_the_setting() {
        let server = ServerConfig::default();
        let json = as_json(StatusCode::REQUEST_TIMEOUT, String::new(), None, &server);
        assert_eq!(json.status(), StatusCode::REQUEST_TIMEOUT);
        let body = body_of(json).await;
        assert_eq!(body["code"], "DeadlineExceeded");
        assert_eq!(
            body["error"],
            "the request took longer than 30 s (server.request_timeout_secs)"
        );
    }

    /// An unforeseen plain answer keeps its status and says what it said.
    #[tokio::test]
    async fn other_plain_errors_keep_their_status() {
        let server = ServerConfig::default();
        let teapot = StatusCode::IM_A_TEAPOT;
        let json = as_json(teapot, "short and stout".into(), None, &server);
        assert_eq!(json.status(), teapot);
        let body = body_of(json).await;
        assert_eq!(body["code"], "Unknown");
        assert_eq!(body["error"], "short and stout");
    }
}
