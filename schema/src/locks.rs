//! Advisory locks shared by the processes that write usage data.

/// Held **shared** by every transaction that counts events (projector
/// commits, dead-letter re-drives, `count_events`) and **exclusively** by
/// whatever must not interleave with counting: a replay or re-price day
/// rebuilding rollups, and a change to the price book (so every counting
/// transaction either committed before the change or sees it).
pub const COUNTING: i64 = 0x746f_6b65_6e75; // "tokenu"
