//! The OpenAI request bodies the gateway takes, parsed and checked into one [`GenRequest`]:
//! every parameter is either honoured or refused with a 400 naming it, never ignored. Accepted
//! at their neutral value only (refused otherwise): `n` = 1, `best_of` = 1, `logprobs`
//! false/null, `top_logprobs` 0, `presence_penalty` and `frequency_penalty` 0, `logit_bias`
//! empty, `echo` false. `user` is accepted (an end-user id, it changes nothing). A `null`
//! value is the parameter left out.

use crate::error::ApiError;
use crate::sampling::SamplingParams;
use crate::template::ChatMessage;
use serde::Deserialize;
use serde_json::{Map, Value};

/// What to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    /// `/v1/completions` text
    Text(String),
    /// `/v1/completions` token ids
    Tokens(Vec<u32>),
    /// `/v1/chat/completions` messages (rendered with the model's chat template)
    Chat(Vec<ChatMessage>),
}

/// One generation asked for, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct GenRequest {
    /// the model named
    pub model: String,
    /// what to continue
    pub prompt: PromptInput,
    /// at most this many new tokens (None: the gateway's default, within the context)
    pub max_tokens: Option<usize>,
    /// temperature, top_p, top_k, seed
    pub sampling: SamplingParams,
    /// stop sequences (at most 4)
    pub stop: Vec<String>,
    /// server-sent events
    pub stream: bool,
    /// a last chunk with the usage (stream_options.include_usage)
    pub include_usage: bool,
}

impl GenRequest {
    /// A chat request.
    pub fn is_chat(&self) -> bool {
        matches!(self.prompt, PromptInput::Chat(_))
    }
}

const SAMPLING_KEYS: &[&str] = &[
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "user",
];

/// A parameter accepted only at its neutral value: is `v` that value?
fn neutral(key: &str, v: &Value) -> bool {
    match key {
        "n" | "best_of" => v.as_u64() == Some(1),
        "logprobs" | "echo" => v.as_bool() == Some(false),
        "top_logprobs" => v.as_u64() == Some(0),
        "presence_penalty" | "frequency_penalty" => v.as_f64() == Some(0.0),
        "logit_bias" => v.as_object().is_some_and(|m| m.is_empty()),
        _ => false,
    }
}

/// The body as a JSON object with nulls dropped; unknown or unsupported parameters refused.
fn object(body: &[u8], known: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::BadRequest {
        message: format!("the body is not valid JSON: {e}"),
        param: None,
        code: Some("invalid_json"),
    })?;
    let Value::Object(mut m) = v else {
        return Err(ApiError::bad("the body must be a JSON object"));
    };
    m.retain(|_, v| !v.is_null());
    let mut refused: Vec<&str> = m
        .iter()
        .filter(|(k, v)| {
            !known.contains(&k.as_str()) && !SAMPLING_KEYS.contains(&k.as_str()) && !neutral(k, v)
        })
        .map(|(k, _)| k.as_str())
        .collect();
    refused.sort_unstable();
    if let Some(first) = refused.first() {
        return Err(ApiError::BadRequest {
            message: format!(
                "unsupported parameter{}: {} (Marill's gateway generates one choice without \
                 logprobs, penalties or tools)",
                if refused.len() > 1 { "s" } else { "" },
                refused.join(", ")
            ),
            param: Some(first.to_string()),
            code: Some("unsupported_parameter"),
        });
    }
    Ok(m)
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Common {
    model: String,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    seed: Option<i64>,
    stop: Option<Stop>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
}

fn typed<T: for<'de> Deserialize<'de>>(m: &Map<String, Value>) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(m.clone()))
        .map_err(|e| ApiError::bad(format!("invalid request: {e}")))
}

