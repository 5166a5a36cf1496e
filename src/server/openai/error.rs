//! OpenAI's error shape, `{"error": {"message", "type", "param", "code"}}`, with the statuses
//! its SDKs turn into typed exceptions (400 `BadRequestError`, 401 `AuthenticationError`, 404
//! `NotFoundError`, 429 `RateLimitError`, 5xx `InternalServerError`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::server::visit::{End, code};

/// One OpenAI-shaped error answer.
#[derive(Debug, Clone)]
pub(crate) struct Error {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

/// The inner object, also sent as an event's `error` in the middle of a server-sent stream
/// (where the SDK raises `APIError` on it).
#[derive(Serialize)]
pub(crate) struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl Error {
    /// A 400 about the request's field `param`.
    pub(crate) fn invalid(param: &'static str, message: impl Into<String>) -> Error {
        Error {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param),
            code: Some("invalid_value"),
        }
    }

    /// A 400 about the request as a whole.
    pub(crate) fn bad_request(message: impl Into<String>) -> Error {
        Error {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    pub(crate) fn with_code(mut self, code: &'static str) -> Error {
        self.code = Some(code);
        self
    }

    pub(crate) fn with_status(mut self, status: StatusCode) -> Error {
        self.status = status;
        self
    }

    /// 401, as OpenAI answers a wrong or missing key.
    pub(crate) fn unauthorized() -> Error {
        Error {
            status: StatusCode::UNAUTHORIZED,
            message: "Incorrect API key provided. Give one of this server's keys as \
                      `Authorization: Bearer KEY`."
                .into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    /// 404 for a path under `/v1` that this server does not have.
    pub(crate) fn no_route(method: &str, path: &str) -> Error {
        Error {
            status: StatusCode::NOT_FOUND,
            message: format!("Invalid URL ({method} {path})"),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    /// 404 for a model this server does not serve (`GET /v1/models/{id}`).
    pub(crate) fn no_model(id: &str) -> Error {
        Error {
            status: StatusCode::NOT_FOUND,
            message: format!("The model `{id}` does not exist on this server"),
            kind: "invalid_request_error",
            param: Some("model"),
            code: Some("model_not_found"),
        }
    }

    /// 503 while the server shuts down.
    pub(crate) fn stopping() -> Error {
        Error {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the server is shutting down: try another one, or again later".into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    /// The answer to a visit that could not start: 429 when every slot is taken (the SDKs
    /// retry it), 413 over a size limit, 400 for a request the model refuses (`param` names the
    /// field it is about), 503 while stopping, 500 when the engine fails.
    pub(crate) fn from_end(end: &End, param: Option<&'static str>) -> Error {
        let message = end.message();
        match end {
            End::Refused(code::TRY_AGAIN, ..) => Error {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: format!("{message}: every stream of this server is busy, try again"),
                kind: "requests",
                param: None,
                code: Some("rate_limit_exceeded"),
            },
            End::Refused(code::TOO_BIG, ..) => Error {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: Some("string_above_max_length"),
                ..Error::invalid(param.unwrap_or("input"), message)
            },
            End::Refused(..) => Error {
                param,
                ..Error::bad_request(message)
            },
            End::Shutdown => Error::stopping(),
            End::Done | End::ClientClosed | End::Failed(_) => Error {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message,
                kind: "server_error",
                param: None,
                code: None,
            },
        }
    }

    /// The inner object, for an error event in a stream.
    pub(crate) fn inner(&self) -> Inner<'_> {
        Inner {
            message: &self.message,
            kind: self.kind,
            param: self.param,
            code: self.code,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = serde_json::to_string(&Body {
            error: self.inner(),
        })
        .expect("serializable");
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // The SDKs wait this long before their retry.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
