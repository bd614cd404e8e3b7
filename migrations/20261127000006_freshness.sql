-- How current the rollups are, per partition, written by the projector's
-- freshness probe about once a second: the broker's high watermark, the
-- records not yet counted, and the last probe time at which every record
-- the broker held was counted ("complete through").
alter table projector_offsets
    add column high_watermark bigint,
    add column lag            bigint,
    add column caught_up_at   timestamptz,
    add column probed_at      timestamptz;
