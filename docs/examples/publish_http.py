#!/usr/bin/env python3
"""Publish usage events to tokenusage over HTTP, standard library only.

    TOKENUSAGE_URL=http://127.0.0.1:8080 TOKENUSAGE_KEY=tu_... python3 publish_http.py

Sends one batch and prints what happened to each event. 202 means every
event is in Kafka; 207 means some were rejected (see each result's errors);
429/503 mean retry later (resending the same event ids is safe).
"""
import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

url = os.environ.get("TOKENUSAGE_URL", "http://127.0.0.1:8080") + "/api/v1/events"
key = os.environ["TOKENUSAGE_KEY"]
user = os.environ.get("TOKENUSAGE_USER", "alice")

now = datetime.now(timezone.utc).isoformat()
events = [
    {"event_id": str(uuid.uuid4()), "user_id": user, "occurred_at": now,
     "activity": "chat", "model": "gpt-4o-mini", "input_tokens": 1200, "output_tokens": 350},
    {"event_id": str(uuid.uuid4()), "user_id": user, "occurred_at": now,
     "activity": "embedding", "model": "text-embedding-3-small", "input_tokens": 8000, "output_tokens": 0},
]
req = urllib.request.Request(url, data=json.dumps(events).encode(), method="POST",
                             headers={"content-type": "application/json", "authorization": f"Bearer {key}"})
try:
    with urllib.request.urlopen(req, timeout=30) as resp:
        status, body = resp.status, json.load(resp)
except urllib.error.HTTPError as e:
    status, body = e.code, json.load(e)
print(status, json.dumps(body))
sys.exit(0 if status == 202 else 1)
