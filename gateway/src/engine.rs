//! One private generation per request, run on a blocking thread (the suffix runner is
//! synchronous): a fresh session from the runner factory (cluster unavailable → 503), the public
//! prefix here, one runner step per token, the LM head here on the revealed final hidden state,
//! sampling here; each token's text goes over a channel to the HTTP response as its step
//! returns. When the channel's receiver is gone (the client disconnected) the generation stops
//! and the session is ended.
//!
//! The request's concurrency slot is given back the moment its response is complete, just
//! before its last event (done, or failed) is sent, so a client that fires its next request as
//! soon as it has the answer always finds the slot free. The session's close (one more job
//! through Kafka) then runs on the same blocking thread, after the response: it always happens,
//! and a close that fails is logged and counted (`marill_gateway_session_close_failures_total`).

use crate::api::{GenRequest, PromptInput};
use crate::error::ApiError;
use crate::metrics::GatewayMetrics;
use crate::sampling::Sampler;
use crate::template::ChatTemplate;
use crate::text::TextStream;
use candle_core::{Device, Tensor};
use marill_client::runner::{PublicPrefix, SuffixRunner};
use marill_model::{Llama, TextTokenizer};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::OwnedSemaphorePermit;

/// Starts a private session (one per request): a `KafkaRunner` over the cluster's brokers, or
/// any other [`SuffixRunner`] serving the model's private layers.
pub type RunnerFactory =
    Arc<dyn Fn() -> anyhow::Result<Box<dyn SuffixRunner + Send>> + Send + Sync>;

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// an end-of-sequence token or a stop sequence
    Stop,
    /// max_tokens reached
    Length,
}

impl Finish {
    /// OpenAI's `finish_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// Token counts of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// prompt tokens (after the chat template)
    pub prompt: usize,
    /// generated tokens (a final end-of-sequence token included)
    pub completion: usize,
}

/// What a running generation reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// new text (one decoded token's, or text held back for a stop sequence)
    Text(String),
    /// the generation is over
    Done {
        /// why
        finish: Finish,
        /// token counts
        usage: Usage,
    },
    /// the generation failed (nothing more comes)
    Failed(ApiError),
}

impl Event {
    /// Whether this is a generation's last event (done or failed).
    pub fn is_last(&self) -> bool {
        matches!(self, Self::Done { .. } | Self::Failed(_))
    }
}

/// A request ready to run: its token ids and how many it may add.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// the prompt's ids
    pub ids: Vec<u32>,
    /// new tokens at most
    pub max_new: usize,
    /// the request
    pub req: GenRequest,
    /// when it arrived
    pub arrived: Instant,
}

/// The client's side of the model and how to reach the private suffix.
pub struct Engine {
    model: Arc<Llama>,
    tokenizer: Arc<TextTokenizer>,
    template: Option<ChatTemplate>,
    n_public: usize,
    max_seq: usize,
    default_max_tokens: usize,
    factory: RunnerFactory,
}

/// Engine setup failures.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model carries no Marill spec (which layers are public).
    #[error("the model has no Marill spec (public layers unknown)")]
    NoSpec,
    /// The model's chat template does not parse.
    #[error(transparent)]
    Template(#[from] crate::template::TemplateError),
}

impl Engine {
    /// An engine over `model` (with its Marill spec) and `tokenizer`; sessions from `factory`;
    /// prompts plus new tokens may not exceed `max_seq` (the workers' longest sequence);
    /// `default_max_tokens` applies when a request names no max_tokens.
    pub fn new(
        model: Arc<Llama>,
        tokenizer: Arc<TextTokenizer>,
        max_seq: usize,
        default_max_tokens: usize,
        factory: RunnerFactory,
    ) -> Result<Self, EngineError> {
        let n_public = model.marill_spec().ok_or(EngineError::NoSpec)?.n_public();
        let token = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
        let cfg = model.config();
        let template = match tokenizer.chat_template() {
            Some(src) => Some(ChatTemplate::new(
                src,
                token(cfg.bos_token_id),
                token(cfg.eos_token_ids.first().copied()),
            )?),
            None => None,
        };
        let max_seq = max_seq.min(cfg.max_position_embeddings);
        Ok(Self {
            model,
            tokenizer,
            template,
            n_public,
            max_seq,
            default_max_tokens: default_max_tokens.max(1),
            factory,
        })
    }

    /// The longest prompt plus completion served.
    pub fn max_seq(&self) -> usize {
        self.max_seq
    }

    /// Whether chat requests can be served (the model has a chat template).
    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// The prompt's ids (chat messages through the template) and the new-token budget; a
    /// prompt that leaves no room, or a max_tokens past the context, is a 400 before any
    /// session starts.
    pub fn prepare(&self, req: GenRequest, arrived: Instant) -> Result<Prepared, ApiError> {
        let ids = match &req.prompt {
            PromptInput::Text(t) => self.encode(t)?,
            PromptInput::Tokens(ids) => {
                let vocab = self.model.config().vocab_size;
                if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
                    return Err(ApiError::invalid(
                        "prompt",
                        format!("token id {bad} is outside the vocabulary of {vocab}"),
                    ));
                }
                ids.clone()
            }
            PromptInput::Chat(messages) => {
                let Some(t) = &self.template else {
                    return Err(ApiError::BadRequest {
                        message: "the model has no chat template (neither \
                                  tokenizer.chat_template nor tokenizer_config.json): use \
                                  /v1/completions"
                            .into(),
                        param: Some("messages".into()),
                        code: Some("no_chat_template"),
                    });
                };
                let text = t
                    .render(messages)
                    .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
                self.encode(&text)?
            }
        };
        if ids.is_empty() {
            return Err(ApiError::invalid(
                "prompt",
                "the prompt encodes to no token",
            ));
        }
        let param = if req.is_chat() { "messages" } else { "prompt" };
        let room = self.max_seq.saturating_sub(ids.len());
        let too_long = |max_new: usize| ApiError::BadRequest {
            message: format!(
                "this model's maximum context length is {} tokens; the prompt has {} and {} \
                 more were asked for",
                self.max_seq,
                ids.len(),
                max_new
            ),
            param: Some(param.into()),
            code: Some("context_length_exceeded"),
        };
        let max_new = match req.max_tokens {
            Some(n) if n > room => return Err(too_long(n)),
            Some(n) => n,
            None if room == 0 => return Err(too_long(1)),
            None => self.default_max_tokens.min(room),
        };
        Ok(Prepared {
            ids,
            max_new,
            req,
            arrived,
        })
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, ApiError> {
        self.tokenizer
            .encode(text)
            .map_err(|e| ApiError::invalid("prompt", e.to_string()))
    }

