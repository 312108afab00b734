//! Chat templates: the model's own Jinja template (GGUF `tokenizer.chat_template`, or
//! `chat_template` of a directory's `tokenizer_config.json`) rendered with minijinja, as
//! Hugging Face's `apply_chat_template` does: `messages`, `add_generation_prompt = true`,
//! `bos_token` and `eos_token`, Python string methods (`.strip()`, `.startswith()`, ...) and
//! `raise_exception(msg)`, which becomes a 400 naming the message.

use minijinja::{context, Environment, Error as JinjaError, ErrorKind};
use serde::Serialize;
use thiserror::Error;

/// One chat message as the template sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`
    pub role: String,
    /// the text
    pub content: String,
}

/// Template failures.
#[derive(Debug, Error, PartialEq)]
pub enum TemplateError {
    /// The template does not parse.
    #[error("the model's chat template is invalid: {0}")]
    Invalid(String),
    /// Rendering failed (the template raised, e.g. roles that do not alternate).
    #[error("the chat template rejected the messages: {0}")]
    Render(String),
}

/// A model's chat template, checked at load.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos: String,
    eos: String,
}

fn raise_exception(msg: String) -> Result<String, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
}

fn describe(e: &JinjaError) -> String {
    match e.detail() {
        Some(d) => d.to_string(),
        None => e.to_string(),
    }
}

impl ChatTemplate {
    /// Parses `source`; `bos` and `eos` are the strings of the model's special tokens.
    pub fn new(
        source: &str,
        bos: Option<String>,
        eos: Option<String>,
    ) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.template_from_str(source)
            .map_err(|e| TemplateError::Invalid(e.to_string()))?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos: bos.unwrap_or_default(),
            eos: eos.unwrap_or_default(),
        })
    }

    /// The prompt text of `messages`, ending with the assistant's turn opened.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, TemplateError> {
        self.env
            .render_str(
                &self.source,
                context! {
                    messages => messages,
                    add_generation_prompt => true,
                    bos_token => &self.bos,
                    eos_token => &self.eos,
                },
            )
            .map_err(|e| TemplateError::Render(describe(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's template, as its GGUF file carries it.
    pub const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn renders_smollm2s_template() {
        let t = ChatTemplate::new(SMOLLM2, None, None).unwrap();
        let s = t.render(&[msg("user", "Hi")]).unwrap();
        assert_eq!(
            s,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let s = t
            .render(&[msg("system", "Be brief."), msg("user", "Hi")])
            .unwrap();
        assert!(s.starts_with("<|im_start|>system\nBe brief.<|im_end|>\n"));
    }

    #[test]
    fn python_methods_tokens_and_raise() {
        let src = "{{ bos_token }}{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools') }}{% endif %}{{ m.content.strip() }}{% endfor %}{{ eos_token }}";
        let t = ChatTemplate::new(src, Some("<s>".into()), Some("</s>".into())).unwrap();
        assert_eq!(t.render(&[msg("user", "  x ")]).unwrap(), "<s>x</s>");
        let e = t.render(&[msg("tool", "y")]).unwrap_err();
        assert!(e.to_string().contains("no tools"), "{e}");
    }

    #[test]
    fn an_invalid_template_is_an_error() {
        assert!(matches!(
            ChatTemplate::new("{% for %}", None, None),
            Err(TemplateError::Invalid(_))
        ));
    }
}
