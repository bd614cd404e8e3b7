// Publish a usage event straight to Kafka with kafkajs (npm install kafkajs),
// as a binary-mode CloudEvent: attributes in ce_* headers, data as the value.
//
//   KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 node publish_kafka.mjs
import { randomUUID } from 'node:crypto';
import { Kafka } from 'kafkajs';

const kafka = new Kafka({ clientId: 'my-node-service', brokers: (process.env.KAFKA_BOOTSTRAP_SERVERS ?? '127.0.0.1:9092').split(',') });
const producer = kafka.producer({ idempotent: true });
await producer.connect();
const user = 'alice';
await producer.send({
  topic: process.env.TOKENUSAGE_TOPIC ?? 'tokenusage.usage.v1',
  acks: -1, // all in-sync replicas: the event is durable when send() resolves
  messages: [{
    key: user,
    value: JSON.stringify({ activity: 'chat', model: 'gpt-4o-mini', input_tokens: 1200, output_tokens: 350 }),
    headers: {
      ce_specversion: '1.0',
      ce_id: randomUUID(),
      ce_source: 'my-node-service',
      ce_type: 'dev.tokenusage.usage.v1',
      ce_subject: user,
      ce_time: new Date().toISOString(),
      'content-type': 'application/json',
    },
  }],
});
await producer.disconnect();
console.log('delivered');