fn common(m: &Map<String, Value>, prompt: PromptInput) -> Result<GenRequest, ApiError> {
    let c: Common = typed(m)?;
    let max_tokens = match (c.max_completion_tokens, c.max_tokens) {
        (Some(n), _) => Some(("max_completion_tokens", n)),
        (None, Some(n)) => Some(("max_tokens", n)),
        (None, None) => None,
    };
    let max_tokens = match max_tokens {
        Some((name, n)) if n < 1 => {
            return Err(ApiError::invalid(
                name,
                format!("{name} must be at least 1, got {n}"),
            ))
        }
        Some((_, n)) => Some(n as usize),
        None => None,
    };
    let temperature = c.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            "temperature",
            format!("temperature must be in [0, 2], got {temperature}"),
        ));
    }
    let top_p = c.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            "top_p",
            format!("top_p must be in (0, 1], got {top_p}"),
        ));
    }
    let top_k = match c.top_k {
        Some(k) if k < 0 => {
            return Err(ApiError::invalid(
                "top_k",
                format!("top_k must be 0 (all) or more, got {k}"),
            ))
        }
        Some(k) => k as usize,
        None => 0,
    };
    let stop = match c.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > 4 {
        return Err(ApiError::invalid(
            "stop",
            format!("at most 4 stop sequences, got {}", stop.len()),
        ));
    }
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid("stop", "a stop sequence is empty"));
    }
    if c.stream_options.is_some() && !c.stream {
        return Err(ApiError::invalid(
            "stream_options",
            "stream_options is only allowed with stream: true",
        ));
    }
    Ok(GenRequest {
        model: c.model,
        prompt,
        max_tokens,
        sampling: SamplingParams {
            temperature: temperature as f32,
            top_p: top_p as f32,
            top_k,
            seed: c.seed.map(|s| s as u64),
        },
        stop,
        stream: c.stream,
        include_usage: c.stream_options.is_some_and(|o| o.include_usage),
    })
}

/// Parses a `POST /v1/completions` body.
pub fn completion(body: &[u8]) -> Result<GenRequest, ApiError> {
    let m = object(body, &["prompt"])?;
    let prompt = match m.get("prompt") {
        None => return Err(ApiError::invalid("prompt", "prompt is required")),
        Some(Value::String(s)) => PromptInput::Text(s.clone()),
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(s)] => PromptInput::Text(s.clone()),
            [] => return Err(ApiError::invalid("prompt", "prompt is empty")),
            [Value::Array(ids)] => PromptInput::Tokens(token_ids(ids)?),
            items if items.iter().all(Value::is_number) => PromptInput::Tokens(token_ids(items)?),
            _ => {
                return Err(ApiError::invalid(
                    "prompt",
                    "several prompts in one request are not supported: send one string or one list of token ids",
                ))
            }
        },
        Some(_) => return Err(ApiError::invalid("prompt", "prompt must be a string or a list of token ids")),
    };
    common(&m, prompt)
}

fn token_ids(items: &[Value]) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .map(|v| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| ApiError::invalid("prompt", format!("{v} is not a token id")))
        })
        .collect()
}

/// Parses a `POST /v1/chat/completions` body.
pub fn chat(body: &[u8]) -> Result<GenRequest, ApiError> {
    let m = object(body, &["messages", "max_completion_tokens"])?;
    let Some(Value::Array(items)) = m.get("messages") else {
        return Err(ApiError::invalid(
            "messages",
            "messages must be a list of messages",
        ));
    };
    if items.is_empty() {
        return Err(ApiError::invalid("messages", "messages is empty"));
    }
    let messages = items
        .iter()
        .enumerate()
        .map(|(i, v)| message(i, v))
        .collect::<Result<Vec<_>, _>>()?;
    common(&m, PromptInput::Chat(messages))
}

