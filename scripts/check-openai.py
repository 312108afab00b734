"""The real `openai` package against a Marill gateway (`marill dev --serve` or `marill gateway`).

Usage: python check-openai.py BASE_URL MODEL EXPECTED_TEXT
Checks: a greedy completion of "The capital of France is" (max_tokens 8) equals EXPECTED_TEXT
(`marill generate`'s continuation); a streamed chat completion (max_tokens 6) yields at least two
content chunks and finishes; an unknown model is a 404 in OpenAI's error shape. Exits non-zero on
any failure.
"""

import sys

import openai

base, model, expected = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=600)

c = client.completions.create(
    model=model, prompt="The capital of France is", max_tokens=8, temperature=0
)
text = c.choices[0].text
print(f"completion: {text!r} finish_reason={c.choices[0].finish_reason} usage={c.usage}")
assert text == expected, f"completion {text!r} != marill generate's {expected!r}"

chunks, finish = [], None
stream = client.chat.completions.create(
    model=model,
    messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    max_tokens=6,
    temperature=0,
    stream=True,
)
for chunk in stream:
    if chunk.choices:
        delta = chunk.choices[0].delta.content
        if delta:
            chunks.append(delta)
        if chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
print(f"chat stream: {len(chunks)} content chunks {chunks!r}, finish_reason={finish}")
assert len(chunks) >= 2, f"only {len(chunks)} content chunks"
assert finish in ("stop", "length"), f"no finish_reason: {finish!r}"

try:
    client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    raise AssertionError("an unknown model was served")
except openai.NotFoundError as e:
    body = e.body if isinstance(e.body, dict) else {}
    print(f"unknown model: {e.status_code} {body}")
    assert e.status_code == 404
    assert body.get("code") == "model_not_found", body
    assert body.get("message") and body.get("type"), body

print(f"openai {openai.__version__}: all checks passed")
