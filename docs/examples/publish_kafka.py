#!/usr/bin/env python3
"""Publish usage events straight to Kafka with confluent-kafka (pip install confluent-kafka).

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python3 publish_kafka.py

Key the record by user id, set the content-type header, use acks=all, and
wait for the delivery report: only then is the event durable.
"""
import json
import os
import uuid
from datetime import datetime, timezone

from confluent_kafka import Producer

producer = Producer({
    "bootstrap.servers": os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    "acks": "all",
    "enable.idempotence": True,
})
event = {
    "source": "my-python-service",  # your publisher name: the de-duplication scope
    "event_id": str(uuid.uuid4()),
    "user_id": "alice",
    "occurred_at": datetime.now(timezone.utc).isoformat(),
    "activity": "chat",
    "model": "gpt-4o-mini",
    "input_tokens": 1200,
    "output_tokens": 350,
}


def report(err, msg):
    print("failed:" if err else "delivered:", err or f"{msg.topic()}[{msg.partition()}]@{msg.offset()}")


producer.produce(
    os.environ.get("TOKENUSAGE_TOPIC", "tokenusage.usage.v1"),
    key=event["user_id"].encode(),
    value=json.dumps(event).encode(),
    headers=[("content-type", b"application/json"), ("tu-schema", b"usage.v1")],
    on_delivery=report,
)
producer.flush(30)