    /// Runs `p` to its end (blocking), reporting on `tx`; `slot` is the request's place under
    /// the concurrency limit. Once the response is complete the request's outcome is counted,
    /// its slot freed and its last event sent, in that order (a client that reads its answer
    /// and fires its next request at once finds both done); then the session is ended, whatever
    /// happened (a closed client included).
    pub fn run(
        &self,
        p: Prepared,
        tx: UnboundedSender<Event>,
        m: &GatewayMetrics,
        slot: OwnedSemaphorePermit,
    ) {
        m.in_flight.inc();
        m.prompt_tokens.inc_by(p.ids.len() as u64);
        let failed = |e: ApiError| (e.outcome(), Some(Event::Failed(e)));
        let (outcome, last, runner) = match (self.factory)() {
            Err(e) => {
                let (outcome, last) = failed(ApiError::Unavailable(format!("{e:#}")));
                (outcome, last, None)
            }
            Ok(mut runner) => {
                let (outcome, last) = match self.generate(&p, runner.as_mut(), &tx, m) {
                    Ok(Some((finish, usage))) => ("ok", Some(Event::Done { finish, usage })),
                    Ok(None) => ("cancelled", None),
                    Err(e) => failed(e),
                };
                (outcome, last, Some(runner))
            }
        };
        m.request(outcome);
        drop(slot);
        if let Some(ev) = last {
            // a client gone by now had every token: its request stays counted as answered
            let _ = tx.send(ev);
        }
        // the stream ends here, before the session's close
        drop(tx);
        if let Some(mut runner) = runner {
            if let Err(e) = runner.end() {
                m.close_failures.inc();
                tracing::warn!(error = %format!("{e:#}"), "ending a gateway session");
            }
        }
        m.in_flight.dec();
    }

    /// Logits of the last of `tokens` with the suffix run privately by `runner`.
    fn logits(
        &self,
        prefix: &mut PublicPrefix<'_>,
        runner: &mut dyn SuffixRunner,
        tokens: &[u32],
    ) -> Result<Vec<f32>, ApiError> {
        let internal = |e: candle_core::Error| ApiError::Internal(e.to_string());
        let (x, _, d) = prefix
            .hidden(tokens)
            .map_err(|e| ApiError::Internal(format!("{e:#}")))?;
        let y = runner
            .step(&x, 1)
            .map_err(|e| ApiError::SessionFailed(format!("{e:#}")))?;
        let normed = Tensor::from_vec(y, (1, 1, d), &Device::Cpu).map_err(internal)?;
        let logits = self
            .model
            .head(&normed)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        logits
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .map_err(internal)
    }

    /// The token loop, every text sent: why it ended and the token counts (the last event is
    /// the caller's to send), or `Ok(None)` when the client went away.
    fn generate(
        &self,
        p: &Prepared,
        runner: &mut dyn SuffixRunner,
        tx: &UnboundedSender<Event>,
        m: &GatewayMetrics,
    ) -> Result<Option<(Finish, Usage)>, ApiError> {
        let decode = |ids: &[u32]| {
            self.tokenizer
                .decode(ids)
                .map_err(|e| ApiError::Internal(e.to_string()))
        };
        let mut prefix = PublicPrefix::new(&self.model, self.n_public);
        let mut sampler = Sampler::new(p.req.sampling);
        let mut text = TextStream::new(p.req.stop.clone());
        let eos = &self.model.config().eos_token_ids;
        let mut logits = self.logits(&mut prefix, runner, &p.ids)?;
        let mut last = Instant::now();
        let mut n = 0usize;
        let finish = loop {
            let next = sampler
                .sample(&logits)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            n += 1;
            if n == 1 {
                m.ttft.observe(p.arrived.elapsed().as_secs_f64());
            } else {
                m.inter_token.observe(last.elapsed().as_secs_f64());
            }
            last = Instant::now();
            m.tokens.inc();
            if eos.contains(&next) {
                break Finish::Stop;
            }
            let delta = text.push(next, decode)?;
            if !delta.text.is_empty() && tx.send(Event::Text(delta.text)).is_err() {
                return Ok(None);
            }
            if delta.stopped {
                break Finish::Stop;
            }
            if n >= p.max_new {
                break Finish::Length;
            }
            if tx.is_closed() {
                return Ok(None);
            }
            logits = self.logits(&mut prefix, runner, &[next])?;
        };
        let rest = text.finish(decode)?;
        if !rest.is_empty() && tx.send(Event::Text(rest)).is_err() {
            return Ok(None);
        }
        let usage = Usage {
            prompt: p.ids.len(),
            completion: n,
        };
        Ok(Some((finish, usage)))
    }
}
