// Export OpenTelemetry GenAI spans to tokenusage with the standard OTLP/HTTP
// (protobuf) exporter of the OpenTelemetry JS SDK.
//
//   npm install @opentelemetry/sdk-trace-base @opentelemetry/exporter-trace-otlp-proto @opentelemetry/resources
//   TOKENUSAGE_URL=http://127.0.0.1:8080 TOKENUSAGE_KEY=tu_... node otel_genai.mjs
//
// The Node twin of otel_genai.py: no tokenusage code, the exporter's URL is
// our /v1/traces and its one header a publisher key. Each LLM call is a span
// with the GenAI conventions' usage attributes (instrumentations set them;
// here they are set by hand). Prints the totals it sent, as JSON, and exits
// 1 if an export failed.
import { BasicTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';

const url = process.env.TOKENUSAGE_URL ?? 'http://127.0.0.1:8080';
const key = process.env.TOKENUSAGE_KEY;
const user = process.env.TOKENUSAGE_USER ?? 'alice';
const calls = Number(process.env.TOKENUSAGE_CALLS ?? '3');

const otlp = new OTLPTraceExporter({
  url: `${url}/v1/traces`,
  headers: { authorization: `Bearer ${key}` },
  compression: 'gzip',
  timeoutMillis: 30000,
});
// The exporter, remembering each export's result (0 is success), so the
// exit status says whether tokenusage took the spans.
const results = [];
const exporter = {
  export: (spans, done) => otlp.export(spans, (r) => { results.push(r.code); done(r); }),
  shutdown: () => otlp.shutdown(),
  forceFlush: () => otlp.forceFlush(),
};
const provider = new BasicTracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'support-bot' }),
  spanProcessors: [new BatchSpanProcessor(exporter, { maxExportBatchSize: 512 })],
});
const tracer = provider.getTracer('otel_genai.mjs');

const sent = { spans: 0, input_tokens: 0, output_tokens: 0, cache_read_input_tokens: 0, reasoning_output_tokens: 0 };
// A span without usage (the agent run) is ignored.
const agent = tracer.startSpan('invoke_agent support', { attributes: { 'gen_ai.operation.name': 'invoke_agent' } });
for (let i = 0; i < calls; i++) {
  const span = tracer.startSpan('chat claude-sonnet-4-5', {
    attributes: {
      'gen_ai.operation.name': 'chat',
      'gen_ai.provider.name': 'anthropic',
      'gen_ai.request.model': 'claude-sonnet-4-5',
      'user.id': user,
      'project.id': 'support',
    },
  });
  // ... call the model; then record what its response's usage said:
  const usage = { input_tokens: 900 + i, output_tokens: 200 + i, cache_read_input_tokens: 512, reasoning_output_tokens: 64 };
  span.setAttributes({
    'gen_ai.response.model': 'claude-sonnet-4-5-20250929',
    'gen_ai.usage.input_tokens': usage.input_tokens,
    'gen_ai.usage.output_tokens': usage.output_tokens,
    'gen_ai.usage.cache_read.input_tokens': usage.cache_read_input_tokens,
    'gen_ai.usage.reasoning.output_tokens': usage.reasoning_output_tokens,
  });
  span.end();
  sent.spans += 1;
  for (const [k, v] of Object.entries(usage)) sent[k] += v;
}
agent.end();

// Flushes the batch: the export returns once Kafka has every counted span.
await provider.shutdown();
sent.exports = results;
console.log(JSON.stringify(sent));
process.exit(results.length > 0 && results.every((c) => c === 0) ? 0 : 1);
