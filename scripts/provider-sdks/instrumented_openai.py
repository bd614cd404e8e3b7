"""The working recipe of docs/PUBLISHING.md, run for real: the `openai` client
instrumented by opentelemetry-instrumentation-openai-v2, a user put in
OpenTelemetry baggage and copied onto every span by BaggageSpanProcessor,
spans exported over OTLP/HTTP to tokenusage. The provider is a fake served
here on loopback in OpenAI's documented chat-completion shape (the real one
cannot be reached from the test machines).

Usage: python instrumented_openai.py TOKENUSAGE_URL PUBLISHER_KEY
Prints one JSON line per call: {"user", "input", "output"} as the fake
provider answered it.
"""

import http.server
import json
import sys
import threading

from opentelemetry import baggage, context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.processor.baggage import ALLOW_ALL_BAGGAGE_KEYS, BaggageSpanProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

# (user, prompt tokens, completion tokens) the fake provider reports per call.
CALLS = [("otel-ann", 1234, 56), ("otel-ben", 789, 10), ("otel-ann", 4321, 65)]
answers = iter(CALLS)


class FakeOpenAI(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        _, prompt, completion = next(answers)
        body = json.dumps({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1796000000,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main(url, key):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    # The service's own user on the resource: a span's baggage user wins over it.
    provider = TracerProvider(resource=Resource.create({"service.name": "chatbot", "user.id": "service-account"}))
    provider.add_span_processor(BaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
        endpoint=url.rstrip("/") + "/v1/traces", headers={"authorization": "Bearer " + key})))
    OpenAIInstrumentor().instrument(tracer_provider=provider)

    import openai  # after instrumenting
    client = openai.OpenAI(api_key="not-used", base_url=f"http://127.0.0.1:{server.server_port}/v1")
    for user, prompt, completion in CALLS:
        token = context.attach(baggage.set_baggage("user.id", user))
        try:
            client.chat.completions.create(model="gpt-4o-mini",
                                           messages=[{"role": "user", "content": "hello"}])
        finally:
            context.detach(token)
        print(json.dumps({"user": user, "input": prompt, "output": completion}), flush=True)
    provider.force_flush()
    provider.shutdown()
    server.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
