//! Folding Kafka records into one batch: decoded events, dead letters, the
//! next offset per partition, and the in-memory rollup sums. Pure logic, so
//! it is unit-tested without a broker or database.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use tokenusage_contract::{UsageEvent, decode_kafka};

/// One Kafka record, owned, as the consumer hands it over.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// The `request-id` header set by HTTP ingest, if any.
    pub fn request_id(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == tokenusage_contract::wire::header::REQUEST_ID)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// A record that could not become an event, kept with its raw bytes.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub record: Record,
    pub error: String,
}

/// An accepted event and where it came from.
#[derive(Debug, Clone)]
pub struct Positioned {
    pub event: UsageEvent,
    pub partition: i32,
    pub offset: i64,
    /// The HTTP request that carried it, for tracing one event end to end.
    pub request_id: Option<String>,
}

impl Positioned {
    /// The record to dead-letter this event as, when the database refuses
    /// it: the event as decoded (native JSON, with its `source`), at its
    /// position, so a re-drive after the fix counts exactly this event.
    pub fn as_record(&self) -> Record {
        use tokenusage_contract::wire::{content_type, header};
        let mut headers = vec![(header::CONTENT_TYPE.to_owned(), content_type::NATIVE.as_bytes().to_vec())];
        if let Some(id) = &self.request_id {
            headers.push((header::REQUEST_ID.to_owned(), id.clone().into_bytes()));
        }
        Record {
            partition: self.partition,
            offset: self.offset,
            key: Some(self.event.user_id.clone().into_bytes()),
            payload: Some(self.event.to_native_json()),
            headers,
        }
    }
}

/// Offsets `from..to` of a partition that the broker no longer holds:
/// records we were owed and can never count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

impl Lost {
    pub fn records(&self) -> i64 {
        self.to - self.from
    }
}

/// Everything read since the last commit.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Positioned>,
    pub dead: Vec<DeadLetter>,
    /// Partition -> the first offset not yet in this batch.
    pub next_offsets: BTreeMap<i32, i64>,
    /// (source, event_id) already in `events`, so a duplicate inside one
    /// batch never reaches the database twice.
    keys: HashSet<(String, String)>,
    /// Records the broker no longer holds that this batch's offsets pass
    /// over (see `gapguard`): recorded as lost in the same transaction.
    pub lost: Vec<Lost>,
    /// Records seen, including duplicates and dead letters.
    pub records: usize,
    /// Duplicates dropped inside this batch.
    pub in_batch_duplicates: usize,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Decodes and adds one record; an invalid record becomes a dead letter.
    pub fn push(&mut self, record: Record, now: DateTime<Utc>) {
        self.records += 1;
        self.next_offsets.insert(record.partition, record.offset + 1);
        let headers: Vec<(&str, &[u8])> = record.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        let decoded = match record.payload.as_deref() {
            None => Err("record has no value (tombstone); expected a usage event".to_owned()),
            Some(p) => decode_kafka(p, &headers, now).map(|(e, _)| e).map_err(|e| e.to_string()),
        };
        match decoded {
            Ok(event) => {
                if self.keys.insert((event.source.clone(), event.event_id.clone())) {
                    let request_id = record.request_id().map(str::to_owned);
                    self.events.push(Positioned {
                        event,
                        partition: record.partition,
                        offset: record.offset,
                        request_id,
                    });
                } else {
                    self.in_batch_duplicates += 1;
                }
            }
            Err(error) => self.dead.push(DeadLetter { record, error }),
        }
    }

    /// Notes that the records of `partition` from `from` up to `to` are gone
    /// (the record at `to` is pushed next).
    pub fn lost(&mut self, partition: i32, from: i64, to: i64) {
        if to > from {
            self.lost.push(Lost { partition, from, to });
        }
    }

    /// Forgets everything read from `partitions` (revoked or fenced): the
    /// new owner re-reads them from the stored offsets.
    pub fn drop_partitions(&mut self, partitions: &[i32]) {
        if partitions.is_empty() {
            return;
        }
        self.events.retain(|p| !partitions.contains(&p.partition));
        self.dead.retain(|d| !partitions.contains(&d.record.partition));
        self.lost.retain(|l| !partitions.contains(&l.partition));
        for p in partitions {
            self.next_offsets.remove(p);
        }
        self.keys = self.events.iter().map(|p| (p.event.source.clone(), p.event.event_id.clone())).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-11-27T12:00:00Z".parse().unwrap()
    }

    fn rec(partition: i32, offset: i64, id: &str, minute: u32, tokens: u64) -> Record {
        let payload = json!({"source": "s", "event_id": id, "user_id": "u", "occurred_at": format!("2026-11-27T10:{minute:02}:10Z"),
            "activity": "chat", "model": "m", "input_tokens": tokens, "output_tokens": 1});
        Record {
            partition,
            offset,
            key: Some(b"u".to_vec()),
            payload: Some(payload.to_string().into_bytes()),
            headers: vec![],
        }
    }

    #[test]
    fn duplicates_within_a_batch_count_once_and_offsets_advance() {
        let mut b = Batch::default();
        b.push(rec(0, 10, "a", 1, 5), now());
        b.push(rec(0, 11, "a", 1, 5), now());
        b.push(rec(1, 3, "b", 2, 7), now());
        assert_eq!(b.events.len(), 2);
        assert_eq!(b.in_batch_duplicates, 1);
        assert_eq!(b.next_offsets, BTreeMap::from([(0, 12), (1, 4)]));
    }

    #[test]
    fn a_poison_record_becomes_a_dead_letter_and_the_partition_moves_on() {
        let mut b = Batch::default();
        let mut bad = rec(0, 5, "x", 1, 1);
        bad.payload = Some(b"{not json".to_vec());
        b.push(bad, now());
        b.push(rec(0, 6, "y", 1, 1), now());
        assert_eq!(b.dead.len(), 1);
        assert!(b.dead[0].error.contains("not valid JSON"));
        assert_eq!(b.events.len(), 1);
        assert_eq!(b.next_offsets[&0], 7);
    }

    #[test]
    fn dropping_a_partition_forgets_its_events_offsets_and_keys() {
        let mut b = Batch::default();
        b.push(rec(0, 1, "a", 1, 1), now());
        b.push(rec(1, 1, "b", 1, 1), now());
        b.drop_partitions(&[1]);
        assert_eq!(b.events.len(), 1);
        assert!(!b.next_offsets.contains_key(&1));
        b.push(rec(0, 2, "b", 1, 1), now());
        assert_eq!(b.events.len(), 2, "b is no longer a duplicate once partition 1 is dropped");
    }
}
