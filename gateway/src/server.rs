//! The HTTP API (axum): `POST /v1/completions`, `POST /v1/chat/completions` (JSON, or
//! server-sent events with `stream: true`: one chunk per decoded token as its step returns,
//! `data: [DONE]` at the end), `GET /v1/models`, `GET /healthz`, `GET /metrics`. Bodies past
//! the size limit get 413, requests past the concurrency limit 429, and with API keys a request
//! to `/v1/*` without a listed `Authorization: Bearer` key gets 401. A request holds its
//! concurrency slot from its session's start until its response is complete (the session's
//! close to the cluster runs after, see [`crate::engine`]). The session starts and its first
//! token is computed before the response begins, so a cluster that is out of reach (503) or a
//! failed first step (502) still answers with its status code; a later failure in a stream is
//! one `data:` event with the error in OpenAI's shape, after which the stream ends (no
//! `[DONE]`).

use crate::api::{self, GenRequest};
use crate::engine::{Engine, Event, Finish, Usage};
use crate::error::ApiError;
use crate::keys::ApiKeys;
use crate::metrics::GatewayMetrics;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::stream::{self, Stream, StreamExt};
use marill_metrics::prometheus::Registry;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, Semaphore};

/// The gateway's limits and names.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// the model id clients name (and `/v1/models` lists)
    pub model_name: String,
    /// request bodies larger than this get 413
    pub max_body_bytes: usize,
    /// private sessions at once; more requests get 429
    pub max_concurrent: usize,
    /// when set, `/v1/*` needs one of these keys
    pub api_keys: Option<ApiKeys>,
}

struct AppState {
    engine: Arc<Engine>,
    cfg: GatewayConfig,
    metrics: GatewayMetrics,
    registry: Registry,
    slots: Arc<Semaphore>,
    started: u64,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The router over `engine`; `metrics` must be registered in `registry` (served on
/// `/metrics`).
pub fn router(
    engine: Arc<Engine>,
    cfg: GatewayConfig,
    metrics: GatewayMetrics,
    registry: Registry,
) -> Router {
    let state = Arc::new(AppState {
        slots: Arc::new(Semaphore::new(cfg.max_concurrent.max(1))),
        engine,
        metrics,
        registry,
        started: now_s(),
        cfg: cfg.clone(),
    });
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_text))
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .with_state(state)
}

async fn no_route(State(s): State<Arc<AppState>>, uri: Uri) -> Response {
    let e = ApiError::NoRoute(uri.path().to_string());
    s.metrics.request(e.outcome());
    e.into_response()
}

async fn metrics_text(State(s): State<Arc<AppState>>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        marill_metrics::render(&s.registry),
    )
        .into_response()
}

impl AppState {
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(keys) = &self.cfg.api_keys else {
            return Ok(());
        };
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(k) if keys.contains(k.trim()) => Ok(()),
            Some(_) => Err(ApiError::Unauthorized("incorrect API key provided".into())),
            None => Err(ApiError::Unauthorized(
                "no API key: send Authorization: Bearer KEY".into(),
            )),
        }
    }

    fn model_object(&self) -> Value {
        json!({
            "id": self.cfg.model_name,
            "object": "model",
            "created": self.started,
            "owned_by": "marill",
            "max_model_len": self.engine.max_seq(),
        })
    }
}

async fn models(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = s.authorize(&headers) {
        s.metrics.request(e.outcome());
        return e.into_response();
    }
    Json(json!({"object": "list", "data": [s.model_object()]})).into_response()
}

async fn model(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let r = s.authorize(&headers).and_then(|_| {
        if id == s.cfg.model_name {
            Ok(Json(s.model_object()).into_response())
        } else {
            Err(ApiError::ModelNotFound(id))
        }
    });
    r.unwrap_or_else(|e| {
        s.metrics.request(e.outcome());
        e.into_response()
    })
}

async fn completions(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(s, headers, body, api::completion).await
}

async fn chat_completions(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(s, headers, body, api::chat).await
}

async fn handle(
    s: Arc<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    parse: fn(&[u8]) -> Result<GenRequest, ApiError>,
) -> Response {
    let arrived = Instant::now();
    match start(&s, &headers, body, parse, arrived) {
        Err(e) => {
            s.metrics.request(e.outcome());
            e.into_response()
        }
        // from here the session counts its own outcome
        Ok((req, rx)) => respond(s, req, rx).await,
    }
}

type Started = (GenRequest, mpsc::UnboundedReceiver<Event>);

