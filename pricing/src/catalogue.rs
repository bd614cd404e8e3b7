//! The default price book shipped with the binary (`pricing/catalogue.json`,
//! in the export format): the major current models, each entry dated and
//! citing its public price page. Loaded into an empty book at start, never
//! over one an operator has edited.

use crate::import::{self, ImportOptions, Imported};

/// The catalogue's text.
pub const JSON: &str = include_str!("../catalogue.json");

/// The catalogue's entries (USD).
pub fn entries() -> Imported {
    let opts = ImportOptions {
        currency: "USD".into(),
        effective_from: chrono::DateTime::UNIX_EPOCH,
        source: "tokenusage default catalogue".into(),
    };
    // A test below keeps the shipped file readable and complete.
    import::read(JSON, &opts).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_catalogue_reads_whole_and_cites_a_page_for_every_entry() {
        let got = super::entries();
        assert!(got.skipped.is_empty(), "{:?}", got.skipped);
        assert!(got.entries.len() >= 30);
        assert!(got.entries.iter().all(|e| e.source.starts_with("https://")));
    }
}
