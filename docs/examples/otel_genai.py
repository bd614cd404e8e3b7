#!/usr/bin/env python3
"""Export OpenTelemetry GenAI spans to tokenusage with the standard exporter.

    pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http
    TOKENUSAGE_URL=http://127.0.0.1:8080 TOKENUSAGE_KEY=tu_... python3 otel_genai.py

No tokenusage code: the OTLP/HTTP exporter's endpoint is our /v1/traces and
its one header is a publisher key. Every LLM call is a span with the GenAI
semantic conventions' attributes (instrumentation libraries set them for
you; here they are set by hand to show which ones count). tokenusage
counts each span with usage once, however often the exporter retries, and
ignores the others. Prints the totals it sent, as JSON.
"""
import json
import os
import sys

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

url = os.environ.get("TOKENUSAGE_URL", "http://127.0.0.1:8080")
key = os.environ["TOKENUSAGE_KEY"]
user = os.environ.get("TOKENUSAGE_USER", "alice")
calls = int(os.environ.get("TOKENUSAGE_CALLS", "3"))


class Recorded(SpanExporter):
    """The OTLP exporter, remembering each export's result (so this script's
    exit status says whether tokenusage took the spans)."""

    def __init__(self, inner):
        self.inner, self.results = inner, []

    def export(self, spans):
        result = self.inner.export(spans)
        self.results.append(result)
        return result

    def shutdown(self):
        self.inner.shutdown()


exporter = Recorded(OTLPSpanExporter(
    endpoint=f"{url}/v1/traces",
    headers={"authorization": f"Bearer {key}"},
    compression=Compression.Gzip,
    timeout=30,
))
provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
# The SDK's default batch (512 spans) is within tokenusage's limit of 1000.
provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=512))
tracer = provider.get_tracer("otel_genai.py")

sent = {"spans": 0, "input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0, "reasoning_output_tokens": 0}
# A span without usage (the agent run around the calls) is ignored.
with tracer.start_as_current_span("invoke_agent support") as agent:
    agent.set_attribute("gen_ai.operation.name", "invoke_agent")
    for i in range(calls):
        with tracer.start_as_current_span("chat gpt-4o-mini") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.provider.name", "openai")
            span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
            span.set_attribute("user.id", user)
            span.set_attribute("project.id", "support")
            # ... call the model; then record what its response's usage said:
            usage = {"input_tokens": 1200 + i, "output_tokens": 300 + i,
                     "cache_read_input_tokens": 1000, "reasoning_output_tokens": 100}
            span.set_attribute("gen_ai.response.model", "gpt-4o-mini-2024-07-18")
            span.set_attribute("gen_ai.usage.input_tokens", usage["input_tokens"])
            span.set_attribute("gen_ai.usage.output_tokens", usage["output_tokens"])
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", usage["cache_read_input_tokens"])
            span.set_attribute("gen_ai.usage.reasoning.output_tokens", usage["reasoning_output_tokens"])
            sent["spans"] += 1
            for k, v in usage.items():
                sent[k] += v

# Flushes the batch: the export returns once Kafka has every counted span.
provider.shutdown()
ok = bool(exporter.results) and all(r == SpanExportResult.SUCCESS for r in exporter.results)
sent["exports"] = [r.name for r in exporter.results]
print(json.dumps(sent))
sys.exit(0 if ok else 1)