/// Checks the request and starts its session on a blocking thread.
fn start(
    s: &Arc<AppState>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    parse: fn(&[u8]) -> Result<GenRequest, ApiError>,
    arrived: Instant,
) -> Result<Started, ApiError> {
    s.authorize(headers)?;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(s.cfg.max_body_bytes)
        } else {
            ApiError::bad(r.body_text())
        }
    })?;
    let req = parse(&body)?;
    if req.model != s.cfg.model_name {
        return Err(ApiError::ModelNotFound(req.model));
    }
    let prepared = s.engine.prepare(req.clone(), arrived)?;
    let permit = s
        .slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Busy(s.cfg.max_concurrent))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let (engine, metrics) = (s.engine.clone(), s.metrics.clone());
    // the slot goes with the session, which frees it when the response is complete (its
    // close to the cluster runs after, on this thread)
    tokio::task::spawn_blocking(move || engine.run(prepared, tx, &metrics, permit));
    Ok((req, rx))
}

/// Waits for the first event (an error then is the response's status), then answers as a
/// stream or as one JSON body.
async fn respond(
    s: Arc<AppState>,
    req: GenRequest,
    mut rx: mpsc::UnboundedReceiver<Event>,
) -> Response {
    let first = match rx.recv().await {
        Some(Event::Failed(e)) => return e.into_response(),
        Some(ev) => ev,
        None => {
            return ApiError::Internal("the session ended without a word".into()).into_response()
        }
    };
    let shape = Shape::new(&req, &s.cfg.model_name);
    if req.stream {
        // the stream ends with its last event (done or failed)
        let rest = stream::unfold((rx, first.is_last()), |(mut rx, ended)| async move {
            if ended {
                return None;
            }
            let e = rx.recv().await?;
            let ended = e.is_last();
            Some((e, (rx, ended)))
        });
        let events = stream::iter([first]).chain(rest);
        return sse(shape, req.include_usage, events).into_response();
    }
    let mut text = String::new();
    let mut ev = Some(first);
    loop {
        match ev {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done { finish, usage }) => {
                return Json(shape.whole(&text, finish, usage)).into_response()
            }
            Some(Event::Failed(e)) => return e.into_response(),
            None => {
                return ApiError::Internal("the session ended without an end".into())
                    .into_response()
            }
        }
        ev = rx.recv().await;
    }
}

/// How a response of one kind (completion or chat) looks.
struct Shape {
    chat: bool,
    id: String,
    created: u64,
    model: String,
}

fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt,
        "completion_tokens": u.completion,
        "total_tokens": u.prompt + u.completion,
    })
}

impl Shape {
    fn new(req: &GenRequest, model: &str) -> Self {
        let chat = req.is_chat();
        Self {
            chat,
            id: format!(
                "{}-{:016x}",
                if chat { "chatcmpl" } else { "cmpl" },
                rand::random::<u64>()
            ),
            created: now_s(),
            model: model.to_string(),
        }
    }

    fn whole(&self, text: &str, finish: Finish, usage: Usage) -> Value {
        let choice = if self.chat {
            json!({"index": 0, "message": {"role": "assistant", "content": text},
                   "logprobs": null, "finish_reason": finish.as_str()})
        } else {
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish.as_str()})
        };
        json!({
            "id": self.id,
            "object": if self.chat { "chat.completion" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage_json(usage),
        })
    }

    /// A chunk with `choices` (and `usage`, when the request asked for it: null but on the
    /// last chunk).
    fn chunk(&self, choices: Value, usage: Option<Value>) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(u) = usage {
            v["usage"] = u;
        }
        v
    }

    fn delta(&self, text: Option<&str>, role: bool, finish: Option<Finish>) -> Value {
        let finish = finish.map(Finish::as_str);
        if self.chat {
            let mut d = json!({});
            if role {
                d["role"] = json!("assistant");
            }
            if let Some(t) = text {
                d["content"] = json!(t);
            }
            json!([{"index": 0, "delta": d, "logprobs": null, "finish_reason": finish}])
        } else {
            json!([{"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish}])
        }
    }
}

fn data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

/// The server-sent events of a generation.
fn sse(
    shape: Shape,
    include_usage: bool,
    events: impl Stream<Item = Event> + Send + 'static,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let usage_null = include_usage.then_some(Value::Null);
    let mut opened = false;
    let out = events.flat_map(move |ev| {
        let mut out = Vec::new();
        if shape.chat && !opened {
            // OpenAI's first chat chunk carries the role
            out.push(data(
                &shape.chunk(shape.delta(Some(""), true, None), usage_null.clone()),
            ));
        }
        opened = true;
        match ev {
            Event::Text(t) => {
                out.push(data(
                    &shape.chunk(shape.delta(Some(&t), false, None), usage_null.clone()),
                ));
            }
            Event::Done { finish, usage } => {
                out.push(data(&shape.chunk(
                    shape.delta(None, false, Some(finish)),
                    usage_null.clone(),
                )));
                if include_usage {
                    out.push(data(&shape.chunk(json!([]), Some(usage_json(usage)))));
                }
                out.push(SseEvent::default().data("[DONE]"));
            }
            Event::Failed(e) => out.push(data(&e.body())),
        }
        stream::iter(out.into_iter().map(Ok))
    });
    Sse::new(out).keep_alive(KeepAlive::default())
}

/// Serves `app` on `listener` until `shutdown` resolves (then finishes the requests in flight).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