fn message(i: usize, v: &Value) -> Result<ChatMessage, ApiError> {
    let at = |k: &str| format!("messages[{i}].{k}");
    let Value::Object(o) = v else {
        return Err(ApiError::invalid(
            &format!("messages[{i}]"),
            "a message must be an object",
        ));
    };
    for (k, v) in o {
        if !["role", "content"].contains(&k.as_str()) && !v.is_null() {
            return Err(ApiError::BadRequest {
                message: format!("unsupported message field {}", at(k)),
                param: Some(at(k)),
                code: Some("unsupported_parameter"),
            });
        }
    }
    let role = match o.get("role").and_then(Value::as_str) {
        Some(r @ ("system" | "developer" | "user" | "assistant")) => {
            if r == "developer" { "system" } else { r }.to_string()
        }
        Some(r) => {
            return Err(ApiError::invalid(
                &at("role"),
                format!("role {r:?} is not supported (system, developer, user, assistant)"),
            ))
        }
        None => return Err(ApiError::invalid(&at("role"), "a message needs a role")),
    };
    let content = match o.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for p in parts {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(ApiError::invalid(
                            &at("content"),
                            "only text content parts are supported",
                        ))
                    }
                }
            }
            text
        }
        None | Some(Value::Null) => String::new(),
        Some(_) => {
            return Err(ApiError::invalid(
                &at("content"),
                "content must be a string or a list of text parts",
            ))
        }
    };
    Ok(ChatMessage { role, content })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: Result<GenRequest, ApiError>) -> ApiError {
        r.expect_err("refused")
    }

    #[test]
    fn a_plain_completion_is_read() {
        let r = completion(br#"{"model":"m","prompt":"The capital","max_tokens":8,"temperature":0,"stop":"\n","seed":3,"n":1,"logprobs":null}"#).unwrap();
        assert_eq!(r.prompt, PromptInput::Text("The capital".into()));
        assert_eq!(r.max_tokens, Some(8));
        assert_eq!(r.sampling.temperature, 0.0);
        assert_eq!(r.sampling.seed, Some(3));
        assert_eq!(r.stop, vec!["\n".to_string()]);
        assert!(!r.stream);
        let r = completion(br#"{"model":"m","prompt":[[1,2,3]]}"#).unwrap();
        assert_eq!(r.prompt, PromptInput::Tokens(vec![1, 2, 3]));
    }

    #[test]
    fn unsupported_parameters_are_named() {
        let e = err(completion(
            br#"{"model":"m","prompt":"x","n":2,"logprobs":3,"presence_penalty":0.5}"#,
        ));
        assert_eq!(e.status().as_u16(), 400);
        let msg = e.to_string();
        for p in ["n", "logprobs", "presence_penalty"] {
            assert!(msg.contains(p), "{msg}");
        }
        assert_eq!(e.param(), Some("logprobs"));
        assert_eq!(e.code(), Some("unsupported_parameter"));
        let e = err(chat(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{}]}"#,
        ));
        assert!(e.to_string().contains("tools"));
        let e = err(chat(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"frequency_penalty":1}"#,
        ));
        assert!(e.to_string().contains("frequency_penalty"));
    }

    #[test]
    fn bad_values_are_400s_naming_the_parameter() {
        for (body, param) in [
            (
                &br#"{"model":"m","prompt":"x","temperature":3}"#[..],
                "temperature",
            ),
            (br#"{"model":"m","prompt":"x","top_p":0}"#, "top_p"),
            (br#"{"model":"m","prompt":"x","top_k":-1}"#, "top_k"),
            (
                br#"{"model":"m","prompt":"x","max_tokens":0}"#,
                "max_tokens",
            ),
            (
                br#"{"model":"m","prompt":"x","stop":["a","b","c","d","e"]}"#,
                "stop",
            ),
            (br#"{"model":"m","prompt":["a","b"]}"#, "prompt"),
            (br#"{"model":"m"}"#, "prompt"),
            (
                br#"{"model":"m","prompt":"x","stream_options":{"include_usage":true}}"#,
                "stream_options",
            ),
        ] {
            let e = err(completion(body));
            assert_eq!(e.status().as_u16(), 400);
            assert_eq!(e.param(), Some(param), "{}", String::from_utf8_lossy(body));
        }
        let e = err(completion(b"{not json"));
        assert_eq!(e.code(), Some("invalid_json"));
        let e = err(completion(b"[1]"));
        assert_eq!(e.status().as_u16(), 400);
        let e = err(completion(br#"{"prompt":"x"}"#));
        assert!(e.to_string().contains("model"), "{e}");
    }

    #[test]
    fn chat_messages_are_read() {
        let r = chat(br#"{"model":"m","messages":[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"Hi"}]}],"stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":6}"#).unwrap();
        assert!(r.is_chat());
        assert!(r.stream && r.include_usage);
        assert_eq!(r.max_tokens, Some(6));
        let PromptInput::Chat(m) = r.prompt else {
            panic!()
        };
        assert_eq!(m[0].role, "system");
        assert_eq!(m[1].content, "Hi");
        for body in [
            &br#"{"model":"m","messages":[]}"#[..],
            br#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
            br#"{"model":"m","messages":[{"role":"assistant","content":"x","tool_calls":[]}]}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"x","name":"bob"}]}"#,
        ] {
            assert_eq!(err(chat(body)).status().as_u16(), 400);
        }
    }
}
